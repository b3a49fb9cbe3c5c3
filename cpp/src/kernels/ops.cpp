#include "kernels/ops.h"

#include <cmath>

namespace lowbit {

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
    const float mean = float(sum / double(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * w[i];
}

namespace {

// theta_i = pos * base^(-2i/n_rot), computed by repeated multiplication as ggml does
// so that cos/sin agree with llama.cpp to the last bit where possible.
template <typename Pair>
void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int32_t pos, float base, Pair pair) {
    const float theta_scale = std::pow(base, -2.0f / float(n_rot));
    float theta = float(pos);
    for (int64_t i = 0; i < n_rot / 2; ++i) {
        const float c = std::cos(theta), s = std::sin(theta);
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = x + h * head_dim;
            int64_t a, b;
            pair(i, n_rot, &a, &b);
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
        theta *= theta_scale;
    }
}

}  // namespace

void rope_cos_sin(int32_t pos, int64_t n_rot, float base, float* cs) {
    const float theta_scale = std::pow(base, -2.0f / float(n_rot));
    float theta = float(pos);
    for (int64_t i = 0; i < n_rot / 2; ++i) {
        cs[2 * i] = std::cos(theta);
        cs[2 * i + 1] = std::sin(theta);
        theta *= theta_scale;
    }
}

void rope_norm_cs(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, const float* cs) {
    for (int64_t i = 0; i < n_rot / 2; ++i) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = x + h * head_dim;
            const float x0 = v[2 * i], x1 = v[2 * i + 1];
            v[2 * i] = x0 * c - x1 * s;
            v[2 * i + 1] = x0 * s + x1 * c;
        }
    }
}

void rope_norm(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int32_t pos, float base) {
    rope_apply(x, n_heads, head_dim, n_rot, pos, base, [](int64_t i, int64_t, int64_t* a, int64_t* b) {
        *a = 2 * i;
        *b = 2 * i + 1;
    });
}

void rope_neox(float* x, int64_t n_heads, int64_t head_dim, int64_t n_rot, int32_t pos, float base) {
    rope_apply(x, n_heads, head_dim, n_rot, pos, base, [](int64_t i, int64_t n_rot, int64_t* a, int64_t* b) {
        *a = i;
        *b = i + n_rot / 2;
    });
}

void softmax(float* x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, x[i]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = float(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = (g / (1.0f + std::exp(-g))) * up[i];
    }
}

void add_inplace(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace lowbit
