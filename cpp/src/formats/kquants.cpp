// K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K on 256-element super-blocks, and Q8_K, the
// activation format their dots take.
//
// from_float is llama.cpp's quantize_row_q*_K_ref and to_float its dequantize_row_q*_K,
// float op for float op (the build has no FMA contraction), so blocks match ggml byte for
// byte and values bit for bit.  quantize_rows first builds exactly what llama.cpp's
// quantize_q*_K builds (the _ref path without an imatrix, the imatrix-weighted _impl path
// with one), then lets kq::refine search nearby codes for a smaller (importance-)weighted
// squared error and keeps whichever block is better.
#include <cmath>
#include <cstring>

#include "formats/blocks.h"
#include "formats/fp16.h"
#include "formats/kquant_search.h"
#include "formats/registry.h"

namespace lowbit {

namespace {

using kq::cmax;
using kq::cmin;
using kq::nearest_int;

constexpr float kGroupMaxEps = 1e-15f;   // ggml's GROUP_MAX_EPS: below this a group is zero

inline int imax(int a, int b) { return a > b ? a : b; }
inline int imin(int a, int b) { return a < b ? a : b; }

// ---- llama.cpp's scale searches ----------------------------------------------------------

// Symmetric levels in [-nmax, nmax-1] with weights qw (or x^2): the rmse_type == 1 case of
// ggml's make_qx_quants, the only one the K-quants use.  L gets level + nmax.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
    auto fit = [&](float iscale, float* sumlx, float* suml2, bool store) {
        *sumlx = 0; *suml2 = 0;
        for (int i = 0; i < n; ++i) {
            const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
            if (store) L[i] = int8_t(l + nmax);
            const float w = weight(i);
            *sumlx += w * x[i] * float(l);
            *suml2 += w * float(l) * float(l);
        }
    };
    float sumlx, suml2;
    fit(float(-nmax) / max, &sumlx, &suml2, true);
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        const float iscale = -(float(nmax) + 0.1f * float(is)) / max;
        fit(iscale, &sumlx, &suml2, false);
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            fit(iscale, &sumlx, &suml2, true);
            scale = sumlx / suml2; best = scale * sumlx;
        }
    }
    return scale;
}

