// Matrix products of quantized weights with float activations, through the registry.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/registry.h"
#include "threadpool.h"

namespace lowbit {

// A 2-D weight: `rows` rows of `cols` elements in `type`, rows contiguous.
struct WeightView {
    Type type = Type::F32;
    int64_t rows = 0, cols = 0;
    const uint8_t* data = nullptr;
    size_t row_bytes = 0;

    const uint8_t* row(int64_t r) const { return data + size_t(r) * row_bytes; }
};

// Reusable buffers for activations converted to the weight's dot type.
struct MatmulScratch {
    std::vector<uint8_t> act;
};

// y[t * w.rows + r] = dot(row r of w, x[t * w.cols ...]) for t in [0, n_tokens).
// Activations are first converted to the format the weight's dot kernel expects
// (Q8_0 for Q4_0, ...), as llama.cpp does, so results track llama.cpp's closely.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatmulScratch& scratch);

// Same, restricted to rows [row_begin, row_end) of w writing y[t * ld_y + r - row_begin].
void matmul_rows(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x, int64_t n_tokens,
                 float* y, int64_t ld_y, ThreadPool& pool, MatmulScratch& scratch);

}  // namespace lowbit
