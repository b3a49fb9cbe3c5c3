// The weight-format registry: every tensor type lowbit knows is one row of a table.
//
// In the spirit of ggml's type_traits: callers never switch on a type; they ask the
// table for block size, bytes per block, (de)quantizers and the dot kernels.  Each
// family of formats (legacy, kquants, iquants, ternary, ...) fills its rows in its own
// file; each instruction set adds its kernels from kernels/<isa>/.  Adding a format is
// adding rows, not editing switch statements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lowbit {

// Numeric ids are GGUF's (ggml_type) so files round-trip without translation.
enum class Type : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
    IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28,
    IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};
constexpr uint32_t kTypeCount = 40;

// Instruction sets, in increasing order of preference.  A kernel slot left null
// means "use the next lower ISA's kernel".
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2, Amx = 3 };
constexpr int kIsaCount = 4;
const char* isa_name(Isa isa);

// Dequantize n elements (n a multiple of block_size).
using ToFloatFn = void (*)(const void* src, float* dst, int64_t n);
// Quantize n elements (n a multiple of block_size) the reference way.  For formats
// gguf-py can quantize this is byte-identical to gguf.quants.quantize.
using FromFloatFn = void (*)(const float* src, void* dst, int64_t n);
// Quality quantizer for whole rows; importance (length ncols, may be null) weights
// the error per column as llama.cpp's imatrix does.  Null means: from_float per row.
using QuantizeRowsFn = void (*)(const float* src, void* dst, int64_t nrows, int64_t ncols,
                                const float* importance);
// out = dot(weight row w in this type, activation row a in vec_dot_type), n elements.
using VecDotFn = void (*)(int64_t n, float* out, const void* w, const void* a);
// Matrix-matrix product for prompt processing: c[t * ldc + r] = dot(w row r, a row t)
// for r < nrows, t < ntok; rows of n elements, w_stride / a_stride bytes apart.  (AMX
// products take float activations and serve every format: kernels/amx/amx_gemm.h.)
using GemmFn = void (*)(int64_t n, int64_t nrows, int64_t ntok, const void* w, size_t w_stride, const void* a,
                        size_t a_stride, float* c, int64_t ldc);

struct TypeTraits {
    const char* name = nullptr;   // GGUF/llama.cpp spelling: "Q4_0", "F16", ...
    int64_t block_size = 0;       // elements per block
    size_t type_size = 0;         // bytes per block
    bool is_quantized = false;
    ToFloatFn to_float = nullptr;     // the reference (scalar, as llama.cpp's dequantize_row)
    // Faster dequantizers per ISA, bit for bit to_float's floats (tests/test_kernels.py);
    // null: the next lower ISA's, then to_float.  For the products that dequantize whole
    // rows (AMX tiles).
    ToFloatFn to_float_isa[kIsaCount] = {};
    FromFloatFn from_float = nullptr;
    QuantizeRowsFn quantize_rows = nullptr;
    // How matmul converts activations into this type when it is a dot type; null means
    // from_float.  Q8_0/Q8_1 use llama.cpp's x86 rounding here (127/amax, round half to
    // even) so that logits track llama.cpp's on the same machine.
    FromFloatFn from_float_act = nullptr;
    // Activations are converted to this type before the dot (Q8_0 for Q4_0, ...).
    Type vec_dot_type = Type::F32;
    VecDotFn vec_dot[kIsaCount] = {};
    // Optional tiled kernels (the packed AVX-512 ones, for tests); null: none.
    GemmFn gemm[kIsaCount] = {};
};

// The table.  Rows with name == nullptr are types lowbit does not implement.
const TypeTraits& type_traits(Type t);
bool type_known(uint32_t id);          // id names an implemented type
const TypeTraits* find_type(const std::string& name);  // by name, case-insensitive; null if none

size_t row_bytes(Type t, int64_t n);   // bytes of a row of n elements (n % block == 0)

// The ISA selected at start-up: best the CPU (and OS) supports, or LOWBIT_ISA if set
// and supported.  best_vec_dot picks the kernel of the highest ISA <= active one.
Isa active_isa();
Isa detected_isa();                    // best the hardware supports, ignoring LOWBIT_ISA
void set_active_isa(Isa isa);          // for tests; throws if the CPU lacks it
VecDotFn best_vec_dot(Type t);
ToFloatFn best_to_float(Type t);       // the fastest dequantizer of the active ISA
ToFloatFn to_float_for(Type t, Isa isa);
VecDotFn vec_dot_for(Type t, Isa isa); // exact ISA's fallback chain, as best_vec_dot would use

// Family registration hooks, one per file under formats/ and kernels/<isa>/.
// registry.cpp calls each once to fill the table.
using TypeTable = TypeTraits[kTypeCount];
void register_float_formats(TypeTable& table);
void register_legacy_formats(TypeTable& table);
void register_kquant_formats(TypeTable& table);
void register_iquant_formats(TypeTable& table);
void register_ternary_formats(TypeTable& table);
void register_mxfp4_format(TypeTable& table);
void register_avx2_kernels(TypeTable& table);
void register_avx512_kernels(TypeTable& table);

}  // namespace lowbit
