// AVX-512 (F/BW/VL/DQ + VNNI) dot kernels, registered into the Isa::Avx512 slots when
// the CPU has them.
//
// Legacy 32-element formats work on two blocks per zmm register (lanes 0..7 block a,
// 8..15 block b), multiply with vpdpbusd (u8 x s8, four products into an i32 lane, no
// saturation: the integer dots are exact for every byte pattern), and sixteen blocks
// at a time are reduced to one register of sixteen exact block totals.  The float part
// sum_b float(sumi_b) * (dx_b * dy_b) then takes one FMA per sixteen blocks; dx_b * dy_b
// (two fp16 values) is exact in float, so only the order of the float additions differs
// from the scalar reference.
//
// The sixteen per-block scales are fetched with one vpgatherdd per operand where
// gathers are fast; CPUs running Intel's Gather Data Sampling ("Downfall") microcode
// mitigation make gathers several times slower, and there the scales are copied
// through a stack buffer instead (see gathers_are_fast).
//
// 256-element formats (Q2_K..Q6_K, IQ4_XS, TQ2_0) build their codes as unsigned bytes,
// four zmm per super-block, and reduce exactly to sixteen 16-element group totals that
// meet the scales in int32 (see dot512_q2_k and friends).  Every other format (and
// TQ1_0) gets dots256.h's kernels compiled here with AVX-512 + VNNI enabled.
#include "kernels/avx2/x86_common.h"   // first: it sets up the intrinsics headers

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cpu_features.h"
#include "formats/blocks.h"
#include "formats/registry.h"
#include "kernels/avx2/dots256.h"

namespace lowbit {

namespace {
namespace z512 {

// ---- float formats: 4 x 16 lanes, masked loads for the tail -------------------------

inline __mmask16 tail_mask16(int64_t r) { return __mmask16((1u << r) - 1); }

template <class Load>
inline float dot_float512(int64_t n, const Load& load) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 x, y;
        load(i, 0xFFFF, x, y); acc0 = _mm512_fmadd_ps(x, y, acc0);
        load(i + 16, 0xFFFF, x, y); acc1 = _mm512_fmadd_ps(x, y, acc1);
        load(i + 32, 0xFFFF, x, y); acc2 = _mm512_fmadd_ps(x, y, acc2);
        load(i + 48, 0xFFFF, x, y); acc3 = _mm512_fmadd_ps(x, y, acc3);
    }
    for (; i < n; i += 16) {
        __m512 x, y;
        load(i, n - i >= 16 ? __mmask16(0xFFFF) : tail_mask16(n - i), x, y);
        acc0 = _mm512_fmadd_ps(x, y, acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

void vec_dot_f32(int64_t n, float* out, const void* w, const void* a) {
    const float* x = static_cast<const float*>(w);
    const float* y = static_cast<const float*>(a);
    *out = dot_float512(n, [&](int64_t i, __mmask16 m, __m512& vx, __m512& vy) {
        vx = _mm512_maskz_loadu_ps(m, x + i);
        vy = _mm512_maskz_loadu_ps(m, y + i);
    });
}

// F16: one accumulator of sixteen lanes fed in order (not dot_float512's four), so that the
// prompt GEMM (packed512.h), whose register tiles hold one accumulator per output, gives
// bit-identical results.
void vec_dot_f16(int64_t n, float* out, const void* w, const void* a) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const uint16_t* y = static_cast<const uint16_t*>(a);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : tail_mask16(n - i);
        acc = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)),
                              _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, y + i)), acc);
    }
    *out = _mm512_reduce_add_ps(acc);
}

void vec_dot_bf16(int64_t n, float* out, const void* w, const void* a) {
    const uint16_t* x = static_cast<const uint16_t*>(w);
    const uint16_t* y = static_cast<const uint16_t*>(a);
    auto widen = [](__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); };
    *out = dot_float512(n, [&](int64_t i, __mmask16 m, __m512& vx, __m512& vy) {
        vx = widen(_mm256_maskz_loadu_epi16(m, x + i));
        vy = widen(_mm256_maskz_loadu_epi16(m, y + i));
    });
}

// ---- legacy 32-element formats ---------------------------------------------------------

// Lane order of reduce16's result: lane j holds the total of block kOrd[j] of the group.
constexpr int kOrd[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};

// v[k] holds blocks 2k (lanes 0..7) and 2k+1 (lanes 8..15); returns the sixteen block
// totals in kOrd order.  Integer adds only.
inline __m512i reduce16(const __m512i v[8]) {
    __m512i t[4], u[2];
    for (int i = 0; i < 4; ++i)
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 2; ++i)
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                                _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// 32 bytes from a and 32 from b.
inline __m512i pair256(const void* a, const void* b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(load256(a)), load256(b), 1);
}

// Two blocks of 16 packed nibble bytes -> 64 bytes [lo(a) hi(a) lo(b) hi(b)].
inline __m512i nibbles_pair(const uint8_t* a, const uint8_t* b) {
    const __m256i ta = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
    const __m256i tb = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
    const __m512i t = _mm512_inserti64x4(_mm512_castsi256_si512(ta), tb, 1);
    return _mm512_and_si512(_mm512_srlv_epi64(t, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)), _mm512_set1_epi8(0x0F));
}

inline __m512i dp(__m512i u8, __m512i s8) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u8, s8); }

