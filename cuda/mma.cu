// Tensor-core matrix products for prefill (many tokens at once), see gemv.h and NOTES.md.
//
//   y[t][r] (+)= sum_k W[r][k] * x[t][k]      (r < rows, t < ntok)
//
// Both operands go to the tensor cores as F16 with fp32 accumulation
// (mma.sync.m16n8k16.row.col.f32.f16.f16.f32):
//  - weights: F16 matrices are used as stored; every block format is first dequantized
//    to an F16 scratch matrix (the formats.cuh unit decoders: value = sc * q + of, rounded
//    once to F16), in slabs of rows when the matrix is large;
//  - activations: the fp32 activations rounded to F16 (saturated at +-65504).
// The product kernel is a classic multistage one: a block of 8 warps owns a BM x 128
// (rows x tokens) tile, streams 32-wide K slices of both operands through shared memory
// with 16-byte cp.async copies (4 stages; rows padded to 80 bytes so ldmatrix is free of
// bank conflicts), and each of its WGM x WGN warps computes a (BM/WGM) x (128/WGN)
// sub-tile: 8 warps of 64x32 for the tallest products, else 4 warps of 64x64 (BM 128) or
// 32x64 (BM 64), chosen by the number of tiles (launch_gemm); LOWBIT_CUDA_MMA_TILE=classic
// forces the 8-warp tiles (64x32, or 32x32 with BM 64), LOWBIT_CUDA_MMA_TILE=wide the 4-warp ones.
//
// When the toolkit has cuBLAS (LOWBIT_CUBLAS, see CMakeLists.txt) the product itself is
// cublasGemmEx on the same F16 operands with fp32 sums (wgmma on sm_90, which mma.sync
// cannot reach: NOTES.md); LOWBIT_CUDA_CUBLAS=0 keeps the kernel above.
#include <cuda_fp16.h>
#if LOWBIT_CUBLAS
#include <cublas_v2.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common.cuh"
#include "formats.cuh"
#include "gemv.h"

