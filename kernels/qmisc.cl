/* QuantizeLinear, DequantizeLinear, QLinearAdd, QLinearAveragePool, QLinearGlobalAveragePool and
 * QLinearConcat's requantizing copy, by hetero/ops/quantize.py and rules 2-6 of qlinear.py.
 * Per-axis parameters are indexed by (i / inner) % axis_dim (axis_dim = 1 for per-tensor). */

/* q = saturate(rint(x / s) + z) to [lo, hi] as int8/uint8 bytes */
__kernel void quantize_q8(__global const float* x, __global const float* scale, __global const int* zp,
                          __global u8* y, int inner, int axis_dim, float lo, float hi, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int c = (i / inner) % axis_dim;
    float v = FADD(rint(x[i] / scale[c]), (float)zp[c]);
    y[i] = (u8)(int)fmin(fmax(v, lo), hi);
}

__kernel void quantize_i32(__global const float* x, __global const float* scale, __global const int* zp,
                           __global int* y, int inner, int axis_dim, float lo, float hi, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int c = (i / inner) % axis_dim;
    float v = FADD(rint(x[i] / scale[c]), (float)zp[c]);
    v = fmin(fmax(v, lo), hi);
    y[i] = v >= 2147483648.0f ? 2147483647 : (int)v;
}

/* x = float32(q - z) * s */
__kernel void dequantize_q8(__global const u8* q, int sgn, __global const float* scale, __global const int* zp,
                            __global float* y, int inner, int axis_dim, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int c = (i / inner) % axis_dim;
    y[i] = FMUL((float)(load_q8(q, i, sgn) - zp[c]), scale[c]);
}

__kernel void dequantize_i32(__global const int* q, __global const float* scale, __global const int* zp,
                             __global float* y, int inner, int axis_dim, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int c = (i / inner) % axis_dim;
    y[i] = FMUL((float)(q[i] - zp[c]), scale[c]);
}

/* rule 4 (onnxruntime's fused multiply-adds): fixed = float32(zy) - fma(ra, za, float32(rb * zb)) from
 * the host; side 0: v = fma(a, ra, fma(b, rb, fixed)); side 1 (b constant along the innermost
 * span): v = fma(a, ra, fixed + float32(b * rb)); side 2 (a so): v = fma(b, rb, fixed + float32(a * ra)).
 * meta as in elementwise.cl (rank, out shape, a strides, b strides), rank 0 = same shape. */
__kernel void qadd(__global const u8* a, int asgn, __global const u8* b, int bsgn, float ra, float rb,
                   float fixed, int side, __global const int* meta, float lo, float hi, __global u8* y, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int rank = meta[0], r = i, ia = 0, ib = 0;
    if (rank == 0) {
        ia = i;
        ib = i;
    }
    for (int d = rank - 1; d >= 0; --d) {
        int s = meta[1 + d];
        int k = r % s;
        r /= s;
        ia += k * meta[1 + MAX_RANK + d];
        ib += k * meta[1 + 2 * MAX_RANK + d];
    }
    float fa = (float)load_q8(a, ia, asgn), fb = (float)load_q8(b, ib, bsgn);
    float v;
    if (side == 1) v = FMA(fa, ra, FADD(fixed, FMUL(fb, rb)));
    else if (side == 2) v = FMA(fb, rb, FADD(fixed, FMUL(fa, ra)));
    else v = FMA(fa, ra, FMA(fb, rb, fixed));
    y[i] = (u8)(int)fmin(fmax(rint(v), lo), hi);
}

/* rule 5, integer form (a window covering the whole unpadded image): int32 sum of x - zx, then
 * rule 2 with mult[oy * Wo + ox] = float32(sx / float32(sy * count)) from the host */
__kernel void qavgpool(__global const u8* x, int sgn, int zx, __global const float* mult,
                       float zy, float lo, float hi, __global u8* y,
                       int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw,
                       int pt, int pl, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int ox = i % Wo, t = i / Wo;
    int oy = t % Ho, nc = t / Ho;
    int base = nc * H * W;
    int acc = 0;
    for (int a = 0; a < kh; ++a) {
        int iy = oy * sh - pt + a * dh;
        if (iy < 0 || iy >= H) continue;
        for (int b = 0; b < kw; ++b) {
            int ix = ox * sw - pl + b * dw;
            if (ix < 0 || ix >= W) continue;
            acc += load_q8(x, base + iy * W + ix, sgn) - zx;
        }
    }
    y[i] = requant_q8(acc, mult[oy * Wo + ox], zy, lo, hi);
}

/* rule 5, float form (every other window): float32(sx * (x - zx)) summed in float32 in row-major
 * window order over the pixels inside the image, divided by count[oy * Wo + ox] (from the host),
 * then y = saturate(rint(float32(avg / sy) + zy)) */