// Each Ops::pair returns sixteen int32 lanes: lanes 0..7 sum to block a's integer dot,
// lanes 8..15 to block b's.
struct Q4_0Ops {   // sum (q - 8) y = sum q y - sum 8 y
    using BX = BlockQ4_0;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        const __m512i v = pair256(ya.qs, yb.qs);
        return _mm512_sub_epi32(dp(nibbles_pair(xa.qs, xb.qs), v), dp(_mm512_set1_epi8(8), v));
    }
};
struct Q4_1Ops {
    using BX = BlockQ4_1;
    using BY = BlockQ8_1;
    static constexpr XScale kX = XScale::Fp16WithMin;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        return dp(nibbles_pair(xa.qs, xb.qs), pair256(ya.qs, yb.qs));
    }
};
inline __mmask64 qh_pair(const uint8_t* a, const uint8_t* b) {
    return __mmask64(uint64_t(load_u32(a)) | (uint64_t(load_u32(b)) << 32));
}
struct Q5_0Ops {   // q = nibble + 16 * bit; sum (q - 16) y
    using BX = BlockQ5_0;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        const __m512i sixteen = _mm512_set1_epi8(16);
        const __m512i nib = nibbles_pair(xa.qs, xb.qs);
        const __m512i q = _mm512_mask_add_epi8(nib, qh_pair(xa.qh, xb.qh), nib, sixteen);
        const __m512i v = pair256(ya.qs, yb.qs);
        return _mm512_sub_epi32(dp(q, v), dp(sixteen, v));
    }
};
struct Q5_1Ops {
    using BX = BlockQ5_1;
    using BY = BlockQ8_1;
    static constexpr XScale kX = XScale::Fp16WithMin;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        const __m512i nib = nibbles_pair(xa.qs, xb.qs);
        const __m512i q = _mm512_mask_add_epi8(nib, qh_pair(xa.qh, xb.qh), nib, _mm512_set1_epi8(16));
        return dp(q, pair256(ya.qs, yb.qs));
    }
};
struct Q8_0Ops {   // x + 128 is unsigned: sum x y = sum (x + 128) y - sum 128 y, exact for all bytes
    using BX = BlockQ8_0;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        const __m512i k80 = _mm512_set1_epi8(int8_t(0x80));
        const __m512i xu = _mm512_xor_si512(pair256(xa.qs, xb.qs), k80);
        const __m512i v = pair256(ya.qs, yb.qs);
        return _mm512_sub_epi32(dp(xu, v), dp(k80, v));
    }
};

// IQ4_NL: codebook value + 128 is unsigned (1..241): sum v y = sum (v + 128) y - sum 128 y.
struct IQ4_NLOps {
    using BX = BlockIQ4_NL;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::Fp16;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        const __m512i table = _mm512_broadcast_i32x4(_mm_add_epi8(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)), _mm_set1_epi8(int8_t(0x80))));
        const __m512i v = pair256(ya.qs, yb.qs);
        const __m512i k80 = _mm512_set1_epi8(int8_t(0x80));
        return _mm512_sub_epi32(dp(_mm512_shuffle_epi8(table, nibbles_pair(xa.qs, xb.qs)), v), dp(k80, v));
    }
};
// MXFP4: value + 12 in [0, 24]: sum v y = sum (v + 12) y - sum 12 y.
struct MXFP4Ops {
    using BX = BlockMXFP4;
    using BY = BlockQ8_0;
    static constexpr XScale kX = XScale::E8M0;
    static __m512i pair(const BX& xa, const BX& xb, const BY& ya, const BY& yb) {
        const __m512i table = _mm512_broadcast_i32x4(_mm_add_epi8(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values)), _mm_set1_epi8(12)));
        const __m512i v = pair256(ya.qs, yb.qs);
        return _mm512_sub_epi32(dp(_mm512_shuffle_epi8(table, nibbles_pair(xa.qs, xb.qs)), v),
                                dp(_mm512_set1_epi8(12), v));
    }
};

// E8M0 bytes (low byte of each dword) -> 2^(e - 128), subnormal for e < 2.
inline __m512 e8m0_half_to_float16(__m512i dw) {
    const __m512i e = _mm512_and_si512(dw, _mm512_set1_epi32(0xFF));
    const __m512i normal = _mm512_slli_epi32(_mm512_sub_epi32(e, _mm512_set1_epi32(1)), 23);
    const __m512i sub = _mm512_sllv_epi32(_mm512_set1_epi32(0x00200000), e);
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(normal, _mm512_cmplt_epi32_mask(e, _mm512_set1_epi32(2)), sub));
}

// Sixteen dwords from the start of sixteen blocks (block kOrd[j] into lane j), lanes
// outside `valid` zero and not read.
template <bool kGather>
inline __m512i block_dwords16(const void* base, int stride, __mmask16 valid) {
    if constexpr (kGather) {
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15),
                                               _mm512_set1_epi32(stride));
        return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, idx, base, 1);
    } else {
        const uint8_t* b = static_cast<const uint8_t*>(base);
        alignas(64) uint32_t v[16];
        for (int j = 0; j < 16; ++j) v[j] = (valid >> j) & 1 ? load_u32(b + kOrd[j] * stride) : 0;
        return _mm512_load_si512(v);
    }
}
// The low fp16 of each dword -> float.
inline __m512 low_fp16(__m512i dw) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dw)); }
// Both fp16 of each dword -> (low, high) as floats.
inline void both_fp16(__m512i dw, __m512& lo, __m512& hi) {
    const __m512i idx = _mm512_setr_epi32(0x00020000, 0x00060004, 0x000a0008, 0x000e000c, 0x00120010, 0x00160014,
                                          0x001a0018, 0x001e001c, 0x00030001, 0x00070005, 0x000b0009, 0x000f000d,
                                          0x00130011, 0x00170015, 0x001b0019, 0x001f001d);
    const __m512i pk = _mm512_permutexvar_epi16(idx, dw);   // [even words | odd words]
    lo = _mm512_cvtph_ps(_mm512_castsi512_si256(pk));
    hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(pk, 1));
}

