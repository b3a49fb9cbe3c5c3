// The int8 quantization of activations that every kernel producing them shares.
#pragma once

#include "common.cuh"
#include "gemv.h"

namespace lowbit::cuda {

// Lane i of a warp holds value i of a 32-value block: stores its int8 code to *q and, from
// lane 0, the block's scale and scaled sums to *s.  llama.cpp's Q8_1 on x86: d = amax/127,
// codes round half to even.  Every lane of the warp calls.
__device__ __forceinline__ void warp_quantize_q8(float v, int8_t* q, Q8Sums* s) {
    const int lane = threadIdx.x & 31;
    const float amax = warp_max(fabsf(v));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int qi = __float2int_rn(v * id);
    *q = int8_t(qi);
    const int s_all = __reduce_add_sync(0xffffffffu, qi);
    const int s_lo = __reduce_add_sync(0xffffffffu, lane < 16 ? qi : 0);
    const float d = amax / 127.0f;
    if (lane == 0) *s = Q8Sums{d, d * float(s_all), d * float(s_lo), d * float(s_all - s_lo)};
}

}  // namespace lowbit::cuda
