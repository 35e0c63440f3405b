/* Helpers shared by every kernel file: the host prepends this file to each .cl source
 * (after kernels/cuda_prelude.h when compiling for CUDA).
 *
 * Integer tensors travel as bytes (u8) with a runtime signedness flag, so one kernel serves
 * int8 and uint8. Requantization follows hetero/ops/qlinear.py exactly: float32 products,
 * rint (round half to even), float32 zero-point add, saturation; no contraction into FMA.
 */
#ifndef __CUDACC__
#pragma OPENCL FP_CONTRACT OFF
typedef char i8;
typedef uchar u8;
typedef long i64;
#define DEVFN static inline
#define FMUL(a, b) ((a) * (b))
#define FADD(a, b) ((a) + (b))
#define FMA(a, b, c) fma((a), (b), (c))
/* acc + the dot product of the four signed bytes packed in a and b */
DEVFN int dot4_i8(int acc, int a, int b)
{
    char4 u = as_char4(a);
    char4 v = as_char4(b);
    return acc + (int)u.x * (int)v.x + (int)u.y * (int)v.y + (int)u.z * (int)v.z + (int)u.w * (int)v.w;
}
#define DOT4(acc, a, b) dot4_i8((acc), (a), (b))
#endif

#define MAX_RANK 6
#define GID(d) ((int)get_global_id(d))
#define LID(d) ((int)get_local_id(d))
#define GRP(d) ((int)get_group_id(d))

/* one int8 (sgn != 0) or uint8 element as int */
DEVFN int load_q8(__global const u8* p, int i, int sgn)
{
    int v = (int)p[i];
    return sgn ? v - ((v & 0x80) << 1) : v;
}

/* rules 2-3 of qlinear.py: round_half_even(float32(acc) * m) + zy, saturated to [lo, hi] */
DEVFN u8 requant_q8(int acc, float m, float zy, float lo, float hi)
{
    float v = FADD(rint(FMUL((float)acc, m)), zy);
    v = fmin(fmax(v, lo), hi);
    return (u8)(int)v;
}

/* offset of flat index i of a row-major shape[rank] under the given element strides */
DEVFN int strided_offset(int i, __global const int* shape, __global const int* strides, int rank)
{
    int off = 0;
    for (int d = rank - 1; d >= 0; --d) {
        int s = shape[d];
        int k = i % s;
        i /= s;
        off += k * strides[d];
    }
    return off;
}
