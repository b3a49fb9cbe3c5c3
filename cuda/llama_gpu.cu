// The llama forward pass on the GPU: the same graph as cpp/src/models/llama.cpp
// (RMSNorm -> q/k/v -> RoPE "norm" pairs (2i, 2i+1) -> F16 KV cache -> GQA attention ->
// output projection + residual -> RMSNorm -> SwiGLU FFN + residual; final norm and
// classifier), with the element-wise steps fused into neighbours where cheap:
//   RMSNorm also quantizes its output for the next matrix product,
//   RoPE also writes K and V (F16) into the cache,
//   SwiGLU also quantizes, and both residual adds happen in the matrix kernels' epilogue.
// Attention is split-K ("flash decoding"): each block of threads takes one KV head, up
// to 8 of its query heads and a slice of the positions, and a second kernel merges the
// slices with their running max and sum (and quantizes the result for the output
// projection).
//
// q, k and v come from one matrix product (the three matrices are concatenated on upload
// when they share a type), and so do gate and up.  The position of the first token and
// the token ids live in device memory (d_in), so the one-token decode step does not
// depend on host values: it is captured once per context bucket as a CUDA graph and
// replayed.  Batches of mma_min_tokens or more go to the tensor-core products (mma.cu).
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>

#include "backend.h"
#include "common.cuh"
#include "gemv.h"
#include "q8.cuh"

namespace lowbit::cuda {

namespace {

constexpr int kAttnThreads = 128;
constexpr int kAttnMaxGroup = 8;     // query heads per block of threads
constexpr int kAttnMaxChunk = 256;   // positions per split
constexpr int kAttnOnePass = 256;    // one-token attention without splits up to this many positions
constexpr int kAttnOnePassThreads = 256;

// One block of threads per token: y = x / sqrt(mean(x^2) + eps) * w, also quantized.
__global__ void rmsnorm_q_kernel(const float* __restrict__ x, const float* __restrict__ w, int64_t n, float eps,
                                 float* __restrict__ y, int8_t* __restrict__ q, Q8Sums* __restrict__ s) {
    __shared__ float red[32];
    griddep_launch();   // the matrix kernel after this one may start streaming its weights
    griddep_wait();     // (when launched as a programmatic dependent) x is complete
    const int64_t t = blockIdx.x;
    const float* xr = x + t * n;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float v = lane < nwarps ? red[lane] : 0.0f;
        v = warp_sum(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    const float scale = 1.0f / sqrtf(red[0] / float(n) + eps);
    const int64_t nb = n / 32;
    for (int64_t b = warp; b < nb; b += nwarps) {
        const int64_t i = b * 32 + lane;
        const float v = (xr[i] * scale) * w[i];
        y[t * n + i] = v;
        warp_quantize_q8(v, q + t * n + i, s + t * nb + b);
    }
}

// The same in one pass with every load in flight at once (the loop above waits for one
// load per iteration, which dominates at one token): thread i holds float4s i, i + 256,
// ... (VPT of them) of the row; a block of 32 values is 8 neighbouring lanes, which find
// its max and sums with 3 shuffles.  n % 32 == 0, n <= 1024 * VPT, rows 16-byte aligned.
template <int VPT>
__global__ void __launch_bounds__(256)
rmsnorm_q_vec_kernel(const float* __restrict__ x, const float* __restrict__ w, int n, float eps,
                     float* __restrict__ y, int8_t* __restrict__ q, Q8Sums* __restrict__ s) {
    __shared__ float red[8];
    griddep_launch();
    const int64_t t = blockIdx.x;
    const int n4 = n / 4, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float4* xr = reinterpret_cast<const float4*>(x + t * n);
    const float4* wr = reinterpret_cast<const float4*>(w);
    float4 xv[VPT], wv[VPT];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {   // the norm's weights do not depend on the kernel before
        const int c = threadIdx.x + 256 * k;
        wv[k] = c < n4 ? __ldg(wr + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    griddep_wait();
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
        const int c = threadIdx.x + 256 * k;
        xv[k] = c < n4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int k = 0; k < VPT; ++k) ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
    ss = warp_sum(ss);
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) tot += red[i];
    const float scale = 1.0f / sqrtf(tot / float(n) + eps);
    const int nb = n / 32;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
        const int c = threadIdx.x + 256 * k;   // uniform over each group of 8 lanes (n4 % 8 == 0)
        const float v0 = (xv[k].x * scale) * wv[k].x, v1 = (xv[k].y * scale) * wv[k].y;
        const float v2 = (xv[k].z * scale) * wv[k].z, v3 = (xv[k].w * scale) * wv[k].w;
        float amax = fmaxf(fmaxf(fabsf(v0), fabsf(v1)), fmaxf(fabsf(v2), fabsf(v3)));
#pragma unroll
        for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const int q0 = __float2int_rn(v0 * id), q1 = __float2int_rn(v1 * id);
        const int q2 = __float2int_rn(v2 * id), q3 = __float2int_rn(v3 * id);
        int half = q0 + q1 + q2 + q3;
        half += __shfl_xor_sync(0xffffffffu, half, 1);
        half += __shfl_xor_sync(0xffffffffu, half, 2);   // sum of this lane's 16-value half
        const int all = half + __shfl_xor_sync(0xffffffffu, half, 4);
        if (c < n4) {
            reinterpret_cast<float4*>(y + t * n)[c] = make_float4(v0, v1, v2, v3);
            const uint32_t packed = uint32_t(uint8_t(int8_t(q0))) | (uint32_t(uint8_t(int8_t(q1))) << 8) |
                                    (uint32_t(uint8_t(int8_t(q2))) << 16) | (uint32_t(uint8_t(int8_t(q3))) << 24);
            reinterpret_cast<uint32_t*>(q + t * n)[c] = packed;
            if ((lane & 7) == 0) {
                const float d = amax / 127.0f;
                s[t * nb + c / 8] = Q8Sums{d, d * float(all), d * float(half), d * float(all - half)};
            }
        }
    }
}

// h = silu(gate) * up, also quantized; one warp per 32 values.  gu: [ntok][2n], gate
// then up.
__global__ void swiglu_q_kernel(const float* __restrict__ gu, int64_t ntok, int64_t n, float* __restrict__ h,
                                int8_t* __restrict__ q, Q8Sums* __restrict__ s) {
    griddep_launch();
    griddep_wait();
    const int64_t nb = n / 32;
    const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (gw >= ntok * nb) return;
    const int64_t i = gw * 32 + lane;   // rows are contiguous: token t, block b -> gw = t*nb + b
    const int64_t t = gw / nb, c = (gw % nb) * 32 + lane;
    const float gv = gu[t * 2 * n + c];
    const float v = (gv / (1.0f + expf(-gv))) * gu[t * 2 * n + n + c];
    h[i] = v;
    warp_quantize_q8(v, q + i, s + gw);
}

// RoPE of pair i (elements 2i, 2i + 1) at position pos: the rotation's sine and cosine
// (pairs with 2i >= n_rot are not rotated), then the rotation of one pair.
__device__ __forceinline__ void rope_sincos(int64_t pos, int i, int n_rot, float base, float& sn, float& cs) {
    const float theta = float(pos) * powf(base, -2.0f * float(i) / float(n_rot));
    sincosf(theta, &sn, &cs);
}
__device__ __forceinline__ float2 rope_rotate(float2 p, float sn, float cs) {
    return make_float2(p.x * cs - p.y * sn, p.x * sn + p.y * cs);
}

// The attention kernels' lane layouts.  Scores: LPP = HD/16 lanes per position, lane `sub`
// holding dimensions 4*sub + 4*LPP*i + (0..3), i < 4 (the LPP lanes of a position read one
// contiguous run of the K row per i).  P V: DPL = HD/32 consecutive dimensions per lane.
template <int LPP>
__device__ __forceinline__ void load_k_part(const __half* kr /* row + 4 * sub */, uint2 (&r)[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) r[i] = *reinterpret_cast<const uint2*>(kr + 4 * LPP * i);
}
__device__ __forceinline__ void k_part_floats(const uint2 (&r)[4], float (&kf)[16]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&r[i].x));
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&r[i].y));
        kf[4 * i] = a.x; kf[4 * i + 1] = a.y; kf[4 * i + 2] = b.x; kf[4 * i + 3] = b.y;
    }
}
// q . k over the LPP lanes of a position (every lane of the warp calls; all get the sum)
template <int LPP>
__device__ __forceinline__ float qk_dot(const float* q, int sub, const float (&kf)[16]) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float4 q4 = *reinterpret_cast<const float4*>(&q[4 * sub + 4 * LPP * i]);
        s += q4.x * kf[4 * i] + q4.y * kf[4 * i + 1] + q4.z * kf[4 * i + 2] + q4.w * kf[4 * i + 3];
    }