namespace lowbit::cuda {

namespace {

constexpr int kBN = 128;        // tokens per block tile
constexpr int kBK = 32;         // K per stage
constexpr int kStages = 4;
constexpr int kLds = kBK + 8;   // shared-memory row stride in halves (80 bytes)
constexpr size_t kScratchBytes = size_t(256) << 20;   // dequantized-weight slab

__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    const int n = valid ? 16 : 0;   // 0: fill the 16 bytes with zeros, read nothing
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __half* p) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A: [M][lda] F16 (weights, K contiguous); B: [N][ldb] F16 (activations, K contiguous);
// y[n * ldy + m] (+)= sum_k A[m][k] B[n][k].  K % 32 == 0; A, B rows 16-byte aligned.
// grid: (ceil(N / 128), ceil(M / BM)); consecutive blocks share a weight tile.
template <int BM, int WGM, int WGN>
__global__ void __launch_bounds__(32 * WGM * WGN, 2)
mma_f16_kernel(const __half* __restrict__ A, int64_t lda, int M, const __half* __restrict__ B, int64_t ldb, int N,
               int K, float* __restrict__ y, int64_t ldy, int accumulate) {
    constexpr int BN = kBN, BK = kBK, S = kStages, LDS = kLds;
    constexpr int kThreads = 32 * WGM * WGN;
    constexpr int WM = BM / WGM, WN = BN / WGN, MT = WM / 16, NT = WN / 8;
    static_assert(NT % 2 == 0 && MT >= 1 && WM % 16 == 0, "tile");
    static_assert((BM * 4) % kThreads == 0 && (BN * 4) % kThreads == 0, "loads");
    extern __shared__ __align__(16) uint8_t smem_raw[];
    __half* const sA = reinterpret_cast<__half*>(smem_raw);   // [S][BM][LDS]
    __half* const sB = sA + S * BM * LDS;                      // [S][BN][LDS]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp % WGM, wn = warp / WGM;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
    const int KT = K / BK;

    auto load = [&](int kt, int s) {
        const int k0 = kt * BK;
        __half* a = sA + s * BM * LDS;
        __half* b = sB + s * BN * LDS;
#pragma unroll
        for (int i = 0; i < BM * 4 / kThreads; ++i) {
            const int c = tid + i * kThreads;
            const int r = c >> 2, col = (c & 3) * 8;
            const bool ok = m0 + r < M;
            cp_async16_zfill(a + r * LDS + col, ok ? A + int64_t(m0 + r) * lda + k0 + col : A, ok);
        }
#pragma unroll
        for (int i = 0; i < BN * 4 / kThreads; ++i) {
            const int c = tid + i * kThreads;
            const int r = c >> 2, col = (c & 3) * 8;
            const bool ok = n0 + r < N;
            cp_async16_zfill(b + r * LDS + col, ok ? B + int64_t(n0 + r) * ldb + k0 + col : B, ok);
        }
    };

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
        if (s < KT) load(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        cp_async_wait<S - 2>();   // stage kt has landed (this thread's copies)
        __syncthreads();          // ... everyone's; and everyone is done with stage kt-1
        {
            const int nk = kt + S - 1;
            if (nk < KT) load(nk, nk % S);   // refills the slot of stage kt-1
            cp_async_commit();
        }
        const __half* a = sA + (kt % S) * BM * LDS;
        const __half* b = sB + (kt % S) * BN * LDS;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MT][4], bf[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
                ldmatrix_x4(af[mt], a + (wm * WM + mt * 16 + (lane & 15)) * LDS + kk + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                uint32_t r[4];
                ldmatrix_x4(r, b + (wn * WN + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LDS + kk +
                                   ((lane >> 3) & 1) * 8);
                bf[2 * np][0] = r[0];
                bf[2 * np][1] = r[1];
                bf[2 * np + 1][0] = r[2];
                bf[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) mma_16816(acc[mt][nt], af[mt], bf[nt]);
        }
    }
    cp_async_wait<0>();

    const int g = lane >> 2, q4 = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int r = m0 + wm * WM + mt * 16 + g;
            const int t = n0 + wn * WN + nt * 8 + 2 * q4;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int rr = r + (e >> 1) * 8, tt = t + (e & 1);
                if (rr < M && tt < N) {
                    float* o = y + int64_t(tt) * ldy + rr;
                    *o = accumulate ? *o + acc[mt][nt][e] : acc[mt][nt][e];
                }
            }
        }
    }
}

__device__ __forceinline__ uint32_t pack_half2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ float sat_f16(float v) { return fminf(fmaxf(v, -65504.0f), 65504.0f); }

// x [ntok][ldx] fp32 -> out [ntok][cols] F16, saturated; vec: x, ldx allow float4 reads.
__global__ void to_f16_kernel(const float* __restrict__ x, int64_t ldx, int64_t ntok, int64_t cols, int vec,
                              __half* __restrict__ out) {
    const int64_t n8 = cols / 8, total = ntok * n8;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = i / n8, c = (i % n8) * 8;
        const float* src = x + t * ldx + c;
        float f[8];
        if (vec) {
            const float4 a = *reinterpret_cast<const float4*>(src), b = *reinterpret_cast<const float4*>(src + 4);
            f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
        } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) f[e] = src[e];
        }
        uint4 o;
        o.x = pack_half2(sat_f16(f[0]), sat_f16(f[1]));
        o.y = pack_half2(sat_f16(f[2]), sat_f16(f[3]));
        o.z = pack_half2(sat_f16(f[4]), sat_f16(f[5]));
        o.w = pack_half2(sat_f16(f[6]), sat_f16(f[7]));
        *reinterpret_cast<uint4*>(out + t * cols + c) = o;
    }
}

