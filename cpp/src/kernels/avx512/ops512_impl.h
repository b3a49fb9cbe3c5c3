// Implementations of ops512.h.  Included by avx512_kernels.cpp only; internal linkage
// (see x86_common.h for why).
#pragma once

#include <math.h>   // ::expf for the few lanes outside the fast range (a libm call, not an inline)

#include "formats/blocks.h"
#include "kernels/avx2/x86_common.h"

namespace lowbit {
namespace {
namespace o512 {

// ---- expf ---------------------------------------------------------------------------------
// glibc's expf (sysdeps/ieee754/flt-32/e_expf.c, from ARM's optimized-routines): in double,
// x * 32/ln2 = k + r, exp(x) = 2^(k/32) * p(r) with a 32-entry table and a cubic, then one
// rounding to float.  Evaluated eight lanes at a time in double it gives libm's float result
// bit for bit: checked exhaustively against glibc 2.36's expf (both its FMA and plain
// builds) for every float with |x| < 88.  Lanes outside that range (overflow, underflow,
// inf, nan) call libm.
alignas(64) constexpr uint64_t kExp2Tab[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};

inline __m512d exp_core(__m512d xd) {
    const __m512d inv_ln2_n = _mm512_set1_pd(0x1.71547652b82fep+0 * 32);
    const __m512d shift = _mm512_set1_pd(0x1.8p+52);
    const __m512d c0 = _mm512_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m512d c1 = _mm512_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32);
    const __m512d c2 = _mm512_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    const __m512d z = _mm512_mul_pd(inv_ln2_n, xd);
    __m512d kd = _mm512_add_pd(z, shift);
    const __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    const __m512d r = _mm512_sub_pd(z, kd);
    const __m512i idx = _mm512_and_si512(ki, _mm512_set1_epi64(31));
    const __m512i lo = _mm512_permutex2var_epi64(_mm512_load_si512(kExp2Tab), idx, _mm512_load_si512(kExp2Tab + 8));
    const __m512i hi = _mm512_permutex2var_epi64(_mm512_load_si512(kExp2Tab + 16), idx, _mm512_load_si512(kExp2Tab + 24));
    __m512i t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(idx, _mm512_set1_epi64(16)), lo, hi);
    t = _mm512_add_epi64(t, _mm512_slli_epi64(ki, 47));
    const __m512d zz = _mm512_fmadd_pd(c0, r, c1);
    const __m512d r2 = _mm512_mul_pd(r, r);
    __m512d y = _mm512_fmadd_pd(c2, r, _mm512_set1_pd(1.0));
    y = _mm512_fmadd_pd(zz, r2, y);
    return _mm512_mul_pd(y, _mm512_castsi512_pd(t));
}

inline __m512 exp16(__m512 x) {
    const __m256 lo = _mm512_cvtpd_ps(exp_core(_mm512_cvtps_pd(_mm512_castps512_ps256(x))));
    const __m256 hi = _mm512_cvtpd_ps(exp_core(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)))));
    __m512 r = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
    // |x| >= 88 or nan: glibc's special cases
    const __m512i top = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 20), _mm512_set1_epi32(0x7ff));
    const __mmask16 special = _mm512_cmpge_epu32_mask(top, _mm512_set1_epi32(0x42b));
    if (special) {
        alignas(64) float xs[16], rs[16];
        _mm512_store_ps(xs, x);
        _mm512_store_ps(rs, r);
        for (int i = 0; i < 16; ++i)
            if ((special >> i) & 1) rs[i] = ::expf(xs[i]);
        r = _mm512_load_ps(rs);
    }
    return r;
}

inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

inline __m512 round_fp16(__m512 x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }

// ---- attention ------------------------------------------------------------------------------
// Both products (F16 query x F16 key, F16 probability x F16 value) multiply two F16 values:
// at most 22 significant bits and no underflow or overflow in float, so the product is
// exact and an FMA rounds exactly as the reference's multiply-then-add does.

// Scores of G heads against NC chunks of 16 positions starting at chunk c0.
template <int G, int NC>
inline void qk_block(int64_t hd, const float* qh, int64_t hd_stride, const uint16_t* kt, int64_t kt_stride, int64_t c0,
                     float scale, float* scores, int64_t s_stride) {
    __m512 acc[G][NC];
    for (int h = 0; h < G; ++h)
        for (int c = 0; c < NC; ++c) acc[h][c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < hd; ++i) {
        __m512 k[NC];
        for (int c = 0; c < NC; ++c)
            k[c] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kt + i * kt_stride + 16 * (c0 + c))));
        for (int h = 0; h < G; ++h) {
            const __m512 qb = _mm512_set1_ps(qh[h * hd_stride + i]);
            for (int c = 0; c < NC; ++c) acc[h][c] = _mm512_fmadd_ps(qb, k[c], acc[h][c]);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    for (int h = 0; h < G; ++h)
        for (int c = 0; c < NC; ++c) _mm512_storeu_ps(scores + h * s_stride + 16 * (c0 + c), _mm512_mul_ps(acc[h][c], sc));
}

