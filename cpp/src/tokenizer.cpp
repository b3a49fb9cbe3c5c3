#include "tokenizer.h"

#include <algorithm>
#include <cstdlib>
#include <queue>

namespace lowbit {

namespace {

using unicode::PreTokenizer;

const char* const kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// tokenizer.ggml.pre values we support and llama.cpp's settings for them.
struct PreSpec {
    const char* name;
    PreTokenizer kind;
    bool ignore_merges;  // a word that is itself a token skips BPE (llama3)
    bool add_bos;        // default of add_bos when the file does not say
    bool no_bos;         // no default BOS id
};

const PreSpec kPreSpecs[] = {
    {"default", PreTokenizer::Default, false, false, false},
    {"llama3", PreTokenizer::Llama3, true, true, false},
    {"llama-v3", PreTokenizer::Llama3, true, true, false},
    {"llama-bpe", PreTokenizer::Llama3, true, true, false},
    {"falcon3", PreTokenizer::Llama3, true, true, false},
    {"falcon-h1", PreTokenizer::Llama3, true, true, false},
    {"pixtral", PreTokenizer::Llama3, true, true, false},
    {"midm-2.0", PreTokenizer::Llama3, true, true, false},
    {"lfm2", PreTokenizer::Llama3, true, true, false},
    {"jina-v5-nano", PreTokenizer::Llama3, true, true, false},
    {"dbrx", PreTokenizer::Llama3, false, false, false},
    {"smaug-bpe", PreTokenizer::Llama3, false, false, false},
    {"chatglm-bpe", PreTokenizer::Llama3, false, false, true},
    {"glm4", PreTokenizer::Llama3, true, false, true},
    {"glm5", PreTokenizer::Llama3, true, false, true},
    {"deepseek-llm", PreTokenizer::DeepseekLlm, false, false, false},
    {"deepseek-coder", PreTokenizer::DeepseekCoder, false, false, false},
    {"falcon", PreTokenizer::Falcon, false, false, false},
    {"gpt-2", PreTokenizer::Gpt2, false, false, false},
    {"mpt", PreTokenizer::Gpt2, false, false, false},
    {"olmo", PreTokenizer::Gpt2, false, false, false},
    {"jais", PreTokenizer::Gpt2, false, false, false},
    {"trillion", PreTokenizer::Gpt2, false, false, false},
    {"granite-docling", PreTokenizer::Gpt2, false, false, false},
    {"exaone4", PreTokenizer::Gpt2, false, false, false},
    {"phi-2", PreTokenizer::Gpt2, false, false, false},
    {"jina-es", PreTokenizer::Gpt2, false, false, false},
    {"jina-de", PreTokenizer::Gpt2, false, false, false},
    {"gigachat", PreTokenizer::Gpt2, false, false, false},
    {"jina-v2-es", PreTokenizer::Gpt2, false, false, false},
    {"jina-v2-de", PreTokenizer::Gpt2, false, false, false},
    {"jina-v1-en", PreTokenizer::Gpt2, false, false, false},
    {"jina-v2-code", PreTokenizer::Gpt2, false, false, false},
    {"roberta-bpe", PreTokenizer::Gpt2, false, false, false},
    {"a.x-4.0", PreTokenizer::Gpt2, false, false, false},
    {"mellum", PreTokenizer::Gpt2, false, false, false},
    {"modern-bert", PreTokenizer::Gpt2, false, false, false},
    {"smollm", PreTokenizer::Starcoder, false, false, false},
    {"starcoder", PreTokenizer::Starcoder, false, false, false},
    {"refact", PreTokenizer::Starcoder, false, false, false},
    {"command-r", PreTokenizer::Starcoder, false, false, false},
    {"codeshell", PreTokenizer::Starcoder, false, false, false},
    {"exaone", PreTokenizer::Starcoder, false, false, false},
    {"minerva-7b", PreTokenizer::Starcoder, false, false, false},
    {"mellum2", PreTokenizer::Starcoder, false, false, false},
    {"qwen2", PreTokenizer::Qwen2, false, false, false},
    {"deepseek-r1-qwen", PreTokenizer::Qwen2, false, false, false},
    {"kormo", PreTokenizer::Qwen2, false, false, false},
    {"f2llmv2", PreTokenizer::Qwen2, false, false, false},
    {"megrez", PreTokenizer::Qwen2, false, false, false},
    {"stablelm2", PreTokenizer::Qwen2, false, false, false},
    {"hunyuan", PreTokenizer::Qwen2, false, false, false},
    {"solar-open", PreTokenizer::Qwen2, false, false, false},
    {"grok-2", PreTokenizer::Qwen2, false, false, false},
    {"qwen35", PreTokenizer::Qwen35, false, false, false},
    {"laguna", PreTokenizer::Laguna, false, false, false},
};

const PreSpec& find_pre(const std::string& name) {
    const std::string key = name.empty() ? "default" : name;
    for (const PreSpec& spec : kPreSpecs) {
        if (key == spec.name) return spec;
    }
    throw Error("unsupported tokenizer pre-type '" + name + "' (tokenizer.ggml.pre)");
}

// Texts llama.cpp recognizes as special whatever the file says (llama-vocab.cpp).
const char* const kEotTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                 "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
                                 "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                                 "<end_of_utterance>"};
const char* const kFimPreTexts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                                    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>",
                                    "\xE2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>"};
const char* const kFimSufTexts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                                    "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>", "<SUF>",
                                    "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>"};
