// Packed layouts and register-blocked kernels (see packed.h).  Included by
// avx512_kernels.cpp only; internal linkage throughout (see x86_common.h for why).
#pragma once

#include <vector>



#include "formats/blocks.h"
#include "formats/registry.h"
#include "kernels/avx2/x86_common.h"

namespace lowbit {
namespace {
namespace pk {

// ---- legacy 32-element formats --------------------------------------------------------
// vec_dot_legacy (avx512_kernels.cpp) takes blocks sixteen at a time ("groups") and puts
// block kOrd[j] of the group into lane j; a last, partial group has its missing blocks'
// scales zeroed.  The packed layout keeps that lane assignment.  Per row, per group:
//
//   codes  4-bit formats: 4 x 64 bytes; register k, lane j = qs bytes 4k..4k+3 of block
//          kOrd[j], so (L & 15) holds elements 4k..4k+3 and (L >> 4) elements 16+4k..
//          Q8_0: 8 x 64 bytes, register m = the elements of code register m above, each
//          byte x stored as x ^ 0x80 (unsigned x + 128).
//   hbits  Q5_0 only: 8 x 64-bit masks, bit 4j+b of mask m = bit 4 of that code byte.
//   d      16 fp16 scales in lane order; Q4_1: then 16 fp16 mins.
//
// Activations, per token, per group: 8 x 64 bytes of Q8 codes (register m against code
// register m), 16 float scales dy, then 16 more lanes: Q8_1's float s (Q4_1), or the
// int32 offset -K * sum(codes of the block) that turns the unsigned code dot into the
// signed one (K = 8 for Q4_0, 16 for Q5_0, 128 for Q8_0).  Missing blocks are all zero.

constexpr int kOrd[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};

// First element of the four held by code register m (lane order within a block).
constexpr int elem0(int m) { return (m % 2) * 16 + 4 * (m / 2); }

struct LQ4_0 {
    using BX = BlockQ4_0;
    using BY = BlockQ8_0;
    static constexpr int kCodes = 256, kHbits = 0, kScales = 32, kOff = 8;
    static constexpr bool kMin = false;
};
struct LQ4_1 {
    using BX = BlockQ4_1;
    using BY = BlockQ8_1;
    static constexpr int kCodes = 256, kHbits = 0, kScales = 64, kOff = 0;
    static constexpr bool kMin = true;
};
struct LQ5_0 {
    using BX = BlockQ5_0;
    using BY = BlockQ8_0;
    static constexpr int kCodes = 256, kHbits = 64, kScales = 32, kOff = 16;
    static constexpr bool kMin = false;
};
struct LQ8_0 {
    using BX = BlockQ8_0;
    using BY = BlockQ8_0;
    static constexpr int kCodes = 512, kHbits = 0, kScales = 32, kOff = 128;
    static constexpr bool kMin = false;
};

template <class F>
constexpr int group_bytes() { return F::kCodes + F::kHbits + F::kScales; }
constexpr int kActGroupBytes = 512 + 64 + 64;

// Decoding streams every weight byte from memory once, R rows side by side (R streams).
// Rows of the packed formats are short (a 2048-wide Q4_0 row is 18 cache lines), so the
// hardware prefetcher barely ramps up on one before it ends; instead each step of a tile
// prefetches, into L2, the bytes the same step of the next tile (R rows further) will
// read.  Measured on the device machine's Xeon (Llama-3.2-1B shape, 16 threads, tg128,
// two rounds, against prefetching 512 bytes ahead in the same row into L1): Q4_0
// 133/118 -> 148/145 t/s, Q8_0 78/77 -> 83/85, Q4_K_M 84/86 -> 110/114.  Two tiles ahead
// was slower.  Prefetches never fault, so running past the end of a matrix is harmless.
inline void prefetch_next_tile(const uint8_t* here, size_t tile_bytes, int bytes) {
    for (int off = 0; off < bytes; off += 64) _mm_prefetch(reinterpret_cast<const char*>(here + tile_bytes + off), _MM_HINT_T1);
}
// F16 rows are long (4 KB and up): 512 bytes ahead in the same row, into L1 (the next
// tile's bytes measured the same or slower).
constexpr int kF16DecodePrefetch = 512;

// A last group of one or two blocks (a row of 576 = 16 + 2 blocks, say) is kept compact,
// both blocks in one register in element order, so that packed rows are no larger than
// the original ones and no work is spent on empty lanes:
//   weights  codes: 4-bit qs of both blocks (32 bytes) / Q8_0 codes ^ 0x80 (64 bytes);
//            Q5_0: qh of both (8 bytes); then d of both (fp16), Q4_1: m of both.
//   tokens   both blocks' 64 codes; 16 float dy with lanes 0 and 4 (the lanes the
//            group's blocks 0 and 1 own in vec_dot_legacy) set; 16 more lanes: Q8_1's s
//            in lanes 0 and 4, or the int32 offsets of block 0 in lane 0 and of block 1
//            in lane 8 (added before the per-block reduction).
// Longer partial groups are padded to sixteen blocks with zeros.
template <class F>
constexpr int tail_bytes() { return (F::kCodes == 256 ? 32 : 64) + (F::kHbits ? 8 : 0) + (F::kMin ? 8 : 4); }
constexpr int kActTailBytes = 64 + 64 + 64;

struct Split {
    int64_t groups;   // full (or zero-padded) groups of sixteen blocks
    int tail;         // 0, 1 or 2 blocks in a compact tail
};
inline Split split(int64_t n) {
    const int64_t nb = n / 32;
    const int64_t rem = nb % 16;
    if (rem > 2) return {nb / 16 + 1, 0};
    return {nb / 16, int(rem)};
}

inline uint64_t load_u64(const void* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

template <class F>
size_t legacy_row_bytes(int64_t n) {
    const Split sp = split(n);
    return size_t(sp.groups) * group_bytes<F>() + (sp.tail ? tail_bytes<F>() : 0);
}
inline size_t legacy_act_bytes(int64_t n) {
    const Split sp = split(n);
    return size_t(sp.groups) * kActGroupBytes + (sp.tail ? kActTailBytes : 0);
}

template <class F>
void pack_legacy_row(int64_t n, const uint8_t* src, uint8_t* dst) {
    const typename F::BX* x = reinterpret_cast<const typename F::BX*>(src);
    const int64_t nb = n / 32;
    const Split sp = split(n);
    for (int64_t g = 0; g < sp.groups; ++g) {
        uint8_t* o = dst + g * group_bytes<F>();
        std::memset(o, 0, group_bytes<F>());
        for (int j = 0; j < 16; ++j) {
            const int64_t b = 16 * g + kOrd[j];
            if (b >= nb) continue;
            const auto& blk = x[b];
            if constexpr (F::kCodes == 256) {
                for (int k = 0; k < 4; ++k) std::memcpy(o + 64 * k + 4 * j, blk.qs + 4 * k, 4);
            } else {
                for (int m = 0; m < 8; ++m)
                    for (int i = 0; i < 4; ++i) o[64 * m + 4 * j + i] = uint8_t(blk.qs[elem0(m) + i]) ^ 0x80;
            }
            if constexpr (F::kHbits != 0) {
                const uint32_t qh = load_u32(blk.qh);
                for (int m = 0; m < 8; ++m) {
                    uint64_t mask = load_u64(o + F::kCodes + 8 * m);
                    for (int i = 0; i < 4; ++i)
                        if ((qh >> (elem0(m) + i)) & 1) mask |= uint64_t(1) << (4 * j + i);
                    std::memcpy(o + F::kCodes + 8 * m, &mask, 8);
                }
            }
            uint8_t* sc = o + F::kCodes + F::kHbits;
            std::memcpy(sc + 2 * j, &blk.d, 2);
            if constexpr (F::kMin) std::memcpy(sc + 32 + 2 * j, &blk.m, 2);
        }
    }
    if (sp.tail) {
        uint8_t* o = dst + sp.groups * group_bytes<F>();
        std::memset(o, 0, tail_bytes<F>());
        for (int k = 0; k < sp.tail; ++k) {
            const auto& blk = x[16 * sp.groups + k];
            if constexpr (F::kCodes == 256) {
                std::memcpy(o + 16 * k, blk.qs, 16);
            } else {
                for (int i = 0; i < 32; ++i) o[32 * k + i] = uint8_t(blk.qs[i]) ^ 0x80;
            }
            constexpr int codes = F::kCodes == 256 ? 32 : 64;
            if constexpr (F::kHbits != 0) std::memcpy(o + codes + 4 * k, blk.qh, 4);
            uint8_t* sc = o + codes + (F::kHbits ? 8 : 0);
            std::memcpy(sc + 2 * k, &blk.d, 2);
            if constexpr (F::kMin) std::memcpy(sc + 4 + 2 * k, &blk.m, 2);
        }
    }
}

// The exact inverse of pack_legacy_row: the original blocks of one packed row.
template <class F>
void unpack_legacy_row(int64_t n, const uint8_t* src, uint8_t* dst) {
    typename F::BX* x = reinterpret_cast<typename F::BX*>(dst);
    const int64_t nb = n / 32;
    const Split sp = split(n);
    for (int64_t g = 0; g < sp.groups; ++g) {
        const uint8_t* o = src + g * group_bytes<F>();
        for (int j = 0; j < 16; ++j) {
            const int64_t b = 16 * g + kOrd[j];
            if (b >= nb) continue;
            auto& blk = x[b];
            if constexpr (F::kCodes == 256) {
                for (int k = 0; k < 4; ++k) std::memcpy(blk.qs + 4 * k, o + 64 * k + 4 * j, 4);
            } else {
                for (int m = 0; m < 8; ++m)
                    for (int i = 0; i < 4; ++i) blk.qs[elem0(m) + i] = int8_t(o[64 * m + 4 * j + i] ^ 0x80);
            }
            if constexpr (F::kHbits != 0) {
                uint32_t qh = 0;
                for (int m = 0; m < 8; ++m) {
                    const uint64_t mask = load_u64(o + F::kCodes + 8 * m);
                    for (int i = 0; i < 4; ++i)
                        if ((mask >> (4 * j + i)) & 1) qh |= 1u << (elem0(m) + i);
                }
                std::memcpy(blk.qh, &qh, 4);
            }
            const uint8_t* sc = o + F::kCodes + F::kHbits;
            std::memcpy(&blk.d, sc + 2 * j, 2);
            if constexpr (F::kMin) std::memcpy(&blk.m, sc + 32 + 2 * j, 2);
        }
    }
    if (sp.tail) {
        const uint8_t* o = src + sp.groups * group_bytes<F>();
        constexpr int codes = F::kCodes == 256 ? 32 : 64;
        for (int k = 0; k < sp.tail; ++k) {
            auto& blk = x[16 * sp.groups + k];
            if constexpr (F::kCodes == 256) {
                std::memcpy(blk.qs, o + 16 * k, 16);
            } else {
                for (int i = 0; i < 32; ++i) blk.qs[i] = int8_t(o[32 * k + i] ^ 0x80);
            }
            if constexpr (F::kHbits != 0) std::memcpy(blk.qh, o + codes + 4 * k, 4);
            const uint8_t* sc = o + codes + (F::kHbits ? 8 : 0);
            std::memcpy(&blk.d, sc + 2 * k, 2);
            if constexpr (F::kMin) std::memcpy(&blk.m, sc + 4 + 2 * k, 2);
        }
    }
}

template <class F>
void pack_legacy_act(int64_t n, const uint8_t* q, uint8_t* dst) {
    const typename F::BY* y = reinterpret_cast<const typename F::BY*>(q);
    const int64_t nb = n / 32;
    const Split sp = split(n);
    auto block_offset = [](const typename F::BY& blk) {
        int sum = 0;
        for (int i = 0; i < 32; ++i) sum += blk.qs[i];
        return int32_t(-F::kOff * sum);
    };
    for (int64_t g = 0; g < sp.groups; ++g) {
        uint8_t* o = dst + g * kActGroupBytes;
        std::memset(o, 0, kActGroupBytes);
        float* dy = reinterpret_cast<float*>(o + 512);
        for (int j = 0; j < 16; ++j) {
            const int64_t b = 16 * g + kOrd[j];
            if (b >= nb) continue;
            const auto& blk = y[b];
            for (int m = 0; m < 8; ++m) std::memcpy(o + 64 * m + 4 * j, blk.qs + elem0(m), 4);
            dy[j] = h2f(load_u16(&blk.d));
            if constexpr (F::kMin) {
                reinterpret_cast<float*>(o + 576)[j] = h2f(load_u16(&blk.s));
            } else {
                const int32_t off = block_offset(blk);
                std::memcpy(o + 576 + 4 * j, &off, 4);
            }
        }
    }
    if (sp.tail) {
        uint8_t* o = dst + sp.groups * kActGroupBytes;
        std::memset(o, 0, kActTailBytes);
        for (int k = 0; k < sp.tail; ++k) {
            const auto& blk = y[16 * sp.groups + k];
            std::memcpy(o + 32 * k, blk.qs, 32);
            reinterpret_cast<float*>(o + 64)[4 * k] = h2f(load_u16(&blk.d));
            if constexpr (F::kMin) {
                reinterpret_cast<float*>(o + 128)[4 * k] = h2f(load_u16(&blk.s));
            } else {
                const int32_t off = block_offset(blk);
                std::memcpy(o + 128 + 32 * k, &off, 4);
            }
        }
    }
}

// c[t * ldc + r] = _mm512_reduce_add_ps(v[r][t]) for r < R <= 4, t < T <= 4, sixteen
// reductions at once: the same tree of additions as GCC's _mm512_reduce_add_ps (halves,
// then quarters, then (0 + 2) + (1 + 3)), each addition on the same two operands, so the
// results are identical; lane 4t + r of the final vector holds output (r, t).
template <int R, int T>
inline void reduce_store(const __m512 (&v)[R][T], float* c, int64_t ldc) {
    auto at = [&](int i) { return i / 4 < R && i % 4 < T ? v[i / 4][i % 4] : _mm512_setzero_ps(); };
    __m512 u[8], w[4];
    for (int i = 0; i < 8; ++i) {
        const __m512 a = at(2 * i), b = at(2 * i + 1);
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int i = 0; i < 4; ++i)
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 z0 = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(w[0], w[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 z1 = _mm512_add_ps(_mm512_shuffle_ps(w[2], w[3], _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(w[2], w[3], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 f = _mm512_add_ps(_mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
    // lane 4L + e of f = reduce(input 4e + L) = output (r = e, t = L)
    for (int t = 0; t < T; ++t) {
        const __m128 q = t == 0 ? _mm512_castps512_ps128(f) : t == 1 ? _mm512_extractf32x4_ps(f, 1)
                       : t == 2 ? _mm512_extractf32x4_ps(f, 2) : _mm512_extractf32x4_ps(f, 3);
        if (R == 4) _mm_storeu_ps(c + t * ldc, q);
        else _mm_mask_storeu_ps(c + t * ldc, __mmask8((1u << R) - 1), q);
    }
}

// R rows x T tokens over every group; results c[t * ldc + r].
template <class F, int R, int T>
inline void legacy_tile(Split sp, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, float* c, int64_t ldc) {
    __m512 acc[R][T], accm[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = accm[r][t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t g = 0; g < sp.groups; ++g) {
        const uint8_t* wg[R];
        const uint8_t* ag[T];
        for (int r = 0; r < R; ++r) wg[r] = w + r * ws + g * group_bytes<F>();
        for (int t = 0; t < T; ++t) ag[t] = a + t * as + g * kActGroupBytes;
        if constexpr (T == 1)
            for (int r = 0; r < R; ++r) prefetch_next_tile(wg[r], R * ws, group_bytes<F>());
        // two independent vpdpbusd chains per output (even and odd code registers), so
        // that a single row's chain does not wait on the instruction's latency
        // (only worth its registers for a single token)
        constexpr bool kTwo = T == 1;
        __m512i is[R][T], is2[R][T];
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < T; ++t) {
                is[r][t] = F::kOff ? _mm512_loadu_si512(ag[t] + 576) : _mm512_setzero_si512();
                if constexpr (kTwo) is2[r][t] = _mm512_setzero_si512();
            }
        if constexpr (F::kCodes == 256) {
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; ++k) {
                __m512i c0[R], c1[R];
                for (int r = 0; r < R; ++r) {
                    const __m512i l = _mm512_loadu_si512(wg[r] + 64 * k);
                    c0[r] = _mm512_and_si512(l, m4);
                    c1[r] = _mm512_and_si512(_mm512_srli_epi16(l, 4), m4);
                    if constexpr (F::kHbits != 0) {
                        const __mmask64 h0 = load_u64(wg[r] + F::kCodes + 16 * k);
                        const __mmask64 h1 = load_u64(wg[r] + F::kCodes + 16 * k + 8);
                        c0[r] = _mm512_mask_add_epi8(c0[r], h0, c0[r], _mm512_set1_epi8(16));
                        c1[r] = _mm512_mask_add_epi8(c1[r], h1, c1[r], _mm512_set1_epi8(16));
                    }
                }
                for (int t = 0; t < T; ++t) {
                    const __m512i y0 = _mm512_loadu_si512(ag[t] + 64 * (2 * k));
                    const __m512i y1 = _mm512_loadu_si512(ag[t] + 64 * (2 * k + 1));
                    for (int r = 0; r < R; ++r) {
                        is[r][t] = _mm512_dpbusd_epi32(is[r][t], c0[r], y0);
                        if constexpr (kTwo) is2[r][t] = _mm512_dpbusd_epi32(is2[r][t], c1[r], y1);
                        else is[r][t] = _mm512_dpbusd_epi32(is[r][t], c1[r], y1);
                    }
                }
            }
        } else {
            _Pragma("GCC unroll 8") for (int m = 0; m < 8; ++m) {
                __m512i cm[R];
                for (int r = 0; r < R; ++r) cm[r] = _mm512_loadu_si512(wg[r] + 64 * m);
                for (int t = 0; t < T; ++t) {
                    const __m512i y = _mm512_loadu_si512(ag[t] + 64 * m);
                    for (int r = 0; r < R; ++r) {
                        if (m % 2 == 0 || !kTwo) is[r][t] = _mm512_dpbusd_epi32(is[r][t], cm[r], y);
                        else is2[r][t] = _mm512_dpbusd_epi32(is2[r][t], cm[r], y);
                    }
                }
            }
        }
        for (int r = 0; r < R; ++r) {
            const uint8_t* sc = wg[r] + F::kCodes + F::kHbits;
            const __m512 dx = _mm512_cvtph_ps(load256(sc));
            __m512 mx = _mm512_setzero_ps();
            if constexpr (F::kMin) mx = _mm512_cvtph_ps(load256(sc + 32));
            for (int t = 0; t < T; ++t) {
                const __m512 dy = _mm512_loadu_ps(reinterpret_cast<const float*>(ag[t] + 512));
                const __m512i tot = kTwo ? _mm512_add_epi32(is[r][t], is2[r][t]) : is[r][t];
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(dx, dy), acc[r][t]);
                if constexpr (F::kMin)
                    accm[r][t] = _mm512_fmadd_ps(mx, _mm512_loadu_ps(reinterpret_cast<const float*>(ag[t] + 576)), accm[r][t]);
            }
        }
    }
    if (sp.tail) {
        constexpr int codes = F::kCodes == 256 ? 32 : 64;
        const __m512i pair_idx = _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3);
        const __m512i pair_shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
        // lane 0 <- lane 0 (block 0's total), lane 4 <- lane 8 (block 1's)
        const __m512i to04 = _mm512_setr_epi32(0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        const __m512i to04f = _mm512_setr_epi32(0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        __m512i cx[R];
        __m512 dx[R], mx[R];
        for (int r = 0; r < R; ++r) {
            const uint8_t* wt = w + r * ws + sp.groups * group_bytes<F>();
            if constexpr (F::kCodes == 256) {
                const __m512i raw = _mm512_permutexvar_epi64(pair_idx, _mm512_castsi256_si512(load256(wt)));
                cx[r] = _mm512_and_si512(_mm512_srlv_epi64(raw, pair_shift), m4);
                if constexpr (F::kHbits != 0)
                    cx[r] = _mm512_mask_add_epi8(cx[r], load_u64(wt + codes), cx[r], _mm512_set1_epi8(16));
            } else {
                cx[r] = _mm512_loadu_si512(wt);
            }
            const uint8_t* sc = wt + codes + (F::kHbits ? 8 : 0);
            dx[r] = _mm512_maskz_permutexvar_ps(0x0011, to04f, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(sc))))));
            mx[r] = _mm512_setzero_ps();
            if constexpr (F::kMin)
                mx[r] = _mm512_maskz_permutexvar_ps(0x0011, to04f, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(int(load_u32(sc + 4))))));
        }
        for (int t = 0; t < T; ++t) {
            const uint8_t* at = a + t * as + sp.groups * kActGroupBytes;
            const __m512i y = _mm512_loadu_si512(at);
            const __m512 dy = _mm512_loadu_ps(reinterpret_cast<const float*>(at + 64));
            const __m512i init = F::kOff ? _mm512_loadu_si512(at + 128) : _mm512_setzero_si512();
            for (int r = 0; r < R; ++r) {
                __m512i s = _mm512_dpbusd_epi32(init, cx[r], y);   // lanes 0..7 block 0, 8..15 block 1
                s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_BADC));
                s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, _MM_PERM_CDAB));
                s = _mm512_add_epi32(s, _mm512_shuffle_i32x4(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
                const __m512i tot = _mm512_maskz_permutexvar_epi32(0x0011, to04, s);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot), _mm512_mul_ps(dx[r], dy), acc[r][t]);
                if constexpr (F::kMin)
                    accm[r][t] = _mm512_fmadd_ps(mx[r], _mm512_loadu_ps(reinterpret_cast<const float*>(at + 128)), accm[r][t]);
            }
        }
    }
    if constexpr (R * T >= 8) {
        __m512 v[R][T];
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < T; ++t) v[r][t] = _mm512_add_ps(acc[r][t], accm[r][t]);
        reduce_store<R, T>(v, c, ldc);
    } else {
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < T; ++t) c[t * ldc + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][t], accm[r][t]));
    }
}

