// Fused dequantize + matrix-vector kernels (see gemv.h and NOTES.md).
//
// Block formats: one warp per weight row.  The warp streams its row through shared
// memory in chunks (CHUNK blocks, a multiple of 16 bytes; a quarter of that when the
// 32-value formats decode one token: launch_q) with 16-byte cp.async copies,
// lane i copying bytes [16i, 16i+16) of each 512-byte stretch (coalesced), two chunks in
// flight.  Then each lane decodes 32-value units of the chunk (formats.cuh) and dots
// them with int8 activations on __dp4a.  A tile of up to 8 tokens shares each decoded
// unit (prefill); decode is the 1-token instance.
//
// F32/F16/BF16: one warp per row, 16-byte loads (U in flight per lane: 2 for decode, 4 for
// token tiles), fp32 activations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend.h"
#include "common.cuh"
#include "formats.cuh"
#include "gemv.h"
#include "q8.cuh"

namespace lowbit::cuda {

namespace {

constexpr int kWarps = 4;   // rows per block of threads

// dot(decoded unit, the 32 int8 activations at xq with their sums *xs)
struct UnitAct {   // the int8 activations of one unit (32) and their sums
    int4 a, b;
    float4 s;
};
__device__ __forceinline__ UnitAct load_act(const int8_t* __restrict__ xq, const Q8Sums* __restrict__ xs) {
    const int4* xp = reinterpret_cast<const int4*>(xq);
    return {__ldg(xp), __ldg(xp + 1), __ldg(reinterpret_cast<const float4*>(xs))};
}
__device__ __forceinline__ float unit_dot(const Unit& un, const UnitAct& x) {
    const int4 a = x.a, b = x.b;
    const float4 s = x.s;
    int lo = __dp4a(un.w[0], a.x, 0);
    lo = __dp4a(un.w[1], a.y, lo);
    lo = __dp4a(un.w[2], a.z, lo);
    lo = __dp4a(un.w[3], a.w, lo);
    int hi = __dp4a(un.w[4], b.x, 0);
    hi = __dp4a(un.w[5], b.y, hi);
    hi = __dp4a(un.w[6], b.z, hi);
    hi = __dp4a(un.w[7], b.w, hi);
    return s.x * (un.sc[0] * float(lo) + un.sc[1] * float(hi)) + un.of[0] * s.z + un.of[1] * s.w;
}
__device__ __forceinline__ float unit_dot(const Unit& un, const int8_t* __restrict__ xq, const Q8Sums* __restrict__ xs) {
    return unit_dot(un, load_act(xq, xs));
}

// 16 bytes of weights that this thread reads once: not kept in L1
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// One token: the value a residual product adds to (lane 0), read right after the wait
// instead of after the product, which saves the kernel's last warps an L2 round trip
// (the planar and float kernels: Q4_0 tg128 +5.6%, Q8_0 +3.5% on the H100; the
// shared-memory kernel measured 1.6% slower with it on Q4_K_M, NOTES.md session 7).
template <int NT>
__device__ __forceinline__ float early_prev(const float* y, int t0, int row, int64_t ldy, int accumulate, int lane) {
    if constexpr (NT == 1) {
        if (accumulate && lane == 0) return y[int64_t(t0) * ldy + row];
    }
    return 0.0f;
}

// The body of gemv_q_kernel for the bx-th group of kWarps rows.
template <class F, int NT, int CDIV>
__device__ __forceinline__ void gemv_q_rows(int bx, const uint8_t* __restrict__ W, size_t pitch, int nblocks, int nrows,
                                            const int8_t* __restrict__ xq, const Q8Sums* __restrict__ xs, int64_t cols,
                                            int ntok, float* __restrict__ y, int64_t ldy, int accumulate) {
    constexpr int UNITS = F::QK / 32;
    constexpr int CB = F::CHUNK / CDIV;
    constexpr int CBYTES = CB * F::BYTES;
    static_assert(CBYTES % 16 == 0, "a chunk must be a whole number of 16-byte copies");
    extern __shared__ __align__(16) uint8_t smem[];

    griddep_launch();   // the next kernel (if launched as a programmatic dependent) may be scheduled
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = bx * kWarps + warp;
    if (row >= nrows) return;   // warp-uniform; the kernel has no block-wide barrier
    uint8_t* const buf0 = smem + warp * 2 * CBYTES;
    uint8_t* const buf1 = buf0 + CBYTES;
    const uint8_t* wrow = W + size_t(row) * pitch;
    const int t0 = blockIdx.y * NT;
    const int nt = min(NT, ntok - t0);
    const int nchunks = (nblocks + CB - 1) / CB;
    const int64_t nb32 = cols / 32;

    auto issue = [&](int c, uint8_t* dst) {
        const int bb = c * CB;
        const int nb = min(CB, nblocks - bb);
        const int n16 = (nb * F::BYTES + 15) >> 4;   // the row's padding covers the last partial copy
        const uint8_t* src = wrow + size_t(bb) * F::BYTES;
        for (int i = lane; i < n16; i += 32) cp_async16(dst + 16 * i, src + 16 * i);
        cp_async_commit();
    };

    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

    issue(0, buf0);
    griddep_wait();   // weights only above this line: the activations may still be in the making
    // One token, a whole chunk: a lane's UPL units are known before the chunk's weights
    // arrive, so the loop over them is unrolled and the first one's activations load before
    // the wait (Q4_K_M tg128 397 -> 405-413 t/s on the H100).  Loading two early takes 80
    // registers instead of 56-64 and measured 383-386 (NOTES.md, session 8).
    constexpr int UPL = CB * UNITS / 32;
    constexpr bool kPrefetch = NT == 1 && CB * UNITS % 32 == 0 && UPL <= 4;
    constexpr int kEarly = 1;
    // the activations of token t0 + t for the unit at column 32 * ug
    auto act = [&](int t, int64_t ug) {
        return load_act(xq + int64_t(t0 + t) * cols + ug * 32, xs + int64_t(t0 + t) * nb32 + ug);
    };
    for (int c = 0; c < nchunks; ++c) {
        const uint8_t* cur = (c & 1) ? buf1 : buf0;
        const int bbase = c * CB;
        const int nu = min(CB, nblocks - bbase) * UNITS;
        if (c + 1 < nchunks) issue(c + 1, (c & 1) ? buf0 : buf1);
        const bool whole = kPrefetch && nu == CB * UNITS;
        UnitAct xa[kPrefetch ? UPL : 1];
        if constexpr (kPrefetch) {
            if (whole) {
#pragma unroll
                for (int i = 0; i < kEarly; ++i) {
                    const int64_t ug = int64_t(bbase) * UNITS + lane + 32 * i;
                    xa[i] = act(0, ug);
                }
            }
        }
        if (c + 1 < nchunks) cp_async_wait<1>();
        else cp_async_wait<0>();
        __syncwarp();
        if constexpr (kPrefetch) {
            if (whole) {
#pragma unroll
                for (int i = 0; i < UPL; ++i) {
                    const int u = lane + 32 * i;
                    if (i >= kEarly) {
                        const int64_t ug = int64_t(bbase) * UNITS + u;
                        xa[i] = act(0, ug);
                    }
                    Unit un;
                    F::unit(cur + (u / UNITS) * F::BYTES, u % UNITS, un);
                    acc[0] += unit_dot(un, xa[i]);
                }
                __syncwarp();
                continue;
            }
        }
        for (int u = lane; u < nu; u += 32) {
            Unit un;
            F::unit(cur + (u / UNITS) * F::BYTES, u % UNITS, un);
            const int64_t ug = int64_t(bbase) * UNITS + u;   // column / 32
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                if (t < nt) acc[t] += unit_dot(un, act(t, ug));
            }
        }
        __syncwarp();   // everyone is done with `cur` before it is refilled
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < nt) {
            float* out = y + int64_t(t0 + t) * ldy + row;
            *out = accumulate ? *out + v : v;
        }
    }
}

