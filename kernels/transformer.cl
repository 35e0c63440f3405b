/* Transformer ops: float32 math unaries (Erf, Gelu exact and tanh, Exp, Log, Sqrt, Reciprocal,
 * Neg, Abs, Sin, Cos, Softplus, Floor, Ceil), broadcasting Pow / Mod / comparisons / logic / Where through a walk table, Not,
 * LayerNormalization and InstanceNormalization (one work-group per row), LogSoftmax along an
 * axis, ReduceSum / ReduceMax over any axes, Trilu, CumSum, IsNaN, and integer Add / Sub /
 * Mul / Clip (the position-id arithmetic of exported language models).
 *
 * Walk tables (kernels/common.py walk_table): meta = [rank, out shape[MAX_RANK],
 * strides[MAX_RANK] of each operand in turn], stride 0 where an operand is broadcast.
 * Booleans are one byte 0/1.
 */
#ifdef __CUDACC__
#define erf erff
#define log logf
#define pow powf
#define fmod fmodf
#define log1p log1pf
#define sin sinf
#define cos cosf
#define floor floorf
#define ceil ceilf
#endif

/* element offset of output index i in operand ``op`` of a walk table */
DEVFN int walk_offset(int i, __global const int* meta, int op)
{
    int off = 0;
    for (int d = meta[0] - 1; d >= 0; --d) {
        int s = meta[1 + d];
        off += (i % s) * meta[1 + (1 + op) * MAX_RANK + d];
        i /= s;
    }
    return off;
}

#define UNARY_F32(name, expr)                                              \
__kernel void name(__global const float* x, __global float* y, int n)     \
{                                                                          \
    int i = GID(0);                                                        \
    if (i >= n) return;                                                    \
    float v = x[i];                                                        \
    y[i] = (expr);                                                         \
}

UNARY_F32(erf_f32, erf(v))
UNARY_F32(gelu_f32, 0.5f * v * (1.0f + erf(v * 0.70710678118654752f)))
UNARY_F32(gelu_tanh_f32, 0.5f * v * (1.0f + tanh(0.79788456080286536f * (v + 0.044715f * v * v * v))))
UNARY_F32(exp_f32, exp(v))
UNARY_F32(log_f32, log(v))
UNARY_F32(sqrt_f32, sqrt(v))
UNARY_F32(reciprocal_f32, 1.0f / v)
UNARY_F32(neg_f32, -v)
UNARY_F32(abs_f32, fabs(v))
UNARY_F32(sin_f32, sin(v))
UNARY_F32(cos_f32, cos(v))
UNARY_F32(softplus_f32, v > 0.0f ? v + log1p(exp(-v)) : log1p(exp(v)))
UNARY_F32(floor_f32, floor(v))
UNARY_F32(ceil_f32, ceil(v))

#define NEG_INT(name, T)                                                   \
__kernel void name(__global const T* x, __global T* y, int n)             \
{                                                                          \
    int i = GID(0);                                                        \
    if (i < n) y[i] = -x[i];                                               \
}

NEG_INT(neg_i32, int)
NEG_INT(neg_i64, i64)

__kernel void not_b8(__global const u8* x, __global u8* y, int n)
{
    int i = GID(0);
    if (i < n) y[i] = x[i] ? (u8)0 : (u8)1;
}

/* y = a (op) b with the two operands read through a walk table */
#define BINARY_WALK(name, TA, TY, expr)                                                     \
__kernel void name(__global const TA* a, __global const TA* b, __global TY* y,             \
                   __global const int* meta, int n)                                         \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    TA u = a[walk_offset(i, meta, 0)], v = b[walk_offset(i, meta, 1)];                      \
    y[i] = (expr);                                                                          \
}

