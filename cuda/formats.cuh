// Device-side decoders of the block formats, one struct per format.
//
// Every format is read in "units" of 32 consecutive elements (one activation block of
// the int8 path).  A unit decodes to 32 small integers w (packed 4 per int, element order,
// as __dp4a wants them) plus, per 16-element half h, a scale and an offset such that
//     element value = sc[h] * w + of[h]
// e.g. Q4_0: w = nibble, sc = d, of = -8d; Q4_K: w = nibble, sc = d*scale_j, of = -dmin*min_j.
// Then dot(unit, x) = xd * (sc0 * idot_lo + sc1 * idot_hi) + of0 * xs_lo + of1 * xs_hi,
// with xs_h = xd * sum(xq over half h) precomputed when x is quantized.
//
// Byte layouts are blocks.h's (ggml's); element order is the one the scalar dequantizers
// in cpp/src/formats/{legacy,kquants,iquants}.cpp produce.  `b` points at a block whose
// address is a multiple of ALIGN (rows are padded to 16 bytes on the device, so a block
// at index i of a row is aligned to gcd(16, BYTES)).
#pragma once

#include <cstdint>
#include <cuda_fp16.h>

namespace lowbit::cuda {

struct Unit {
    int w[8];          // 32 int8 values, element order
    float sc[2], of[2];
};

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t ld16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
template <int ALIGN>
__device__ __forceinline__ uint32_t ld32(const uint8_t* p) {
    if constexpr (ALIGN % 4 == 0) {
        return *reinterpret_cast<const uint32_t*>(p);
    } else {
        const uint16_t* q = reinterpret_cast<const uint16_t*>(p);
        return uint32_t(q[0]) | (uint32_t(q[1]) << 16);
    }
}
// bit i of a 4-bit value -> bit 0 of byte i
__device__ __forceinline__ uint32_t spread4(uint32_t n) { return (n * 0x00204081u) & 0x01010101u; }

// word k (bytes 4k..4k+3) of 16 bytes of packed nibbles: elements 4k.. (low nibbles) and
// 16 + 4k.. (high), ggml's order for Q4_0/Q4_1/IQ4_NL
__device__ __forceinline__ void put_nibbles(uint32_t q, int k, Unit& u) {
    u.w[k] = int(q & 0x0F0F0F0Fu);
    u.w[k + 4] = int((q >> 4) & 0x0F0F0F0Fu);
}
__device__ __forceinline__ void put_scale(float sc, float of, Unit& u) {
    u.sc[0] = u.sc[1] = sc;
    u.of[0] = u.of[1] = of;
}

struct FQ4_0 {
    static constexpr int BYTES = 18, QK = 32, ALIGN = 2, CHUNK = 128, PH = 2, PNV = 1;
    static __device__ __forceinline__ void unit_planar(const uint4* p, uint32_t h, Unit& u) {
        put_nibbles(p[0].x, 0, u); put_nibbles(p[0].y, 1, u); put_nibbles(p[0].z, 2, u); put_nibbles(p[0].w, 3, u);
        const float d = h2f(uint16_t(h));
        put_scale(d, -8.0f * d, u);
    }
    static __device__ __forceinline__ void unit(const uint8_t* b, int, Unit& u) {
#pragma unroll
        for (int k = 0; k < 4; ++k) put_nibbles(ld32<ALIGN>(b + 2 + 4 * k), k, u);
        const float d = h2f(ld16(b));
        put_scale(d, -8.0f * d, u);
    }
};

struct FQ4_1 {
    static constexpr int BYTES = 20, QK = 32, ALIGN = 4, CHUNK = 128, PH = 4, PNV = 1;
    static __device__ __forceinline__ void unit_planar(const uint4* p, uint32_t h, Unit& u) {
        put_nibbles(p[0].x, 0, u); put_nibbles(p[0].y, 1, u); put_nibbles(p[0].z, 2, u); put_nibbles(p[0].w, 3, u);
        put_scale(h2f(uint16_t(h)), h2f(uint16_t(h >> 16)), u);
    }
    static __device__ __forceinline__ void unit(const uint8_t* b, int, Unit& u) {
#pragma unroll
        for (int k = 0; k < 4; ++k) put_nibbles(ld32<ALIGN>(b + 4 + 4 * k), k, u);
        put_scale(h2f(ld16(b)), h2f(ld16(b + 2)), u);
    }
};

struct FQ5_0 {
    static constexpr int BYTES = 22, QK = 32, ALIGN = 2, CHUNK = 128, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int, Unit& u) {
        const float d = h2f(ld16(b));
        const uint32_t qh = ld32<ALIGN>(b + 2);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t q = ld32<ALIGN>(b + 6 + 4 * k);
            u.w[k] = int((q & 0x0F0F0F0Fu) | (spread4((qh >> (4 * k)) & 0xF) << 4));
            u.w[k + 4] = int(((q >> 4) & 0x0F0F0F0Fu) | (spread4((qh >> (16 + 4 * k)) & 0xF) << 4));
        }
        u.sc[0] = u.sc[1] = d;
        u.of[0] = u.of[1] = -16.0f * d;
    }
};