// Q3_K reference: x^2-weighted levels in [-nmax, nmax-1], then up to 5 passes of moving
// single levels while that raises sumlx^2/suml2.  L gets level + nmax.
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    const float iscale = float(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
        L[i] = int8_t(l);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * float(L[i]);
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * float(L[i]) * float(L[i]);
            const int new_l = imax(-nmax, imin(nmax - 1, nearest_int(x[i] * sl2 / slx)));
            if (new_l == L[i]) continue;
            slx += w * x[i] * float(new_l);
            sl2 += w * float(new_l) * float(new_l);
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = int8_t(new_l); sumlx = slx; suml2 = sl2;
                ++n_changed;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Shared tail of make_qkx2/3_quants: the weighted error of levels Lv under (scale, min).
float affine_error(int n, const float* x, const float* w, const uint8_t* Lv, float scale, float min, bool use_mad) {
    float err = 0;
    for (int i = 0; i < n; ++i) {
        float diff = scale * float(Lv[i]) + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        err += w[i] * diff;
    }
    return err;
}

// Asymmetric levels in [0, nmax] (value scale*L + min, min <= 0): ggml's make_qkx2_quants
// (clamp_v false) and make_qkx3_quants (clamp_v true, which also treats max <= min as flat
// and clamps the scaled value before rounding).  Returns scale; *the_min gets -min.
float make_qkx_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                      float rmin, float rdelta, int nstep, bool use_mad, bool clamp_v) {
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (clamp_v ? max <= min : max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = float(nmax) / (max - min);
    float scale = 1 / iscale;
    for (int i = 0; i < n; ++i) L[i] = uint8_t(imax(0, imin(nmax, nearest_int(iscale * (x[i] - min)))));
    float best_error = affine_error(n, x, w, L, scale, min, use_mad);
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * float(is) + float(nmax)) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            const float v = iscale * (x[i] - min);
            const int l = clamp_v ? (v > 0 ? nearest_int(cmin(v, float(nmax))) : 0)
                                  : imax(0, imin(nmax, nearest_int(v)));
            Laux[i] = uint8_t(l);
            sum_l += w[i] * float(l);
            sum_l2 += w[i] * float(l) * float(l);
            sum_xl += w[i] * float(l) * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        const float cur_error = affine_error(n, x, w, Laux, this_scale, this_min, use_mad);
        if (cur_error < best_error) {
            std::memcpy(L, Laux, size_t(n));
            best_error = cur_error;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

// Quantize the non-negative sub-block scales (or mins) x to [0, nmax] with weights qw:
// ggml's make_qp_quants.  L is uint8 as in ggml (negative levels wrap the same way).
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
    float max = 0;
    for (int i = 0; i < n; ++i) max = cmax(max, x[i]);
    if (max < kGroupMaxEps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = float(nmax) / max;
    for (int i = 0; i < n; ++i) L[i] = uint8_t(nearest_int(iscale * x[i]));
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * float(L[i]);
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * float(is) + float(nmax)) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            const int l = imin(nmax, nearest_int(iscale_is * x[i]));
            const float diff = x[i] - scale_is * float(l);
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) { best_mse = mse; iscale = iscale_is; }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = imin(nmax, nearest_int(iscale * x[i]));
        L[i] = uint8_t(l);
        sumlx += qw[i] * x[i] * float(l);
        suml2 += qw[i] * float(l) * float(l);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float w = qw[i];
            float slx = sumlx - w * x[i] * float(L[i]);
            float sl2 = suml2 - w * float(L[i]) * float(L[i]);
            if (!(slx > 0 && sl2 > 0)) continue;
            const int new_l = imin(nmax, nearest_int(x[i] * sl2 / slx));
            if (new_l == L[i]) continue;
            slx += w * x[i] * float(new_l);
            sl2 += w * float(new_l) * float(new_l);
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = uint8_t(new_l); sumlx = slx; suml2 = sl2;
                ++n_changed;
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---- bit packing shared by quantizers, the refinement codec and dequantizers ------------

// Q2_K/Q3_K low bits: byte l of each 32-byte half holds elements l, l+32, l+64, l+96.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
    for (int j = 0; j < QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}
void unpack_2bit(const uint8_t* qs, uint8_t* L) {
    for (int j = 0; j < QK_K; j += 128)
        for (int s = 0; s < 4; ++s)
            for (int l = 0; l < 32; ++l) L[j + 32 * s + l] = (qs[j / 4 + l] >> (2 * s)) & 3;
}

// Q4_K/Q5_K 6-bit scale and min of sub-block j (ggml's get_scale_min_k4).
void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
    if (j < 4) {
        *d = q[j] & 63; *m = q[j + 4] & 63;
    } else {
        *d = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = uint8_t((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}
// Inverse of get_scale_min_k4, called for j = 0..7 in order (later j OR into earlier bytes).
void set_scale_min_k4(int j, uint8_t ls, uint8_t lm, uint8_t* s) {
    if (j < 4) {
        s[j] = ls;
        s[j + 4] = lm;
    } else {
        s[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
        s[j - 4] |= uint8_t((ls >> 4) << 6);
        s[j - 0] |= uint8_t((lm >> 4) << 6);
    }
}

// Q4_K/Q5_K low nibbles: 32-byte groups, element l in the low nibble, l+32 in the high one.
void pack_4bit_k(const uint8_t* L, uint8_t* q) {
    for (int j = 0; j < QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; ++l) q[l] = uint8_t((L[j + l] & 0xF) | ((L[j + l + 32] & 0xF) << 4));
}

// Q3_K 6-bit signed scale j (stored + 32: low nibbles in bytes 0..7, high bits in 8..11).
int q3k_scale(const uint8_t* s, int j) {
    const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    return int(int8_t((lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32));
}
void q3k_set_scale(uint8_t* s, int j, int l /* 0..63 */) {
    if (j < 8) s[j] = uint8_t(l & 0xF);
    else s[j - 8] |= uint8_t((l & 0xF) << 4);
    s[j % 4 + 8] |= uint8_t((l >> 4) << (2 * (j / 4)));
}

// Q3_K: level index L (0..7) -> high bit in hmask (element j: byte j%32, bit j/32), low 2 bits in qs.
void q3k_pack(uint8_t* L, BlockQ3_K* y) {
    std::memset(y->hmask, 0, sizeof(y->hmask));
    for (int j = 0; j < QK_K; ++j) {
        if (L[j] > 3) {
            y->hmask[j % 32] |= uint8_t(1 << (j / 32));
            L[j] = uint8_t(L[j] - 4);
        }
    }
    pack_2bit(L, y->qs);
}

// Q5_K: element n+j (j < 32) of each 64-group gets bit 2g of qh[j], n+32+j bit 2g+1.
void q5k_pack(const uint8_t* L, BlockQ5_K* y) {
    std::memset(y->qh, 0, sizeof(y->qh));
    uint8_t* ql = y->qs;
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64, ql += 32, m1 = uint8_t(m1 << 2), m2 = uint8_t(m2 << 2)) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) { l1 -= 16; y->qh[j] |= m1; }
            if (l2 > 15) { l2 -= 16; y->qh[j] |= m2; }
            ql[j] = uint8_t(l1 | (l2 << 4));
        }
    }
}

// Q6_K: 4 low bits in ql (two 64-byte halves), 2 high bits in qh.
void q6k_pack(const uint8_t* L, BlockQ6_K* y) {
    uint8_t* ql = y->ql;
    uint8_t* qh = y->qh;
    for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; ++l) {
            ql[l + 0] = uint8_t((L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4));
            ql[l + 32] = uint8_t((L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4));
            qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                            ((L[j + l + 96] >> 4) << 6));
        }
    }
}