__kernel void qavgpool_float(__global const u8* x, int sgn, int zx, float sx, __global const float* count,
                             float sy, float zy, float lo, float hi, __global u8* y,
                             int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw,
                             int pt, int pl, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int ox = i % Wo, t = i / Wo;
    int oy = t % Ho, nc = t / Ho;
    int base = nc * H * W;
    float total = 0.0f;
    for (int a = 0; a < kh; ++a) {
        int iy = oy * sh - pt + a * dh;
        if (iy < 0 || iy >= H) continue;
        for (int b = 0; b < kw; ++b) {
            int ix = ox * sw - pl + b * dw;
            if (ix < 0 || ix >= W) continue;
            total = FADD(total, FMUL(sx, (float)(load_q8(x, base + iy * W + ix, sgn) - zx)));
        }
    }
    float average = total / count[oy * Wo + ox];
    float v = rint(FADD(average / sy, zy));
    y[i] = (u8)(int)fmin(fmax(v, lo), hi);
}

#define QREDUCE_LOCAL 64

/* rule 5 over whole rows of length inner; local size QREDUCE_LOCAL, one group per row (dim 0) */
__kernel void qgap(__global const u8* x, int sgn, int zx, float mult, float zy, float lo, float hi,
                   __global u8* y, int inner)
{
    __local int part[QREDUCE_LOCAL];
    int lid = LID(0), row = GRP(0);
    int base = row * inner, sum = 0;
    for (int k = lid; k < inner; k += QREDUCE_LOCAL) sum += load_q8(x, base + k, sgn) - zx;
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = QREDUCE_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) y[row] = requant_q8(part[0], mult, zy, lo, hi);
}

/* rule 6 into a region of the output; meta as copy.cl's strided copy.
 * y = saturate(rint(float32(float32(q - zi) * si) / sy) + zy) */
__kernel void qrequant_copy(__global const u8* src, int sgn, int zi, float si,
                            __global u8* dst, __global const int* meta, float sy, float zy,
                            float lo, float hi, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int rank = meta[0], r = i;
    int s_off = meta[1 + 3 * MAX_RANK], d_off = meta[2 + 3 * MAX_RANK];
    for (int d = rank - 1; d >= 0; --d) {
        int s = meta[1 + d];
        int k = r % s;
        r /= s;
        s_off += k * meta[1 + MAX_RANK + d];
        d_off += k * meta[1 + 2 * MAX_RANK + d];
    }
    float value = FMUL((float)(load_q8(src, s_off, sgn) - zi), si);
    float v = FADD(rint(value / sy), zy);
    dst[d_off] = (u8)(int)fmin(fmax(v, lo), hi);
}

/* rule 7 (QLinearMul): va = float32(sa * (a - za)), vb = float32(sb * (b - zb)),
 * y = saturate(rint(float32(float32(va * vb) / sy)) + zy); meta as qadd's (rank 0 = same shape) */
__kernel void qmul(__global const u8* a, int asgn, int za, float sa, __global const u8* b, int bsgn, int zb,
                   float sb, float sy, float zy, __global const int* meta, float lo, float hi, __global u8* y, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int rank = meta[0], r = i, ia = 0, ib = 0;
    if (rank == 0) {
        ia = i;
        ib = i;
    }
    for (int d = rank - 1; d >= 0; --d) {
        int s = meta[1 + d];
        int k = r % s;
        r /= s;
        ia += k * meta[1 + MAX_RANK + d];
        ib += k * meta[1 + 2 * MAX_RANK + d];
    }
    float va = FMUL(sa, (float)(load_q8(a, ia, asgn) - za));
    float vb = FMUL(sb, (float)(load_q8(b, ib, bsgn) - zb));
    float v = FADD(rint(FMUL(va, vb) / sy), zy);
    y[i] = (u8)(int)fmin(fmax(v, lo), hi);
}

/* rule 8 (QLinearSoftmax) along an axis of D elements at stride inner: one work item per row
 * r = outer * inner + in (rows of them); u = x (uint8) or x + 128 (int8), m = the row's max u,
 * e = table[u - m + 255], S = sum e (uint32), y = saturate(rint(float32(float32(e) * c) / float32(S)) + zy) */
__kernel void qsoftmax(__global const u8* x, int sgn, __global const uint* table, float c, float zy,
                       float lo, float hi, __global u8* y, int D, int inner, int rows)
{
    int r = GID(0);
    if (r >= rows) return;
    int base = (r / inner) * D * inner + r % inner;
    int offset = sgn ? 128 : 0, m = -1;
    for (int i = 0; i < D; ++i) m = max(m, load_q8(x, base + i * inner, sgn) + offset);
    uint total = 0;
    for (int i = 0; i < D; ++i) total += table[load_q8(x, base + i * inner, sgn) + offset - m + 255];
    float s = (float)total;
    for (int i = 0; i < D; ++i) {
        float e = (float)table[load_q8(x, base + i * inner, sgn) + offset - m + 255];
        float v = FADD(rint(FMUL(e, c) / s), zy);
        y[base + i * inner] = (u8)(int)fmin(fmax(v, lo), hi);
    }
}