template <class Ops, bool kGather>
void vec_dot_legacy(int64_t n, float* out, const void* w, const void* a) {
    using BX = typename Ops::BX;
    using BY = typename Ops::BY;
    const BX* x = static_cast<const BX*>(w);
    const BY* y = static_cast<const BY*>(a);
    const int64_t nb = n / 32;
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t ib = 0; ib < nb; ib += 16) {
        __m512i s[8];
        __mmask16 valid = 0xFFFF;
        if (ib + 16 <= nb) {
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; ++k)
                s[k] = Ops::pair(x[ib + 2 * k], x[ib + 2 * k + 1], y[ib + 2 * k], y[ib + 2 * k + 1]);
        } else {
            // last, partial group: repeat the last block, then drop its lanes via the scales
            const int64_t last = nb - 1;
            for (int k = 0; k < 8; ++k) {
                const int64_t i0 = ib + 2 * k < last ? ib + 2 * k : last;
                const int64_t i1 = ib + 2 * k + 1 < last ? ib + 2 * k + 1 : last;
                s[k] = Ops::pair(x[i0], x[i1], y[i0], y[i1]);
            }
            valid = 0;
            for (int j = 0; j < 16; ++j)
                if (ib + kOrd[j] < nb) valid = __mmask16(valid | (1u << j));
        }
        const __m512 sumi = _mm512_cvtepi32_ps(reduce16(s));
        const __m512i wx = block_dwords16<kGather>(&x[ib], int(sizeof(BX)), valid);
        const __m512i wy = block_dwords16<kGather>(&y[ib], int(sizeof(BY)), valid);
        if constexpr (Ops::kX == XScale::Fp16WithMin) {
            __m512 dx, mx, dy, sy;
            both_fp16(wx, dx, mx);
            both_fp16(wy, dy, sy);
            acc = _mm512_fmadd_ps(sumi, _mm512_mul_ps(dx, dy), acc);
            accm = _mm512_fmadd_ps(mx, sy, accm);
        } else if constexpr (Ops::kX == XScale::E8M0) {
            acc = _mm512_fmadd_ps(sumi, _mm512_mul_ps(low_fp16(wy), e8m0_half_to_float16(wx)), acc);
        } else {
            acc = _mm512_fmadd_ps(sumi, _mm512_mul_ps(low_fp16(wx), low_fp16(wy)), acc);
        }
    }
    *out = _mm512_reduce_add_ps(_mm512_add_ps(acc, accm));
}

// ---- 256-element super-blocks against Q8_K --------------------------------------------
// Codes are built as unsigned bytes in element order, four zmm per super-block (register k
// holds elements 64k..64k+63), multiplied with vpdpbusd, and reduced exactly to the sixteen
// 16-element group totals T[g].  Scales (and the format's code offset, through Q8_K's
// bsums B[g]) are applied in int32: lane g holds S[g] * (T[g] - off * B[g]), exact and
// below 2^24 in magnitude (so exact as a float too).  As in the scalar reference (which
// keeps 8 float lanes), the lanes are then scaled by d in float and summed at the end.
// Q4_K, Q5_K and Q6_K (the formats with packed prompt kernels) scale in float instead,
// through kq_accumulate below, so that the packed kernels can take their scales decoded
// once per row rather than once per row and token.

inline __m512i bcast256(const void* p) { return _mm512_broadcast_i64x4(load256(p)); }
inline __m512i shifts(int lo, int hi) { return _mm512_set_epi64(hi, hi, hi, hi, lo, lo, lo, lo); }
// Bit b of every byte moved to bit `to` (only that bit is meaningful afterwards), b
// possibly different in the two 256-bit halves; both on the same side of `to`.
inline __m512i move_bit(__m512i v, int b_lo, int b_hi, int to) {
    if (b_lo >= to && b_hi >= to) return _mm512_srlv_epi64(v, shifts(b_lo - to, b_hi - to));
    return _mm512_sllv_epi64(v, shifts(to - b_lo, to - b_hi));
}
// a | (b & c)
inline __m512i or_and(__m512i a, __m512i b, __m512i c) { return _mm512_ternarylogic_epi32(a, b, c, 0xF8); }

// Sixteen exact 16-element group totals, lane g = group g.
inline __m512i group_totals(const __m512i c[4], const int8_t* q8) {
    __m512i p[4];
    for (int k = 0; k < 4; ++k) p[k] = dp(c[k], _mm512_loadu_si512(q8 + 64 * k));
    const __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
    const __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
    const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
    // u lane 4L + k holds group 4k + L
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), u);
}
inline __m512i bsums32(const BlockQ8_K& y) { return _mm512_cvtepi16_epi32(load256(y.bsums)); }
// acc + d * (a * b), a * b exact in int32 and in float
inline __m512 fma_i32(__m512i a, __m512i b, float d, __m512 acc) {
    return _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_mullo_epi32(a, b)), acc);
}
// eight u8 values (bytes 0..7 of v) each twice -> sixteen int32
inline __m512i dup8_u8(__m128i v) { return _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(v, v)); }