#define COMPARISONS(sfx, T)                                                                 \
    BINARY_WALK(equal_##sfx, T, u8, u == v ? (u8)1 : (u8)0)                                 \
    BINARY_WALK(less_##sfx, T, u8, u < v ? (u8)1 : (u8)0)                                   \
    BINARY_WALK(greater_##sfx, T, u8, u > v ? (u8)1 : (u8)0)                                \
    BINARY_WALK(less_equal_##sfx, T, u8, u <= v ? (u8)1 : (u8)0)                            \
    BINARY_WALK(greater_equal_##sfx, T, u8, u >= v ? (u8)1 : (u8)0)

COMPARISONS(f32, float)
COMPARISONS(i32, int)
COMPARISONS(i64, i64)
BINARY_WALK(equal_b8, u8, u8, (u != 0) == (v != 0) ? (u8)1 : (u8)0)
BINARY_WALK(and_b8, u8, u8, (u != 0) && (v != 0) ? (u8)1 : (u8)0)
BINARY_WALK(or_b8, u8, u8, (u != 0) || (v != 0) ? (u8)1 : (u8)0)
BINARY_WALK(xor_b8, u8, u8, (u != 0) != (v != 0) ? (u8)1 : (u8)0)
BINARY_WALK(pow_f32, float, float, pow(u, v))
BINARY_WALK(fmod_f32, float, float, fmod(u, v))

/* numpy's mod: the remainder takes the divisor's sign; x mod 0 is 0 for integers */
DEVFN float float_mod(float u, float v)
{
    float r = fmod(u, v);
    return (r != 0.0f && ((r < 0.0f) != (v < 0.0f))) ? r + v : r;
}
#define INT_MOD(T) (v == (T)0 ? (T)0 : ((u % v != (T)0 && ((u % v < (T)0) != (v < (T)0))) ? u % v + v : u % v))
BINARY_WALK(mod_f32, float, float, float_mod(u, v))
BINARY_WALK(mod_i32, int, int, INT_MOD(int))
BINARY_WALK(mod_i64, i64, i64, INT_MOD(i64))
BINARY_WALK(fmod_i32, int, int, v == 0 ? 0 : u % v)
BINARY_WALK(fmod_i64, i64, i64, v == (i64)0 ? (i64)0 : u % v)

/* y = cond ? x : y through a walk table of three operands (cond, x, y) */
#define WHERE(name, T)                                                                      \
__kernel void name(__global const u8* c, __global const T* x, __global const T* z,         \
                   __global T* y, __global const int* meta, int n)                          \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    y[i] = c[walk_offset(i, meta, 0)] ? x[walk_offset(i, meta, 1)] : z[walk_offset(i, meta, 2)]; \
}

WHERE(where_b1, u8)
WHERE(where_b4, uint)
WHERE(where_b8, i64)

#define NORM_LOCAL 64

/* total = the sum of ``value`` over the NORM_LOCAL items of the group, in every item
 * (a macro: CUDA takes no __local pointer parameters) */
#define GROUP_SUM(part, value, lid, total)                                  \
    do {                                                                    \
        part[lid] = (value);                                                \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
        for (int s_ = NORM_LOCAL / 2; s_ > 0; s_ >>= 1) {                   \
            if (lid < s_) part[lid] += part[lid + s_];                      \
            barrier(CLK_LOCAL_MEM_FENCE);                                   \
        }                                                                   \
        total = part[0];                                                    \
        barrier(CLK_LOCAL_MEM_FENCE);                                       \
    } while (0)

/* One group of NORM_LOCAL items per row of n elements: y = (x - mean) / sqrt(var + eps) * s + b.
 * LayerNormalization: s = scale[k], b = bias[k] (per_row = 0); InstanceNormalization:
 * s = scale[row % channels], b = bias[row % channels] (per_row = 1). Mean and 1 / std go to
 * mean[row], inv[row] when has_stats. */
__kernel void norm_rows_f32(__global const float* x, __global const float* scale, __global const float* bias,
                            __global float* y, __global float* mean_out, __global float* inv_out,
                            int n, int channels, int per_row, int has_bias, int has_stats, float eps)
{
    __local float part[NORM_LOCAL];
    int lid = LID(0), row = GRP(0);
    __global const float* p = x + row * n;
    __global float* q = y + row * n;
    float sum = 0.0f;
    for (int k = lid; k < n; k += NORM_LOCAL) sum += p[k];
    float total;
    GROUP_SUM(part, sum, lid, total);
    float mean = total / (float)n;
    float sq = 0.0f;
    for (int k = lid; k < n; k += NORM_LOCAL) {
        float d = p[k] - mean;
        sq += d * d;
    }
    GROUP_SUM(part, sq, lid, total);
    float inv = 1.0f / sqrt(total / (float)n + eps);
    if (has_stats && lid == 0) {
        mean_out[row] = mean;
        inv_out[row] = inv;
    }
    int c = row % channels;
    for (int k = lid; k < n; k += NORM_LOCAL) {
        int j = per_row ? c : k;
        float v = (p[k] - mean) * inv * scale[j];
        q[k] = has_bias ? v + bias[j] : v;
    }
}

/* log softmax along an axis of length dim; element (o, k, r) sits at (o * dim + k) * inner + r */
__kernel void log_softmax_f32(__global const float* x, __global float* y, int dim, int inner, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int r = i % inner, o = i / inner;
    int base = o * dim * inner + r;
    float top = -INFINITY;
    for (int k = 0; k < dim; ++k) top = fmax(top, x[base + k * inner]);
    float sum = 0.0f;
    for (int k = 0; k < dim; ++k) sum += exp(x[base + k * inner] - top);
    float shift = top + log(sum);
    for (int k = 0; k < dim; ++k) y[base + k * inner] = x[base + k * inner] - shift;
}

/* meta = [kept rank, kept shape[MAX_RANK], kept strides[MAX_RANK],
 *         reduced rank, reduced shape[MAX_RANK], reduced strides[MAX_RANK]] */
__kernel void reduce_sum_f32(__global const float* x, __global float* y, __global const int* meta, int count, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int base = strided_offset(i, meta + 1, meta + 1 + MAX_RANK, meta[0]);
    __global const int* red = meta + 1 + 2 * MAX_RANK;
    float sum = 0.0f;
    for (int r = 0; r < count; ++r) sum += x[base + strided_offset(r, red + 1, red + 1 + MAX_RANK, red[0])];
    y[i] = sum;
}

__kernel void reduce_max_f32(__global const float* x, __global float* y, __global const int* meta, int count, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int base = strided_offset(i, meta + 1, meta + 1 + MAX_RANK, meta[0]);
    __global const int* red = meta + 1 + 2 * MAX_RANK;
    float best = -INFINITY;
    for (int r = 0; r < count; ++r) best = fmax(best, x[base + strided_offset(r, red + 1, red + 1 + MAX_RANK, red[0])]);
    y[i] = best;
}

/* Trilu over the last two dims (rows x cols): keep j - i >= k (upper) or <= k (lower), else 0 */
#define TRILU(name, T)                                                                      \
__kernel void name(__global const T* x, __global T* y, int rows, int cols, int k, int upper, int n) \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    int c = i % cols, r = (i / cols) % rows;                                                \
    int keep = upper ? (c - r >= k) : (c - r <= k);                                         \
    y[i] = keep ? x[i] : (T)0;                                                              \
}

TRILU(trilu_b1, u8)
TRILU(trilu_b4, uint)
TRILU(trilu_b8, i64)

/* integer Add / Sub / Mul (numpy wrap-around), operands through a walk table */
BINARY_WALK(add_i32, int, int, u + v)
BINARY_WALK(sub_i32, int, int, u - v)
BINARY_WALK(mul_i32, int, int, u * v)
BINARY_WALK(add_i64, i64, i64, u + v)
BINARY_WALK(sub_i64, i64, i64, u - v)
BINARY_WALK(mul_i64, i64, i64, u * v)

/* integer Clip with bounds already clamped to the type's range */
#define CLIP_INT(name, T)                                                                   \
__kernel void name(__global const T* x, __global T* y, T lo, T hi, int n)                  \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    T v = x[i];                                                                             \
    y[i] = v < lo ? lo : (v > hi ? hi : v);                                                 \
}

CLIP_INT(clip_i32, int)
CLIP_INT(clip_i64, i64)

/* IsNaN: a NaN is the one value unequal to itself */
__kernel void isnan_f32(__global const float* x, __global u8* y, int n)
{
    int i = GID(0);
    if (i < n) y[i] = x[i] != x[i] ? (u8)1 : (u8)0;
}

/* CumSum along an axis of length dim, one work item per line; element (o, k, r) sits at
 * (o * dim + k) * inner + r; exclusive writes the sum before each element, reverse runs from
 * the end; float32 accumulates in float32 */
#define CUMSUM(name, T)                                                                     \
__kernel void name(__global const T* x, __global T* y, int dim, int inner, int exclusive,  \
                   int reverse, int n)                                                      \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    int r = i % inner, o = i / inner;                                                       \
    int base = o * dim * inner + r;                                                         \
    T acc = (T)0;                                                                           \
    for (int s = 0; s < dim; ++s) {                                                         \
        int at = base + (reverse ? dim - 1 - s : s) * inner;                                \
        T v = x[at];                                                                        \
        if (exclusive) {                                                                    \
            y[at] = acc;                                                                    \
            acc += v;                                                                       \
        } else {                                                                            \
            acc += v;                                                                       \
            y[at] = acc;                                                                    \
        }                                                                                   \
    }                                                                                       \
}

CUMSUM(cumsum_f32, float)
CUMSUM(cumsum_i32, int)
CUMSUM(cumsum_i64, i64)
