#include "kernels/matmul.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <iterator>
#include <cstdlib>

#include "common.h"
#include "gguf/gguf.h"
#include "kernels/amx/amx_gemm.h"
#include "kernels/avx512/ops512.h"
#include "kernels/avx512/packed.h"
#include "profile.h"

namespace lowbit {

namespace {

// Rows handed to one thread at a time: enough to amortise scheduling, small enough
// to balance two to sixteen threads on the small matrices of a 135M model.
constexpr int64_t kRowGrain = 16;
// Tokens processed against one tile of weight rows, so the tile stays in cache.
constexpr int64_t kTokenTile = 8;
// Prompt batches of at least this many tokens take the AMX tiles (amx_gemm.h): they
// dequantize every weight once per product, which the tile unit's speed repays only over
// many tokens; shorter batches stay on the packed int8 kernels.
constexpr int64_t kAmxMinTokens = 128;
// Weight rows per AMX task (whole tiles; parallel_for hands out several per thread).
constexpr int64_t kAmxRowGrain = 32;
// Packed kernels: tokens per pass over a chunk of rows (their packed activations stay in
// L1 while the chunk's weights come from L2).
constexpr int64_t kPackedTokenBlock = 16;

bool packed_path(Type t) { return int(active_isa()) >= int(Isa::Avx512) && packed512::supports(t); }

// The AVX-512 activation quantizers (byte-identical to the reference ones) unless
// LOWBIT_REFERENCE_OPS is set (tests compare the two through whole forward passes).
FromFloatFn fast_act_quantizer(Type t) {
    if (int(active_isa()) < int(Isa::Avx512)) return nullptr;
    const char* env = std::getenv("LOWBIT_REFERENCE_OPS");
    if (env && env[0] && env[0] != '0') return nullptr;
    switch (t) {
        case Type::Q8_0: return ops512::quantize_q8_0;
        case Type::Q8_1: return ops512::quantize_q8_1;
        case Type::Q8_K: return ops512::quantize_q8_k;
        default: return nullptr;
    }
}

// Activations in the weight's dot type, converted once per call.
const uint8_t* convert_act(const WeightView& w, const float* x, int64_t n_tokens, ThreadPool& pool,
                           MatmulScratch& scratch, size_t* act_row) {
    const TypeTraits& wt = type_traits(w.type);
    const TypeTraits& at = type_traits(wt.vec_dot_type);
    *act_row = row_bytes(wt.vec_dot_type, w.cols);
    if (wt.vec_dot_type == Type::F32) return reinterpret_cast<const uint8_t*>(x);
    FromFloatFn convert = at.from_float_act ? at.from_float_act : at.from_float;
    if (const FromFloatFn fast = fast_act_quantizer(wt.vec_dot_type)) convert = fast;
    scratch.act.resize(*act_row * size_t(n_tokens));
    uint8_t* dst = scratch.act.data();
    const size_t ar = *act_row;
    pool.parallel_for(n_tokens, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) convert(x + t * w.cols, dst + size_t(t) * ar, w.cols);
    });
    return dst;
}

// A 64-byte-aligned start inside buf, which is grown to hold `bytes` from there: the
// kernels' 64-byte activation loads then never straddle two cache lines (measured: 10-20%
// on the F16 prompt GEMM).
uint8_t* aligned64(std::vector<uint8_t>& buf, size_t bytes) {
    buf.resize(bytes + 64);
    return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) & ~uintptr_t(63));
}

// Row stride, in floats, of F16 activations held as floats: whole 64-byte lines.
int64_t f16_act_stride(int64_t cols) { return (cols + 15) / 16 * 16; }

// Whether the product with w for n_tokens tokens runs on AMX tiles: quantized weights
// (and BF16, exact in bf16) of long prompt batches, where the CPU has AMX.  F16/F32
// weights stay on the float kernels (bf16 would round them).  Measured on the device
// machine's Xeon (16 threads, Llama-3.2-1B shape, pp512 t/s, packed VNNI kernels / AMX
// tiles): Q4_0 1123 / 1493, Q8_0 959 / 1496, Q4_K_M 618 / 1410.
bool amx_path(const WeightView& w, int64_t n_tokens) {
    if (active_isa() != Isa::Amx || n_tokens < kAmxMinTokens) return false;
    const TypeTraits& wt = type_traits(w.type);
    return (wt.is_quantized || w.type == Type::BF16) && wt.to_float;
}

// Whether products with w for n_tokens tokens take matmul_many's packed (or F16) AVX-512
// kernels, rather than AMX tiles (matmul_amx) or the per-row vec_dot path (matmul_generic).
bool fast_path(const WeightView& w, int64_t n_tokens) {
    if (int(active_isa()) < int(Isa::Avx512)) return false;
    if (!packed_path(w.type) && w.type != Type::F16) return false;
    return !amx_path(w, n_tokens);
}

