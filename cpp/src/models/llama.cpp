// Llama: RMSNorm -> attention (GQA, RoPE, KV cache) -> residual -> RMSNorm -> SwiGLU FFN
// -> residual, for every layer; then the final norm and the classifier.  Kernels live in
// kernels/; this file reads like the paper.
#include "models/llama.h"

#include <cmath>
#include <cstring>

#include "formats/fp16.h"
#include "kernels/ops.h"

namespace lowbit {

namespace {

const float* fp16_table() {
    static std::vector<float> table = [] {
        std::vector<float> t(65536);
        for (uint32_t i = 0; i < 65536; ++i) t[i] = fp16_to_fp32(uint16_t(i));
        return t;
    }();
    return table.data();
}

void embed(const Model& m, const int32_t* tokens, int64_t n, float* x) {
    const TypeTraits& tr = type_traits(m.tok_embd.type);
    const int64_t d = m.hparams().n_embd;
    for (int64_t t = 0; t < n; ++t) {
        if (tokens[t] < 0 || tokens[t] >= m.hparams().n_vocab)
            fail("token id " + std::to_string(tokens[t]) + " is out of range [0, " +
                 std::to_string(m.hparams().n_vocab) + ")");
        tr.to_float(m.tok_embd.row(tokens[t]), x + t * d, d);
    }
}

void to_fp16(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

// Causal attention of n new tokens (positions pos0..) over the cache, all heads.
// Queries are rounded to F16 like llama.cpp's K*Q product does.
void attention(const HParams& hp, const KvCache& cache, int64_t layer, const float* q, int64_t n, int64_t pos0,
               float* out, Workspace& ws, ThreadPool& pool) {
    const int64_t hd = hp.head_dim, n_head = hp.n_head, group = hp.n_head / hp.n_head_kv;
    const float scale = 1.0f / std::sqrt(float(hd));
    const float* h2f = fp16_table();
    pool.run([&](int tid, int nth) {
        float* scores = ws.scores[size_t(tid)].data();
        std::vector<float> qh(static_cast<size_t>(hd)), acc(static_cast<size_t>(hd));
        for (int64_t job = tid; job < n * n_head; job += nth) {
            const int64_t t = job / n_head, h = job % n_head, kvh = h / group;
            const int64_t pos = pos0 + t;
            const float* qsrc = q + t * hp.n_embd_q() + h * hd;
            for (int64_t i = 0; i < hd; ++i) qh[size_t(i)] = h2f[fp32_to_fp16(qsrc[i])];
            for (int64_t j = 0; j <= pos; ++j) {
                const uint16_t* kr = cache.k(layer, j) + kvh * hd;
                float s = 0;
                for (int64_t i = 0; i < hd; ++i) s += qh[size_t(i)] * h2f[kr[i]];
                scores[j] = s * scale;
            }
            softmax(scores, pos + 1);
            // llama.cpp multiplies V (F16) by the probabilities rounded to F16
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int64_t j = 0; j <= pos; ++j) {
                const uint16_t* vr = cache.v(layer, j) + kvh * hd;
                const float p = h2f[fp32_to_fp16(scores[j])];
                for (int64_t i = 0; i < hd; ++i) acc[size_t(i)] += p * h2f[vr[i]];
            }
            std::memcpy(out + t * hp.n_embd_q() + h * hd, acc.data(), size_t(hd) * sizeof(float));
        }
    });
}

void resize(std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
}

}  // namespace

void llama_forward(const Model& m, KvCache& cache, Workspace& ws, ThreadPool& pool, const int32_t* tokens,
                   int64_t n, int64_t pos0, int64_t n_out, float* logits) {
    const HParams& hp = m.hparams();
    const int64_t d = hp.n_embd, dq = hp.n_embd_q(), dkv = hp.n_embd_kv(), ff = hp.n_ff;
    if (pos0 + n > cache.n_ctx()) fail("context is full");
    resize(ws.x, n * d); resize(ws.xn, n * d); resize(ws.proj, n * d);
    resize(ws.q, n * dq); resize(ws.attn, n * dq);
    resize(ws.k, n * dkv); resize(ws.v, n * dkv);
    resize(ws.gate, n * ff); resize(ws.up, n * ff); resize(ws.hidden, n * ff);
    ws.scores.resize(size_t(pool.size()));
    for (auto& s : ws.scores) resize(s, cache.n_ctx());

    float* x = ws.x.data();
    float* xn = ws.xn.data();
    embed(m, tokens, n, x);

    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const LayerWeights& L = m.layers[size_t(l)];
        // attention block
        for (int64_t t = 0; t < n; ++t) rms_norm(x + t * d, L.attn_norm, xn + t * d, d, hp.rms_eps);
        matmul(L.wq, xn, n, ws.q.data(), pool, ws.mm);
        matmul(L.wk, xn, n, ws.k.data(), pool, ws.mm);
        matmul(L.wv, xn, n, ws.v.data(), pool, ws.mm);
        for (int64_t t = 0; t < n; ++t) {
            const int32_t pos = int32_t(pos0 + t);
            rope_norm(ws.q.data() + t * dq, hp.n_head, hp.head_dim, hp.n_rot, pos, hp.rope_base);
            rope_norm(ws.k.data() + t * dkv, hp.n_head_kv, hp.head_dim, hp.n_rot, pos, hp.rope_base);
            to_fp16(ws.k.data() + t * dkv, cache.k(l, pos), dkv);
            to_fp16(ws.v.data() + t * dkv, cache.v(l, pos), dkv);
        }
        attention(hp, cache, l, ws.q.data(), n, pos0, ws.attn.data(), ws, pool);
        matmul(L.wo, ws.attn.data(), n, ws.proj.data(), pool, ws.mm);
        add_inplace(x, ws.proj.data(), n * d);

        // feed-forward block
        for (int64_t t = 0; t < n; ++t) rms_norm(x + t * d, L.ffn_norm, xn + t * d, d, hp.rms_eps);
        matmul(L.w_gate, xn, n, ws.gate.data(), pool, ws.mm);
        matmul(L.w_up, xn, n, ws.up.data(), pool, ws.mm);
        swiglu(ws.gate.data(), ws.up.data(), ws.hidden.data(), n * ff);
        matmul(L.w_down, ws.hidden.data(), n, ws.proj.data(), pool, ws.mm);
        add_inplace(x, ws.proj.data(), n * d);
    }

    // classifier, only for the rows the caller wants
    const int64_t first = n - n_out;
    for (int64_t t = first; t < n; ++t) rms_norm(x + t * d, m.output_norm, xn + t * d, d, hp.rms_eps);
    matmul(m.output, xn + first * d, n_out, logits, pool, ws.mm);
}

}  // namespace lowbit
