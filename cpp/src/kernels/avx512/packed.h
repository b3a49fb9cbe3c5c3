// Packed weight layouts and the matrix kernels that read them (AVX-512 + VNNI).
//
// A weight matrix is repacked once, at first use, into a layout where one vpdpbusd chain
// leaves each block's (or 16-element group's) exact integer total in its own lane, so no
// horizontal reductions are needed per block.  Activations are quantized as before
// (from_float_act into the weight's vec_dot_type) and then repacked the same way, once
// per matrix product.  The float arithmetic that follows replays the AVX-512 vec_dot
// kernels of avx512_kernels.cpp operation for operation (same lanes, same FMAs, same
// final reduction), so every output is bit-identical to that vec_dot's: only the integer
// work, which is exact in any order, is rearranged.  Several rows and several tokens share
// each load (a register-blocked GEMM for prompts; several rows per pass for decoding).
//
// Plain functions with external linkage, defined in avx512_kernels.cpp; callers must check
// active_isa() >= Isa::Avx512 and supports() first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/registry.h"

namespace lowbit {
namespace packed512 {

// The weight type has a packed layout and kernel here.
bool supports(Type t);
// Bytes of one packed row of n elements (rows are packed independently).
size_t weight_row_bytes(Type t, int64_t n);
// Packs nrows rows (src rows src_stride bytes apart) into dst (weight_row_bytes apart).
void pack_weights(Type t, int64_t n, int64_t nrows, const uint8_t* src, size_t src_stride, uint8_t* dst);
// Dequantizes one packed row of n elements (what pack_weights wrote) to exactly the floats
// of the original row; null if t has no packed layout.
ToFloatFn packed_to_float(Type t);
// Bytes of one token's packed activations against a weight of type t.
size_t act_row_bytes(Type t, int64_t n);
// Packs one token's activations, already converted to vec_dot_type(t), into dst.
void pack_act(Type t, int64_t n, const uint8_t* q, uint8_t* dst);
// c[tok * ldc + r] = dot(weight row r, token tok) for r < nrows, tok < ntok; packed rows
// w_stride bytes apart, packed tokens a_stride bytes apart.
void gemm(Type t, int64_t n, int64_t nrows, int64_t ntok, const uint8_t* w, size_t w_stride, const uint8_t* a,
          size_t a_stride, float* c, int64_t ldc);

// F16 weights (unpacked, rows w_stride elements apart) against activations that are F16
// values held as floats (a_stride floats apart): bit-identical to vec_dot_f16 on AVX-512.
void gemm_f16(int64_t n, int64_t nrows, int64_t ntok, const uint16_t* w, int64_t w_stride, const float* a,
              int64_t a_stride, float* c, int64_t ldc);
// y[i] = float(fp16(x[i])): activations rounded to F16 as from_float(F16) does.
void round_to_f16(const float* x, float* y, int64_t n);

}  // namespace packed512
}  // namespace lowbit
