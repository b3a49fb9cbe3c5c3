// The 256-bit dot kernels for every format, written once and compiled twice: by
// avx2_kernels.cpp (AVX2 + FMA + F16C) and by avx512_kernels.cpp, where the AVX-512
// flags let the compiler use EVEX encodings, ternary logic and, through mul_sum_u8s8,
// 256-bit VNNI; that build serves the formats without a 512-bit kernel of their own.
// Internal linkage throughout (see x86_common.h for why).
//
// Exactness.  Integer dots are exact: every i16 intermediate of vpmaddubsw is bounded
// below 2^15 for the codes the quantizers produce (bounds noted per kernel; Q8_0/Q8_K
// activations are in [-127, 127]), and the int32 totals stay far below 2^31.  Each
// block's (or super-block's) integer total is formed exactly before it meets a float,
// so float results differ from the scalar reference only in the order and fusing of
// the float operations.
#pragma once

#include "formats/blocks.h"
#include "formats/registry.h"
#include "kernels/avx2/x86_common.h"

namespace lowbit {
namespace {

// ---- integer building blocks -------------------------------------------------------------

// sum of u8 x s8 products, four at a time into eight int32 lanes.  Callers guarantee that
// pairs of products fit in i16 (vpmaddubsw saturates; vpdpbusd does not).
inline __m256i mul_sum_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
// sum (u1 - u2) * s
inline __m256i mul_sum_u8s8_diff(__m256i u1, __m256i u2, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_sub_epi32(mul_sum_u8s8(u1, s), mul_sum_u8s8(u2, s));
#else
    return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(u1, s), _mm256_maddubs_epi16(u2, s)),
                             _mm256_set1_epi16(1));
#endif
}
// sum x * y for signed x with |x| <= 127 (sign moved onto y; y != -128).
inline __m256i mul_sum_i8(__m256i x, __m256i y) {
    return mul_sum_u8s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// 16 bytes -> 16 x i16 laid out [b[i] x 8 | b[i+1] x 8] (i <= 14): the two 16-element
// scales of a 32-element group, ready for vpmaddwd against its vpmaddubsw products.
inline __m256i scale_pair_i16(__m128i b8, int i, bool is_signed) {
    const __m128i idx = _mm_set_epi64x(0x0101010101010101LL * (i + 1), 0x0101010101010101LL * i);
    const __m128i s = _mm_shuffle_epi8(b8, idx);
    return is_signed ? _mm256_cvtepi8_epi16(s) : _mm256_cvtepu8_epi16(s);
}

inline __m256i load_bsums(const BlockQ8_K& y) { return load256(y.bsums); }

// ---- float formats -----------------------------------------------------------------------
// Four independent accumulators of 8 lanes over the first n & ~7 elements; the callers add
// the ragged tail in double, as the reference does.
template <class Load>
inline float dot_float_kernel(int64_t n, const Load& load) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 x, y;
        load(i, x, y); acc0 = _mm256_fmadd_ps(x, y, acc0);
        load(i + 8, x, y); acc1 = _mm256_fmadd_ps(x, y, acc1);
        load(i + 16, x, y); acc2 = _mm256_fmadd_ps(x, y, acc2);
        load(i + 24, x, y); acc3 = _mm256_fmadd_ps(x, y, acc3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 x, y;
        load(i, x, y);
        acc0 = _mm256_fmadd_ps(x, y, acc0);
    }
    return hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

inline float bf16_scalar(uint16_t h) { return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(uint32_t(h) << 16)))); }

void dot256_f32(int64_t n, float* out, const void* w, const void* a) {
    const float* x = static_cast<const float*>(w);
    const float* y = static_cast<const float*>(a);
    double t = dot_float_kernel(n, [&](int64_t i, __m256& vx, __m256& vy) {
        vx = _mm256_loadu_ps(x + i);
        vy = _mm256_loadu_ps(y + i);
    });
    for (int64_t i = n & ~int64_t(7); i < n; ++i) t += double(x[i] * y[i]);
    *out = float(t);
}