template <class F>
void legacy_gemm(int64_t n, int64_t nrows, int64_t ntok, const uint8_t* w, size_t ws, const uint8_t* a, size_t as,
                 float* c, int64_t ldc) {
    const Split sp = split(n);
    if (ntok == 1) {
        int64_t r = 0;
        for (; r + 4 <= nrows; r += 4) legacy_tile<F, 4, 1>(sp, w + r * ws, ws, a, as, c + r, ldc);
        for (; r < nrows; ++r) legacy_tile<F, 1, 1>(sp, w + r * ws, ws, a, as, c + r, ldc);
        return;
    }
    // rows outermost in tiles of R so a tile of weights stays in L1 across all tokens
    // (Q4_1 carries a second accumulator per output: half the rows fit the registers)
    constexpr int T = 4;
    constexpr int R = F::kMin ? 2 : 4;
    int64_t r = 0, t = 0;
    for (; r + R <= nrows; r += R) {
        for (t = 0; t + T <= ntok; t += T) legacy_tile<F, R, T>(sp, w + r * ws, ws, a + t * as, as, c + t * ldc + r, ldc);
        for (; t < ntok; ++t) legacy_tile<F, R, 1>(sp, w + r * ws, ws, a + t * as, as, c + t * ldc + r, ldc);
    }
    for (; r < nrows; ++r) {
        for (t = 0; t + T <= ntok; t += T) legacy_tile<F, 1, T>(sp, w + r * ws, ws, a + t * as, as, c + t * ldc + r, ldc);
        for (; t < ntok; ++t) legacy_tile<F, 1, 1>(sp, w + r * ws, ws, a + t * as, as, c + t * ldc + r, ldc);
    }
}

