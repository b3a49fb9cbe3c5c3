// amx_kernels.cpp with the tile instructions emulated in scalar code, so that its
// layouts (token and weight packing, tile edges, slabs, output placement) are checked on
// CPUs without AMX: every product against float64 with the bf16 bound of the AMX tests
// (tests/test_kernels.py), outputs poisoned with NaN first, and the same products from
// packed copies of the weights (what prompts read once decoding has packed them).  The real instructions run in
// test_kernels.py on an AMX machine.  Exit status 1 on any failure.
#include "kernels/avx2/x86_common.h"
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cmath>
#include <vector>
#include <random>
#undef _tile_loadd
#undef _tile_stored
#undef _tile_zero
#undef _tile_dpbf16ps
#define _tile_loadconfig(p) ((void)(p))
#define _tile_release() ((void)0)
static thread_local uint8_t emu_t[8][16][64];
static inline float bf2f(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f; }
#define _tile_zero(i) std::memset(emu_t[i], 0, 1024)
#define _tile_loadd(i, p, s) do { for (int r_ = 0; r_ < 16; ++r_) std::memcpy(emu_t[i][r_], (const uint8_t*)(p) + r_ * (int64_t)(s), 64); } while (0)
#define _tile_stored(i, p, s) do { for (int r_ = 0; r_ < 16; ++r_) std::memcpy((uint8_t*)(p) + r_ * (int64_t)(s), emu_t[i][r_], 64); } while (0)
#define _tile_dpbf16ps(c, a, b) do { \
  for (int m = 0; m < 16; ++m) for (int n = 0; n < 16; ++n) { float acc; std::memcpy(&acc, &emu_t[c][m][4*n], 4); \
    for (int k = 0; k < 16; ++k) { uint16_t a0, a1, b0, b1; std::memcpy(&a0, &emu_t[a][m][4*k], 2); std::memcpy(&a1, &emu_t[a][m][4*k+2], 2); \
      std::memcpy(&b0, &emu_t[b][k][4*n], 2); std::memcpy(&b1, &emu_t[b][k][4*n+2], 2); acc += bf2f(a0)*bf2f(b0) + bf2f(a1)*bf2f(b1); } \
    std::memcpy(&emu_t[c][m][4*n], &acc, 4); } } while (0)
#include "kernels/amx/amx_kernels.cpp"
#include "formats/registry.h"
#include "kernels/avx512/packed.h"
using namespace lowbit;
int main() {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  int bad = 0;
  const char* types[] = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                         "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "BF16"};
  struct Shape { int64_t n, nrows, ntok; } shapes[] = {{256, 1, 1}, {256, 17, 33}, {512, 130, 20}, {768, 16, 16}, {1024, 40, 47}, {256, 300, 5}};
  for (const char* tn : types) {
    const TypeTraits* tr = find_type(tn);
    for (auto sh : shapes) {
      std::vector<float> w(sh.n * sh.nrows), x(sh.n * sh.ntok);
      for (auto& v : w) v = nd(rng);
      for (auto& v : x) v = nd(rng);
      const size_t rb = row_bytes(Type(tr - &type_traits(Type(0))), sh.n);
      std::vector<uint8_t> wq(rb * sh.nrows);
      for (int64_t r = 0; r < sh.nrows; ++r) tr->from_float(&w[r * sh.n], &wq[r * rb], sh.n);
      std::vector<uint8_t> tok(amx::packed_tokens_bytes(sh.n, sh.ntok));
      amx::pack_tokens(sh.n, sh.ntok, 0, amx::token_tiles(sh.ntok), x.data(), sh.n, tok.data());
      std::vector<float> c(sh.ntok * sh.nrows, NAN);
      amx::matmul_bf16(tr->to_float, sh.n, sh.nrows, sh.ntok, wq.data(), rb, tok.data(), c.data(), sh.nrows);
      std::vector<float> wd(sh.n);
      double maxrel = 0;
      for (int64_t r = 0; r < sh.nrows; ++r) {
        tr->to_float(&wq[r * rb], wd.data(), sh.n);
        for (int64_t t = 0; t < sh.ntok; ++t) {
          double ref = 0, s = 0;
          for (int64_t i = 0; i < sh.n; ++i) { ref += double(wd[i]) * x[t * sh.n + i]; s += std::fabs(double(wd[i]) * x[t * sh.n + i]); }
          const double err = std::fabs(c[t * sh.nrows + r] - ref);
          if (!(err <= (1.0 / 128 + (sh.n / 16 + 32) * 0x1p-23) * s + 1e-30)) { if (bad++ < 5) std::printf("%s n=%ld r=%ld t=%ld got %g ref %g\n", tn, sh.n, r, t, c[t*sh.nrows+r], ref); }
          maxrel = std::max(maxrel, err / s);
        }
      }
      // the same product from the packed copy (what prompts read once decoding packed the
      // matrix): the same floats, so the same bits
      const Type ty = Type(tr - &type_traits(Type(0)));
      if (packed512::supports(ty)) {
        const size_t pr = packed512::weight_row_bytes(ty, sh.n);
        std::vector<uint8_t> wp(pr * sh.nrows);
        packed512::pack_weights(ty, sh.n, sh.nrows, wq.data(), rb, wp.data());
        std::vector<float> cp(sh.ntok * sh.nrows, NAN);
        amx::matmul_bf16(packed512::packed_to_float(ty), sh.n, sh.nrows, sh.ntok, wp.data(), pr, tok.data(), cp.data(), sh.nrows);
        if (std::memcmp(cp.data(), c.data(), c.size() * sizeof(float)) != 0) {
          ++bad;
          std::printf("%s %ldx%ldx%ld: the packed copy gives other results\n", tn, sh.n, sh.nrows, sh.ntok);
        }
      }
      std::printf("%s %ldx%ldx%ld max err/sum|wx| %.2e\n", tn, sh.n, sh.nrows, sh.ntok, maxrel);
    }
  }
  std::printf("bad %d\n", bad);
  return bad != 0;
}