#pragma unroll
    for (int o = LPP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}
template <int DPL>
__device__ __forceinline__ uint2 load_v_part(const __half* vr /* row + DPL * lane */) {
    if constexpr (DPL == 4) return *reinterpret_cast<const uint2*>(vr);
    else return make_uint2(*reinterpret_cast<const uint32_t*>(vr), 0u);
}
template <int DPL>
__device__ __forceinline__ void v_part_floats(const uint2& r, float (&vv)[DPL]) {
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&r.x));
    vv[0] = a.x; vv[1] = a.y;
    if constexpr (DPL == 4) {
        const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&r.y));
        vv[2] = b.x; vv[3] = b.y;
    }
}

// RoPE (pairs 2i, 2i+1) on q and k; k and v go to the cache as F16.  grid (token, head of
// q then of k), hd/2 threads: one pair each.  qkv: [ntok][ld], q then k then v; *pos0p:
// the first token's position.
__global__ void rope_kv_kernel(float* __restrict__ qkv, int64_t ld, int n_head, int n_head_kv, int hd, int n_rot,
                               float base, const int32_t* __restrict__ pos0p, __half* __restrict__ kc,
                               __half* __restrict__ vc) {
    griddep_launch();
    griddep_wait();
    const int64_t t = blockIdx.x, pos = int64_t(*pos0p) + t;
    const int head = blockIdx.y, i = threadIdx.x;
    const int64_t dq = int64_t(n_head) * hd, dkv = int64_t(n_head_kv) * hd;
    float* const qt = qkv + t * ld;   // this token's q, k, v
    const bool is_k = head >= n_head;
    const int64_t off = is_k ? int64_t(head - n_head) * hd : int64_t(head) * hd;
    float2* const vec = reinterpret_cast<float2*>(qt + (is_k ? dq : 0) + off) + i;
    float2 p = *vec;
    if (2 * i < n_rot) {
        float sn, cs;
        rope_sincos(pos, i, n_rot, base, sn, cs);
        p = rope_rotate(p, sn, cs);
        *vec = p;
    }
    if (is_k) {
        reinterpret_cast<__half2*>(kc + pos * dkv + off)[i] = __floats2half2_rn(p.x, p.y);
        const float2 v = reinterpret_cast<const float2*>(qt + dq + dkv + off)[i];
        reinterpret_cast<__half2*>(vc + pos * dkv + off)[i] = __floats2half2_rn(v.x, v.y);
    }
}