const char* const kFimMidTexts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                                    "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>",
                                    "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>"};
const char* const kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
const char* const kFimRepTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
const char* const kFimSepTexts[] = {"<|file_sep|>"};
const char* const kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
                                 "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
                                 "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
                                 "<turn|>", "<|tool_response>",
                                 "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~["};
// gpt-oss: always rendered, never split as control.
const char* const kAlwaysRenderedTexts[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};

void replace_all(std::string& s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
        out.append(s, pos, hit - pos);
        out.append(to);
    }
    out.append(s, pos, std::string::npos);
    s.swap(out);
}

std::string hex_byte(uint8_t b) {
    static const char* kHex = "0123456789abcdef";
    return {kHex[b >> 4], kHex[b & 15]};
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Construction

Tokenizer::Tokenizer(VocabData data) {
    configure(data);
    load_tokens(data);
    if (kind_ == Kind::Bpe) load_merges(data.merges);
    set_special_ids(data);
    fix_attributes();
    build_special_cache();
    build_pieces();
}

void Tokenizer::configure(const VocabData& data) {
    if (data.model == "gpt2") {
        const PreSpec& spec = find_pre(data.pre);
        kind_ = Kind::Bpe;
        pre_ = spec.kind;
        ignore_merges_ = spec.ignore_merges;
        add_bos_ = spec.add_bos;
        add_space_prefix_ = false;
    } else if (data.model == "llama") {
        kind_ = Kind::Spm;  // SPM ignores tokenizer.ggml.pre
        add_bos_ = true;
        add_space_prefix_ = true;
    } else {
        throw Error("unsupported tokenizer model '" + data.model + "' (tokenizer.ggml.model; supported: gpt2, llama)");
    }
    add_eos_ = false;
    if (data.add_bos >= 0) add_bos_ = data.add_bos != 0;
    if (data.add_eos >= 0) add_eos_ = data.add_eos != 0;
    if (data.add_space_prefix >= 0) add_space_prefix_ = data.add_space_prefix != 0;
}

void Tokenizer::load_tokens(VocabData& data) {
    const size_t n = data.tokens.size();
    if (n == 0) throw FormatError("tokenizer vocabulary is empty");
    if (n >= size_t(INT32_MAX)) throw FormatError("tokenizer vocabulary is too large");
    if (!data.scores.empty() && data.scores.size() < n)
        throw FormatError("tokenizer scores: " + std::to_string(data.scores.size()) + " for " + std::to_string(n) + " tokens");
    if (!data.token_types.empty() && data.token_types.size() < n)
        throw FormatError("tokenizer token types: " + std::to_string(data.token_types.size()) + " for " +
                          std::to_string(n) + " tokens");

    tokens_ = std::move(data.tokens);
    scores_ = std::move(data.scores);
    types_ = std::move(data.token_types);
    scores_.resize(scores_.empty() ? 0 : n);
    types_.resize(types_.empty() ? 0 : n);

    attrs_.assign(n, kAttrNormal);
    static const uint32_t kAttrOfType[] = {kAttrUndefined, kAttrNormal,  kAttrUnknown, kAttrControl,
                                           kAttrUserDefined, kAttrUnused, kAttrByte};
    for (size_t i = 0; i < types_.size(); ++i) {
        attrs_[i] = (types_[i] >= 0 && types_[i] <= 6) ? kAttrOfType[types_[i]] : kAttrUndefined;
    }

    token_ids_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        if (tokens_[i].empty()) tokens_[i] = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp does
    }
    for (size_t i = 0; i < n; ++i) {
        auto [it, fresh] = token_ids_.emplace(std::string_view(tokens_[i]), int32_t(i));
        if (!fresh) {
            throw FormatError("duplicate token text '" + tokens_[i] + "' (ids " + std::to_string(it->second) +
                              " and " + std::to_string(i) + ")");
        }
    }
}