void dot256_f16(int64_t n, float* out, const void* w, const void* a) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const uint16_t* y = static_cast<const uint16_t*>(a);
    double t = dot_float_kernel(n, [&](int64_t i, __m256& vx, __m256& vy) {
        vx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
        vy = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y + i)));
    });
    for (int64_t i = n & ~int64_t(7); i < n; ++i) t += double(h2f(x[i]) * h2f(y[i]));
    *out = float(t);
}

// bf16 -> f32 is a 16-bit shift; interleaving with zeros does it two registers at a time.
// The lane order gets permuted, identically for both operands.
void dot256_bf16(int64_t n, float* out, const void* w, const void* a) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const uint16_t* y = static_cast<const uint16_t*>(a);
    const __m256i z = _mm256_setzero_si256();
    auto lo = [&](__m256i v) { return _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v)); };
    auto hi = [&](__m256i v) { return _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v)); };
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i x0 = load256(x + i), y0 = load256(y + i);
        const __m256i x1 = load256(x + i + 16), y1 = load256(y + i + 16);
        acc0 = _mm256_fmadd_ps(lo(x0), lo(y0), acc0);
        acc1 = _mm256_fmadd_ps(hi(x0), hi(y0), acc1);
        acc2 = _mm256_fmadd_ps(lo(x1), lo(y1), acc2);
        acc3 = _mm256_fmadd_ps(hi(x1), hi(y1), acc3);
    }
    for (; i + 16 <= n; i += 16) {
        const __m256i x0 = load256(x + i), y0 = load256(y + i);
        acc0 = _mm256_fmadd_ps(lo(x0), lo(y0), acc0);
        acc1 = _mm256_fmadd_ps(hi(x0), hi(y0), acc1);
    }
    double t = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; ++i) t += double(bf16_scalar(x[i]) * bf16_scalar(y[i]));
    *out = float(t);
}

// ---- 32-element block formats ------------------------------------------------------------
// Ops::block returns eight int32 lanes summing to the block's exact integer dot; Ops::kX
// says where the weight block's scale lives.
enum class XScale { Fp16, Fp16WithMin, E8M0 };

// E8M0 exponent bytes (low byte of each dword) -> 2^(e - 128) as float, as mxfp4.cpp's
// e8m0_to_fp32_half: e < 2 gives the subnormals 2^-128 and 2^-127.
inline __m256 e8m0_half_to_float(__m256i dw) {
    const __m256i e = _mm256_and_si256(dw, _mm256_set1_epi32(0xFF));
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i sub = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, sub, small));
}

inline __m256i block_dwords8(const void* p, size_t stride) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    alignas(32) uint32_t v[8];
    for (int k = 0; k < 8; ++k) v[k] = load_u32(b + k * stride);
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(v));
}