struct FQ5_1 {
    static constexpr int BYTES = 24, QK = 32, ALIGN = 8, CHUNK = 128, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int, Unit& u) {
        const float d = h2f(ld16(b)), m = h2f(ld16(b + 2));
        const uint32_t qh = ld32<ALIGN>(b + 4);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const uint32_t q = ld32<ALIGN>(b + 8 + 4 * k);
            u.w[k] = int((q & 0x0F0F0F0Fu) | (spread4((qh >> (4 * k)) & 0xF) << 4));
            u.w[k + 4] = int(((q >> 4) & 0x0F0F0F0Fu) | (spread4((qh >> (16 + 4 * k)) & 0xF) << 4));
        }
        u.sc[0] = u.sc[1] = d;
        u.of[0] = u.of[1] = m;
    }
};

struct FQ8_0 {
    static constexpr int BYTES = 34, QK = 32, ALIGN = 2, CHUNK = 128, PH = 2, PNV = 2;
    static __device__ __forceinline__ void unit_planar(const uint4* p, uint32_t h, Unit& u) {
        u.w[0] = int(p[0].x); u.w[1] = int(p[0].y); u.w[2] = int(p[0].z); u.w[3] = int(p[0].w);
        u.w[4] = int(p[1].x); u.w[5] = int(p[1].y); u.w[6] = int(p[1].z); u.w[7] = int(p[1].w);
        put_scale(h2f(uint16_t(h)), 0.0f, u);
    }
    static __device__ __forceinline__ void unit(const uint8_t* b, int, Unit& u) {
        const float d = h2f(ld16(b));
#pragma unroll
        for (int k = 0; k < 8; ++k) u.w[k] = int(ld32<ALIGN>(b + 2 + 4 * k));
        put_scale(d, 0.0f, u);
    }
};

// kvalues_iq4nl[idx] for four indices at once: the table as four little-endian words
// (entries 0-3, 4-7, 8-11, 12-15), picked with byte permutes (prmt) as llama.cpp does.
__device__ __forceinline__ uint32_t iq4nl_lookup(uint32_t idx /* one 4-bit index in the low nibble of each byte */) {
    const uint32_t T0 = (uint32_t(uint8_t(-127))) | (uint32_t(uint8_t(-104)) << 8) | (uint32_t(uint8_t(-83)) << 16) |
                        (uint32_t(uint8_t(-65)) << 24);
    const uint32_t T1 = (uint32_t(uint8_t(-49))) | (uint32_t(uint8_t(-35)) << 8) | (uint32_t(uint8_t(-22)) << 16) |
                        (uint32_t(uint8_t(-10)) << 24);
    const uint32_t T2 = 1u | (13u << 8) | (25u << 16) | (38u << 24);
    const uint32_t T3 = 53u | (69u << 8) | (89u << 16) | (113u << 24);
    // byte-lane indices -> selector nibbles
    const uint32_t s = (idx & 0xFu) | ((idx >> 4) & 0xF0u) | ((idx >> 8) & 0xF00u) | ((idx >> 12) & 0xF000u);
    const uint32_t lo = __byte_perm(T0, T1, s & 0x7777u);
    const uint32_t hi = __byte_perm(T2, T3, s & 0x7777u);
    return __byte_perm(lo, hi, 0x3210u | ((s & 0x8888u) >> 1));
}

