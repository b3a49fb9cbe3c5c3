// llama.cpp's original block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and the Q8_1
// activation format.  Quantizers reproduce gguf.quants byte for byte: the arithmetic
// is float32 throughout, in the same order, with no fused multiply-add.
#include <cmath>
#include <cstring>

#include "formats/blocks.h"
#include "formats/fp16.h"
#include "formats/registry.h"

namespace lowbit {

namespace {

// Value of largest magnitude (first one on ties), as argmax(|x|) picks it.
float signed_absmax(const float* x, int n) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; ++j) {
        if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
    }
    return max;
}

void min_max(const float* x, int n, float* mn, float* mx) {
    *mn = x[0]; *mx = x[0];
    for (int j = 1; j < n; ++j) { *mn = std::fmin(*mn, x[j]); *mx = std::fmax(*mx, x[j]); }
}

inline float inverse_or_zero(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

// trunc(v) cast to uint8 the way NumPy's astype(np.uint8) does on x86 (through a 32-bit
// integer: out-of-range, inf and NaN become 0, others keep their low byte), then
// clip(0, hi).  Reaching this only with inf/huge values (subnormal block scales), but
// gguf.quants defines those bytes too.  The range check comes first: converting an
// out-of-range float to int is undefined behaviour in C++.
inline uint8_t trunc_clip(float v, int hi) {
    const float t = std::trunc(v);
    if (!(std::fabs(t) < 2147483648.0f)) return 0;
    const uint8_t low = uint8_t(uint32_t(int32_t(t)) & 0xFF);
    return low > hi ? uint8_t(hi) : low;
}

// ---- Q4_0 ------------------------------------------------------------------
void q4_0_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ4_0*>(dst);
    for (int64_t b = 0; b < n / QK4_0; ++b, x += QK4_0) {
        const float d = signed_absmax(x, QK4_0) / -8.0f;
        const float id = inverse_or_zero(d);
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const uint8_t lo = trunc_clip(x[j] * id + 8.5f, 15);
            const uint8_t hi = trunc_clip(x[j + QK4_0 / 2] * id + 8.5f, 15);
            y[b].qs[j] = uint8_t(lo | (hi << 4));
        }
    }
}
void q4_0_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ4_0*>(src);
    for (int64_t b = 0; b < n / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = d * float(int(x[b].qs[j] & 0xF) - 8);
            y[j + QK4_0 / 2] = d * float(int(x[b].qs[j] >> 4) - 8);
        }
    }
}

// ---- Q4_1 ------------------------------------------------------------------
void q4_1_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ4_1*>(dst);
    for (int64_t b = 0; b < n / QK4_1; ++b, x += QK4_1) {
        float mn, mx;
        min_max(x, QK4_1, &mn, &mx);
        const float d = (mx - mn) / 15.0f;
        const float id = inverse_or_zero(d);
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(mn);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            const uint8_t lo = trunc_clip((x[j] - mn) * id + 0.5f, 15);
            const uint8_t hi = trunc_clip((x[j + QK4_1 / 2] - mn) * id + 0.5f, 15);
            y[b].qs[j] = uint8_t(lo | (hi << 4));
        }
    }
}
void q4_1_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ4_1*>(src);
    for (int64_t b = 0; b < n / QK4_1; ++b, y += QK4_1) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            y[j] = d * float(x[b].qs[j] & 0xF) + m;
            y[j + QK4_1 / 2] = d * float(x[b].qs[j] >> 4) + m;
        }
    }
}

