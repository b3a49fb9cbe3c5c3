// TQ1_0 and TQ2_0: ternary weights {-1, 0, 1} times one fp16 scale per 256 values
// (BitNet b1.58, TriLMs).  TQ2_0 stores 2 bits per value; TQ1_0 packs 5 trits per byte
// (4 in the last 4 bytes) as a base-3 fixed-point fraction, so a digit comes out as the
// top byte of q * 3 after multiplying by a power of 3 modulo 256.
//
// Quantizers are byte-identical to gguf.quants (and llama.cpp's _ref), dequantizers
// bit-identical; the scale is absmax, so there is no better "quality" quantizer to offer
// without changing the format's meaning.
#include <cmath>

#include "formats/blocks.h"
#include "formats/fp16.h"
#include "formats/registry.h"

namespace lowbit {

namespace {

constexpr int kQs1 = sizeof(BlockTQ1_0::qs);   // 48 bytes of 5 trits: 32 then 16 wide
constexpr int kQh1 = sizeof(BlockTQ1_0::qh);   // 4 bytes of 4 trits
constexpr uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};

float absmax(const float* x) {
    float amax = 0;
    for (int j = 0; j < QK_K; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    return amax;
}

// round(x / d) in {-1, 0, 1} shifted to {0, 1, 2}; lroundf rounds half away from zero,
// as gguf's np_roundf does.
inline int trit(float x, float id) { return int(std::lround(x * id)) + 1; }

// Trits t[0..k) as the base-3 fraction t0.t1t2... scaled so that byte * 3^i recovers t_i.
inline uint8_t pack_trits(const int* t, int k) {
    int q = 0;
    for (int i = 0; i < k; ++i) q = q * 3 + t[i];
    for (int i = k; i < 5; ++i) q *= 3;   // the 4-trit bytes keep their first trit on top
    return uint8_t((q * 256 + (243 - 1)) / 243);   // ceiling division
}
inline int unpack_trit(uint8_t byte, int i) {
    const uint8_t q = uint8_t(byte * kPow3[i]);
    return ((uint16_t(q) * 3) >> 8) - 1;
}

// ---- TQ1_0 -------------------------------------------------------------------------------
void tq1_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockTQ1_0*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        const float d = absmax(x);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        int t[5];
        // bytes 0..31 hold elements m + 32*k, bytes 32..47 elements 160 + m + 16*k (k < 5)
        for (int m = 0; m < 32; ++m) {
            for (int k = 0; k < 5; ++k) t[k] = trit(x[m + 32 * k], id);
            y[i].qs[m] = pack_trits(t, 5);
        }
        for (int m = 0; m < 16; ++m) {
            for (int k = 0; k < 5; ++k) t[k] = trit(x[160 + m + 16 * k], id);
            y[i].qs[32 + m] = pack_trits(t, 5);
        }
        for (int j = 0; j < kQh1; ++j) {   // elements 240 + j + 4*k (k < 4)
            for (int k = 0; k < 4; ++k) t[k] = trit(x[240 + j + 4 * k], id);
            y[i].qh[j] = pack_trits(t, 4);
        }
    }
}

void tq1_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockTQ1_0*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 32; ++m) *y++ = float(unpack_trit(x[i].qs[m], k)) * d;
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 16; ++m) *y++ = float(unpack_trit(x[i].qs[32 + m], k)) * d;
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < kQh1; ++j) *y++ = float(unpack_trit(x[i].qh[j], k)) * d;
    }
}

// ggml's generic dot: one integer sum per block, then * (d_w * d_a).
void vec_dot_tq1_q8k(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockTQ1_0*>(w);
    auto* y = static_cast<const BlockQ8_K*>(a);
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const int8_t* q8 = y[i].qs;
        int sum = 0;
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 32; ++m) sum += unpack_trit(x[i].qs[m], k) * q8[32 * k + m];
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 16; ++m) sum += unpack_trit(x[i].qs[32 + m], k) * q8[160 + 16 * k + m];
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < kQh1; ++j) sum += unpack_trit(x[i].qh[j], k) * q8[240 + 4 * k + j];
        sumf += float(sum) * (fp16_to_fp32(x[i].d) * y[i].d);
    }
    *out = sumf;
}

// ---- TQ2_0 -------------------------------------------------------------------------------
// Byte m of each 32-byte group holds elements m + 32*k of its 128 at bits 2k.
void tq2_from_float(const float* x, void* dst, int64_t n) {
    auto* y = static_cast<BlockTQ2_0*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
        const float d = absmax(x);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK_K / 4; j += 32)
            for (int m = 0; m < 32; ++m) {
                int q = 0;
                for (int k = 0; k < 4; ++k) q |= (trit(x[4 * j + m + 32 * k], id) & 3) << (2 * k);
                y[i].qs[j + m] = uint8_t(q);
            }
    }
}

void tq2_to_float(const void* src, float* y, int64_t n) {
    auto* x = static_cast<const BlockTQ2_0*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(x[i].d);
        for (int j = 0; j < QK_K / 4; j += 32)
            for (int k = 0; k < 4; ++k)
                for (int m = 0; m < 32; ++m) *y++ = float(((x[i].qs[j + m] >> (2 * k)) & 3) - 1) * d;
    }
}

void vec_dot_tq2_q8k(int64_t n, float* out, const void* w, const void* a) {
    auto* x = static_cast<const BlockTQ2_0*>(w);
    auto* y = static_cast<const BlockQ8_K*>(a);
    float sumf = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        int32_t sumi = 0;
        for (int j = 0; j < QK_K / 4; j += 32)
            for (int k = 0; k < 4; ++k)
                for (int m = 0; m < 32; ++m) sumi += y[i].qs[4 * j + 32 * k + m] * (((x[i].qs[j + m] >> (2 * k)) & 3) - 1);
        const float d = y[i].d * fp16_to_fp32(x[i].d);
        sumf += float(sumi) * d;
    }
    *out = sumf;
}

void set(TypeTraits& tr, const char* name, size_t ts, ToFloatFn to, FromFloatFn from, VecDotFn dot) {
    tr.name = name; tr.block_size = QK_K; tr.type_size = ts; tr.is_quantized = true;
    tr.to_float = to; tr.from_float = from; tr.vec_dot_type = Type::Q8_K;
    tr.vec_dot[int(Isa::Scalar)] = dot;
}

}  // namespace

void register_ternary_formats(TypeTable& t) {
    static_assert(kQs1 == 48 && kQh1 == 4, "TQ1_0 layout");
    set(t[uint32_t(Type::TQ1_0)], "TQ1_0", sizeof(BlockTQ1_0), tq1_to_float, tq1_from_float, vec_dot_tq1_q8k);
    set(t[uint32_t(Type::TQ2_0)], "TQ2_0", sizeof(BlockTQ2_0), tq2_to_float, tq2_from_float, vec_dot_tq2_q8k);
}

}  // namespace lowbit