// Q4_0 x Q8_0: sum (q - 8) * y; pairs |2*15*127|, |2*8*128|.
struct Q4_0Ops {
    using BX = BlockQ4_0;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m256i block(const BX& x, const BY& y) {
        return mul_sum_u8s8_diff(nibbles_32(x.qs), _mm256_set1_epi8(8), load256(y.qs));
    }
};
// Q4_1 x Q8_1: q in [0, 15].
struct Q4_1Ops {
    using BX = BlockQ4_1;
    using BY = BlockQ8_1;
    static constexpr XScale kX = XScale::Fp16WithMin;
    static __m256i block(const BX& x, const BY& y) { return mul_sum_u8s8(nibbles_32(x.qs), load256(y.qs)); }
};
// Q5_0 x Q8_0: q = nibble | bit << 4 in [0, 31]; sum (q - 16) * y, pairs <= 2*31*127.
struct Q5_0Ops {
    using BX = BlockQ5_0;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m256i block(const BX& x, const BY& y) {
        const __m256i hi = _mm256_and_si256(bits_to_bytes_32(load_u32(x.qh)), _mm256_set1_epi8(0x10));
        return mul_sum_u8s8_diff(_mm256_or_si256(nibbles_32(x.qs), hi), _mm256_set1_epi8(16), load256(y.qs));
    }
};
struct Q5_1Ops {
    using BX = BlockQ5_1;
    using BY = BlockQ8_1;
    static constexpr XScale kX = XScale::Fp16WithMin;
    static __m256i block(const BX& x, const BY& y) {
        const __m256i hi = _mm256_and_si256(bits_to_bytes_32(load_u32(x.qh)), _mm256_set1_epi8(0x10));
        return mul_sum_u8s8(_mm256_or_si256(nibbles_32(x.qs), hi), load256(y.qs));
    }
};
// Q8_0 x Q8_0: |x| * sign(y, x).  Q8_0 codes are in [-127, 127] (round(x / d) with
// d = amax / 127), so the sign flip never meets -128 and pairs stay within 2*127*127.
struct Q8_0Ops {
    using BX = BlockQ8_0;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m256i block(const BX& x, const BY& y) { return mul_sum_i8(load256(x.qs), load256(y.qs)); }
};
// IQ4_NL x Q8_0: codebook values in [-127, 113] by table lookup, then signed x signed.
constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
struct IQ4_NLOps {
    using BX = BlockIQ4_NL;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m256i block(const BX& x, const BY& y) {
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
        return mul_sum_i8(_mm256_shuffle_epi8(table, nibbles_32(x.qs)), load256(y.qs));
    }
};
// MXFP4 x Q8_0: E2M1 values doubled, in [-12, 12].
constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
struct MXFP4Ops {
    using BX = BlockMXFP4;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::E8M0;
    static __m256i block(const BX& x, const BY& y) {
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values)));
        return mul_sum_i8(_mm256_shuffle_epi8(table, nibbles_32(x.qs)), load256(y.qs));
    }
};

template <class Ops>
inline float block_scale_scalar(const typename Ops::BX& x) {
    if constexpr (Ops::kX == XScale::E8M0) {
        const uint32_t e = x.e;
        return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(e < 2 ? 0x00200000u << e : (e - 1) << 23))));
    } else {
        return h2f(x.d);
    }
}

// Eight blocks at a time: eight exact integer totals, then one FMA.  The weight scale
// times the activation scale is exact (fp16 x fp16, or a power of two x fp16 unless it
// underflows, where both paths round the same product the same way).
template <class Ops>
void dot256_blocks(int64_t n, float* out, const void* w, const void* a) {
    using BX = typename Ops::BX;
    using BY = typename Ops::BY;
    const BX* x = static_cast<const BX*>(w);
    const BY* y = static_cast<const BY*>(a);
    const int64_t nb = n / 32;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    int64_t ib = 0;
    for (; ib + 8 <= nb; ib += 8) {
        __m256i s[8];
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; ++k) s[k] = Ops::block(x[ib + k], y[ib + k]);
        const __m256 sumi = _mm256_cvtepi32_ps(reduce8_epi32(s));
        if constexpr (Ops::kX == XScale::Fp16WithMin) {
            __m256 dx, mx, dy, sy;
            load_fp16x2x8(&x[ib].d, sizeof(BX), dx, mx);
            load_fp16x2x8(&y[ib].d, sizeof(BY), dy, sy);
            acc = _mm256_fmadd_ps(sumi, _mm256_mul_ps(dx, dy), acc);
            accm = _mm256_fmadd_ps(mx, sy, accm);
        } else if constexpr (Ops::kX == XScale::E8M0) {
            const __m256 dx = e8m0_half_to_float(block_dwords8(&x[ib], sizeof(BX)));
            acc = _mm256_fmadd_ps(sumi, _mm256_mul_ps(load_fp16x8(&y[ib].d, sizeof(BY)), dx), acc);
        } else {
            const __m256 d = _mm256_mul_ps(load_fp16x8(&x[ib].d, sizeof(BX)), load_fp16x8(&y[ib].d, sizeof(BY)));
            acc = _mm256_fmadd_ps(sumi, d, acc);
        }
    }
    float sum = hsum_ps(_mm256_add_ps(acc, accm));
    for (; ib < nb; ++ib) {
        const int sumi = hsum_epi32(Ops::block(x[ib], y[ib]));
        sum += float(sumi) * (block_scale_scalar<Ops>(x[ib]) * h2f(y[ib].d));
        if constexpr (Ops::kX == XScale::Fp16WithMin) sum += h2f(x[ib].m) * h2f(y[ib].s);
    }
    *out = sum;
}

