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

// Programmatic dependent launch (sm_90): a kernel launched with the
// programmaticStreamSerialization attribute may start before the previous kernel in the
// stream has finished; griddep_wait() blocks until that kernel has completed and its
// memory is visible (a no-op when launched normally).  griddep_launch() lets the next
// kernel of the stream, if launched that way, be scheduled now.
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
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

// k<<<grid, block, smem, st>>>(args...), as a programmatic dependent launch when pdl.
template <class... KArgs, class... Args>
void launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, bool pdl, Args... args) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    static bool pdl_ok = true;   // cleared if the driver refuses the attribute
    cfg.numAttrs = (pdl && pdl_ok) ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, static_cast<KArgs>(args)...);
    if (e != cudaSuccess && cfg.numAttrs == 1) {
        cudaGetLastError();
        pdl_ok = false;
        cfg.numAttrs = 0;
        e = cudaLaunchKernelEx(&cfg, k, static_cast<KArgs>(args)...);
    }
    LB_CUDA_CHECK(e);
}


}  // namespace lowbit::cuda
