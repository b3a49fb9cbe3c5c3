// Matrix-vector products of quantized weights on the GPU (decode, and small token tiles
// for prefill), plus the activation quantizer and the row dequantizer they rely on.
//
// Activations: block formats take int8 activations, quantized per 32 values like
// llama.cpp's Q8_1 (scale d = amax/127, q = round-half-even(x * 127/amax)) with the
// block's scaled sums kept in fp32 (d*sum of each 16-value half); the dot runs on
// __dp4a.  F32/F16/BF16 weights take fp32 activations.  See cuda/NOTES.md for why.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "formats/registry.h"

namespace lowbit::cuda {

// A weight matrix in device memory: rows of `cols` elements stored as on disk (quantized
// blocks), each row padded to a multiple of 16 bytes (`pitch`) so it starts aligned.
// Formats whose blocks are a header plus 16-byte multiples of quants (Q4_0, Q4_1, Q8_0,
// IQ4_NL) are stored planar instead (formats.cuh): same bytes per row, permuted within it.
struct DevMatrix {
    Type type = Type::F32;
    int64_t rows = 0, cols = 0;
    uint8_t* data = nullptr;
    size_t row_bytes = 0, pitch = 0;
    bool planar = false;   // rows in the planar layout of formats.cuh (set by upload_matrix)
};

// Per 32-value activation block: {d, d*sum(q), d*sum(q[0..16)), d*sum(q[16..32))}.
struct Q8Sums {
    float d, s, s_lo, s_hi;
};

// The activations of ntok tokens in the forms the kernels read.  f32: [ntok][ld_f32];
// q: [ntok][cols] int8 and s: [ntok][cols/32] (row strides follow the weight's cols).
struct DevAct {
    const float* f32 = nullptr;
    int64_t ld_f32 = 0;
    const int8_t* q = nullptr;
    const Q8Sums* s = nullptr;
};

bool gemv_supported(Type t);          // a kernel exists for weights of this type
bool gemv_wants_q8(Type t);           // the kernel reads int8 activations (else fp32)
size_t type_row_bytes(Type t, int64_t cols);
const char* type_name(Type t);
bool type_by_name(const char* name, Type* out);

DevMatrix upload_matrix(Type t, int64_t rows, int64_t cols, const void* host, size_t host_row_bytes);
void free_matrix(DevMatrix& m);

// x: [ntok][ldx] fp32 -> q [ntok][cols], s [ntok][cols/32]; cols % 32 == 0.
void quantize_q8(const float* x, int64_t ldx, int64_t ntok, int64_t cols, int8_t* q, Q8Sums* s, cudaStream_t st);

// y[t*ldy + r] (+)= dot(row r of w, activations of token t), t < ntok, r < w.rows.
// pdl: launch as a programmatic dependent of the previous kernel in the stream (sm_90):
// the kernel starts streaming its weights before that kernel has finished, and waits for
// it (griddepcontrol.wait) before reading activations or y.  Ignored before sm_90.
void gemv(const DevMatrix& w, const DevAct& a, int64_t ntok, float* y, int64_t ldy, bool accumulate,
          cudaStream_t st, bool pdl = false);

// One token: ya = a x and yb = b x in one launch when a and b are a pair of formats that has
// a joint kernel (Q4_K + Q6_K, Q5_K + Q6_K; stored rows, equal widths); false (nothing
// launched) otherwise.
bool gemv_pair(const DevMatrix& a, float* ya, const DevMatrix& b, float* yb, const DevAct& x, cudaStream_t st,
               bool pdl = false);

// Queries what the kernels for weights of type t need from the device (PDL support) now,
// outside any stream capture; gemv() does it on first use otherwise.
void gemv_prepare(Type t);

// ---- tensor-core products for prefill (mma.cu) -----------------------------------------
// Scratch of the tensor-core path: the F16 copy of the activations and a slab of
// dequantized weights (at most 256 MB; larger matrices go slab by slab).  Grows on demand.
struct MmaScratch {
    void* wh = nullptr;
    size_t wh_bytes = 0;
    void* xh = nullptr;
    size_t xh_bytes = 0;
    MmaScratch() = default;
    MmaScratch(const MmaScratch&) = delete;
    MmaScratch& operator=(const MmaScratch&) = delete;
    ~MmaScratch();
    size_t bytes() const;
};

// A tensor-core path exists for weights of type t with rows of `cols` values (F16 and
// every block format; cols % 32 == 0).
bool mma_supported(Type t, int64_t cols);
// From this many tokens on, the tensor-core path is the faster one.
int64_t mma_min_tokens(Type t);

// y[t*ldy + r] (+)= dot(row r of w, x[t]) with F16 operands on the tensor cores and fp32
// sums: x [ntok][ldx] fp32 is rounded to F16 (saturated), block-format weights are
// dequantized to F16.
void mma(const DevMatrix& w, const float* x, int64_t ldx, int64_t ntok, float* y, int64_t ldy, bool accumulate,
         MmaScratch& ws, cudaStream_t st);

// out[i][0..cols) = row rows[i] of w, dequantized (rows: device array of n ids).
void dequant_rows(const DevMatrix& w, const int32_t* rows, int64_t n, float* out, cudaStream_t st);

// Launch statistics of the gemv kernel for w (for the benchmark's report).
int gemv_threads_per_block();

// Whether programmatic dependent launch can be used on the current device (sm_90+).
bool pdl_supported();

}  // namespace lowbit::cuda
