/* int8 kernels for CPU OpenCL devices (PoCL): wide work items, explicit vectors, no local memory.
 *
 * Instead of the GPU path's tiles in local memory, each work item of qconv_cpu computes QR output
 * pixels x QB output channels (qconv_cpu32: QR2 x QB2) with one float16 accumulator per pixel and
 * 16 channels, in one flat loop over the product steps (input channel, window row, column); PoCL
 * turns the float16 operations into AVX-512 FMAs. qconv_cpu_rows (thin and depthwise convs)
 * vectorises along output rows instead. The same kernels serve QGemm / QLinearMatMul (a GEMM is a
 * 1x1 convolution over rows). kernels/qvnni.cl has the AVX-512 VNNI form of qconv_cpu.
 *
 * Exactness: operands are float32(x - zx) and float32(w - zw), integers of magnitude <= 255, so a
 * product is <= 65025 and a partial sum of at most 256 products stays below 2^24, where float32
 * adds integers exactly. Each work item sums at most `chunk` (<= 256) products in float32,
 * converts that partial sum to int32 (exact) and adds it to an int32 accumulator: the int32
 * result equals the reference's integer accumulator, bit for bit, whatever the order. The
 * requantization epilogue (bias, multiplier, rint, zero point, saturation) is fused, computed
 * on vectors with the same float32 steps as requant_q8.
 *
 * Also CPU forms of QLinearAdd (equal shapes), MaxPool (int8/uint8) and QuantizeLinear (per
 * tensor), 16 elements per work item. pad_sub_f32 prepares the activations (zero point
 * subtracted, spatial padding written as 0); it is plain scalar code and compiles for CUDA as
 * well. The CPU kernels are OpenCL only.
 */

/* xf[r][ix] for padded rows r = nc * Hp + iy of Wp elements: float32(x - zx) inside the image, 0 in
 * the padding; one work item per padded row, rows = planes * Hp */
__kernel void pad_sub_f32(__global const u8* x, int sgn, int zx, __global float* xf,
                          int H, int W, int Hp, int Wp, int pt, int pl, int rows)
{
    int r = GID(0);
    if (r >= rows) return;
    int iy = r % Hp, nc = r / Hp;
    int sy = iy - pt;
    __global float* dst = xf + r * Wp;
    if (sy < 0 || sy >= H) {
        for (int ix = 0; ix < Wp; ++ix) dst[ix] = 0.0f;
        return;
    }
    int end = min(Wp, pl + W);
    __global const u8* src = x + (nc * H + sy) * W - pl;
    for (int ix = 0; ix < pl; ++ix) dst[ix] = 0.0f;
    if (sgn)
        for (int ix = pl; ix < end; ++ix) dst[ix] = (float)((int)((__global const i8*)src)[ix] - zx);
    else
        for (int ix = pl; ix < end; ++ix) dst[ix] = (float)((int)src[ix] - zx);
    for (int ix = end; ix < Wp; ++ix) dst[ix] = 0.0f;
}

#ifndef __CUDACC__

#define QB 16 /* output channels per work item: one float16 */
#define QR 8  /* output pixels per work item */

/* requantize accumulator vector A of pixel j (p0 + j) into out[j] */
#define STORE_REQUANT(A, j)                                                                        \
    {                                                                                              \
        int16 acc = A + bv;                                                                        \
        if (bias_mode == 2) {                                                                      \
            int t[QB];                                                                             \
            int p = min(p0 + j, P - 1);                                                            \
            for (int l = 0; l < QB; ++l) t[l] = bias[(g * Mg + min(mb * QB + l, Mg - 1)) * bm + p * bp]; \
            acc += vload16(0, t);                                                                  \
        }                                                                                          \
        float16 v = rint(convert_float16(acc) * m) + zy;                                           \
        v = fmin(fmax(v, lo), hi);                                                                 \
        vstore16(convert_uchar16(convert_int16(v) & 255), 0, out[j]);                              \
    }

#define QCPU_GEOMETRY __global const int* taps, int K, int cs, int Wo, int ry, int rx, int P, \
                      int Mg, int Mb, int group, int ximg, int yimg, int ym, int yp, int bm, int bp, int chunk

