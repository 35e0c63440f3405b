/* Data movement: one generic strided copy (Transpose, Concat, Split, Slice), Gather and Cast.
 * Copies move elements by size (1, 4 or 8 bytes), so they serve every dtype. */

/* meta = [rank, shape[MAX_RANK], src strides[MAX_RANK], dst strides[MAX_RANK], src offset, dst offset] */
#define STRIDED_COPY(name, T)                                                              \
__kernel void name(__global const T* src, __global T* dst, __global const int* meta, int n) \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    int rank = meta[0], r = i;                                                              \
    int s_off = meta[1 + 3 * MAX_RANK], d_off = meta[2 + 3 * MAX_RANK];                      \
    for (int d = rank - 1; d >= 0; --d) {                                                   \
        int s = meta[1 + d];                                                                \
        int k = r % s;                                                                      \
        r /= s;                                                                             \
        s_off += k * meta[1 + MAX_RANK + d];                                                \
        d_off += k * meta[1 + 2 * MAX_RANK + d];                                            \
    }                                                                                       \
    dst[d_off] = src[s_off];                                                                \
}

STRIDED_COPY(copy_b1, u8)
STRIDED_COPY(copy_b4, uint)
STRIDED_COPY(copy_b8, i64)

/* y[o, j, r] = data[o, idx[j], r]; negative indices count from the end, others are clamped */
#define GATHER(name, T, I)                                                                   \
__kernel void name(__global const T* data, __global const I* idx, __global T* y,            \
                   int inner, int axis_dim, int count, int n)                               \
{                                                                                            \
    int i = GID(0);                                                                          \
    if (i >= n) return;                                                                      \
    int r = i % inner;                                                                       \
    int t = i / inner;                                                                       \
    int j = t % count;                                                                       \
    int o = t / count;                                                                       \
    int k = (int)idx[j];                                                                     \
    if (k < 0) k += axis_dim;                                                                \
    k = k < 0 ? 0 : (k >= axis_dim ? axis_dim - 1 : k);                                      \
    y[i] = data[(o * axis_dim + k) * inner + r];                                             \
}

GATHER(gather_b1_i32, u8, int)
GATHER(gather_b4_i32, uint, int)
GATHER(gather_b8_i32, i64, int)
GATHER(gather_b1_i64, u8, i64)
GATHER(gather_b4_i64, uint, i64)
GATHER(gather_b8_i64, i64, i64)

/* Cast between f32, u8, i8, i32, i64 and b8 (bool stored as one byte 0/1) */
#define CAST(sn, ST, dn, DT)                                                                 \
__kernel void cast_##sn##_##dn(__global const ST* x, __global DT* y, int n)                 \
{                                                                                            \
    int i = GID(0);                                                                          \
    if (i < n) y[i] = (DT)x[i];                                                              \
}
#define CAST_BOOL(sn, ST)                                                                    \
__kernel void cast_##sn##_b8(__global const ST* x, __global u8* y, int n)                   \
{                                                                                            \
    int i = GID(0);                                                                          \
    if (i < n) y[i] = x[i] != (ST)0 ? (u8)1 : (u8)0;                                         \
}
#define CAST_FROM(sn, ST)                                                                    \
    CAST(sn, ST, f32, float)                                                                 \
    CAST(sn, ST, u8, u8)                                                                     \
    CAST(sn, ST, i8, i8)                                                                     \
    CAST(sn, ST, i32, int)                                                                   \
    CAST(sn, ST, i64, i64)                                                                   \
    CAST_BOOL(sn, ST)

CAST_FROM(f32, float)
CAST_FROM(u8, u8)
CAST_FROM(i8, i8)
CAST_FROM(i32, int)
CAST_FROM(i64, i64)
CAST_FROM(b8, u8)