// ---- K-quants and the other 256-element formats, against Q8_K ----------------------------
// Per super-block: one exact int32 total of scale * sum(q * y) (vpmaddubsw, then vpmaddwd
// with the sub-block scales), the format's offset folded in exactly through Q8_K's
// 16-element bsums, then a few float operations.

// Q8_K's bsums dotted with 16 per-16-element factors (i16).  |bsum| <= 16*127.
inline int bsums_dot(const BlockQ8_K& y, __m256i f16) { return hsum_epi32(_mm256_madd_epi16(load_bsums(y), f16)); }

// Q2_K: 16 scales (low nibble) and mins (high nibble) of 16 elements, codes 0..3.
// Float part exactly as the reference: dall * isum - dmin * summs.
void dot256_q2_k(int64_t n, float* out, const void* w, const void* a) {
    const BlockQ2_K* x = static_cast<const BlockQ2_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i m3 = _mm256_set1_epi8(3);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
        const __m128i sc = _mm_and_si128(raw, _mm_set1_epi8(0xF));
        const __m128i mn = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xF));
        const int summs = bsums_dot(y[i], _mm256_cvtepu8_epi16(mn));
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i bits = load256(x[i].qs + 32 * h);
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; ++s) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), m3);   // pairs <= 2*3*127
                const __m256i p = _mm256_maddubs_epi16(q, load256(y[i].qs + 128 * h + 32 * s));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pair_i16(sc, 8 * h + 2 * s, false)));
            }
        }
        const float dall = y[i].d * h2f(x[i].d);
        const float dmin = y[i].d * h2f(x[i].dmin);
        sumf += dall * float(hsum_epi32(acc)) - dmin * float(summs);
    }
    *out = sumf;
}

// Q3_K's 16 signed 6-bit scales (stored + 32) -> 16 int8.
inline __m128i q3k_scales(const uint8_t* s) {
    const uint32_t a0 = load_u32(s), a1 = load_u32(s + 4), a2 = load_u32(s + 8);
    const uint32_t m2 = 0x0f0f0f0f, m3 = 0x03030303;
    const uint32_t v0 = (a0 & m2) | ((a2 & m3) << 4);
    const uint32_t v1 = (a1 & m2) | (((a2 >> 2) & m3) << 4);
    const uint32_t v2 = ((a0 >> 4) & m2) | (((a2 >> 4) & m3) << 4);
    const uint32_t v3 = ((a1 >> 4) & m2) | (((a2 >> 6) & m3) << 4);
    return _mm_sub_epi8(_mm_set_epi32(int(v3), int(v2), int(v1), int(v0)), _mm_set1_epi8(32));
}

// Q3_K: codes u = low2 | hbit << 2 in [0, 7], value u - 4; sum sc (u - 4) y =
// sum sc u y - 4 sum sc bsum.  Pairs <= 2*7*127.
void dot256_q3_k(int64_t n, float* out, const void* w, const void* a) {
    const BlockQ3_K* x = static_cast<const BlockQ3_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m128i sc = q3k_scales(x[i].scales);
        const int off = bsums_dot(y[i], _mm256_cvtepi8_epi16(sc));
        const __m256i hb = load256(x[i].hmask);
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i bits = load256(x[i].qs + 32 * h);
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; ++s) {
                const int b = 4 * h + s;   // hmask bit of this group, moved to bit 2
                const __m256i hi = b >= 2 ? _mm256_srli_epi16(hb, b - 2) : _mm256_slli_epi16(hb, 2 - b);
                const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 2 * s), m3), _mm256_and_si256(hi, m4));
                const __m256i p = _mm256_maddubs_epi16(q, load256(y[i].qs + 128 * h + 32 * s));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pair_i16(sc, 8 * h + 2 * s, true)));
            }
        }
        const int isum = hsum_epi32(acc) - 4 * off;
        sumf += (h2f(x[i].d) * y[i].d) * float(isum);
    }
    *out = sumf;
}