// Level indices of each format, element order (the dequantizers' and the codec's view).
void q3k_levels(const BlockQ3_K& b, uint8_t* L) {
    unpack_2bit(b.qs, L);
    for (int j = 0; j < QK_K; ++j) L[j] = uint8_t(L[j] | (((b.hmask[j % 32] >> (j / 32)) & 1) << 2));
}
void q4k_levels(const uint8_t* qs, uint8_t* L) {
    for (int j = 0; j < QK_K; j += 64, qs += 32)
        for (int l = 0; l < 32; ++l) { L[j + l] = qs[l] & 0xF; L[j + l + 32] = qs[l] >> 4; }
}
void q5k_levels(const BlockQ5_K& b, uint8_t* L) {
    q4k_levels(b.qs, L);
    for (int j = 0; j < QK_K; ++j) L[j] = uint8_t(L[j] | (((b.qh[j % 32] >> (j / 32)) & 1) << 4));
}
void q6k_levels(const BlockQ6_K& b, uint8_t* L) {
    for (int n = 0; n < QK_K; n += 128) {
        const uint8_t* ql = b.ql + n / 2;
        const uint8_t* qh = b.qh + n / 4;
        for (int l = 0; l < 32; ++l) {
            L[n + l] = uint8_t((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4));
            L[n + l + 32] = uint8_t((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            L[n + l + 64] = uint8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            L[n + l + 96] = uint8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
}

// ---- Q2_K --------------------------------------------------------------------------------
// Write d/dmin and the 4-bit scale|min codes, then requantize every element to the
// fp16-rounded sub-block scale and min as ggml does (L keeps the search result where d == 0).
void q2k_finish(const float* x, BlockQ2_K* y, uint8_t* L) {
    const float dd = fp16_to_fp32(y->d), dm = fp16_to_fp32(y->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dd * float(y->scales[j] & 0xF);
        if (d == 0) continue;
        const float m = dm * float(y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = uint8_t(imax(0, imin(3, nearest_int((x[16 * j + ii] + m) / d))));
    }
    pack_2bit(L, y->qs);
}

void q2k_ref_block(const float* x, BlockQ2_K* y) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[QK_K / 16], scales[QK_K / 16];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
        scales[j] = make_qkx_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = uint8_t(nearest_int(iscale * scales[j]));
        y->d = fp32_to_fp16(max_scale / 15.f);
    } else {
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = 0;
        y->d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
        const float iscale = 15.f / max_min;
        for (int j = 0; j < QK_K / 16; ++j) y->scales[j] |= uint8_t(unsigned(nearest_int(iscale * mins[j])) << 4);
        y->dmin = fp32_to_fp16(max_min / 15.f);
    } else {
        y->dmin = fp32_to_fp16(0.f);
    }
    q2k_finish(x, y, L);
}

// llama.cpp's quantize_row_q2_K_impl (imatrix path).
void q2k_impl_block(const float* x, BlockQ2_K* y, const float* qw) {
    uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
    float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
    const float sigma2 = kq::sum_squares(x, QK_K) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
        sw[j] = 0;
        for (int l = 0; l < 16; ++l) sw[j] += weight[l];
        scales[j] = make_qkx_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false, true);
    }
    const float dm = make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
    y->d = fp32_to_fp16(dm);
    y->dmin = fp32_to_fp16(mm);
    for (int j = 0; j < QK_K / 16; ++j) y->scales[j] = uint8_t(Ls[j] | (Lm[j] << 4));
    q2k_finish(x, y, L);
}

void q2k_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ2_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d), min = fp16_to_fp32(x[i].dmin);
        uint8_t L[QK_K];
        unpack_2bit(x[i].qs, L);
        for (int j = 0; j < QK_K / 16; ++j) {
            const uint8_t sc = x[i].scales[j];
            const float dl = d * float(sc & 0xF), ml = min * float(sc >> 4);
            for (int l = 0; l < 16; ++l) *y++ = dl * float(L[16 * j + l]) - ml;
        }
    }
}

// ---- Q3_K --------------------------------------------------------------------------------
void q3k_finish(const float* x, BlockQ3_K* y, int8_t* L) {
    const float dd = fp16_to_fp32(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dd * float(q3k_scale(y->scales, j));
        if (d == 0) continue;
        for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = int8_t(imax(-4, imin(3, nearest_int(x[16 * j + ii] / d))) + 4);
    }
    q3k_pack(reinterpret_cast<uint8_t*>(L), y);
}