/* One work item: output pixels p0 .. p0 + QR - 1 (p0 = QR * GID(0)) x channels QB * GID(1) ..
 * of image / group z = GID(2) (img = z / group, g = z % group).
 * Product step k < K (input channel c, window row a, column b) of pixel p = oy * Wo + ox reads xf at
 * img * ximg + g * cs + oy * ry + ox * rx + taps[k]; cs is the offset of one group's channels.
 * wf: float32(w - zw) as [group][Mb][K][QB], channels past Mg zero; chunk <= 256 products.
 * Output (channel ch of the group, pixel p): y[img * yimg + (g * Mg + ch) * ym + p * yp].
 * multp: multipliers padded to [group][Mb * QB]; bias_mode 0: none, 1: bias padded as multp,
 * 2: element bias[(g * Mg + ch) * bm + p * bp] (a GEMM's bias matrix).
 * global (round_up(ceil(P / QR), L), Mb, N * group), local (L, 1, 1) */
__kernel void qconv_cpu(__global const float* xf, __global const float* wf,
                        __global const int* bias, int bias_mode, __global const float* multp,
                        float zy, float lo, float hi, __global u8* y, QCPU_GEOMETRY)
{
    int pb = GID(0), mb = GID(1), z = GID(2);
    int p0 = pb * QR;
    if (p0 >= P) return;
    int img = z / group, g = z % group;
    __global const float* xz = xf + img * ximg + g * cs;
    __global const float16* w = (__global const float16*)wf + (g * Mb + mb) * K;
    int off[QR];
    for (int j = 0; j < QR; ++j) {
        int p = min(p0 + j, P - 1); /* the tail repeats the last pixel; it is not stored */
        int oy = p / Wo, ox = p - oy * Wo;
        off[j] = oy * ry + ox * rx;
    }
    int o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4], o5 = off[5], o6 = off[6], o7 = off[7];
    int16 a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (int k0 = 0; k0 < K; k0 += chunk) {
        float16 s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f, s5 = 0.0f, s6 = 0.0f, s7 = 0.0f;
        int k1 = min(K, k0 + chunk);
        for (int k = k0; k < k1; ++k) {
            float16 wv = w[k];
            __global const float* xk = xz + taps[k];
            s0 = fma((float16)(xk[o0]), wv, s0);
            s1 = fma((float16)(xk[o1]), wv, s1);
            s2 = fma((float16)(xk[o2]), wv, s2);
            s3 = fma((float16)(xk[o3]), wv, s3);
            s4 = fma((float16)(xk[o4]), wv, s4);
            s5 = fma((float16)(xk[o5]), wv, s5);
            s6 = fma((float16)(xk[o6]), wv, s6);
            s7 = fma((float16)(xk[o7]), wv, s7);
        }
        a0 += convert_int16(s0);
        a1 += convert_int16(s1);
        a2 += convert_int16(s2);
        a3 += convert_int16(s3);
        a4 += convert_int16(s4);
        a5 += convert_int16(s5);
        a6 += convert_int16(s6);
        a7 += convert_int16(s7);
    }
    /* the epilogue on whole vectors: bias, rules 2-3 (float32 product, rint, zero point,
     * saturation) as requant_q8 does per element, then the bytes scattered to their channels */
    int chans = min(QB, Mg - mb * QB), pixels = min(QR, P - p0);
    int c0 = (g * Mb + mb) * QB; /* this block in the padded per-channel tables */
    float16 m = vload16(0, multp + c0);
    int16 bv = bias_mode == 1 ? vload16(0, bias + c0) : (int16)0;
    uchar out[QR][QB];
    STORE_REQUANT(a0, 0)
    STORE_REQUANT(a1, 1)
    STORE_REQUANT(a2, 2)
    STORE_REQUANT(a3, 3)
    STORE_REQUANT(a4, 4)
    STORE_REQUANT(a5, 5)
    STORE_REQUANT(a6, 6)
    STORE_REQUANT(a7, 7)
    __global u8* yz = y + img * yimg;
    for (int l = 0; l < chans; ++l) {
        int ch = g * Mg + mb * QB + l;
        for (int j = 0; j < pixels; ++j) yz[ch * ym + (p0 + j) * yp] = out[j][l];
    }
}

