/* Pooling and reductions: Max/AveragePool over 2-D windows (NCHW, one output per work item),
 * GlobalAveragePool (one work-group per row), ReduceMean over any axes, Softmax along an axis.
 * Window geometry: input H x W, output Ho x Wo, kernel kh x kw, strides, dilations, top/left pads;
 * positions outside the input are skipped (padding never wins a max, adds nothing to a sum). */

#define POOL_ARGS int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int dh, int dw, \
                  int pt, int pl, int n

__kernel void maxpool_f32(__global const float* x, __global float* y, POOL_ARGS)
{
    int i = GID(0);
    if (i >= n) return;
    int ox = i % Wo, t = i / Wo;
    int oy = t % Ho, nc = t / Ho;
    __global const float* plane = x + nc * H * W;
    float best = -INFINITY;
    for (int a = 0; a < kh; ++a) {
        int iy = oy * sh - pt + a * dh;
        if (iy < 0 || iy >= H) continue;
        for (int b = 0; b < kw; ++b) {
            int ix = ox * sw - pl + b * dw;
            if (ix < 0 || ix >= W) continue;
            float v = plane[iy * W + ix];
            best = v > best ? v : best;
        }
    }
    y[i] = best;
}

__kernel void maxpool_q8(__global const u8* x, __global u8* y, int sgn, POOL_ARGS)
{
    int i = GID(0);
    if (i >= n) return;
    int ox = i % Wo, t = i / Wo;
    int oy = t % Ho, nc = t / Ho;
    int base = nc * H * W;
    int best = sgn ? -128 : 0;
    for (int a = 0; a < kh; ++a) {
        int iy = oy * sh - pt + a * dh;
        if (iy < 0 || iy >= H) continue;
        for (int b = 0; b < kw; ++b) {
            int ix = ox * sw - pl + b * dw;
            if (ix < 0 || ix >= W) continue;
            int v = load_q8(x, base + iy * W + ix, sgn);
            best = v > best ? v : best;
        }
    }
    y[i] = (u8)best;
}

/* divisor[oy * Wo + ox] is the element count the host computed for each output position */
__kernel void avgpool_f32(__global const float* x, __global float* y, __global const float* divisor,
                          POOL_ARGS)
{
    int i = GID(0);
    if (i >= n) return;
    int ox = i % Wo, t = i / Wo;
    int oy = t % Ho, nc = t / Ho;
    __global const float* plane = x + nc * H * W;
    float sum = 0.0f;
    for (int a = 0; a < kh; ++a) {
        int iy = oy * sh - pt + a * dh;
        if (iy < 0 || iy >= H) continue;
        for (int b = 0; b < kw; ++b) {
            int ix = ox * sw - pl + b * dw;
            if (ix < 0 || ix >= W) continue;
            sum += plane[iy * W + ix];
        }
    }
    y[i] = sum / divisor[oy * Wo + ox];
}

#define REDUCE_LOCAL 64

/* y[row] = mean(x[row * inner ... row * inner + inner)); local size REDUCE_LOCAL, one group per row (dim 0) */
__kernel void row_mean_f32(__global const float* x, __global float* y, int inner)
{
    __local float part[REDUCE_LOCAL];
    int lid = LID(0), row = GRP(0);
    __global const float* p = x + row * inner;
    float sum = 0.0f;
    for (int k = lid; k < inner; k += REDUCE_LOCAL) sum += p[k];
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = REDUCE_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) y[row] = part[0] / (float)inner;
}

/* meta = [kept rank, kept shape[MAX_RANK], kept strides[MAX_RANK],
 *         reduced rank, reduced shape[MAX_RANK], reduced strides[MAX_RANK]] */
__kernel void reduce_mean_f32(__global const float* x, __global float* y, __global const int* meta,
                              int count, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int base = strided_offset(i, meta + 1, meta + 1 + MAX_RANK, meta[0]);
    __global const int* red = meta + 1 + 2 * MAX_RANK;
    float sum = 0.0f;
    for (int r = 0; r < count; ++r) sum += x[base + strided_offset(r, red + 1, red + 1 + MAX_RANK, red[0])];
    y[i] = sum / (float)count;
}

/* softmax along an axis of length dim; element (o, k, r) sits at (o * dim + k) * inner + r */
__kernel void softmax_f32(__global const float* x, __global float* y, int dim, int inner, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int r = i % inner, o = i / inner;
    int base = o * dim * inner + r;
    float top = -INFINITY;
    for (int k = 0; k < dim; ++k) top = fmax(top, x[base + k * inner]);
    float sum = 0.0f;
    for (int k = 0; k < dim; ++k) sum += exp(x[base + k * inner] - top);
    for (int k = 0; k < dim; ++k) y[base + k * inner] = exp(x[base + k * inner] - top) / sum;
}