template <class F, int NT, int CDIV = 1>
__global__ void __launch_bounds__(kWarps * 32)
gemv_q_kernel(const uint8_t* __restrict__ W, size_t pitch, int nblocks, int nrows, const int8_t* __restrict__ xq,
              const Q8Sums* __restrict__ xs, int64_t cols, int ntok, float* __restrict__ y, int64_t ldy,
              int accumulate) {
    gemv_q_rows<F, NT, CDIV>(blockIdx.x, W, pitch, nblocks, nrows, xq, xs, cols, ntok, y, ldy, accumulate);
}

// Two matrices of different formats over the same activations in one launch (decode): the
// first nb1 groups of rows are matrix 1's.  llama.cpp's k-quant mixes store attn_v in a
// wider type than attn_q and attn_k in some layers; one launch instead of two.
template <class F1, class F2>
__global__ void __launch_bounds__(kWarps * 32)
gemv_q_pair_kernel(const uint8_t* __restrict__ W1, size_t pitch1, int nrows1, float* __restrict__ y1,
                   const uint8_t* __restrict__ W2, size_t pitch2, int nrows2, float* __restrict__ y2,
                   const int8_t* __restrict__ xq, const Q8Sums* __restrict__ xs, int64_t cols) {
    const int nb1 = (nrows1 + kWarps - 1) / kWarps;
    if (int(blockIdx.x) < nb1)
        gemv_q_rows<F1, 1, 1>(blockIdx.x, W1, pitch1, int(cols / F1::QK), nrows1, xq, xs, cols, 1, y1, 0, 0);
    else
        gemv_q_rows<F2, 1, 1>(blockIdx.x - nb1, W2, pitch2, int(cols / F2::QK), nrows2, xq, xs, cols, 1, y2, 0, 0);
}