template <int G>
inline void qk_all(int64_t hd, const float* qh, const uint16_t* kt, int64_t kt_stride, int64_t nch, float scale,
                   float* scores, int64_t s_stride) {
    int64_t c = 0;
    for (; c + 4 <= nch; c += 4) qk_block<G, 4>(hd, qh, hd, kt, kt_stride, c, scale, scores, s_stride);
    for (; c < nch; ++c) qk_block<G, 1>(hd, qh, hd, kt, kt_stride, c, scale, scores, s_stride);
}

// softmax over n entries of g rows (s_stride apart), then each probability rounded to F16
inline void softmax_rows_f16(int64_t g, float* s, int64_t s_stride, int64_t n) {
    double sum[8];
    for (int64_t h = 0; h < g; ++h) {
        float* x = s + h * s_stride;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < n; j += 16)
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - j), x + j));
        const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 k = tail_mask(n - j);
            _mm512_mask_storeu_ps(x + j, k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), m)));
        }
        sum[h] = 0;
    }
    // the reference adds in double, in order: g independent chains
    for (int64_t j = 0; j < n; ++j)
        for (int64_t h = 0; h < g; ++h) sum[h] += double(s[h * s_stride + j]);
    for (int64_t h = 0; h < g; ++h) {
        float* x = s + h * s_stride;
        const __m512 inv = _mm512_set1_ps(float(1.0 / sum[h]));
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 k = tail_mask(n - j);
            _mm512_mask_storeu_ps(x + j, k, round_fp16(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + j), inv)));
        }
    }
}

// out[h][cols] = sum_j p[h][j] * v_j[cols] for a block of 16 * NB columns
template <int G, int NB>
inline void pv_block(int64_t n, const float* p, int64_t p_stride, const uint16_t* v, int64_t v_stride, int64_t col0,
                     float* out, int64_t out_stride) {
    __m512 acc[G][NB];
    for (int h = 0; h < G; ++h)
        for (int b = 0; b < NB; ++b) acc[h][b] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
        __m512 vv[NB];
        for (int b = 0; b < NB; ++b)
            vv[b] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j * v_stride + col0 + 16 * b)));
        for (int h = 0; h < G; ++h) {
            const __m512 pb = _mm512_set1_ps(p[h * p_stride + j]);
            for (int b = 0; b < NB; ++b) acc[h][b] = _mm512_fmadd_ps(pb, vv[b], acc[h][b]);
        }
    }
    for (int h = 0; h < G; ++h)
        for (int b = 0; b < NB; ++b) _mm512_storeu_ps(out + h * out_stride + col0 + 16 * b, acc[h][b]);
}

template <int G>
inline void pv_all(int64_t hd, int64_t n, const float* p, int64_t p_stride, const uint16_t* v, int64_t v_stride,
                   float* out, int64_t out_stride) {
    int64_t c = 0;
    for (; c + 64 <= hd; c += 64) pv_block<G, 4>(n, p, p_stride, v, v_stride, c, out, out_stride);
    for (; c < hd; c += 16) pv_block<G, 1>(n, p, p_stride, v, v_stride, c, out, out_stride);
}

template <int G>
void attention_g(int64_t hd, int64_t pos, float scale, const float* q, int64_t q_stride, const uint16_t* kt,
                 int64_t kt_stride, const uint16_t* v, int64_t v_stride, float* out, int64_t out_stride,
                 float* scratch) {
    const int64_t n = pos + 1, nch = (n + 15) / 16;
    const int64_t s_stride = nch * 16;
    float* qh = scratch;                 // G x hd
    float* scores = scratch + G * hd;    // G x s_stride
    for (int h = 0; h < G; ++h)
        for (int64_t i = 0; i < hd; i += 16)
            _mm512_storeu_ps(qh + h * hd + i, round_fp16(_mm512_loadu_ps(q + h * q_stride + i)));
    qk_all<G>(hd, qh, kt, kt_stride, nch, scale, scores, s_stride);
    softmax_rows_f16(G, scores, s_stride, n);
    pv_all<G>(hd, n, scores, s_stride, v, v_stride, out, out_stride);
}

}  // namespace o512
}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace ops512 {

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = o512::tail_mask(n - i);
        const __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
        const __m512 e = o512::exp16(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32(int(0x80000000)))));
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(k, up + i)));
    }
}

void scale_mul(const float* x, float scale, const float* w, float* y, int64_t n) {
    const __m512 s = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = o512::tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), s), _mm512_maskz_loadu_ps(k, w + i)));
    }
}

void add_inplace(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = o512::tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, y + i), _mm512_maskz_loadu_ps(k, x + i)));
    }
}

