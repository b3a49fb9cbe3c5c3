// IQ4_NL and IQ4_XS: 4-bit indices into llama.cpp's non-linear codebook kvalues_iq4nl.
// IQ4_NL is one fp16 scale per 32 values; IQ4_XS a 256-value super-block with an fp16
// scale and a signed 6-bit scale per 32 values.
//
// from_float is llama.cpp's quantize_row_iq4_nl_ref / quantize_row_iq4_xs_ref and to_float
// its dequantizers, float op for float op.  quantize_rows builds llama.cpp's quantize_iq4_*
// block (imatrix-weighted when given one), then keeps a kq::refine'd block where that
// decodes with smaller weighted squared error.
#include <cmath>
#include <cstring>

#include "formats/blocks.h"
#include "formats/fp16.h"
#include "formats/kquant_search.h"
#include "formats/registry.h"

namespace lowbit {

namespace {

using kq::nearest_int;

constexpr float kGroupMaxEps = 1e-15f;
constexpr int8_t kValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Index of the codebook value nearest x, ties going up: ggml's best_index_int8 as the
// llama.cpp lowbit is checked against has it (a NaN lands on the last index).
int best_index(float x) {
    if (x <= kValues[0]) return 0;
    if (x >= kValues[15]) return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        const int mav = (ml + mu) / 2;
        if (x < kValues[mav]) mu = mav;
        else ml = mav;
    }
    return x - float(kValues[mu - 1]) < float(kValues[mu]) - x ? mu - 1 : mu;
}

// Weights of quantize_row_iq4_nl_impl: importance * sqrt(sigma2 + x^2), or x^2 without one.
void iq4_weights(const float* xb, const float* qw, float sigma2, float* weight) {
    for (int j = 0; j < 32; ++j) weight[j] = qw ? qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

float sigma2_of(const float* x, int n) { return kq::sum_squares(x, n) * (2.f / float(n)); }

// Best scale of one 32-value block (first stage of quantize_row_iq4_nl_impl): indices from
// the amax-derived scale, then 2*ntry+1 trial scales refit by weighted least squares.
// Lb keeps the first stage's indices, as ggml's does.
float iq4_block_scale(const float* xb, const float* weight, uint8_t* Lb, int ntry) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
        const float ax = std::fabs(xb[j]);
        if (ax > amax) { amax = ax; max = xb[j]; }
    }
    if (amax < kGroupMaxEps) {
        std::memset(Lb, 0, 32);
        return 0;
    }
    auto fit = [&](float id, float* sumqx, float* sumq2, bool store) {
        *sumqx = 0; *sumq2 = 0;
        for (int j = 0; j < 32; ++j) {
            const int l = best_index(id * xb[j]);
            if (store) Lb[j] = uint8_t(l);
            const float q = kValues[l];
            *sumqx += weight[j] * q * xb[j];
            *sumq2 += weight[j] * q * q;
        }
    };
    float d = ntry > 0 ? -max / float(kValues[0]) : max / float(kValues[0]);
    float sumqx, sumq2;
    fit(1 / d, &sumqx, &sumq2, true);
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
        fit(float(itry + kValues[0]) / max, &sumqx, &sumq2, false);
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) { d = sumqx / sumq2; best = d * sumqx; }
    }
    return d;
}

void pack_nibbles(const uint8_t* L, uint8_t* q4, int n) {
    for (int i = 0; i < n / 32; ++i)
        for (int j = 0; j < 16; ++j) q4[16 * i + j] = uint8_t(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}
void unpack_nibbles(const uint8_t* q4, uint8_t* L, int n) {
    for (int i = 0; i < n / 32; ++i)
        for (int j = 0; j < 16; ++j) { L[32 * i + j] = q4[16 * i + j] & 0xF; L[32 * i + 16 + j] = q4[16 * i + j] >> 4; }
}

// ---- IQ4_NL ------------------------------------------------------------------------------
// quantize_row_iq4_nl_impl with super_block_size == block_size == 32.  ntry < 0 is the
// reference path (x^2 weights, indices of the first stage); ntry > 0 reindexes to the
// final scale.
void iq4nl_block(const float* x, BlockIQ4_NL* y, const float* qw, int ntry) {
    float weight[32];
    uint8_t L[32];
    iq4_weights(x, qw, sigma2_of(x, 32), weight);
    const float d = iq4_block_scale(x, weight, L, ntry);
    y->d = fp32_to_fp16(d);
    if (ntry > 0) {
        const float id = d != 0 ? 1 / d : 0;
        for (int j = 0; j < 32; ++j) L[j] = uint8_t(best_index(id * x[j]));
    }
    pack_nibbles(L, y->qs, 32);
}

void iq4nl_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockIQ4_NL*>(dst);
    for (int64_t i = 0; i < n / QK4_NL; ++i) iq4nl_block(x + i * QK4_NL, y + i, nullptr, -1);
}

