// Llama: RMSNorm -> attention (GQA, RoPE, KV cache) -> residual -> RMSNorm -> SwiGLU FFN
// -> residual, for every layer; then the final norm and the classifier.  Kernels live in
// kernels/; this file reads like the paper.
#include "models/llama.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "formats/fp16.h"
#include "kernels/avx512/ops512.h"
#include "kernels/ops.h"
#include "profile.h"

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

// Vectorized operations (bit-identical to the reference ones) unless the CPU lacks
// AVX-512 or LOWBIT_REFERENCE_OPS is set.
bool simd_ops() {
    if (int(active_isa()) < int(Isa::Avx512)) return false;
    const char* env = std::getenv("LOWBIT_REFERENCE_OPS");
    return !(env && env[0] && env[0] != '0');
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

// y = rms_norm(x) * w for one row: the sum of squares in double, in order, as ggml.
void norm_row(const float* x, const float* w, float* y, int64_t n, float eps, bool simd) {
    if (!simd) return rms_norm(x, w, y, n, eps);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(x[i] * x[i]);
    const float mean = float(sum / double(n));
    ops512::scale_mul(x, 1.0f / std::sqrt(mean + eps), w, y, n);
}

// Reference attention of g query heads sharing one key/value head, one token at position
// pos (the arithmetic ops512::attention_group reproduces): queries rounded to F16 as
// llama.cpp's K*Q product does, scores summed in float in element order, softmax, and
// V (F16) multiplied by the probabilities rounded to F16.
void attention_ref(int64_t g, int64_t hd, int64_t pos, float scale, const float* q, int64_t q_stride,
                   const uint16_t* kt, int64_t kt_stride, const uint16_t* v, int64_t v_stride, float* out,
                   int64_t out_stride, float* scores) {
    const float* h2f = fp16_table();
    std::vector<float> qh(static_cast<size_t>(hd));
    for (int64_t h = 0; h < g; ++h) {
        const float* qsrc = q + h * q_stride;
        for (int64_t i = 0; i < hd; ++i) qh[size_t(i)] = h2f[fp32_to_fp16(qsrc[i])];
        for (int64_t j = 0; j <= pos; ++j) {
            float s = 0;
            for (int64_t i = 0; i < hd; ++i) s += qh[size_t(i)] * h2f[kt[i * kt_stride + j]];
            scores[j] = s * scale;
        }
        softmax(scores, pos + 1);
        float* acc = out + h * out_stride;
        std::fill(acc, acc + hd, 0.0f);
        for (int64_t j = 0; j <= pos; ++j) {
            const uint16_t* vr = v + j * v_stride;
            const float p = h2f[fp32_to_fp16(scores[j])];
            for (int64_t i = 0; i < hd; ++i) acc[i] += p * h2f[vr[i]];
        }
    }
}

// RoPE of token t's query heads that share key/value head kvh, and of that key head; the
// key and value then go into the cache at the token's position.
void rope_store(const HParams& hp, KvCache& cache, int64_t layer, float* q, float* k, const float* v, int64_t t,
                int64_t pos, int64_t kvh, const float* cs, bool simd) {
    const int64_t hd = hp.head_dim, group = hp.n_head / hp.n_head_kv;
    const int64_t dq = hp.n_embd_q(), dkv = hp.n_embd_kv();
    float* qh = q + t * dq + kvh * group * hd;
    float* kh = k + t * dkv + kvh * hd;
    const float* vh = v + t * dkv + kvh * hd;
    uint16_t* kdst = cache.kt(layer) + kvh * hd * cache.stride() + pos;
    uint16_t* vdst = cache.v(layer, pos) + kvh * hd;
    if (simd) {
        ops512::rope_norm(qh, group, hd, hp.n_rot, cs);
        ops512::rope_norm(kh, 1, hd, hp.n_rot, cs);
        ops512::to_fp16_strided(kh, kdst, cache.stride(), hd);
        ops512::to_fp16(vh, vdst, hd);
    } else {
        rope_norm_cs(qh, group, hd, hp.n_rot, cs);
        rope_norm_cs(kh, 1, hd, hp.n_rot, cs);
        for (int64_t c = 0; c < hd; ++c) kdst[c * cache.stride()] = fp32_to_fp16(kh[c]);
        for (int64_t c = 0; c < hd; ++c) vdst[c] = fp32_to_fp16(vh[c]);
    }
}

// Causal attention of n new tokens (positions pos0..) over the cache, all heads, with the
// new tokens' RoPE and cache writes in the same pass over the threads: those come first
// (one item per token and key/value head), and attention jobs start once all are done.
// Jobs are (token, key/value head) pairs taking the heads that share it together, or
// single heads when there are too few pairs to keep every thread busy (one-token decoding).
void attention(const HParams& hp, KvCache& cache, int64_t layer, float* q, float* k, const float* v, int64_t n,
               int64_t pos0, const float* rope, float* out, Workspace& ws, ThreadPool& pool, bool simd) {
    const int64_t hd = hp.head_dim, n_head = hp.n_head, n_kv = hp.n_head_kv, group = hp.n_head / hp.n_head_kv;
    const float scale = 1.0f / std::sqrt(float(hd));
    const int64_t per_job = n * n_kv >= 4 * pool.size() ? group : 1;
    const int64_t jobs_per_token = n_head / per_job;
    const bool vec = simd && hd % 16 == 0;
    const int64_t dq = hp.n_embd_q(), dkv = hp.n_embd_kv();
    const int64_t n_prep = n * n_kv, n_jobs = n_prep + n * jobs_per_token;
    std::atomic<int64_t> next{0}, prepared{0};
    pool.run([&](int tid, int) {
        float* scratch = ws.scores[size_t(tid)].data();
        for (int64_t job; (job = next.fetch_add(1, std::memory_order_relaxed)) < n_jobs;) {
            if (job < n_prep) {
                const int64_t t = job / n_kv, pos = pos0 + t;
                rope_store(hp, cache, layer, q, k, v, t, pos, job % n_kv, rope + pos * hp.n_rot, simd);
                prepared.fetch_add(1, std::memory_order_acq_rel);
                continue;
            }
            // every item above has been claimed by a running thread, which finishes it
            while (prepared.load(std::memory_order_acquire) < n_prep) cpu_relax();
            job -= n_prep;
            const int64_t t = job / jobs_per_token, h0 = (job % jobs_per_token) * per_job, kvh = h0 / group;
            const int64_t pos = pos0 + t;
            const float* qs = q + t * dq + h0 * hd;
            const uint16_t* kt = cache.kt(layer) + kvh * hd * cache.stride();
            const uint16_t* vc = cache.v(layer, 0) + kvh * hd;
            float* o = out + t * dq + h0 * hd;
            if (vec)
                ops512::attention_group(per_job, hd, pos, scale, qs, hd, kt, cache.stride(), vc, dkv, o, hd, scratch);
            else
                attention_ref(per_job, hd, pos, scale, qs, hd, kt, cache.stride(), vc, dkv, o, hd, scratch);
        }
    });
}

void resize(std::vector<float>& v, int64_t n) {
    if (int64_t(v.size()) < n) v.resize(size_t(n));
}

// RoPE angles for positions [0, upto), computed once per context.
const float* rope_table(const HParams& hp, Workspace& ws, int64_t upto) {
    const int64_t w = hp.n_rot;
    if (ws.rope_filled < upto) {
        resize(ws.rope_cs, upto * w);
        for (int64_t p = ws.rope_filled; p < upto; ++p) rope_cos_sin(int32_t(p), w, hp.rope_base, ws.rope_cs.data() + p * w);
        ws.rope_filled = upto;
    }
    return ws.rope_cs.data();
}

size_t weight_bytes(const WeightView& w) { return w.row_bytes * size_t(w.rows); }

}  // namespace