int32_t Tokenizer::symbol_id(const std::string& text) {
    const int32_t tok = lookup(text);
    if (tok >= 0) return tok;
    auto [it, fresh] = extra_symbol_ids_.emplace(text, int32_t(tokens_.size() + extra_symbols_.size()));
    if (fresh) extra_symbols_.push_back(text);
    return it->second;
}

void Tokenizer::load_merges(const std::vector<std::string>& merges) {
    for (int b = 0; b < 256; ++b) {
        unicode::append_utf8(byte_chars_[b], unicode::byte_to_cpt(uint8_t(b)));
        byte_symbol_[b] = symbol_id(byte_chars_[b]);
    }
    merges_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
        const std::string& m = merges[i];
        const size_t space = m.find(' ', 1);  // from 1: the left part may itself be " "
        if (space == std::string::npos)
            throw FormatError("malformed tokenizer merge #" + std::to_string(i) + " '" + m + "' (expected 'left right')");
        const std::string left = m.substr(0, space), right = m.substr(space + 1);
        for (const std::string* part : {&left, &right}) {
            if (lookup(*part) < 0)
                throw FormatError("tokenizer merge #" + std::to_string(i) + " '" + m + "' uses unknown token '" + *part + "'");
        }
        merges_.insert(uint32_t(lookup(left)), uint32_t(lookup(right)), Merge{int32_t(i), symbol_id(left + right)});
    }
}

void Tokenizer::set_special_ids(const VocabData& data) {
    const int32_t n = n_vocab();
    if (kind_ == Kind::Spm) {
        bos_ = 1, eos_ = 2, unk_ = 0;
    } else {
        bos_ = find_pre(data.pre).no_bos ? -1 : 11;  // llama.cpp's (odd) gpt2 defaults
        eos_ = 11;
    }
    for (int32_t* id : {&bos_, &eos_, &unk_}) {
        if (*id >= n) *id = -1;  // a default outside the vocabulary is disabled
    }
    auto take = [&](int32_t given, int32_t& id, const char* what, bool strict) {
        if (given < 0) return;
        if (given < n) {
            id = given;
        } else if (strict) {
            throw FormatError(std::string("tokenizer ") + what + " id " + std::to_string(given) +
                              " is out of range (vocabulary of " + std::to_string(n) + ")");
        }
    };
    take(data.bos_id, bos_, "bos", true);
    take(data.eos_id, eos_, "eos", true);
    take(data.unk_id, unk_, "unknown", false);
    take(data.pad_id, pad_, "padding", false);
    take(data.eot_id, eot_, "eot", false);
    take(data.eom_id, eom_, "eom", false);
    if (add_bos_ && bos_ < 0) throw FormatError("tokenizer adds BOS but has no BOS token");
    if (add_eos_ && eos_ < 0) throw FormatError("tokenizer adds EOS but has no EOS token");
}

