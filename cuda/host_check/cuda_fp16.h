// Stand-in for CUDA's header so that cuda/formats.cuh compiles as host C++ (host_check.cpp).
#pragma once
#include <cstdint>
#include "formats/fp16.h"
struct __half { uint16_t x; };
struct alignas(16) uint4 { uint32_t x, y, z, w; };
inline __half __ushort_as_half(uint16_t v) { return __half{v}; }
inline float __half2float(__half h) { return lowbit::fp16_to_fp32(h.x); }
inline uint32_t __byte_perm(uint32_t x, uint32_t y, uint32_t s) {
    const uint64_t v = uint64_t(x) | (uint64_t(y) << 32);
    uint32_t r = 0;
    for (int i = 0; i < 4; ++i) r |= uint32_t((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
    return r;
}
