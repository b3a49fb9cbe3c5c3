// The CUDA backend's public face: what Context (and the Python module) call.
// Built only with -DLOWBIT_CUDA=ON; everything CUDA-specific stays behind this header,
// which plain C++ translation units can include.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/registry.h"
#include "models/model.h"

namespace lowbit::cuda {

bool available();              // a usable CUDA device is present
std::string device_name();     // of device 0; "" when none
// The first weight of m whose type has no GPU kernel ("" when the GPU runs them all), so
// that callers can choose the CPU before LlamaGpu's constructor would refuse the model.
std::string unsupported_weight(const Model& m);

// The whole llama forward pass on the GPU.  Not thread-safe (one per Context).
class LlamaGpu {
  public:
    // Uploads the weights once, as stored (quantized blocks; rows padded to 16 bytes),
    // and allocates the F16 KV cache for n_ctx positions on the GPU.  f32_weights (a
    // check, not a mode to run in): dequantize every matrix to F32 on the device, so that
    // all products run in fp32 and only the F16 KV cache rounds; the logits then track a
    // float64 forward pass closely, which tests the graph apart from 8-bit arithmetic.
    LlamaGpu(const Model& m, int64_t n_ctx, bool f32_weights = false);
    ~LlamaGpu();
    LlamaGpu(const LlamaGpu&) = delete;
    LlamaGpu& operator=(const LlamaGpu&) = delete;

    // Same contract as lowbit::llama_forward: runs tokens[0..n) at positions pos0..,
    // appending their keys/values to the cache, and writes the logits of the last n_out
    // tokens to host memory logits[n_out][n_vocab] (logits may be null when n_out == 0).
    void forward(const int32_t* tokens, int64_t n, int64_t pos0, int64_t n_out, float* logits);

    // Pinned host memory for one row of logits (n_vocab floats), owned by this object: as
    // forward's `logits` for n_out == 1, the copy back needs no staging through pageable
    // memory (llama.cpp also keeps its outputs in pinned memory).
    float* pinned_logits_row();

    // Switches (for tests and benchmarks; defaults from the environment: LOWBIT_CUDA_GRAPH,
    // LOWBIT_CUDA_MMA, LOWBIT_CUDA_PDL, each on unless set to 0).  graphs: replay the
    // one-token decode step as a CUDA graph.  mma: tensor-core products for batches of
    // mma_min_tokens or more.  pdl: matrix kernels start streaming weights while the
    // kernel before them finishes (sm_90).
    void set_options(bool graphs, bool mma, bool pdl);
    bool graphs() const;
    bool mma() const;
    bool pdl() const;

    int64_t n_ctx() const;
    int64_t n_vocab() const;
    size_t device_bytes() const;   // weights + cache + buffers

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Kernel-level entry point for tests and benchmarks: y[t][r] = dot(row r of W, x[t]) on
// the GPU, t < ntok, r < rows.  W: `rows` host rows of raw blocks of `type` (row_bytes
// each, no padding).  x_used (optional, [ntok][cols]): the activations the kernel saw,
// i.e. the int8-quantized x times its block scale for block formats, x itself otherwise.
void gemv_host(Type type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t ntok, float* y,
               float* x_used);
// The same through a chosen path: 0 the GEMV kernels, 1 the tensor-core path (F16
// operands; x_used is then x rounded to F16), -1 the one the model would take for ntok
// tokens.  y0 (optional, [ntok][rows]): accumulate, y = y0 + W x (the residual products'
// mode).  Returns the path taken.
int matmul_host(Type type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t ntok, float* y,
                float* x_used, int path, const float* y0 = nullptr);

}  // namespace lowbit::cuda
