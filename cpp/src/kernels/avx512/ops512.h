// AVX-512 versions of the forward pass's element-wise and attention operations, each
// bit-identical to its scalar reference in kernels/ops.cpp / models/llama.cpp: the same
// operations in the same order per element (no FMA where the reference has none), with
// only independent elements spread over lanes.  exp is glibc's expf algorithm evaluated
// in double lanes (bit-identical to libm's expf for every float; see ops.cpp).
//
// Plain functions with external linkage, defined in avx512_kernels.cpp; callers check
// active_isa() >= Isa::Avx512 first.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lowbit {
namespace ops512 {

// out = (g / (1 + exp(-g))) * up
void swiglu(const float* gate, const float* up, float* out, int64_t n);
// y = (x * scale) * w
void scale_mul(const float* x, float scale, const float* w, float* y, int64_t n);
// y += x
void add_inplace(float* y, const float* x, int64_t n);
// y[i] = fp16(x[i]) (round to nearest even)
void to_fp16(const float* x, uint16_t* y, int64_t n);
// y[i * stride] = fp16(x[i])
void to_fp16_strided(const float* x, uint16_t* y, int64_t stride, int64_t n);
// Normal RoPE on n_heads heads of head_dim (pairs (2i, 2i+1), i < n_rot/2) with the
// per-pair cos/sin given as cs[2i] = cos, cs[2i+1] = sin.
void rope_norm(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs);

// Activation quantizers, byte-identical to the reference ones of formats/: Q8_0 and Q8_1
// as their from_float_act (127 / amax, round half to even), Q8_K as its from_float.
void quantize_q8_0(const float* x, void* dst, int64_t n);
void quantize_q8_1(const float* x, void* dst, int64_t n);
void quantize_q8_k(const float* x, void* dst, int64_t n);

// Causal attention of g query heads sharing one key/value head, for one token at
// position pos, as models/llama.cpp's reference computes it (queries and probabilities
// rounded to F16, scores summed in float in element order, softmax with a double sum).
//   q      g query rows of hd floats, q_stride apart
//   kt     the key head transposed: hd rows of F16, kt_stride (>= pos + 1 rounded up to
//          16) positions apart; entries past pos are read but not used
//   v      value rows: position j's hd values at v + j * v_stride (F16)
//   out    g rows of hd floats, out_stride apart
//   scores scratch of g * (pos + 64) floats
void attention_group(int64_t g, int64_t hd, int64_t pos, float scale, const float* q, int64_t q_stride,
                     const uint16_t* kt, int64_t kt_stride, const uint16_t* v, int64_t v_stride, float* out,
                     int64_t out_stride, float* scores);

}  // namespace ops512
}  // namespace lowbit
