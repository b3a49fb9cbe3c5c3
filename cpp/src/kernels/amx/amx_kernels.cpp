// AMX kernels (see amx_gemm.h), compiled with the AMX flags (plus AVX-512) and only ever
// run after detected_isa() reported Isa::Amx.
//
// Tile plan: every tile is 16 rows x 64 bytes.
//   A (tmm4, tmm5)  16 tokens x 32 bf16 of one 32-element block of k
//   B (tmm6, tmm7)  16 weight rows in VNNI order: row p holds, for each weight row j,
//                   the bf16 pair (k = 2p, 2p + 1) of the block at bytes 4j..4j+3
//   C (tmm0..tmm3)  16 tokens x 16 weight rows, fp32: C[t][j] += sum_k A[t][k] B(k, j)
// so a C tile's rows are runs of 16 consecutive outputs of one token, stored straight
// into c.  Two token tiles x two weight tiles per pass: each A and B load serves two
// products.  Weight rows are prepared 128 at a time (the slab, in L2) and every pair of
// token tiles streams past them.
#include "kernels/avx2/x86_common.h"   // first: it sets up the intrinsics headers

#include <cstddef>
#include <cstring>
#include <new>

#include "kernels/amx/amx_gemm.h"

namespace lowbit {
namespace amx {

namespace {

constexpr int kTile = 16;             // tokens or weight rows per tile
constexpr int64_t kBlock = 32;        // bf16 elements of a row per tile row (64 bytes)
constexpr size_t kTileBytes = 1024;   // 16 rows x 64 bytes
constexpr int64_t kSlabTiles = 8;     // weight tiles prepared at a time (128 rows)

int64_t k_blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }
int64_t tiles(int64_t m) { return (m + kTile - 1) / kTile; }
// Rows (tokens or weight rows) of the tile starting at `start` that exist, of `total`.
int64_t valid(int64_t total, int64_t start) { return total - start < kTile ? total - start : kTile; }

struct alignas(64) TileConfig {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {};
    uint8_t rows[16] = {};
};

void configure_tiles() {
    TileConfig cfg;
    for (int i = 0; i < 8; ++i) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    _tile_loadconfig(&cfg);
}

// Sixteen floats rounded to bf16, to nearest even (infinities stay infinite; the inputs,
// activations and dequantized weights, are never NaN).
inline __m256i to_bf16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

// n floats -> nkb * 32 bf16, zero padded.
void row_to_bf16(const float* x, int64_t n, int64_t nkb, uint16_t* out) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), to_bf16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = __mmask16((1u << (n - i)) - 1);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), to_bf16(_mm512_maskz_loadu_ps(m, x + i)));
        i += 16;
    }
    for (; i < nkb * kBlock; i += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_setzero_si256());
}

// A thread's growing scratch.  Plain heap memory: no std:: containers in a file built with
// AMX flags (their out-of-line members would be weak symbols the linker may hand to code
// that runs on any CPU; see x86_common.h).
struct Scratch {
    uint8_t* p = nullptr;
    size_t cap = 0;
    Scratch() = default;
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    ~Scratch() { ::operator delete(p, std::align_val_t(64)); }
    uint8_t* get(size_t bytes) {
        if (bytes > cap) {
            ::operator delete(p, std::align_val_t(64));
            p = nullptr;
            p = static_cast<uint8_t*>(::operator new(bytes, std::align_val_t(64)));
            cap = bytes;
        }
        return p;
    }
};
thread_local Scratch tls_slab;   // prepared weight tiles
thread_local Scratch tls_row;    // one row as floats, sixteen as bf16

