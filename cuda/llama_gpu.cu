// The llama forward pass on the GPU: the same graph as cpp/src/models/llama.cpp
// (RMSNorm -> q/k/v -> RoPE "norm" pairs (2i, 2i+1) -> F16 KV cache -> GQA attention ->
// output projection + residual -> RMSNorm -> SwiGLU FFN + residual; final norm and
// classifier), with the element-wise steps fused into neighbours where cheap:
//   RMSNorm also quantizes its output for the next matrix product,
//   RoPE also writes K and V (F16) into the cache,
//   SwiGLU also quantizes, and both residual adds happen in the matrix kernels' epilogue.
// Attention is split-K ("flash decoding"): each block of threads takes one KV head, up
// to 8 of its query heads and a slice of the positions, and a second kernel merges the
// slices with their running max and sum.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend.h"
#include "common.cuh"
#include "gemv.h"

namespace lowbit::cuda {

namespace {

constexpr int kAttnThreads = 128;
constexpr int kAttnMaxGroup = 8;     // query heads per block of threads
constexpr int kAttnMaxChunk = 256;   // positions per split

// One block of threads per token: y = x / sqrt(mean(x^2) + eps) * w, also quantized.
__global__ void rmsnorm_q_kernel(const float* __restrict__ x, const float* __restrict__ w, int64_t n, float eps,
                                 float* __restrict__ y, int8_t* __restrict__ q, Q8Sums* __restrict__ s) {
    __shared__ float red[32];
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
        const float amax = warp_max(fabsf(v));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const int qi = __float2int_rn(v * id);
        q[t * n + i] = int8_t(qi);
        const int s_all = __reduce_add_sync(0xffffffffu, qi);
        const int s_lo = __reduce_add_sync(0xffffffffu, lane < 16 ? qi : 0);
        const float d = amax / 127.0f;
        if (lane == 0) s[t * nb + b] = Q8Sums{d, d * float(s_all), d * float(s_lo), d * float(s_all - s_lo)};
    }
}

// h = silu(gate) * up, also quantized; one warp per 32 values.
__global__ void swiglu_q_kernel(const float* __restrict__ g, const float* __restrict__ u, int64_t ntok, int64_t n,
                                float* __restrict__ h, int8_t* __restrict__ q, Q8Sums* __restrict__ s) {
    const int64_t nb = n / 32;
    const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (gw >= ntok * nb) return;
    const int64_t i = gw * 32 + lane;   // rows are contiguous: token t, block b -> gw = t*nb + b
    const float gv = g[i];
    const float v = (gv / (1.0f + expf(-gv))) * u[i];
    h[i] = v;
    const float amax = warp_max(fabsf(v));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int qi = __float2int_rn(v * id);
    q[i] = int8_t(qi);
    const int s_all = __reduce_add_sync(0xffffffffu, qi);
    const int s_lo = __reduce_add_sync(0xffffffffu, lane < 16 ? qi : 0);
    const float d = amax / 127.0f;
    if (lane == 0) s[gw] = Q8Sums{d, d * float(s_all), d * float(s_lo), d * float(s_all - s_lo)};
}

// RoPE (pairs 2i, 2i+1) on q and k of one token per block; k and v go to the cache as F16.
__global__ void rope_kv_kernel(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v, int n_head,
                               int n_head_kv, int hd, int n_rot, float base, int64_t pos0, __half* __restrict__ kc,
                               __half* __restrict__ vc) {
    const int64_t t = blockIdx.x, pos = pos0 + t;
    const int64_t dq = int64_t(n_head) * hd, dkv = int64_t(n_head_kv) * hd;
    const int half_hd = hd / 2;
    const int npairs = (n_head + n_head_kv) * half_hd;
    for (int p = threadIdx.x; p < npairs; p += blockDim.x) {
        const int head = p / half_hd, i = p % half_hd;
        const bool is_k = head >= n_head;
        float* vec = is_k ? k + t * dkv + int64_t(head - n_head) * hd : q + t * dq + int64_t(head) * hd;
        float x0 = vec[2 * i], x1 = vec[2 * i + 1];
        if (2 * i < n_rot) {
            const float theta = float(pos) * powf(base, -2.0f * float(i) / float(n_rot));
            float sn, cs;
            sincosf(theta, &sn, &cs);
            const float r0 = x0 * cs - x1 * sn, r1 = x0 * sn + x1 * cs;
            x0 = r0;
            x1 = r1;
            vec[2 * i] = x0;
            vec[2 * i + 1] = x1;
        }
        if (is_k) {
            __half* dst = kc + pos * dkv + int64_t(head - n_head) * hd + 2 * i;
            dst[0] = __float2half_rn(x0);
            dst[1] = __float2half_rn(x1);
        }
    }
    for (int64_t e = threadIdx.x; e < dkv; e += blockDim.x) vc[pos * dkv + e] = __float2half_rn(v[t * dkv + e]);
}

// Split-K attention.  grid: (split, kv head * subgroups, token).  Writes, per (token, head,
// split), the unnormalized output o = sum_j exp(s_j - m) v_j, the max m and the sum l.
template <int HD>
__global__ void __launch_bounds__(kAttnThreads)
attn_split_kernel(const float* __restrict__ q, const __half* __restrict__ kc, const __half* __restrict__ vc,
                  int n_head, int n_head_kv, int ngs, int64_t pos0, int chunk, int nsplit, float scale,
                  float* __restrict__ o_part, float2* __restrict__ ml_part) {
    constexpr int GM = kAttnMaxGroup, DPL = HD / 32;
    static_assert(HD % 32 == 0 && HD <= kAttnThreads, "head_dim");
    constexpr int GSTEP = kAttnThreads / HD, GPT = (GM + GSTEP - 1) / GSTEP;
    __shared__ float qs[GM][HD];
    __shared__ float sc[GM][kAttnMaxChunk];

    const int split = blockIdx.x, t = blockIdx.z;
    const int kvh = blockIdx.y / ngs, gs = blockIdx.y % ngs;
    const int G = n_head / n_head_kv;
    const int g0 = gs * GM, ng = min(GM, G - g0);
    const int hbase = kvh * G + g0;
    const int64_t pos = pos0 + t;
    const int64_t p0 = int64_t(split) * chunk, p1 = min(p0 + chunk, pos + 1);
    const int64_t dq = int64_t(n_head) * HD, dkv = int64_t(n_head_kv) * HD;
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
        qs[g][d] = __half2float(__float2half_rn(q[t * dq + int64_t(hbase + g) * HD + d]));
    }
    __syncthreads();