void to_fp16(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = o512::tail_mask(n - i);
        _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

void to_fp16_strided(const float* x, uint16_t* y, int64_t stride, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = o512::tail_mask(n - i);
        alignas(32) uint16_t h[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(h), _mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (int64_t j = 0; j < 16 && i + j < n; ++j) y[(i + j) * stride] = h[j];
    }
}

void rope_norm(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs) {
    // pairs (2i, 2i+1): even lanes x0*c - x1*s, odd lanes x1*c + x0*s
    const __m512i swap = _mm512_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    const __m512i even_sign = _mm512_setr_epi32(int(0x80000000), 0, int(0x80000000), 0, int(0x80000000), 0, int(0x80000000), 0,
                                                int(0x80000000), 0, int(0x80000000), 0, int(0x80000000), 0, int(0x80000000), 0);
    const __m512i dup_even = _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    for (int64_t i = 0; i < n_rot; i += 16) {
        const __mmask16 k = o512::tail_mask(n_rot - i);
        const __m512 csv = _mm512_maskz_loadu_ps(k, cs + i);   // c0 s0 c1 s1 ...
        const __m512 c = _mm512_permutexvar_ps(dup_even, csv);
        const __m512 s = _mm512_permutexvar_ps(_mm512_add_epi32(dup_even, _mm512_set1_epi32(1)), csv);
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = x + h * head_dim + i;
            const __m512 xv = _mm512_maskz_loadu_ps(k, v);
            const __m512 a = _mm512_mul_ps(xv, c);
            const __m512 b = _mm512_mul_ps(_mm512_permutexvar_ps(swap, xv), s);
            _mm512_mask_storeu_ps(v, k, _mm512_add_ps(a, _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(b), even_sign))));
        }
    }
}

namespace {
inline uint16_t f32_to_f16_rne(float f) { return uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
inline __m512 abs16(__m512 v) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff))); }

template <bool kSum>
inline void q8_block(const float* x, int8_t* qs, uint16_t* d_out, uint16_t* s_out) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(abs16(v0), abs16(v1)));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m512 idv = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv));   // MXCSR: round half to even, as nearbyint
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 16), _mm512_cvtsepi32_epi8(q1));
    const uint16_t dh = f32_to_f16_rne(d);
    std::memcpy(d_out, &dh, 2);
    if constexpr (kSum) {
        const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        const uint16_t sh = f32_to_f16_rne(d * float(sum));
        std::memcpy(s_out, &sh, 2);
    }
}
}  // namespace

void quantize_q8_0(const float* x, void* dst, int64_t n) {
    BlockQ8_0* y = static_cast<BlockQ8_0*>(dst);
    for (int64_t b = 0; b < n / 32; ++b) q8_block<false>(x + 32 * b, y[b].qs, &y[b].d, nullptr);
}

void quantize_q8_1(const float* x, void* dst, int64_t n) {
    BlockQ8_1* y = static_cast<BlockQ8_1*>(dst);
    for (int64_t b = 0; b < n / 32; ++b) q8_block<true>(x + 32 * b, y[b].qs, &y[b].d, &y[b].s);
}

void quantize_q8_k(const float* x, void* dst, int64_t n) {
    BlockQ8_K* y = static_cast<BlockQ8_K*>(dst);
    for (int64_t i = 0; i < n / 256; ++i, x += 256) {
        __m512 m = _mm512_setzero_ps();
        for (int j = 0; j < 256; j += 16) m = _mm512_max_ps(m, abs16(_mm512_loadu_ps(x + j)));
        const float amax = _mm512_reduce_max_ps(m);
        if (amax == 0) {
            std::memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        // the first element of largest magnitude (the reference keeps the first on ties)
        float max = 0;
        const __m512 am = _mm512_set1_ps(amax);
        for (int j = 0; j < 256; j += 16) {
            const __mmask16 k = _mm512_cmp_ps_mask(abs16(_mm512_loadu_ps(x + j)), am, _CMP_EQ_OQ);
            if (k) {
                max = x[j + __builtin_ctz(k)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m512 is = _mm512_set1_ps(iscale);
        for (int j = 0; j < 256; j += 16) {
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(is, _mm512_loadu_ps(x + j)));
            q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + j), _mm512_cvtsepi32_epi8(q));
            y[i].bsums[j / 16] = int16_t(_mm512_reduce_add_epi32(q));
        }
        y[i].d = 1 / iscale;
    }
}

void attention_group(int64_t g, int64_t hd, int64_t pos, float scale, const float* q, int64_t q_stride,
                     const uint16_t* kt, int64_t kt_stride, const uint16_t* v, int64_t v_stride, float* out,
                     int64_t out_stride, float* scores) {
    // heads in sub-groups of at most four (registers)
    for (int64_t h = 0; h < g;) {
        const int64_t m = g - h >= 4 ? 4 : g - h;
        const float* qq = q + h * q_stride;
        float* oo = out + h * out_stride;
        switch (m) {
            case 4: o512::attention_g<4>(hd, pos, scale, qq, q_stride, kt, kt_stride, v, v_stride, oo, out_stride, scores); break;
            case 3: o512::attention_g<3>(hd, pos, scale, qq, q_stride, kt, kt_stride, v, v_stride, oo, out_stride, scores); break;
            case 2: o512::attention_g<2>(hd, pos, scale, qq, q_stride, kt, kt_stride, v, v_stride, oo, out_stride, scores); break;
            default: o512::attention_g<1>(hd, pos, scale, qq, q_stride, kt, kt_stride, v, v_stride, oo, out_stride, scores); break;
        }
        h += m;
    }
}

}  // namespace ops512
}  // namespace lowbit
