// Helpers shared by the AVX2 and AVX-512 kernel files (both are compiled with at least
// -mavx2 -mfma -mf16c).  Everything here has internal linkage (anonymous namespace):
// an inline function with external linkage compiled into two translation units with
// different -m flags is an ODR trap, since the linker keeps one copy and may hand the
// AVX-512 build of it to the AVX2 file.  For the same reason the kernel files must not
// instantiate std:: templates or include formats/fp16.h (whose inline converters the
// scalar files also emit); they use the F16C helpers below instead.
#pragma once

// GCC 12's AVX-512 intrinsic headers trip -Wmaybe-uninitialized on their own "undefined
// vector" idiom (GCC bug 105593, fixed in 13); silence it for the kernel files only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace lowbit {
namespace {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }   // exact, subnormals and inf/nan included

template <class T>
inline uint16_t load_u16(const T* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline uint32_t load_u32(const void* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

inline float hsum_ps(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

inline int hsum_epi32(__m256i a) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// Lane k of the result is the sum of the eight lanes of s[k].  Integer adds only, so
// each total is exactly the block's integer dot.
inline __m256i reduce8_epi32(const __m256i s[8]) {
    const __m256i t0 = _mm256_hadd_epi32(s[0], s[1]);
    const __m256i t1 = _mm256_hadd_epi32(s[2], s[3]);
    const __m256i t2 = _mm256_hadd_epi32(s[4], s[5]);
    const __m256i t3 = _mm256_hadd_epi32(s[6], s[7]);
    const __m256i u0 = _mm256_hadd_epi32(t0, t1);   // per 128-bit half: s0 s1 s2 s3
    const __m256i u1 = _mm256_hadd_epi32(t2, t3);   // per 128-bit half: s4 s5 s6 s7
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

// Eight fp16 values, one per block, at p, p + stride, ... (stride in bytes) -> float.
// Copied through a small stack buffer: plain loads and stores, no shuffle-port uops
// (a vpinsrw chain costs eight of them and measured ~15% slower on Q4_1).
inline __m256 load_fp16x8(const void* p, size_t stride) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    alignas(16) uint16_t h[8];
    for (int k = 0; k < 8; ++k) h[k] = load_u16(b + k * stride);
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
}

// Two adjacent fp16 values (d, m) per block for eight blocks -> d and m as floats.
inline void load_fp16x2x8(const void* p, size_t stride, __m256& lo, __m256& hi) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    alignas(32) uint32_t v[8];
    for (int k = 0; k < 8; ++k) v[k] = load_u32(b + k * stride);
    const __m256i dw = _mm256_load_si256(reinterpret_cast<const __m256i*>(v));
    const __m256i l = _mm256_and_si256(dw, _mm256_set1_epi32(0xFFFF));
    const __m256i h = _mm256_srli_epi32(dw, 16);
    // packus gives [l0..3 h0..3 | l4..7 h4..7]; the permute makes it [l0..7 | h0..7]
    const __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(l, h), 0xD8);
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(pk));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(pk, 1));
}

// 16 bytes of packed nibbles -> 32 bytes: low nibbles in bytes 0..15, high in 16..31
// (element order of the legacy 32-element blocks).
// (Broadcast load + per-lane variable shift: no shuffle-port uop.)
inline __m256i nibbles_32(const uint8_t* qs) {
    const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    return _mm256_and_si256(_mm256_srlv_epi64(t, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, byte j = 0xFF if bit j is set, else 0.
inline __m256i bits_to_bytes_32(uint32_t bits) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(int(bits)), shuf);
    const __m256i sel = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(sel, _mm256_set1_epi64x(-1));
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

}  // namespace
}  // namespace lowbit
