// Matrix products of quantized weights with float activations, through the registry.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
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

// Weights repacked for the packed kernels (kernels/avx512/packed.h), made on first use.
// Copies are shared process-wide between the PackedWeights of every context of the same
// model (keyed by the weight's data pointer, type and shape) and freed with the last of
// them.  Safe because a model outlives its contexts: while any context holds an entry, the
// weights it was made from stay mapped at that address.
class PackedWeights {
  public:
    struct Entry {
        std::vector<uint8_t> data;
        size_t row_bytes = 0;
    };
    // The packed copy of w, packing it (on the pool) the first time; null if w's type has
    // no packed layout on the active ISA.
    const Entry* get(const WeightView& w, ThreadPool& pool);
    // The packed copy of w if one exists already (made by this owner or another context
    // of the same model), else null; never packs.
    const Entry* find(const WeightView& w);
    size_t bytes() const;

  private:
    const Entry* adopt(const WeightView& w, std::shared_ptr<Entry> e);

    mutable std::mutex mu_;
    std::unordered_map<const uint8_t*, std::shared_ptr<Entry>> map_;   // this owner's references
};

// Reusable buffers for activations converted to the weight's dot type, and the packed
// weights of the model this scratch serves.
struct MatmulScratch {
    std::vector<uint8_t> act;
    std::vector<std::vector<uint8_t>> bufs;   // matmul_many's activations, one per format
    PackedWeights packed;
};

// One product of a batch that shares its input: y[t * ld_y + r] = dot(row r of *w, x_t).
struct MatmulJob {
    const WeightView* w;
    float* y;
    int64_t ld_y;
};

// y[t * w.rows + r] = dot(row r of w, x[t * w.cols ...]) for t in [0, n_tokens).
// Activations are first converted to the format the weight's dot kernel expects
// (Q8_0 for Q4_0, ...), as llama.cpp does, so results track llama.cpp's closely.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatmulScratch& scratch);

// Called with [r0, r1) once rows r0..r1-1 of every product of a matmul_many are done
// (for all tokens), on whichever thread finished the last of them; the ranges partition
// the rows.  Element-wise work on the outputs (SwiGLU of gate and up) then runs inside
// the same pass over the threads, spread over them, instead of after it on one.
using RowsDone = std::function<void(int64_t r0, int64_t r1)>;

// Several products of the same activations (Q, K and V; gate and up) in one pass over the
// thread pool: the activations are converted once per format and the threads share out
// the rows of all the matrices, so one synchronisation serves them all.  With rows_done
// (every product then has the same number of rows), see RowsDone.
void matmul_many(const MatmulJob* jobs, int count, const float* x, int64_t n_tokens, ThreadPool& pool,
                 MatmulScratch& scratch, const RowsDone* rows_done = nullptr);

}  // namespace lowbit
