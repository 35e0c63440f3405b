/* float32 2-D convolution, NCHW, any groups / strides / dilations / pads.
 * conv2d_f32_direct: one output per work item (depthwise and other thin convolutions).
 * conv2d_f32_tiled: implicit GEMM per (image, group): Y[Mg, P] = W[Mg, K] * patches[K, P] with
 * K = Cg * kh * kw and P = Ho * Wo, tiled in local memory like gemm.cl. */

#define TM 32
#define TN 32
#define TK 16
#define RM 4
#define RN 4
#define LX (TN / RN)
#define LY (TM / RM)

#define CONV_ARGS int C, int H, int W, int M, int Ho, int Wo, int kh, int kw, int sh, int sw, \
                  int dh, int dw, int pt, int pl, int group

/* global (ceil(P / 64) * 64, M, N), local (64, 1, 1) */
__kernel void conv2d_f32_direct(__global const float* x, __global const float* w,
                                __global const float* bias, __global float* y, int has_bias, CONV_ARGS)
{
    int p = GID(0), m = GID(1), img = GID(2);
    int P = Ho * Wo;
    if (p >= P) return;
    int Cg = C / group, Mg = M / group, g = m / Mg;
    int oy = p / Wo, ox = p % Wo;
    __global const float* xs = x + (img * C + g * Cg) * H * W;
    __global const float* ws = w + m * Cg * kh * kw;
    float acc = 0.0f;
    for (int c = 0; c < Cg; ++c) {
        for (int a = 0; a < kh; ++a) {
            int iy = oy * sh - pt + a * dh;
            if (iy < 0 || iy >= H) continue;
            for (int b = 0; b < kw; ++b) {
                int ix = ox * sw - pl + b * dw;
                if (ix < 0 || ix >= W) continue;
                acc += xs[(c * H + iy) * W + ix] * ws[(c * kh + a) * kw + b];
            }
        }
    }
    if (has_bias) acc += bias[m];
    y[(img * M + m) * P + p] = acc;
}

/* global (ceil(P / TN) * LX, ceil(Mg / TM) * LY, N * group), local (LX, LY, 1) */
__kernel void conv2d_f32_tiled(__global const float* x, __global const float* w,
                               __global const float* bias, __global float* y, int has_bias, CONV_ARGS)
{
    __local float As[TK][TM + 1];
    __local float Bs[TK][TN + 1];
    int tx = LID(0), ty = LID(1), tid = ty * LX + tx;
    int p0 = GRP(0) * TN, m0 = GRP(1) * TM, z = GRP(2);
    int img = z / group, g = z % group;
    int Cg = C / group, Mg = M / group, khw = kh * kw, K = Cg * khw, P = Ho * Wo;
    x += (img * C + g * Cg) * H * W;
    w += g * Mg * K;
    y += (img * M + g * Mg) * P;
    float acc[RM][RN];
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int l = tid; l < TK * TM; l += LX * LY) {
            int kk = l % TK, mm = l / TK;
            int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < Mg && k < K) ? w[m * K + k] : 0.0f;
        }
        for (int l = tid; l < TK * TN; l += LX * LY) {
            int pp = l % TN, kk = l / TN;
            int p = p0 + pp, k = k0 + kk;
            float v = 0.0f;
            if (p < P && k < K) {
                int c = k / khw, r = k - c * khw;
                int a = r / kw, b = r - a * kw;
                int oy = p / Wo, ox = p - oy * Wo;
                int iy = oy * sh - pt + a * dh, ix = ox * sw - pl + b * dw;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[(c * H + iy) * W + ix];
            }
            Bs[kk][pp] = v;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TK; ++kk) {
            float av[RM], bv[RN];
            for (int i = 0; i < RM; ++i) av[i] = As[kk][ty + i * LY];
            for (int j = 0; j < RN; ++j) bv[j] = Bs[kk][tx + j * LX];
            for (int i = 0; i < RM; ++i)
                for (int j = 0; j < RN; ++j) acc[i][j] += av[i] * bv[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < RM; ++i) {
        int m = m0 + ty + i * LY;
        if (m >= Mg) continue;
        float b0 = has_bias ? bias[g * Mg + m] : 0.0f;
        for (int j = 0; j < RN; ++j) {
            int p = p0 + tx + j * LX;
            if (p < P) y[m * P + p] = acc[i][j] + b0;
        }
    }
}
