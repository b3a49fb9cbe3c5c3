// A context: one conversation's state over a model (KV cache, buffers, threads).
// Not thread-safe: use one context per thread; many contexts may share a Model.
#pragma once

#include <memory>
#include <vector>

#include "kv_cache.h"
#include "models/llama.h"
#include "models/model.h"
#include "threadpool.h"

namespace lowbit {

namespace cuda {
class LlamaGpu;
}

struct ContextParams {
    int64_t n_ctx = 2048;     // 0: the model's training context
    int n_threads = 0;        // 0: all cores
    int64_t n_batch = 512;    // tokens per forward pass when evaluating a long prompt
    int n_gpu_layers = 0;     // 0: CPU only; any other value: every layer on the GPU
                              // (CUDA builds; partial offload is not implemented yet)
};

class Context {
  public:
    Context(const Model& model, const ContextParams& params);
    ~Context();

    // Appends tokens at position n_past().  Keeps the logits of the last token, or of
    // every token when all_logits is true (perplexity, scoring).
    void eval(const int32_t* tokens, int64_t n, bool all_logits);
    const float* logits() const { return logits_ptr_; }   // valid until the next eval
    int64_t n_logit_rows() const { return n_logit_rows_; }

    int64_t n_past() const { return n_past_; }
    void rewind(int64_t n_past);          // forget everything after n_past tokens
    int64_t n_ctx() const { return n_ctx_; }
    int n_threads() const { return pool_.size(); }
    const Model& model() const { return model_; }
    bool on_gpu() const { return gpu_ != nullptr; }

  private:
    const Model& model_;
    ContextParams params_;
    int64_t n_ctx_;
    KvCache cache_;
    ThreadPool pool_;
    Workspace ws_;
    std::vector<float> logits_;
    float* logits_ptr_ = nullptr;   // logits_, or the GPU backend's pinned row
    int64_t n_logit_rows_ = 0;
    int64_t n_past_ = 0;
    std::unique_ptr<cuda::LlamaGpu> gpu_;   // set when the forward pass runs on the GPU
};

}  // namespace lowbit