void iq4nl_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockIQ4_NL*>(src);
    for (int64_t i = 0; i < n / QK4_NL; ++i, y += QK4_NL) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK4_NL / 2; ++j) {
            y[j] = d * float(kValues[x[i].qs[j] & 0xF]);
            y[j + QK4_NL / 2] = d * float(kValues[x[i].qs[j] >> 4]);
        }
    }
}

// ---- IQ4_XS ------------------------------------------------------------------------------
// Code j of a block: low nibble in scales_l[j/2] (even j low half), 2 high bits in scales_h.
int iq4xs_scale(const BlockIQ4_XS& b, int ib) {
    return (((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b.scales_h >> (2 * ib)) & 3) << 4)) - 32;
}
void iq4xs_set_scales(BlockIQ4_XS* y, const int* ls /* -32..31 */) {
    y->scales_h = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        const int l = ls[ib] + 32;
        if (ib % 2 == 0) y->scales_l[ib / 2] = uint8_t(l & 0xF);
        else y->scales_l[ib / 2] |= uint8_t((l & 0xF) << 4);
        y->scales_h = uint16_t(y->scales_h | ((l >> 4) << (2 * ib)));
    }
}

// quantize_row_iq4_nl_impl with a 256-value super-block (ntry = 7 in both of ggml's paths).
void iq4xs_block(const float* x, BlockIQ4_XS* y, const float* qw) {
    float weight[32], scales[QK_K / 32];
    uint8_t L[QK_K];
    const float sigma2 = sigma2_of(x, QK_K);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        iq4_weights(x + 32 * ib, qw ? qw + 32 * ib : nullptr, sigma2, weight);
        scales[ib] = iq4_block_scale(x + 32 * ib, weight, L + 32 * ib, 7);
        if (std::fabs(scales[ib]) > amax_scale) { amax_scale = std::fabs(scales[ib]); max_scale = scales[ib]; }
    }
    const float d = -max_scale / 32;
    y->d = fp32_to_fp16(d);
    const float id = d != 0 ? 1 / d : 0.f;
    int ls[QK_K / 32];
    for (int ib = 0; ib < QK_K / 32; ++ib) {
        const int l = nearest_int(id * scales[ib]);
        ls[ib] = l < -32 ? -32 : (l > 31 ? 31 : l);
        const float dl = d * float(ls[ib]);
        const float idl = dl != 0 ? 1 / dl : 0.f;
        for (int j = 0; j < 32; ++j) L[32 * ib + j] = uint8_t(best_index(idl * x[32 * ib + j]));
    }
    iq4xs_set_scales(y, ls);
    pack_nibbles(L, y->qs, QK_K);
}

void iq4xs_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockIQ4_XS*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i) iq4xs_block(x + i * QK_K, y + i, nullptr);
}

void iq4xs_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockIQ4_XS*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int ib = 0; ib < QK_K / 32; ++ib, y += 32) {
            const float dl = d * float(iq4xs_scale(x[i], ib));
            const uint8_t* qs = x[i].qs + 16 * ib;
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * float(kValues[qs[j] & 0xF]);
                y[j + 16] = dl * float(kValues[qs[j] >> 4]);
            }
        }
    }
}

// ---- quality quantizers ------------------------------------------------------------------
const kq::GridSpec kNL{1, 32, 16, 0, kValues, 1, 1, -1};          // the scale is d itself
const kq::GridSpec kXS{8, 32, 16, 0, kValues, -32, 31, -1};

// The refinement minimises the error llama.cpp's quantizer weights by (x^2, or the imatrix
// times sqrt(sigma2 + x^2)), so its blocks are never worse by llama.cpp's own measure.
void iq4nl_quality(const float* x, const float* imp, BlockIQ4_NL* y) {
    iq4nl_block(x, y, imp, 7);
    float deq[32], w[32];
    iq4_weights(x, imp, sigma2_of(x, 32), w);
    iq4nl_to_float(y, deq, 32);
    const double base = kq::block_error(x, deq, w, 32);
    if (base == 0 || !std::isfinite(base)) return;
    kq::SuperBlock s;
    s.d = fp16_to_fp32(y->d);
    s.sc[0] = 1;
    unpack_nibbles(y->qs, s.L, 32);
    kq::refine(kNL, x, w, s, 4, 2);
    BlockIQ4_NL cand;
    cand.d = fp32_to_fp16(s.d);
    pack_nibbles(s.L, cand.qs, 32);
    iq4nl_to_float(&cand, deq, 32);
    if (kq::block_error(x, deq, w, 32) < base) *y = cand;
}

