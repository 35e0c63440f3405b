/* Maps the OpenCL C dialect of the kernels/ sources onto CUDA C++ so the same sources compile with
 * NVRTC (cupy.RawModule) and nvcc. Included before kernels/common.cl and one kernel file.
 * Kernels must only use what is mapped here: no vector arithmetic, no __local pointer
 * parameters, no OpenCL built-ins beyond the ones below.
 */
#ifndef HETERO_CUDA_PRELUDE
#define HETERO_CUDA_PRELUDE

#define __kernel extern "C" __global__
#define __global
#define __local __shared__
#define __constant const
#define restrict __restrict__
#define CLK_LOCAL_MEM_FENCE 0
#define CLK_GLOBAL_MEM_FENCE 0
#define barrier(flags) __syncthreads()

typedef signed char i8;
typedef unsigned char u8;
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef long long i64;

#define DEVFN static __device__ __forceinline__
/* rounded float32 operations the compiler never fuses into an FMA, and one fused multiply-add */
#define FMUL(a, b) __fmul_rn((a), (b))
#define FADD(a, b) __fadd_rn((a), (b))
#define FMA(a, b, c) __fmaf_rn((a), (b), (c))
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 610
#define DOT4(acc, a, b) __dp4a((int)(a), (int)(b), (int)(acc))
#else
static __device__ __forceinline__ int dot4_i8(int acc, int a, int b)
{
    for (int j = 0; j < 32; j += 8) acc += (int)(signed char)((a >> j) & 0xff) * (int)(signed char)((b >> j) & 0xff);
    return acc;
}
#define DOT4(acc, a, b) dot4_i8((acc), (a), (b))
#endif

DEVFN unsigned get_global_id(unsigned d)
{
    return d == 0 ? blockIdx.x * blockDim.x + threadIdx.x
         : d == 1 ? blockIdx.y * blockDim.y + threadIdx.y
                  : blockIdx.z * blockDim.z + threadIdx.z;
}
DEVFN unsigned get_local_id(unsigned d)
{
    return d == 0 ? threadIdx.x : d == 1 ? threadIdx.y : threadIdx.z;
}
DEVFN unsigned get_group_id(unsigned d)
{
    return d == 0 ? blockIdx.x : d == 1 ? blockIdx.y : blockIdx.z;
}
DEVFN unsigned get_local_size(unsigned d)
{
    return d == 0 ? blockDim.x : d == 1 ? blockDim.y : blockDim.z;
}
DEVFN unsigned get_num_groups(unsigned d)
{
    return d == 0 ? gridDim.x : d == 1 ? gridDim.y : gridDim.z;
}
DEVFN unsigned get_global_size(unsigned d)
{
    return get_num_groups(d) * get_local_size(d);
}

/* float32 math under the OpenCL names (the kernels only pass floats) */
#define rint rintf
#define fmin fminf
#define fmax fmaxf
#define exp expf
#define tanh tanhf
#define sqrt sqrtf
#define fabs fabsf
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#endif
