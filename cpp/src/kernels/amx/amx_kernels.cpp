// AMX kernels, compiled with the AMX flags (plus AVX-512) and only ever run after
// detected_isa() reported Isa::Amx.
//
// Dots (one weight row x one token) gain nothing from tiles: the Isa::Amx slots stay
// empty and vec_dot_for(type, Isa::Amx) falls back to the AVX-512 kernels.  What AMX is
// for is the matrix-matrix case of prompt processing; amx_gemm.h has a prototype of that
// (Q8_0 and Q4_1 weights) for the gemm slot proposed in the kernels report.
//
// Tile plan per 16 weight rows x 16 tokens, one 32-element quant block at a time (the
// scales change every block, so K = 32 per tile product):
//   tmm1  A: 16 rows x 32 bytes, the weights' codes (Q8_0: loaded in place with the row
//            stride; Q4_1: nibbles unpacked to a 16 x 32 buffer first)
//   tmm2  B: 8 rows x 64 bytes, the 16 tokens' codes in VNNI order (4 consecutive k of
//            token t at bytes 4t..4t+3 of row k/4), packed once per call
//   tmm0  C: 16 x 16 int32 = the exact block dots, stored and then scaled in float:
//            acc[r][t] += float(C[r][t]) * (dw[r] * da[t])   (+ mw[r] * sa[t])
#include "kernels/avx2/x86_common.h"   // first: it sets up the intrinsics headers

#include <cstddef>
#include <cstring>
#include <new>

#include "formats/blocks.h"
#include "cpu_features.h"
#include "formats/registry.h"
#include "kernels/amx/amx_gemm.h"

namespace lowbit {

namespace {

struct alignas(64) TileConfig {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

void configure_tiles() {
    TileConfig cfg;
    cfg.rows[0] = 16; cfg.colsb[0] = 64;   // C: 16 x 16 int32
    cfg.rows[1] = 16; cfg.colsb[1] = 32;   // A: 16 rows x 32 codes
    cfg.rows[2] = 8;  cfg.colsb[2] = 64;   // B: 32 k x 16 tokens, VNNI order
    _tile_loadconfig(&cfg);
}

constexpr int kTile = 16;

// Plain heap buffers: no std:: containers in a file built with AMX/AVX-512 flags (their
// out-of-line members would be weak symbols the linker may hand to scalar code).
struct Buffer {
    void* mem = nullptr;
    explicit Buffer(size_t bytes) : mem(::operator new(bytes ? bytes : 1)) {}
    ~Buffer() { ::operator delete(mem); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    template <class T>
    T* at(size_t byte_offset) const { return reinterpret_cast<T*>(static_cast<uint8_t*>(mem) + byte_offset); }
};

inline float token_sum(const BlockQ8_0&) { return 0.0f; }
inline float token_sum(const BlockQ8_1& b) { return h2f(b.s); }

// All tokens, packed once per call for tmm2: per 16-token tile and block, 8 x 64 code
// bytes, then 16 scales d and 16 sums s (zero for missing tokens).
constexpr size_t kTokBlockBytes = 512 + 2 * kTile * sizeof(float);

template <class BY>
void pack_tokens(const uint8_t* a, size_t a_stride, int64_t ntok, int64_t nb, uint8_t* dst) {
    std::memset(dst, 0, size_t((ntok + kTile - 1) / kTile) * size_t(nb) * kTokBlockBytes);
    for (int64_t t = 0; t < ntok; ++t) {
        const BY* row = reinterpret_cast<const BY*>(a + size_t(t) * a_stride);
        uint8_t* tile = dst + size_t(t / kTile) * size_t(nb) * kTokBlockBytes;
        const int64_t tt = t % kTile;
        for (int64_t kb = 0; kb < nb; ++kb) {
            uint8_t* blk = tile + size_t(kb) * kTokBlockBytes;
            for (int q = 0; q < 8; ++q) std::memcpy(blk + 64 * q + 4 * tt, row[kb].qs + 4 * q, 4);
            reinterpret_cast<float*>(blk + 512)[tt] = h2f(row[kb].d);
            reinterpret_cast<float*>(blk + 512)[kTile + tt] = token_sum(row[kb]);
        }
    }
}

// A weight row tile prepared once for all token tiles: where each block's 16 x 32 codes
// are (in place, or in `codes`), and the 16 row scales (and mins) per block.
struct RowTile {
    const uint8_t* a = nullptr;   // codes of block kb at a + kb * a_step, rows a_stride apart
    size_t a_step = 0, a_stride = 0;
};

struct Q8_0W {
    static constexpr bool kMin = false;
    static RowTile prepare(const uint8_t* w, size_t stride, int64_t nr, int64_t nb, uint8_t* codes, float* dw, float*) {
        for (int64_t kb = 0; kb < nb; ++kb)
            for (int r = 0; r < kTile; ++r)
                dw[kb * kTile + r] = r < nr ? h2f(reinterpret_cast<const BlockQ8_0*>(w + size_t(r) * stride)[kb].d) : 0.0f;
        if (nr == kTile) return {w + offsetof(BlockQ8_0, qs), sizeof(BlockQ8_0), stride};
        std::memset(codes, 0, size_t(nb) * kTile * 32);   // ragged tile: copy, zero rows below
        for (int64_t kb = 0; kb < nb; ++kb)
            for (int64_t r = 0; r < nr; ++r)
                std::memcpy(codes + (kb * kTile + r) * 32, reinterpret_cast<const BlockQ8_0*>(w + size_t(r) * stride)[kb].qs, 32);
        return {codes, kTile * 32, 32};
    }
    static void dot() { _tile_dpbssd(0, 1, 2); }   // s8 weights x s8 tokens
};

struct Q4_1W {
    static constexpr bool kMin = true;
    static RowTile prepare(const uint8_t* w, size_t stride, int64_t nr, int64_t nb, uint8_t* codes, float* dw, float* mw) {
        for (int64_t kb = 0; kb < nb; ++kb)
            for (int r = 0; r < kTile; ++r) {
                uint8_t* dst = codes + (kb * kTile + r) * 32;
                if (r < nr) {
                    const BlockQ4_1& b = reinterpret_cast<const BlockQ4_1*>(w + size_t(r) * stride)[kb];
                    dw[kb * kTile + r] = h2f(b.d);
                    mw[kb * kTile + r] = h2f(b.m);
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), nibbles_32(b.qs));
                } else {
                    dw[kb * kTile + r] = mw[kb * kTile + r] = 0.0f;
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_setzero_si256());
                }
            }
        return {codes, kTile * 32, 32};
    }
    static void dot() { _tile_dpbusd(0, 1, 2); }   // u8 codes x s8 tokens
};

// One 16-row x 16-token tile over all blocks.
template <class WOps>
void tile_product(const RowTile& rt, const float* dw, const float* mw, const uint8_t* tok, int64_t nb, float* c,
                  int64_t ldc, int64_t nr, int64_t nt) {
    __m512 acc[kTile];
    for (auto& v : acc) v = _mm512_setzero_ps();
    alignas(64) int32_t ctile[kTile * kTile];
    for (int64_t kb = 0; kb < nb; ++kb) {
        const uint8_t* blk = tok + size_t(kb) * kTokBlockBytes;
        _tile_zero(0);
        _tile_loadd(1, rt.a + size_t(kb) * rt.a_step, int64_t(rt.a_stride));
        _tile_loadd(2, blk, 64);
        WOps::dot();
        _tile_stored(0, ctile, 64);
        const __m512 da = _mm512_loadu_ps(reinterpret_cast<const float*>(blk + 512));
        const __m512 sa = _mm512_loadu_ps(reinterpret_cast<const float*>(blk + 512) + kTile);
        const float* dwb = dw + kb * kTile;
        const float* mwb = mw + kb * kTile;
        for (int r = 0; r < kTile; ++r) {
            const __m512 sumi = _mm512_cvtepi32_ps(_mm512_load_si512(ctile + kTile * r));
            acc[r] = _mm512_fmadd_ps(sumi, _mm512_mul_ps(_mm512_set1_ps(dwb[r]), da), acc[r]);
            if constexpr (WOps::kMin) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(mwb[r]), sa, acc[r]);
        }
    }
    alignas(64) float out[kTile * kTile];
    for (int r = 0; r < kTile; ++r) _mm512_store_ps(out + kTile * r, acc[r]);
    for (int64_t t = 0; t < nt; ++t)
        for (int64_t r = 0; r < nr; ++r) c[t * ldc + r] = out[kTile * r + t];
}

