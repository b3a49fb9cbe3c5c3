// F32, F16, BF16: the unquantized formats.
#include <cstring>

#include "formats/fp16.h"
#include "formats/registry.h"

namespace lowbit {

namespace {

void f32_to_float(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * 4); }
void f32_from_float(const float* src, void* dst, int64_t n) { std::memcpy(dst, src, size_t(n) * 4); }

void f16_to_float(const void* src, float* dst, int64_t n) {
    auto* h = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(h[i]);
}
void f16_from_float(const float* src, void* dst, int64_t n) {
    auto* h = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(src[i]);
}
void bf16_to_float(const void* src, float* dst, int64_t n) {
    auto* h = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(h[i]);
}
void bf16_from_float(const float* src, void* dst, int64_t n) {
    auto* h = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(src[i]);
}

// Scalar dots accumulate in double, as ggml's reference (ggml_float) does.
void vec_dot_f32(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const float*>(w);
    auto* y = static_cast<const float*>(a);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(x[i] * y[i]);
    *out = float(s);
}
void vec_dot_f16(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const uint16_t*>(w);
    auto* y = static_cast<const uint16_t*>(a);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    *out = float(s);
}
void vec_dot_bf16(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const uint16_t*>(w);
    auto* y = static_cast<const uint16_t*>(a);
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(bf16_to_fp32(x[i]) * bf16_to_fp32(y[i]));
    *out = float(s);
}

}  // namespace

void register_float_formats(TypeTable& t) {
    auto& f32 = t[uint32_t(Type::F32)];
    f32.name = "F32"; f32.block_size = 1; f32.type_size = 4;
    f32.to_float = f32_to_float; f32.from_float = f32_from_float;
    f32.vec_dot_type = Type::F32; f32.vec_dot[int(Isa::Scalar)] = vec_dot_f32;

    auto& f16 = t[uint32_t(Type::F16)];
    f16.name = "F16"; f16.block_size = 1; f16.type_size = 2;
    f16.to_float = f16_to_float; f16.from_float = f16_from_float;
    f16.vec_dot_type = Type::F16; f16.vec_dot[int(Isa::Scalar)] = vec_dot_f16;

    auto& bf16 = t[uint32_t(Type::BF16)];
    bf16.name = "BF16"; bf16.block_size = 1; bf16.type_size = 2;
    bf16.to_float = bf16_to_float; bf16.from_float = bf16_from_float;
    bf16.vec_dot_type = Type::BF16; bf16.vec_dot[int(Isa::Scalar)] = vec_dot_bf16;
}

}  // namespace lowbit