// In place: r[i] lane j <- r[j] lane i (a 16 x 16 transpose of 32-bit values).
inline void transpose16(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; ++i) {   // pairs of rows interleaved
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    __m512i u[16];   // u[4i + c], 128-bit lane L: column 4L + c of rows 4i..4i+3
    for (int i = 0; i < 4; ++i) {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int c = 0; c < 4; ++c) {   // 4 x 4 transpose of 128-bit lanes
        const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
        r[c] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
        r[c + 4] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
        r[c + 8] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
        r[c + 12] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

// Rows [0, nr) of w into B tiles: tile rt, block kb at slab + (rt * nkb + kb) * 1024,
// pair p of row j at byte 64p + 4j.  Rows past nr (up to the tile) are zero.  Sixteen
// rows are rounded to bf16 (rowsbf: 16 rows of nkb * 64 bytes), then each block is one
// 16 x 16 transpose of the rows' bf16 pairs.
void prepare_rows(ToFloatFn to_float, int64_t n, int64_t nkb, const uint8_t* w, size_t w_stride, int64_t nr,
                  float* rowf, uint8_t* rowsbf, uint8_t* slab) {
    const size_t row_bytes = size_t(nkb) * 64;
    for (int64_t rt = 0; rt < tiles(nr); ++rt) {
        for (int j = 0; j < kTile; ++j) {
            const int64_t r = rt * kTile + j;
            uint16_t* dst = reinterpret_cast<uint16_t*>(rowsbf + size_t(j) * row_bytes);
            if (r < nr) {
                to_float(w + size_t(r) * w_stride, rowf, n);
                row_to_bf16(rowf, n, nkb, dst);
            } else {
                std::memset(dst, 0, row_bytes);
            }
        }
        uint8_t* tile = slab + size_t(rt * nkb) * kTileBytes;
        for (int64_t kb = 0; kb < nkb; ++kb) {
            __m512i v[16];
            for (int j = 0; j < kTile; ++j) v[j] = _mm512_loadu_si512(rowsbf + size_t(j) * row_bytes + size_t(kb) * 64);
            transpose16(v);
            for (int p = 0; p < kTile; ++p) _mm512_storeu_si512(tile + size_t(kb) * kTileBytes + 64 * p, v[p]);
        }
    }
}

// A C tile -> c[t * ldc + j] for the valid vt tokens and vr rows; `stored(p, stride)`
// stores the tile (the tile number must be a literal in _tile_stored).
template <class Store>
inline void store_tile(float* c, int64_t ldc, int64_t vt, int64_t vr, const Store& stored) {
    if (vt == kTile && vr == kTile) {
        stored(c, ldc * int64_t(sizeof(float)));
        return;
    }
    alignas(64) float tmp[kTile * kTile];
    stored(tmp, int64_t(kTile * sizeof(float)));
    for (int64_t t = 0; t < vt; ++t) std::memcpy(c + t * ldc, tmp + t * kTile, size_t(vr) * sizeof(float));
}

// Up to two token tiles (a0, a1) x two weight tiles (b0, b1) over every block of k.
template <bool kTwoT, bool kTwoR>
inline void tile_pass(int64_t nkb, const uint8_t* a0, const uint8_t* a1, const uint8_t* b0, const uint8_t* b1) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t kb = 0; kb < nkb; ++kb) {
        const size_t off = size_t(kb) * kTileBytes;
        _tile_loadd(4, a0 + off, 64);
        _tile_loadd(6, b0 + off, 64);
        if constexpr (kTwoR) _tile_loadd(7, b1 + off, 64);
        if constexpr (kTwoT) _tile_loadd(5, a1 + off, 64);
        _tile_dpbf16ps(0, 4, 6);
        if constexpr (kTwoR) _tile_dpbf16ps(1, 4, 7);
        if constexpr (kTwoT) _tile_dpbf16ps(2, 5, 6);
        if constexpr (kTwoT && kTwoR) _tile_dpbf16ps(3, 5, 7);
    }
}

}  // namespace

static_assert(kTile == 16, "token_tiles (amx_gemm.h) counts 16-token tiles");

size_t packed_tokens_bytes(int64_t n, int64_t ntok) { return size_t(token_tiles(ntok) * k_blocks(n)) * kTileBytes; }

