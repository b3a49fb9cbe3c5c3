// GGUF files: a bounds-checked, zero-copy reader over mmap, and a writer.
//
// The reader trusts nothing in the file: every count, length, offset and size is
// checked against the bytes that remain and against sane limits before it is used,
// and every failure is a FormatError naming what was wrong.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "formats/registry.h"

namespace lowbit::gguf {

enum class ValueType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
    BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value.  Scalars live in the field that fits their type; arrays hold
// their element type and items (arrays of arrays are allowed by the format).
struct Value {
    ValueType type = ValueType::UINT8;
    uint64_t u = 0;      // UINT*, BOOL
    int64_t i = 0;       // INT*
    double f = 0;        // FLOAT*
    std::string s;       // STRING
    ValueType elem_type = ValueType::UINT8;  // ARRAY
    std::vector<Value> arr;                  // ARRAY

    bool is_integer() const;
    int64_t as_int() const;        // any integer type (or bool); throws otherwise
    double as_float() const;       // any numeric type
    bool as_bool() const;
    const std::string& as_string() const;

    static Value of_u32(uint32_t v);
    static Value of_i32(int32_t v);
    static Value of_f32(float v);
    static Value of_bool(bool v);
    static Value of_string(std::string v);
    static Value of_strings(const std::vector<std::string>& v);
};

struct TensorInfo {
    std::string name;
    std::vector<int64_t> ne;   // dimensions, innermost first (ggml order)
    Type type = Type::F32;
    uint64_t offset = 0;       // relative to the data section
    size_t nbytes = 0;
    const uint8_t* data = nullptr;   // points into the mapping

    int64_t n_elements() const;
};

// An open GGUF file.  Tensor data stays in the mapping; views are valid while the
// File lives.
class File {
  public:
    static std::unique_ptr<File> open(const std::string& path);
    // Parse a buffer the caller keeps alive (fuzzing, tests).
    static std::unique_ptr<File> parse(const uint8_t* data, size_t size, const std::string& label);
    ~File();
    File(const File&) = delete;
    File& operator=(const File&) = delete;

    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    size_t data_offset() const { return data_offset_; }
    size_t file_size() const { return size_; }
    const std::string& path() const { return path_; }

    const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
    const Value* find(const std::string& key) const;
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const TensorInfo* tensor(const std::string& name) const;

    // typed metadata helpers: throw FormatError naming the key if missing/mistyped
    int64_t get_int(const std::string& key) const;
    int64_t get_int(const std::string& key, int64_t fallback) const;
    double get_float(const std::string& key, double fallback) const;
    std::string get_string(const std::string& key, const std::string& fallback) const;

  private:
    File() = default;
    void parse_all();

    std::string path_;
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    void* mapping_ = nullptr;   // non-null when we own an mmap
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    std::vector<std::pair<std::string, Value>> kv_;
    std::map<std::string, size_t> kv_index_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t> tensor_index_;
};

// Drops the whole pages of [p, p + n) from the process's resident set when they lie inside
// the read-only file mapping of a live File; any other memory is left alone.  Reading them
// again is still correct (the kernel refaults them from the page cache).  Called once
// weights have been repacked into private copies, so a model is not resident twice.
void release_mapped_pages(const void* p, size_t n);

// Writes a GGUF v3 file.  Metadata keeps insertion order; tensor data is aligned
// to general.alignment (default 32).  The file appears atomically (temp + rename).
class Writer {
  public:
    void set(const std::string& key, Value v);
    // data must stay valid until write(); nbytes must equal the type's size for ne.
    void add_tensor(const std::string& name, Type type, const std::vector<int64_t>& ne,
                    const void* data, size_t nbytes);
    void write(const std::string& path) const;

  private:
    std::vector<std::pair<std::string, Value>> kv_;
    struct Pending { std::string name; Type type; std::vector<int64_t> ne; const void* data; size_t nbytes; };
    std::vector<Pending> tensors_;
};

// bytes of a tensor of this type and shape, checked for overflow; also for types
// lowbit cannot compute with (so `info` can describe any file)
size_t tensor_nbytes(uint32_t type_id, const std::vector<int64_t>& ne);
const char* type_name(uint32_t type_id);   // "Q4_K", or "type<N>" for unknown ids

}  // namespace lowbit::gguf