// One super-block's float scales, lane g = 16-element group g: `sc` multiplies the group's
// integer total and `mn` its activation sum.  Q4_K/Q5_K: sc = scale * d, mn = -min * dmin;
// Q6_K: sc = scale * d, mn = -32 * sc (the codes' offset).  Every one is an exact product
// (a 6- or 8-bit integer times an fp16 value), so it is the same however it is computed.
struct KqScales {
    __m512 sc, mn;
};
inline KqScales k45_scales(const uint8_t* scales12, uint16_t d, uint16_t dmin) {
    const __m128i sm = k4_scales_mins(scales12);   // bytes 0..7 scales, 8..15 mins
    return {_mm512_mul_ps(_mm512_cvtepi32_ps(dup8_u8(sm)), _mm512_set1_ps(h2f(d))),
            _mm512_mul_ps(_mm512_cvtepi32_ps(dup8_u8(_mm_srli_si128(sm, 8))), _mm512_set1_ps(-h2f(dmin)))};
}
inline KqScales k6_scales(const int8_t* scales16, uint16_t d) {
    const __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales16)))),
                                    _mm512_set1_ps(h2f(d)));
    return {sc, _mm512_mul_ps(sc, _mm512_set1_ps(-32.0f))};
}
// Q8_K's group sums times its scale: the activation side of the `mn` term.
inline __m512 q8k_bsy(const BlockQ8_K& y, __m512 yd) { return _mm512_mul_ps(_mm512_cvtepi32_ps(bsums32(y)), yd); }
// acc + T * (sc * yd) + mn * bsy: one super-block of one row against one token (T: the
// exact group totals of the unsigned codes; yd: the token's scale in every lane).
inline __m512 kq_accumulate(__m512i totals, const KqScales& s, __m512 yd, __m512 bsy, __m512 acc) {
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals), _mm512_mul_ps(s.sc, yd), acc);
    return _mm512_fmadd_ps(s.mn, bsy, acc);
}
// 2-bit codes of Q2_K/Q3_K/TQ2_0 for elements 64k..64k+63: half k/2, shifts 4(k%2), +2
inline __m512i codes2(const uint8_t* qs, int k) {
    const int s0 = 4 * (k % 2);
    return _mm512_and_si512(_mm512_srlv_epi64(bcast256(qs + 32 * (k / 2)), shifts(s0, s0 + 2)), _mm512_set1_epi8(3));
}

void dot512_q2_k(int64_t n, float* out, const void* w, const void* a) {
    const BlockQ2_K* x = static_cast<const BlockQ2_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m512i c[4];
        for (int k = 0; k < 4; ++k) c[k] = codes2(x[i].qs, k);
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
        const __m512i sc = _mm512_cvtepu8_epi32(_mm_and_si128(raw, _mm_set1_epi8(0xF)));
        const __m512i mn = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xF)));
        acc = fma_i32(group_totals(c, y[i].qs), sc, y[i].d * h2f(x[i].d), acc);
        accm = fma_i32(bsums32(y[i]), mn, y[i].d * h2f(x[i].dmin), accm);
    }
    *out = _mm512_reduce_add_ps(acc) - _mm512_reduce_add_ps(accm);
}

void dot512_q3_k(int64_t n, float* out, const void* w, const void* a) {
    const BlockQ3_K* x = static_cast<const BlockQ3_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m512i m4 = _mm512_set1_epi8(4);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m512i hb = bcast256(x[i].hmask);
        __m512i c[4];
        for (int k = 0; k < 4; ++k) {   // hmask bits 2k, 2k+1 -> bit 2: u in [0, 7]
            c[k] = or_and(codes2(x[i].qs, k), move_bit(hb, 2 * k, 2 * k + 1, 2), m4);
        }
        const __m512i sc = _mm512_cvtepi8_epi32(q3k_scales(x[i].scales));
        const __m512i t = _mm512_sub_epi32(group_totals(c, y[i].qs), _mm512_slli_epi32(bsums32(y[i]), 2));
        acc = fma_i32(t, sc, h2f(x[i].d) * y[i].d, acc);
    }
    *out = _mm512_reduce_add_ps(acc);
}

template <class B, bool kHigh>
void dot512_q45_k(int64_t n, float* out, const void* w, const void* a) {
    const B* x = static_cast<const B*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m512i m4 = _mm512_set1_epi8(0xF), b4 = _mm512_set1_epi8(0x10);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m512i c[4];
        __m512i hb = _mm512_setzero_si512();
        if constexpr (kHigh) hb = bcast256(x[i].qh);
        for (int k = 0; k < 4; ++k) {
            c[k] = _mm512_and_si512(_mm512_srlv_epi64(bcast256(x[i].qs + 32 * k), shifts(0, 4)), m4);
            if constexpr (kHigh) c[k] = or_and(c[k], move_bit(hb, 2 * k, 2 * k + 1, 4), b4);
        }
        const __m512 yd = _mm512_set1_ps(y[i].d);
        acc = kq_accumulate(group_totals(c, y[i].qs), k45_scales(x[i].scales, x[i].d, x[i].dmin), yd, q8k_bsy(y[i], yd), acc);
    }
    *out = _mm512_reduce_add_ps(acc);
}