    // scores: one warp per position, DPL dims per lane
    for (int jj = warp; jj < len; jj += kAttnThreads / 32) {
        const __half* kr = kc + (p0 + jj) * dkv + int64_t(kvh) * HD + lane * DPL;
        float kf[DPL];
#pragma unroll
        for (int e = 0; e < DPL; e += 2) {
            const float2 f = __half22float2(*reinterpret_cast<const __half2*>(kr + e));
            kf[e] = f.x;
            kf[e + 1] = f.y;
        }
#pragma unroll
        for (int g = 0; g < GM; ++g) {
            if (g < ng) {
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < DPL; ++e) s += qs[g][lane * DPL + e] * kf[e];
                s = warp_sum(s);
                if (lane == 0) sc[g][jj] = s * scale;
            }
        }
    }
    __syncthreads();

    // softmax pieces: one warp per head
    for (int g = warp; g < ng; g += kAttnThreads / 32) {
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

    // o = P V: thread -> (dim d, heads gsel, gsel + GSTEP, ...)
    const int d = threadIdx.x % HD, gsel = threadIdx.x / HD;
    float acc[GPT];
#pragma unroll
    for (int i = 0; i < GPT; ++i) acc[i] = 0.0f;
    const __half* vcol = vc + p0 * dkv + int64_t(kvh) * HD + d;
    for (int jj = 0; jj < len; ++jj) {
        const float vv = __half2float(vcol[int64_t(jj) * dkv]);
#pragma unroll
        for (int i = 0; i < GPT; ++i) {
            const int g = gsel + i * GSTEP;
            if (g < ng) acc[i] += sc[g][jj] * vv;
        }
    }
#pragma unroll
    for (int i = 0; i < GPT; ++i) {
        const int g = gsel + i * GSTEP;
        if (g < ng) o_part[part(g) * HD + d] = acc[i];
    }
}

