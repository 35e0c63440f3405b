/* float32 elementwise ops: activations, binary arithmetic with numpy broadcasting, and the
 * per-channel affine transform BatchNormalization folds to. */

#define UNARY(name, expr)                                                                   \
__kernel void name(__global const float* x, __global float* y, int n, float p0, float p1) \
{                                                                                           \
    int i = GID(0);                                                                         \
    if (i >= n) return;                                                                     \
    float v = x[i];                                                                         \
    y[i] = (expr);                                                                          \
}

UNARY(relu_f32, v > 0.0f ? v : 0.0f)
UNARY(clip_f32, fmin(fmax(v, p0), p1))
UNARY(sigmoid_f32, 1.0f / (1.0f + exp(-v)))
UNARY(hard_sigmoid_f32, fmin(fmax(p0 * v + p1, 0.0f), 1.0f))
UNARY(hard_swish_f32, v * fmin(fmax(v * (1.0f / 6.0f) + 0.5f, 0.0f), 1.0f))
UNARY(tanh_f32, tanh(v))

/* same-shape operands */
#define BINARY_SAME(name, expr)                                                              \
__kernel void name(__global const float* a, __global const float* b, __global float* y, int n) \
{                                                                                            \
    int i = GID(0);                                                                          \
    if (i >= n) return;                                                                      \
    float u = a[i], v = b[i];                                                                \
    y[i] = (expr);                                                                           \
}

/* broadcast operands; meta = [rank, out shape[MAX_RANK], a strides[MAX_RANK], b strides[MAX_RANK]]
 * with stride 0 along broadcast dimensions */
#define BINARY_BCAST(name, expr)                                                             \
__kernel void name(__global const float* a, __global const float* b, __global float* y,     \
                   __global const int* meta, int n)                                          \
{                                                                                            \
    int i = GID(0);                                                                          \
    if (i >= n) return;                                                                      \
    int rank = meta[0], r = i, ia = 0, ib = 0;                                               \
    for (int d = rank - 1; d >= 0; --d) {                                                    \
        int s = meta[1 + d];                                                                 \
        int k = r % s;                                                                       \
        r /= s;                                                                              \
        ia += k * meta[1 + MAX_RANK + d];                                                    \
        ib += k * meta[1 + 2 * MAX_RANK + d];                                                \
    }                                                                                        \
    float u = a[ia], v = b[ib];                                                              \
    y[i] = (expr);                                                                           \
}

BINARY_SAME(add_f32, u + v)
BINARY_SAME(sub_f32, u - v)
BINARY_SAME(mul_f32, u * v)
BINARY_SAME(div_f32, u / v)
BINARY_BCAST(add_bcast_f32, u + v)
BINARY_BCAST(sub_bcast_f32, u - v)
BINARY_BCAST(mul_bcast_f32, u * v)
BINARY_BCAST(div_bcast_f32, u / v)

/* y = x * scale[c] + shift[c] with c = (i / inner) % channels (BatchNormalization) */
__kernel void scale_shift_f32(__global const float* x, __global const float* scale,
                              __global const float* shift, __global float* y,
                              int inner, int channels, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int c = (i / inner) % channels;
    y[i] = FADD(FMUL(x[i], scale[c]), shift[c]);
}