// Q4_K/Q5_K: 8 scales and 8 mins of 6 bits in 12 bytes -> bytes 0..7 scales, 8..15 mins.
inline __m128i k4_scales_mins(const uint8_t* s) {
    const uint32_t a0 = load_u32(s), a1 = load_u32(s + 4), a2 = load_u32(s + 8);
    const uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
    const uint32_t sc_lo = a0 & m1;
    const uint32_t sc_hi = (a2 & m2) | (((a0 >> 6) & m3) << 4);
    const uint32_t mn_lo = a1 & m1;
    const uint32_t mn_hi = ((a2 >> 4) & m2) | (((a1 >> 6) & m3) << 4);
    return _mm_set_epi32(int(mn_hi), int(mn_lo), int(sc_hi), int(sc_lo));
}

// Q4_K (kHigh false) / Q5_K (true): codes in [0, 15] / [0, 31], pairs <= 2*31*127;
// mins folded in through bsums of 32-element pairs.
template <class B, bool kHigh>
void dot256_q45_k(int64_t n, float* out, const void* w, const void* a) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m128i sm = k4_scales_mins(x[i].scales);
        // mins: sum_j m_j (bsums[2j] + bsums[2j+1])
        const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y[i].bsums)),
                                          _mm_loadu_si128(reinterpret_cast<const __m128i*>(y[i].bsums + 8)));
        __m128i mp = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(sm, 8)), bs);
        mp = _mm_add_epi32(mp, _mm_unpackhi_epi64(mp, mp));
        mp = _mm_add_epi32(mp, _mm_shuffle_epi32(mp, _MM_SHUFFLE(2, 3, 0, 1)));
        const int summ = _mm_cvtsi128_si32(mp);
        // scales as i16 pairs: [sc_2j x 8 | sc_2j x 8] per 32-element group
        const __m128i sc16 = _mm_unpacklo_epi8(sm, sm);   // sc0 sc0 sc1 sc1 ...
        __m256i acc = _mm256_setzero_si256();
        __m256i hbits = _mm256_setzero_si256();
        if constexpr (kHigh) hbits = load256(x[i].qh);
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; ++j) {
            const __m256i q4 = load256(x[i].qs + 32 * j);
            __m256i lo = _mm256_and_si256(q4, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            if constexpr (kHigh) {
                const __m256i b = _mm256_set1_epi8(0x10);
                // bit 2j of qh[l] -> bit 4 of element 64j + l; bit 2j+1 -> element 64j + 32 + l
                const __m256i h0 = 2 * j <= 4 ? _mm256_slli_epi16(hbits, 4 - 2 * j) : _mm256_srli_epi16(hbits, 2 * j - 4);
                const __m256i h1 = 2 * j + 1 <= 4 ? _mm256_slli_epi16(hbits, 3 - 2 * j) : _mm256_srli_epi16(hbits, 2 * j - 3);
                lo = _mm256_or_si256(lo, _mm256_and_si256(h0, b));
                hi = _mm256_or_si256(hi, _mm256_and_si256(h1, b));
            }
            const __m256i pl = _mm256_maddubs_epi16(lo, load256(y[i].qs + 64 * j));
            const __m256i ph = _mm256_maddubs_epi16(hi, load256(y[i].qs + 64 * j + 32));
            // sc16 holds every scale twice, so its bytes (4j, 4j+1) are (sc_2j, sc_2j)
            const __m256i s = scale_pair_i16(sc16, 4 * j, false);
            const __m256i t = scale_pair_i16(sc16, 4 * j + 2, false);
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(pl, s), _mm256_madd_epi16(ph, t)));
        }
        const float d = h2f(x[i].d) * y[i].d;
        const float dmin = h2f(x[i].dmin) * y[i].d;
        sumf += d * float(hsum_epi32(acc)) - dmin * float(summ);
    }
    *out = sumf;
}

