#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

namespace lowbit::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;   // "GGUF" little-endian
constexpr size_t kMaxDims = 4;             // GGML_MAX_DIMS
constexpr size_t kMaxStringLen = size_t(1) << 30;
constexpr int kMaxArrayDepth = 8;

// Block size and bytes per block of every ggml type id, so any file can be
// described even where lowbit has no kernels for a type.  {0, 0} = unknown id.
struct BlockShape { int64_t block; int64_t bytes; const char* name; };
constexpr BlockShape kBlockShapes[] = {
    {1, 4, "F32"}, {1, 2, "F16"}, {32, 18, "Q4_0"}, {32, 20, "Q4_1"}, {0, 0, nullptr}, {0, 0, nullptr},
    {32, 22, "Q5_0"}, {32, 24, "Q5_1"}, {32, 34, "Q8_0"}, {32, 36, "Q8_1"},
    {256, 84, "Q2_K"}, {256, 110, "Q3_K"}, {256, 144, "Q4_K"}, {256, 176, "Q5_K"}, {256, 210, "Q6_K"},
    {256, 292, "Q8_K"}, {256, 66, "IQ2_XXS"}, {256, 74, "IQ2_XS"}, {256, 98, "IQ3_XXS"}, {256, 50, "IQ1_S"},
    {32, 18, "IQ4_NL"}, {256, 110, "IQ3_S"}, {256, 82, "IQ2_S"}, {256, 136, "IQ4_XS"},
    {1, 1, "I8"}, {1, 2, "I16"}, {1, 4, "I32"}, {1, 8, "I64"}, {1, 8, "F64"}, {256, 56, "IQ1_M"},
    {1, 2, "BF16"}, {0, 0, nullptr}, {0, 0, nullptr}, {0, 0, nullptr}, {256, 54, "TQ1_0"}, {256, 66, "TQ2_0"},
    {0, 0, nullptr}, {0, 0, nullptr}, {0, 0, nullptr}, {32, 17, "MXFP4"}, {64, 36, "NVFP4"}, {128, 18, "Q1_0"},
};
constexpr uint32_t kNumBlockShapes = sizeof(kBlockShapes) / sizeof(kBlockShapes[0]);

// A cursor over the file's bytes.  Every read checks the remaining length first.
class Cursor {
  public:
    Cursor(const uint8_t* p, size_t n, const std::string& label) : p_(p), n_(n), label_(label) {}

    size_t pos() const { return pos_; }
    size_t remaining() const { return n_ - pos_; }

