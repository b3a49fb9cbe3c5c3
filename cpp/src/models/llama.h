// The llama-family forward pass.
#pragma once

#include <cstdint>
#include <vector>

#include "kv_cache.h"
#include "models/model.h"
#include "threadpool.h"

namespace lowbit {

// Buffers one forward pass reuses; sized for the largest batch seen.
struct Workspace {
    std::vector<float> x, xn, q, k, v, attn, gate, up, hidden, proj;
    std::vector<std::vector<float>> scores;   // attention scratch, one per thread
    std::vector<float> rope_cs;               // RoPE cos/sin per position (filled lazily)
    int64_t rope_filled = 0;                  // positions [0, rope_filled) of rope_cs are valid
    MatmulScratch mm;
};

// Runs tokens[0..n) at positions pos0.. through the model, appending their keys and
// values to the cache.  Writes logits of the last `n_out` tokens (n_out <= n) to
// logits[n_out][n_vocab].
//
// With AVX-512 the element-wise operations and attention run vectorized, bit-identical to
// the scalar reference versions; LOWBIT_REFERENCE_OPS=1 in the environment selects the
// reference versions (for tests).
void llama_forward(const Model& m, KvCache& cache, Workspace& ws, ThreadPool& pool, const int32_t* tokens,
                   int64_t n, int64_t pos0, int64_t n_out, float* logits);

}  // namespace lowbit
