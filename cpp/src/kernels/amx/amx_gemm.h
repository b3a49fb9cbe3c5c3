// AMX matrix-matrix kernels (prompt processing): a prototype of the `gemm` slot proposed
// for TypeTraits (see the kernels report).  Not registered anywhere yet: the registry has
// no gemm slot, so nothing calls these unless a caller does so explicitly, and only after
// detected_isa() == Isa::Amx (cpu_features.cpp has then obtained the tile permission).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lowbit {

// c[t * ldc + r] = dot(row r of w, activation row t of a) for r < nrows, t < ntok.
// n: row length (multiple of 32); w: nrows rows of Q8_0 (or Q4_1) blocks, w_stride bytes
// apart; a: ntok rows of Q8_0 (Q8_1 for Q4_1) blocks, a_stride bytes apart.  Any nrows
// and ntok; full 16 x 16 tiles run on AMX, the ragged edges through the same code with
// zero-padded tiles.  Per block the integer dot is exact (int32 tile), and the float
// part is acc += float(sumi) * (dw * da) (+ mw * sa) in block order, so results differ
// from the scalar reference only by FMA fusing.
using AmxGemmFn = void (*)(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a,
                           size_t a_stride, float* c, int64_t ldc);
void amx_gemm_q8_0(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a,
                   size_t a_stride, float* c, int64_t ldc);
void amx_gemm_q4_1(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a,
                   size_t a_stride, float* c, int64_t ldc);

}  // namespace lowbit