// Split-K attention.  grid: (split, kv head * subgroups, token).  Writes, per (token, head,
// split), the unnormalized output o = sum_j exp(s_j - m) v_j, the max m and the sum l.
//
// Every phase keeps its loads independent so that they are all in flight at once (a decode
// step is a chain of these short kernels; round trips, not bytes, are their cost):
//   scores: LPP = HD/16 lanes per position, 16 dimensions each (4 runs of 4, interleaved so
//           that the LPP lanes of a position read one contiguous run of the K row), the
//           partial dots summed over the LPP lanes with log2(LPP) shuffles;
//   P V:    one position per warp and step, HD/32 dimensions per lane (a coalesced row of V),
//           the warps' partial sums added through shared memory at the end.
template <int HD>
__global__ void __launch_bounds__(kAttnThreads)
attn_split_kernel(const float* __restrict__ q, int64_t ldq, const __half* __restrict__ kc,
                  const __half* __restrict__ vc, int n_head, int n_head_kv, int ngs,
                  const int32_t* __restrict__ pos0p, int t_off, int chunk, int nsplit, float scale,
                  float* __restrict__ o_part, float2* __restrict__ ml_part) {
    griddep_launch();
    griddep_wait();   // also before the early exit below, which writes ml_part
    const int64_t pos0 = int64_t(*pos0p) + t_off;
    constexpr int GM = kAttnMaxGroup, NW = kAttnThreads / 32;
    static_assert(HD == 64 || HD == 128, "head_dim");
    constexpr int LPP = HD / 16, PPW = 32 / LPP;   // scores: lanes per position, positions per warp
    constexpr int DPL = HD / 32;                   // P V: dimensions per lane
    __shared__ __align__(16) float qs[GM][HD];
    __shared__ float sc[GM][kAttnMaxChunk];
    __shared__ __align__(16) float red[NW][GM][HD];

    const int split = blockIdx.x, t = blockIdx.z;
    const int kvh = blockIdx.y / ngs, gs = blockIdx.y % ngs;
    const int G = n_head / n_head_kv;
    const int g0 = gs * GM, ng = min(GM, G - g0);
    const int hbase = kvh * G + g0;
    const int64_t pos = pos0 + t;
    const int64_t p0 = int64_t(split) * chunk, p1 = min(p0 + chunk, pos + 1);
    const int64_t dkv = int64_t(n_head_kv) * HD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    auto part = [&](int g) { return (int64_t(t) * n_head + hbase + g) * nsplit + split; };

    if (p0 >= p1) {   // this split starts past the token's position (causal mask)
        if (threadIdx.x < ng) ml_part[part(threadIdx.x)] = make_float2(-INFINITY, 0.0f);
        return;
    }
    const int len = int(p1 - p0);
    for (int idx = threadIdx.x; idx < ng * HD; idx += kAttnThreads) {
        const int g = idx / HD, d = idx % HD;
        // queries rounded to F16, as llama.cpp's K*Q product (and the CPU path) does
        qs[g][d] = __half2float(__float2half_rn(q[t * ldq + int64_t(hbase + g) * HD + d]));
    }
    __syncthreads();

    // scores
    const int sub = lane % LPP;
    const __half* kbase = kc + p0 * dkv + int64_t(kvh) * HD + 4 * sub;
#pragma unroll 2
    for (int j0 = warp * PPW; j0 < len; j0 += NW * PPW) {
        const int jj = j0 + lane / LPP;
        float kf[16];
        if (jj < len) {
            uint2 r[4];
            load_k_part<LPP>(kbase + int64_t(jj) * dkv, r);
            k_part_floats(r, kf);
        } else {
#pragma unroll
            for (int e = 0; e < 16; ++e) kf[e] = 0.0f;
        }
#pragma unroll
        for (int g = 0; g < GM; ++g) {
            if (g < ng) {
                const float s = qk_dot<LPP>(qs[g], sub, kf);
                if (sub == 0 && jj < len) sc[g][jj] = s * scale;
            }
        }
    }
    __syncthreads();

    // softmax pieces: one warp per head
    for (int g = warp; g < ng; g += NW) {
        float m = -INFINITY;
        for (int jj = lane; jj < len; jj += 32) m = fmaxf(m, sc[g][jj]);
        m = warp_max(m);
        float l = 0.0f;
        for (int jj = lane; jj < len; jj += 32) {
            const float e = expf(sc[g][jj] - m);
            sc[g][jj] = e;
            l += e;
        }
        l = warp_sum(l);
        if (lane == 0) ml_part[part(g)] = make_float2(m, l);
    }
    __syncthreads();

    // o = P V
    float acc[GM][DPL];
#pragma unroll
    for (int g = 0; g < GM; ++g)
#pragma unroll
        for (int e = 0; e < DPL; ++e) acc[g][e] = 0.0f;
    const __half* vbase = vc + p0 * dkv + int64_t(kvh) * HD + DPL * lane;
#pragma unroll 8
    for (int jj = warp; jj < len; jj += NW) {
        float vv[DPL];
        v_part_floats<DPL>(load_v_part<DPL>(vbase + int64_t(jj) * dkv), vv);
#pragma unroll
        for (int g = 0; g < GM; ++g) {
            if (g < ng) {
                const float p = sc[g][jj];
#pragma unroll
                for (int e = 0; e < DPL; ++e) acc[g][e] += p * vv[e];
            }
        }
    }
#pragma unroll
    for (int g = 0; g < GM; ++g)
        if (g < ng)
#pragma unroll
            for (int e = 0; e < DPL; ++e) red[warp][g][DPL * lane + e] = acc[g][e];
    __syncthreads();
    for (int idx = threadIdx.x; idx < ng * HD; idx += kAttnThreads) {
        const int g = idx / HD, d = idx % HD;
        float o = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) o += red[w][g][d];
        o_part[part(g) * HD + d] = o;
    }
}

