/* QLinearConv, one output per work item, any groups / strides / dilations / pads (rules 1-3 of
 * hetero/ops/qlinear.py). Used for depthwise and thin convolutions; wider ones go through the
 * packed implicit GEMM of qgemm.cl. x, w and y are int8 (sgn != 0) or uint8 bytes;
 * zw, mult and bias are per output channel. */

#define CONV_ARGS int C, int H, int W, int M, int Ho, int Wo, int kh, int kw, int sh, int sw, \
                  int dh, int dw, int pt, int pl, int group

/* global (ceil(P / 64) * 64, M, N), local (64, 1, 1) */
__kernel void qconv_direct(__global const u8* x, int xsgn, int zx,
                           __global const u8* w, int wsgn, __global const int* zw,
                           __global const int* bias, int has_bias, __global const float* mult,
                           float zy, float lo, float hi, __global u8* y, CONV_ARGS)
{
    int p = GID(0), m = GID(1), img = GID(2);
    int P = Ho * Wo;
    if (p >= P) return;
    int Cg = C / group, Mg = M / group, g = m / Mg;
    int oy = p / Wo, ox = p % Wo;
    int xbase = (img * C + g * Cg) * H * W;
    int wbase = m * Cg * kh * kw;
    int wz = zw[m];
    int acc = 0;
    for (int c = 0; c < Cg; ++c) {
        for (int a = 0; a < kh; ++a) {
            int iy = oy * sh - pt + a * dh;
            if (iy < 0 || iy >= H) continue;
            for (int b = 0; b < kw; ++b) {
                int ix = ox * sw - pl + b * dw;
                if (ix < 0 || ix >= W) continue;
                int xv = load_q8(x, xbase + (c * H + iy) * W + ix, xsgn) - zx;
                int wv = load_q8(w, wbase + (c * kh + a) * kw + b, wsgn) - wz;
                acc += xv * wv;
            }
        }
    }
    if (has_bias) acc += bias[m];
    y[(img * M + m) * P + p] = requant_q8(acc, mult[m], zy, lo, hi);
}