// Planar rows (formats.cuh): one warp per row, lane l taking blocks l, l + 32, ...; the
// quants load straight into registers (16-byte coalesced, no shared memory).  A step is B
// blocks per lane; S steps are in flight, the first `pre` requested before the activations
// are waited for (under PDL that overlaps the kernel before; more early steps measured
// slower in the decode graph, NOTES.md session 6), and each step is refilled as soon as it
// has been used.
//
// Registers: 64 per thread when the steps hold <= 128 bytes of quants per lane, so that 32
// warps fit an SM (a 4096-row matrix in one wave on 132 SMs).
template <class F, int NT, int B, int S>
__global__ void __launch_bounds__(kWarps * 32, (NT == 1 && S * B * F::PNV <= 8) ? 8 : 4)
gemv_planar_kernel(const uint8_t* __restrict__ W, size_t pitch, int nb, int nrows, const int8_t* __restrict__ xq,
                   const Q8Sums* __restrict__ xs, int64_t cols, int ntok, float* __restrict__ y, int64_t ldy,
                   int accumulate, int pre) {
    constexpr int NV = F::PNV;
    constexpr int STEP = 32 * B;   // blocks of the row per step (all lanes)
    griddep_launch();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * kWarps + warp;
    if (row >= nrows) return;   // warp-uniform
    const uint8_t* wrow = W + size_t(row) * pitch;
    const uint4* planes = reinterpret_cast<const uint4*>(wrow);
    const uint8_t* hdr = wrow + size_t(NV) * nb * 16;
    const int t0 = blockIdx.y * NT;
    const int nt = min(NT, ntok - t0);

    uint4 v[S][B][NV];
    uint32_t h[S][B];
    auto load = [&](int s, int b0) {
#pragma unroll
        for (int k = 0; k < B; ++k) {
            const int b = b0 + 32 * k + lane;
            if (b < nb) {
#pragma unroll
                for (int j = 0; j < NV; ++j) v[s][k][j] = ld_stream(planes + size_t(j) * nb + b);
                h[s][k] = planar_header<F::PH>(hdr + size_t(b) * F::PH);
            }
        }
    };
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
    auto compute = [&](int s, int b0) {
#pragma unroll
        for (int k = 0; k < B; ++k) {
            const int b = b0 + 32 * k + lane;
            if (b < nb) {
                Unit un;
                F::unit_planar(v[s][k], h[s][k], un);
#pragma unroll
                for (int t = 0; t < NT; ++t)
                    if (t < nt)
                        acc[t] += unit_dot(un, xq + int64_t(t0 + t) * cols + int64_t(b) * 32, xs + int64_t(t0 + t) * nb + b);
            }
        }
    };
#pragma unroll
    for (int s = 0; s < S; ++s)
        if (s < pre) load(s, s * STEP);
    griddep_wait();   // weights only above this line
    const float prev = early_prev<NT>(y, t0, row, ldy, accumulate, lane);
#pragma unroll
    for (int s = 0; s < S; ++s)
        if (s >= pre) load(s, s * STEP);
    for (int b0 = 0; b0 < nb; b0 += S * STEP) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
            compute(s, b0 + s * STEP);
            if (b0 + (s + S) * STEP < nb) load(s, b0 + (s + S) * STEP);
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const float r = warp_sum(acc[t]);
        if (lane == 0 && t < nt) {
            float* out = y + int64_t(t0 + t) * ldy + row;
            *out = accumulate ? (NT == 1 ? prev : *out) + r : r;
        }
    }
}

// Stored blocks -> planar rows, one block of threads per row (the row staged in shared memory).
template <class F>
__global__ void planarize_kernel(uint8_t* __restrict__ W, size_t pitch, int nb) {
    extern __shared__ __align__(16) uint8_t srow[];
    uint8_t* row = W + size_t(blockIdx.x) * pitch;
    const int bytes = nb * F::BYTES;
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) srow[i] = row[i];
    __syncthreads();
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) row[i] = srow[planar_source(i, nb, F::PH, F::PNV)];
}

// KIND: 0 F32, 1 F16, 2 BF16
template <int KIND>
struct FloatVec {
    static constexpr int EPV = KIND == 0 ? 4 : 8;   // elements per 16 bytes
    static __device__ __forceinline__ void cvt(const uint4& v, float* f) {
        if constexpr (KIND == 0) {
            f[0] = __uint_as_float(v.x); f[1] = __uint_as_float(v.y);
            f[2] = __uint_as_float(v.z); f[3] = __uint_as_float(v.w);
        } else {
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                if constexpr (KIND == 1) {
                    const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&w[k]));
                    f[2 * k] = p.x; f[2 * k + 1] = p.y;
                } else {
                    f[2 * k] = __uint_as_float(w[k] << 16);
                    f[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
                }
            }
        }
    }
    static __device__ __forceinline__ float elem(const uint8_t* row, int64_t c) {
        if constexpr (KIND == 0) return reinterpret_cast<const float*>(row)[c];
        else if constexpr (KIND == 1) return h2f(reinterpret_cast<const uint16_t*>(row)[c]);
        else return __uint_as_float(uint32_t(reinterpret_cast<const uint16_t*>(row)[c]) << 16);
    }
};