void q3k_ref_block(const float* x, BlockQ3_K* y) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        const float scale = std::fabs(scales[j]);
        if (scale > amax) { amax = scale; max_scale = scales[j]; }
    }
    std::memset(y->scales, 0, 12);
    if (max_scale != 0) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            const int8_t l = int8_t(nearest_int(iscale * scales[j]));
            q3k_set_scale(y->scales, j, imax(-32, imin(31, l)) + 32);
        }
        y->d = fp32_to_fp16(1 / iscale);
    } else {
        y->d = fp32_to_fp16(0.f);
    }
    q3k_finish(x, y, L);
}

// llama.cpp's quantize_row_q3_K_impl (imatrix path).
void q3k_impl_block(const float* x, BlockQ3_K* y, const float* qw) {
    int8_t L[QK_K], Ls[QK_K / 16];
    float scales[QK_K / 16], weight[16], sw[QK_K / 16];
    const float sigma2 = 2 * kq::sum_squares(x, QK_K) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    std::memset(y->scales, 0, 12);
    const float d_block = make_qx_quants(QK_K / 16, 32, scales, Ls, sw);
    for (int j = 0; j < QK_K / 16; ++j) q3k_set_scale(y->scales, j, Ls[j]);
    y->d = fp32_to_fp16(d_block);
    q3k_finish(x, y, L);
}

void q3k_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ3_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d_all = fp16_to_fp32(x[i].d);
        uint8_t L[QK_K];
        q3k_levels(x[i], L);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float dl = d_all * float(q3k_scale(x[i].scales, j));
            for (int l = 0; l < 16; ++l) *y++ = dl * float(int(L[16 * j + l]) - 4);
        }
    }
}

// ---- Q4_K / Q5_K ---------------------------------------------------------------------------
// The two share everything but the level count (nmax 15 / 31) and the bit packing.
template <int NMAX>
void qk45_requantize(const float* x, const uint8_t* scales, uint16_t hd, uint16_t hm, uint8_t* L) {
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const float d = fp16_to_fp32(hd) * float(sc);
        if (d == 0) continue;
        const float dm = fp16_to_fp32(hm) * float(m);
        for (int ii = 0; ii < 32; ++ii) L[32 * j + ii] = uint8_t(imax(0, imin(NMAX, nearest_int((x[32 * j + ii] + dm) / d))));
    }
}

// quantize_row_q4_K_ref / q5_K_ref up to the bit packing.
template <int NMAX>
void qk45_ref(const float* x, uint16_t* hd, uint16_t* hm, uint8_t* scales_out, uint8_t* L, float rmin, int nstep) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; ++j) {
        const float av_x = std::sqrt(kq::sum_squares(x + 32 * j, 32) / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        scales[j] = make_qkx_quants(32, NMAX, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t ls = uint8_t(nearest_int(inv_scale * scales[j]));
        uint8_t lm = uint8_t(nearest_int(inv_min * mins[j]));
        set_scale_min_k4(j, uint8_t(imin(63, ls)), uint8_t(imin(63, lm)), scales_out);
    }
    *hd = fp32_to_fp16(max_scale / 63.f);
    *hm = fp32_to_fp16(max_min / 63.f);
    qk45_requantize<NMAX>(x, scales_out, *hd, *hm, L);
}

// quantize_row_q4_K_impl / q5_K_impl (imatrix path) up to the bit packing.
template <int NMAX>
void qk45_impl(const float* x, const float* qw, uint16_t* hd, uint16_t* hm, uint8_t* scales_out, uint8_t* L) {
    uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
    float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    const float sigma2 = 2 * kq::sum_squares(x, QK_K) / QK_K;
    const float av_x = std::sqrt(sigma2);
    for (int j = 0; j < QK_K / 32; ++j) {
        if (qw) {
            for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
        } else {
            for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
        }
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = make_qkx_quants(32, NMAX, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false, true);
    }
    const float d_block = make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; ++j) {
        // Q5_K clamps the codes to 63 here and Q4_K does not; they differ only if a
        // negative sub-scale wrapped, which the packing then truncates alike.
        const uint8_t ls = NMAX == 31 ? uint8_t(imin(63, Ls[j])) : Ls[j];
        const uint8_t lm = NMAX == 31 ? uint8_t(imin(63, Lm[j])) : Lm[j];
        set_scale_min_k4(j, ls, lm, scales_out);
    }
    *hd = fp32_to_fp16(d_block);
    *hm = fp32_to_fp16(m_block);
    qk45_requantize<NMAX>(x, scales_out, *hd, *hm, L);
}

