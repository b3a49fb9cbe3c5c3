// Shared by the super-block formats (K-quants, IQ4_XS, IQ4_NL): ggml's rounding helper
// and lowbit's error-driven refinement of an already quantized super-block.
//
// Every such block decodes to  y[i] = (d * sc[j]) * level(L[i]) - (dmin * m[j]),  j the
// sub-block of element i, with d and dmin fp16 and sc, m, L small integers.  The quality
// quantizers first build llama.cpp's block exactly, then let refine() search nearby codes
// for a smaller weighted squared error; the caller keeps whichever block is better, so the
// result is never worse than llama.cpp's.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "formats/fp16.h"

namespace lowbit {
namespace kq {

// ggml's nearest_int: round half to even through the float adder (exact for |f| < 2^22).
// Out-of-range input gives the same garbage ggml gets, which bit-exactness needs.
inline int nearest_int(float f) {
    const float v = f + 12582912.f;
    int32_t i;
    std::memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

// Sum of squares in element order, as ggml's quantizers compute it (sigma2, rms).
inline float sum_squares(const float* x, int n) {
    float s = 0;
    for (int i = 0; i < n; ++i) s += x[i] * x[i];
    return s;
}

// C's MAX/MIN macros (a > b ? a : b): unlike std::max they pass NaN through the same way.
inline float cmax(float a, float b) { return a > b ? a : b; }
inline float cmin(float a, float b) { return a < b ? a : b; }

// How a format turns codes into values (see the top of this file).
struct GridSpec {
    int nsub, sublen, nlev;
    int level_offset;        // level(L) = L + level_offset, when table is null
    const int8_t* table;     // else level(L) = table[L], sorted ascending
    int sc_lo, sc_hi;        // sub-scale code range
    int m_hi;                // min codes in [0, m_hi]; -1 when the format has no mins
    float level(int L) const { return table ? float(table[L]) : float(L + level_offset); }
};

struct SuperBlock {
    float d = 0, dmin = 0;
    int sc[16] = {}, m[16] = {};
    uint8_t L[256] = {};
};

// Level index whose value is nearest t.
inline int nearest_level(const GridSpec& g, float t) {
    if (!(t == t)) return 0;
    if (g.table) {
        int lo = 0;   // binary search on midpoints, as for a sorted codebook
        for (int step = g.nlev >> 1; step > 0; step >>= 1)
            if (t + t >= float(g.table[lo + step - 1] + g.table[lo + step])) lo += step;
        return lo;
    }
    const float c = cmin(cmax(t, -1e6f), 1e6f);   // keep nearest_int in its exact range
    int L = nearest_int(c) - g.level_offset;
    return L < 0 ? 0 : (L >= g.nlev ? g.nlev - 1 : L);
}

// Weighted squared error of sub-block j under scale D and offset M, levels chosen nearest;
// the value formula is the dequantizer's, float for float.
inline double sub_error(const GridSpec& g, const float* x, const float* w, float D, float M, uint8_t* L) {
    const float inv = D != 0 ? 1.0f / D : 0.0f;
    double err = 0;
    for (int i = 0; i < g.sublen; ++i) {
        const int l = D != 0 ? nearest_level(g, (x[i] + M) * inv) : 0;
        const float y = D * g.level(l) - M;
        const double e = double(x[i]) - double(y);
        err += double(w ? w[i] : 1.0f) * e * e;
        L[i] = uint8_t(l);
    }
    return err;
}

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Best (sc, m) of sub-block j within `radius` of its current codes, d and dmin fixed.
inline double best_sub_codes(const GridSpec& g, const float* x, const float* w, SuperBlock& b, int j, int radius) {
    const int n = g.sublen;
    const int m_lo = g.m_hi < 0 ? 0 : clampi(b.m[j] - radius, 0, g.m_hi);
    const int m_top = g.m_hi < 0 ? 0 : clampi(b.m[j] + radius, 0, g.m_hi);
    double best = -1;
    int best_sc = b.sc[j], best_m = b.m[j];
    uint8_t L[256];
    for (int sc = clampi(b.sc[j] - radius, g.sc_lo, g.sc_hi); sc <= clampi(b.sc[j] + radius, g.sc_lo, g.sc_hi); ++sc) {
        for (int m = m_lo; m <= m_top; ++m) {
            const double e = sub_error(g, x + j * n, w ? w + j * n : nullptr, b.d * float(sc), b.dmin * float(m), L);
            if (best < 0 || e < best) {
                best = e; best_sc = sc; best_m = m;
                std::memcpy(b.L + j * n, L, size_t(n));
            }
        }
    }
    b.sc[j] = best_sc; b.m[j] = best_m;
    return best;
}

inline double best_codes(const GridSpec& g, const float* x, const float* w, SuperBlock& b, int radius) {
    double err = 0;
    for (int j = 0; j < g.nsub; ++j) err += best_sub_codes(g, x, w, b, j, radius);
    return err;
}

// Least-squares d (and dmin) for the current codes and levels; false if degenerate.
inline bool fit_super_scales(const GridSpec& g, const float* x, const float* w, const SuperBlock& b,
                             double* d, double* dmin) {
    double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
    for (int j = 0; j < g.nsub; ++j) {
        for (int i = j * g.sublen; i < (j + 1) * g.sublen; ++i) {
            const double wi = w ? w[i] : 1.0, a = double(b.sc[j]) * g.level(b.L[i]), c = -double(b.m[j]);
            saa += wi * a * a; sab += wi * a * c; sbb += wi * c * c;
            sxa += wi * x[i] * a; sxb += wi * x[i] * c;
        }
    }
    if (g.m_hi < 0 || sbb == 0) {
        if (saa <= 0) return false;
        *d = sxa / saa; *dmin = b.dmin;
        return true;
    }
    const double det = saa * sbb - sab * sab;
    if (!(det > 1e-12 * saa * sbb)) return false;
    *d = (sxa * sbb - sxb * sab) / det;
    *dmin = (saa * sxb - sab * sxa) / det;
    return true;
}

// fp16 value `steps` representable values away from h (same sign; no wrap into inf/NaN).
inline float fp16_step(uint16_t h, int steps) {
    const int mag = clampi(int(h & 0x7fff) + steps, 0, 0x7bff);
    return fp16_to_fp32(uint16_t((h & 0x8000) | mag));
}

// The code nearest c * from / to, within [lo, hi] (clamped in double: the ratio may be huge).
inline int rescaled(int c, float from, float to, int lo, int hi) {
    const double v = std::nearbyint(double(c) * from / to);
    return v < lo ? lo : (v > hi ? hi : int(v));
}

// Move codes to the new super-scales so that sc * d stays roughly where it was.
inline void rescale_codes(const GridSpec& g, const SuperBlock& from, SuperBlock& to) {
    for (int j = 0; j < g.nsub; ++j) {
        if (to.d != 0) to.sc[j] = rescaled(from.sc[j], from.d, to.d, g.sc_lo, g.sc_hi);
        if (g.m_hi >= 0 && to.dmin != 0) to.m[j] = rescaled(from.m[j], from.dmin, to.dmin, 0, g.m_hi);
    }
}

// Coordinate search from block b: sub-codes for fixed super-scales, then super-scales
// refitted by least squares and tried with their fp16 neighbours.  Returns b's new error.
inline double refine(const GridSpec& g, const float* x, const float* w, SuperBlock& b, int iters, int d_steps) {
    const int radius = g.m_hi < 0 ? 2 : 1;
    double err = best_codes(g, x, w, b, radius);
    for (int it = 0; it < iters; ++it) {
        double d, dmin;
        if (!fit_super_scales(g, x, w, b, &d, &dmin)) break;
        const uint16_t hd = fp32_to_fp16(float(d)), hm = fp32_to_fp16(float(dmin));
        bool improved = false;
        SuperBlock best = b;
        for (int s = -d_steps; s <= d_steps; ++s) {
            SuperBlock t = b;
            t.d = fp16_step(hd, s);
            t.dmin = g.m_hi < 0 ? 0.0f : fp16_to_fp32(hm);
            if (!std::isfinite(t.d) || !std::isfinite(t.dmin)) continue;
            rescale_codes(g, b, t);
            const double e = best_codes(g, x, w, t, radius);
            if (e < err) { err = e; best = t; improved = true; }
        }
        b = best;
        if (!improved) break;
    }
    return err;
}

// Weighted squared error of a decoded block against x.
inline double block_error(const float* x, const float* y, const float* w, int n) {
    double err = 0;
    for (int i = 0; i < n; ++i) {
        const double e = double(x[i]) - double(y[i]);
        err += double(w ? w[i] : 1.0f) * e * e;
    }
    return err;
}

}  // namespace kq
}  // namespace lowbit