template <int KIND, int NT, int U>
__global__ void __launch_bounds__(kWarps * 32)
gemv_f_kernel(const uint8_t* __restrict__ W, size_t pitch, int cols, int nrows, const float* __restrict__ x,
              int64_t ldx, int vec_ok, int ntok, float* __restrict__ y, int64_t ldy, int accumulate) {
    using V = FloatVec<KIND>;
    constexpr int EPV = V::EPV;
    griddep_launch();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * kWarps + warp;
    if (row >= nrows) return;
    const uint8_t* wrow = W + size_t(row) * pitch;
    const uint4* wv = reinterpret_cast<const uint4*>(wrow);
    const int t0 = blockIdx.y * NT;
    const int nt = min(NT, ntok - t0);
    const int nv = vec_ok ? cols / EPV : 0;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.0f;

    bool waited = false;
    float prev = 0.0f;
    auto wait_for_activations = [&] {
        griddep_wait();
        waited = true;
        prev = early_prev<NT>(y, t0, row, ldy, accumulate, lane);
    };
    for (int base = 0; base < nv; base += 32 * U) {
        uint4 v[U];
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int i = base + 32 * k + lane;
            if (i < nv) v[k] = __ldg(wv + i);
        }
        if (!waited) wait_for_activations();   // the first weights are in flight
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int i = base + 32 * k + lane;
            if (i < nv) {
                float f[EPV];
                V::cvt(v[k], f);
#pragma unroll
                for (int t = 0; t < NT; ++t) {
                    if (t < nt) {
                        const float4* xp = reinterpret_cast<const float4*>(x + int64_t(t0 + t) * ldx + int64_t(i) * EPV);
                        const float4 a = __ldg(xp);
                        float s = f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w;
                        if constexpr (EPV == 8) {
                            const float4 b = __ldg(xp + 1);
                            s += f[4] * b.x + f[5] * b.y + f[6] * b.z + f[7] * b.w;
                        }
                        acc[t] += s;
                    }
                }
            }
        }
    }
    if (!waited) wait_for_activations();
    for (int c = nv * EPV + lane; c < cols; c += 32) {
        const float w = V::elem(wrow, c);
#pragma unroll
        for (int t = 0; t < NT; ++t)
            if (t < nt) acc[t] += w * x[int64_t(t0 + t) * ldx + c];
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const float v = warp_sum(acc[t]);
        if (lane == 0 && t < nt) {
            float* out = y + int64_t(t0 + t) * ldy + row;
            *out = accumulate ? (NT == 1 ? prev : *out) + v : v;
        }
    }
}

// One warp per 32-value block.
__global__ void quantize_q8_kernel(const float* __restrict__ x, int64_t ldx, int64_t ntok, int64_t cols,
                                   int8_t* __restrict__ q, Q8Sums* __restrict__ s) {
    const int64_t nb = cols / 32;
    const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (gw >= ntok * nb) return;   // warp-uniform
    const int64_t t = gw / nb, b = gw % nb;
    warp_quantize_q8(x[t * ldx + b * 32 + lane], q + t * cols + b * 32 + lane, s + t * nb + b);
}

template <class F>
__global__ void dequant_rows_q_kernel(const uint8_t* __restrict__ W, size_t pitch, int nblocks, bool planar,
                                      const int32_t* __restrict__ rows, float* __restrict__ out, int64_t cols) {
    constexpr int UNITS = F::QK / 32;
    const uint8_t* wr = W + size_t(rows[blockIdx.x]) * pitch;
    float* o = out + int64_t(blockIdx.x) * cols;
    for (int u = threadIdx.x; u < nblocks * UNITS; u += blockDim.x) {
        Unit un;
        row_unit<F>(wr, nblocks, u, planar, un);
#pragma unroll
        for (int l = 0; l < 32; ++l) o[u * 32 + l] = unit_value(un, l);
    }
}

template <int KIND>
__global__ void dequant_rows_f_kernel(const uint8_t* __restrict__ W, size_t pitch, const int32_t* __restrict__ rows,
                                      float* __restrict__ out, int64_t cols) {
    const uint8_t* wr = W + size_t(rows[blockIdx.x]) * pitch;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        out[int64_t(blockIdx.x) * cols + c] = FloatVec<KIND>::elem(wr, c);
}

// ---- host side ------------------------------------------------------------------------