// The process-wide registry of packed copies (see PackedWeights).
struct PackedKey {
    const uint8_t* data;
    Type type;
    int64_t rows, cols;
    bool operator==(const PackedKey& o) const { return data == o.data && type == o.type && rows == o.rows && cols == o.cols; }
};
struct PackedKeyHash {
    size_t operator()(const PackedKey& k) const { return std::hash<const void*>()(k.data) ^ size_t(k.rows * 31 + k.cols); }
};
std::mutex& shared_mu() {
    static std::mutex mu;
    return mu;
}
std::unordered_map<PackedKey, std::weak_ptr<PackedWeights::Entry>, PackedKeyHash>& shared_map() {
    static auto* map = new std::unordered_map<PackedKey, std::weak_ptr<PackedWeights::Entry>, PackedKeyHash>();
    return *map;
}

// Any format on any ISA: the registry's vec_dot per row and token.
void matmul_generic(const WeightView& w, const float* x, int64_t n_tokens, float* y, int64_t ld_y, ThreadPool& pool,
                    MatmulScratch& scratch) {
    const TypeTraits& wt = type_traits(w.type);
    const VecDotFn dot = best_vec_dot(w.type);
    if (!dot) fail(std::string("no dot kernel for weight type ") + wt.name);
    size_t act_row = 0;
    const uint8_t* act = convert_act(w, x, n_tokens, pool, scratch, &act_row);
    pool.parallel_for(w.rows, kRowGrain, [&](int64_t r0, int64_t r1) {
        for (int64_t rb = r0; rb < r1; rb += kRowGrain) {
            const int64_t re = std::min(r1, rb + kRowGrain);
            for (int64_t tb = 0; tb < n_tokens; tb += kTokenTile) {
                const int64_t te = std::min(n_tokens, tb + kTokenTile);
                for (int64_t r = rb; r < re; ++r) {
                    const uint8_t* wrow = w.row(r);
                    for (int64_t t = tb; t < te; ++t)
                        dot(w.cols, &y[t * ld_y + r], wrow, act + size_t(t) * act_row);
                }
            }
        }
    });
}

// AMX tiles (amx_path): the tokens rounded to bf16 and packed once, then each task
// dequantizes its rows once and runs them against every token.  The rows come from the
// packed copy when decoding has made one (it dropped the mapped pages: reading those again
// would make the model resident twice), else from the mapped weights.
void matmul_amx(const WeightView& w, const float* x, int64_t n_tokens, float* y, int64_t ld_y, ThreadPool& pool,
                MatmulScratch& scratch) {
    uint8_t* tokens = aligned64(scratch.act, amx::packed_tokens_bytes(w.cols, n_tokens));
    pool.parallel_for(amx::token_tiles(n_tokens), 1, [&](int64_t t0, int64_t t1) {
        amx::pack_tokens(w.cols, n_tokens, t0, t1, x, w.cols, tokens);
    });
    const PackedWeights::Entry* pw = scratch.packed.find(w);
    const ToFloatFn to_float = pw ? packed512::packed_to_float(w.type) : best_to_float(w.type);
    const uint8_t* rows = pw ? pw->data.data() : w.data;
    const size_t stride = pw ? pw->row_bytes : w.row_bytes;
    pool.parallel_for(w.rows, kAmxRowGrain, [&](int64_t r0, int64_t r1) {
        amx::matmul_bf16(to_float, w.cols, r1 - r0, n_tokens, rows + size_t(r0) * stride, stride, tokens, y + r0, ld_y);
    });
}

}  // namespace

const PackedWeights::Entry* PackedWeights::get(const WeightView& w, ThreadPool& pool) {
    if (const Entry* e = find(w)) return e;
    if (!packed_path(w.type)) return nullptr;
    const PackedKey key{w.data, w.type, w.rows, w.cols};
    // one packer at a time: a second context asking for the same matrix waits and shares it
    std::lock_guard<std::mutex> shared_lock(shared_mu());
    std::shared_ptr<Entry> e = shared_map()[key].lock();
    if (!e) {
        e = std::make_shared<Entry>();
        e->row_bytes = packed512::weight_row_bytes(w.type, w.cols);
        e->data.resize(e->row_bytes * size_t(w.rows));
        uint8_t* dst = e->data.data();
        const size_t rb = e->row_bytes;
        // the packed copy serves every product from now on, so the mapped original need
        // not stay resident: each chunk's pages go as soon as they are packed (a model is
        // never resident twice, not even while it is being packed)
        pool.parallel_for(w.rows, 64, [&](int64_t r0, int64_t r1) {
            packed512::pack_weights(w.type, w.cols, r1 - r0, w.row(r0), w.row_bytes, dst + size_t(r0) * rb);
            gguf::release_mapped_pages(w.row(r0), w.row_bytes * size_t(r1 - r0));
        });
        shared_map()[key] = e;
        // drop registry slots whose copies are gone
        for (auto it = shared_map().begin(); it != shared_map().end();)
            it = it->second.expired() ? shared_map().erase(it) : std::next(it);
    }
    return adopt(w, std::move(e));
}

