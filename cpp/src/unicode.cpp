#include "unicode.h"

#include <algorithm>
#include <array>
#include <map>

namespace lowbit::unicode {

// ---------------------------------------------------------------------------------------
// Codepoint flags: a two-level table built once from the generated ranges, so a lookup is
// two loads instead of a binary search over ~2400 ranges.

namespace {

constexpr uint32_t kBlockBits = 8;
constexpr uint32_t kBlockSize = 1u << kBlockBits;
constexpr uint32_t kNumBlocks = (kMaxCodepoint + 1) >> kBlockBits;

struct FlagTable {
    std::vector<uint16_t> block_of;  // block index per 256-codepoint block
    std::vector<uint16_t> blocks;    // deduplicated blocks, kBlockSize flags each

    FlagTable() {
        std::vector<uint16_t> flat(kMaxCodepoint + 1, kUndefined);
        for (size_t i = 0; i < kFlagRangeCount; ++i) {
            const uint32_t end = i + 1 < kFlagRangeCount ? kFlagRanges[i + 1].first : kMaxCodepoint + 1;
            std::fill(flat.begin() + kFlagRanges[i].first, flat.begin() + end, kFlagRanges[i].flags);
        }
        std::map<std::vector<uint16_t>, uint16_t> seen;
        block_of.resize(kNumBlocks);
        for (uint32_t b = 0; b < kNumBlocks; ++b) {
            std::vector<uint16_t> block(flat.begin() + b * kBlockSize, flat.begin() + (b + 1) * kBlockSize);
            auto it = seen.find(block);
            if (it == seen.end()) {
                it = seen.emplace(block, static_cast<uint16_t>(seen.size())).first;
                blocks.insert(blocks.end(), block.begin(), block.end());
            }
            block_of[b] = it->second;
        }
    }
};

const FlagTable& flag_table() {
    static const FlagTable table;
    return table;
}

}  // namespace

uint16_t flags(uint32_t cpt) {
    if (cpt > kMaxCodepoint) return kUndefined;
    const FlagTable& t = flag_table();
    return t.blocks[(size_t(t.block_of[cpt >> kBlockBits]) << kBlockBits) | (cpt & (kBlockSize - 1))];
}

// ---------------------------------------------------------------------------------------
// UTF-8

namespace {

inline bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// One codepoint the way llama.cpp's unicode_cpt_from_utf8 reads it; returns its length,
// or 0 for an invalid start (the caller then emits U+FFFD and skips one byte).
size_t decode_lenient(const unsigned char* p, size_t n, uint32_t* cpt) {
    const unsigned char c = p[0];
    if (c < 0x80) {
        *cpt = c;
        return 1;
    }
    if (!(c & 0x40)) return 0;  // stray continuation byte
    if (!(c & 0x20)) {
        if (n < 2 || !is_cont(p[1])) return 0;
        *cpt = (uint32_t(c & 0x1F) << 6) | (p[1] & 0x3F);
        return 2;
    }
    if (!(c & 0x10)) {
        if (n < 3 || !is_cont(p[1]) || !is_cont(p[2])) return 0;
        *cpt = (uint32_t(c & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
        return 3;
    }
    if (!(c & 0x08)) {
        if (n < 4 || !is_cont(p[1]) || !is_cont(p[2]) || !is_cont(p[3])) return 0;
        const uint32_t v = (uint32_t(c & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) |
                           (uint32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
        if (v > kMaxCodepoint) return 0;  // llama.cpp would throw while re-encoding it
        *cpt = v;
        return 4;
    }
    return 0;
}

}  // namespace

std::vector<uint32_t> decode_utf8(std::string_view text) {
    std::vector<uint32_t> out;
    out.reserve(text.size());
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    size_t i = 0;
    while (i < text.size()) {
        uint32_t cpt;
        const size_t len = decode_lenient(p + i, text.size() - i, &cpt);
        if (len == 0) {
            out.push_back(kReplacement);
            i += 1;
        } else {
            out.push_back(cpt);
            i += len;
        }
    }
    return out;
}

void append_utf8(std::string& out, uint32_t cpt) {
    if (cpt < 0x80) {
        out.push_back(char(cpt));
    } else if (cpt < 0x800) {
        out.push_back(char(0xC0 | (cpt >> 6)));
        out.push_back(char(0x80 | (cpt & 0x3F)));
    } else if (cpt < 0x10000) {
        out.push_back(char(0xE0 | (cpt >> 12)));
        out.push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cpt & 0x3F)));
    } else {
        out.push_back(char(0xF0 | ((cpt >> 18) & 0x07)));
        out.push_back(char(0x80 | ((cpt >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cpt >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cpt & 0x3F)));
    }
}

int utf8_step(const unsigned char* p, size_t n, uint32_t* cpt) {
    const unsigned char c = p[0];
    if (c < 0x80) {
        *cpt = c;
        return 1;
    }
    int len;
    uint32_t v;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (RFC 3629 table)
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;  // no overlongs
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // <= U+10FFFF
    } else {
        return -1;
    }
    for (int i = 1; i < len; ++i) {
        if (size_t(i) >= n) return 0;  // valid so far, needs more bytes
        const unsigned char b = p[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return -i;
        v = (v << 6) | (b & 0x3F);
    }
    *cpt = v;
    return len;
}

std::string sanitize_utf8(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    size_t i = 0;
    while (i < bytes.size()) {
        uint32_t cpt;
        const int r = utf8_step(p + i, bytes.size() - i, &cpt);
        if (r > 0) {
            out.append(bytes.data() + i, size_t(r));
            i += size_t(r);
        } else {
            append_utf8(out, kReplacement);
            i += r < 0 ? size_t(-r) : bytes.size() - i;  // an incomplete tail is one U+FFFD
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes
// to U+0100.. in byte order.

namespace {

struct ByteMap {
    std::array<uint32_t, 256> to_cpt{};
    std::array<int16_t, 512> to_byte{};

    ByteMap() {
        to_byte.fill(-1);
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            to_cpt[b] = printable ? uint32_t(b) : next++;
            to_byte[to_cpt[b]] = int16_t(b);
        }
    }
};

const ByteMap& byte_map() {
    static const ByteMap map;
    return map;
}

}  // namespace

uint32_t byte_to_cpt(uint8_t byte) { return byte_map().to_cpt[byte]; }

int cpt_to_byte(uint32_t cpt) { return cpt < 512 ? byte_map().to_byte[cpt] : -1; }

// ---------------------------------------------------------------------------------------
// Pre-tokenizers.
//
// llama.cpp applies a list of regexes in turn; each one splits every chunk left by the
// previous one. Some regexes have hand-written splitters in llama.cpp (gpt2, llama3,
// qwen2, ...) whose behaviour we reproduce step by step, the others run through
// std::regex, where matches and the gaps between them both become chunks ("isolated").
// Here every stage is a function splitting one chunk [b, e) of the codepoints.

namespace {

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

struct Chunk {
    const uint32_t* cpts;
    const uint16_t* flg;
    size_t b, e;

    // Outside the chunk a codepoint reads as kOutOfRange with no flags, like llama.cpp.
    uint32_t cpt(size_t i) const { return i < e ? cpts[i] : kOutOfRange; }
    uint16_t flags(size_t i) const { return i < e ? flg[i] : 0; }
    bool has(size_t i, uint16_t f) const { return (flags(i) & f) != 0; }
};

// Appends the lengths of consecutive pieces of a chunk.
struct Emitter {
    std::vector<uint32_t>& out;
    size_t prev;

    size_t emit(size_t end) {
        const size_t len = end - prev;
        if (len > 0) out.push_back(uint32_t(len));
        prev = end;
        return len;
    }
};

using Stage = void (*)(const Chunk&, std::vector<uint32_t>&);

inline uint32_t ascii_lower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d (optionally case-insensitive); returns the match end or 0.
// Only ASCII codepoints lower-case to these letters, so ASCII lowering is exact.
size_t match_contraction(const Chunk& c, size_t pos, bool icase) {
    if (c.cpt(pos) != '\'' || pos + 1 >= c.e) return 0;
    auto low = [&](size_t i) { return icase ? ascii_lower(c.cpt(i)) : c.cpt(i); };
    const uint32_t n1 = low(pos + 1);
    if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') return pos + 2;
    if (pos + 2 >= c.e) return 0;
    const uint32_t n2 = low(pos + 2);
    if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) return pos + 3;
    return 0;
}

// \s+(?!\S) then \s+ : a whitespace run gives back its last char when more text follows.
size_t whitespace_run_end(const Chunk& c, size_t pos, size_t count) {
    if (count > 1 && c.cpt(pos + count) != kOutOfRange) return pos + count - 1;
    if (count > 0) return pos + count;
    return pos + 1;  // no alternative matched: a single codepoint
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
void split_gpt2(const Chunk& c, std::vector<uint32_t>& out) {
    Emitter em{out, c.b};
    for (size_t pos = c.b; pos < c.e;) {
        const uint32_t cpt = c.cpt(pos);
        if (size_t end = match_contraction(c, pos, false)) {
            pos = end, em.emit(pos);
            continue;
        }
        uint16_t f2 = cpt == ' ' ? c.flags(pos + 1) : c.flags(pos);
        if (f2 & kLetter) {
            pos += (cpt == ' ');
            while (c.has(pos, kLetter)) ++pos;
            em.emit(pos);
            continue;
        }
        if (f2 & kNumber) {
            pos += (cpt == ' ');
            while (c.has(pos, kNumber)) ++pos;
            em.emit(pos);
            continue;
        }
        const uint16_t word = kWhitespace | kLetter | kNumber;
        if (!(f2 & word) && f2) {
            pos += (cpt == ' ');
            while (!(f2 & word) && f2) f2 = c.flags(++pos);
            em.emit(pos);
            continue;
        }
        size_t n_ws = 0;
        while (c.has(pos + n_ws, kWhitespace)) ++n_ws;
        pos = whitespace_run_end(c, pos, n_ws);
        em.emit(pos);
    }
}

// Shared body of the llama3 / qwen2 / qwen35 splitters:
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?<letters>+|<numbers>| ?[^\s<letters>\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// letters = \p{L} (or [\p{L}\p{M}] for qwen35); numbers = \p{N}{1,3} (llama3) or \p{N}.
void split_llama3_like(const Chunk& c, std::vector<uint32_t>& out, uint16_t letter, size_t max_digits) {
    Emitter em{out, c.b};
    for (size_t pos = c.b; pos < c.e;) {
        const uint32_t cpt = c.cpt(pos);
        const uint16_t f = c.flags(pos);
        if (size_t end = match_contraction(c, pos, true)) {
            pos = end, em.emit(pos);
            continue;
        }
        if (!(cpt == '\r' || cpt == '\n' || (f & kNumber)) && ((f & letter) || c.has(pos + 1, letter))) {
            ++pos;
            while (c.has(pos, letter)) ++pos;
            em.emit(pos);
            continue;
        }
        if (f & kNumber) {
            size_t ini = pos;
            while (c.has(pos, kNumber)) {
                if (++pos - ini >= max_digits) em.emit(pos), ini = pos;
            }
            em.emit(pos);
            continue;
        }
        // ?[^\s\p{L}\p{N}]+[\r\n]* -- llama.cpp tests the flags of `cpt` itself for
        // being in range, not those of the char after the optional space.
        const uint16_t word = kWhitespace | letter | kNumber;
        uint16_t f2 = cpt == ' ' ? c.flags(pos + 1) : f;
        if (!(f2 & word) && f) {
            pos += (cpt == ' ');
            while (!(f2 & word) && f2) f2 = c.flags(++pos);
            while (c.cpt(pos) == '\r' || c.cpt(pos) == '\n') ++pos;
            em.emit(pos);
            continue;
        }
        size_t n_ws = 0, last_newline_end = 0;
        while (c.has(pos + n_ws, kWhitespace)) {
            const uint32_t w = c.cpt(pos + n_ws);
            if (w == '\r' || w == '\n') last_newline_end = pos + n_ws + 1;
            ++n_ws;
        }
        pos = last_newline_end > 0 ? last_newline_end : whitespace_run_end(c, pos, n_ws);
        em.emit(pos);
    }
}

void split_llama3(const Chunk& c, std::vector<uint32_t>& out) { split_llama3_like(c, out, kLetter, 3); }
void split_qwen2(const Chunk& c, std::vector<uint32_t>& out) { split_llama3_like(c, out, kLetter, 1); }

// qwen35 also lets marks start a letter run: its first test is on either flag.
void split_qwen35(const Chunk& c, std::vector<uint32_t>& out) {
    split_llama3_like(c, out, kLetter | kMark, 1);
}

// std::regex_iterator over the chunk: `match(c, pos)` returns the end of a match starting
// at pos, or pos when none starts there. Matches and the gaps between them are pieces.
template <typename Match>
void isolate(const Chunk& c, std::vector<uint32_t>& out, Match match) {
    Emitter em{out, c.b};
    for (size_t pos = c.b; pos < c.e;) {
        const size_t end = match(c, pos);
        if (end > pos) {
            em.emit(pos);  // the gap before the match
            em.emit(end);
            pos = end;
        } else {
            ++pos;
        }
    }
    em.emit(c.e);
}

template <typename Pred>
size_t run_end(const Chunk& c, size_t pos, Pred in_class) {
    while (pos < c.e && in_class(c, pos)) ++pos;
    return pos;
}

// \s?X+ : greedy optional whitespace, backtracking to none if X+ fails after it.
template <typename Pred>
size_t match_ws_opt_run(const Chunk& c, size_t pos, Pred in_class) {
    if (c.has(pos, kWhitespace) && pos + 1 < c.e && in_class(c, pos + 1)) return run_end(c, pos + 1, in_class);
    return run_end(c, pos, in_class);
}

// llama.cpp runs regexes without \p{..} through std::wregex on a copy of the text where
// non-ASCII whitespace reads as U+000B (wregex's \s only knows ASCII).
uint32_t wregex_view(const Chunk& c, size_t i) {
    const uint32_t x = c.cpt(i);
    return (x > 0x7F && c.has(i, kWhitespace)) ? 0x0B : x;
}

bool is_number(const Chunk& c, size_t i) { return c.has(i, kNumber); }
bool is_letter(const Chunk& c, size_t i) { return c.has(i, kLetter); }
bool is_punct(const Chunk& c, size_t i) { return c.has(i, kPunctuation); }
bool is_cr_lf(const Chunk& c, size_t i) { return c.cpt(i) == '\r' || c.cpt(i) == '\n'; }

// [一-龥ࠀ-一가-퟿] (a wregex: U+0800..U+4E00 holds whitespace such as U+1680)
bool is_cjk_hangul(const Chunk& c, size_t i) {
    const uint32_t x = wregex_view(c, i);
    return (x >= 0x4E00 && x <= 0x9FA5) || (x >= 0x0800 && x <= 0x4E00) || (x >= 0xAC00 && x <= 0xD7FF);
}

// [\p{P}\$\+<=>\^~\|] (default) and the same plus ` (falcon).
bool is_default_punct(const Chunk& c, size_t i) {
    const uint32_t x = c.cpt(i);
    return c.has(i, kPunctuation) || x == '$' || x == '+' || x == '<' || x == '=' || x == '>' || x == '^' ||
           x == '~' || x == '|';
}
bool is_falcon_punct(const Chunk& c, size_t i) { return is_default_punct(c, i) || c.cpt(i) == '`'; }

void split_number_each(const Chunk& c, std::vector<uint32_t>& out) {  // \p{N}
    isolate(c, out, [](const Chunk& k, size_t p) { return is_number(k, p) ? p + 1 : p; });
}
void split_number_runs(const Chunk& c, std::vector<uint32_t>& out) {  // \p{N}+
    isolate(c, out, [](const Chunk& k, size_t p) { return run_end(k, p, is_number); });
}
void split_digit_triples(const Chunk& c, std::vector<uint32_t>& out) {  // [0-9][0-9][0-9]
    auto digit = [](const Chunk& k, size_t i) { return k.cpt(i) >= '0' && k.cpt(i) <= '9'; };
    isolate(c, out, [&](const Chunk& k, size_t p) {
        return (digit(k, p) && digit(k, p + 1) && digit(k, p + 2)) ? p + 3 : p;
    });
}
void split_default_punct(const Chunk& c, std::vector<uint32_t>& out) {
    isolate(c, out, [](const Chunk& k, size_t p) { return run_end(k, p, is_default_punct); });
}
void split_falcon_punct(const Chunk& c, std::vector<uint32_t>& out) {
    isolate(c, out, [](const Chunk& k, size_t p) { return run_end(k, p, is_falcon_punct); });
}
void split_cr_lf(const Chunk& c, std::vector<uint32_t>& out) {  // [\r\n]
    isolate(c, out, [](const Chunk& k, size_t p) { return is_cr_lf(k, p) ? p + 1 : p; });
}
void split_cjk(const Chunk& c, std::vector<uint32_t>& out) {
    isolate(c, out, [](const Chunk& k, size_t p) { return run_end(k, p, is_cjk_hangul); });
}
void split_ws_letters(const Chunk& c, std::vector<uint32_t>& out) {  // \s?\p{L}+
    isolate(c, out, [](const Chunk& k, size_t p) { return match_ws_opt_run(k, p, is_letter); });
}
void split_ws_punct(const Chunk& c, std::vector<uint32_t>& out) {  // \s?\p{P}+
    isolate(c, out, [](const Chunk& k, size_t p) { return match_ws_opt_run(k, p, is_punct); });
}

// deepseek-llm's hand-listed letter class (from its tokenizer.json), inclusive ranges.
const uint32_t kDeepseekLetters[][2] = {
    {0x0041, 0x005A}, {0x0061, 0x007A}, {0x00B5, 0x00B5}, {0x00C0, 0x00D6}, {0x00D8, 0x00F6},
    {0x00F8, 0x01BA}, {0x01BC, 0x01BF}, {0x01C4, 0x0293}, {0x0295, 0x02AF}, {0x0370, 0x0373},
    {0x0376, 0x0377}, {0x037B, 0x037D}, {0x037F, 0x037F}, {0x0386, 0x0386}, {0x0388, 0x038A},
    {0x038C, 0x038C}, {0x038E, 0x03A1}, {0x03A3, 0x03F5}, {0x03F7, 0x0481}, {0x048A, 0x052F},
    {0x0531, 0x0556}, {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA},
    {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59},
    {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB},
    {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107},
    {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126},
    {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F},
    {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F},
    {0xA771, 0xA787}, {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17},
    {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

bool is_deepseek_letter(const Chunk& c, size_t i) {
    const uint32_t x = wregex_view(c, i);
    for (const auto& r : kDeepseekLetters) {
        if (x < r[0]) return false;
        if (x <= r[1]) return true;
    }
    return false;
}

// [!-/:-~！-／：-～‘-‟　-。]
bool is_deepseek_punct(const Chunk& c, size_t i) {
    const uint32_t x = wregex_view(c, i);
    return (x >= 0x21 && x <= 0x2F) || (x >= 0x3A && x <= 0x7E) || (x >= 0xFF01 && x <= 0xFF0F) ||
           (x >= 0xFF1A && x <= 0xFF5E) || (x >= 0x2018 && x <= 0x201F) || (x >= 0x3000 && x <= 0x3002);
}

void split_deepseek_letters(const Chunk& c, std::vector<uint32_t>& out) {
    isolate(c, out, [](const Chunk& k, size_t p) { return match_ws_opt_run(k, p, is_deepseek_letter); });
}
void split_deepseek_punct(const Chunk& c, std::vector<uint32_t>& out) {
    isolate(c, out, [](const Chunk& k, size_t p) { return match_ws_opt_run(k, p, is_deepseek_punct); });
}

// \s+$ : only the whitespace run that reaches the end of the chunk matches.
void split_trailing_ws(const Chunk& c, std::vector<uint32_t>& out) {
    size_t start = c.e;
    while (start > c.b && c.has(start - 1, kWhitespace)) --start;
    Emitter em{out, c.b};
    em.emit(start);
    em.emit(c.e);
}

// [^\n]+|[\n]+
void split_newline_runs(const Chunk& c, std::vector<uint32_t>& out) {
    Emitter em{out, c.b};
    for (size_t pos = c.b; pos < c.e;) {
        const bool nl = c.cpt(pos) == '\n';
        while (pos < c.e && (c.cpt(pos) == '\n') == nl) ++pos;
        em.emit(pos);
    }
}

std::vector<Stage> stages_of(PreTokenizer kind) {
    switch (kind) {
        case PreTokenizer::Default:
            return {split_default_punct, split_gpt2, split_number_runs, split_digit_triples};
        case PreTokenizer::Gpt2: return {split_gpt2};
        case PreTokenizer::Llama3: return {split_llama3};
        case PreTokenizer::Qwen2: return {split_qwen2};
        case PreTokenizer::Qwen35: return {split_qwen35};
        case PreTokenizer::Starcoder: return {split_number_each, split_gpt2};
        case PreTokenizer::Falcon: return {split_falcon_punct, split_gpt2, split_digit_triples};
        case PreTokenizer::DeepseekLlm:
            return {split_cr_lf, split_deepseek_letters, split_deepseek_punct, split_trailing_ws, split_cjk,
                    split_number_runs};
        case PreTokenizer::DeepseekCoder:
            return {split_cr_lf, split_ws_letters, split_ws_punct, split_cjk, split_number_each};
        case PreTokenizer::Laguna: return {split_newline_runs, split_qwen2};
    }
    return {};
}

}  // namespace

void pretokenize(PreTokenizer kind, const std::vector<uint32_t>& cpts, std::vector<uint32_t>& out) {
    if (cpts.empty()) return;
    std::vector<uint16_t> flg(cpts.size());
    for (size_t i = 0; i < cpts.size(); ++i) flg[i] = flags(cpts[i]);

    std::vector<uint32_t> chunks{uint32_t(cpts.size())}, next;
    for (Stage stage : stages_of(kind)) {
        next.clear();
        size_t b = 0;
        for (uint32_t len : chunks) {
            stage(Chunk{cpts.data(), flg.data(), b, b + len}, next);
            b += len;
        }
        chunks.swap(next);
    }
    out.insert(out.end(), chunks.begin(), chunks.end());
}

}  // namespace lowbit::unicode