template <class F>
void launch_planar(const DevMatrix& w, const DevAct& a, int64_t ntok, float* y, int64_t ldy, int acc, cudaStream_t st,
                   bool pdl) {
    const int nb = int(w.cols / F::QK);
    const dim3 block(kWarps * 32);
    const dim3 grid(unsigned(ceil_div(w.rows, kWarps)), unsigned(ntok == 1 ? 1 : ceil_div(ntok, 8)));
    // Two 16-byte quant loads per lane and step (B = 2 / PNV blocks), two steps.  Measured on
    // the H100 (NOTES.md, session 6): 1, 2 or 4 loads, 2-4 steps, 0-2 of them early; this one
    // was best in the decode graph.
    // `pre`, the steps requested before the wait, is 1; passed at run time because the
    // kernel compiled with it fixed measured 1.2% slower on Q4_0 tg128 (H100, session 7).
    using K = void (*)(const uint8_t*, size_t, int, int, const int8_t*, const Q8Sums*, int64_t, int, float*, int64_t,
                       int, int);
    const int pre = 1;
    const K k = ntok == 1 ? K(gemv_planar_kernel<F, 1, std::max(1, 2 / F::PNV), 2>) : K(gemv_planar_kernel<F, 8, 2, 2>);
    launch(k, grid, block, 0, st, pdl, w.data, w.pitch, nb, int(w.rows), a.q, a.s, w.cols, int(ntok), y, ldy, acc, pre);
}

// shared memory of gemv_q_kernel<F> with whole chunks (two buffers per warp)
template <class F>
constexpr size_t q_smem() {
    return size_t(kWarps) * 2 * F::CHUNK * F::BYTES;
}

template <class F>
void launch_q(const DevMatrix& w, const DevAct& a, int64_t ntok, float* y, int64_t ldy, bool accumulate,
              cudaStream_t st, bool pdl) {
    if (!a.q || !a.s) fail("gemv: " + std::string(type_name(w.type)) + " weights need int8 activations");
    const int nblocks = int(w.cols / F::QK);
    const size_t smem = q_smem<F>();
    const dim3 block(kWarps * 32);
    const int acc = accumulate ? 1 : 0;
    if constexpr (F::PNV > 0) {
        if (w.planar) {
            launch_planar<F>(w, a, ntok, y, ldy, acc, st, pdl);
            return;
        }
    }
    if (ntok == 1) {
        // Decode streams each row in chunks of F::CHUNK / cdiv blocks, two in flight per warp.
        // Measured on the H100 (NOTES.md, session 4): for the 32-value formats, smaller
        // chunks pipeline a row better: 4096 x 14336 at 60 / 68 / 72% of copy bandwidth
        // with cdiv 1 / 2 / 4 (Q4_0), 59 / 77 / 86% (Q8_0); the k-quants gain nothing from
        // halving theirs.  LOWBIT_CUDA_Q_CHUNKDIV (1, 2, 4, 8; 32-value formats) overrides.
        static const int cdiv_env = [] {
            const char* v = std::getenv("LOWBIT_CUDA_Q_CHUNKDIV");
            return v ? std::atoi(v) : 0;
        }();
        using K = void (*)(const uint8_t*, size_t, int, int, const int8_t*, const Q8Sums*, int64_t, int, float*,
                           int64_t, int);
        K k = gemv_q_kernel<F, 1, 1>;
        int cdiv = 1;
        if constexpr (F::QK == 32) {
            cdiv = cdiv_env == 1 || cdiv_env == 2 || cdiv_env == 8 ? cdiv_env : 4;
            k = cdiv == 8   ? K(gemv_q_kernel<F, 1, 8>)
                : cdiv == 4 ? K(gemv_q_kernel<F, 1, 4>)
                : cdiv == 2 ? K(gemv_q_kernel<F, 1, 2>)
                            : k;
        }
        const dim3 grid(unsigned(ceil_div(w.rows, kWarps)), 1);
        launch(k, grid, block, smem / cdiv, st, pdl, w.data, w.pitch, nblocks, int(w.rows), a.q, a.s, w.cols, 1, y,
               ldy, acc);
    } else {
        const dim3 grid(unsigned(ceil_div(w.rows, kWarps)), unsigned(ceil_div(ntok, 8)));
        launch(gemv_q_kernel<F, 8>, grid, block, smem, st, pdl, w.data, w.pitch, nblocks, int(w.rows), a.q, a.s,
               w.cols, int(ntok), y, ldy, acc);
    }
}

template <int KIND>
void launch_f(const DevMatrix& w, const DevAct& a, int64_t ntok, float* y, int64_t ldy, bool accumulate,
              cudaStream_t st, bool pdl) {
    if (!a.f32) fail("gemv: float weights need fp32 activations");
    const int vec_ok = (a.ld_f32 % 4 == 0) && (reinterpret_cast<uintptr_t>(a.f32) % 16 == 0);
    const dim3 block(kWarps * 32);
    const int acc = accumulate ? 1 : 0;
    if (ntok == 1) {
        const dim3 grid(unsigned(ceil_div(w.rows, kWarps)), 1);
        // two 16-byte loads in flight per lane and step: the H100 measured F16 4096 x 14336
        // at 81% of copy with two, 74-75% with four (NOTES.md, session 4), tg128 +2.8%
        launch(gemv_f_kernel<KIND, 1, 2>, grid, block, 0, st, pdl, w.data, w.pitch, int(w.cols), int(w.rows), a.f32,
               a.ld_f32, vec_ok, 1, y, ldy, acc);
    } else {
        const dim3 grid(unsigned(ceil_div(w.rows, kWarps)), unsigned(ceil_div(ntok, 8)));
        launch(gemv_f_kernel<KIND, 8, 4>, grid, block, 0, st, pdl, w.data, w.pitch, int(w.cols), int(w.rows), a.f32,
               a.ld_f32, vec_ok, int(ntok), y, ldy, acc);
    }
}