void iq4xs_quality(const float* x, const float* imp, BlockIQ4_XS* y) {
    iq4xs_block(x, y, imp);
    float deq[QK_K], w[QK_K];
    const float sigma2 = sigma2_of(x, QK_K);
    for (int ib = 0; ib < QK_K / 32; ++ib) iq4_weights(x + 32 * ib, imp ? imp + 32 * ib : nullptr, sigma2, w + 32 * ib);
    iq4xs_to_float(y, deq, QK_K);
    const double base = kq::block_error(x, deq, w, QK_K);
    if (base == 0 || !std::isfinite(base)) return;
    kq::SuperBlock s;
    s.d = fp16_to_fp32(y->d);
    for (int ib = 0; ib < QK_K / 32; ++ib) s.sc[ib] = iq4xs_scale(*y, ib);
    unpack_nibbles(y->qs, s.L, QK_K);
    kq::refine(kXS, x, w, s, 3, 1);
    BlockIQ4_XS cand;
    cand.d = fp32_to_fp16(s.d);
    iq4xs_set_scales(&cand, s.sc);
    pack_nibbles(s.L, cand.qs, QK_K);
    iq4xs_to_float(&cand, deq, QK_K);
    if (kq::block_error(x, deq, w, QK_K) < base) *y = cand;
}

void iq4nl_quantize_rows(const float* src, void* dst, int64_t nrows, int64_t ncols, const float* imp) {
    auto* y = static_cast<BlockIQ4_NL*>(dst);
    const int64_t nb = ncols / QK4_NL;
    for (int64_t r = 0; r < nrows; ++r)
        for (int64_t b = 0; b < nb; ++b)
            iq4nl_quality(src + r * ncols + b * QK4_NL, imp ? imp + b * QK4_NL : nullptr, y + r * nb + b);
}
void iq4xs_quantize_rows(const float* src, void* dst, int64_t nrows, int64_t ncols, const float* imp) {
    auto* y = static_cast<BlockIQ4_XS*>(dst);
    const int64_t nb = ncols / QK_K;
    for (int64_t r = 0; r < nrows; ++r)
        for (int64_t b = 0; b < nb; ++b)
            iq4xs_quality(src + r * ncols + b * QK_K, imp ? imp + b * QK_K : nullptr, y + r * nb + b);
}

// ---- scalar dots: ggml's generic kernels ---------------------------------------------------
void vec_dot_iq4nl_q8_0(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockIQ4_NL*>(w);
    auto* y = static_cast<const BlockQ8_0*>(a);
    float sumf = 0;
    for (int64_t ib = 0; ib < n / QK4_NL; ++ib) {
        const float d = fp16_to_fp32(y[ib].d) * fp16_to_fp32(x[ib].d);
        int sumi1 = 0, sumi2 = 0;
        for (int j = 0; j < QK4_NL / 2; ++j) {
            sumi1 += y[ib].qs[j] * kValues[x[ib].qs[j] & 0xF];
            sumi2 += y[ib].qs[j + QK4_NL / 2] * kValues[x[ib].qs[j] >> 4];
        }
        sumf += d * float(sumi1 + sumi2);
    }
    *out = sumf;
}

void vec_dot_iq4xs_q8k(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockIQ4_XS*>(w);
    auto* y = static_cast<const BlockQ8_K*>(a);
    float sumf = 0;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d4d8 = fp16_to_fp32(x[i].d) * y[i].d;
        for (int ib = 0; ib < QK_K / 32; ++ib) {
            const uint8_t* qs = x[i].qs + 16 * ib;
            const int8_t* q8 = y[i].qs + 32 * ib;
            int sumi1 = 0, sumi2 = 0;
            for (int j = 0; j < 16; ++j) {
                sumi1 += q8[j] * kValues[qs[j] & 0xF];
                sumi2 += q8[j + 16] * kValues[qs[j] >> 4];
            }
            sumf += (d4d8 * float(iq4xs_scale(x[i], ib))) * float(sumi1 + sumi2);
        }
    }
    *out = sumf;
}

}  // namespace

void register_iquant_formats(TypeTable& t) {
    auto& nl = t[uint32_t(Type::IQ4_NL)];
    nl.name = "IQ4_NL"; nl.block_size = QK4_NL; nl.type_size = sizeof(BlockIQ4_NL); nl.is_quantized = true;
    nl.to_float = iq4nl_to_float; nl.from_float = iq4nl_from_float; nl.quantize_rows = iq4nl_quantize_rows;
    nl.vec_dot_type = Type::Q8_0; nl.vec_dot[int(Isa::Scalar)] = vec_dot_iq4nl_q8_0;

    auto& xs = t[uint32_t(Type::IQ4_XS)];
    xs.name = "IQ4_XS"; xs.block_size = QK_K; xs.type_size = sizeof(BlockIQ4_XS); xs.is_quantized = true;
    xs.to_float = iq4xs_to_float; xs.from_float = iq4xs_from_float; xs.quantize_rows = iq4xs_quantize_rows;
    xs.vec_dot_type = Type::Q8_K; xs.vec_dot[int(Isa::Scalar)] = vec_dot_iq4xs_q8k;
}

}  // namespace lowbit
