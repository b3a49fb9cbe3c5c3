// MXFP4 (OCP microscaling): 32 FP4 (E2M1) values sharing one E8M0 power-of-two scale.
// ggml stores the E2M1 values doubled as integers (kvalues_mxfp4) and the scale halved
// (GGML_E8M0_TO_FP32_HALF), so value = kvalues[q] * 2^(e - 128).
//
// from_float is byte-identical to gguf.quants (and llama.cpp's quantize_row_mxfp4_ref):
// e = floor(log2(amax)) - 2 + 127, then each value takes the nearest code (first on ties).
// llama.cpp's quality quantizer ignores the imatrix for MXFP4, so lowbit has none either.
#include <cmath>
#include <cstring>

#include "formats/blocks.h"
#include "formats/fp16.h"
#include "formats/registry.h"

namespace lowbit {

namespace {

constexpr int8_t kValues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// 2^(e - 128) as a float; e < 2 lands in the subnormals.
inline float e8m0_to_fp32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? uint32_t(0x00200000) << e : uint32_t(e - 1) << 23;
    return bits_f32(bits);
}

inline int best_code(float x, float d) {
    int best = 0;
    float best_err = std::fabs(float(kValues[0]) * d - x);
    for (int i = 1; i < 16; ++i) {
        const float err = std::fabs(float(kValues[i]) * d - x);
        if (err < best_err) { best = i; best_err = err; }
    }
    return best;
}

// The exponent byte: computed in float and converted through int, so an amax below 2^-125
// wraps modulo 256 exactly as gguf's astype(uint8) (and ggml's cast) do.
inline uint8_t shared_exponent(float amax) {
    if (!(amax > 0.0f)) return 0;
    const float e = std::floor(std::log2(amax)) - 2.0f + 127.0f;
    return uint8_t(int32_t(e));
}

void mxfp4_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockMXFP4*>(dst);
    for (int64_t i = 0; i < n / QK_MXFP4; ++i, x += QK_MXFP4) {
        float amax = 0.0f;
        for (int j = 0; j < QK_MXFP4; ++j) amax = std::fmax(amax, std::fabs(x[j]));
        y[i].e = shared_exponent(amax);
        const float d = e8m0_to_fp32_half(y[i].e);
        for (int j = 0; j < QK_MXFP4 / 2; ++j)
            y[i].qs[j] = uint8_t(best_code(x[j], d) | (best_code(x[j + QK_MXFP4 / 2], d) << 4));
    }
}

void mxfp4_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockMXFP4*>(src);
    for (int64_t i = 0; i < n / QK_MXFP4; ++i, y += QK_MXFP4) {
        const float d = e8m0_to_fp32_half(x[i].e);
        for (int j = 0; j < QK_MXFP4 / 2; ++j) {
            y[j] = float(kValues[x[i].qs[j] & 0xF]) * d;
            y[j + QK_MXFP4 / 2] = float(kValues[x[i].qs[j] >> 4]) * d;
        }
    }
}

// ggml's generic dot against Q8_0 (same 32-value blocks).
void vec_dot_mxfp4_q8_0(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockMXFP4*>(w);
    auto* y = static_cast<const BlockQ8_0*>(a);
    float sumf = 0;
    for (int64_t ib = 0; ib < n / QK_MXFP4; ++ib) {
        const float d = fp16_to_fp32(y[ib].d) * e8m0_to_fp32_half(x[ib].e);
        int sumi1 = 0, sumi2 = 0;
        for (int j = 0; j < QK_MXFP4 / 2; ++j) {
            sumi1 += y[ib].qs[j] * kValues[x[ib].qs[j] & 0xF];
            sumi2 += y[ib].qs[j + QK_MXFP4 / 2] * kValues[x[ib].qs[j] >> 4];
        }
        sumf += d * float(sumi1 + sumi2);
    }
    *out = sumf;
}

}  // namespace

void register_mxfp4_format(TypeTable& t) {
    auto& tr = t[uint32_t(Type::MXFP4)];
    tr.name = "MXFP4"; tr.block_size = QK_MXFP4; tr.type_size = sizeof(BlockMXFP4); tr.is_quantized = true;
    tr.to_float = mxfp4_to_float; tr.from_float = mxfp4_from_float;
    tr.vec_dot_type = Type::Q8_0; tr.vec_dot[int(Isa::Scalar)] = vec_dot_mxfp4_q8_0;
}

}  // namespace lowbit