// ---- Q5_0 / Q5_1: 4 low bits in qs, the fifth bit of element j in bit j of qh ----
void pack5(const uint8_t* q, uint8_t* qs, uint8_t* qh_bytes) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        qh |= uint32_t(q[j] >> 4) << j;
        qh |= uint32_t(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(qh_bytes, &qh, 4);
}
void unpack5(const uint8_t* qs, const uint8_t* qh_bytes, int* q) {
    uint32_t qh;
    std::memcpy(&qh, qh_bytes, 4);
    for (int j = 0; j < 16; ++j) {
        q[j] = (qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
        q[j + 16] = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
    }
}

void q5_0_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ5_0*>(dst);
    for (int64_t b = 0; b < n / QK5_0; ++b, x += QK5_0) {
        const float d = signed_absmax(x, QK5_0) / -16.0f;
        const float id = inverse_or_zero(d);
        uint8_t q[QK5_0];
        for (int j = 0; j < QK5_0; ++j) q[j] = trunc_clip(x[j] * id + 16.5f, 31);
        y[b].d = fp32_to_fp16(d);
        pack5(q, y[b].qs, y[b].qh);
    }
}
void q5_0_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ5_0*>(src);
    for (int64_t b = 0; b < n / QK5_0; ++b, y += QK5_0) {
        const float d = fp16_to_fp32(x[b].d);
        int q[QK5_0];
        unpack5(x[b].qs, x[b].qh, q);
        for (int j = 0; j < QK5_0; ++j) y[j] = d * float(q[j] - 16);
    }
}
void q5_1_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ5_1*>(dst);
    for (int64_t b = 0; b < n / QK5_1; ++b, x += QK5_1) {
        float mn, mx;
        min_max(x, QK5_1, &mn, &mx);
        const float d = (mx - mn) / 31.0f;
        const float id = inverse_or_zero(d);
        uint8_t q[QK5_1];
        for (int j = 0; j < QK5_1; ++j) q[j] = trunc_clip((x[j] - mn) * id + 0.5f, 31);
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(mn);
        pack5(q, y[b].qs, y[b].qh);
    }
}
void q5_1_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ5_1*>(src);
    for (int64_t b = 0; b < n / QK5_1; ++b, y += QK5_1) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        int q[QK5_1];
        unpack5(x[b].qs, x[b].qh, q);
        for (int j = 0; j < QK5_1; ++j) y[j] = d * float(q[j]) + m;
    }
}

// ---- Q8_0 / Q8_1 -------------------------------------------------------------
float absmax(const float* x, int n) {
    float amax = 0;
    for (int j = 0; j < n; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    return amax;
}

void q8_0_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_0*>(dst);
    for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
        const float d = absmax(x, QK8_0) / 127.0f;
        const float id = inverse_or_zero(d);
        y[b].d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; ++j) y[b].qs[j] = int8_t(std::round(x[j] * id));
    }
}
void q8_0_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ8_0*>(src);
    for (int64_t b = 0; b < n / QK8_0; ++b, y += QK8_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = float(x[b].qs[j]) * d;
    }
}
void q8_1_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_1*>(dst);
    for (int64_t b = 0; b < n / QK8_1; ++b, x += QK8_1) {
        const float d = absmax(x, QK8_1) / 127.0f;
        const float id = inverse_or_zero(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            y[b].qs[j] = int8_t(std::round(x[j] * id));
            sum += y[b].qs[j];
        }
        y[b].d = fp32_to_fp16(d);
        y[b].s = fp32_to_fp16(float(sum) * d);
    }
}
void q8_1_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockQ8_1*>(src);
    for (int64_t b = 0; b < n / QK8_1; ++b, y += QK8_1) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK8_1; ++j) y[j] = float(x[b].qs[j]) * d;
    }
}

// Activation quantizers with the arithmetic of llama.cpp's x86 quantize_row_q8_0/q8_1
// (scale 127/amax, round half to even), which is what llama.cpp runs on x86 CPUs.
void q8_0_quantize_act(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_0*>(dst);
    for (int64_t b = 0; b < n / QK8_0; ++b, x += QK8_0) {
        const float amax = absmax(x, QK8_0);
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = fp32_to_fp16(amax / 127.0f);
        for (int j = 0; j < QK8_0; ++j) y[b].qs[j] = int8_t(std::nearbyint(x[j] * id));
    }
}
void q8_1_quantize_act(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockQ8_1*>(dst);
    for (int64_t b = 0; b < n / QK8_1; ++b, x += QK8_1) {
        const float amax = absmax(x, QK8_1);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            y[b].qs[j] = int8_t(std::nearbyint(x[j] * id));
            sum += y[b].qs[j];
        }
        y[b].d = fp32_to_fp16(d);
        y[b].s = fp32_to_fp16(d * float(sum));
    }
}