// Merge the splits: grid (head, token), HD threads.
__global__ void attn_combine_kernel(const float* __restrict__ o_part, const float2* __restrict__ ml_part, int n_head,
                                    int hd, int nsplit, int64_t pos0, int chunk, float* __restrict__ out) {
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
    out[int64_t(t) * n_head * hd + int64_t(h) * hd + d] = num / den;
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

struct LlamaGpu::Impl {
    HParams hp;
    int64_t n_ctx = 0, max_tok = 512;
    int nsm = 1;
    bool f32_weights = false;
    cudaStream_t st = nullptr;
    std::vector<void*> allocs;
    size_t bytes = 0;

    struct Layer {
        float *attn_norm = nullptr, *ffn_norm = nullptr;
        DevMatrix wq, wk, wv, wo, gate, up, down;
    };
    std::vector<Layer> layers;
    DevMatrix tok_embd, output;
    float* output_norm = nullptr;
    __half *kc = nullptr, *vc = nullptr;

    // work buffers for max_tok tokens
    float *x = nullptr, *xn = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr;
    float *gate = nullptr, *up = nullptr, *hidden = nullptr, *logits = nullptr;
    int8_t* xq = nullptr;
    Q8Sums* xs = nullptr;
    int32_t* tok = nullptr;
    float* o_part = nullptr;
    float2* ml_part = nullptr;
    int64_t part_cap = 0;   // floats in o_part

    ~Impl() {
        for (void* p : allocs) cudaFree(p);
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
    DevMatrix upload(const WeightView& w, const char* what) {
        if (!gemv_supported(w.type))
            fail(std::string("the CUDA backend cannot run ") + what + ": its weight type (id " +
                 std::to_string(uint32_t(w.type)) + ") has no GPU kernel");
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
        allocs.push_back(m.data);
        bytes += m.pitch * size_t(m.rows);
        return m;
    }

    DevAct act(const float* f32, int64_t ld) const {
        DevAct a;
        a.f32 = f32;
        a.ld_f32 = ld;
        a.q = xq;
        a.s = xs;
        return a;
    }

    void rmsnorm_q(const float* in, const float* w, int64_t nt, float* out) {
        rmsnorm_q_kernel<<<unsigned(nt), 256, 0, st>>>(in, w, hp.n_embd, hp.rms_eps, out, xq, xs);
        LB_CUDA_LAUNCHED();
    }

    void attention(int64_t l, int64_t nt, int64_t P) {
        const int hd = int(hp.head_dim);
        const int n_head = int(hp.n_head), n_kv = int(hp.n_head_kv);
        const int G = n_head / n_kv;
        const int ngs = int(ceil_div(G, kAttnMaxGroup));
        const int64_t len = P + nt;   // positions the last token sees
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
        for (int64_t t0 = 0; t0 < nt; t0 += tb) {
            const int64_t m = std::min(tb, nt - t0);
            const dim3 grid(unsigned(nsplit), unsigned(n_kv * ngs), unsigned(m));
            const float* qp = q + t0 * hp.n_embd_q();
            if (hd == 64)
                attn_split_kernel<64><<<grid, kAttnThreads, 0, st>>>(qp, kc_l, vc_l, n_head, n_kv, ngs, P + t0,
                                                                     int(chunk), nsplit, scale, o_part, ml_part);
            else
                attn_split_kernel<128><<<grid, kAttnThreads, 0, st>>>(qp, kc_l, vc_l, n_head, n_kv, ngs, P + t0,
                                                                      int(chunk), nsplit, scale, o_part, ml_part);
            LB_CUDA_LAUNCHED();
            attn_combine_kernel<<<dim3(unsigned(n_head), unsigned(m)), unsigned(hd), 0, st>>>(
                o_part, ml_part, n_head, hd, nsplit, P + t0, int(chunk), attn + t0 * hp.n_embd_q());
            LB_CUDA_LAUNCHED();
        }
    }

    void layer(int64_t l, int64_t nt, int64_t P) {
        const Layer& L = layers[size_t(l)];
        const int64_t d = hp.n_embd, dq = hp.n_embd_q(), dkv = hp.n_embd_kv(), ff = hp.n_ff;
        // attention block
        rmsnorm_q(x, L.attn_norm, nt, xn);
        const DevAct a = act(xn, d);
        gemv(L.wq, a, nt, q, dq, false, st);
        gemv(L.wk, a, nt, k, dkv, false, st);
        gemv(L.wv, a, nt, v, dkv, false, st);
        rope_kv_kernel<<<unsigned(nt), 256, 0, st>>>(q, k, v, int(hp.n_head), int(hp.n_head_kv), int(hp.head_dim),
                                                     int(hp.n_rot), hp.rope_base, P, kc + l * n_ctx * dkv,
                                                     vc + l * n_ctx * dkv);
        LB_CUDA_LAUNCHED();
        attention(l, nt, P);
        if (gemv_wants_q8(L.wo.type)) quantize_q8(attn, dq, nt, dq, xq, xs, st);
        gemv(L.wo, act(attn, dq), nt, x, d, true, st);   // x += Wo attn
        // feed-forward block
        rmsnorm_q(x, L.ffn_norm, nt, xn);
        const DevAct b = act(xn, d);
        gemv(L.gate, b, nt, gate, ff, false, st);
        gemv(L.up, b, nt, up, ff, false, st);
        const int64_t warps = nt * (ff / 32);
        swiglu_q_kernel<<<unsigned(ceil_div(warps, 8)), 256, 0, st>>>(gate, up, nt, ff, hidden, xq, xs);
        LB_CUDA_LAUNCHED();
        gemv(L.down, act(hidden, ff), nt, x, d, true, st);   // x += Wdown h
    }
};

LlamaGpu::LlamaGpu(const Model& m, int64_t n_ctx, bool f32_weights) : impl_(new Impl) {
    Impl& I = *impl_;
    I.f32_weights = f32_weights;
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
    LB_CUDA_CHECK(cudaSetDevice(0));
    cudaDeviceProp prop{};
    LB_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    I.nsm = prop.multiProcessorCount;
    LB_CUDA_CHECK(cudaStreamCreateWithFlags(&I.st, cudaStreamNonBlocking));

    const int64_t d = hp.n_embd, dq = hp.n_embd_q(), dkv = hp.n_embd_kv(), ff = hp.n_ff;
    I.tok_embd = I.upload(m.tok_embd, "token_embd.weight");
    I.output = m.output.data == m.tok_embd.data ? I.tok_embd : I.upload(m.output, "output.weight");
    I.output_norm = I.upload_vec(m.output_norm, d);
    I.layers.resize(size_t(hp.n_layer));
    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const LayerWeights& s = m.layers[size_t(l)];
        Impl::Layer& L = I.layers[size_t(l)];
        L.attn_norm = I.upload_vec(s.attn_norm, d);
        L.ffn_norm = I.upload_vec(s.ffn_norm, d);
        L.wq = I.upload(s.wq, "attn_q");
        L.wk = I.upload(s.wk, "attn_k");
        L.wv = I.upload(s.wv, "attn_v");
        L.wo = I.upload(s.wo, "attn_output");
        L.gate = I.upload(s.w_gate, "ffn_gate");
        L.up = I.upload(s.w_up, "ffn_up");
        L.down = I.upload(s.w_down, "ffn_down");
    }
    I.kc = I.alloc<__half>(hp.n_layer * I.n_ctx * dkv);
    I.vc = I.alloc<__half>(hp.n_layer * I.n_ctx * dkv);

    const int64_t T = I.max_tok;
    I.x = I.alloc<float>(T * d);
    I.xn = I.alloc<float>(T * d);
    I.q = I.alloc<float>(T * dq);
    I.k = I.alloc<float>(T * dkv);
    I.v = I.alloc<float>(T * dkv);
    I.attn = I.alloc<float>(T * dq);
    I.gate = I.alloc<float>(T * ff);
    I.up = I.alloc<float>(T * ff);
    I.hidden = I.alloc<float>(T * ff);
    const int64_t wmax = std::max({d, dq, ff});
    I.xq = I.alloc<int8_t>(T * wmax);
    I.xs = I.alloc<Q8Sums>(T * wmax / 32);
    I.tok = I.alloc<int32_t>(T);
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
size_t LlamaGpu::device_bytes() const { return impl_->bytes; }

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
    const int64_t d = hp.n_embd, first = n - n_out;
    for (int64_t c0 = 0; c0 < n; c0 += I.max_tok) {
        const int64_t nt = std::min(I.max_tok, n - c0), P = pos0 + c0;
        LB_CUDA_CHECK(cudaMemcpyAsync(I.tok, tokens + c0, size_t(nt) * sizeof(int32_t), cudaMemcpyHostToDevice, I.st));
        dequant_rows(I.tok_embd, I.tok, nt, I.x, I.st);
        for (int64_t l = 0; l < hp.n_layer; ++l) I.layer(l, nt, P);
        const int64_t r0 = std::max(c0, first), r1 = c0 + nt;
        if (r0 < r1) {
            const int64_t m = r1 - r0;
            I.rmsnorm_q(I.x + (r0 - c0) * d, I.output_norm, m, I.xn);
            gemv(I.output, I.act(I.xn, d), m, I.logits, hp.n_vocab, false, I.st);
            LB_CUDA_CHECK(cudaMemcpyAsync(logits + (r0 - first) * hp.n_vocab, I.logits,
                                          size_t(m * hp.n_vocab) * sizeof(float), cudaMemcpyDeviceToHost, I.st));
        }
    }
    LB_CUDA_CHECK(cudaStreamSynchronize(I.st));
}

}  // namespace lowbit::cuda