// llama.cpp fixes attributes and picks end-of-generation tokens by their text. Where it
// takes the first match in hash-map order we take the lowest id (only matters for
// vocabularies holding several candidates of one kind).
void Tokenizer::fix_attributes() {
    auto first_of = [&](auto& texts) {
        int32_t best = -1;
        for (const char* t : texts) {
            const int32_t id = lookup(t);
            if (id >= 0 && (best < 0 || id < best)) best = id;
        }
        return best;
    };
    auto force_control = [&](int32_t id) {
        if (id >= 0) attrs_[id] |= kAttrControl;
    };
    if (eot_ < 0) force_control(eot_ = first_of(kEotTexts));
    if (eom_ < 0) force_control(eom_ = lookup("<|eom_id|>"));
    force_control(first_of(kFimPreTexts));
    force_control(first_of(kFimSufTexts));
    force_control(first_of(kFimMidTexts));
    for (int32_t id : {first_of(kFimPadTexts), first_of(kFimRepTexts), first_of(kFimSepTexts)}) {
        force_control(id);  // FIM pad / repo / file-separator tokens also end generation
        if (id >= 0) eog_.insert(id);
    }

    for (const char* t : kEogTexts) {
        const int32_t id = lookup(t);
        force_control(id);
        if (id >= 0) eog_.insert(id);
    }
    for (const char* t : kAlwaysRenderedTexts) {
        const int32_t id = lookup(t);
        if (id >= 0) attrs_[id] = kAttrUserDefined;
    }
    for (int32_t id : {eos_, eot_, eom_}) {
        if (id >= 0) eog_.insert(id);
    }
    auto eog_has = [&](const char* t) {
        const int32_t id = lookup(t);
        return id >= 0 && eog_.count(id) > 0;
    };
    // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
    if (eog_has("<|end|>") && ((eog_has("<|return|>") && eog_has("<|call|>")) ||
                               (eog_has("<|calls|>") && eog_has("<|flush|>")))) {
        const int32_t end = lookup("<|end|>");
        eog_.erase(end);
        attrs_[end] = kAttrUserDefined;
    }
    // gemma4 / plamo: "</s>" is an ordinary token there.
    if (eog_has("</s>") && (eog_has("<|tool_response>") || eog_has("<|plamo:eos|>"))) {
        const int32_t s = lookup("</s>");
        eog_.erase(s);
        attrs_[s] = kAttrNormal;
    }
}