void q4k_ref_block(const float* x, BlockQ4_K* y) {
    uint8_t L[QK_K];
    qk45_ref<15>(x, &y->d, &y->dmin, y->scales, L, -1.f, 20);
    pack_4bit_k(L, y->qs);
}
void q4k_impl_block(const float* x, BlockQ4_K* y, const float* qw) {
    uint8_t L[QK_K];
    qk45_impl<15>(x, qw, &y->d, &y->dmin, y->scales, L);
    pack_4bit_k(L, y->qs);
}
void q5k_ref_block(const float* x, BlockQ5_K* y) {
    uint8_t L[QK_K];
    qk45_ref<31>(x, &y->d, &y->dmin, y->scales, L, -0.5f, 15);
    q5k_pack(L, y);
}
void q5k_impl_block(const float* x, BlockQ5_K* y, const float* qw) {
    uint8_t L[QK_K];
    qk45_impl<31>(x, qw, &y->d, &y->dmin, y->scales, L);
    q5k_pack(L, y);
}

void qk45_dequant(uint16_t hd, uint16_t hm, const uint8_t* scales, const uint8_t* L, float* y) {
    const float d = fp16_to_fp32(hd), min = fp16_to_fp32(hm);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, scales, &sc, &m);
        const float dl = d * float(sc), ml = min * float(m);
        for (int l = 0; l < 32; ++l) y[32 * j + l] = dl * float(L[32 * j + l]) - ml;
    }
}
void q4k_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ4_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
        uint8_t L[QK_K];
        q4k_levels(x[i].qs, L);
        qk45_dequant(x[i].d, x[i].dmin, x[i].scales, L, y);
    }
}
void q5k_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ5_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
        uint8_t L[QK_K];
        q5k_levels(x[i], L);
        qk45_dequant(x[i].d, x[i].dmin, x[i].scales, L, y);
    }
}

// ---- Q6_K --------------------------------------------------------------------------------
// Shared by the reference (qw null: x^2 weights) and imatrix paths, as in ggml.
void q6k_block(const float* x, BlockQ6_K* y, const float* qw) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : nullptr);
        const float abs_scale = std::fabs(scales[ib]);
        if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scales[ib]; }
    }
    if (max_abs_scale < kGroupMaxEps) {
        std::memset(y, 0, sizeof(*y));
        return;
    }
    const float iscale = -128.f / max_scale;
    y->d = fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) y->scales[ib] = int8_t(imin(127, nearest_int(iscale * scales[ib])));
    const float dd = fp16_to_fp32(y->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dd * float(y->scales[j]);
        if (d == 0) continue;
        for (int ii = 0; ii < 16; ++ii) L[16 * j + ii] = int8_t(imax(-32, imin(31, nearest_int(x[16 * j + ii] / d))) + 32);
    }
    q6k_pack(reinterpret_cast<const uint8_t*>(L), y);
}
void q6k_ref_block(const float* x, BlockQ6_K* y) { q6k_block(x, y, nullptr); }
void q6k_impl_block(const float* x, BlockQ6_K* y, const float* qw) { q6k_block(x, y, qw); }

void q6k_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ6_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        uint8_t L[QK_K];
        q6k_levels(x[i], L);
        for (int j = 0; j < QK_K; ++j) *y++ = d * float(x[i].scales[j / 16]) * float(int(L[j]) - 32);
    }
}

// ---- Q8_K --------------------------------------------------------------------------------
void q8k_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_K*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; ++j) {
            const float ax = std::fabs(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        if (amax == 0) {
            std::memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        // -127 rather than -128 keeps |q| <= 127, as ggml does for its SIMD dot kernels
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; ++j) y[i].qs[j] = int8_t(imin(127, nearest_int(iscale * x[j])));
        for (int j = 0; j < QK_K / 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = int16_t(sum);
        }
        y[i].d = 1 / iscale;
    }
}
void q8k_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ8_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i)
        for (int j = 0; j < QK_K; ++j) *y++ = x[i].d * float(x[i].qs[j]);
}

// ---- refinement codecs: block <-> kq::SuperBlock -----------------------------------------
const kq::GridSpec kQ2K{16, 16, 4, 0, nullptr, 0, 15, 15};
const kq::GridSpec kQ3K{16, 16, 8, -4, nullptr, -32, 31, -1};
const kq::GridSpec kQ4K{8, 32, 16, 0, nullptr, 0, 63, 63};
const kq::GridSpec kQ5K{8, 32, 32, 0, nullptr, 0, 63, 63};
const kq::GridSpec kQ6K{16, 16, 64, -32, nullptr, -128, 127, -1};

