// bench_gemv: checks every GPU matrix-vector kernel against the CPU formats' scalar
// dequantizer (float64 reference), then times decode (1 token) on the Llama-3-8B shapes
// and reports achieved GB/s next to the device-to-device copy bandwidth of the same run.
//
//   bench_gemv [--check-only] [--types Q4_0,Q8_0,...] [--reps N] [--pdl]
//
// --pdl: the timed launches are programmatic dependents of each other, as in the decode graph.
//
// Exit status 1 if any check fails.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "common.cuh"
#include "formats/registry.h"
#include "gemv.h"

using namespace lowbit;
using namespace lowbit::cuda;

namespace {

__global__ void fill_random_kernel(uint32_t* p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint32_t h = uint32_t(i) * 0x9E3779B1u ^ seed;
        h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
        p[i] = h;
    }
}
void fill_random(void* p, size_t bytes, uint32_t seed) {
    fill_random_kernel<<<1024, 256>>>(static_cast<uint32_t*>(p), bytes / 4, seed);
    LB_CUDA_LAUNCHED();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Check {
    double err_used, err_exact;
    long nonfinite;
};

// One correctness case: random weights quantized by the CPU reference quantizer.
Check check_case(Type t, int64_t rows, int64_t cols, int64_t ntok, std::mt19937& rng, int path = 0) {
    const TypeTraits& tr = type_traits(t);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(size_t(rows * cols)), x(size_t(ntok * cols));
    for (auto& v : w) v = nd(rng);
    for (auto& v : x) v = nd(rng);
    const size_t rb = row_bytes(t, cols);
    std::vector<uint8_t> raw(rb * size_t(rows));
    std::vector<float> wd(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
        tr.from_float(w.data() + r * cols, raw.data() + size_t(r) * rb, cols);
        tr.to_float(raw.data() + size_t(r) * rb, wd.data() + r * cols, cols);
    }
    std::vector<float> y(size_t(ntok * rows)), xu(size_t(ntok * cols));
    matmul_host(t, raw.data(), rows, cols, x.data(), ntok, y.data(), xu.data(), path);
    double nu = 0, du = 0, ne = 0, de = 0;
    long bad = 0;
    for (int64_t k = 0; k < ntok; ++k) {
        for (int64_t r = 0; r < rows; ++r) {
            double su = 0, se = 0;
            const float* wr = wd.data() + r * cols;
            for (int64_t c = 0; c < cols; ++c) {
                su += double(wr[c]) * double(xu[size_t(k * cols + c)]);
                se += double(wr[c]) * double(x[size_t(k * cols + c)]);
            }
            const double g = y[size_t(k * rows + r)];
            if (!std::isfinite(g)) ++bad;
            nu += (g - su) * (g - su); du += su * su;
            ne += (g - se) * (g - se); de += se * se;
        }
    }
    return {std::sqrt(nu / du), std::sqrt(ne / de), bad};
}

}  // namespace

