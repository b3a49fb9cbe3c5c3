// Scalar conversions between float and the 16-bit float formats, bit-exact with ggml
// (round to nearest even; NaN stays NaN).
#pragma once

#include <cstdint>
#include <cstring>

namespace lowbit {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));   // inf / nan
    if (exp != 0) return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return bits_f32(sign);
    // subnormal: value = mant * 2^-24
    float v = float(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
}

inline uint16_t fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00 | ((ax >> 13) & 0x3ff));  // nan (quiet)
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);                         // overflow -> inf
    if (ax < 0x38800000u) {                                                         // subnormal / zero
        // round(|f| * 2^24) to nearest even, done exactly in float arithmetic
        const float v = bits_f32(ax) + 0.5f;   // magic: add 0.5 puts the 2^-24 unit at bit 0
        return uint16_t(sign | (f32_bits(v) - f32_bits(0.5f)));
    }
    // normal: rebias exponent and round mantissa to nearest even
    uint32_t m = ax + 0xc8000fffu + ((ax >> 13) & 1);
    return uint16_t(sign | (m >> 13));
}

inline float bf16_to_fp32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000u) return uint16_t((u >> 16) | 64);   // quiet nan
    return uint16_t((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

}  // namespace lowbit