// One-token attention in a single pass while the context is short (the decode step's plan
// is <= kAttnOnePass positions): grid (query head, token), kAttnOnePassThreads threads, the
// whole of the head's context in one block, so that no partial results go through memory
// and no merge kernel follows.  It also does rope_kv_kernel's work for its token: rotates
// q and the new k as it loads them, uses the new k and v from shared memory (rounded to F16
// as the cache holds them), and the first block of each KV head's group writes them to the
// cache for the steps after.  Same phases and lane layouts as attn_split_kernel; the
// normalized output is written and (when q8 is set) quantized per 32 values.
template <int HD>
__global__ void __launch_bounds__(kAttnOnePassThreads)
attn_onepass_kernel(const float* __restrict__ qkv, int64_t ldq, __half* __restrict__ kc, __half* __restrict__ vc,
                    int n_head, int n_head_kv, int n_rot, float base, const int32_t* __restrict__ pos0p, int t_off,
                    float scale, float* __restrict__ out, int8_t* __restrict__ q8, Q8Sums* __restrict__ sums) {
    griddep_launch();
    constexpr int NW = kAttnOnePassThreads / 32;
    static_assert(HD == 64 || HD == 128, "head_dim");
    static_assert(HD / 2 <= kAttnOnePassThreads, "one thread per pair");
    constexpr int LPP = HD / 16, PPW = 32 / LPP, DPL = HD / 32;
    // K and V rows of the earlier positions prefetched into registers before the wait: the
    // cache below this token's position and the position itself (*pos0p, copied in before
    // the step's first kernel, which is not a programmatic dependent) were all written by
    // work that has completed.  KIT score steps, VIT P V steps per warp (128 positions).
    constexpr int KIT = 128 / (NW * PPW) > 0 ? 128 / (NW * PPW) : 1, VIT = 128 / NW;
    __shared__ __align__(16) float qs[HD];
    __shared__ __align__(16) float knew[HD];
    __shared__ __align__(16) float vnew[HD];
    __shared__ float sc[kAttnOnePass];
    __shared__ __align__(16) float red[NW][HD];
    __shared__ float wred[NW];

    const int h = blockIdx.x, t = blockIdx.y;
    const int G = n_head / n_head_kv, kvh = h / G;
    const int64_t pos = int64_t(*pos0p) + t_off + t;
    const int len = int(min(pos + 1, int64_t(kAttnOnePass)));
    const int64_t dq = int64_t(n_head) * HD, dkv = int64_t(n_head_kv) * HD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane % LPP;
    const __half* kbase = kc + int64_t(kvh) * HD + 4 * sub;
    const __half* vbase = vc + int64_t(kvh) * HD + DPL * lane;
    auto load_k = [&](int jj, uint2 (&r)[4]) { load_k_part<LPP>(kbase + int64_t(jj) * dkv, r); };
    auto load_v = [&](int jj) { return load_v_part<DPL>(vbase + int64_t(jj) * dkv); };
    uint2 kpre[KIT][4], vpre[VIT];
#pragma unroll
    for (int it = 0; it < KIT; ++it) {
        const int jj = warp * PPW + it * NW * PPW + lane / LPP;
        if (jj < len - 1) load_k(jj, kpre[it]);
    }
#pragma unroll
    for (int it = 0; it < VIT; ++it) {
        const int jj = warp + it * NW;
        if (jj < len - 1) vpre[it] = load_v(jj);
    }
    griddep_wait();
    if (threadIdx.x < HD / 2) {   // RoPE, pairs 2i, 2i + 1 (as rope_kv_kernel)
        const int i = threadIdx.x;
        const float* qt = qkv + t * ldq;
        float2 qp = reinterpret_cast<const float2*>(qt + int64_t(h) * HD)[i];
        float2 kp = reinterpret_cast<const float2*>(qt + dq + int64_t(kvh) * HD)[i];
        const float2 vp = reinterpret_cast<const float2*>(qt + dq + dkv + int64_t(kvh) * HD)[i];
        if (2 * i < n_rot) {
            float sn, cs;
            rope_sincos(pos, i, n_rot, base, sn, cs);
            qp = rope_rotate(qp, sn, cs);
            kp = rope_rotate(kp, sn, cs);
        }
        // F16 queries, as llama.cpp; k and v as the cache holds them
        const __half2 qh = __floats2half2_rn(qp.x, qp.y), kh = __floats2half2_rn(kp.x, kp.y),
                      vh = __floats2half2_rn(vp.x, vp.y);
        const float2 qf = __half22float2(qh), kf = __half22float2(kh), vf = __half22float2(vh);
        qs[2 * i] = qf.x; qs[2 * i + 1] = qf.y;
        knew[2 * i] = kf.x; knew[2 * i + 1] = kf.y;
        vnew[2 * i] = vf.x; vnew[2 * i + 1] = vf.y;
        if (h % G == 0) {
            reinterpret_cast<__half2*>(kc + pos * dkv + int64_t(kvh) * HD)[i] = kh;
            reinterpret_cast<__half2*>(vc + pos * dkv + int64_t(kvh) * HD)[i] = vh;
        }
    }
    __syncthreads();

    // scores
    float mloc = -INFINITY;
    auto score = [&](int j0, const uint2 (&r)[4]) {   // positions j0 .. j0 + PPW - 1 (warp-uniform j0)
        const int jj = j0 + lane / LPP;
        float kf[16];
        if (jj < len - 1) {
            k_part_floats(r, kf);
        } else if (jj == len - 1) {   // this token's k: not in the cache yet
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float4 k4 = *reinterpret_cast<const float4*>(&knew[4 * sub + 4 * LPP * i]);
                kf[4 * i] = k4.x; kf[4 * i + 1] = k4.y; kf[4 * i + 2] = k4.z; kf[4 * i + 3] = k4.w;
            }
        } else {
#pragma unroll
            for (int e = 0; e < 16; ++e) kf[e] = 0.0f;
        }
        float s = qk_dot<LPP>(qs, sub, kf);
        if (jj < len) {
            s *= scale;
            if (sub == 0) sc[jj] = s;
            mloc = fmaxf(mloc, s);
        }
    };
#pragma unroll
    for (int it = 0; it < KIT; ++it) {
        const int j0 = warp * PPW + it * NW * PPW;
        if (j0 < len) score(j0, kpre[it]);
    }
    for (int j0 = warp * PPW + KIT * NW * PPW; j0 < len; j0 += NW * PPW) {
        uint2 r[4];
        const int jj = j0 + lane / LPP;
        if (jj < len - 1) load_k(jj, r);
        score(j0, r);
    }
    mloc = warp_max(mloc);
    if (lane == 0) wred[warp] = mloc;
    __syncthreads();
    float m = wred[0];
#pragma unroll
    for (int w = 1; w < NW; ++w) m = fmaxf(m, wred[w]);
    float lsum = 0.0f;
    for (int jj = threadIdx.x; jj < len; jj += kAttnOnePassThreads) {
        const float e = expf(sc[jj] - m);
        sc[jj] = e;
        lsum += e;
    }
    lsum = warp_sum(lsum);
    __syncthreads();   // every wred[] read above is done; sc[] holds the weights
    if (lane == 0) wred[warp] = lsum;

    // o = P V
    float acc[DPL];
#pragma unroll
    for (int e = 0; e < DPL; ++e) acc[e] = 0.0f;
    auto pv = [&](int jj, const uint2& r) {
        const float p = sc[jj];
        float vv[DPL];
        v_part_floats<DPL>(r, vv);
#pragma unroll
        for (int e = 0; e < DPL; ++e) acc[e] += p * vv[e];
    };
#pragma unroll
    for (int it = 0; it < VIT; ++it) {
        const int jj = warp + it * NW;
        if (jj < len - 1) pv(jj, vpre[it]);
    }
#pragma unroll 8
    for (int jj = warp + VIT * NW; jj < len - 1; jj += NW) pv(jj, load_v(jj));
    if (warp == (len - 1) % NW) {   // this token's v, from shared memory
        const float p = sc[len - 1];
#pragma unroll
        for (int e = 0; e < DPL; ++e) acc[e] += p * vnew[DPL * lane + e];
    }
#pragma unroll
    for (int e = 0; e < DPL; ++e) red[warp][DPL * lane + e] = acc[e];
    __syncthreads();
    if (threadIdx.x < HD) {   // HD % 32 == 0: whole warps, one 32-value block each
        const int d = threadIdx.x;
        float l = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; ++w) {
            l += wred[w];
            o += red[w][d];
        }
        const float v = o / l;
        const int64_t i = int64_t(t) * n_head * HD + int64_t(h) * HD + d;
        out[i] = v;
        if (q8) warp_quantize_q8(v, q8 + i, sums + i / 32);
    }
}