int main(int argc, char** argv) {
    bool check_only = false, prefill_only = false, pdl = false;
    int reps = 20;
    std::vector<std::string> types = {"Q4_0", "Q4_1", "Q8_0", "F16", "Q4_K", "Q6_K", "Q5_K",
                                      "Q2_K", "Q3_K", "Q5_0", "Q5_1", "IQ4_NL", "BF16", "F32"};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--check-only") check_only = true;
        else if (a == "--prefill-only") prefill_only = true;
        else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
        else if (a == "--pdl") pdl = true;
        else if (a == "--types" && i + 1 < argc) {
            types.clear();
            std::string s = argv[++i];
            size_t p = 0;
            while (p <= s.size()) {
                const size_t q = s.find(',', p);
                types.push_back(s.substr(p, q == std::string::npos ? std::string::npos : q - p));
                if (q == std::string::npos) break;
                p = q + 1;
            }
        } else {
            std::fprintf(stderr, "usage: bench_gemv [--check-only | --prefill-only] [--types A,B] [--reps N] [--pdl]\n");
            return 2;
        }
    }
    if (!available()) {
        std::printf("no CUDA device\n");
        return 2;
    }
    cudaDeviceProp prop{};
    LB_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs, L2 %.0f MB, cc %d.%d\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize / 1e6, prop.major, prop.minor);

    int failures = 0;
    std::mt19937 rng(20261125);
    if (!prefill_only) {
    // ---- correctness ------------------------------------------------------------------
    // bounds: |y - W.x_used| / |W.x_used| (the kernel's own arithmetic, fp32 sums) and
    // |y - W.x| / |W.x| (adds the int8 activation rounding for block formats)
    const double kBoundUsed = 1e-5, kBoundExactQ8 = 2e-2, kBoundExactF = 1e-5;
    std::printf("\n%-7s %-18s %12s %12s %9s  %s\n", "type", "rows x cols x tok", "err_vs_used", "err_vs_x",
                "nonfinite", "result");
    for (const auto& name : types) {
        Type t;
        if (!type_by_name(name.c_str(), &t)) {
            std::printf("%-7s unknown type\n", name.c_str());
            ++failures;
            continue;
        }
        const bool q8 = gemv_wants_q8(t);
        const bool kq = type_traits(t).block_size == 256;
        struct Shape { int64_t rows, cols, ntok; };
        std::vector<Shape> shapes = {{256, 4096, 1}, {130, 1536, 5}, {67, 2048, 9}};
        if (!kq) shapes.push_back({70, 576, 3});      // SmolLM2's width (not a multiple of 256)
        if (q8) shapes.push_back({7000, 512, 1});     // more row blocks than fit on the device at once
        if (!q8) shapes.push_back({33, 100, 2});      // float rows with a scalar tail
        for (const auto& s : shapes) {
            const Check c = check_case(t, s.rows, s.cols, s.ntok, rng);
            const bool ok = c.nonfinite == 0 && c.err_used < kBoundUsed &&
                            c.err_exact < (q8 ? kBoundExactQ8 : kBoundExactF);
            failures += !ok;
            char shape[64];
            std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)s.rows, (long long)s.cols,
                          (long long)s.ntok);
            std::printf("%-7s %-18s %12.3e %12.3e %9ld  %s\n", name.c_str(), shape, c.err_used, c.err_exact,
                        c.nonfinite, ok ? "ok" : "FAIL");
        }
    }
    std::printf("checks: %s (bounds: err_vs_used < %.0e; err_vs_x < %.0e int8 act, < %.0e float act)\n",
                failures ? "FAILED" : "all passed", kBoundUsed, kBoundExactQ8, kBoundExactF);

    // ---- tensor-core path (F16 operands): weights rounded to F16, so looser bounds ------
    const double kBoundUsedMma = 2e-3, kBoundExactMma = 3e-3;
    int mma_failures = 0;
    std::printf("\ntensor-core path\n%-7s %-18s %12s %12s %9s  %s\n", "type", "rows x cols x tok", "err_vs_used",
                "err_vs_x", "nonfinite", "result");
    for (const auto& name : types) {
        Type t;
        if (!type_by_name(name.c_str(), &t) || !mma_supported(t, 1024)) continue;
        const bool kq = type_traits(t).block_size == 256;
        struct Shape { int64_t rows, cols, ntok; };
        const std::vector<Shape> shapes = {{300, kq ? 1024 : 576, 200}, {97, 2048, 40}, {257, 4096, 130}};
        for (const auto& sh : shapes) {
            const Check c = check_case(t, sh.rows, sh.cols, sh.ntok, rng, 1);
            const bool ok = c.nonfinite == 0 && c.err_used < kBoundUsedMma && c.err_exact < kBoundExactMma;
            mma_failures += !ok;
            char shape[64];
            std::snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)sh.rows, (long long)sh.cols,
                          (long long)sh.ntok);
            std::printf("%-7s %-18s %12.3e %12.3e %9ld  %s\n", name.c_str(), shape, c.err_used, c.err_exact,
                        c.nonfinite, ok ? "ok" : "FAIL");
        }
    }
    std::printf("tensor-core checks: %s (bounds: err_vs_used < %.0e, err_vs_x < %.0e)\n",
                mma_failures ? "FAILED" : "all passed", kBoundUsedMma, kBoundExactMma);
    failures += mma_failures;
    if (check_only) return failures ? 1 : 0;
    }

    cudaStream_t st;
    LB_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    LB_CUDA_CHECK(cudaEventCreate(&e0));
    LB_CUDA_CHECK(cudaEventCreate(&e1));
    struct Shape { int64_t rows, cols; const char* what; };
    if (!prefill_only) {
    // ---- copy bandwidth ------------------------------------------------------------------
    double copy_gbs = 0;
    {
        const size_t bytes = size_t(1) << 30;
        void *a, *b;
        LB_CUDA_CHECK(cudaMalloc(&a, bytes));
        LB_CUDA_CHECK(cudaMalloc(&b, bytes));
        fill_random(a, bytes, 1);
        LB_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<double> ts;
        for (int i = 0; i < 3 + reps / 2; ++i) {
            LB_CUDA_CHECK(cudaEventRecord(e0, st));
            LB_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st));
            LB_CUDA_CHECK(cudaEventRecord(e1, st));
            LB_CUDA_CHECK(cudaEventSynchronize(e1));
            float ms;
            LB_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
            if (i >= 3) ts.push_back(ms);
        }
        copy_gbs = 2.0 * bytes / (median(ts) * 1e-3) / 1e9;
        std::printf("\ncopy bandwidth (1 GiB device-to-device, read+write): %.0f GB/s\n", copy_gbs);
        cudaFree(a);
        cudaFree(b);
    }

    // ---- decode GEMV timing ------------------------------------------------------------------
    const Shape shapes[] = {{4096, 4096, "q/o"}, {14336, 4096, "gate/up"}, {4096, 14336, "down"},
                            {128256, 4096, "output"}};
    std::printf("\ndecode GEMV, 1 token, graph of 20 launches over rotating weight copies%s, median of %d\n",
                pdl ? " (programmatic dependents)" : "", reps);
    std::printf("%-7s %-15s %-8s %10s %10s %9s %8s\n", "type", "rows x cols", "role", "MB", "us", "GB/s", "%copy");
    const size_t l2 = size_t(prop.l2CacheSize);
    for (const auto& name : types) {
        Type t;
        if (!type_by_name(name.c_str(), &t)) continue;
        const bool q8 = gemv_wants_q8(t);
        for (const auto& s : shapes) {
            const size_t rb = type_row_bytes(t, s.cols);
            const size_t wbytes = rb * size_t(s.rows);
            const int nbuf = int(std::max<size_t>(1, (4 * l2 + wbytes - 1) / wbytes));
            std::vector<DevMatrix> ws(static_cast<size_t>(nbuf));
            for (int i = 0; i < nbuf; ++i) {
                ws[size_t(i)] = upload_matrix(t, s.rows, s.cols, nullptr, rb);
                fill_random(ws[size_t(i)].data, ws[size_t(i)].pitch * size_t(s.rows), 100 + i);
            }
            LB_CUDA_CHECK(cudaDeviceSynchronize());   // fills ran on the legacy stream
            float *x, *y;
            int8_t* xq;
            Q8Sums* xs;
            LB_CUDA_CHECK(cudaMalloc(&x, size_t(s.cols) * 4));
            LB_CUDA_CHECK(cudaMalloc(&y, size_t(s.rows) * 4));
            LB_CUDA_CHECK(cudaMalloc(&xq, size_t(s.cols)));
            LB_CUDA_CHECK(cudaMalloc(&xs, size_t(s.cols / 32) * sizeof(Q8Sums)));
            {
                std::vector<float> hx(size_t(s.cols));
                std::normal_distribution<float> nd(0.0f, 1.0f);
                for (auto& v : hx) v = nd(rng);
                LB_CUDA_CHECK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
            }
            DevAct a;
            a.f32 = x;
            a.ld_f32 = s.cols;
            if (q8) {
                quantize_q8(x, s.cols, 1, s.cols, xq, xs, st);
                a.q = xq;
                a.s = xs;
            }
            LB_CUDA_CHECK(cudaStreamSynchronize(st));
            // warm-up, then a graph of kLaunches launches
            const int kLaunches = 20;
            for (int i = 0; i < nbuf; ++i) gemv(ws[size_t(i)], a, 1, y, s.rows, false, st);
            cudaGraph_t graph;
            cudaGraphExec_t exec;
            LB_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < kLaunches; ++i) gemv(ws[size_t(i % nbuf)], a, 1, y, s.rows, false, st, pdl);
            LB_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
            LB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
            LB_CUDA_CHECK(cudaGraphLaunch(exec, st));
            std::vector<double> ts;
            for (int r = 0; r < reps; ++r) {
                LB_CUDA_CHECK(cudaEventRecord(e0, st));
                LB_CUDA_CHECK(cudaGraphLaunch(exec, st));
                LB_CUDA_CHECK(cudaEventRecord(e1, st));
                LB_CUDA_CHECK(cudaEventSynchronize(e1));
                float ms;
                LB_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
                ts.push_back(ms * 1e3 / kLaunches);
            }
            const double us = median(ts);
            const double act_bytes = q8 ? double(s.cols) * (1.0 + 16.0 / 32.0) : double(s.cols) * 4.0;
            const double bytes = double(wbytes) + act_bytes + double(s.rows) * 4.0;
            const double gbs = bytes / (us * 1e-6) / 1e9;
            char shape[32];
            std::snprintf(shape, sizeof shape, "%lldx%lld", (long long)s.rows, (long long)s.cols);
            std::printf("%-7s %-15s %-8s %10.1f %10.2f %9.0f %7.0f%%\n", name.c_str(), shape, s.what, wbytes / 1e6, us,
                        gbs, 100.0 * gbs / copy_gbs);
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
            for (auto& w : ws) free_matrix(w);
            cudaFree(x); cudaFree(y); cudaFree(xq); cudaFree(xs);
        }
    }
    LB_CUDA_CHECK(cudaDeviceSynchronize());

    }
    // ---- prefill on the tensor cores: 512 tokens ---------------------------------------------
    // one mma() call = activations to F16 + (block formats) dequantize to F16 + the product
    {
        const int64_t ntok = 512;
        const Shape pshapes[] = {{4096, 4096, "q/o"}, {6144, 4096, "qkv"}, {28672, 4096, "gate+up"},
                                 {4096, 14336, "down"}};
        const char* tile = std::getenv("LOWBIT_CUDA_MMA_TILE");
        std::printf("\nprefill, %lld tokens, tensor cores (F16 x F16 -> fp32), tiles %s, median of %d\n",
                    (long long)ntok, tile ? tile : "default", reps);
        std::printf("%-7s %-15s %-8s %10s %10s %9s\n", "type", "rows x cols", "role", "us", "TFLOP/s", "tok/s*");
        MmaScratch ws;
        for (const auto& name : types) {
            Type t;
            if (!type_by_name(name.c_str(), &t) || !mma_supported(t, 4096)) continue;
            for (const auto& s : pshapes) {
                const size_t rb = type_row_bytes(t, s.cols);
                DevMatrix w = upload_matrix(t, s.rows, s.cols, nullptr, rb);
                fill_random(w.data, w.pitch * size_t(s.rows), 7);
                if (t == Type::F16) {   // random bits make NaNs and huge values: keep the exponents tame
                    std::vector<uint16_t> hw(size_t(s.rows) * w.pitch / 2);
                    std::mt19937 r2(3);
                    for (auto& v : hw) v = uint16_t(0x3000 | (r2() & 0x87FF));
                    LB_CUDA_CHECK(cudaMemcpy(w.data, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice));
                }
                float *x, *y;
                LB_CUDA_CHECK(cudaMalloc(&x, size_t(ntok * s.cols) * 4));
                LB_CUDA_CHECK(cudaMalloc(&y, size_t(ntok * s.rows) * 4));
                {
                    std::vector<float> hx(size_t(ntok * s.cols));
                    std::normal_distribution<float> nd(0.0f, 1.0f);
                    for (auto& v : hx) v = nd(rng);
                    LB_CUDA_CHECK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
                }
                LB_CUDA_CHECK(cudaDeviceSynchronize());
                mma(w, x, s.cols, ntok, y, s.rows, false, ws, st);   // warm-up (and scratch)
                std::vector<double> ts;
                for (int r = 0; r < std::max(3, reps / 2); ++r) {
                    LB_CUDA_CHECK(cudaEventRecord(e0, st));
                    mma(w, x, s.cols, ntok, y, s.rows, false, ws, st);
                    LB_CUDA_CHECK(cudaEventRecord(e1, st));
                    LB_CUDA_CHECK(cudaEventSynchronize(e1));
                    float ms;
                    LB_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
                    ts.push_back(ms * 1e3);
                }
                const double us = median(ts);
                const double tflops = 2.0 * double(s.rows) * double(s.cols) * double(ntok) / (us * 1e-6) / 1e12;
                char shape[32];
                std::snprintf(shape, sizeof shape, "%lldx%lld", (long long)s.rows, (long long)s.cols);
                std::printf("%-7s %-15s %-8s %10.1f %10.1f %9.0f\n", name.c_str(), shape, s.what, us, tflops,
                            ntok / (us * 1e-6));
                free_matrix(w);
                cudaFree(x);
                cudaFree(y);
            }
        }
        std::printf("(* tokens per second of this one product)\n");
    }
    LB_CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("\nchecks: %s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