void decode(const BlockQ2_K& b, kq::SuperBlock& s) {
    s.d = fp16_to_fp32(b.d); s.dmin = fp16_to_fp32(b.dmin);
    for (int j = 0; j < 16; ++j) { s.sc[j] = b.scales[j] & 0xF; s.m[j] = b.scales[j] >> 4; }
    unpack_2bit(b.qs, s.L);
}
void encode(kq::SuperBlock& s, BlockQ2_K* b) {
    b->d = fp32_to_fp16(s.d); b->dmin = fp32_to_fp16(s.dmin);
    for (int j = 0; j < 16; ++j) b->scales[j] = uint8_t(s.sc[j] | (s.m[j] << 4));
    pack_2bit(s.L, b->qs);
}
void decode(const BlockQ3_K& b, kq::SuperBlock& s) {
    s.d = fp16_to_fp32(b.d); s.dmin = 0;
    for (int j = 0; j < 16; ++j) { s.sc[j] = q3k_scale(b.scales, j); s.m[j] = 0; }
    q3k_levels(b, s.L);
}
void encode(kq::SuperBlock& s, BlockQ3_K* b) {
    b->d = fp32_to_fp16(s.d);
    std::memset(b->scales, 0, 12);
    for (int j = 0; j < 16; ++j) q3k_set_scale(b->scales, j, s.sc[j] + 32);
    q3k_pack(s.L, b);
}
template <class B>
void decode_k45(const B& b, kq::SuperBlock& s) {
    s.d = fp16_to_fp32(b.d); s.dmin = fp16_to_fp32(b.dmin);
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        get_scale_min_k4(j, b.scales, &sc, &m);
        s.sc[j] = sc; s.m[j] = m;
    }
}
template <class B>
void encode_k45(const kq::SuperBlock& s, B* b) {
    b->d = fp32_to_fp16(s.d); b->dmin = fp32_to_fp16(s.dmin);
    for (int j = 0; j < 8; ++j) set_scale_min_k4(j, uint8_t(s.sc[j]), uint8_t(s.m[j]), b->scales);
}
void decode(const BlockQ4_K& b, kq::SuperBlock& s) { decode_k45(b, s); q4k_levels(b.qs, s.L); }
void encode(kq::SuperBlock& s, BlockQ4_K* b) { encode_k45(s, b); pack_4bit_k(s.L, b->qs); }
void decode(const BlockQ5_K& b, kq::SuperBlock& s) { decode_k45(b, s); q5k_levels(b, s.L); }
void encode(kq::SuperBlock& s, BlockQ5_K* b) { encode_k45(s, b); q5k_pack(s.L, b); }
void decode(const BlockQ6_K& b, kq::SuperBlock& s) {
    s.d = fp16_to_fp32(b.d); s.dmin = 0;
    for (int j = 0; j < 16; ++j) { s.sc[j] = b.scales[j]; s.m[j] = 0; }
    q6k_levels(b, s.L);
}
void encode(kq::SuperBlock& s, BlockQ6_K* b) {
    b->d = fp32_to_fp16(s.d);
    for (int j = 0; j < 16; ++j) b->scales[j] = int8_t(s.sc[j]);
    q6k_pack(s.L, b);
}

// ---- quality quantizers --------------------------------------------------------------------
// The per-element weights of the squared error llama.cpp's quantizer minimises for each format
// (its _ref path without an imatrix, its _impl path with one).  The refinement minimises the
// same error, so a lowbit block is never worse than llama.cpp's by llama.cpp's own measure.
// (An unweighted search made lower plain RMSE but worse models: Q3_K/Q6_K weight by x^2.)
using ErrorWeightsFn = void (*)(const float* x, const float* qw, float* w);