template <class F>
void launch_dq(const DevMatrix& w, const int32_t* rows, int64_t n, float* out, cudaStream_t st) {
    dequant_rows_q_kernel<F><<<unsigned(n), 128, 0, st>>>(w.data, w.pitch, int(w.cols / F::QK), w.planar, rows, out,
                                                         w.cols);
    LB_CUDA_LAUNCHED();
}

struct TypeRow {
    Type type;
    const char* name;
    int qk, bytes;
};
constexpr TypeRow kTypes[] = {
    {Type::F32, "F32", 1, 4},         {Type::F16, "F16", 1, 2},         {Type::BF16, "BF16", 1, 2},
    {Type::Q4_0, "Q4_0", 32, 18},     {Type::Q4_1, "Q4_1", 32, 20},     {Type::Q5_0, "Q5_0", 32, 22},
    {Type::Q5_1, "Q5_1", 32, 24},     {Type::Q8_0, "Q8_0", 32, 34},     {Type::IQ4_NL, "IQ4_NL", 32, 18},
    {Type::Q2_K, "Q2_K", 256, 84},    {Type::Q3_K, "Q3_K", 256, 110},   {Type::Q4_K, "Q4_K", 256, 144},
    {Type::Q5_K, "Q5_K", 256, 176},   {Type::Q6_K, "Q6_K", 256, 210},
};

const TypeRow* find_row(Type t) {
    for (const auto& r : kTypes)
        if (r.type == t) return &r;
    return nullptr;
}

// Dispatch on the type: f(FormatStruct{}) for block formats, g(std::integral_constant<int, KIND>) for floats.
template <class FQ, class FF>
void dispatch(Type t, FQ&& fq, FF&& ff) {
    switch (t) {
        case Type::Q4_0: fq(FQ4_0{}); break;
        case Type::Q4_1: fq(FQ4_1{}); break;
        case Type::Q5_0: fq(FQ5_0{}); break;
        case Type::Q5_1: fq(FQ5_1{}); break;
        case Type::Q8_0: fq(FQ8_0{}); break;
        case Type::IQ4_NL: fq(FIQ4_NL{}); break;
        case Type::Q2_K: fq(FQ2_K{}); break;
        case Type::Q3_K: fq(FQ3_K{}); break;
        case Type::Q4_K: fq(FQ4_K{}); break;
        case Type::Q5_K: fq(FQ5_K{}); break;
        case Type::Q6_K: fq(FQ6_K{}); break;
        case Type::F32: ff(std::integral_constant<int, 0>{}); break;
        case Type::F16: ff(std::integral_constant<int, 1>{}); break;
        case Type::BF16: ff(std::integral_constant<int, 2>{}); break;
        default: fail("the CUDA backend has no kernel for weights of type " + std::to_string(uint32_t(t)));
    }
}

}  // namespace

bool gemv_supported(Type t) { return find_row(t) != nullptr; }
bool gemv_wants_q8(Type t) {
    const TypeRow* r = find_row(t);
    return r && r->qk > 1;
}
const char* type_name(Type t) {
    const TypeRow* r = find_row(t);
    return r ? r->name : "?";
}
bool type_by_name(const char* name, Type* out) {
    for (const auto& r : kTypes)
        if (std::strcmp(r.name, name) == 0) {
            *out = r.type;
            return true;
        }
    return false;
}
size_t type_row_bytes(Type t, int64_t cols) {
    const TypeRow* r = find_row(t);
    if (!r) fail("the CUDA backend has no kernel for weights of type " + std::to_string(uint32_t(t)));
    if (cols % r->qk != 0)
        fail(std::string(r->name) + " rows must hold a multiple of " + std::to_string(r->qk) + " values");
    return size_t(cols / r->qk) * size_t(r->bytes);
}
int gemv_threads_per_block() { return kWarps * 32; }