/* As qconv_cpu with QB2 = 32 output channels (two float16 halves) x QR2 = 6 pixels per work item:
 * more multiply-adds per loaded value. wf as [group][Mb][K][QB2] (Mb = ceil(Mg / QB2)).
 * global (round_up(ceil(P / QR2), L), Mb, N * group), local (L, 1, 1) */
#define QB2 32
#define QR2 6
#define STEP2(j, o)                                   \
    {                                                 \
        float16 xv = (float16)(xk[o]);                \
        s##j##0 = fma(xv, w0, s##j##0);               \
        s##j##1 = fma(xv, w1, s##j##1);               \
    }
#define FLUSH2(j)                                     \
    a##j##0 += convert_int16(s##j##0);                \
    a##j##1 += convert_int16(s##j##1);                \
    s##j##0 = 0.0f;                                   \
    s##j##1 = 0.0f;
/* requantize pixel j's two halves into out[j][0 .. 31] */
#define REQUANT2(j)                                                                                  \
    {                                                                                                \
        int16 h0 = a##j##0 + bv0, h1 = a##j##1 + bv1;                                               \
        if (bias_mode == 2) {                                                                        \
            int t[QB2];                                                                              \
            int p = min(p0 + j, P - 1);                                                              \
            for (int l = 0; l < QB2; ++l) t[l] = bias[(g * Mg + min(mb * QB2 + l, Mg - 1)) * bm + p * bp]; \
            h0 += vload16(0, t);                                                                     \
            h1 += vload16(1, t);                                                                     \
        }                                                                                            \
        float16 v0 = fmin(fmax(rint(convert_float16(h0) * m0) + zy, lo), hi);                      \
        float16 v1 = fmin(fmax(rint(convert_float16(h1) * m1) + zy, lo), hi);                      \
        vstore16(convert_uchar16(convert_int16(v0) & 255), 0, out[j]);                              \
        vstore16(convert_uchar16(convert_int16(v1) & 255), 1, out[j]);                              \
    }
__kernel void qconv_cpu32(__global const float* xf, __global const float* wf,
                          __global const int* bias, int bias_mode, __global const float* multp,
                          float zy, float lo, float hi, __global u8* y, QCPU_GEOMETRY)
{
    int pb = GID(0), mb = GID(1), z = GID(2);
    int p0 = pb * QR2;
    if (p0 >= P) return;
    int img = z / group, g = z % group;
    __global const float* xz = xf + img * ximg + g * cs;
    __global const float16* w = (__global const float16*)wf + 2 * (g * Mb + mb) * K;
    int off[QR2];
    for (int j = 0; j < QR2; ++j) {
        int p = min(p0 + j, P - 1);
        int oy = p / Wo, ox = p - oy * Wo;
        off[j] = oy * ry + ox * rx;
    }
    int o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4], o5 = off[5];
    int16 a00 = 0, a01 = 0, a10 = 0, a11 = 0, a20 = 0, a21 = 0, a30 = 0, a31 = 0, a40 = 0, a41 = 0, a50 = 0, a51 = 0;
    float16 s00 = 0.0f, s01 = 0.0f, s10 = 0.0f, s11 = 0.0f, s20 = 0.0f, s21 = 0.0f;
    float16 s30 = 0.0f, s31 = 0.0f, s40 = 0.0f, s41 = 0.0f, s50 = 0.0f, s51 = 0.0f;
    for (int k0 = 0; k0 < K; k0 += chunk) {
        int k1 = min(K, k0 + chunk);
        for (int k = k0; k < k1; ++k) {
            float16 w0 = w[2 * k], w1 = w[2 * k + 1];
            __global const float* xk = xz + taps[k];
            STEP2(0, o0)
            STEP2(1, o1)
            STEP2(2, o2)
            STEP2(3, o3)
            STEP2(4, o4)
            STEP2(5, o5)
        }
        FLUSH2(0)
        FLUSH2(1)
        FLUSH2(2)
        FLUSH2(3)
        FLUSH2(4)
        FLUSH2(5)
    }
    int chans = min(QB2, Mg - mb * QB2), pixels = min(QR2, P - p0);
    int c0 = (g * Mb + mb) * QB2;
    float16 m0 = vload16(0, multp + c0), m1 = vload16(1, multp + c0);
    int16 bv0 = bias_mode == 1 ? vload16(0, bias + c0) : (int16)0;
    int16 bv1 = bias_mode == 1 ? vload16(1, bias + c0) : (int16)0;
    uchar out[QR2][QB2];
    REQUANT2(0)
    REQUANT2(1)
    REQUANT2(2)
    REQUANT2(3)
    REQUANT2(4)
    REQUANT2(5)
    __global u8* yz = y + img * yimg;
    for (int l = 0; l < chans; ++l) {
        int ch = g * Mg + mb * QB2 + l;
        for (int j = 0; j < pixels; ++j) yz[ch * ym + (p0 + j) * yp] = out[j][l];
    }
}