// qw * sqrt(sigma2 + x^2): the imatrix weighting of ggml's _impl quantizers.
void imatrix_weights(const float* x, const float* qw, float sigma2, float* w) {
    for (int i = 0; i < QK_K; ++i) w[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
}
void q2k_error_weights(const float* x, const float* qw, float* w) {
    if (qw) return imatrix_weights(x, qw, kq::sum_squares(x, QK_K) / QK_K, w);
    for (int i = 0; i < QK_K; ++i) w[i] = std::fabs(x[i]);
}
void q3k_error_weights(const float* x, const float* qw, float* w) {
    if (qw) return imatrix_weights(x, qw, 2 * kq::sum_squares(x, QK_K) / QK_K, w);
    for (int i = 0; i < QK_K; ++i) w[i] = x[i] * x[i];
}
void qk45_error_weights(const float* x, const float* qw, float* w) {
    if (qw) return imatrix_weights(x, qw, 2 * kq::sum_squares(x, QK_K) / QK_K, w);
    for (int j = 0; j < QK_K / 32; ++j) {
        const float av_x = std::sqrt(kq::sum_squares(x + 32 * j, 32) / 32);
        for (int l = 0; l < 32; ++l) w[32 * j + l] = av_x + std::fabs(x[32 * j + l]);
    }
}
void q6k_error_weights(const float* x, const float* qw, float* w) {
    for (int i = 0; i < QK_K; ++i) w[i] = qw ? qw[i] : x[i] * x[i];
}

// One block the quality way: llama.cpp's block, then the refined one if it decodes closer.
template <class B, const kq::GridSpec& G, ToFloatFn ToFloat, void (*Ref)(const float*, B*),
          void (*Impl)(const float*, B*, const float*), ErrorWeightsFn Weights>
void quality_block(const float* x, const float* imp, B* y) {
    if (imp) Impl(x, y, imp);
    else Ref(x, y);
    float deq[QK_K], w[QK_K];
    Weights(x, imp, w);
    ToFloat(y, deq, QK_K);
    const double base = kq::block_error(x, deq, w, QK_K);
    if (base == 0 || !std::isfinite(base)) return;
    kq::SuperBlock s;
    decode(*y, s);
    kq::refine(G, x, w, s, 3, 1);
    B cand;
    encode(s, &cand);
    ToFloat(&cand, deq, QK_K);
    if (kq::block_error(x, deq, w, QK_K) < base) *y = cand;
}

// The registry's quantize_rows of a K-quant: every block the quality way.
template <class B, const kq::GridSpec& G, ToFloatFn ToFloat, void (*Ref)(const float*, B*),
          void (*Impl)(const float*, B*, const float*), ErrorWeightsFn Weights>
void quality_rows(const float* src, void* dst, int64_t nrows, int64_t ncols, const float* imp) {
    auto* y = static_cast<B*>(dst);
    const int64_t nb = ncols / QK_K;
    for (int64_t r = 0; r < nrows; ++r)
        for (int64_t b = 0; b < nb; ++b)
            quality_block<B, G, ToFloat, Ref, Impl, Weights>(src + r * ncols + b * QK_K,
                                                             imp ? imp + b * QK_K : nullptr, y + r * nb + b);
}

template <class B, void (*Ref)(const float*, B*)>
void ref_rows(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<B*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i) Ref(x + i * QK_K, y + i);
}

// ---- scalar dots against Q8_K: ggml's generic kernels, same integer and float order -------
void vec_dot_q2k_q8k(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ2_K*>(w);
    auto* y = static_cast<const BlockQ8_K*>(a);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const uint8_t* sc = x[i].scales;
        int summs = 0;
        for (int j = 0; j < 16; ++j) summs += y[i].bsums[j] * (sc[j] >> 4);
        const float dall = y[i].d * fp16_to_fp32(x[i].d);
        const float dmin = y[i].d * fp16_to_fp32(x[i].dmin);
        uint8_t L[QK_K];
        unpack_2bit(x[i].qs, L);
        int isum = 0;
        for (int j = 0; j < 16; ++j) {
            int isuml = 0;
            for (int l = 0; l < 16; ++l) isuml += y[i].qs[16 * j + l] * L[16 * j + l];
            isum += (sc[j] & 0xF) * isuml;
        }
        sumf += dall * float(isum) - dmin * float(summs);
    }
    *out = sumf;
}

// Q3_K..Q6_K: per-block integer sums, scaled into 8 float lanes summed at the end (ggml's
// sums[8]); lane l collects elements with index % 8 == l.
void accumulate_lanes(const int8_t* q8, const int8_t* a, const int* scale16, float d, float* sums) {
    int32_t aux32[8] = {};
    for (int j = 0; j < QK_K / 16; ++j)
        for (int half = 0; half < 2; ++half)
            for (int l = 0; l < 8; ++l) {
                const int k = 16 * j + 8 * half + l;
                aux32[l] += scale16[j] * int16_t(q8[k] * a[k]);
            }
    for (int l = 0; l < 8; ++l) sums[l] += d * float(aux32[l]);
}

void vec_dot_q3k_q8k(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ3_K*>(w);
    auto* y = static_cast<const BlockQ8_K*>(a);
    float sums[8] = {};
    for (int64_t i = 0; i < n / QK_K; ++i) {
        uint8_t L[QK_K];
        int8_t q[QK_K];
        int sc[16];
        q3k_levels(x[i], L);
        for (int j = 0; j < QK_K; ++j) q[j] = int8_t(int(L[j]) - 4);
        for (int j = 0; j < 16; ++j) sc[j] = q3k_scale(x[i].scales, j);
        accumulate_lanes(y[i].qs, q, sc, fp16_to_fp32(x[i].d) * y[i].d, sums);
    }
    float sumf = 0;
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    *out = sumf;
}