// Tokens packed once; each row tile prepared once and run against every token tile.
template <class WOps, class BY>
void amx_gemm(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a, size_t a_stride,
              float* c, int64_t ldc) {
    const int64_t nb = n / 32;
    const int64_t ntt = (ntok + kTile - 1) / kTile;
    Buffer tok(size_t(ntt) * size_t(nb) * kTokBlockBytes);   // allocate before touching tile state
    Buffer row(size_t(nb) * kTile * (32 + 2 * sizeof(float)));
    uint8_t* codes = row.at<uint8_t>(0);
    float* dw = row.at<float>(size_t(nb) * kTile * 32);
    float* mw = dw + size_t(nb) * kTile;
    pack_tokens<BY>(static_cast<const uint8_t*>(a), a_stride, ntok, nb, tok.at<uint8_t>(0));
    configure_tiles();
    for (int64_t r0 = 0; r0 < nrows; r0 += kTile) {
        const int64_t nr = nrows - r0 < kTile ? nrows - r0 : kTile;
        const RowTile rt = WOps::prepare(static_cast<const uint8_t*>(w) + size_t(r0) * w_stride, w_stride, nr, nb, codes, dw, mw);
        for (int64_t t0 = 0; t0 < ntok; t0 += kTile) {
            const int64_t nt = ntok - t0 < kTile ? ntok - t0 : kTile;
            tile_product<WOps>(rt, dw, mw, tok.at<uint8_t>(size_t(t0 / kTile) * size_t(nb) * kTokBlockBytes), nb,
                               c + t0 * ldc + r0, ldc, nr, nt);
        }
    }
    _tile_release();
}

}  // namespace

void amx_gemm_q8_0(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a,
                   size_t a_stride, float* c, int64_t ldc) {
    amx_gemm<Q8_0W, BlockQ8_0>(n, nrows, ntok, w, w_stride, a, a_stride, c, ldc);
}
void amx_gemm_q4_1(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a,
                   size_t a_stride, float* c, int64_t ldc) {
    amx_gemm<Q4_1W, BlockQ8_1>(n, nrows, ntok, w, w_stride, a, a_stride, c, ldc);
}

// No dot kernels of its own (see above): the Isa::Amx slots fall back to AVX-512.
// Fills the gemm slots only where the CPU (and OS) grant AMX; the vec_dot slots stay
// empty so single-token products use the AVX-512 kernels.
void register_amx_kernels(TypeTable& table) {
    if (detect_best_isa() != Isa::Amx) return;
    auto& q8 = table[uint32_t(Type::Q8_0)];
    if (q8.name && q8.vec_dot_type == Type::Q8_0) q8.gemm[int(Isa::Amx)] = amx_gemm_q8_0;
    auto& q41 = table[uint32_t(Type::Q4_1)];
    if (q41.name && q41.vec_dot_type == Type::Q8_1) q41.gemm[int(Isa::Amx)] = amx_gemm_q4_1;
}

}  // namespace lowbit
