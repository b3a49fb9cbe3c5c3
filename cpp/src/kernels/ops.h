// The element-wise and row-wise operations of a transformer forward pass (scalar
// reference versions; they are a small share of the time next to the matrix products).
#pragma once

#include <cstdint>

namespace lowbit {

// y = x / sqrt(mean(x^2) + eps) * w, summing in double as ggml does.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

// Rotates pairs (x[2i], x[2i+1]) of each head by pos * base^(-2i/n_rot) (llama's
// "normal" RoPE); dims past n_rot are left alone.
void rope_norm(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int32_t pos, float base);
// The angles rope_norm uses at position pos: cs[2i] = cos, cs[2i+1] = sin of
// pos * base^(-2i/n_rot), i < n_rot/2, computed exactly as rope_norm does.
void rope_cos_sin(int32_t pos, int64_t n_rot, float base, float* cs);
// rope_norm with the angles of rope_cos_sin given (same results).
void rope_norm_cs(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs);
// NeoX-style RoPE: pairs (x[i], x[i + n_rot/2]).
void rope_neox(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int32_t pos, float base);

// In place: x = softmax(x) over n entries.
void softmax(float* x, int64_t n);

// out = silu(gate) * up
void swiglu(const float* gate, const float* up, float* out, int64_t n);

// y += x
void add_inplace(float* y, const float* x, int64_t n);

}  // namespace lowbit