/* Thin convolutions (depthwise, few output channels per group): one work item computes QV
 * consecutive output pixels of one row (oy, ox0 = QV * GID(1) ..) of one output channel m of
 * image img (GID(2) = img * M + m), vectorised along the row: for stride 1 (sw == 1) each product
 * step loads QV consecutive inputs, for stride 2 every other one of 2 x QV, else one by one.
 * wf: float32(w - zw) as [M][K]; xf, taps and the chunks as for qconv_cpu (xf has 2 x QV
 * elements of slack at its end); y is [N][M][Ho * Wo] (yimg = M * P, ym = P, yp = 1).
 * global (round_up(Ho, L), ceil(Wo / QV), N * M), local (L, 1, 1) */
#define QV 16
__kernel void qconv_cpu_rows(__global const float* xf, __global const float* wf,
                             __global const int* bias, int has_bias, __global const float* mult,
                             float zy, float lo, float hi, __global u8* y, QCPU_GEOMETRY)
{
    int oy = GID(0), ox0 = GID(1) * QV, z = GID(2);
    int M = yimg / P, Ho = P / Wo;
    if (oy >= Ho) return;
    int img = z / M, m = z % M, g = m / Mg;
    __global const float* xz = xf + img * ximg + g * cs + oy * ry + ox0 * rx;
    __global const float* w = wf + m * K;
    int count = min(QV, Wo - ox0);
    int16 acc = 0;
    for (int k0 = 0; k0 < K; k0 += chunk) {
        float16 s = 0.0f;
        int k1 = min(K, k0 + chunk);
        if (rx == 1) {
            for (int k = k0; k < k1; ++k) s = fma(vload16(0, xz + taps[k]), (float16)w[k], s);
        } else if (rx == 2) {
            for (int k = k0; k < k1; ++k) {
                __global const float* src = xz + taps[k];
                float16 even = (float16)(vload16(0, src).even, vload16(0, src + QV).even);
                s = fma(even, (float16)w[k], s);
            }
        } else {
            for (int k = k0; k < k1; ++k) {
                float t[QV];
                for (int l = 0; l < QV; ++l) t[l] = xz[taps[k] + min(l, count - 1) * rx];
                s = fma(vload16(0, t), (float16)w[k], s);
            }
        }
        acc += convert_int16(s);
    }
    if (has_bias) acc += bias[m];
    float16 v = rint(convert_float16(acc) * mult[m]) + zy;
    uchar16 q = convert_uchar16(convert_int16(fmin(fmax(v, lo), hi)) & 255);
    __global u8* dst = y + img * yimg + m * ym + oy * Wo + ox0;
    if (count == QV) {
        vstore16(q, 0, dst);
    } else {
        uchar t[QV];
        vstore16(q, 0, t);
        for (int l = 0; l < count; ++l) dst[l] = t[l];
    }
}

