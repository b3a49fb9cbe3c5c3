// Unicode helpers for the tokenizer: lenient UTF-8 decoding, codepoint category flags,
// GPT-2's byte <-> unicode mapping and the regex pre-tokenizers of llama.cpp, hand-coded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::unicode {

// Category flags of a codepoint (same bit values as llama.cpp's unicode_cpt_flags).
enum Flag : uint16_t {
    kUndefined = 0x0001,    // unassigned codepoint
    kNumber = 0x0002,       // \p{N}
    kLetter = 0x0004,       // \p{L}
    kSeparator = 0x0008,    // \p{Z}
    kMark = 0x0010,         // \p{M}
    kPunctuation = 0x0020,  // \p{P}
    kSymbol = 0x0040,       // \p{S}
    kControl = 0x0080,      // \p{C}
    kWhitespace = 0x0100,   // \s
};

// Generated table (unicode_data.cpp): sorted ranges of equal flags.
struct FlagRange {
    uint32_t first;
    uint16_t flags;
};
extern const FlagRange kFlagRanges[];
extern const size_t kFlagRangeCount;

constexpr uint32_t kMaxCodepoint = 0x10FFFF;
constexpr uint32_t kReplacement = 0xFFFD;

// Flags of one codepoint; kUndefined above U+10FFFF.
uint16_t flags(uint32_t cpt);

// Byte length of a UTF-8 sequence from its first byte (1 for stray continuation bytes).
inline size_t utf8_len(char first) {
    static const uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return kLen[static_cast<uint8_t>(first) >> 4];
}

// Decode like llama.cpp does: any byte that does not start a well-formed sequence (by
// lead byte and continuation bits only) becomes one U+FFFD. Overlong forms and
// surrogates are accepted as llama.cpp accepts them; values above U+10FFFF (where
// llama.cpp throws) are treated as invalid too.
std::vector<uint32_t> decode_utf8(std::string_view text);

void append_utf8(std::string& out, uint32_t cpt);

// Strict UTF-8 step for output sanitizing: returns the length of the valid character at
// p (and stores it in *cpt), 0 if the n available bytes are a valid but incomplete
// prefix, or -k if the first k bytes are an invalid maximal subpart (one U+FFFD each,
// the way Python's "replace" error handler counts them).
int utf8_step(const unsigned char* p, size_t n, uint32_t* cpt);

// Replace invalid UTF-8 by U+FFFD (incomplete tail included).
std::string sanitize_utf8(std::string_view bytes);

// GPT-2 byte-level BPE maps each byte to a printable codepoint.
uint32_t byte_to_cpt(uint8_t byte);
int cpt_to_byte(uint32_t cpt);  // -1 if cpt is not the image of a byte

// Pre-tokenizers (tokenizer.ggml.pre families), each a fixed pipeline of splits that
// reproduces llama.cpp's unicode_regex_split for those regexes, quirks included.
enum class PreTokenizer {
    Default,        // "default" / absent
    Gpt2,           // gpt-2, mpt, olmo, jais, ...
    Llama3,         // llama-bpe, llama3, dbrx, smaug-bpe, chatglm-bpe, glm4, ...
    Qwen2,          // qwen2, stablelm2, hunyuan, grok-2, ...
    Qwen35,         // qwen35
    Starcoder,      // smollm, starcoder, refact, command-r, codeshell, exaone, ...
    Falcon,         // falcon
    DeepseekLlm,    // deepseek-llm
    DeepseekCoder,  // deepseek-coder
    Laguna,         // laguna
};

// Split codepoints into pre-token words; appends word lengths (in codepoints) to out.
void pretokenize(PreTokenizer kind, const std::vector<uint32_t>& cpts, std::vector<uint32_t>& out);

}  // namespace lowbit::unicode
