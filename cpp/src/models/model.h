// A loaded model: the mapped GGUF file, hyperparameters, weight views and vocabulary.
// Weights are views into the mapping (zero-copy); only small 1-D tensors (norms) are
// converted to float at load time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "tokenizer.h"

namespace lowbit {

struct HParams {
    std::string arch;           // general.architecture
    int64_t n_vocab = 0;
    int64_t n_ctx_train = 0;
    int64_t n_embd = 0;
    int64_t n_layer = 0;
    int64_t n_head = 0;
    int64_t n_head_kv = 0;
    int64_t n_ff = 0;
    int64_t head_dim = 0;       // n_embd / n_head unless the file says otherwise
    int64_t n_rot = 0;          // dimensions RoPE rotates
    float rope_base = 10000.0f;
    float rms_eps = 1e-5f;

    int64_t n_embd_kv() const { return n_head_kv * head_dim; }
    int64_t n_embd_q() const { return n_head * head_dim; }
};


struct LayerWeights {
    const float* attn_norm = nullptr;
    WeightView wq, wk, wv, wo;
    const float* ffn_norm = nullptr;
    WeightView w_gate, w_up, w_down;
};

// The seven matrices of a layer: field, GGUF name (after "blk.N.") and shape (values per
// row, rows) as widths of the hyperparameters.  Loading and the checks that name a matrix
// walk this table rather than repeat the list.
enum class Width { Embd, Q, KV, FF };
int64_t width(const HParams& hp, Width w);
struct LayerMatrix {
    WeightView LayerWeights::*field;
    const char* name;
    Width cols, rows;
};
inline constexpr LayerMatrix kLayerMatrices[] = {
    {&LayerWeights::wq, "attn_q", Width::Embd, Width::Q},
    {&LayerWeights::wk, "attn_k", Width::Embd, Width::KV},
    {&LayerWeights::wv, "attn_v", Width::Embd, Width::KV},
    {&LayerWeights::wo, "attn_output", Width::Q, Width::Embd},
    {&LayerWeights::w_gate, "ffn_gate", Width::Embd, Width::FF},
    {&LayerWeights::w_up, "ffn_up", Width::Embd, Width::FF},
    {&LayerWeights::w_down, "ffn_down", Width::FF, Width::Embd},
};

struct LoadParams {
    bool vocab_only = false;
};

class Model {
  public:
    static std::unique_ptr<Model> load(const std::string& path, const LoadParams& params);

    const gguf::File& file() const { return *file_; }
    const HParams& hparams() const { return hp_; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }
    const std::string& chat_template() const { return chat_template_; }
    bool vocab_only() const { return vocab_only_; }

    int64_t n_params() const;
    size_t weight_bytes() const;

    // weights (empty when vocab_only)
    WeightView tok_embd;
    std::vector<LayerWeights> layers;
    const float* output_norm = nullptr;
    WeightView output;          // == tok_embd when embeddings are tied

  private:
    Model() = default;
    void load_hparams();
    void load_weights();
    WeightView matrix(const std::string& name, int64_t cols, int64_t rows) const;
    WeightView optional_matrix(const std::string& name, int64_t cols, int64_t rows) const;
    const float* vector(const std::string& name, int64_t n);

    std::unique_ptr<gguf::File> file_;
    HParams hp_;
    std::unique_ptr<Tokenizer> tokenizer_;
    std::string chat_template_;
    bool vocab_only_ = false;
    std::vector<std::vector<float>> owned_floats_;
};

VocabData vocab_from_gguf(const gguf::File& f);

}  // namespace lowbit
