// Prompt products on AMX tiles (Intel Sapphire Rapids and later), in BF16.
//
// Why BF16 and not int8: the int8 tile product (TDPBSSD) must stop at every 32-element
// block to apply the block's scale in float, so its float epilogue, not the tile unit,
// sets the pace.  Weights of every format are instead dequantized once per product (the
// registry's to_float) and rounded to bf16, the activations rounded to bf16 once; each
// 16 x 16 fp32 output tile then accumulates over the whole row inside the tile unit.
// Cost: bf16 rounding of weights and activations (unit roundoff 2^-8 each), the same order as
// the int8 activation quantization of the other paths; dequantization is paid once per
// weight and product, so matmul sends only long prompt batches here.
//
// Only ever called after detected_isa() == Isa::Amx (cpu_features.cpp has then obtained
// the OS's permission for tile state).
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/registry.h"

namespace lowbit {
namespace amx {

// Tiles of 16 tokens that ntok tokens fill (pack_tokens' unit).
inline int64_t token_tiles(int64_t ntok) { return (ntok + 15) / 16; }
// Bytes of activations packed for n-element rows and ntok tokens.
size_t packed_tokens_bytes(int64_t n, int64_t ntok);
// Packs the token tiles [tile0, tile1) (16 tokens each) of x (ntok rows of n floats, ldx
// floats apart) into dst (packed_tokens_bytes large); tiles are independent.
void pack_tokens(int64_t n, int64_t ntok, int64_t tile0, int64_t tile1, const float* x, int64_t ldx, uint8_t* dst);
// c[t * ldc + r] = dot(row r of w, token t) for r < nrows, t < ntok: w holds nrows rows of
// n elements of a type whose rows to_float dequantizes, w_stride bytes apart; tokens as
// pack_tokens wrote them (all tiles).
void matmul_bf16(ToFloatFn to_float, int64_t n, int64_t nrows, int64_t ntok, const uint8_t* w, size_t w_stride,
                 const uint8_t* tokens, float* c, int64_t ldc);

}  // namespace amx
}  // namespace lowbit