// ---- F16 ------------------------------------------------------------------------------------
// vec_dot_f16 (avx512_kernels.cpp) keeps one accumulator of sixteen lanes per output and
// feeds it the elements in order, sixteen at a time (the last stretch masked), then
// reduces it with _mm512_reduce_add_ps.  Every kernel here does exactly that per output,
// so their results are bit-identical to it; the activations, F16 values, come as floats
// (exact).  That order (rather than four accumulators) lets a register tile hold one
// accumulator per output: R rows x T tokens share each load.
inline __mmask16 f16_mask(int64_t n, int64_t i) {
    return n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
}

// Sixteen weights as floats, from F16 or from weights already widened to float.
inline __m512 f16_load(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 f16_load(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 f16_load(const uint16_t* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
inline __m512 f16_load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }

// R x T outputs; weights as F16 or already widened to float (W).
template <int R, int T, class W>
inline void f16_tile(int64_t n, const W* w, int64_t ws, const float* a, int64_t as, float* c, int64_t ldc) {
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    const int64_t full = n / 16 * 16;
    for (int64_t i = 0; i < full; i += 16) {
        __m512 x[R];
        // decoding streams the rows from memory: a prefetch per row and cache line, 512 bytes
        // ahead (1.3x tg128 on the 135M F16 model, 2 threads, over the hardware prefetcher
        // alone; 256 to 768 bytes measured); prefetches past the end do not fault
        if constexpr (T == 1 && sizeof(W) == 2)   // (not the prompt path's widened rows, in cache)
            if (i % 32 == 0)
                for (int r = 0; r < R; ++r)
                    _mm_prefetch(reinterpret_cast<const char*>(w + r * ws + i) + kF16DecodePrefetch, _MM_HINT_T0);
        for (int r = 0; r < R; ++r) x[r] = f16_load(w + r * ws + i);
        for (int t = 0; t < T; ++t) {
            const __m512 y = _mm512_loadu_ps(a + t * as + i);
            for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(x[r], y, acc[r][t]);
        }
    }
    if (full < n) {
        const __mmask16 m = f16_mask(n, full);
        __m512 x[R];
        for (int r = 0; r < R; ++r) x[r] = f16_load(w + r * ws + full, m);
        for (int t = 0; t < T; ++t) {
            const __m512 y = _mm512_maskz_loadu_ps(m, a + t * as + full);
            for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(x[r], y, acc[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) c[t * ldc + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// f16_tile over elements [i0, i1) only (i1 = n includes the masked tail), its
// accumulators carried in `st` (R x T vectors, zero before the first span): long rows go
// in spans whose activations and weights fit L1, in the same order as f16_tile.
template <int R, int T>
inline void f16_tile_span(int64_t i0, int64_t i1, int64_t n, const float* w, int64_t ws, const float* a, int64_t as,
                          float* st) {
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_loadu_ps(st + 16 * (r * T + t));
    const int64_t full = (i1 < n ? i1 : n / 16 * 16);
    for (int64_t i = i0; i < full; i += 16) {
        __m512 x[R];
        for (int r = 0; r < R; ++r) x[r] = _mm512_loadu_ps(w + r * ws + i);
        for (int t = 0; t < T; ++t) {
            const __m512 y = _mm512_loadu_ps(a + t * as + i);
            for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(x[r], y, acc[r][t]);
        }
    }
    if (i1 == n && full < n) {
        const __mmask16 m = f16_mask(n, full);
        __m512 x[R];
        for (int r = 0; r < R; ++r) x[r] = _mm512_maskz_loadu_ps(m, w + r * ws + full);
        for (int t = 0; t < T; ++t) {
            const __m512 y = _mm512_maskz_loadu_ps(m, a + t * as + full);
            for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(x[r], y, acc[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) _mm512_storeu_ps(st + 16 * (r * T + t), acc[r][t]);
}

// F16 -> float for `rows` rows of n values (exact), rows `ws` floats apart.
inline void f16_rows_to_float(int64_t n, int rows, const uint16_t* w, int64_t w_stride, float* out, int64_t ws) {
    for (int r = 0; r < rows; ++r)
        for (int64_t i = 0; i < n; i += 16) {
            const __mmask16 m = f16_mask(n, i);
            _mm512_mask_storeu_ps(out + r * ws + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + r * w_stride + i)));
        }
}

// The T tokens of a tile against every row, four at a time: the tile's activations stay
// in L1 while the rows stream past.
template <int T>
inline void f16_token_tile(int64_t n, int64_t nrows, const float* wf, int64_t fs, const float* a, int64_t as, float* c,
                           int64_t ldc) {
    constexpr int64_t kSpan = 512;   // elements: T x 2 KB of activations, 4 x 2 KB of weights
    if (n <= 2 * kSpan) {
        int64_t r = 0;
        for (; r + 4 <= nrows; r += 4) f16_tile<4, T>(n, wf + r * fs, fs, a, as, c + r, ldc);
        for (; r < nrows; ++r) f16_tile<1, T>(n, wf + r * fs, fs, a, as, c + r, ldc);
        return;
    }
    // long rows: span by span over all rows, the accumulators parked in `st` in between
    static thread_local std::vector<float> st;
    st.assign(size_t(16 * nrows * T), 0.0f);
    for (int64_t i0 = 0; i0 < n; i0 += kSpan) {
        const int64_t i1 = n - i0 > kSpan ? i0 + kSpan : n;
        int64_t r = 0;
        for (; r + 4 <= nrows; r += 4) f16_tile_span<4, T>(i0, i1, n, wf + r * fs, fs, a, as, st.data() + 16 * r * T);
        for (; r < nrows; ++r) f16_tile_span<1, T>(i0, i1, n, wf + r * fs, fs, a, as, st.data() + 16 * r * T);
    }
    for (int64_t r = 0; r < nrows; ++r)
        for (int t = 0; t < T; ++t) c[t * ldc + r] = _mm512_reduce_add_ps(_mm512_loadu_ps(st.data() + 16 * (r * T + t)));
}

inline void f16_gemm(int64_t n, int64_t nrows, int64_t ntok, const uint16_t* w, int64_t ws, const float* a, int64_t as,
                     float* c, int64_t ldc) {
    if (ntok == 1) {   // decoding: stream the F16 rows, eight at a time (eight FMA chains)
        int64_t r = 0;
        for (; r + 8 <= nrows; r += 8) f16_tile<8, 1>(n, w + r * ws, ws, a, as, c + r, ldc);
        for (; r < nrows; ++r) f16_tile<1, 1>(n, w + r * ws, ws, a, as, c + r, ldc);
        return;
    }
    // prompts: the rows widened to float once, then tiles of six tokens against all of them
    static thread_local std::vector<float> wbuf;
    const int64_t fs = (n + 15) / 16 * 16;   // float row stride: whole 64-byte lines
    if (wbuf.size() < size_t(nrows * fs + 16)) wbuf.resize(size_t(nrows * fs + 16));
    float* const wf = reinterpret_cast<float*>(   // 64-byte aligned: no load straddles two lines
        (reinterpret_cast<uintptr_t>(wbuf.data()) + 63) & ~uintptr_t(63));
    for (int64_t r = 0; r < nrows; r += 4) {
        const int rows = nrows - r < 4 ? int(nrows - r) : 4;
        f16_rows_to_float(n, rows, w + r * ws, ws, wf + r * fs, fs);
    }
    int64_t t = 0;
    for (; t + 6 <= ntok; t += 6) f16_token_tile<6>(n, nrows, wf, fs, a + t * as, as, c + t * ldc, ldc);
    switch (ntok - t) {
        case 5: f16_token_tile<5>(n, nrows, wf, fs, a + t * as, as, c + t * ldc, ldc); break;
        case 4: f16_token_tile<4>(n, nrows, wf, fs, a + t * as, as, c + t * ldc, ldc); break;
        case 3: f16_token_tile<3>(n, nrows, wf, fs, a + t * as, as, c + t * ldc, ldc); break;
        case 2: f16_token_tile<2>(n, nrows, wf, fs, a + t * as, as, c + t * ldc, ldc); break;
        case 1: f16_token_tile<1>(n, nrows, wf, fs, a + t * as, as, c + t * ldc, ldc); break;
        default: break;
    }
}

// ---- K-quants: Q4_K, Q6_K against Q8_K ----------------------------------------------------
// dot512_q45_k / dot512_q6_k (avx512_kernels.cpp) reduce each super-block to sixteen exact
// 16-element group totals (lane g = group g) and accumulate them in float through
// z512::kq_accumulate.  Packed here so that four vpdpbusd leave group g's total in lane g
// directly: code register k, byte 4g + b = element 16g + 4k + b.  Per row, per super-block:
//   Q4_K  codes: 2 x 64 bytes, L0 (low nibble: k = 0, high: k = 1), L1 (k = 2, 3);
//         the 12 bytes of packed 6-bit scales and mins as stored; d, dmin (fp16)
//   Q6_K  low nibbles as Q4_K (128 bytes); 64 bytes H, byte 4g + b bits 2k..2k+1 = the
//         high two bits for register k; 16 signed scales; d (fp16)
// Tokens, per super-block: 4 x 64 code bytes in the same order; 16 floats bsums * d (the
// `bsy` of kq_accumulate); d (float), padded to 64 bytes.
// Prompt tiles take each row's scales decoded once per call (kq_decode_scales) rather than
// once per row and token tile: the decoding costs as much as the dot products it scales.
struct KQ4 {
    static constexpr int kBytes = 128 + 12 + 4;   // as large as the original block
};
struct KQ6 {
    static constexpr int kBytes = 128 + 64 + 16 + 2;
};
constexpr int kActSbBytes = 256 + 64 + 64;

// code byte position of element e (0..255) within a 256-byte register group: register k,
// byte 4g + b for e = 16g + 4k + b
inline void kq_pos(int e, int* k, int* byte) {
    const int g = e / 16, r = e % 16;
    *k = r / 4;
    *byte = 4 * g + r % 4;
}

template <class F>
void pack_kq_row(int64_t n, const uint8_t* src, uint8_t* dst) {
    for (int64_t i = 0; i < n / 256; ++i) {
        uint8_t* o = dst + i * F::kBytes;
        std::memset(o, 0, F::kBytes);
        uint8_t code[256];
        if constexpr (F::kBytes == KQ4::kBytes) {
            const BlockQ4_K& x = reinterpret_cast<const BlockQ4_K*>(src)[i];
            for (int k = 0; k < 4; ++k)
                for (int l = 0; l < 32; ++l) {
                    code[64 * k + l] = x.qs[32 * k + l] & 0xF;
                    code[64 * k + 32 + l] = x.qs[32 * k + l] >> 4;
                }
            std::memcpy(o + 128, x.scales, 12);
            std::memcpy(o + 140, &x.d, 2);
            std::memcpy(o + 142, &x.dmin, 2);
        } else {
            const BlockQ6_K& x = reinterpret_cast<const BlockQ6_K*>(src)[i];
            // ggml's layout: for 128-element halves h, l < 32: elements 128h + l + 32j from
            // ql[64h + l] (j = 0, 1: low nibbles of ql[64h + l + 32j]; j = 2, 3: high
            // nibbles of ql[64h + l + 32(j - 2)]) and qh[32h + l] bits 2j..2j+1
            for (int h = 0; h < 2; ++h)
                for (int l = 0; l < 32; ++l)
                    for (int j = 0; j < 4; ++j) {
                        const uint8_t q = j < 2 ? (x.ql[64 * h + l + 32 * j] & 0xF) : (x.ql[64 * h + l + 32 * (j - 2)] >> 4);
                        const uint8_t hb = (x.qh[32 * h + l] >> (2 * j)) & 3;
                        code[128 * h + l + 32 * j] = uint8_t(q | (hb << 4));
                    }
            std::memcpy(o + 192, x.scales, 16);
            std::memcpy(o + 208, &x.d, 2);
        }
        for (int e = 0; e < 256; ++e) {
            int k, byte;
            kq_pos(e, &k, &byte);
            const uint8_t lo = code[e] & 0xF;
            // nibble registers: L0 = k 0 (low) / 1 (high), L1 = k 2 / 3
            o[64 * (k / 2) + byte] |= uint8_t(lo << (4 * (k % 2)));
            if constexpr (F::kBytes == KQ6::kBytes) o[128 + byte] |= uint8_t(((code[e] >> 4) & 3) << (2 * k));
        }
    }
}

// The exact inverse of pack_kq_row: the original super-blocks of one packed row.
template <class F>
void unpack_kq_row(int64_t n, const uint8_t* src, uint8_t* dst) {
    for (int64_t i = 0; i < n / 256; ++i) {
        const uint8_t* o = src + i * F::kBytes;
        uint8_t code[256];
        for (int e = 0; e < 256; ++e) {
            int k, byte;
            kq_pos(e, &k, &byte);
            uint8_t c = uint8_t((o[64 * (k / 2) + byte] >> (4 * (k % 2))) & 0xF);
            if constexpr (F::kBytes == KQ6::kBytes) c = uint8_t(c | (((o[128 + byte] >> (2 * k)) & 3) << 4));
            code[e] = c;
        }
        if constexpr (F::kBytes == KQ4::kBytes) {
            BlockQ4_K& x = reinterpret_cast<BlockQ4_K*>(dst)[i];
            for (int k = 0; k < 4; ++k)
                for (int l = 0; l < 32; ++l) x.qs[32 * k + l] = uint8_t(code[64 * k + l] | (code[64 * k + 32 + l] << 4));
            std::memcpy(x.scales, o + 128, 12);
            std::memcpy(&x.d, o + 140, 2);
            std::memcpy(&x.dmin, o + 142, 2);
        } else {
            BlockQ6_K& x = reinterpret_cast<BlockQ6_K*>(dst)[i];
            std::memset(x.ql, 0, sizeof(x.ql));
            std::memset(x.qh, 0, sizeof(x.qh));
            for (int h = 0; h < 2; ++h)
                for (int l = 0; l < 32; ++l)
                    for (int j = 0; j < 4; ++j) {
                        const uint8_t c = code[128 * h + l + 32 * j];
                        if (j < 2) x.ql[64 * h + l + 32 * j] = uint8_t(x.ql[64 * h + l + 32 * j] | (c & 0xF));
                        else x.ql[64 * h + l + 32 * (j - 2)] = uint8_t(x.ql[64 * h + l + 32 * (j - 2)] | ((c & 0xF) << 4));
                        x.qh[32 * h + l] = uint8_t(x.qh[32 * h + l] | ((c >> 4) << (2 * j)));
                    }
            std::memcpy(x.scales, o + 192, 16);
            std::memcpy(&x.d, o + 208, 2);
        }
    }
}

template <class F>
void pack_kq_act(int64_t n, const uint8_t* q, uint8_t* dst) {
    const BlockQ8_K* y = reinterpret_cast<const BlockQ8_K*>(q);
    for (int64_t i = 0; i < n / 256; ++i) {
        uint8_t* o = dst + i * kActSbBytes;
        std::memset(o, 0, kActSbBytes);
        for (int e = 0; e < 256; ++e) {
            int k, byte;
            kq_pos(e, &k, &byte);
            o[64 * k + byte] = uint8_t(y[i].qs[e]);
        }
        // as z512::q8k_bsy: one rounding of the exact float(bsum) * d
        for (int g = 0; g < 16; ++g) {
            const float b = float(y[i].bsums[g]) * y[i].d;
            std::memcpy(o + 256 + 4 * g, &b, 4);
        }
        std::memcpy(o + 320, &y[i].d, 4);
    }
}

inline float load_f32(const void* p) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
}

// The scales of one packed super-block (see z512::KqScales).
template <class F>
inline z512::KqScales kq_scales(const uint8_t* o) {
    if constexpr (F::kBytes == KQ4::kBytes) return z512::k45_scales(o + 128, load_u16(o + 140), load_u16(o + 142));
    else return z512::k6_scales(reinterpret_cast<const int8_t*>(o + 192), load_u16(o + 208));
}

// Code registers k = 2p and 2p + 1 of one packed super-block, unsigned bytes.
template <class F>
inline void kq_codes(const uint8_t* o, int p, __m512i* c0, __m512i* c1) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i l = _mm512_loadu_si512(o + 64 * p);
    *c0 = _mm512_and_si512(l, m4);
    *c1 = _mm512_and_si512(_mm512_srli_epi16(l, 4), m4);
    if constexpr (F::kBytes == KQ6::kBytes) {
        // bits 2k..2k+1 of H -> bits 4..5
        const __m512i m30 = _mm512_set1_epi8(0x30), h = _mm512_loadu_si512(o + 128);
        *c0 = z512::or_and(*c0, p == 0 ? _mm512_slli_epi16(h, 4) : h, m30);
        *c1 = z512::or_and(*c1, p == 0 ? _mm512_slli_epi16(h, 2) : _mm512_srli_epi16(h, 2), m30);
    }
}

// Scales of every super-block of one packed row: nsb x (16 floats sc, 16 floats mn).
template <class F>
inline void kq_decode_scales(int64_t nsb, const uint8_t* w, float* out) {
    for (int64_t i = 0; i < nsb; ++i) {
        const z512::KqScales s = kq_scales<F>(w + i * F::kBytes);
        _mm512_storeu_ps(out + 32 * i, s.sc);
        _mm512_storeu_ps(out + 32 * i + 16, s.mn);
    }
}

// R rows x T tokens over every super-block; results c[t * ldc + r].  Scales come from
// `scales` (R rows of kq_decode_scales output, scale_stride floats apart) or, when it is
// null (decoding: each row is read once), straight from the packed blocks.
template <class F, int R, int T>
inline void kq_tile(int64_t nsb, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, float* c, int64_t ldc,
                    const float* scales, int64_t scale_stride) {
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nsb; ++i) {
        if constexpr (T == 1)
            for (int r = 0; r < R; ++r) prefetch_next_tile(w + r * ws + i * F::kBytes, R * ws, F::kBytes);
        __m512i is[R][T];
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < T; ++t) is[r][t] = _mm512_setzero_si512();
        for (int p = 0; p < 2; ++p) {
            __m512i c0[R], c1[R];
            for (int r = 0; r < R; ++r) kq_codes<F>(w + r * ws + i * F::kBytes, p, &c0[r], &c1[r]);
            for (int t = 0; t < T; ++t) {
                const uint8_t* at = a + t * as + i * kActSbBytes;
                const __m512i y0 = _mm512_loadu_si512(at + 128 * p), y1 = _mm512_loadu_si512(at + 128 * p + 64);
                for (int r = 0; r < R; ++r) is[r][t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(is[r][t], c0[r], y0), c1[r], y1);
            }
        }
        for (int r = 0; r < R; ++r) {
            z512::KqScales s;
            if (scales) {
                s.sc = _mm512_loadu_ps(scales + r * scale_stride + 32 * i);
                s.mn = _mm512_loadu_ps(scales + r * scale_stride + 32 * i + 16);
            } else {
                s = kq_scales<F>(w + r * ws + i * F::kBytes);
            }
            for (int t = 0; t < T; ++t) {
                const uint8_t* at = a + t * as + i * kActSbBytes;
                const __m512 yd = _mm512_set1_ps(load_f32(at + 320));
                acc[r][t] = z512::kq_accumulate(is[r][t], s, yd, _mm512_loadu_ps(reinterpret_cast<const float*>(at + 256)), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) c[t * ldc + r] = _mm512_reduce_add_ps(acc[r][t]);
}

// n elements of heap scratch, none for n = 0 (no std:: containers in the AVX-512 files:
// see x86_common.h).
template <class T>
struct HeapArray {
    T* p;
    explicit HeapArray(size_t n) : p(n ? static_cast<T*>(::operator new(n * sizeof(T))) : nullptr) {}
    ~HeapArray() { ::operator delete(p); }
    HeapArray(const HeapArray&) = delete;
    HeapArray& operator=(const HeapArray&) = delete;
};

// RR rows (scales decoded) against every token, T = 3 tokens at a time.
template <class F, int RR>
void kq_rows(int64_t nsb, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, int64_t ntok, float* c, int64_t ldc,
             const float* scales, int64_t stride) {
    int64_t t = 0;
    for (; t + 3 <= ntok; t += 3) kq_tile<F, RR, 3>(nsb, w, ws, a + t * as, as, c + t * ldc, ldc, scales, stride);
    for (; t < ntok; ++t) kq_tile<F, RR, 1>(nsb, w, ws, a + t * as, as, c + t * ldc, ldc, scales, stride);
}

template <class F>
void kq_gemm(int64_t n, int64_t nrows, int64_t ntok, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, float* c,
             int64_t ldc) {
    const int64_t nsb = n / 256;
    if (ntok == 1) {
        int64_t r = 0;
        for (; r + 4 <= nrows; r += 4) kq_tile<F, 4, 1>(nsb, w + r * ws, ws, a, as, c + r, ldc, nullptr, 0);
        for (; r < nrows; ++r) kq_tile<F, 1, 1>(nsb, w + r * ws, ws, a, as, c + r, ldc, nullptr, 0);
        return;
    }
    // 3 x 3 tiles: 9 integer and 9 float accumulators, 6 code registers and 2 token
    // registers fit the 32 zmm registers
    const int64_t stride = 32 * nsb;
    HeapArray<float> sb(size_t(3 * stride));
    for (int64_t r = 0; r < nrows; r += 3) {
        const int64_t nr = nrows - r < 3 ? nrows - r : 3;
        for (int64_t j = 0; j < nr; ++j) kq_decode_scales<F>(nsb, w + (r + j) * ws, sb.p + j * stride);
        const uint8_t* wr = w + r * ws;
        if (nr == 3) kq_rows<F, 3>(nsb, wr, ws, a, as, ntok, c + r, ldc, sb.p, stride);
        else if (nr == 2) kq_rows<F, 2>(nsb, wr, ws, a, as, ntok, c + r, ldc, sb.p, stride);
        else kq_rows<F, 1>(nsb, wr, ws, a, as, ntok, c + r, ldc, sb.p, stride);
    }
}

}  // namespace pk
}  // namespace
}  // namespace lowbit