/* QLinearAdd of equal shapes (rule 4, side 0 as qmisc.cl's qadd), 16 elements per work item */
__kernel void qadd_cpu(__global const u8* a, int asgn, __global const u8* b, int bsgn, float ra, float rb,
                       float fixed, float lo, float hi, __global u8* y, int n)
{
    int i0 = GID(0) * 16;
    if (i0 >= n) return;
    if (i0 + 16 <= n) {
        uchar16 ua = vload16(0, a + i0), ub = vload16(0, b + i0);
        int16 ia = asgn ? convert_int16(as_char16(ua)) : convert_int16(ua);
        int16 ib = bsgn ? convert_int16(as_char16(ub)) : convert_int16(ub);
        float16 v = fma(convert_float16(ia), ra, fma(convert_float16(ib), rb, (float16)fixed));
        v = fmin(fmax(rint(v), lo), hi);
        vstore16(convert_uchar16(convert_int16(v) & 255), 0, y + i0);
        return;
    }
    for (int i = i0; i < n; ++i) {
        float v = FMA((float)load_q8(a, i, asgn), ra, FMA((float)load_q8(b, i, bsgn), rb, fixed));
        y[i] = (u8)(int)fmin(fmax(rint(v), lo), hi);
    }
}

/* MaxPool of int8/uint8 planes: one work item per output row (plane nc, row oy) and block of QV
 * outputs along it (ox0 = QV * GID(1)); a block whose windows lie inside the row in x loads
 * whole vectors (stride 1, or every other element for stride 2), the others check each column.
 * rows = planes * Ho; global (round_up(rows, L), ceil(Wo / QV)), local (L, 1) */
__kernel void maxpool_q8_rows(__global const u8* x, __global u8* y, int sgn, int H, int W, int Ho, int Wo,
                              int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int rows)
{
    int r = GID(0), ox0 = GID(1) * QV;
    if (r >= rows) return;
    int oy = r % Ho, nc = r / Ho;
    __global const u8* plane = x + nc * H * W;
    int a0 = 0, a1 = kh; /* the window rows inside the image */
    while (a0 < kh && oy * sh - pt + a0 * dh < 0) ++a0;
    while (a1 > a0 && oy * sh - pt + (a1 - 1) * dh >= H) --a1;
    int count = min(QV, Wo - ox0);
    int first = ox0 * sw - pl, last = (ox0 + QV - 1) * sw - pl + (kw - 1) * dw + (sw == 2 ? 1 : 0);
    int flip = sgn ? 0x80 : 0; /* int8 compared as uint8 after flipping the sign bit */
    __global u8* dst = y + r * Wo + ox0;
    if (count == QV && (sw == 1 || sw == 2) && first >= 0 && last < W) {
        uchar16 best = (uchar16)0;
        for (int a = a0; a < a1; ++a) {
            __global const u8* row = plane + (oy * sh - pt + a * dh) * W + first;
            for (int b = 0; b < kw; ++b) {
                __global const u8* src = row + b * dw;
                uchar16 v = sw == 1 ? vload16(0, src) : (uchar16)(vload16(0, src).even, vload16(0, src + QV).even);
                best = max(best, v ^ (uchar16)flip);
            }
        }
        vstore16(best ^ (uchar16)flip, 0, dst);
        return;
    }
    for (int l = 0; l < count; ++l) {
        int ox = ox0 + l, best = 0;
        for (int a = a0; a < a1; ++a) {
            __global const u8* row = plane + (oy * sh - pt + a * dh) * W;
            for (int b = 0; b < kw; ++b) {
                int ix = ox * sw - pl + b * dw;
                if (ix >= 0 && ix < W) best = max(best, (int)row[ix] ^ flip);
            }
        }
        dst[l] = (u8)(best ^ flip);
    }
}

/* QuantizeLinear per tensor (as qmisc.cl's quantize_q8), 16 elements per work item */
__kernel void quantize_q8_cpu(__global const float* x, float scale, float zp, __global u8* y, float lo, float hi, int n)
{
    int i0 = GID(0) * 16;
    if (i0 >= n) return;
    if (i0 + 16 <= n) {
        float16 v = fmin(fmax(rint(vload16(0, x + i0) / scale) + zp, lo), hi);
        vstore16(convert_uchar16(convert_int16(v) & 255), 0, y + i0);
        return;
    }
    for (int i = i0; i < n; ++i) y[i] = (u8)(int)fmin(fmax(FADD(rint(x[i] / scale), zp), lo), hi);
}

#endif