template <class B>
void vec_dot_qk45_q8k(int64_t n, float* out, const B* x, const BlockQ8_K* y, void (*levels)(const B&, uint8_t*)) {
    float sums[8] = {}, sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        uint8_t L[QK_K], sc8, m8;
        int sc[16], sumi = 0;
        levels(x[i], L);
        for (int j = 0; j < 8; ++j) {
            get_scale_min_k4(j, x[i].scales, &sc8, &m8);
            sc[2 * j] = sc[2 * j + 1] = sc8;
            sumi += (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]) * m8;
        }
        accumulate_lanes(y[i].qs, reinterpret_cast<const int8_t*>(L), sc, fp16_to_fp32(x[i].d) * y[i].d, sums);
        sumf -= fp16_to_fp32(x[i].dmin) * y[i].d * float(sumi);
    }
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    *out = sumf;
}
void q4k_levels_of(const BlockQ4_K& b, uint8_t* L) { q4k_levels(b.qs, L); }
void vec_dot_q4k_q8k(int64_t n, float* out, const void* w, const void* a) {
    vec_dot_qk45_q8k(n, out, static_cast<const BlockQ4_K*>(w), static_cast<const BlockQ8_K*>(a), q4k_levels_of);
}
void vec_dot_q5k_q8k(int64_t n, float* out, const void* w, const void* a) {
    vec_dot_qk45_q8k(n, out, static_cast<const BlockQ5_K*>(w), static_cast<const BlockQ8_K*>(a), q5k_levels);
}

void vec_dot_q6k_q8k(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ6_K*>(w);
    auto* y = static_cast<const BlockQ8_K*>(a);
    float sums[8] = {};
    for (int64_t i = 0; i < n / QK_K; ++i) {
        uint8_t L[QK_K];
        int8_t q[QK_K];
        int sc[16];
        q6k_levels(x[i], L);
        for (int j = 0; j < QK_K; ++j) q[j] = int8_t(int(L[j]) - 32);
        for (int j = 0; j < 16; ++j) sc[j] = x[i].scales[j];
        accumulate_lanes(y[i].qs, q, sc, fp16_to_fp32(x[i].d) * y[i].d, sums);
    }
    float sumf = 0;
    for (int l = 0; l < 8; ++l) sumf += sums[l];
    *out = sumf;
}

void set(TypeTraits& tr, const char* name, size_t ts, ToFloatFn to, FromFloatFn from, QuantizeRowsFn rows,
         VecDotFn dot) {
    tr.name = name; tr.block_size = QK_K; tr.type_size = ts; tr.is_quantized = true;
    tr.to_float = to; tr.from_float = from; tr.quantize_rows = rows;
    tr.vec_dot_type = Type::Q8_K;
    tr.vec_dot[int(Isa::Scalar)] = dot;
}

}  // namespace

void register_kquant_formats(TypeTable& t) {
    set(t[uint32_t(Type::Q2_K)], "Q2_K", sizeof(BlockQ2_K), q2k_to_float, ref_rows<BlockQ2_K, q2k_ref_block>,
        quality_rows<BlockQ2_K, kQ2K, q2k_to_float, q2k_ref_block, q2k_impl_block, q2k_error_weights>, vec_dot_q2k_q8k);
    set(t[uint32_t(Type::Q3_K)], "Q3_K", sizeof(BlockQ3_K), q3k_to_float, ref_rows<BlockQ3_K, q3k_ref_block>,
        quality_rows<BlockQ3_K, kQ3K, q3k_to_float, q3k_ref_block, q3k_impl_block, q3k_error_weights>, vec_dot_q3k_q8k);
    set(t[uint32_t(Type::Q4_K)], "Q4_K", sizeof(BlockQ4_K), q4k_to_float, ref_rows<BlockQ4_K, q4k_ref_block>,
        quality_rows<BlockQ4_K, kQ4K, q4k_to_float, q4k_ref_block, q4k_impl_block, qk45_error_weights>, vec_dot_q4k_q8k);
    set(t[uint32_t(Type::Q5_K)], "Q5_K", sizeof(BlockQ5_K), q5k_to_float, ref_rows<BlockQ5_K, q5k_ref_block>,
        quality_rows<BlockQ5_K, kQ5K, q5k_to_float, q5k_ref_block, q5k_impl_block, qk45_error_weights>, vec_dot_q5k_q8k);
    set(t[uint32_t(Type::Q6_K)], "Q6_K", sizeof(BlockQ6_K), q6k_to_float, ref_rows<BlockQ6_K, q6k_ref_block>,
        quality_rows<BlockQ6_K, kQ6K, q6k_to_float, q6k_ref_block, q6k_impl_block, q6k_error_weights>, vec_dot_q6k_q8k);
    set(t[uint32_t(Type::Q8_K)], "Q8_K", sizeof(BlockQ8_K), q8k_to_float, q8k_from_float, nullptr, nullptr);
}

}  // namespace lowbit