// Q6_K: codes u in [0, 63], value u - 32; sum sc u y - 32 sum sc bsum.  Pairs <= 2*63*127.
void dot256_q6_k(int64_t n, float* out, const void* w, const void* a) {
    const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i m4 = _mm256_set1_epi8(0xF), m30 = _mm256_set1_epi8(0x30);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
        const int off = bsums_dot(y[i], _mm256_cvtepi8_epi16(sc));
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i ql0 = load256(x[i].ql + 64 * h), ql1 = load256(x[i].ql + 64 * h + 32);
            const __m256i qh = load256(x[i].qh + 32 * h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; ++g) {
                const __m256i p = _mm256_maddubs_epi16(q[g], load256(y[i].qs + 128 * h + 32 * g));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pair_i16(sc, 8 * h + 2 * g, true)));
            }
        }
        const int isum = hsum_epi32(acc) - 32 * off;
        sumf += (h2f(x[i].d) * y[i].d) * float(isum);
    }
    *out = sumf;
}

// IQ4_XS: 8 signed 6-bit scales, codebook values |v| <= 127 (pairs <= 2*127*127), then
// scale * pair sum <= 2*32*32258 in vpmaddwd.
void dot256_iq4_xs(int64_t n, float* out, const void* w, const void* a) {
    const BlockIQ4_XS* x = static_cast<const BlockIQ4_XS*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m256i acc = _mm256_setzero_si256();
        _Pragma("GCC unroll 8") for (int ib = 0; ib < 8; ++ib) {
            const int ls = (((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((x[i].scales_h >> (2 * ib)) & 3) << 4)) - 32;
            const __m256i v = _mm256_shuffle_epi8(table, nibbles_32(x[i].qs + 16 * ib));
            const __m256i yv = load256(y[i].qs + 32 * ib);
            const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yv, v));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(int16_t(ls))));
        }
        sumf += (h2f(x[i].d) * y[i].d) * float(hsum_epi32(acc));
    }
    *out = sumf;
}

// TQ2_0: codes c in {0, 1, 2}, value c - 1: sum c y - sum y.  i16 sums of eight groups of
// pairs stay <= 8*2*2*127.
void dot256_tq2_0(int64_t n, float* out, const void* w, const void* a) {
    const BlockTQ2_0* x = static_cast<const BlockTQ2_0*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m256i acc16 = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i bits = load256(x[i].qs + 32 * h);
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; ++k) {
                const __m256i c = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
                acc16 = _mm256_add_epi16(acc16, _mm256_maddubs_epi16(c, load256(y[i].qs + 128 * h + 32 * k)));
            }
        }
        const int sumi = hsum_epi32(_mm256_madd_epi16(acc16, ones)) - bsums_dot(y[i], ones);
        sumf += float(sumi) * (y[i].d * h2f(x[i].d));
    }
    *out = sumf;
}