// Rows of a block-format matrix -> F16 [nrows][ldo].  Four threads per 32-value unit,
// each writing 8 values (16 bytes), so that a warp's stores cover 512 contiguous bytes.
template <class F>
__global__ void dequant_f16_kernel(const uint8_t* __restrict__ W, size_t pitch, int units_per_row, bool planar,
                                   int64_t total, __half* __restrict__ out, int64_t ldo) {
    constexpr int UNITS = F::QK / 32;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total * 4;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t unit = i >> 2;
        const int part = int(i & 3);
        const int64_t r = unit / units_per_row;
        const int u = int(unit % units_per_row);
        Unit un;
        row_unit<F>(W + size_t(r) * pitch, units_per_row / UNITS, u, planar, un);
        // this thread's 8 values: words 2*part, 2*part + 1 (compile-time indices only)
        uint32_t wa, wb;
        switch (part) {
            case 0: wa = uint32_t(un.w[0]); wb = uint32_t(un.w[1]); break;
            case 1: wa = uint32_t(un.w[2]); wb = uint32_t(un.w[3]); break;
            case 2: wa = uint32_t(un.w[4]); wb = uint32_t(un.w[5]); break;
            default: wa = uint32_t(un.w[6]); wb = uint32_t(un.w[7]); break;
        }
        const float sc = part < 2 ? un.sc[0] : un.sc[1], of = part < 2 ? un.of[0] : un.of[1];
        auto val = [&](uint32_t w, int b) { return sc * float(int8_t(uint8_t(w >> (8 * b)))) + of; };
        const uint4 o = make_uint4(pack_half2(val(wa, 0), val(wa, 1)), pack_half2(val(wa, 2), val(wa, 3)),
                                   pack_half2(val(wb, 0), val(wb, 1)), pack_half2(val(wb, 2), val(wb, 3)));
        *reinterpret_cast<uint4*>(out + r * ldo + int64_t(u) * 32 + part * 8) = o;
    }
}

int device_sms() {
    static int n = [] {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) !=
                                                      cudaSuccess)
            v = 1;
        return std::max(v, 1);
    }();
    return n;
}

template <int BM, int WGM, int WGN>
void launch_gemm_cfg(const __half* A, int64_t lda, int64_t M, const __half* B, int64_t ldb, int64_t N, int64_t K,
                     float* y, int64_t ldy, bool acc, cudaStream_t st) {
    constexpr size_t smem = size_t(kStages) * (BM + kBN) * kLds * sizeof(__half);
    static bool attr = [] {
        LB_CUDA_CHECK(cudaFuncSetAttribute(mma_f16_kernel<BM, WGM, WGN>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           int(smem)));
        return true;
    }();
    (void)attr;
    const dim3 grid(unsigned(ceil_div(N, kBN)), unsigned(ceil_div(M, BM)));
    mma_f16_kernel<BM, WGM, WGN><<<grid, 32 * WGM * WGN, smem, st>>>(A, lda, int(M), B, ldb, int(N), int(K), y, ldy,
                                                                     acc ? 1 : 0);
    LB_CUDA_LAUNCHED();
}

// LOWBIT_CUDA_MMA_TILE: 0 auto (default), 1 classic (8 warps), 2 wide (4 warps of 64x64)
int tile_mode() {
    static const int m = [] {
        const char* v = std::getenv("LOWBIT_CUDA_MMA_TILE");
        if (v && std::strcmp(v, "classic") == 0) return 1;
        if (v && std::strcmp(v, "wide") == 0) return 2;
        return 0;
    }();
    return m;
}

#if LOWBIT_CUBLAS
// One cuBLAS handle per host thread (a handle is not safe to share between threads).
struct CublasHandle {
    cublasHandle_t h = nullptr;
    CublasHandle() {
        if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: cublasCreate failed");
    }
    ~CublasHandle() {
        if (h) cublasDestroy(h);
    }
};
#endif