    template <typename T>
    T read(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, p_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(const char* what) {
        const uint64_t len = read<uint64_t>(what);
        if (len > kMaxStringLen) error(std::string(what) + ": string length " + std::to_string(len) + " is absurd");
        need(size_t(len), what);
        std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
        pos_ += size_t(len);
        return s;
    }

    [[noreturn]] void error(const std::string& msg) const {
        throw FormatError(label_ + ": " + msg + " (at byte " + std::to_string(pos_) + ")");
    }

    void need(size_t k, const char* what) const {
        if (k > remaining())
            error(std::string("file is truncated: ") + what + " needs " + std::to_string(k) + " bytes, " +
                  std::to_string(remaining()) + " left");
    }

  private:
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
    const std::string& label_;
};

size_t min_encoded_size(ValueType t) {
    switch (t) {
        case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
        case ValueType::UINT16: case ValueType::INT16: return 2;
        case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
        case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
        case ValueType::STRING: return 8;
        case ValueType::ARRAY: return 12;
    }
    return 1;
}

bool valid_value_type(uint32_t t) { return t <= uint32_t(ValueType::FLOAT64); }

Value read_value(Cursor& c, ValueType type, int depth);

Value read_array(Cursor& c, int depth) {
    if (depth > kMaxArrayDepth) c.error("arrays nested too deeply");
    Value v;
    v.type = ValueType::ARRAY;
    const uint32_t et = c.read<uint32_t>("array element type");
    if (!valid_value_type(et)) c.error("unknown array element type " + std::to_string(et));
    v.elem_type = ValueType(et);
    const uint64_t n = c.read<uint64_t>("array length");
    // each element occupies at least min_encoded_size bytes: a cheap, exact bound
    if (n > c.remaining() / min_encoded_size(v.elem_type))
        c.error("array of " + std::to_string(n) + " elements does not fit in the file");
    v.arr.reserve(size_t(n));
    for (uint64_t k = 0; k < n; ++k) v.arr.push_back(read_value(c, v.elem_type, depth + 1));
    return v;
}

Value read_value(Cursor& c, ValueType type, int depth) {
    Value v;
    v.type = type;
    switch (type) {
        case ValueType::UINT8: v.u = c.read<uint8_t>("u8"); break;
        case ValueType::INT8: v.i = c.read<int8_t>("i8"); break;
        case ValueType::UINT16: v.u = c.read<uint16_t>("u16"); break;
        case ValueType::INT16: v.i = c.read<int16_t>("i16"); break;
        case ValueType::UINT32: v.u = c.read<uint32_t>("u32"); break;
        case ValueType::INT32: v.i = c.read<int32_t>("i32"); break;
        case ValueType::UINT64: v.u = c.read<uint64_t>("u64"); break;
        case ValueType::INT64: v.i = c.read<int64_t>("i64"); break;
        case ValueType::FLOAT32: v.f = c.read<float>("f32"); break;
        case ValueType::FLOAT64: v.f = c.read<double>("f64"); break;
        case ValueType::BOOL: {
            const uint8_t b = c.read<uint8_t>("bool");
            if (b > 1) c.error("bool value " + std::to_string(b) + " is neither 0 nor 1");
            v.u = b;
            break;
        }
        case ValueType::STRING: v.s = c.read_string("string value"); break;
        case ValueType::ARRAY: return read_array(c, depth);
    }
    return v;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

// ---------------------------------------------------------------- Value

const char* value_type_name(ValueType t) {
    static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                  "bool", "string", "array", "uint64", "int64", "float64"};
    return uint32_t(t) <= 12 ? names[uint32_t(t)] : "unknown";
}

bool Value::is_integer() const {
    switch (type) {
        case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
        case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64:
        case ValueType::BOOL: return true;
        default: return false;
    }
}

int64_t Value::as_int() const {
    switch (type) {
        case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32: case ValueType::BOOL:
            return int64_t(u);
        case ValueType::UINT64:
            if (u > uint64_t(INT64_MAX)) throw FormatError("integer value out of range");
            return int64_t(u);
        case ValueType::INT8: case ValueType::INT16: case ValueType::INT32: case ValueType::INT64: return i;
        default: throw FormatError(std::string("expected an integer, found ") + value_type_name(type));
    }
}

double Value::as_float() const {
    if (type == ValueType::FLOAT32 || type == ValueType::FLOAT64) return f;
    if (is_integer()) return double(as_int());
    throw FormatError(std::string("expected a number, found ") + value_type_name(type));
}

bool Value::as_bool() const {
    if (type == ValueType::BOOL) return u != 0;
    throw FormatError(std::string("expected a bool, found ") + value_type_name(type));
}

const std::string& Value::as_string() const {
    if (type == ValueType::STRING) return s;
    throw FormatError(std::string("expected a string, found ") + value_type_name(type));
}

Value Value::of_u32(uint32_t x) { Value v; v.type = ValueType::UINT32; v.u = x; return v; }
Value Value::of_i32(int32_t x) { Value v; v.type = ValueType::INT32; v.i = x; return v; }
Value Value::of_f32(float x) { Value v; v.type = ValueType::FLOAT32; v.f = x; return v; }
Value Value::of_bool(bool x) { Value v; v.type = ValueType::BOOL; v.u = x; return v; }
Value Value::of_string(std::string x) { Value v; v.type = ValueType::STRING; v.s = std::move(x); return v; }
Value Value::of_strings(const std::vector<std::string>& xs) {
    Value v;
    v.type = ValueType::ARRAY;
    v.elem_type = ValueType::STRING;
    for (auto& x : xs) v.arr.push_back(of_string(x));
    return v;
}

int64_t TensorInfo::n_elements() const {
    int64_t n = 1;
    for (int64_t d : ne) n = checked_mul(n, d, "tensor element count");
    return n;
}

// ---------------------------------------------------------------- sizes

const char* type_name(uint32_t id) {
    if (id < kNumBlockShapes && kBlockShapes[id].name) return kBlockShapes[id].name;
    static thread_local char buf[32];
    std::snprintf(buf, sizeof buf, "type%u", id);
    return buf;
}

size_t tensor_nbytes(uint32_t id, const std::vector<int64_t>& ne) {
    if (id >= kNumBlockShapes || kBlockShapes[id].block == 0)
        throw FormatError("unknown tensor type id " + std::to_string(id));
    const BlockShape& bs = kBlockShapes[id];
    if (ne.empty()) throw FormatError("tensor has no dimensions");
    if (ne[0] % bs.block != 0)
        throw FormatError(std::string("row length ") + std::to_string(ne[0]) + " is not a multiple of " +
                          bs.name + "'s block size " + std::to_string(bs.block));
    int64_t n = checked_mul(ne[0] / bs.block, bs.bytes, "tensor size");
    for (size_t k = 1; k < ne.size(); ++k) n = checked_mul(n, ne[k], "tensor size");
    return size_t(n);
}

// ---------------------------------------------------------------- File

namespace {
// Live file mappings, for release_mapped_pages: start address -> length.
std::mutex& mappings_mu() {
    static std::mutex mu;
    return mu;
}
std::map<uintptr_t, size_t>& mappings() {
    static auto* m = new std::map<uintptr_t, size_t>();
    return *m;
}
}  // namespace

void release_mapped_pages(const void* p, size_t n) {
    static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = (uintptr_t(p) + page - 1) & ~(page - 1), hi = (uintptr_t(p) + n) & ~(page - 1);
    if (hi <= lo) return;
    std::lock_guard<std::mutex> lock(mappings_mu());
    auto it = mappings().upper_bound(uintptr_t(p));
    if (it == mappings().begin()) return;
    --it;
    if (uintptr_t(p) + n > it->first + it->second) return;   // not inside one mapping
    madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

std::unique_ptr<File> File::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(path + ": not a regular file");
    }
    std::unique_ptr<File> f(new File());
    f->path_ = path;
    f->size_ = size_t(st.st_size);
    if (f->size_ > 0) {
        void* m = mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            ::close(fd);
            throw Error(path + ": mmap failed: " + std::strerror(errno));
        }
        f->mapping_ = m;
        f->base_ = static_cast<const uint8_t*>(m);
        std::lock_guard<std::mutex> lock(mappings_mu());
        mappings()[uintptr_t(m)] = f->size_;
    }
    ::close(fd);
    f->parse_all();
    return f;
}

