// Tokenizer producing exactly llama.cpp's token ids: GPT-2 byte-level BPE ("gpt2") and
// SentencePiece-style BPE ("llama"), with special-token splitting, detokenization and a
// streaming decoder. All methods are const and safe to call from several threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common.h"
#include "unicode.h"

namespace lowbit {

// GGUF tokenizer.ggml.token_type values.
enum class TokenAttr : int32_t { Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// Filled by the model loader from GGUF metadata.
struct VocabData {
    std::string model;                 // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SPM)
    std::string pre;                   // tokenizer.ggml.pre, "" if absent ("default")
    std::vector<std::string> tokens;
    std::vector<float> scores;         // empty if absent
    std::vector<int32_t> token_types;  // empty if absent
    std::vector<std::string> merges;   // "left right", BPE only
    int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, eot_id = -1, eom_id = -1;  // -1 = absent
    int add_bos = -1, add_eos = -1, add_space_prefix = -1;  // -1 = absent -> llama.cpp's default
};

// Validation (FormatError): empty or duplicate token texts (llama.cpp turns an empty text
// into "[EMPTY_<id>]" first, as we do), scores/token_types shorter than tokens, malformed
// merges or merges naming unknown tokens, bos/eos out of range, add_bos/add_eos without
// the token. Other special ids out of range are ignored, as llama.cpp does. An unknown
// model or pre-tokenizer is an Error.
class Tokenizer {
  public:
    explicit Tokenizer(VocabData data);

    // = llama_tokenize(text, add_special, parse_special). Invalid UTF-8 is decoded
    // leniently (each bad byte reads as U+FFFD), as llama.cpp does.
    std::vector<int32_t> tokenize(const std::string& text, bool add_special, bool parse_special) const;

    // Bytes of one token = llama_token_to_piece(id, lstrip=0, special=render_special).
    // Control and unknown tokens are empty unless render_special.
    std::string token_to_piece(int32_t id, bool render_special) const;

    // Concatenated pieces, minus one leading space when ids[0] is BOS (what
    // llama-cpp-python's Llama.detokenize returns). Raw bytes, maybe not valid UTF-8.
    std::string detokenize(const std::vector<int32_t>& ids, bool render_special) const;

    int32_t n_vocab() const { return int32_t(tokens_.size()); }
    int32_t bos() const { return bos_; }
    int32_t eos() const { return eos_; }
    int32_t eot() const { return eot_; }
    int32_t unk() const { return unk_; }
    int32_t pad() const { return pad_; }
    bool add_bos() const { return add_bos_; }
    bool add_eos() const { return add_eos_; }
    bool is_eog(int32_t id) const { return eog_.count(id) > 0; }
    int32_t find_token(const std::string& text) const;  // -1 if absent

    const std::string& token_text(int32_t id) const;  // raw vocabulary text
    TokenAttr token_type(int32_t id) const;            // as given by the file (before llama.cpp's fix-ups)

  private:
    // llama.cpp's token attributes are bit flags (llama_token_attr).
    enum Attr : uint32_t {
        kAttrUndefined = 0,
        kAttrUnknown = 1 << 0,
        kAttrUnused = 1 << 1,
        kAttrNormal = 1 << 2,
        kAttrControl = 1 << 3,
        kAttrUserDefined = 1 << 4,
        kAttrByte = 1 << 5,
    };
    enum class Kind { Bpe, Spm };

    struct Fragment {  // a piece of the input: raw text or an already-found special token
        int32_t token;  // -1 for text
        size_t offset, length;
    };

    struct Merge {
        int32_t rank;
        int32_t result;  // symbol id of the merged pair
    };

    // (left symbol, right symbol) -> Merge, open addressing: BPE spends most of its time
    // here and a flat table keeps that to about one cache miss per lookup.
    class MergeTable {
      public:
        void reserve(size_t n);
        bool insert(uint32_t left, uint32_t right, Merge m);  // false if present (kept)
        const Merge* find(uint32_t left, uint32_t right) const;

      private:
        struct Slot {
            uint64_t key;
            Merge merge;
        };
        static constexpr uint64_t kEmpty = ~uint64_t(0);
        size_t slot_of(uint64_t key) const;
        std::vector<Slot> slots_;
        size_t mask_ = 0;
        int shift_ = 64;
    };

    struct BpeScratch;  // per-call buffers of tokenize_bpe

    // construction
    void load_tokens(VocabData& data);
    void configure(const VocabData& data);
    void load_merges(const std::vector<std::string>& merges);
    void set_special_ids(const VocabData& data);
    void fix_attributes();
    void build_special_cache();
    void build_pieces();
    int32_t symbol_id(const std::string& text);

    // tokenization
    std::vector<Fragment> partition(const std::string& text, bool parse_special) const;
    void tokenize_bpe(std::string_view text, std::vector<int32_t>& out) const;
    void bpe_word(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& out) const;
    void emit_bpe_symbol(int32_t sym, std::string_view bytes, std::vector<int32_t>& out) const;
    void tokenize_spm(std::string_view text, std::vector<int32_t>& out) const;
    void spm_fallback(std::string_view piece, std::vector<int32_t>& out) const;
    int32_t lookup(std::string_view text) const;
    uint8_t byte_of_token(int32_t id) const;
    std::string piece_of(int32_t id) const;
    void check_id(int32_t id) const;

    Kind kind_ = Kind::Bpe;
    unicode::PreTokenizer pre_ = unicode::PreTokenizer::Default;
    bool ignore_merges_ = false;
    bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
    int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1, eot_ = -1, eom_ = -1;

    std::vector<std::string> tokens_;
    std::vector<float> scores_;
    std::vector<int32_t> types_;
    std::vector<uint32_t> attrs_;
    std::unordered_map<std::string_view, int32_t> token_ids_;  // views into tokens_
    std::unordered_set<int32_t> eog_;
    std::vector<int32_t> special_cache_;  // tokens split out before BPE/SPM, longest first
    std::vector<std::string> pieces_;     // token_to_piece(id, render_special=true)

    // BPE runs on symbol ids: ids < n_vocab are tokens, the rest are merge results or
    // byte characters with no token of their own (their text is in extra_symbols_).
    std::vector<std::string> extra_symbols_;
    std::unordered_map<std::string, int32_t> extra_symbol_ids_;
    MergeTable merges_;
    int32_t byte_symbol_[256] = {};               // symbol of each byte's GPT-2 character
    std::string byte_chars_[256];                 // that character, UTF-8
};

// Streaming detokenization: push ids one by one; returns only complete UTF-8 characters
// (invalid bytes that can never complete become U+FFFD at once); flush() returns the
// rest with an incomplete tail replaced by U+FFFD. Concatenating every push() and the
// final flush() gives the sanitized detokenize() of the same ids.
class StreamDecoder {
  public:
    explicit StreamDecoder(const Tokenizer& tok, bool render_special = false);
    std::string push(int32_t id);
    std::string flush();

  private:
    std::string take_complete();

    const Tokenizer& tok_;
    bool render_special_;
    bool first_ = true;     // the next id is the first one (BOS leading-space rule)
    bool strip_space_ = false;
    std::string pending_;   // bytes not yet returned
};

}  // namespace lowbit