void dot512_q6_k(int64_t n, float* out, const void* w, const void* a) {
    const BlockQ6_K* x = static_cast<const BlockQ6_K*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m512i m4 = _mm512_set1_epi8(0xF), m30 = _mm512_set1_epi8(0x30);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m512i c[4];
        for (int h = 0; h < 2; ++h) {
            const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);
            const __m512i qh = bcast256(x[i].qh + 32 * h);
            // elements 128h + 0..63: low nibbles, qh bits (0,1) / (2,3) -> bits (4,5)
            c[2 * h] = or_and(_mm512_and_si512(ql, m4), _mm512_sllv_epi64(qh, shifts(4, 2)), m30);
            // elements 128h + 64..127: high nibbles, qh bits (4,5) / (6,7)
            c[2 * h + 1] = or_and(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), _mm512_srlv_epi64(qh, shifts(0, 2)), m30);
        }
        const __m512 yd = _mm512_set1_ps(y[i].d);
        acc = kq_accumulate(group_totals(c, y[i].qs), k6_scales(x[i].scales, x[i].d), yd, q8k_bsy(y[i], yd), acc);
    }
    *out = _mm512_reduce_add_ps(acc);
}

void dot512_iq4_xs(int64_t n, float* out, const void* w, const void* a) {
    const BlockIQ4_XS* x = static_cast<const BlockIQ4_XS*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    const __m512i table = _mm512_broadcast_i32x4(
        _mm_add_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)), _mm_set1_epi8(int8_t(0x80))));
    const __m512i m4 = _mm512_set1_epi8(0xF);
    const __m512i aabb = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
    // lane g belongs to sub-block ib = g / 2: low scale bits at 4 ib of scales_l, high at 2 ib of scales_h
    const __m512i sh_l = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    const __m512i sh_h = _mm512_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m512i c[4];
        for (int k = 0; k < 4; ++k) {   // sub-blocks 2k, 2k+1: [lo(A) hi(A) lo(B) hi(B)]
            const __m512i t = _mm512_permutexvar_epi64(aabb, _mm512_castsi256_si512(load256(x[i].qs + 32 * k)));
            c[k] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srlv_epi64(t, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)), m4));
        }
        const __m512i lo = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int(load_u32(x[i].scales_l))), sh_l), _mm512_set1_epi32(0xF));
        const __m512i hi = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(x[i].scales_h), sh_h), _mm512_set1_epi32(3));
        const __m512i sc = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), _mm512_set1_epi32(32));
        const __m512i t = _mm512_sub_epi32(group_totals(c, y[i].qs), _mm512_slli_epi32(bsums32(y[i]), 7));
        acc = fma_i32(t, sc, h2f(x[i].d) * y[i].d, acc);
    }
    *out = _mm512_reduce_add_ps(acc);
}

// One scale per super-block: the integer total is formed exactly, as the reference does.
void dot512_tq2_0(int64_t n, float* out, const void* w, const void* a) {
    const BlockTQ2_0* x = static_cast<const BlockTQ2_0*>(w);
    const BlockQ8_K* y = static_cast<const BlockQ8_K*>(a);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        __m512i acc = _mm512_sub_epi32(_mm512_setzero_si512(), bsums32(y[i]));   // value = code - 1
        for (int k = 0; k < 4; ++k) acc = _mm512_dpbusd_epi32(acc, codes2(x[i].qs, k), _mm512_loadu_si512(y[i].qs + 64 * k));
        sumf += float(_mm512_reduce_add_epi32(acc)) * (y[i].d * h2f(x[i].d));
    }
    *out = sumf;
}

// True unless the kernel reports the Gather Data Sampling microcode mitigation.
// LOWBIT_AVX512_GATHER=0/1 overrides (tests use it to cover both variants).
bool gathers_are_fast() {
    if (const char* env = std::getenv("LOWBIT_AVX512_GATHER")) return env[0] != '0';
    FILE* f = std::fopen("/sys/devices/system/cpu/vulnerabilities/gather_data_sampling", "r");
    if (!f) return true;   // old kernel or not Linux: assume no slow microcode path
    char buf[64] = {};
    const size_t got = std::fread(buf, 1, sizeof(buf) - 1, f);
    std::fclose(f);
    buf[got] = 0;
    return std::strncmp(buf, "Not affected", 12) == 0 || std::strncmp(buf, "Vulnerable", 10) == 0;
}

template <bool kGather>
void register_legacy(TypeTable& t) {
    auto put = [&t](Type type, Type act, VecDotFn fn) {
        TypeTraits& tr = t[uint32_t(type)];
        if (tr.name && tr.vec_dot_type == act) tr.vec_dot[int(Isa::Avx512)] = fn;
    };
    put(Type::Q4_0, Type::Q8_0, vec_dot_legacy<Q4_0Ops, kGather>);
    put(Type::Q4_1, Type::Q8_1, vec_dot_legacy<Q4_1Ops, kGather>);
    put(Type::Q5_0, Type::Q8_0, vec_dot_legacy<Q5_0Ops, kGather>);
    put(Type::Q5_1, Type::Q8_1, vec_dot_legacy<Q5_1Ops, kGather>);
    put(Type::Q8_0, Type::Q8_0, vec_dot_legacy<Q8_0Ops, kGather>);
    put(Type::IQ4_NL, Type::Q8_0, vec_dot_legacy<IQ4_NLOps, kGather>);
    put(Type::MXFP4, Type::Q8_0, vec_dot_legacy<MXFP4Ops, kGather>);
}