std::unique_ptr<File> File::parse(const uint8_t* data, size_t size, const std::string& label) {
    std::unique_ptr<File> f(new File());
    f->path_ = label;
    f->base_ = data;
    f->size_ = size;
    f->parse_all();
    return f;
}

File::~File() {
    if (!mapping_) return;
    {
        std::lock_guard<std::mutex> lock(mappings_mu());
        mappings().erase(uintptr_t(mapping_));
    }
    munmap(mapping_, size_);
}

void File::parse_all() {
    Cursor c(base_, size_, path_);
    if (size_ < 4) c.error("file is too small to be GGUF (" + std::to_string(size_) + " bytes)");
    if (c.read<uint32_t>("magic") != kMagic) c.error("not a GGUF file (bad magic)");
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3)
        c.error("unsupported GGUF version " + std::to_string(version_) + " (lowbit reads versions 2 and 3)");
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // a key-value pair takes >= 12 bytes, a tensor info >= 24: reject impossible counts early
    if (n_kv > c.remaining() / 12) c.error("metadata count " + std::to_string(n_kv) + " does not fit in the file");
    if (n_tensors > c.remaining() / 24) c.error("tensor count " + std::to_string(n_tensors) + " does not fit in the file");

    for (uint64_t k = 0; k < n_kv; ++k) {
        std::string key = c.read_string("metadata key");
        const uint32_t t = c.read<uint32_t>("metadata value type");
        if (!valid_value_type(t)) c.error("metadata '" + key + "' has unknown value type " + std::to_string(t));
        Value v = read_value(c, ValueType(t), 0);
        if (kv_index_.count(key)) c.error("duplicate metadata key '" + key + "'");
        kv_index_[key] = kv_.size();
        kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const Value* a = find("general.alignment")) {
        if (a->type != ValueType::UINT32) c.error("general.alignment must be uint32");
        alignment_ = size_t(a->u);
        if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0 || alignment_ > 1024 * 1024)
            c.error("general.alignment " + std::to_string(alignment_) + " is not a sane power of two");
    }

    for (uint64_t k = 0; k < n_tensors; ++k) {
        TensorInfo ti;
        ti.name = c.read_string("tensor name");
        const uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
        if (n_dims == 0 || n_dims > kMaxDims)
            c.error("tensor '" + ti.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
        for (uint32_t d = 0; d < n_dims; ++d) {
            const int64_t n = c.read<int64_t>("tensor dimension");
            if (n <= 0) c.error("tensor '" + ti.name + "' has dimension " + std::to_string(n));
            ti.ne.push_back(n);
        }
        const uint32_t type_id = c.read<uint32_t>("tensor type");
        try {
            ti.nbytes = tensor_nbytes(type_id, ti.ne);
        } catch (const FormatError& e) {
            c.error("tensor '" + ti.name + "': " + e.what());
        }
        ti.type = Type(type_id);
        ti.offset = c.read<uint64_t>("tensor offset");
        if (ti.offset % alignment_ != 0) c.error("tensor '" + ti.name + "' offset is not aligned");
        if (tensor_index_.count(ti.name)) c.error("duplicate tensor name '" + ti.name + "'");
        tensor_index_[ti.name] = tensors_.size();
        tensors_.push_back(std::move(ti));
    }

    data_offset_ = size_t(align_up(c.pos(), alignment_));
    const size_t data_size = data_offset_ <= size_ ? size_ - data_offset_ : 0;
    for (TensorInfo& ti : tensors_) {
        if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
            throw FormatError(path_ + ": tensor '" + ti.name + "' data (" + std::to_string(ti.nbytes) +
                              " bytes at offset " + std::to_string(ti.offset) +
                              ") lies past the end of the file; is the file truncated?");
        ti.data = base_ + data_offset_ + ti.offset;
    }
}

