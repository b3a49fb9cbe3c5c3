#include "models/model.h"

#include <set>

namespace lowbit {

namespace {

// Architectures whose graph lowbit implements.  One entry per file under models/.
const std::set<std::string>& supported_architectures() {
    static const std::set<std::string> archs = {"llama"};
    return archs;
}

std::vector<std::string> string_array(const gguf::File& f, const std::string& key) {
    std::vector<std::string> out;
    const gguf::Value* v = f.find(key);
    if (!v) return out;
    if (v->type != gguf::ValueType::ARRAY || v->elem_type != gguf::ValueType::STRING)
        throw FormatError(f.path() + ": metadata '" + key + "' must be an array of strings");
    out.reserve(v->arr.size());
    for (auto& x : v->arr) out.push_back(x.s);
    return out;
}

template <typename T>
std::vector<T> number_array(const gguf::File& f, const std::string& key) {
    std::vector<T> out;
    const gguf::Value* v = f.find(key);
    if (!v) return out;
    if (v->type != gguf::ValueType::ARRAY)
        throw FormatError(f.path() + ": metadata '" + key + "' must be an array");
    out.reserve(v->arr.size());
    try {
        for (auto& x : v->arr) out.push_back(T(x.as_float()));
    } catch (const FormatError& e) {
        throw FormatError(f.path() + ": metadata '" + key + "': " + e.what());
    }
    return out;
}

int32_t token_id(const gguf::File& f, const std::string& key) {
    return int32_t(f.get_int(key, -1));
}

int optional_flag(const gguf::File& f, const std::string& key) {
    const gguf::Value* v = f.find(key);
    if (!v) return -1;
    try {
        return v->as_bool() ? 1 : 0;
    } catch (const FormatError& e) {
        throw FormatError(f.path() + ": metadata '" + key + "': " + e.what());
    }
}

// The first dimension range check every hyperparameter gets: positive and not absurd.
int64_t checked_dim(const gguf::File& f, const std::string& key, int64_t value, int64_t max) {
    if (value <= 0 || value > max)
        throw FormatError(f.path() + ": metadata '" + key + "' = " + std::to_string(value) + " is out of range");
    return value;
}

}  // namespace

VocabData vocab_from_gguf(const gguf::File& f) {
    VocabData v;
    v.model = f.get_string("tokenizer.ggml.model", "");
    if (v.model.empty()) throw FormatError(f.path() + ": the file has no tokenizer (tokenizer.ggml.model missing)");
    v.pre = f.get_string("tokenizer.ggml.pre", "");
    v.tokens = string_array(f, "tokenizer.ggml.tokens");
    v.scores = number_array<float>(f, "tokenizer.ggml.scores");
    v.token_types = number_array<int32_t>(f, "tokenizer.ggml.token_type");
    v.merges = string_array(f, "tokenizer.ggml.merges");
    v.bos_id = token_id(f, "tokenizer.ggml.bos_token_id");
    v.eos_id = token_id(f, "tokenizer.ggml.eos_token_id");
    v.unk_id = token_id(f, "tokenizer.ggml.unknown_token_id");
    v.pad_id = token_id(f, "tokenizer.ggml.padding_token_id");
    v.eot_id = token_id(f, "tokenizer.ggml.eot_token_id");
    v.eom_id = token_id(f, "tokenizer.ggml.eom_token_id");
    v.add_bos = optional_flag(f, "tokenizer.ggml.add_bos_token");
    v.add_eos = optional_flag(f, "tokenizer.ggml.add_eos_token");
    v.add_space_prefix = optional_flag(f, "tokenizer.ggml.add_space_prefix");
    return v;
}

std::unique_ptr<Model> Model::load(const std::string& path, const LoadParams& params) {
    std::unique_ptr<Model> m(new Model());
    m->file_ = gguf::File::open(path);
    m->vocab_only_ = params.vocab_only;
    m->load_hparams();
    m->tokenizer_ = std::make_unique<Tokenizer>(vocab_from_gguf(*m->file_));
    if (m->tokenizer_->n_vocab() != m->hp_.n_vocab && m->hp_.n_vocab != 0 && !params.vocab_only)
        throw FormatError(path + ": vocabulary has " + std::to_string(m->tokenizer_->n_vocab()) +
                          " tokens but the model has " + std::to_string(m->hp_.n_vocab) + " embedding rows");
    m->chat_template_ = m->file_->get_string("tokenizer.chat_template", "");
    if (!params.vocab_only) m->load_weights();
    return m;
}

void Model::load_hparams() {
    const gguf::File& f = *file_;
    hp_.arch = f.get_string("general.architecture", "");
    if (hp_.arch.empty()) throw FormatError(f.path() + ": general.architecture is missing");
    if (!supported_architectures().count(hp_.arch)) {
        if (vocab_only_) return;   // the vocabulary alone does not depend on the graph
        std::string list;
        for (auto& a : supported_architectures()) list += (list.empty() ? "" : ", ") + a;
        throw Error(f.path() + ": unknown model architecture '" + hp_.arch + "' (lowbit supports: " + list + ")");
    }
    const std::string a = hp_.arch + ".";
    const int64_t kMaxDim = int64_t(1) << 20;
    hp_.n_embd = checked_dim(f, a + "embedding_length", f.get_int(a + "embedding_length"), kMaxDim);
    hp_.n_layer = checked_dim(f, a + "block_count", f.get_int(a + "block_count"), 4096);
    hp_.n_head = checked_dim(f, a + "attention.head_count", f.get_int(a + "attention.head_count"), 4096);
    hp_.n_head_kv = checked_dim(f, a + "attention.head_count_kv",
                                f.get_int(a + "attention.head_count_kv", hp_.n_head), hp_.n_head);
    if (hp_.n_head % hp_.n_head_kv != 0)
        throw FormatError(f.path() + ": head_count must be a multiple of head_count_kv");
    hp_.n_ff = checked_dim(f, a + "feed_forward_length", f.get_int(a + "feed_forward_length"), kMaxDim);
    hp_.n_ctx_train = checked_dim(f, a + "context_length", f.get_int(a + "context_length", 2048), int64_t(1) << 24);
    hp_.head_dim = f.get_int(a + "attention.key_length", hp_.n_embd / hp_.n_head);
    checked_dim(f, a + "attention.key_length", hp_.head_dim, 4096);
    if (hp_.head_dim % 2 != 0) throw FormatError(f.path() + ": attention head size must be even");
    hp_.n_rot = f.get_int(a + "rope.dimension_count", hp_.head_dim);
    if (hp_.n_rot <= 0 || hp_.n_rot > hp_.head_dim || hp_.n_rot % 2)
        throw FormatError(f.path() + ": rope.dimension_count " + std::to_string(hp_.n_rot) + " is invalid");
    hp_.rope_base = float(f.get_float(a + "rope.freq_base", 10000.0));
    hp_.rms_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5));
    if (!(hp_.rope_base > 0) || !(hp_.rms_eps >= 0))
        throw FormatError(f.path() + ": rope.freq_base or rms epsilon is invalid");
    const gguf::TensorInfo* emb = f.tensor("token_embd.weight");
    hp_.n_vocab = emb && emb->ne.size() == 2 ? emb->ne[1] : 0;
}

