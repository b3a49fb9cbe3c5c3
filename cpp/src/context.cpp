#include "context.h"

#include <algorithm>
#include <thread>

#ifdef LOWBIT_CUDA
#include "cuda/backend.h"
#else
namespace lowbit::cuda {
class LlamaGpu {};   // never constructed without the CUDA backend
}  // namespace lowbit::cuda
#endif

namespace lowbit {

namespace {

int64_t resolve_n_ctx(const Model& m, int64_t n_ctx) {
    if (m.vocab_only()) fail("this model was loaded with vocab_only and cannot be evaluated");
    if (n_ctx < 0 || n_ctx > (int64_t(1) << 24)) fail("n_ctx " + std::to_string(n_ctx) + " is out of range");
    return n_ctx == 0 ? m.hparams().n_ctx_train : n_ctx;
}

int resolve_threads(int n) {
    if (n < 0 || n > 1024) fail("n_threads " + std::to_string(n) + " is out of range");
    return n == 0 ? int(std::max(1u, std::thread::hardware_concurrency())) : n;
}

}  // namespace

Context::Context(const Model& model, const ContextParams& params)
    : model_(model),
      params_(params),
      n_ctx_(resolve_n_ctx(model, params.n_ctx)),
      // the CPU cache is not needed when the GPU backend keeps its own
      cache_(model.hparams().n_layer, params.n_gpu_layers ? 0 : n_ctx_, model.hparams().n_embd_kv()),
      pool_(resolve_threads(params.n_threads)) {
    if (params_.n_batch <= 0) fail("n_batch must be positive");
    if (params_.n_gpu_layers != 0) {
#ifdef LOWBIT_CUDA
        if (!cuda::available()) fail("n_gpu_layers was given but no CUDA device is available");
        gpu_ = std::make_unique<cuda::LlamaGpu>(model_, n_ctx_);
#else
        fail("n_gpu_layers was given but this build of lowbit has no GPU backend (build with -DLOWBIT_CUDA=ON)");
#endif
    }
}

Context::~Context() = default;

void Context::eval(const int32_t* tokens, int64_t n, bool all_logits) {
    if (n <= 0) fail("eval needs at least one token");
    if (n_past_ + n > n_ctx())
        fail("prompt of " + std::to_string(n_past_ + n) + " tokens does not fit in the context of " +
             std::to_string(n_ctx()) + " tokens");
    const int64_t n_vocab = model_.hparams().n_vocab;
    n_logit_rows_ = all_logits ? n : 1;
    logits_ptr_ = nullptr;
#ifdef LOWBIT_CUDA
    // one row from the GPU (generation): straight into the backend's pinned buffer
    if (gpu_ && n_logit_rows_ == 1) logits_ptr_ = gpu_->pinned_logits_row();
#endif
    if (!logits_ptr_) {
        logits_.resize(size_t(n_logit_rows_ * n_vocab));
        logits_ptr_ = logits_.data();
    }
    for (int64_t done = 0; done < n; done += params_.n_batch) {
        const int64_t k = std::min(params_.n_batch, n - done);
        const bool last = done + k == n;
        const int64_t n_out = all_logits ? k : (last ? 1 : 0);
        float* out = all_logits ? logits_ptr_ + done * n_vocab : logits_ptr_;
        float* dst = n_out ? out : nullptr;   // an inner batch whose logits nobody wants
#ifdef LOWBIT_CUDA
        if (gpu_) {
            gpu_->forward(tokens + done, k, n_past_, n_out, dst);
            n_past_ += k;
            continue;
        }
#endif
        llama_forward(model_, cache_, ws_, pool_, tokens + done, k, n_past_, n_out, dst);
        n_past_ += k;
    }
}

void Context::rewind(int64_t n_past) {
    if (n_past < 0 || n_past > n_past_) fail("cannot rewind to position " + std::to_string(n_past));
    n_past_ = n_past;
}

}  // namespace lowbit