// ---- scalar dot kernels (the reference every SIMD path is tested against) ----
void vec_dot_q4_0_q8_0(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ4_0*>(w);
    auto* y = static_cast<const BlockQ8_0*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; ++j)
            sumi += (int(x[b].qs[j] & 0xF) - 8) * y[b].qs[j] + (int(x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        sum += float(sumi) * (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    *out = sum;
}
void vec_dot_q4_1_q8_1(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ4_1*>(w);
    auto* y = static_cast<const BlockQ8_1*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK8_1; ++b) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; ++j)
            sumi += int(x[b].qs[j] & 0xF) * y[b].qs[j] + int(x[b].qs[j] >> 4) * y[b].qs[j + 16];
        sum += (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d)) * float(sumi) +
               fp16_to_fp32(x[b].m) * fp16_to_fp32(y[b].s);
    }
    *out = sum;
}
void vec_dot_q5_0_q8_0(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ5_0*>(w);
    auto* y = static_cast<const BlockQ8_0*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int q[QK5_0], sumi = 0;
        unpack5(x[b].qs, x[b].qh, q);
        for (int j = 0; j < QK5_0; ++j) sumi += (q[j] - 16) * y[b].qs[j];
        sum += float(sumi) * (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    *out = sum;
}
void vec_dot_q5_1_q8_1(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ5_1*>(w);
    auto* y = static_cast<const BlockQ8_1*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK8_1; ++b) {
        int q[QK5_1], sumi = 0;
        unpack5(x[b].qs, x[b].qh, q);
        for (int j = 0; j < QK5_1; ++j) sumi += q[j] * y[b].qs[j];
        sum += (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d)) * float(sumi) +
               fp16_to_fp32(x[b].m) * fp16_to_fp32(y[b].s);
    }
    *out = sum;
}
void vec_dot_q8_0_q8_0(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockQ8_0*>(w);
    auto* y = static_cast<const BlockQ8_0*>(a);
    float sum = 0;
    for (int64_t b = 0; b < n / QK8_0; ++b) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; ++j) sumi += int(x[b].qs[j]) * y[b].qs[j];
        sum += float(sumi) * (fp16_to_fp32(x[b].d) * fp16_to_fp32(y[b].d));
    }
    *out = sum;
}

void set(TypeTraits& tr, const char* name, int64_t bs, size_t ts, ToFloatFn to, FromFloatFn from,
         Type dot_type, VecDotFn dot) {
    tr.name = name; tr.block_size = bs; tr.type_size = ts; tr.is_quantized = true;
    tr.to_float = to; tr.from_float = from; tr.vec_dot_type = dot_type;
    tr.vec_dot[int(Isa::Scalar)] = dot;
}

}  // namespace

void register_legacy_formats(TypeTable& t) {
    set(t[uint32_t(Type::Q4_0)], "Q4_0", QK4_0, sizeof(BlockQ4_0), q4_0_to_float, q4_0_from_float, Type::Q8_0, vec_dot_q4_0_q8_0);
    set(t[uint32_t(Type::Q4_1)], "Q4_1", QK4_1, sizeof(BlockQ4_1), q4_1_to_float, q4_1_from_float, Type::Q8_1, vec_dot_q4_1_q8_1);
    set(t[uint32_t(Type::Q5_0)], "Q5_0", QK5_0, sizeof(BlockQ5_0), q5_0_to_float, q5_0_from_float, Type::Q8_0, vec_dot_q5_0_q8_0);
    set(t[uint32_t(Type::Q5_1)], "Q5_1", QK5_1, sizeof(BlockQ5_1), q5_1_to_float, q5_1_from_float, Type::Q8_1, vec_dot_q5_1_q8_1);
    set(t[uint32_t(Type::Q8_0)], "Q8_0", QK8_0, sizeof(BlockQ8_0), q8_0_to_float, q8_0_from_float, Type::Q8_0, vec_dot_q8_0_q8_0);
    set(t[uint32_t(Type::Q8_1)], "Q8_1", QK8_1, sizeof(BlockQ8_1), q8_1_to_float, q8_1_from_float, Type::Q8_1, nullptr);
    t[uint32_t(Type::Q8_0)].from_float_act = q8_0_quantize_act;
    t[uint32_t(Type::Q8_1)].from_float_act = q8_1_quantize_act;
}

}  // namespace lowbit