const PackedWeights::Entry* PackedWeights::find(const WeightView& w) {
    if (!packed_path(w.type)) return nullptr;
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = map_.find(w.data);
        if (it != map_.end()) return it->second.get();
    }
    std::shared_ptr<Entry> e;
    {
        std::lock_guard<std::mutex> shared_lock(shared_mu());
        auto it = shared_map().find(PackedKey{w.data, w.type, w.rows, w.cols});
        if (it != shared_map().end()) e = it->second.lock();
    }
    return e ? adopt(w, std::move(e)) : nullptr;
}

// This owner's reference to a shared copy (the one it already holds, if another thread of
// the same owner got there first).
const PackedWeights::Entry* PackedWeights::adopt(const WeightView& w, std::shared_ptr<Entry> e) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = map_[w.data];
    if (!slot) slot = std::move(e);
    return slot.get();
}

size_t PackedWeights::bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t total = 0;
    for (auto& kv : map_) total += kv.second->data.size();
    return total;
}

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatmulScratch& scratch) {
    const MatmulJob job{&w, y, w.rows};
    matmul_many(&job, 1, x, n_tokens, pool, scratch);
}

void matmul_many(const MatmulJob* jobs, int count, const float* x, int64_t n_tokens, ThreadPool& pool,
                 MatmulScratch& scratch, const RowsDone* rows_done) {
    for (int j = 1; rows_done && j < count; ++j)
        if (jobs[j].w->rows != jobs[0].w->rows) fail("matmul_many: rows_done needs products of equal rows");
    // the packed (and F16) kernels in one pass, unless some matrix lacks one, prefers AMX
    // tiles or has another row length: then each product on its own
    bool together = true;
    for (int j = 0; j < count; ++j)
        if (!fast_path(*jobs[j].w, n_tokens) || jobs[j].w->cols != jobs[0].w->cols) together = false;
    if (!together) {
        for (int j = 0; j < count; ++j) {
            if (fast_path(*jobs[j].w, n_tokens)) matmul_many(&jobs[j], 1, x, n_tokens, pool, scratch);
            else if (amx_path(*jobs[j].w, n_tokens)) matmul_amx(*jobs[j].w, x, n_tokens, jobs[j].y, jobs[j].ld_y, pool, scratch);
            else matmul_generic(*jobs[j].w, x, n_tokens, jobs[j].y, jobs[j].ld_y, pool, scratch);
        }
        if (rows_done) pool.parallel_for(jobs[0].w->rows, kRowGrain, *rows_done);
        return;
    }
    const int64_t cols = jobs[0].w->cols;

    // activations: converted once per dot type, packed once per weight type
    struct Act {
        Type type;               // weight type the packed form is for
        const uint8_t* data;
        size_t stride;
    };
    Act acts[8];
    int n_acts = 0;
    const PackedWeights::Entry* pw[8] = {};
    int act_of[8] = {};
    if (count > 8) fail("matmul_many: too many products");
    if (scratch.bufs.size() < 8) scratch.bufs.resize(8);
    Type converted_as = Type::F32;   // vec_dot_type held in scratch.act (F32: none yet)
    size_t conv_row = 0;
    prof::Scope act_scope(prof::kActQuant);
    for (int j = 0; j < count; ++j) {
        const WeightView& w = *jobs[j].w;
        int found = -1;
        for (int i = 0; i < n_acts; ++i)
            if (acts[i].type == w.type) found = i;
        if (w.type != Type::F16) {
            const prof::Pause paused(act_scope);   // packing a matrix (first use) is not activation work
            pw[j] = scratch.packed.get(w, pool);
        }
        if (found >= 0) {
            act_of[j] = found;
            continue;
        }
        std::vector<uint8_t>& buf = scratch.bufs[size_t(n_acts)];
        Act a{w.type, nullptr, 0};
        if (w.type == Type::F16) {
            a.stride = sizeof(float) * size_t(f16_act_stride(cols));
            uint8_t* base = aligned64(buf, a.stride * size_t(n_tokens));
            a.data = base;
            float* af = reinterpret_cast<float*>(base);
            const int64_t fs = f16_act_stride(cols);
            pool.parallel_for(n_tokens, 1, [&](int64_t t0, int64_t t1) {
                for (int64_t t = t0; t < t1; ++t) packed512::round_to_f16(x + t * cols, af + t * fs, cols);
            });
        } else {
            const Type vt = type_traits(w.type).vec_dot_type;
            if (converted_as != vt) {
                convert_act(w, x, n_tokens, pool, scratch, &conv_row);
                converted_as = vt;
            }
            a.stride = packed512::act_row_bytes(w.type, cols);
            uint8_t* dst = aligned64(buf, a.stride * size_t(n_tokens));
            a.data = dst;
            const uint8_t* q = scratch.act.data();
            const size_t st = a.stride, cr = conv_row;
            pool.parallel_for(n_tokens, 1, [&](int64_t t0, int64_t t1) {
                for (int64_t t = t0; t < t1; ++t) packed512::pack_act(w.type, cols, q + size_t(t) * cr, dst + size_t(t) * st);
            });
        }
        act_of[j] = n_acts;
        acts[n_acts++] = a;
    }
    act_scope.stop();

    // the rows of every matrix in chunks, handed out one at a time.  Prompts: 32 rows
    // against every token.  Decoding streams the weights: about four chunks per thread
    // and matrix, at least 16 and at most 128 rows, so that a thread reads long runs and
    // the shared counter is not touched every few microseconds.
    int64_t rows_per_chunk[8], first_chunk[9] = {};
    for (int j = 0; j < count; ++j) {
        const int64_t rows = jobs[j].w->rows;
        rows_per_chunk[j] = n_tokens == 1 ? std::min<int64_t>(128, std::max(kRowGrain, (rows / (4 * pool.size()) + 3) / 4 * 4)) : 32;
        first_chunk[j + 1] = first_chunk[j] + (rows + rows_per_chunk[j] - 1) / rows_per_chunk[j];
    }
    const int64_t n_chunks = first_chunk[count];
    auto run_chunk = [&](int64_t c) {
        int j = 0;
        while (c >= first_chunk[j + 1]) ++j;
        const WeightView& w = *jobs[j].w;
        const int64_t r0 = (c - first_chunk[j]) * rows_per_chunk[j], r1 = std::min(w.rows, r0 + rows_per_chunk[j]);
        const Act& a = acts[act_of[j]];
        // (F16: all tokens in one call, which converts each group of rows to float once)
        const int64_t token_block = w.type == Type::F16 ? n_tokens : kPackedTokenBlock;
        for (int64_t t0 = 0; t0 < n_tokens; t0 += token_block) {
            const int64_t nt = std::min(token_block, n_tokens - t0);
            float* y = jobs[j].y + t0 * jobs[j].ld_y + r0;
            if (w.type == Type::F16) {
                const int64_t ws = int64_t(w.row_bytes / 2);
                const int64_t fs = int64_t(a.stride / sizeof(float));
                packed512::gemm_f16(cols, r1 - r0, nt, reinterpret_cast<const uint16_t*>(w.row(r0)), ws,
                                    reinterpret_cast<const float*>(a.data) + t0 * fs, fs, y, jobs[j].ld_y);
            } else {
                packed512::gemm(w.type, cols, r1 - r0, nt, pw[j]->data.data() + size_t(r0) * pw[j]->row_bytes,
                                pw[j]->row_bytes, a.data + size_t(t0) * a.stride, a.stride, y, jobs[j].ld_y);
            }
        }
    };
    // rows_done: every product has the same rows and chunks; a range is done when all
    // `count` of its chunks are (the counter reaches count)
    const int64_t per_job = first_chunk[1];
    std::unique_ptr<std::atomic<int>[]> done(rows_done ? new std::atomic<int>[size_t(per_job)] : nullptr);
    for (int64_t k = 0; rows_done && k < per_job; ++k) done[size_t(k)].store(0, std::memory_order_relaxed);
    auto finish = [&](int64_t c) {
        const int64_t k = c % per_job;
        if (done[size_t(k)].fetch_add(1, std::memory_order_acq_rel) == count - 1)
            (*rows_done)(k * rows_per_chunk[0], std::min(jobs[0].w->rows, (k + 1) * rows_per_chunk[0]));
    };
    auto run_one = [&](int64_t c) {
        run_chunk(c);
        if (rows_done) finish(c);
    };
    if (pool.size() == 1 || n_chunks == 1) {
        for (int64_t c = 0; c < n_chunks; ++c) run_one(c);
        return;
    }
    std::atomic<int64_t> next{0};
    pool.run([&](int, int) {
        for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) run_one(c);
    });
}

}  // namespace lowbit
