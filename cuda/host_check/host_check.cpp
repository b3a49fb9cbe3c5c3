// Host emulation of cuda/formats.cuh: every unit decoder against the CPU formats' scalar
// dequantizer, and the int8-activation dot (sc/of/sums algebra of gemv_q_kernel) against
// float64.  Costs no GPU time:
//   (target cuda_host_check with -DLOWBIT_CUDA=ON), or in a CPU-only checkout:
//   g++ -std=c++17 -O2 -I cuda/host_check -I cpp/src cuda/host_check/host_check.cpp \
//       build/liblowbit_core.a -lpthread -o /tmp/host_check && /tmp/host_check
#define __device__
#define __host__
#define __forceinline__ inline
#include "../formats.cuh"

#include <cmath>
#include <cstring>
#include <cstdio>
#include <random>
#include <vector>

#include "formats/registry.h"

using namespace lowbit;
using namespace lowbit::cuda;

static int dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += int(int8_t(a >> (8 * i))) * int(int8_t(b >> (8 * i)));
    return c;
}

template <class F>
int check(Type t, const char* name) {
    const TypeTraits& tr = type_traits(t);
    const int64_t cols = 1024, rows = 16;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> w(rows * cols), ref(rows * cols), x(cols);
    for (auto& v : w) v = nd(rng);
    for (auto& v : x) v = nd(rng);
    const size_t rb = row_bytes(t, cols);
    // rows padded to 16 bytes as on the device
    const size_t pitch = (rb + 15) / 16 * 16;
    std::vector<uint8_t> raw(pitch * rows + 16);
    uint8_t* base = raw.data() + (16 - reinterpret_cast<uintptr_t>(raw.data()) % 16) % 16;
    for (int64_t r = 0; r < rows; ++r) {
        tr.from_float(w.data() + r * cols, base + r * pitch, cols);
        tr.to_float(base + r * pitch, ref.data() + r * cols, cols);
    }
    // int8 activations as quantize_q8_kernel makes them
    std::vector<int8_t> q(cols);
    std::vector<float> sd(cols / 32), ss(cols / 32), slo(cols / 32), shi(cols / 32);
    for (int64_t b = 0; b < cols / 32; ++b) {
        float amax = 0;
        for (int l = 0; l < 32; ++l) amax = std::fmax(amax, std::fabs(x[b * 32 + l]));
        const float d = amax / 127.f, id = amax != 0 ? 127.f / amax : 0.f;
        int sa = 0, sl = 0;
        for (int l = 0; l < 32; ++l) {
            q[b * 32 + l] = int8_t(std::nearbyint(x[b * 32 + l] * id));
            sa += q[b * 32 + l];
            if (l < 16) sl += q[b * 32 + l];
        }
        sd[b] = d; ss[b] = d * sa; slo[b] = d * sl; shi[b] = d * (sa - sl);
    }
    double maxerr = 0, num = 0, den = 0;
    const int UNITS = F::QK / 32;
    for (int64_t r = 0; r < rows; ++r) {
        double acc = 0, exact = 0;
        for (int64_t u = 0; u < cols / 32; ++u) {
            Unit un;
            F::unit(base + r * pitch + (u / UNITS) * F::BYTES, int(u % UNITS), un);
            for (int l = 0; l < 32; ++l) {
                const double e = std::fabs(double(unit_value(un, l)) - ref[r * cols + u * 32 + l]);
                maxerr = std::max(maxerr, e / (1e-6 + std::fabs(ref[r * cols + u * 32 + l])));
                exact += double(ref[r * cols + u * 32 + l]) * double(q[u * 32 + l]) * sd[u];
            }
            int xw[8];
            std::memcpy(xw, q.data() + u * 32, 32);
            int lo = 0, hi = 0;
            for (int k = 0; k < 4; ++k) lo = dp4a(un.w[k], xw[k], lo);
            for (int k = 4; k < 8; ++k) hi = dp4a(un.w[k], xw[k], hi);
            acc += sd[u] * (un.sc[0] * float(lo) + un.sc[1] * float(hi)) + un.of[0] * slo[u] + un.of[1] * shi[u];
        }
        num += (acc - exact) * (acc - exact);
        den += exact * exact;
    }
    const double dot_err = std::sqrt(num / den);
    // the planar row layout (formats.cuh) must decode to exactly the same units
    long planar_diffs = 0;
    if constexpr (F::PNV > 0) {
        const int nb = int(cols / 32);
        std::vector<uint8_t> praw(pitch * rows + 16);
        uint8_t* pbase = praw.data() + (16 - reinterpret_cast<uintptr_t>(praw.data()) % 16) % 16;
        for (int64_t r = 0; r < rows; ++r)
            for (int i = 0; i < int(rb); ++i)
                pbase[r * pitch + i] = base[r * pitch + planar_source(i, nb, F::PH, F::PNV)];
        for (int64_t r = 0; r < rows; ++r)
            for (int u = 0; u < nb; ++u) {
                Unit a, b;
                F::unit(base + r * pitch + size_t(u) * F::BYTES, 0, a);
                row_unit<F>(pbase + r * pitch, nb, u, true, b);
                planar_diffs += std::memcmp(&a, &b, sizeof(Unit)) != 0;
            }
    }
    const bool ok = maxerr < 1e-5 && dot_err < 1e-5 && planar_diffs == 0;
    std::printf("%-7s dequant max rel err %.2e   dot rel err %.2e   %s%s\n", name, maxerr, dot_err,
                F::PNV > 0 ? (planar_diffs ? "planar DIFFERS  " : "planar same  ") : "", ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

int main() {
    int bad = 0;
    bad += check<FQ4_0>(Type::Q4_0, "Q4_0");
    bad += check<FQ4_1>(Type::Q4_1, "Q4_1");
    bad += check<FQ5_0>(Type::Q5_0, "Q5_0");
    bad += check<FQ5_1>(Type::Q5_1, "Q5_1");
    bad += check<FQ8_0>(Type::Q8_0, "Q8_0");
    bad += check<FIQ4_NL>(Type::IQ4_NL, "IQ4_NL");
    bad += check<FQ2_K>(Type::Q2_K, "Q2_K");
    bad += check<FQ3_K>(Type::Q3_K, "Q3_K");
    bad += check<FQ4_K>(Type::Q4_K, "Q4_K");
    bad += check<FQ5_K>(Type::Q5_K, "Q5_K");
    bad += check<FQ6_K>(Type::Q6_K, "Q6_K");
    std::printf(bad ? "host_check: FAILED\n" : "host_check: all ok\n");
    return bad ? 1 : 0;
}