// y = A B^T on cuBLAS when built with it and not switched off; false: not done.
bool gemm_cublas(const __half* A, int64_t lda, int64_t M, const __half* B, int64_t ldb, int64_t N, int64_t K,
                 float* y, int64_t ldy, bool acc, cudaStream_t st) {
#if LOWBIT_CUBLAS
    static const bool on = [] {
        const char* v = std::getenv("LOWBIT_CUDA_CUBLAS");
        return !(v && std::strcmp(v, "0") == 0);
    }();
    if (!on) return false;
    thread_local CublasHandle handle;
    if (cublasSetStream(handle.h, st) != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: cublasSetStream failed");
    // row-major W [M][lda] is column-major K x M (op T); x [N][ldb] is K x N; y [N][ldy] is M x N
    const float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    const cublasStatus_t e = cublasGemmEx(handle.h, CUBLAS_OP_T, CUBLAS_OP_N, int(M), int(N), int(K), &alpha, A,
                                          CUDA_R_16F, int(lda), B, CUDA_R_16F, int(ldb), &beta, y, CUDA_R_32F, int(ldy),
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (e != CUBLAS_STATUS_SUCCESS) fail("cuBLAS: cublasGemmEx failed with status " + std::to_string(int(e)));
    return true;
#else
    (void)A; (void)lda; (void)M; (void)B; (void)ldb; (void)N; (void)K; (void)y; (void)ldy; (void)acc; (void)st;
    return false;
#endif
}

void launch_gemm(const __half* A, int64_t lda, int64_t M, const __half* B, int64_t ldb, int64_t N, int64_t K,
                 float* y, int64_t ldy, bool acc, cudaStream_t st) {
    if (gemm_cublas(A, lda, M, B, ldb, N, K, y, ldy, acc, st)) return;
    const int64_t tiles128 = ceil_div(M, 128) * ceil_div(N, kBN);
    if (tile_mode() == 2) {
        if (tiles128 >= int64_t(device_sms()))
            launch_gemm_cfg<128, 2, 2>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
        else
            launch_gemm_cfg<64, 2, 2>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
        return;
    }
    if (tile_mode() == 1) {   // 8 warps; 128-row tiles when they give two blocks per multiprocessor
        if (tiles128 >= 2 * int64_t(device_sms()))
            launch_gemm_cfg<128, 2, 4>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
        else
            launch_gemm_cfg<64, 2, 4>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
        return;
    }
    // Measured on the H100 (NOTES.md, 512 tokens): with two 128-row tiles or more per
    // multiprocessor the 8-warp tiles win (gate+up 604 vs 643 us), with one to two the
    // 4-warp 64x64 ones (qkv 166 vs 199 us); below one, 64-row tiles, both alike (~128 us).
    if (tiles128 >= 2 * int64_t(device_sms()))
        launch_gemm_cfg<128, 2, 4>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
    else if (tiles128 >= int64_t(device_sms()))
        launch_gemm_cfg<128, 2, 2>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
    else
        launch_gemm_cfg<64, 2, 2>(A, lda, M, B, ldb, N, K, y, ldy, acc, st);
}

template <class F>
void launch_dequant_f16(const uint8_t* W, size_t pitch, bool planar, int64_t rows, int64_t cols, __half* out,
                        cudaStream_t st) {
    const int upr = int(cols / 32);
    const int64_t total = rows * upr;
    const unsigned blocks = unsigned(std::min<int64_t>(ceil_div(total * 4, 256), int64_t(device_sms()) * 16));
    dequant_f16_kernel<F><<<blocks, 256, 0, st>>>(W, pitch, upr, planar, total, out, cols);
    LB_CUDA_LAUNCHED();
}

template <class G>
bool dispatch_block(Type t, G&& g) {
    switch (t) {
        case Type::Q4_0: g(FQ4_0{}); return true;
        case Type::Q4_1: g(FQ4_1{}); return true;
        case Type::Q5_0: g(FQ5_0{}); return true;
        case Type::Q5_1: g(FQ5_1{}); return true;
        case Type::Q8_0: g(FQ8_0{}); return true;
        case Type::IQ4_NL: g(FIQ4_NL{}); return true;
        case Type::Q2_K: g(FQ2_K{}); return true;
        case Type::Q3_K: g(FQ3_K{}); return true;
        case Type::Q4_K: g(FQ4_K{}); return true;
        case Type::Q5_K: g(FQ5_K{}); return true;
        case Type::Q6_K: g(FQ6_K{}); return true;
        default: return false;
    }
}

void grow(void*& p, size_t& cap, size_t bytes) {
    if (bytes <= cap) return;
    if (p) LB_CUDA_CHECK(cudaFree(p));
    p = nullptr;
    cap = 0;
    LB_CUDA_CHECK(cudaMalloc(&p, bytes));
    cap = bytes;
}

}  // namespace

MmaScratch::~MmaScratch() {
    if (wh) cudaFree(wh);
    if (xh) cudaFree(xh);
}

size_t MmaScratch::bytes() const { return wh_bytes + xh_bytes; }

bool mma_supported(Type t, int64_t cols) {
    if (cols < 32 || cols % 32 != 0) return false;
    return t == Type::F16 || (gemv_wants_q8(t) && gemv_supported(t));
}

int64_t mma_min_tokens(Type t) {
    // F16 weights are read once either way; block formats pay for the F16 scratch (write
    // + read 2 bytes per weight) against the 8-token GEMV tiles re-reading the blocks
    return t == Type::F16 ? 16 : 32;
}

void mma(const DevMatrix& w, const float* x, int64_t ldx, int64_t ntok, float* y, int64_t ldy, bool accumulate,
         MmaScratch& ws, cudaStream_t st) {
    if (ntok <= 0 || w.rows == 0) return;
    if (!mma_supported(w.type, w.cols)) fail(std::string("mma: no tensor-core path for ") + type_name(w.type));
    const int64_t K = w.cols;
    grow(ws.xh, ws.xh_bytes, size_t(ntok * K) * sizeof(__half));
    __half* xh = static_cast<__half*>(ws.xh);
    {
        const int vec = (ldx % 4 == 0) && (reinterpret_cast<uintptr_t>(x) % 16 == 0);
        const int64_t total = ntok * (K / 8);
        const unsigned blocks = unsigned(std::min<int64_t>(ceil_div(total, 256), int64_t(device_sms()) * 16));
        to_f16_kernel<<<blocks, 256, 0, st>>>(x, ldx, ntok, K, vec, xh);
        LB_CUDA_LAUNCHED();
    }
    if (w.type == Type::F16) {
        if (w.pitch % 16 != 0) fail("mma: F16 rows must be 16-byte aligned");
        launch_gemm(reinterpret_cast<const __half*>(w.data), int64_t(w.pitch / 2), w.rows, xh, K, ntok, K, y, ldy,
                    accumulate, st);
        return;
    }
    int64_t slab = std::max<int64_t>(128, int64_t(kScratchBytes / (size_t(K) * 2)) / 128 * 128);
    slab = std::min(slab, w.rows);
    grow(ws.wh, ws.wh_bytes, size_t(slab * K) * sizeof(__half));
    __half* wh = static_cast<__half*>(ws.wh);
    for (int64_t r0 = 0; r0 < w.rows; r0 += slab) {
        const int64_t rs = std::min(slab, w.rows - r0);
        dispatch_block(w.type, [&](auto f) {
            launch_dequant_f16<decltype(f)>(w.data + size_t(r0) * w.pitch, w.pitch, w.planar, rs, K, wh, st);
        });
        launch_gemm(wh, K, rs, xh, K, ntok, K, y + r0, ldy, accumulate, st);
    }
}

}  // namespace lowbit::cuda