void llama_forward(const Model& m, KvCache& cache, Workspace& ws, ThreadPool& pool, const int32_t* tokens,
                   int64_t n, int64_t pos0, int64_t n_out, float* logits) {
    const HParams& hp = m.hparams();
    const int64_t d = hp.n_embd, dq = hp.n_embd_q(), dkv = hp.n_embd_kv(), ff = hp.n_ff;
    if (pos0 + n > cache.n_ctx()) fail("context is full");
    const bool simd = simd_ops();
    resize(ws.x, n * d); resize(ws.xn, n * d); resize(ws.proj, n * d);
    resize(ws.q, n * dq); resize(ws.attn, n * dq);
    resize(ws.k, n * dkv); resize(ws.v, n * dkv);
    resize(ws.gate, n * ff); resize(ws.up, n * ff); resize(ws.hidden, n * ff);
    ws.scores.resize(size_t(pool.size()));
    const int64_t group = hp.n_head / hp.n_head_kv;
    for (auto& s : ws.scores) resize(s, group * (cache.stride() + 64 + hp.head_dim));
    if (ws.rope_filled > 0 && int64_t(ws.rope_cs.size()) < ws.rope_filled * hp.n_rot) ws.rope_filled = 0;
    const float* rope = rope_table(hp, ws, pos0 + n);
    const prof::Scope whole(prof::kForward);

    float* x = ws.x.data();
    float* xn = ws.xn.data();
    embed(m, tokens, n, x);
    // per-token work is split over the pool for prompts; a single token runs inline
    auto per_token = [&](auto fn) {
        pool.parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
            for (int64_t t = t0; t < t1; ++t) fn(t);
        });
    };
    auto rows = [&](int64_t total, int64_t width, auto fn) {   // element-wise work, split in whole rows
        pool.parallel_for(total / width, 1, [&](int64_t r0, int64_t r1) { fn(r0 * width, (r1 - r0) * width); });
    };

    auto add_residual = [&] {   // x += proj
        const prof::Scope s(prof::kResidual);
        rows(n * d, d, [&](int64_t off, int64_t len) {
            if (simd) ops512::add_inplace(x + off, ws.proj.data() + off, len);
            else add_inplace(x + off, ws.proj.data() + off, len);
        });
    };

    const RowsDone swiglu_rows = [&](int64_t r0, int64_t r1) {   // hidden = silu(gate) * up, rows [r0, r1)
        for (int64_t t = 0; t < n; ++t) {
            const int64_t off = t * ff + r0;
            if (simd) ops512::swiglu(ws.gate.data() + off, ws.up.data() + off, ws.hidden.data() + off, r1 - r0);
            else swiglu(ws.gate.data() + off, ws.up.data() + off, ws.hidden.data() + off, r1 - r0);
        }
    };

    for (int64_t l = 0; l < hp.n_layer; ++l) {
        const LayerWeights& L = m.layers[size_t(l)];
        // attention block
        {
            const prof::Scope s(prof::kNorm);
            per_token([&](int64_t t) { norm_row(x + t * d, L.attn_norm, xn + t * d, d, hp.rms_eps, simd); });
        }
        {
            const prof::Scope s(prof::kQkv, weight_bytes(L.wq) + weight_bytes(L.wk) + weight_bytes(L.wv));
            const MatmulJob qkv[3] = {{&L.wq, ws.q.data(), dq}, {&L.wk, ws.k.data(), dkv}, {&L.wv, ws.v.data(), dkv}};
            matmul_many(qkv, 3, xn, n, pool, ws.mm);
        }
        {
            const prof::Scope s(prof::kAttention);
            attention(hp, cache, l, ws.q.data(), ws.k.data(), ws.v.data(), n, pos0, rope, ws.attn.data(), ws, pool, simd);
        }
        {
            const prof::Scope s(prof::kWo, weight_bytes(L.wo));
            matmul(L.wo, ws.attn.data(), n, ws.proj.data(), pool, ws.mm);
        }
        add_residual();

        // feed-forward block
        {
            const prof::Scope s(prof::kNorm);
            per_token([&](int64_t t) { norm_row(x + t * d, L.ffn_norm, xn + t * d, d, hp.rms_eps, simd); });
        }
        {   // SwiGLU of each range of rows runs as soon as its gate and up rows are done
            const prof::Scope s(prof::kGateUp, weight_bytes(L.w_gate) + weight_bytes(L.w_up));
            const MatmulJob gate_up[2] = {{&L.w_gate, ws.gate.data(), ff}, {&L.w_up, ws.up.data(), ff}};
            matmul_many(gate_up, 2, xn, n, pool, ws.mm, &swiglu_rows);
        }
        {
            const prof::Scope s(prof::kDown, weight_bytes(L.w_down));
            matmul(L.w_down, ws.hidden.data(), n, ws.proj.data(), pool, ws.mm);
        }
        add_residual();
    }

    // classifier, only for the rows the caller wants
    const int64_t first = n - n_out;
    const prof::Scope s(prof::kOutput, weight_bytes(m.output));
    for (int64_t t = first; t < n; ++t) norm_row(x + t * d, m.output_norm, xn + t * d, d, hp.rms_eps, simd);
    matmul(m.output, xn + first * d, n_out, logits, pool, ws.mm);
}

}  // namespace lowbit
