// Shared helpers of the CUDA backend: error checks, async copies, warp reductions.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "common.h"   // lowbit::fail

#define LB_CUDA_CHECK(call)                                                                              \
    do {                                                                                                 \
        const cudaError_t lb_err_ = (call);                                                              \
        if (lb_err_ != cudaSuccess)                                                                      \
            ::lowbit::fail(std::string("CUDA error: ") + cudaGetErrorString(lb_err_) + " (" #call ") at " \
                           __FILE__ ":" + std::to_string(__LINE__));                                     \
    } while (0)

// after every launch
#define LB_CUDA_LAUNCHED() LB_CUDA_CHECK(cudaGetLastError())

namespace lowbit::cuda {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace lowbit::cuda