void Tokenizer::build_special_cache() {
    for (int32_t id = 0; id < n_vocab(); ++id) {
        if (attrs_[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special_cache_.push_back(id);
    }
    // Same call as llama.cpp (std::sort is not stable; equal lengths keep its order).
    std::sort(special_cache_.begin(), special_cache_.end(),
              [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
}

void Tokenizer::build_pieces() {
    pieces_.resize(tokens_.size());
    for (int32_t id = 0; id < n_vocab(); ++id) pieces_[id] = piece_of(id);
}

// llama.cpp reads the two hex digits at [3, 5) of "<0xXX>".
uint8_t Tokenizer::byte_of_token(int32_t id) const {
    const std::string& t = tokens_[id];
    const std::string hex = t.size() > 3 ? t.substr(3, 2) : std::string();
    return uint8_t(std::strtol(hex.c_str(), nullptr, 16));
}

std::string Tokenizer::piece_of(int32_t id) const {
    const uint32_t attr = attrs_[id];
    const std::string& text = tokens_[id];
    if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
    if (attr & kAttrByte) return std::string(1, char(byte_of_token(id)));
    if (!(attr & kAttrNormal)) return {};  // unused / undefined
    std::string out;
    if (kind_ == Kind::Spm) {
        out = text;
        replace_all(out, kSpaceMarker, " ");
        return out;
    }
    for (uint32_t cpt : unicode::decode_utf8(text)) {  // GPT-2 characters back to bytes
        const int b = unicode::cpt_to_byte(cpt);
        if (b >= 0) {
            out.push_back(char(b));
            continue;
        }
        std::string utf8;
        unicode::append_utf8(utf8, cpt);
        out += "[UNK_BYTE_0x";
        for (char c : utf8) out += hex_byte(uint8_t(c));
        out += text + "]";
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// Accessors

int32_t Tokenizer::lookup(std::string_view text) const {
    const auto it = token_ids_.find(text);
    return it == token_ids_.end() ? -1 : it->second;
}

int32_t Tokenizer::find_token(const std::string& text) const { return lookup(text); }

void Tokenizer::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab())
        throw Error("token id " + std::to_string(id) + " is out of range (vocabulary of " + std::to_string(n_vocab()) + ")");
}

const std::string& Tokenizer::token_text(int32_t id) const {
    check_id(id);
    return tokens_[id];
}

TokenAttr Tokenizer::token_type(int32_t id) const {
    check_id(id);
    return types_.empty() ? TokenAttr::Normal : TokenAttr(types_[id] >= 0 && types_[id] <= 6 ? types_[id] : 0);
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
    check_id(id);
    if (!render_special && (attrs_[id] & (kAttrUnknown | kAttrControl))) return {};
    return pieces_[id];
}

std::string Tokenizer::detokenize(const std::vector<int32_t>& ids, bool render_special) const {
    std::string out;
    for (int32_t id : ids) out += token_to_piece(id, render_special);
    if (!ids.empty() && ids[0] == bos_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
}

// ---------------------------------------------------------------------------------------
// Tokenization

// Split out special tokens, longest first, each at every non-overlapping occurrence in
// the text left over by the previous ones. Without parse_special only user-defined
// tokens are split (control ones are then plain text).
std::vector<Tokenizer::Fragment> Tokenizer::partition(const std::string& text, bool parse_special) const {
    std::vector<Fragment> frags, next;
    if (!text.empty()) frags.push_back({-1, 0, text.size()});
    for (int32_t id : special_cache_) {
        if (!parse_special && (attrs_[id] & (kAttrControl | kAttrUnknown))) continue;
        const std::string& special = tokens_[id];
        next.clear();
        for (const Fragment& f : frags) {
            if (f.token >= 0) {
                next.push_back(f);
                continue;
            }
            const size_t end = f.offset + f.length;
            const std::string_view window(text.data(), end);
            size_t pos = f.offset;
            for (size_t hit; (hit = window.find(special, pos)) != std::string_view::npos; pos = hit + special.size()) {
                if (hit > pos) next.push_back({-1, pos, hit - pos});
                next.push_back({id, 0, 0});
            }
            if (pos < end) next.push_back({-1, pos, end - pos});
        }
        frags.swap(next);
    }
    return frags;
}

std::vector<int32_t> Tokenizer::tokenize(const std::string& text, bool add_special, bool parse_special) const {
    std::vector<int32_t> out;
    if (add_special && add_bos_) out.push_back(bos_);
    bool after_special = true;  // SPM: a text fragment at the start or after a special token gets a space
    for (const Fragment& f : partition(text, parse_special)) {
        if (f.token >= 0) {
            out.push_back(f.token);
            after_special = true;
            continue;
        }
        const std::string_view piece(text.data() + f.offset, f.length);
        if (kind_ == Kind::Spm) {
            std::string escaped = (add_space_prefix_ && after_special) ? " " : "";
            escaped.append(piece);
            replace_all(escaped, " ", kSpaceMarker);
            tokenize_spm(escaped, out);
        } else {
            tokenize_bpe(piece, out);
        }
        after_special = false;
    }
    if (add_special && add_eos_) out.push_back(eos_);
    return out;
}

void Tokenizer::MergeTable::reserve(size_t n) {
    int bits = 4;
    while ((size_t(1) << bits) < 2 * n) ++bits;  // load factor <= 1/2
    slots_.assign(size_t(1) << bits, Slot{kEmpty, Merge{0, 0}});
    mask_ = (size_t(1) << bits) - 1;
    shift_ = 64 - bits;
}

size_t Tokenizer::MergeTable::slot_of(uint64_t key) const {
    size_t i = size_t((key * 0x9E3779B97F4A7C15ull) >> shift_);  // Fibonacci hashing: top bits
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    return i;
}

bool Tokenizer::MergeTable::insert(uint32_t left, uint32_t right, Merge m) {
    const uint64_t key = (uint64_t(left) << 32) | right;
    Slot& slot = slots_[slot_of(key)];
    if (slot.key == key) return false;
    slot = Slot{key, m};
    return true;
}

const Tokenizer::Merge* Tokenizer::MergeTable::find(uint32_t left, uint32_t right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = (uint64_t(left) << 32) | right;
    const Slot& slot = slots_[slot_of(key)];
    return slot.key == key ? &slot.merge : nullptr;
}

namespace {

struct BpeSymbol {
    int32_t id;           // symbol id (token id when < n_vocab)
    int32_t prev, next;   // neighbours in the word, -1 at the ends
    uint32_t start, len;  // bytes of the word; len 0 once merged away
};

struct BpePair {
    int32_t rank, left, right, left_id, right_id, result;
    // heaps are max-heaps: "less" = lower priority = higher rank, then further right
    bool operator<(const BpePair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
};

}  // namespace

struct Tokenizer::BpeScratch {
    std::string word;     // current word, re-encoded (invalid input bytes are U+FFFD now)
    std::string encoded;  // its GPT-2 characters, when needed
    std::vector<BpeSymbol> syms;
    std::vector<BpePair> heap;
};

namespace {

// Word -> ids seen earlier in the same call. Long texts repeat words a lot (Zipf), so
// this skips most BPE work there; being per call it needs no locking.
class WordMemo {
  public:
    bool replay(const std::string& word, std::vector<int32_t>& out) const {
        const auto it = index_.find(word);
        if (it == index_.end()) return false;
        const auto first = ids_.begin() + it->second.first;
        out.insert(out.end(), first, first + it->second.second);
        return true;
    }
    void record(const std::string& word, const int32_t* ids, size_t n) {
        index_.emplace(word, std::make_pair(uint32_t(ids_.size()), uint32_t(n)));
        ids_.insert(ids_.end(), ids, ids + n);
    }

  private:
    std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> index_;  // word -> (first, count)
    std::vector<int32_t> ids_;
};

constexpr size_t kMemoMinWords = 256;  // below this a memo costs more than it saves

}  // namespace

// GPT-2 byte-level BPE: pre-tokenize into words, then merge each word's bytes.
void Tokenizer::tokenize_bpe(std::string_view text, std::vector<int32_t>& out) const {
    const std::vector<uint32_t> cpts = unicode::decode_utf8(text);
    std::vector<uint32_t> lengths;
    unicode::pretokenize(pre_, cpts, lengths);
    BpeScratch scratch;
    WordMemo memo;
    const bool use_memo = lengths.size() >= kMemoMinWords;
    size_t pos = 0;
    for (uint32_t len : lengths) {
        scratch.word.clear();
        for (size_t i = pos; i < pos + len; ++i) unicode::append_utf8(scratch.word, cpts[i]);
        pos += len;
        if (use_memo && memo.replay(scratch.word, out)) continue;
        const size_t before = out.size();
        bpe_word(scratch.word, scratch, out);
        if (use_memo) memo.record(scratch.word, out.data() + before, out.size() - before);
    }
}

// Merge the lowest-ranked adjacent pair (leftmost on ties) until none is left, exactly
// llama.cpp's llm_tokenizer_bpe_session, on symbol ids instead of strings.
void Tokenizer::bpe_word(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& out) const {
    if (ignore_merges_) {
        scratch.encoded.clear();
        for (unsigned char b : word) scratch.encoded += byte_chars_[b];
        const int32_t id = lookup(scratch.encoded);
        if (id >= 0) {
            out.push_back(id);
            return;
        }
    }
    std::vector<BpeSymbol>& syms = scratch.syms;
    std::vector<BpePair>& heap = scratch.heap;
    syms.resize(word.size());
    for (size_t i = 0; i < word.size(); ++i) {
        syms[i] = {byte_symbol_[uint8_t(word[i])], int32_t(i) - 1, i + 1 < word.size() ? int32_t(i + 1) : -1,
                   uint32_t(i), 1};
    }
    heap.clear();
    auto try_pair = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        if (const Merge* m = merges_.find(uint32_t(syms[left].id), uint32_t(syms[right].id))) {
            heap.push_back({m->rank, left, right, syms[left].id, syms[right].id, m->result});
            std::push_heap(heap.begin(), heap.end());
        }
    };
    for (int32_t i = 1; i < int32_t(syms.size()); ++i) try_pair(i - 1, i);

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const BpePair p = heap.back();
        heap.pop_back();
        BpeSymbol& l = syms[p.left];
        BpeSymbol& r = syms[p.right];
        if (l.len == 0 || r.len == 0 || l.next != p.right || l.id != p.left_id || r.id != p.right_id) continue;  // stale
        l.id = p.result;
        l.len += r.len;
        r.len = 0;
        l.next = r.next;
        if (r.next >= 0) syms[r.next].prev = p.left;
        try_pair(l.prev, p.left);
        try_pair(p.left, l.next);
    }
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
        emit_bpe_symbol(syms[i].id, word.substr(syms[i].start, syms[i].len), out);
    }
}

// A final symbol that is no token: llama.cpp then looks up each single byte of its
// GPT-2 encoded text and keeps those that are tokens (usually none, so it is dropped).
void Tokenizer::emit_bpe_symbol(int32_t sym, std::string_view bytes, std::vector<int32_t>& out) const {
    if (sym < n_vocab()) {
        out.push_back(sym);
        return;
    }
    std::string encoded;
    for (unsigned char b : bytes) encoded += byte_chars_[b];
    for (char c : encoded) {
        const int32_t id = lookup(std::string_view(&c, 1));
        if (id >= 0) out.push_back(id);
    }
}

namespace {

struct SpmSymbol {
    int32_t prev, next;
    uint32_t start, len;  // len 0 once merged away
};

struct SpmPair {
    float score;
    int32_t left, right;
    uint32_t size;
    // max-heap on score; on ties the leftmost pair first
    bool operator<(const SpmPair& o) const { return score < o.score || (score == o.score && left > o.left); }
};

}  // namespace

// SentencePiece BPE: start from UTF-8 characters and merge the adjacent pair whose
// concatenation is the highest-scoring token, as llama.cpp's llm_tokenizer_spm_session.
void Tokenizer::tokenize_spm(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<SpmSymbol> syms;
    for (size_t offs = 0; offs < text.size();) {
        const size_t len = std::min(unicode::utf8_len(text[offs]), text.size() - offs);
        syms.push_back({int32_t(syms.size()) - 1, -1, uint32_t(offs), uint32_t(len)});
        offs += len;
        if (offs < text.size()) syms.back().next = int32_t(syms.size());
    }
    std::priority_queue<SpmPair> queue;
    auto try_pair = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const uint32_t size = syms[left].len + syms[right].len;
        const int32_t id = lookup(text.substr(syms[left].start, size));
        if (id >= 0) queue.push({scores_.empty() ? 0.0f : scores_[id], left, right, size});
    };
    for (int32_t i = 1; i < int32_t(syms.size()); ++i) try_pair(i - 1, i);

    while (!queue.empty()) {
        const SpmPair p = queue.top();
        queue.pop();
        SpmSymbol& l = syms[p.left];
        SpmSymbol& r = syms[p.right];
        if (l.len == 0 || r.len == 0 || l.len + r.len != p.size) continue;  // stale
        l.len += r.len;
        r.len = 0;
        l.next = r.next;
        if (r.next >= 0) syms[r.next].prev = p.left;
        try_pair(l.prev, p.left);
        try_pair(p.left, l.next);
    }
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
        const std::string_view piece = text.substr(syms[i].start, syms[i].len);
        const int32_t id = lookup(piece);
        if (id >= 0) {
            out.push_back(id);
        } else {
            spm_fallback(piece, out);
        }
    }
}

// A character with no token: one byte token each, "<0xXX>" or else the raw byte.
// (llama.cpp throws when neither exists; we fall back to <unk>.)
void Tokenizer::spm_fallback(std::string_view piece, std::vector<int32_t>& out) const {
    static const char* kHex = "0123456789ABCDEF";
    for (unsigned char b : piece) {
        const char name[6] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
        int32_t id = lookup(std::string_view(name, 6));
        if (id < 0) id = lookup(std::string_view(reinterpret_cast<const char*>(&b), 1));
        if (id < 0) id = unk_;
        if (id < 0) throw Error("tokenizer has no byte token for 0x" + hex_byte(b) + " and no unknown token");
        out.push_back(id);
    }
}

// ---------------------------------------------------------------------------------------
// Streaming

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool render_special) : tok_(tok), render_special_(render_special) {}