// TQ1_0: trit k of byte q is (uint8(q * 3^k) * 3) >> 8.  In 16-bit lanes: the byte moved to
// the high half times 3^k keeps (q * 3^k mod 256) << 8, and mulhi by 3 gives the trit.
// pow is the per-16-bit-lane multiplier 3^k (lanes may differ).
inline __m256i trits(__m256i v, __m256i pow) {
    const __m256i ue = _mm256_mullo_epi16(_mm256_slli_epi16(v, 8), pow);
    const __m256i uo = _mm256_mullo_epi16(_mm256_and_si256(v, _mm256_set1_epi16(int16_t(0xFF00))), pow);
    const __m256i three = _mm256_set1_epi16(3);
    return _mm256_or_si256(_mm256_mulhi_epu16(ue, three), _mm256_slli_epi16(_mm256_mulhi_epu16(uo, three), 8));
}
void dot256_tq1_0(int64_t n, float* out, const void* w, const void* a) {
    const BlockTQ1_0* x = static_cast<const BlockTQ1_0*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m256i ones = _mm256_set1_epi16(1);
    // qs[32..47] twice with trits (k, k+1); the last register pairs trit 4 of those bytes
    // with the 4 x 4 trits of qh (elements 240 + 4k + j).
    const __m256i pow01 = _mm256_setr_epi16(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i pow23 = _mm256_setr_epi16(9, 9, 9, 9, 9, 9, 9, 9, 27, 27, 27, 27, 27, 27, 27, 27);
    const __m256i pow4h = _mm256_setr_epi16(81, 81, 81, 81, 81, 81, 81, 81, 1, 1, 3, 3, 9, 9, 27, 27);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const int8_t* q8 = y[i].qs;
        const __m256i v = load256(x[i].qs);
        __m256i acc16 = _mm256_maddubs_epi16(trits(v, ones), load256(q8));   // pairs <= 2*2*127
        static constexpr int16_t kPow[5] = {1, 3, 9, 27, 81};
        _Pragma("GCC unroll 4") for (int k = 1; k < 5; ++k)
            acc16 = _mm256_add_epi16(acc16, _mm256_maddubs_epi16(trits(v, _mm256_set1_epi16(kPow[k])), load256(q8 + 32 * k)));
        const __m256i v16 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qs + 32)));
        acc16 = _mm256_add_epi16(acc16, _mm256_maddubs_epi16(trits(v16, pow01), load256(q8 + 160)));
        acc16 = _mm256_add_epi16(acc16, _mm256_maddubs_epi16(trits(v16, pow23), load256(q8 + 192)));
        const __m256i vh = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].qs + 32))),
                                                   _mm_set1_epi32(int(load_u32(x[i].qh))), 1);
        acc16 = _mm256_add_epi16(acc16, _mm256_maddubs_epi16(trits(vh, pow4h), load256(q8 + 224)));
        // eight registers of pairs: |acc16| <= 8*508
        const int sumi = hsum_epi32(_mm256_madd_epi16(acc16, ones)) - bsums_dot(y[i], ones);
        sumf += float(sumi) * (h2f(x[i].d) * y[i].d);
    }
    *out = sumf;
}

// Fill slot `isa` with the 256-bit kernels, where the format's row exists and its
// activation type is the one the kernel was written for.
void fill_256bit_kernels(TypeTable& t, Isa isa) {
    auto put = [&t, isa](Type type, Type act, VecDotFn fn) {
        TypeTraits& tr = t[uint32_t(type)];
        if (tr.name && tr.vec_dot_type == act) tr.vec_dot[int(isa)] = fn;
    };
    put(Type::F32, Type::F32, dot256_f32);
    put(Type::F16, Type::F16, dot256_f16);
    put(Type::BF16, Type::BF16, dot256_bf16);
    put(Type::Q4_0, Type::Q8_0, dot256_blocks<Q4_0Ops>);
    put(Type::Q4_1, Type::Q8_1, dot256_blocks<Q4_1Ops>);
    put(Type::Q5_0, Type::Q8_0, dot256_blocks<Q5_0Ops>);
    put(Type::Q5_1, Type::Q8_1, dot256_blocks<Q5_1Ops>);
    put(Type::Q8_0, Type::Q8_0, dot256_blocks<Q8_0Ops>);
    put(Type::IQ4_NL, Type::Q8_0, dot256_blocks<IQ4_NLOps>);
    put(Type::MXFP4, Type::Q8_0, dot256_blocks<MXFP4Ops>);
    put(Type::Q2_K, Type::Q8_K, dot256_q2_k);
    put(Type::Q3_K, Type::Q8_K, dot256_q3_k);
    put(Type::Q4_K, Type::Q8_K, dot256_q45_k<BlockQ4_K, false>);
    put(Type::Q5_K, Type::Q8_K, dot256_q45_k<BlockQ5_K, true>);
    put(Type::Q6_K, Type::Q8_K, dot256_q6_k);
    put(Type::IQ4_XS, Type::Q8_K, dot256_iq4_xs);
    put(Type::TQ1_0, Type::Q8_K, dot256_tq1_0);
    put(Type::TQ2_0, Type::Q8_K, dot256_tq2_0);
}

}  // namespace
}  // namespace lowbit