// word k of 16 bytes of IQ4_NL indices: put_nibbles through the codebook
__device__ __forceinline__ void put_iq4nl(uint32_t q, int k, Unit& u) {
    u.w[k] = int(iq4nl_lookup(q & 0x0F0F0F0Fu));
    u.w[k + 4] = int(iq4nl_lookup((q >> 4) & 0x0F0F0F0Fu));
}

struct FIQ4_NL {
    static constexpr int BYTES = 18, QK = 32, ALIGN = 2, CHUNK = 128, PH = 2, PNV = 1;
    static __device__ __forceinline__ void unit_planar(const uint4* p, uint32_t h, Unit& u) {
        put_iq4nl(p[0].x, 0, u); put_iq4nl(p[0].y, 1, u); put_iq4nl(p[0].z, 2, u); put_iq4nl(p[0].w, 3, u);
        put_scale(h2f(uint16_t(h)), 0.0f, u);
    }
    static __device__ __forceinline__ void unit(const uint8_t* b, int, Unit& u) {
#pragma unroll
        for (int k = 0; k < 4; ++k) put_iq4nl(ld32<ALIGN>(b + 2 + 4 * k), k, u);
        put_scale(h2f(ld16(b)), 0.0f, u);
    }
};

// ---- k-quants: 256-element super-blocks, 8 units each ---------------------------------

struct FQ2_K {   // scales[16] qs[64] d dmin
    static constexpr int BYTES = 84, QK = 256, ALIGN = 4, CHUNK = 16, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int j, Unit& u) {
        const float d = h2f(ld16(b + 80)), dmin = h2f(ld16(b + 82));
        const uint8_t* qs = b + 16 + 32 * (j >> 2);
        const int sh = 2 * (j & 3);
#pragma unroll
        for (int k = 0; k < 8; ++k) u.w[k] = int((ld32<ALIGN>(qs + 4 * k) >> sh) & 0x03030303u);
        const uint32_t sc2 = ld16(b + 2 * j);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t sc = (sc2 >> (8 * h)) & 0xFF;
            u.sc[h] = d * float(sc & 0xF);
            u.of[h] = -dmin * float(sc >> 4);
        }
    }
};

struct FQ3_K {   // hmask[32] qs[64] scales[12] d
    static constexpr int BYTES = 110, QK = 256, ALIGN = 2, CHUNK = 16, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int j, Unit& u) {
        const float d = h2f(ld16(b + 108));
        const uint8_t* qs = b + 32 + 32 * (j >> 2);
        const int sh = 2 * (j & 3);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const uint32_t lo = (ld32<ALIGN>(qs + 4 * k) >> sh) & 0x03030303u;
            const uint32_t hb = (ld32<ALIGN>(b + 4 * k) >> j) & 0x01010101u;
            u.w[k] = int(lo | (hb << 2));
        }
        const uint8_t* s = b + 96;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int g = 2 * j + h;
            const int lo = g < 8 ? (s[g] & 0xF) : (s[g - 8] >> 4);
            const int hi = (s[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
            u.sc[h] = d * float((lo | (hi << 4)) - 32);
            u.of[h] = -4.0f * u.sc[h];
        }
    }
};

// ggml's get_scale_min_k4
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

struct FQ4_K {   // d dmin scales[12] qs[128]
    static constexpr int BYTES = 144, QK = 256, ALIGN = 16, CHUNK = 16, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int j, Unit& u) {
        const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
        const uint8_t* qs = b + 16 + 32 * (j >> 1);
        const int sh = 4 * (j & 1);
#pragma unroll
        for (int k = 0; k < 8; ++k) u.w[k] = int((ld32<ALIGN>(qs + 4 * k) >> sh) & 0x0F0F0F0Fu);
        int sc, m;
        scale_min_k4(j, b + 4, sc, m);
        u.sc[0] = u.sc[1] = d * float(sc);
        u.of[0] = u.of[1] = -dmin * float(m);
    }
};

