/* int8 products on AVX-512 VNNI for PoCL on x86 CPUs that have it (built with -DHETERO_VNNI).
 *
 * vpdpbusd multiplies 4 unsigned activation bytes by 4 signed weight bytes and adds the four
 * products to an int32 lane, 16 lanes (output channels) per instruction. Activations are moved
 * to unsigned bytes u (uint8 as is, int8 + 128, zero point likewise: zu) and laid out in quads of
 * channels, xq[z][c4][Hp][Wp] as 32-bit words of the channels 4 c4 .. 4 c4 + 3 (spatial padding
 * holds zu, channels past Cg hold 0); weights are ws = w - zw (in [-128, 127], checked on the
 * host) packed [group][Mb][T][QB] words for product steps t = (c4, a, b). Then exactly, in int32,
 *     sum (x - zx)(w - zw) = sum u ws - zu sum ws,
 * and the host folds -zu sum ws into the per-channel bias. The epilogue is qcpu.cl's.
 *
 * PoCL compiles kernels for its generic x86 target (no VNNI): the VNNI code lives in functions
 * with the target attribute, called once per work item (LLVM does not inline them into the
 * kernel, which would drop the attribute). pack_quads_u8 is plain code and compiles for CUDA.
 */

/* one work item per padded row (z, c4, iy) of Wp words, rows = N * group * C4 * Hp; element
 * (image img, channel c, row sy, column sx) of x at img * ximg + c * xc + sy * xy + sx * xx */
__kernel void pack_quads_u8(__global const u8* x, int sgn, int zu, __global uint* xq, int Cg, int group, int C4,
                            int H, int W, int Hp, int Wp, int pt, int pl, int ximg, int xc, int xy, int xx, int rows)
{
    int r = GID(0);
    if (r >= rows) return;
    int iy = r % Hp, t = r / Hp;
    int c4 = t % C4, z = t / C4;
    int img = z / group, g = z % group;
    int sy = iy - pt, flip = sgn ? 0x80 : 0;
    uint pad = (uint)zu * 0x01010101u;
    for (int q = 0; q < 4; ++q)
        if (4 * c4 + q >= Cg) pad &= ~(0xffu << (8 * q));
    __global uint* dst = xq + r * Wp;
    for (int ix = 0; ix < Wp; ++ix) {
        int sx = ix - pl;
        uint word = pad;
        if (sy >= 0 && sy < H && sx >= 0 && sx < W) {
            word = 0;
            for (int q = 0; q < 4; ++q) {
                int c = 4 * c4 + q;
                if (c < Cg) {
                    uint v = (uint)(x[img * ximg + (g * Cg + c) * xc + sy * xy + sx * xx] ^ flip);
                    word |= v << (8 * q);
                }
            }
        }
        dst[ix] = word;
    }
}

/* a GEMM's activation a[rows][K] as unsigned bytes in words, row r at xq[r * K4 ..] (bytes past K
 * are 0); one work item per row */
__kernel void pack_rows_u8(__global const u8* a, int sgn, __global uint* xq, int K, int K4, int rows)
{
    int r = GID(0);
    if (r >= rows) return;
    __global const u8* src = a + r * K;
    __global uint* dst = xq + r * K4;
    uint flip = sgn ? 0x80u : 0u;
    for (int t = 0; t < K4; ++t) {
        uint word = 0;
        for (int q = 0; q < 4; ++q) {
            int k = 4 * t + q;
            if (k < K) word |= ((uint)src[k] ^ flip) << (8 * q);
        }
        dst[t] = word;
    }
}

#if defined(HETERO_VNNI) && !defined(__CUDACC__)

#define VQB 16 /* output channels per work item */
#define VQR 8  /* output pixels per work item */
#define DPBUSD(acc, u, w) __builtin_ia32_vpdpbusd512((acc), (u), (w))

/* the VNNI part of qconv_vnni: returns the int32 sums of pixels p0 .. p0 + VQR - 1 for the VQB
 * channels of block wq (T steps) in acc[VQR][VQB] */