// Planar rows for the formats that have the layout (LOWBIT_CUDA_PLANAR=0: stored blocks).
// Rows are permuted in shared memory, so rows above 48 KB stay as stored.
static void planarize(DevMatrix& m, bool has_data) {
    static const bool wanted = [] {
        const char* v = std::getenv("LOWBIT_CUDA_PLANAR");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    if (!wanted || m.rows == 0 || m.row_bytes > 48 * 1024) return;
    dispatch(
        m.type,
        [&](auto f) {
            using F = decltype(f);
            if constexpr (F::PNV > 0) {
                if (has_data) {
                    planarize_kernel<F><<<unsigned(m.rows), 256, m.row_bytes>>>(m.data, m.pitch, int(m.cols / F::QK));
                    LB_CUDA_LAUNCHED();
                    LB_CUDA_CHECK(cudaDeviceSynchronize());
                }
                m.planar = true;
            }
        },
        [](auto) {});
}

DevMatrix upload_matrix(Type t, int64_t rows, int64_t cols, const void* host, size_t host_row_bytes) {
    DevMatrix m;
    m.type = t;
    m.rows = rows;
    m.cols = cols;
    m.row_bytes = type_row_bytes(t, cols);
    if (gemv_wants_q8(t) && cols % 32 != 0) fail("quantized rows must hold a multiple of 32 values");
    if (host_row_bytes < m.row_bytes) fail("upload_matrix: host rows are shorter than the type says");
    m.pitch = (m.row_bytes + 15) / 16 * 16;
    LB_CUDA_CHECK(cudaMalloc(&m.data, m.pitch * size_t(rows)));
    LB_CUDA_CHECK(cudaMemset(m.data, 0, m.pitch * size_t(rows)));
    if (host)
        LB_CUDA_CHECK(cudaMemcpy2D(m.data, m.pitch, host, host_row_bytes, m.row_bytes, size_t(rows),
                                   cudaMemcpyHostToDevice));
    planarize(m, host != nullptr);
    return m;
}

void free_matrix(DevMatrix& m) {
    if (m.data) cudaFree(m.data);
    m.data = nullptr;
}

void quantize_q8(const float* x, int64_t ldx, int64_t ntok, int64_t cols, int8_t* q, Q8Sums* s, cudaStream_t st) {
    if (cols % 32 != 0) fail("quantize_q8: cols must be a multiple of 32");
    const int64_t warps = ntok * (cols / 32);
    if (warps == 0) return;
    quantize_q8_kernel<<<unsigned(ceil_div(warps, 8)), 256, 0, st>>>(x, ldx, ntok, cols, q, s);
    LB_CUDA_LAUNCHED();
}

bool pdl_supported() {
    static const bool ok = [] {
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess) return false;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
        return major >= 9;
    }();
    return ok;
}

void gemv_prepare(Type t) {
    (void)t;
    (void)pdl_supported();
}

void gemv(const DevMatrix& w, const DevAct& a, int64_t ntok, float* y, int64_t ldy, bool accumulate,
          cudaStream_t st, bool pdl) {
    if (ntok <= 0 || w.rows == 0) return;
    pdl = pdl && pdl_supported();
    dispatch(
        w.type, [&](auto f) { launch_q<decltype(f)>(w, a, ntok, y, ldy, accumulate, st, pdl); },
        [&](auto k) { launch_f<decltype(k)::value>(w, a, ntok, y, ldy, accumulate, st, pdl); });
}

bool gemv_pair(const DevMatrix& a, float* ya, const DevMatrix& b, float* yb, const DevAct& x, cudaStream_t st,
               bool pdl) {
    if (a.cols != b.cols || a.planar || b.planar || !x.q || !x.s || a.rows == 0 || b.rows == 0) return false;
    pdl = pdl && pdl_supported();
    auto go = [&](auto k, size_t smem) {
        const dim3 grid(unsigned(ceil_div(a.rows, kWarps) + ceil_div(b.rows, kWarps)));
        launch(k, grid, dim3(kWarps * 32), smem, st, pdl, a.data, a.pitch, int(a.rows), ya, b.data, b.pitch,
               int(b.rows), yb, x.q, x.s, a.cols);
        return true;
    };
    if (a.type == Type::Q4_K && b.type == Type::Q6_K)
        return go(gemv_q_pair_kernel<FQ4_K, FQ6_K>, std::max(q_smem<FQ4_K>(), q_smem<FQ6_K>()));
    if (a.type == Type::Q5_K && b.type == Type::Q6_K)
        return go(gemv_q_pair_kernel<FQ5_K, FQ6_K>, std::max(q_smem<FQ5_K>(), q_smem<FQ6_K>()));
    return false;
}

void dequant_rows(const DevMatrix& w, const int32_t* rows, int64_t n, float* out, cudaStream_t st) {
    if (n <= 0) return;
    dispatch(
        w.type, [&](auto f) { launch_dq<decltype(f)>(w, rows, n, out, st); },
        [&](auto k) {
            dequant_rows_f_kernel<decltype(k)::value><<<unsigned(n), 256, 0, st>>>(w.data, w.pitch, rows, out, w.cols);
            LB_CUDA_LAUNCHED();
        });
}

// ---- the test/bench entry point of backend.h ----------------------------------------------