void pack_tokens(int64_t n, int64_t ntok, int64_t tile0, int64_t tile1, const float* x, int64_t ldx, uint8_t* dst) {
    const int64_t nkb = k_blocks(n);
    uint16_t* row = reinterpret_cast<uint16_t*>(tls_row.get(size_t(nkb * kBlock) * sizeof(uint16_t)));
    for (int64_t tt = tile0; tt < tile1; ++tt) {
        uint8_t* base = dst + size_t(tt * nkb) * kTileBytes;
        for (int t = 0; t < kTile; ++t) {
            const int64_t tok = tt * kTile + t;
            if (tok < ntok) row_to_bf16(x + tok * ldx, n, nkb, row);
            else std::memset(row, 0, size_t(nkb * kBlock) * sizeof(uint16_t));
            for (int64_t kb = 0; kb < nkb; ++kb) std::memcpy(base + size_t(kb) * kTileBytes + 64 * t, row + kb * kBlock, 64);
        }
    }
}

void matmul_bf16(ToFloatFn to_float, int64_t n, int64_t nrows, int64_t ntok, const uint8_t* w, size_t w_stride,
                 const uint8_t* tokens, float* c, int64_t ldc) {
    const int64_t nkb = k_blocks(n), ntt = tiles(ntok);
    const size_t tile_run = size_t(nkb) * kTileBytes;   // one tile's blocks
    uint8_t* slab = tls_slab.get(size_t(kSlabTiles) * tile_run);
    uint8_t* rowmem = tls_row.get(size_t(nkb * kBlock) * (sizeof(float) + kTile * sizeof(uint16_t)));
    float* rowf = reinterpret_cast<float*>(rowmem);
    uint8_t* rowsbf = rowmem + size_t(nkb * kBlock) * sizeof(float);
    configure_tiles();
    for (int64_t r0 = 0; r0 < nrows; r0 += kSlabTiles * kTile) {
        const int64_t nr = nrows - r0 < kSlabTiles * kTile ? nrows - r0 : kSlabTiles * kTile;   // rows in this slab
        prepare_rows(to_float, n, nkb, w + size_t(r0) * w_stride, w_stride, nr, rowf, rowsbf, slab);
        const int64_t nrt = tiles(nr);
        for (int64_t tt = 0; tt < ntt; tt += 2) {
            const bool two_t = tt + 1 < ntt;
            const uint8_t* a0 = tokens + size_t(tt) * tile_run;
            const uint8_t* a1 = a0 + tile_run;
            const int64_t t0 = tt * kTile;
            const int64_t vt0 = valid(ntok, t0), vt1 = two_t ? valid(ntok, t0 + kTile) : 0;
            for (int64_t rt = 0; rt < nrt; rt += 2) {
                const bool two_r = rt + 1 < nrt;
                const uint8_t* b0 = slab + size_t(rt) * tile_run;
                const uint8_t* b1 = b0 + tile_run;
                if (two_t && two_r) tile_pass<true, true>(nkb, a0, a1, b0, b1);
                else if (two_t) tile_pass<true, false>(nkb, a0, a1, b0, b1);
                else if (two_r) tile_pass<false, true>(nkb, a0, a1, b0, b1);
                else tile_pass<false, false>(nkb, a0, a1, b0, b1);
                const int64_t vr0 = valid(nr, rt * kTile), vr1 = two_r ? valid(nr, (rt + 1) * kTile) : 0;
                float* c00 = c + t0 * ldc + r0 + rt * kTile;
                store_tile(c00, ldc, vt0, vr0, [](float* p, int64_t s) { _tile_stored(0, p, s); });
                if (two_r) store_tile(c00 + kTile, ldc, vt0, vr1, [](float* p, int64_t s) { _tile_stored(1, p, s); });
                if (two_t) store_tile(c00 + kTile * ldc, ldc, vt1, vr0, [](float* p, int64_t s) { _tile_stored(2, p, s); });
                if (two_t && two_r)
                    store_tile(c00 + kTile * ldc + kTile, ldc, vt1, vr1, [](float* p, int64_t s) { _tile_stored(3, p, s); });
            }
        }
    }
    _tile_release();
}

}  // namespace amx
}  // namespace lowbit