WeightView Model::optional_matrix(const std::string& name, int64_t cols, int64_t rows) const {
    const gguf::TensorInfo* t = file_->tensor(name);
    if (!t) return {};
    if (t->ne.size() != 2 || t->ne[0] != cols || t->ne[1] != rows)
        throw FormatError(file_->path() + ": tensor '" + name + "' has the wrong shape (expected " +
                          std::to_string(cols) + " x " + std::to_string(rows) + ")");
    if (!type_known(uint32_t(t->type)) || !best_vec_dot(t->type))
        throw Error(file_->path() + ": tensor '" + name + "' has type " + gguf::type_name(uint32_t(t->type)) +
                    ", which lowbit cannot compute with yet");
    WeightView w;
    w.type = t->type;
    w.rows = rows;
    w.cols = cols;
    w.data = t->data;
    w.row_bytes = row_bytes(t->type, cols);
    return w;
}

WeightView Model::matrix(const std::string& name, int64_t cols, int64_t rows) const {
    WeightView w = optional_matrix(name, cols, rows);
    if (!w.data) throw FormatError(file_->path() + ": required tensor '" + name + "' is missing");
    return w;
}

const float* Model::vector(const std::string& name, int64_t n) {
    const gguf::TensorInfo* t = file_->tensor(name);
    if (!t) throw FormatError(file_->path() + ": required tensor '" + name + "' is missing");
    if (t->ne.size() != 1 || t->ne[0] != n)
        throw FormatError(file_->path() + ": tensor '" + name + "' must be a vector of " + std::to_string(n));
    if (!type_known(uint32_t(t->type)))
        throw Error(file_->path() + ": tensor '" + name + "' has unsupported type " + gguf::type_name(uint32_t(t->type)));
    owned_floats_.emplace_back(size_t(n));
    type_traits(t->type).to_float(t->data, owned_floats_.back().data(), n);
    return owned_floats_.back().data();
}

void Model::load_weights() {
    const int64_t d = hp_.n_embd;
    if (hp_.n_vocab <= 0) throw FormatError(file_->path() + ": token_embd.weight is missing or not 2-D");
    tok_embd = matrix("token_embd.weight", d, hp_.n_vocab);
    output_norm = vector("output_norm.weight", d);
    output = optional_matrix("output.weight", d, hp_.n_vocab);
    if (!output.data) output = tok_embd;   // tied embeddings
    layers.resize(size_t(hp_.n_layer));
    for (int64_t l = 0; l < hp_.n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LayerWeights& L = layers[size_t(l)];
        L.attn_norm = vector(p + "attn_norm.weight", d);
        L.ffn_norm = vector(p + "ffn_norm.weight", d);
        for (const LayerMatrix& lm : kLayerMatrices)
            L.*lm.field = matrix(p + lm.name + ".weight", width(hp_, lm.cols), width(hp_, lm.rows));
    }
}

int64_t width(const HParams& hp, Width w) {
    switch (w) {
        case Width::Embd: return hp.n_embd;
        case Width::Q: return hp.n_embd_q();
        case Width::KV: return hp.n_embd_kv();
        case Width::FF: return hp.n_ff;
    }
    return 0;
}

int64_t Model::n_params() const {
    int64_t n = 0;
    for (auto& t : file_->tensors()) n += t.n_elements();
    return n;
}

size_t Model::weight_bytes() const {
    size_t n = 0;
    for (auto& t : file_->tensors()) n += t.nbytes;
    return n;
}

}  // namespace lowbit