void gemv_host(Type type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t ntok, float* y,
               float* x_used) {
    matmul_host(type, w, rows, cols, x, ntok, y, x_used, 0);
}

int matmul_host(Type type, const void* w, int64_t rows, int64_t cols, const float* x, int64_t ntok, float* y,
                float* x_used, int path, const float* y0) {
    if (rows <= 0 || cols <= 0 || ntok <= 0) fail("gemv_host: empty problem");
    const size_t rb = type_row_bytes(type, cols);
    if (path < 0) path = (mma_supported(type, cols) && ntok >= mma_min_tokens(type)) ? 1 : 0;
    if (path == 1 && !mma_supported(type, cols))
        fail(std::string("no tensor-core path for ") + type_name(type) + " rows of " + std::to_string(cols));
    // x on the device, and y: y0 when accumulating, else NaN (an unwritten output shows)
    auto stage = [&](float*& dx, float*& dy) {
        LB_CUDA_CHECK(cudaMalloc(&dx, size_t(ntok * cols) * sizeof(float)));
        LB_CUDA_CHECK(cudaMalloc(&dy, size_t(ntok * rows) * sizeof(float)));
        LB_CUDA_CHECK(cudaMemcpy(dx, x, size_t(ntok * cols) * sizeof(float), cudaMemcpyHostToDevice));
        if (y0)
            LB_CUDA_CHECK(cudaMemcpy(dy, y0, size_t(ntok * rows) * sizeof(float), cudaMemcpyHostToDevice));
        else
            LB_CUDA_CHECK(cudaMemset(dy, 0xFF, size_t(ntok * rows) * sizeof(float)));
    };
    if (path == 1) {
        DevMatrix m = upload_matrix(type, rows, cols, w, rb);
        float *dx = nullptr, *dy = nullptr;
        try {
            MmaScratch ws;
            stage(dx, dy);
            mma(m, dx, cols, ntok, dy, rows, y0 != nullptr, ws, nullptr);
            LB_CUDA_CHECK(cudaDeviceSynchronize());
            LB_CUDA_CHECK(cudaMemcpy(y, dy, size_t(ntok * rows) * sizeof(float), cudaMemcpyDeviceToHost));
            if (x_used) {   // what the tensor cores saw: x rounded to F16 (saturated)
                std::vector<__half> hx(size_t(ntok * cols));
                LB_CUDA_CHECK(cudaMemcpy(hx.data(), ws.xh, hx.size() * sizeof(__half), cudaMemcpyDeviceToHost));
                for (size_t i = 0; i < hx.size(); ++i) x_used[i] = __half2float(hx[i]);
            }
        } catch (...) {
            cudaFree(dx); cudaFree(dy);
            free_matrix(m);
            throw;
        }
        cudaFree(dx); cudaFree(dy);
        free_matrix(m);
        return 1;
    }
    DevMatrix m = upload_matrix(type, rows, cols, w, rb);
    float *dx = nullptr, *dy = nullptr;
    int8_t* dq = nullptr;
    Q8Sums* ds = nullptr;
    const bool q8 = gemv_wants_q8(type);
    try {
        stage(dx, dy);
        DevAct a;
        a.f32 = dx;
        a.ld_f32 = cols;
        if (q8) {
            LB_CUDA_CHECK(cudaMalloc(&dq, size_t(ntok * cols)));
            LB_CUDA_CHECK(cudaMalloc(&ds, size_t(ntok * cols / 32) * sizeof(Q8Sums)));
            quantize_q8(dx, cols, ntok, cols, dq, ds, nullptr);
            a.q = dq;
            a.s = ds;
        }
        gemv(m, a, ntok, dy, rows, y0 != nullptr, nullptr);
        LB_CUDA_CHECK(cudaDeviceSynchronize());
        LB_CUDA_CHECK(cudaMemcpy(y, dy, size_t(ntok * rows) * sizeof(float), cudaMemcpyDeviceToHost));
        if (x_used) {
            if (q8) {
                std::vector<int8_t> hq(size_t(ntok * cols));
                std::vector<Q8Sums> hs(size_t(ntok * cols / 32));
                LB_CUDA_CHECK(cudaMemcpy(hq.data(), dq, hq.size(), cudaMemcpyDeviceToHost));
                LB_CUDA_CHECK(cudaMemcpy(hs.data(), ds, hs.size() * sizeof(Q8Sums), cudaMemcpyDeviceToHost));
                for (size_t i = 0; i < hq.size(); ++i) x_used[i] = float(hq[i]) * hs[i / 32].d;
            } else {
                std::memcpy(x_used, x, size_t(ntok * cols) * sizeof(float));
            }
        }
    } catch (...) {
        cudaFree(dx); cudaFree(dy); cudaFree(dq); cudaFree(ds);
        free_matrix(m);
        throw;
    }
    cudaFree(dx); cudaFree(dy); cudaFree(dq); cudaFree(ds);
    free_matrix(m);
    return 0;
}

}  // namespace lowbit::cuda