__attribute__((target("avx512vnni"))) __attribute__((noinline))
static void vnni_block(__global const int* xz, __global const int16* wq, __global const int* taps, int T,
                       int o0, int o1, int o2, int o3, int o4, int o5, int o6, int o7, int* acc)
{
    int16 a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (int t = 0; t < T; ++t) {
        int16 wv = wq[t];
        __global const int* xt = xz + taps[t];
        a0 = DPBUSD(a0, (int16)(xt[o0]), wv);
        a1 = DPBUSD(a1, (int16)(xt[o1]), wv);
        a2 = DPBUSD(a2, (int16)(xt[o2]), wv);
        a3 = DPBUSD(a3, (int16)(xt[o3]), wv);
        a4 = DPBUSD(a4, (int16)(xt[o4]), wv);
        a5 = DPBUSD(a5, (int16)(xt[o5]), wv);
        a6 = DPBUSD(a6, (int16)(xt[o6]), wv);
        a7 = DPBUSD(a7, (int16)(xt[o7]), wv);
    }
    vstore16(a0, 0, acc);
    vstore16(a1, 1, acc);
    vstore16(a2, 2, acc);
    vstore16(a3, 3, acc);
    vstore16(a4, 4, acc);
    vstore16(a5, 5, acc);
    vstore16(a6, 6, acc);
    vstore16(a7, 7, acc);
}

/* As qcpu.cl's qconv_cpu on xq and wq: pixel p = oy * Wo + ox reads word z * zplane + oy * ry +
 * ox * rx + taps[t] of xq (z = img * group + g). biasp: the corrected bias padded to
 * [group][Mb * VQB]; bias_mode 2 also adds bias[(g * Mg + ch) * bm + p * bp] (a GEMM's matrix).
 * global (round_up(ceil(P / VQR), L), Mb, N * group), local (L, 1, 1) */
__kernel void qconv_vnni(__global const int* xq, __global const int* wq, __global const int* biasp,
                         __global const int* bias, int bias_mode, __global const float* multp,
                         float zy, float lo, float hi, __global u8* y,
                         __global const int* taps, int T, int zplane, int Wo, int ry, int rx, int P,
                         int Mg, int Mb, int group, int yimg, int ym, int yp, int bm, int bp)
{
    int pb = GID(0), mb = GID(1), z = GID(2);
    int p0 = pb * VQR;
    if (p0 >= P) return;
    int img = z / group, g = z % group;
    int off[VQR];
    for (int j = 0; j < VQR; ++j) {
        int p = min(p0 + j, P - 1); /* the tail repeats the last pixel; it is not stored */
        int oy = p / Wo, ox = p - oy * Wo;
        off[j] = oy * ry + ox * rx;
    }
    int acc[VQR * VQB];
    vnni_block(xq + z * zplane, (__global const int16*)wq + (g * Mb + mb) * T, taps, T, off[0], off[1], off[2],
               off[3], off[4], off[5], off[6], off[7], acc);
    int c0 = (g * Mb + mb) * VQB;
    float16 m = vload16(0, multp + c0);
    int16 bv = vload16(0, biasp + c0);
    int chans = min(VQB, Mg - mb * VQB), pixels = min(VQR, P - p0);
    uchar out[VQR][VQB];
    for (int j = 0; j < VQR; ++j) {
        int16 v = vload16(j, acc) + bv;
        if (bias_mode == 2) {
            int t[VQB];
            int p = min(p0 + j, P - 1);
            for (int l = 0; l < VQB; ++l) t[l] = bias[(g * Mg + min(mb * VQB + l, Mg - 1)) * bm + p * bp];
            v += vload16(0, t);
        }
        float16 f = fmin(fmax(rint(convert_float16(v) * m) + zy, lo), hi);
        vstore16(convert_uchar16(convert_int16(f) & 255), 0, out[j]);
    }
    __global u8* yz = y + img * yimg;
    for (int l = 0; l < chans; ++l) {
        int ch = g * Mg + mb * VQB + l;
        for (int j = 0; j < pixels; ++j) yz[ch * ym + (p0 + j) * yp] = out[j][l];
    }
}

#endif