// ---- dequantizers (the AMX tiles dequantize whole rows) ------------------------------------
// Bit for bit the scalar references of formats/: the same products in the same order, in
// float, without fused multiply-adds (the kernel files build with -ffp-contract=off).  A
// block's 32 codes travel as the 32 bytes of a ymm in element order (nibbles_32 and
// bits_to_bytes_32 of x86_common.h build them).

// 32 int8 values (bytes of v) times their scale: the first 16 by d0, the last 16 by d1
inline void put32_i8(float* y, __m256i v, __m512 d0, __m512 d1) {
    _mm512_storeu_ps(y, _mm512_mul_ps(d0, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(v)))));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(d1, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(v, 1)))));
}

// 32 codes 0..255 (bytes of v) as d * code + m (a reference's d * L - m is d * L + (-m),
// the same float)
inline void put32_affine(float* y, __m256i v, __m512 d, __m512 m) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(v)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(v, 1)));
    _mm512_storeu_ps(y, _mm512_add_ps(_mm512_mul_ps(d, lo), m));
    _mm512_storeu_ps(y + 16, _mm512_add_ps(_mm512_mul_ps(d, hi), m));
}

inline __m256i minus(__m256i codes, int off) { return _mm256_sub_epi8(codes, _mm256_set1_epi8(char(off))); }

// Q5_0 / Q5_1 codes: the low nibbles, and bit j of qh as the fifth bit of value j
inline __m256i q5_codes(const uint8_t* qs, const uint8_t* qh_bytes) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, 4);
    return _mm256_or_si256(nibbles_32(qs), _mm256_and_si256(bits_to_bytes_32(qh), _mm256_set1_epi8(0x10)));
}

// IQ4_NL / IQ4_XS: codes -> their codebook values
inline __m256i iq4_values(__m256i codes) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
    return _mm256_shuffle_epi8(table, codes);
}

void to_float_q4_0(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ4_0*>(src);
    for (int64_t b = 0; b < n / 32; ++b, y += 32) {
        const __m512 d = _mm512_set1_ps(h2f(x[b].d));
        put32_i8(y, minus(nibbles_32(x[b].qs), 8), d, d);
    }
}

void to_float_q4_1(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ4_1*>(src);
    for (int64_t b = 0; b < n / 32; ++b, y += 32)
        put32_affine(y, nibbles_32(x[b].qs), _mm512_set1_ps(h2f(x[b].d)), _mm512_set1_ps(h2f(x[b].m)));
}

void to_float_q5_0(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ5_0*>(src);
    for (int64_t b = 0; b < n / 32; ++b, y += 32) {
        const __m512 d = _mm512_set1_ps(h2f(x[b].d));
        put32_i8(y, minus(q5_codes(x[b].qs, x[b].qh), 16), d, d);
    }
}

void to_float_q5_1(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ5_1*>(src);
    for (int64_t b = 0; b < n / 32; ++b, y += 32)
        put32_affine(y, q5_codes(x[b].qs, x[b].qh), _mm512_set1_ps(h2f(x[b].d)), _mm512_set1_ps(h2f(x[b].m)));
}

void to_float_q8_0(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ8_0*>(src);
    for (int64_t b = 0; b < n / 32; ++b, y += 32) {
        const __m512 d = _mm512_set1_ps(h2f(x[b].d));
        put32_i8(y, load256(x[b].qs), d, d);
    }
}

void to_float_iq4_nl(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockIQ4_NL*>(src);
    for (int64_t b = 0; b < n / 32; ++b, y += 32) {
        const __m512 d = _mm512_set1_ps(h2f(x[b].d));
        put32_i8(y, iq4_values(nibbles_32(x[b].qs)), d, d);
    }
}

void to_float_iq4_xs(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockIQ4_XS*>(src);
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = h2f(x[i].d);
        for (int ib = 0; ib < 8; ++ib, y += 32) {
            const int ls = (((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((x[i].scales_h >> (2 * ib)) & 3) << 4)) - 32;
            const __m512 dl = _mm512_set1_ps(d * float(ls));
            put32_i8(y, iq4_values(nibbles_32(x[i].qs + 16 * ib)), dl, dl);
        }
    }
}

// Q4_K / Q5_K: sub-block j's levels are nibbles of qs (low for even j), plus for Q5_K the
// fifth bit, bit j of each byte of qh
template <class B, bool kFifthBit>
void to_float_q45_k(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const B*>(src);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / 256; ++i, y += 256) {
        const float d = h2f(x[i].d), dmin = h2f(x[i].dmin);
        const uint8_t* sc = x[i].scales;
        __m256i qh = _mm256_setzero_si256();
        if constexpr (kFifthBit) qh = load256(x[i].qh);
        for (int g = 0; g < 4; ++g) {   // 64 values: sub-block 2g (low nibbles), 2g + 1 (high)
            const __m256i q = load256(x[i].qs + 32 * g);
            for (int h = 0; h < 2; ++h) {
                const int j = 2 * g + h;   // get_scale_min_k4
                const int s6 = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
                const int m6 = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
                __m256i v = h ? _mm256_and_si256(_mm256_srli_epi16(q, 4), m4) : _mm256_and_si256(q, m4);
                if constexpr (kFifthBit)
                    v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, j), one), 4));
                put32_affine(y + 32 * j, v, _mm512_set1_ps(d * float(s6)), _mm512_set1_ps(-(dmin * float(m6))));
            }
        }
    }
}