std::string StreamDecoder::push(int32_t id) {
    std::string piece = tok_.token_to_piece(id, render_special_);
    if (first_) {
        first_ = false;
        strip_space_ = id == tok_.bos();  // detokenize() drops one leading space after BOS
    }
    if (strip_space_ && !piece.empty()) {
        if (piece[0] == ' ') piece.erase(0, 1);
        strip_space_ = false;
    }
    pending_ += piece;
    return take_complete();
}

// Everything but a trailing sequence that may still complete; bytes that can never be
// valid are replaced right away.
std::string StreamDecoder::take_complete() {
    const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
    const size_t n = pending_.size();
    std::string out;
    size_t i = 0;
    while (i < n) {
        uint32_t cpt;
        const int r = unicode::utf8_step(p + i, n - i, &cpt);
        if (r == 0) break;  // incomplete tail: wait for more bytes
        if (r > 0) {
            out.append(pending_, i, size_t(r));
            i += size_t(r);
        } else {
            unicode::append_utf8(out, unicode::kReplacement);
            i += size_t(-r);
        }
    }
    pending_.erase(0, i);
    return out;
}

std::string StreamDecoder::flush() {
    std::string out = unicode::sanitize_utf8(pending_);
    pending_.clear();
    return out;
}

}  // namespace lowbit
