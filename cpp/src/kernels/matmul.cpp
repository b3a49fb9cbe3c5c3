#include "kernels/matmul.h"

#include <algorithm>

#include "common.h"

namespace lowbit {

namespace {

// Rows handed to one thread at a time: enough to amortise scheduling, small enough
// to balance two to sixteen threads on the small matrices of a 135M model.
constexpr int64_t kRowGrain = 16;
// Tokens processed against one tile of weight rows, so the tile stays in cache.
constexpr int64_t kTokenTile = 8;
// The tiled (AMX) path pays off once a 16-token tile is mostly full.
constexpr int64_t kGemmMinTokens = 16;
constexpr int64_t kGemmRowGrain = 64;

}  // namespace

void matmul_rows(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x, int64_t n_tokens,
                 float* y, int64_t ld_y, ThreadPool& pool, MatmulScratch& scratch) {
    const TypeTraits& wt = type_traits(w.type);
    const TypeTraits& at = type_traits(wt.vec_dot_type);
    const VecDotFn dot = best_vec_dot(w.type);
    if (!dot) fail(std::string("no dot kernel for weight type ") + wt.name);

    // convert activations once per call
    const size_t act_row = row_bytes(wt.vec_dot_type, w.cols);
    const FromFloatFn convert = at.from_float_act ? at.from_float_act : at.from_float;
    const uint8_t* act;
    if (wt.vec_dot_type == Type::F32) {
        act = reinterpret_cast<const uint8_t*>(x);
    } else {
        scratch.act.resize(act_row * size_t(n_tokens));
        uint8_t* dst = scratch.act.data();
        pool.parallel_for(n_tokens, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) convert(x + t * w.cols, dst + size_t(t) * act_row, w.cols);
        });
        act = dst;
    }

    const int64_t n_rows = row_end - row_begin;
    const GemmFn gemm = n_tokens >= kGemmMinTokens ? best_gemm(w.type) : nullptr;
    if (gemm) {   // tiled kernel: each thread takes whole row chunks against every token
        pool.parallel_for(n_rows, kGemmRowGrain, [&](int64_t r0, int64_t r1) {
            gemm(w.cols, r1 - r0, n_tokens, w.row(row_begin + r0), w.row_bytes, act, act_row, y + r0, ld_y);
        });
        return;
    }
    pool.parallel_for(n_rows, kRowGrain, [&](int64_t r0, int64_t r1) {
        for (int64_t rb = r0; rb < r1; rb += kRowGrain) {
            const int64_t re = std::min(r1, rb + kRowGrain);
            for (int64_t tb = 0; tb < n_tokens; tb += kTokenTile) {
                const int64_t te = std::min(n_tokens, tb + kTokenTile);
                for (int64_t r = rb; r < re; ++r) {
                    const uint8_t* wrow = w.row(row_begin + r);
                    for (int64_t t = tb; t < te; ++t)
                        dot(w.cols, &y[t * ld_y + r], wrow, act + size_t(t) * act_row);
                }
            }
        }
    });
}

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatmulScratch& scratch) {
    matmul_rows(w, 0, w.rows, x, n_tokens, y, w.rows, pool, scratch);
}

}  // namespace lowbit