struct FQ5_K {   // d dmin scales[12] qh[32] qs[128]
    static constexpr int BYTES = 176, QK = 256, ALIGN = 16, CHUNK = 16, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int j, Unit& u) {
        const float d = h2f(ld16(b)), dmin = h2f(ld16(b + 2));
        const uint8_t* qs = b + 48 + 32 * (j >> 1);
        const int sh = 4 * (j & 1);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const uint32_t lo = (ld32<ALIGN>(qs + 4 * k) >> sh) & 0x0F0F0F0Fu;
            const uint32_t hb = (ld32<ALIGN>(b + 16 + 4 * k) >> j) & 0x01010101u;
            u.w[k] = int(lo | (hb << 4));
        }
        int sc, m;
        scale_min_k4(j, b + 4, sc, m);
        u.sc[0] = u.sc[1] = d * float(sc);
        u.of[0] = u.of[1] = -dmin * float(m);
    }
};

struct FQ6_K {   // ql[128] qh[64] scales[16] (int8) d
    static constexpr int BYTES = 210, QK = 256, ALIGN = 2, CHUNK = 16, PH = 0, PNV = 0;
    static __device__ __forceinline__ void unit(const uint8_t* b, int j, Unit& u) {
        const float d = h2f(ld16(b + 208));
        const int n = j >> 2, qq = j & 3;
        const uint8_t* ql = b + 64 * n + 32 * (qq & 1);
        const uint8_t* qh = b + 128 + 32 * n;
        const int s4 = 4 * (qq >> 1), s2 = 2 * qq;
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const uint32_t lo = (ld32<ALIGN>(ql + 4 * k) >> s4) & 0x0F0F0F0Fu;
            const uint32_t hi = (ld32<ALIGN>(qh + 4 * k) >> s2) & 0x03030303u;
            u.w[k] = int(lo | (hi << 4));
        }
        const uint32_t sc2 = ld16(b + 192 + 2 * j);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            u.sc[h] = d * float(int8_t(uint8_t(sc2 >> (8 * h))));
            u.of[h] = -32.0f * u.sc[h];
        }
    }
};

// ---- the planar row layout (decode streams it without shared memory) -------------------
//
// A format with PNV > 0 has blocks of PH header bytes (scales) followed by PNV * 16 bytes
// of quants.  On the device its rows may be stored planar: plane j (j < PNV) holds bytes
// [PH + 16j, PH + 16j + 16) of every block, nb * 16 bytes, then the headers, nb * PH
// bytes.  The row keeps its size; blocks are no longer contiguous, but every block's quants
// are 16-byte aligned and a warp reading block lane + 32k of plane j reads 512 contiguous
// bytes: one coalesced 16-byte load per lane straight into registers.

// Byte i of a planar row of nb blocks comes from byte planar_source(i) of the stored row.
__host__ __device__ inline int planar_source(int i, int nb, int ph, int pnv) {
    const int plane_bytes = nb * 16;
    if (i < pnv * plane_bytes) {
        const int j = i / plane_bytes, r = i % plane_bytes;
        return (r / 16) * (ph + 16 * pnv) + ph + 16 * j + r % 16;
    }
    const int r = i - pnv * plane_bytes;
    return (r / ph) * (ph + 16 * pnv) + r % ph;
}

template <int PH>
__device__ __forceinline__ uint32_t planar_header(const uint8_t* p) {
    if constexpr (PH == 4) return *reinterpret_cast<const uint32_t*>(p);
    else return *reinterpret_cast<const uint16_t*>(p);
}

// Unit u (32 values) of a row of nb blocks, stored as the format's blocks or planar.
template <class F>
__device__ __forceinline__ void row_unit(const uint8_t* row, int nb, int u, bool planar, Unit& un) {
    if constexpr (F::PNV > 0) {
        if (planar) {   // QK == 32: unit u is block u
            uint4 p[F::PNV];
#pragma unroll
            for (int j = 0; j < F::PNV; ++j) p[j] = reinterpret_cast<const uint4*>(row)[size_t(j) * nb + u];
            F::unit_planar(p, planar_header<F::PH>(row + size_t(F::PNV) * nb * 16 + size_t(u) * F::PH), un);
            return;
        }
    }
    constexpr int UNITS = F::QK / 32;
    F::unit(row + size_t(u / UNITS) * F::BYTES, u % UNITS, un);
}

// value of element l (0..31) of a decoded unit
__device__ __forceinline__ float unit_value(const Unit& u, int l) {
    const int8_t q = int8_t(uint8_t(uint32_t(u.w[l >> 2]) >> (8 * (l & 3))));
    return u.sc[l >> 4] * float(q) + u.of[l >> 4];
}

}  // namespace lowbit::cuda