// Merge the splits: grid (head, token), HD threads.  When q is set, also quantizes the
// output per 32 values for the output projection (one warp per block of 32).
__global__ void attn_combine_kernel(const float* __restrict__ o_part, const float2* __restrict__ ml_part, int n_head,
                                    int hd, int nsplit, const int32_t* __restrict__ pos0p, int t_off, int chunk,
                                    float* __restrict__ out, int8_t* __restrict__ q, Q8Sums* __restrict__ sums) {
    griddep_launch();
    griddep_wait();
    const int64_t pos0 = int64_t(*pos0p) + t_off;
    const int h = blockIdx.x, t = blockIdx.y, d = threadIdx.x;
    const int64_t base = (int64_t(t) * n_head + h) * nsplit;
    const int nvalid = int(min(int64_t(nsplit), (pos0 + t) / chunk + 1));
    float M = -INFINITY;
    for (int s = 0; s < nvalid; ++s) M = fmaxf(M, ml_part[base + s].x);
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < nvalid; ++s) {
        const float2 ml = ml_part[base + s];
        const float w = expf(ml.x - M);
        num += w * o_part[(base + s) * hd + d];
        den += w * ml.y;
    }
    const float v = num / den;
    const int64_t i = int64_t(t) * n_head * hd + int64_t(h) * hd + d;
    out[i] = v;
    if (q) warp_quantize_q8(v, q + i, sums + i / 32);   // hd % 32 == 0: each warp holds one whole block
}

}  // namespace

bool available() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return n > 0;
}

std::string device_name() {
    if (!available()) return "";
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "";
    return p.name;
}

std::string unsupported_weight(const Model& m) {
    auto bad = [](const WeightView& w) { return w.data && !gemv_supported(w.type); };
    if (bad(m.tok_embd)) return "token_embd.weight";
    if (bad(m.output)) return "output.weight";
    for (size_t i = 0; i < m.layers.size(); ++i)
        for (const LayerMatrix& lm : kLayerMatrices)
            if (bad(m.layers[i].*lm.field)) return "blk." + std::to_string(i) + "." + lm.name + ".weight";
    return "";
}

namespace {

bool env_on(const char* name) {
    const char* v = std::getenv(name);
    return !(v && v[0] == '0' && v[1] == '\0');
}

}  // namespace

struct LlamaGpu::Impl {
    HParams hp;
    int64_t n_ctx = 0, max_tok = 512;
    int nsm = 1;
    bool f32_weights = false;
    bool use_graphs = true, use_mma = true, use_pdl = true;
    cudaStream_t st = nullptr;
    std::vector<void*> allocs;
    size_t bytes = 0;

    // a matrix product's piece: rows [off, off + m.rows) of the output row
    struct Part {
        DevMatrix m;
        int64_t off = 0;
    };
    struct Layer {
        float *attn_norm = nullptr, *ffn_norm = nullptr;
        std::vector<Part> qkv, gu;   // one part each when the matrices share a type
        DevMatrix wo, down;
    };
    std::vector<Layer> layers;
    DevMatrix tok_embd, output;
    float* output_norm = nullptr;
    __half *kc = nullptr, *vc = nullptr;

    // work buffers for max_tok tokens
    float *x = nullptr, *xn = nullptr, *qkv = nullptr, *attn = nullptr;
    float *gu = nullptr, *hidden = nullptr, *logits = nullptr;
    int8_t* xq = nullptr;
    Q8Sums* xs = nullptr;
    int32_t* d_in = nullptr;   // [0]: position of the first token, [1..]: token ids
    int32_t* h_in = nullptr;   // pinned staging of d_in
    float* h_logits = nullptr;   // pinned, one row of logits (pinned_logits_row)
    float* o_part = nullptr;
    float2* ml_part = nullptr;
    int64_t part_cap = 0;   // floats in o_part
    MmaScratch mma_ws;
    std::map<int64_t, cudaGraphExec_t> graphs;   // decode step, by (plan length, logits wanted)

    ~Impl() {
        for (auto& kv : graphs) cudaGraphExecDestroy(kv.second);
        for (void* p : allocs) cudaFree(p);
        if (h_in) cudaFreeHost(h_in);
        if (h_logits) cudaFreeHost(h_logits);
        if (st) cudaStreamDestroy(st);
    }