void to_float_q6_k(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ6_K*>(src);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < n / 256; ++i) {
        const float d = h2f(x[i].d);
        for (int half = 0; half < 2; ++half, y += 128) {
            const uint8_t* ql = x[i].ql + 64 * half;
            const __m256i l0 = load256(ql), l1 = load256(ql + 32), h = load256(x[i].qh + 32 * half);
            const __m256i L[4] = {   // elements 32k + l of this half (q6k_levels)
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(h, 2), m30)),
            };
            const int8_t* sc = x[i].scales + 8 * half;
            for (int k = 0; k < 4; ++k)
                put32_i8(y + 32 * k, minus(L[k], 32), _mm512_set1_ps(d * float(sc[2 * k])),
                         _mm512_set1_ps(d * float(sc[2 * k + 1])));
        }
    }
}

void register_dequantizers(TypeTable& t) {
    auto put = [&t](Type type, ToFloatFn fn) { t[uint32_t(type)].to_float_isa[int(Isa::Avx512)] = fn; };
    put(Type::Q4_0, to_float_q4_0);
    put(Type::Q4_1, to_float_q4_1);
    put(Type::Q8_0, to_float_q8_0);
    put(Type::Q5_0, to_float_q5_0);
    put(Type::Q5_1, to_float_q5_1);
    put(Type::IQ4_NL, to_float_iq4_nl);
    put(Type::IQ4_XS, to_float_iq4_xs);
    put(Type::Q4_K, to_float_q45_k<BlockQ4_K, false>);
    put(Type::Q5_K, to_float_q45_k<BlockQ5_K, true>);
    put(Type::Q6_K, to_float_q6_k);
}

}  // namespace z512
}  // namespace
}  // namespace lowbit

// ---- packed layouts (packed.h) ------------------------------------------------------------
#include "kernels/avx512/packed.h"
#include "kernels/avx512/packed512.h"
#include "kernels/avx512/ops512.h"
#include "kernels/avx512/ops512_impl.h"