const Value* File::find(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

int64_t File::get_int(const std::string& key) const {
    const Value* v = find(key);
    if (!v) throw FormatError(path_ + ": required metadata '" + key + "' is missing");
    try {
        return v->as_int();
    } catch (const FormatError& e) {
        throw FormatError(path_ + ": metadata '" + key + "': " + e.what());
    }
}

int64_t File::get_int(const std::string& key, int64_t fallback) const {
    return find(key) ? get_int(key) : fallback;
}

double File::get_float(const std::string& key, double fallback) const {
    const Value* v = find(key);
    if (!v) return fallback;
    try {
        return v->as_float();
    } catch (const FormatError& e) {
        throw FormatError(path_ + ": metadata '" + key + "': " + e.what());
    }
}

std::string File::get_string(const std::string& key, const std::string& fallback) const {
    const Value* v = find(key);
    if (!v) return fallback;
    try {
        return v->as_string();
    } catch (const FormatError& e) {
        throw FormatError(path_ + ": metadata '" + key + "': " + e.what());
    }
}

// ---------------------------------------------------------------- Writer

namespace {

class Out {
  public:
    explicit Out(std::ofstream& f) : f_(f) {}
    template <typename T>
    void put(T v) { f_.write(reinterpret_cast<const char*>(&v), sizeof(T)); pos_ += sizeof(T); }
    void put_bytes(const void* p, size_t n) { f_.write(static_cast<const char*>(p), std::streamsize(n)); pos_ += n; }
    void put_string(const std::string& s) { put<uint64_t>(s.size()); put_bytes(s.data(), s.size()); }
    void pad_to(size_t align) {
        static const char zeros[64] = {};
        while (pos_ % align) { size_t k = std::min(align - pos_ % align, sizeof zeros); put_bytes(zeros, k); }
    }
    size_t pos() const { return pos_; }

  private:
    std::ofstream& f_;
    size_t pos_ = 0;
};

void write_value(Out& o, const Value& v) {
    switch (v.type) {
        case ValueType::UINT8: o.put<uint8_t>(uint8_t(v.u)); break;
        case ValueType::INT8: o.put<int8_t>(int8_t(v.i)); break;
        case ValueType::UINT16: o.put<uint16_t>(uint16_t(v.u)); break;
        case ValueType::INT16: o.put<int16_t>(int16_t(v.i)); break;
        case ValueType::UINT32: o.put<uint32_t>(uint32_t(v.u)); break;
        case ValueType::INT32: o.put<int32_t>(int32_t(v.i)); break;
        case ValueType::UINT64: o.put<uint64_t>(v.u); break;
        case ValueType::INT64: o.put<int64_t>(v.i); break;
        case ValueType::FLOAT32: o.put<float>(float(v.f)); break;
        case ValueType::FLOAT64: o.put<double>(v.f); break;
        case ValueType::BOOL: o.put<uint8_t>(v.u ? 1 : 0); break;
        case ValueType::STRING: o.put_string(v.s); break;
        case ValueType::ARRAY:
            o.put<uint32_t>(uint32_t(v.elem_type));
            o.put<uint64_t>(v.arr.size());
            for (const Value& x : v.arr) {
                if (x.type != v.elem_type) throw Error("array element type mismatch in GGUF writer");
                write_value(o, x);
            }
            break;
    }
}

}  // namespace

void Writer::set(const std::string& key, Value v) {
    for (auto& kv : kv_)
        if (kv.first == key) { kv.second = std::move(v); return; }
    kv_.emplace_back(key, std::move(v));
}

void Writer::add_tensor(const std::string& name, Type type, const std::vector<int64_t>& ne, const void* data,
                        size_t nbytes) {
    if (ne.empty() || ne.size() > kMaxDims) throw Error("tensor '" + name + "' must have 1 to 4 dimensions");
    for (int64_t d : ne)
        if (d <= 0) throw Error("tensor '" + name + "' has a non-positive dimension");
    if (tensor_nbytes(uint32_t(type), ne) != nbytes)
        throw Error("tensor '" + name + "': " + std::to_string(nbytes) + " bytes given, shape needs " +
                    std::to_string(tensor_nbytes(uint32_t(type), ne)));
    for (auto& t : tensors_)
        if (t.name == name) throw Error("duplicate tensor name '" + name + "'");
    tensors_.push_back({name, type, ne, data, nbytes});
}

void Writer::write(const std::string& path) const {
    size_t alignment = 32;
    for (auto& kv : kv_)
        if (kv.first == "general.alignment") alignment = size_t(kv.second.as_int());
    if (alignment == 0 || (alignment & (alignment - 1))) throw Error("general.alignment must be a power of two");

    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) throw Error(path + ": cannot open for writing");
        Out o(f);
        o.put<uint32_t>(kMagic);
        o.put<uint32_t>(3);
        o.put<uint64_t>(tensors_.size());
        o.put<uint64_t>(kv_.size());
        for (auto& kv : kv_) {
            o.put_string(kv.first);
            o.put<uint32_t>(uint32_t(kv.second.type));
            write_value(o, kv.second);
        }
        uint64_t offset = 0;
        for (auto& t : tensors_) {
            o.put_string(t.name);
            o.put<uint32_t>(uint32_t(t.ne.size()));
            for (int64_t d : t.ne) o.put<int64_t>(d);
            o.put<uint32_t>(uint32_t(t.type));
            o.put<uint64_t>(offset);
            offset = align_up(offset + t.nbytes, alignment);
        }
        o.pad_to(alignment);
        for (auto& t : tensors_) {
            o.put_bytes(t.data, t.nbytes);
            o.pad_to(alignment);
        }
        f.flush();
        if (!f) {
            std::remove(tmp.c_str());
            throw Error(path + ": write failed (disk full?)");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw Error(path + ": cannot rename temporary file: " + std::strerror(errno));
    }
}

}  // namespace lowbit::gguf