    template <class T>
    T* alloc(int64_t n) {
        void* p = nullptr;
        LB_CUDA_CHECK(cudaMalloc(&p, size_t(std::max<int64_t>(n, 1)) * sizeof(T)));
        allocs.push_back(p);
        bytes += size_t(n) * sizeof(T);
        return static_cast<T*>(p);
    }
    float* upload_vec(const float* h, int64_t n) {
        float* p = alloc<float>(n);
        LB_CUDA_CHECK(cudaMemcpy(p, h, size_t(n) * sizeof(float), cudaMemcpyHostToDevice));
        return p;
    }
    // the matrix on the device (not yet owned: keep() or fuse() it)
    DevMatrix upload(const WeightView& w, const char* what) {
        if (!gemv_supported(w.type))
            fail(std::string("the CUDA backend cannot run ") + what + ": its weight type (id " +
                 std::to_string(uint32_t(w.type)) + ") has no GPU kernel");
        gemv_prepare(w.type);
        DevMatrix m = upload_matrix(w.type, w.rows, w.cols, w.data, w.row_bytes);
        if (f32_weights && w.type != Type::F32) {   // dequantize on the device (a check)
            if (w.cols % 4 != 0) fail("f32_weights needs rows of a multiple of 4 values");
            DevMatrix f = upload_matrix(Type::F32, w.rows, w.cols, nullptr, size_t(w.cols) * 4);
            std::vector<int32_t> ids(size_t(w.rows));
            for (int64_t r = 0; r < w.rows; ++r) ids[size_t(r)] = int32_t(r);
            int32_t* d_ids = nullptr;
            LB_CUDA_CHECK(cudaMalloc(&d_ids, ids.size() * sizeof(int32_t)));
            LB_CUDA_CHECK(cudaMemcpy(d_ids, ids.data(), ids.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
            LB_CUDA_CHECK(cudaDeviceSynchronize());   // uploads ran on the legacy stream; st does not wait for it
            dequant_rows(m, d_ids, w.rows, reinterpret_cast<float*>(f.data), st);   // pitch == cols * 4
            LB_CUDA_CHECK(cudaStreamSynchronize(st));
            cudaFree(d_ids);
            free_matrix(m);
            m = f;
        }
        return m;
    }
    DevMatrix keep(const DevMatrix& m) {
        allocs.push_back(m.data);
        bytes += m.pitch * size_t(m.rows);
        return m;
    }
    // The parts with each run of neighbours that share type, width, pitch and layout joined
    // into one matrix (one launch instead of several), at their output offsets.
    std::vector<Part> fuse(std::vector<DevMatrix> ms) {
        auto same = [](const DevMatrix& a, const DevMatrix& b) {
            return a.type == b.type && a.cols == b.cols && a.pitch == b.pitch && a.planar == b.planar;
        };
        std::vector<Part> out;
        int64_t off = 0;
        for (size_t i = 0; i < ms.size();) {
            size_t j = i + 1;
            while (j < ms.size() && same(ms[j], ms[i])) ++j;
            if (j == i + 1) {
                out.push_back(Part{keep(ms[i]), off});
                off += ms[i].rows;
                i = j;
                continue;
            }
            DevMatrix f = ms[i];
            f.rows = 0;
            for (size_t k = i; k < j; ++k) f.rows += ms[k].rows;
            LB_CUDA_CHECK(cudaMalloc(&f.data, f.pitch * size_t(f.rows)));
            size_t at = 0;
            for (size_t k = i; k < j; ++k) {
                LB_CUDA_CHECK(cudaMemcpy(f.data + at, ms[k].data, ms[k].pitch * size_t(ms[k].rows),
                                         cudaMemcpyDeviceToDevice));
                at += ms[k].pitch * size_t(ms[k].rows);
                free_matrix(ms[k]);
            }
            out.push_back(Part{keep(f), off});
            off += f.rows;
            i = j;
        }
        return out;
    }

    DevAct act(const float* f32, int64_t ld) const {
        DevAct a;
        a.f32 = f32;
        a.ld_f32 = ld;
        a.q = xq;
        a.s = xs;
        return a;
    }

    // y (+)= W in for nt tokens: tensor cores for large batches, else the GEMV kernels
    // (which read the int8 copy of `in` that the kernel producing it left in xq/xs).
    void matmul(const DevMatrix& w, const float* in, int64_t ld_in, int64_t nt, float* y, int64_t ldy, bool acc) {
        if (use_mma && nt >= mma_min_tokens(w.type) && mma_supported(w.type, w.cols))
            ::lowbit::cuda::mma(w, in, ld_in, nt, y, ldy, acc, mma_ws, st);
        else
            gemv(w, act(in, ld_in), nt, y, ldy, acc, st, use_pdl);
    }
    void matmul(const std::vector<Part>& parts, const float* in, int64_t ld_in, int64_t nt, float* y, int64_t ldy) {
        if (nt == 1 && parts.size() == 2 &&
            gemv_pair(parts[0].m, y + parts[0].off, parts[1].m, y + parts[1].off, act(in, ld_in), st, use_pdl))
            return;
        for (const auto& p : parts) matmul(p.m, in, ld_in, nt, y + p.off, ldy, false);
    }

    void rmsnorm_q(const float* in, const float* w, int64_t nt, float* out) {
        const int n = int(hp.n_embd), n4 = n / 4;   // n % 32 == 0 (checked on construction)
        const dim3 g(static_cast<unsigned>(nt)), b(256);
        using VecK = void (*)(const float*, const float*, int, float, float*, int8_t*, Q8Sums*);
        VecK k = nullptr;
        if (n4 <= 256) k = rmsnorm_q_vec_kernel<1>;
        else if (n4 <= 512) k = rmsnorm_q_vec_kernel<2>;
        else if (n4 <= 1024) k = rmsnorm_q_vec_kernel<4>;
        else if (n4 <= 2048) k = rmsnorm_q_vec_kernel<8>;
        if (k)
            launch(k, g, b, 0, st, use_pdl, in, w, n, hp.rms_eps, out, xq, xs);
        else
            launch(rmsnorm_q_kernel, g, b, 0, st, use_pdl, in, w, hp.n_embd, hp.rms_eps, out, xq, xs);
    }

    // The length the attention splits are planned for: the true one for a batch; for one
    // token, a bucket (>= 256, powers of two) so that one decode graph serves many steps.
    int64_t plan_len(int64_t P, int64_t nt) const {
        if (nt != 1) return P + nt;
        int64_t L = 256;
        while (L < P + 1) L *= 2;
        return std::min(L, n_ctx);
    }

    // one-token steps over short contexts take attn_onepass_kernel, which also does RoPE
    static bool one_pass(int64_t nt, int64_t len) { return nt == 1 && len <= kAttnOnePass; }

    void attention(int64_t l, int64_t nt, int64_t len, bool quantize_out) {
        const int hd = int(hp.head_dim);
        const int n_head = int(hp.n_head), n_kv = int(hp.n_head_kv);
        const int G = n_head / n_kv;
        const int ngs = int(ceil_div(G, kAttnMaxGroup));
        const int64_t ctas = int64_t(n_kv) * ngs * nt;
        const int64_t want_splits = std::max<int64_t>(1, ceil_div(2 * int64_t(nsm), ctas));
        int64_t chunk = ceil_div(ceil_div(len, want_splits), 32) * 32;
        chunk = std::min<int64_t>(std::max<int64_t>(chunk, 32), kAttnMaxChunk);
        const int nsplit = int(ceil_div(len, chunk));
        const int64_t per_tok = int64_t(n_head) * nsplit * hd;
        const int64_t tb = std::max<int64_t>(1, std::min(nt, part_cap / per_tok));
        if (per_tok > part_cap) fail("attention scratch too small");
        const __half* kc_l = kc + l * n_ctx * hp.n_embd_kv();
        const __half* vc_l = vc + l * n_ctx * hp.n_embd_kv();
        const float scale = 1.0f / std::sqrt(float(hd));
        const int64_t dq = hp.n_embd_q(), ldq = dq + 2 * hp.n_embd_kv();
        if (one_pass(nt, len)) {   // RoPE and the cache writes included
            using OneK = void (*)(const float*, int64_t, __half*, __half*, int, int, int, float, const int32_t*, int,
                                  float, float*, int8_t*, Q8Sums*);
            const OneK k = hd == 64 ? OneK(attn_onepass_kernel<64>) : OneK(attn_onepass_kernel<128>);
            launch(k, dim3(unsigned(n_head), 1u), dim3(kAttnOnePassThreads), 0, st, use_pdl, qkv, ldq,
                   kc + l * n_ctx * hp.n_embd_kv(), vc + l * n_ctx * hp.n_embd_kv(), n_head, n_kv, int(hp.n_rot),
                   hp.rope_base, d_in, 0, scale, attn, quantize_out ? xq : nullptr, quantize_out ? xs : nullptr);
            return;
        }
        for (int64_t t0 = 0; t0 < nt; t0 += tb) {
            const int64_t m = std::min(tb, nt - t0);
            const dim3 grid(unsigned(nsplit), unsigned(n_kv * ngs), unsigned(m));
            const float* qp = qkv + t0 * ldq;
            using SplitK = void (*)(const float*, int64_t, const __half*, const __half*, int, int, int,
                                    const int32_t*, int, int, int, float, float*, float2*);
            const SplitK k = hd == 64 ? SplitK(attn_split_kernel<64>) : SplitK(attn_split_kernel<128>);
            launch(k, grid, dim3(kAttnThreads), 0, st, use_pdl, qp, ldq, kc_l, vc_l, n_head, n_kv, ngs, d_in, int(t0),
                   int(chunk), nsplit, scale, o_part, ml_part);
            launch(attn_combine_kernel, dim3(unsigned(n_head), unsigned(m)), dim3(unsigned(hd)), 0, st, use_pdl, o_part,
                   ml_part, n_head, hd, nsplit, d_in, int(t0), int(chunk), attn + t0 * dq,
                   quantize_out ? xq + t0 * dq : nullptr, quantize_out ? xs + t0 * (dq / 32) : nullptr);
        }
    }

    void layer(int64_t l, int64_t nt, int64_t len) {
        const Layer& L = layers[size_t(l)];
        const int64_t d = hp.n_embd, dq = hp.n_embd_q(), dkv = hp.n_embd_kv(), ff = hp.n_ff;
        const int64_t ldqkv = dq + 2 * dkv;
        // attention block
        rmsnorm_q(x, L.attn_norm, nt, xn);
        matmul(L.qkv, xn, d, nt, qkv, ldqkv);
        if (!one_pass(nt, len))
            launch(rope_kv_kernel, dim3(unsigned(nt), unsigned(hp.n_head + hp.n_head_kv)),
                   dim3(unsigned(hp.head_dim / 2)), 0, st, use_pdl, qkv, ldqkv, int(hp.n_head), int(hp.n_head_kv),
                   int(hp.head_dim), int(hp.n_rot), hp.rope_base, d_in, kc + l * n_ctx * dkv, vc + l * n_ctx * dkv);
        attention(l, nt, len, gemv_wants_q8(L.wo.type));
        matmul(L.wo, attn, dq, nt, x, d, true);   // x += Wo attn
        // feed-forward block
        rmsnorm_q(x, L.ffn_norm, nt, xn);
        matmul(L.gu, xn, d, nt, gu, 2 * ff);
        const int64_t warps = nt * (ff / 32);
        launch(swiglu_q_kernel, dim3(unsigned(ceil_div(warps, 8))), dim3(256), 0, st, use_pdl, gu, nt, ff, hidden, xq,
               xs);
        matmul(L.down, hidden, ff, nt, x, d, true);   // x += Wdown h
    }

    // One chunk of nt tokens (ids and position already in d_in); the logits of its last
    // m_out tokens land in `logits`.
    void step(int64_t nt, int64_t len, int64_t m_out) {
        const int64_t d = hp.n_embd;
        dequant_rows(tok_embd, d_in + 1, nt, x, st);
        for (int64_t l = 0; l < hp.n_layer; ++l) layer(l, nt, len);
        if (m_out > 0) {
            rmsnorm_q(x + (nt - m_out) * d, output_norm, m_out, xn);
            matmul(output, xn, d, m_out, logits, hp.n_vocab, false);
        }
    }

    void decode_graph(int64_t len, int64_t m_out) {
        const int64_t key = len * 2 + m_out;
        auto it = graphs.find(key);
        if (it == graphs.end()) {
            cudaGraphExec_t ex = capture(len, m_out);
            if (!ex && use_pdl) {   // a driver that cannot capture programmatic launches
                std::fprintf(stderr, "lowbit: CUDA graph capture failed with PDL; continuing without PDL\n");
                use_pdl = false;
                ex = capture(len, m_out);
            }
            if (!ex) fail("could not capture the decode step as a CUDA graph");
            it = graphs.emplace(key, ex).first;
        }
        LB_CUDA_CHECK(cudaGraphLaunch(it->second, st));
    }
    // the decode step as an executable graph; null when capture or instantiation fails
    cudaGraphExec_t capture(int64_t len, int64_t m_out) {
        cudaGraph_t g = nullptr;
        LB_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        bool ok = true;
        try {
            step(1, len, m_out);
        } catch (...) {
            ok = false;
        }
        const cudaError_t e1 = cudaStreamEndCapture(st, &g);
        cudaGraphExec_t ex = nullptr;
        if (ok && e1 == cudaSuccess && g) {
            if (cudaGraphInstantiate(&ex, g, 0) != cudaSuccess) ex = nullptr;
        }
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();   // clear a capture error, if any
        return ex;
    }
};

LlamaGpu::LlamaGpu(const Model& m, int64_t n_ctx, bool f32_weights) : impl_(new Impl) {
    Impl& I = *impl_;
    I.f32_weights = f32_weights;
    I.use_graphs = env_on("LOWBIT_CUDA_GRAPH");
    I.use_mma = env_on("LOWBIT_CUDA_MMA");
    I.use_pdl = env_on("LOWBIT_CUDA_PDL");
    if (m.vocab_only()) fail("this model was loaded with vocab_only and cannot be evaluated");
    if (!available()) fail("no CUDA device is available");
    I.hp = m.hparams();
    const HParams& hp = I.hp;
    I.n_ctx = n_ctx <= 0 ? hp.n_ctx_train : n_ctx;
    if (hp.head_dim != 64 && hp.head_dim != 128)
        fail("the CUDA backend supports head_dim 64 and 128, not " + std::to_string(hp.head_dim));
    if (hp.n_head % hp.n_head_kv != 0) fail("n_head must be a multiple of n_head_kv");
    if (hp.n_rot % 2 != 0 || hp.n_rot > hp.head_dim) fail("unsupported n_rot");
    if (hp.n_embd % 32 != 0 || hp.n_ff % 32 != 0) fail("the CUDA backend needs n_embd and n_ff divisible by 32");
    if (I.n_ctx > (int64_t(1) << 30)) fail("n_ctx is too large for the CUDA backend");
    LB_CUDA_CHECK(cudaSetDevice(0));
    cudaDeviceProp prop{};
    LB_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    I.nsm = prop.multiProcessorCount;
    LB_CUDA_CHECK(cudaStreamCreateWithFlags(&I.st, cudaStreamNonBlocking));

    const int64_t d = hp.n_embd, dq = hp.n_embd_q(), dkv = hp.n_embd_kv(), ff = hp.n_ff;
    I.tok_embd = I.keep(I.upload(m.tok_embd, "token_embd.weight"));
    I.output = m.output.data == m.tok_embd.data ? I.tok_embd : I.keep(I.upload(m.output, "output.weight"));
    I.output_norm = I.upload_vec(m.output_norm, d);
    I.layers.resize(size_t(hp.n_layer));
    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const LayerWeights& s = m.layers[size_t(l)];
        Impl::Layer& L = I.layers[size_t(l)];
        L.attn_norm = I.upload_vec(s.attn_norm, d);
        L.ffn_norm = I.upload_vec(s.ffn_norm, d);
        L.qkv = I.fuse({I.upload(s.wq, "attn_q"), I.upload(s.wk, "attn_k"), I.upload(s.wv, "attn_v")});
        L.wo = I.keep(I.upload(s.wo, "attn_output"));
        L.gu = I.fuse({I.upload(s.w_gate, "ffn_gate"), I.upload(s.w_up, "ffn_up")});
        L.down = I.keep(I.upload(s.w_down, "ffn_down"));
    }
    I.kc = I.alloc<__half>(hp.n_layer * I.n_ctx * dkv);
    I.vc = I.alloc<__half>(hp.n_layer * I.n_ctx * dkv);

    const int64_t T = I.max_tok;
    I.x = I.alloc<float>(T * d);
    I.xn = I.alloc<float>(T * d);
    I.qkv = I.alloc<float>(T * (dq + 2 * dkv));
    I.attn = I.alloc<float>(T * dq);
    I.gu = I.alloc<float>(T * 2 * ff);
    I.hidden = I.alloc<float>(T * ff);
    const int64_t wmax = std::max({d, dq, ff});
    I.xq = I.alloc<int8_t>(T * wmax);
    I.xs = I.alloc<Q8Sums>(T * wmax / 32);
    I.d_in = I.alloc<int32_t>(T + 1);
    LB_CUDA_CHECK(cudaMallocHost(&I.h_in, size_t(T + 1) * sizeof(int32_t)));
    LB_CUDA_CHECK(cudaMallocHost(&I.h_logits, size_t(hp.n_vocab) * sizeof(float)));
    I.logits = I.alloc<float>(T * hp.n_vocab);
    // attention partials: at least one token at the most splits (chunk >= 32), at most 64 MB
    const int64_t one_tok = hp.n_head * ceil_div(I.n_ctx, 32) * hp.head_dim;
    I.part_cap = std::max(one_tok, std::min<int64_t>(T * hp.n_head * 4 * hp.head_dim, int64_t(16) << 20));
    I.o_part = I.alloc<float>(I.part_cap);
    I.ml_part = I.alloc<float2>(I.part_cap / hp.head_dim);
    LB_CUDA_CHECK(cudaDeviceSynchronize());
}

LlamaGpu::~LlamaGpu() = default;

int64_t LlamaGpu::n_ctx() const { return impl_->n_ctx; }
int64_t LlamaGpu::n_vocab() const { return impl_->hp.n_vocab; }
size_t LlamaGpu::device_bytes() const { return impl_->bytes + impl_->mma_ws.bytes(); }

void LlamaGpu::set_options(bool graphs, bool mma, bool pdl) {
    Impl& I = *impl_;
    if (pdl != I.use_pdl) {   // captured graphs hold the launch attributes
        for (auto& kv : I.graphs) cudaGraphExecDestroy(kv.second);
        I.graphs.clear();
    }
    I.use_graphs = graphs;
    I.use_mma = mma;
    I.use_pdl = pdl;
}
float* LlamaGpu::pinned_logits_row() { return impl_->h_logits; }
bool LlamaGpu::graphs() const { return impl_->use_graphs; }
bool LlamaGpu::mma() const { return impl_->use_mma; }
bool LlamaGpu::pdl() const { return impl_->use_pdl; }

void LlamaGpu::forward(const int32_t* tokens, int64_t n, int64_t pos0, int64_t n_out, float* logits) {
    Impl& I = *impl_;
    const HParams& hp = I.hp;
    if (n <= 0) fail("forward needs at least one token");
    if (n_out < 0 || n_out > n) fail("n_out must be in [0, n]");
    if (n_out > 0 && !logits) fail("logits is null");
    if (pos0 < 0 || pos0 + n > I.n_ctx) fail("context is full");
    for (int64_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= hp.n_vocab)
            fail("token id " + std::to_string(tokens[i]) + " is out of range [0, " + std::to_string(hp.n_vocab) + ")");
    const int64_t first = n - n_out;
    for (int64_t c0 = 0; c0 < n; c0 += I.max_tok) {
        const int64_t nt = std::min(I.max_tok, n - c0), P = pos0 + c0;
        if (c0 > 0) LB_CUDA_CHECK(cudaStreamSynchronize(I.st));   // h_in is about to be rewritten
        I.h_in[0] = int32_t(P);
        std::copy(tokens + c0, tokens + c0 + nt, I.h_in + 1);
        LB_CUDA_CHECK(cudaMemcpyAsync(I.d_in, I.h_in, size_t(nt + 1) * sizeof(int32_t), cudaMemcpyHostToDevice, I.st));
        const int64_t r0 = std::max(c0, first), r1 = c0 + nt;
        const int64_t m = std::max<int64_t>(0, r1 - r0);   // logits wanted from this chunk (its last m tokens)
        const int64_t len = I.plan_len(P, nt);
        if (nt == 1 && I.use_graphs)
            I.decode_graph(len, m);
        else
            I.step(nt, len, m);
        if (m > 0)
            LB_CUDA_CHECK(cudaMemcpyAsync(logits + (r0 - first) * hp.n_vocab, I.logits,
                                          size_t(m * hp.n_vocab) * sizeof(float), cudaMemcpyDeviceToHost, I.st));
    }
    LB_CUDA_CHECK(cudaStreamSynchronize(I.st));
}

}  // namespace lowbit::cuda