namespace lowbit {
namespace packed512 {

namespace {
// One switch per entry point; F is the layout struct of packed512.h.
template <class Fn>
bool dispatch(Type t, Fn&& fn) {
    switch (t) {
        case Type::Q4_0: fn(pk::LQ4_0{}); return true;
        case Type::Q4_1: fn(pk::LQ4_1{}); return true;
        case Type::Q5_0: fn(pk::LQ5_0{}); return true;
        case Type::Q8_0: fn(pk::LQ8_0{}); return true;
        default: return false;
    }
}
}  // namespace

template <class Fn>
bool dispatch_kq(Type t, Fn&& fn) {
    switch (t) {
        case Type::Q4_K: fn(pk::KQ4{}); return true;
        case Type::Q6_K: fn(pk::KQ6{}); return true;
        default: return false;
    }
}

bool supports(Type t) {
    return dispatch(t, [](auto) {}) || dispatch_kq(t, [](auto) {});
}

size_t weight_row_bytes(Type t, int64_t n) {
    size_t out = 0;
    dispatch(t, [&](auto f) { out = pk::legacy_row_bytes<decltype(f)>(n); });
    dispatch_kq(t, [&](auto f) { out = size_t(n / 256) * decltype(f)::kBytes; });
    return out;
}

void pack_weights(Type t, int64_t n, int64_t nrows, const uint8_t* src, size_t src_stride, uint8_t* dst) {
    const size_t rb = weight_row_bytes(t, n);
    dispatch(t, [&](auto f) {
        for (int64_t r = 0; r < nrows; ++r) pk::pack_legacy_row<decltype(f)>(n, src + r * src_stride, dst + r * rb);
    });
    dispatch_kq(t, [&](auto f) {
        for (int64_t r = 0; r < nrows; ++r) pk::pack_kq_row<decltype(f)>(n, src + r * src_stride, dst + r * rb);
    });
}

namespace {
// A packed row of type kT, dequantized: unpacked into its original blocks (on the stack
// for rows up to kStackBytes, else the heap), then the registry's dequantizer, so the
// floats are exactly those of the original row.
template <Type kT>
void packed_row_to_float(const void* src, float* dst, int64_t n) {
    constexpr size_t kStackBytes = 32 * 1024;
    alignas(64) uint8_t stack[kStackBytes];
    const size_t bytes = row_bytes(kT, n);
    pk::HeapArray<uint8_t> heap(bytes > kStackBytes ? bytes : 0);
    uint8_t* buf = heap.p ? heap.p : stack;
    const uint8_t* p = static_cast<const uint8_t*>(src);
    dispatch(kT, [&](auto f) { pk::unpack_legacy_row<decltype(f)>(n, p, buf); });
    dispatch_kq(kT, [&](auto f) { pk::unpack_kq_row<decltype(f)>(n, p, buf); });
    best_to_float(kT)(buf, dst, n);
}
}  // namespace

ToFloatFn packed_to_float(Type t) {
    switch (t) {
        case Type::Q4_0: return packed_row_to_float<Type::Q4_0>;
        case Type::Q4_1: return packed_row_to_float<Type::Q4_1>;
        case Type::Q5_0: return packed_row_to_float<Type::Q5_0>;
        case Type::Q8_0: return packed_row_to_float<Type::Q8_0>;
        case Type::Q4_K: return packed_row_to_float<Type::Q4_K>;
        case Type::Q6_K: return packed_row_to_float<Type::Q6_K>;
        default: return nullptr;
    }
}

size_t act_row_bytes(Type t, int64_t n) {
    size_t out = 0;
    dispatch(t, [&](auto) { out = pk::legacy_act_bytes(n); });
    dispatch_kq(t, [&](auto) { out = size_t(n / 256) * pk::kActSbBytes; });
    return out;
}

void pack_act(Type t, int64_t n, const uint8_t* q, uint8_t* dst) {
    dispatch(t, [&](auto f) { pk::pack_legacy_act<decltype(f)>(n, q, dst); });
    dispatch_kq(t, [&](auto f) { pk::pack_kq_act<decltype(f)>(n, q, dst); });
}

void gemm(Type t, int64_t n, int64_t nrows, int64_t ntok, const uint8_t* w, size_t w_stride, const uint8_t* a,
          size_t a_stride, float* c, int64_t ldc) {
    dispatch(t, [&](auto f) { pk::legacy_gemm<decltype(f)>(n, nrows, ntok, w, w_stride, a, a_stride, c, ldc); });
    dispatch_kq(t, [&](auto f) { pk::kq_gemm<decltype(f)>(n, nrows, ntok, w, w_stride, a, a_stride, c, ldc); });
}

void gemm_f16(int64_t n, int64_t nrows, int64_t ntok, const uint16_t* w, int64_t w_stride, const float* a,
              int64_t a_stride, float* c, int64_t ldc) {
    pk::f16_gemm(n, nrows, ntok, w, w_stride, a, a_stride, c, ldc);
}

void round_to_f16(const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(k, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    }
}

namespace {
// F16's gemm slot: activations arrive as F16 rows; widened to floats (exact) first.
void gemm_slot_f16(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a, size_t a_stride,
                   float* c, int64_t ldc) {
    float* af = new float[size_t(n * ntok)];
    for (int64_t t = 0; t < ntok; ++t) {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(a) + size_t(t) * a_stride);
        for (int64_t i = 0; i < n; ++i) af[t * n + i] = h2f(src[i]);
    }
    gemm_f16(n, nrows, ntok, static_cast<const uint16_t*>(w), int64_t(w_stride / 2), af, n, c, ldc);
    delete[] af;
}

// The registry's gemm slot for this ISA: packs both operands on the fly (for tests and
// one-off products; matmul keeps packed weights and calls gemm() directly).
template <Type kT>
void gemm_slot(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a, size_t a_stride,
               float* c, int64_t ldc) {
    const size_t wr = weight_row_bytes(kT, n), ar = act_row_bytes(kT, n);
    uint8_t* pw = new uint8_t[wr * size_t(nrows) + ar * size_t(ntok)];
    uint8_t* pa = pw + wr * size_t(nrows);
    pack_weights(kT, n, nrows, static_cast<const uint8_t*>(w), w_stride, pw);
    for (int64_t t = 0; t < ntok; ++t) pack_act(kT, n, static_cast<const uint8_t*>(a) + size_t(t) * a_stride, pa + size_t(t) * ar);
    gemm(kT, n, nrows, ntok, pw, wr, pa, ar, c, ldc);
    delete[] pw;
}
}  // namespace

void register_gemm_slots(TypeTable& t) {
    auto put = [&t](Type type, GemmFn fn) {
        if (t[uint32_t(type)].name) t[uint32_t(type)].gemm[int(Isa::Avx512)] = fn;
    };
    put(Type::Q4_0, gemm_slot<Type::Q4_0>);
    put(Type::Q4_1, gemm_slot<Type::Q4_1>);
    put(Type::Q5_0, gemm_slot<Type::Q5_0>);
    put(Type::Q8_0, gemm_slot<Type::Q8_0>);
    put(Type::F16, gemm_slot_f16);
    put(Type::Q4_K, gemm_slot<Type::Q4_K>);
    put(Type::Q6_K, gemm_slot<Type::Q6_K>);
}

}  // namespace packed512
}  // namespace lowbit

namespace lowbit {

void register_avx512_kernels(TypeTable& t) {
    if (int(detect_best_isa()) < int(Isa::Avx512)) return;   // never hand out kernels the CPU lacks
    // The 256-bit kernels built with AVX-512 + VNNI first, then the 512-bit ones on top.
    fill_256bit_kernels(t, Isa::Avx512);
    auto put = [&t](Type type, Type act, VecDotFn fn) {
        TypeTraits& tr = t[uint32_t(type)];
        if (tr.name && tr.vec_dot_type == act) tr.vec_dot[int(Isa::Avx512)] = fn;
    };
    put(Type::F32, Type::F32, z512::vec_dot_f32);
    put(Type::F16, Type::F16, z512::vec_dot_f16);
    put(Type::BF16, Type::BF16, z512::vec_dot_bf16);
    put(Type::Q2_K, Type::Q8_K, z512::dot512_q2_k);
    put(Type::Q3_K, Type::Q8_K, z512::dot512_q3_k);
    put(Type::Q4_K, Type::Q8_K, z512::dot512_q45_k<BlockQ4_K, false>);
    put(Type::Q5_K, Type::Q8_K, z512::dot512_q45_k<BlockQ5_K, true>);
    put(Type::Q6_K, Type::Q8_K, z512::dot512_q6_k);
    put(Type::IQ4_XS, Type::Q8_K, z512::dot512_iq4_xs);
    put(Type::TQ2_0, Type::Q8_K, z512::dot512_tq2_0);
    if (z512::gathers_are_fast()) z512::register_legacy<true>(t);
    else z512::register_legacy<false>(t);
    packed512::register_gemm_slots(t);
    z512::register_dequantizers(t);
}

}  // namespace lowbit
