/* Integer matrix products (rules 1-3 of hetero/ops/qlinear.py).
 *
 * qmatmul_tiled: QGemm / QLinearMatMul on unpacked int8/uint8 operands, any strides and batch
 * offsets, per-column weight zero points and multipliers.
 *
 * The packed path: operands shifted to signed bytes (uint8 v -> v - 128, zero points likewise)
 * and packed four per int along K (zero-padded to K4 words), then multiplied with DOT4 (CUDA:
 * __dp4a). With a' = a - za', b' = b - zb' the exact accumulator is
 *     sum a'b' = raw - zb' * rowsum(a) - za' * colsum(b) + K * za' * zb'
 * where raw, rowsum and colsum are over the shifted bytes. Spatial conv padding holds the
 * shifted zero point, so it contributes zero like in the reference.
 */

#define TM 32
#define TN 32
#define TK 16
#define RM 4
#define RN 4
#define LX (TN / RN)
#define LY (TM / RM)
#define PACK_LOCAL 64

/* global (ceil(N / TN) * LX, ceil(M / TM) * LY, batch), local (LX, LY, 1); y contiguous per batch */
__kernel void qmatmul_tiled(__global const u8* a, int asgn, int za,
                            __global const u8* b, int bsgn, __global const int* zb,
                            __global const int* offsets, int M, int N, int K,
                            int sam, int sak, int sbk, int sbn,
                            __global const int* c, int has_c, int scm, int scn,
                            __global const float* mult, float zy, float lo, float hi, __global u8* y)
{
    __local int As[TK][TM + 1];
    __local int Bs[TK][TN + 1];
    int tx = LID(0), ty = LID(1), tid = ty * LX + tx;
    int n0 = GRP(0) * TN, m0 = GRP(1) * TM, batch = GRP(2);
    int aoff = offsets[2 * batch], boff = offsets[2 * batch + 1];
    y += batch * M * N;
    int acc[RM][RN];
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) acc[i][j] = 0;
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int l = tid; l < TK * TM; l += LX * LY) {
            int kk = l % TK, mm = l / TK;
            int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? load_q8(a, aoff + m * sam + k * sak, asgn) - za : 0;
        }
        for (int l = tid; l < TK * TN; l += LX * LY) {
            int nn = l % TN, kk = l / TN;
            int nc = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (nc < N && k < K) ? load_q8(b, boff + k * sbk + nc * sbn, bsgn) - zb[nc] : 0;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TK; ++kk) {
            int av[RM], bv[RN];
            for (int i = 0; i < RM; ++i) av[i] = As[kk][ty + i * LY];
            for (int j = 0; j < RN; ++j) bv[j] = Bs[kk][tx + j * LX];
            for (int i = 0; i < RM; ++i)
                for (int j = 0; j < RN; ++j) acc[i][j] += av[i] * bv[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < RM; ++i) {
        int m = m0 + ty + i * LY;
        if (m >= M) continue;
        for (int j = 0; j < RN; ++j) {
            int nc = n0 + tx + j * LX;
            if (nc >= N) continue;
            int v = acc[i][j];
            if (has_c) v += c[m * scm + nc * scn];
            y[m * N + nc] = requant_q8(v, mult[nc], zy, lo, hi);
        }
    }
}

/* the same product for few rows (M <= 4): one output per work item, a plain dot product.
 * global (ceil(N / 64) * 64, M, batch), local (64, 1, 1) */
__kernel void qmatvec(__global const u8* a, int asgn, int za,
                      __global const u8* b, int bsgn, __global const int* zb,
                      __global const int* offsets, int M, int N, int K,
                      int sam, int sak, int sbk, int sbn,
                      __global const int* c, int has_c, int scm, int scn,
                      __global const float* mult, float zy, float lo, float hi, __global u8* y)
{
    int nc = GID(0), m = GID(1), batch = GID(2);
    if (nc >= N || m >= M) return;
    int aoff = offsets[2 * batch] + m * sam, boff = offsets[2 * batch + 1] + nc * sbn;
    int zc = zb[nc], acc = 0;
    for (int k = 0; k < K; ++k) acc += (load_q8(a, aoff + k * sak, asgn) - za) * (load_q8(b, boff + k * sbk, bsgn) - zc);
    if (has_c) acc += c[m * scm + nc * scn];
    y[batch * M * N + m * N + nc] = requant_q8(acc, mult[nc], zy, lo, hi);
}

/* shifted signed byte of an int8/uint8 value */
DEVFN int shift_q8(int v, int sgn)
{
    return sgn ? v : v - 128;
}

/* Pack rows of a (batched) int8/uint8 matrix: element (r, k) of batch z at
 * src[z * sbatch + r * srow + k * sk]. dst[(z * rows + r) * K4 + word], sums[z * rows + r].
 * global (PACK_LOCAL * rows, batch), local (PACK_LOCAL, 1) */
__kernel void pack_rows_q8(__global const u8* src, int sgn, __global int* dst, __global int* sums,
                           int rows, int K, int K4, int srow, int sk, int sbatch)
{
    __local int part[PACK_LOCAL];
    int lid = LID(0), r = GRP(0), z = GRP(1);
    int base = z * sbatch + r * srow;
    int sum = 0;
    for (int word = lid; word < K4; word += PACK_LOCAL) {
        int packed = 0;
        for (int j = 0; j < 4; ++j) {
            int k = word * 4 + j;
            int v = k < K ? shift_q8(load_q8(src, base + k * sk, sgn), sgn) : 0;
            sum += v;
            packed |= (v & 0xff) << (8 * j);
        }
        dst[(z * rows + r) * K4 + word] = packed;
    }
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = PACK_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) sums[z * rows + r] = part[0];
}

/* Pack the convolution windows of image img, group g (z = img * group + g) as rows p of length
 * K = Cg * kh * kw; positions in the padding hold zx' = shift(zx).
 * global (PACK_LOCAL * Ho * Wo, N * group), local (PACK_LOCAL, 1) */
__kernel void pack_patches_q8(__global const u8* x, int sgn, int zx, __global int* dst, __global int* sums,
                              int K4, int C, int H, int W, int Ho, int Wo, int kh, int kw,
                              int sh, int sw, int dh, int dw, int pt, int pl, int group)
{
    __local int part[PACK_LOCAL];
    int lid = LID(0), p = GRP(0), z = GRP(1);
    int img = z / group, g = z % group;
    int Cg = C / group, khw = kh * kw, K = Cg * khw, P = Ho * Wo;
    int xbase = (img * C + g * Cg) * H * W;
    int oy = p / Wo, ox = p - (p / Wo) * Wo;
    int pad = shift_q8(zx, sgn);
    int sum = 0;
    for (int word = lid; word < K4; word += PACK_LOCAL) {
        int packed = 0;
        for (int j = 0; j < 4; ++j) {
            int k = word * 4 + j;
            int v = 0;
            if (k < K) {
                int c = k / khw, r = k - c * khw;
                int a = r / kw, b = r - a * kw;
                int iy = oy * sh - pt + a * dh, ix = ox * sw - pl + b * dw;
                v = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                        ? shift_q8(load_q8(x, xbase + (c * H + iy) * W + ix, sgn), sgn) : pad;
            }
            sum += v;
            packed |= (v & 0xff) << (8 * j);
        }
        dst[(z * P + p) * K4 + word] = packed;
    }
    part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = PACK_LOCAL / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) sums[z * P + p] = part[0];
}

/* raw[i][j] = sum of DOT4 over K4 words of rows (r0 + ty + i * LY) of A and (c0 + tx + j * LX) of B */
#define PACKED_PRODUCT(A, B, R, CN, K4)                                                    \
    __local int As[TK][TM + 1];                                                            \
    __local int Bs[TK][TN + 1];                                                            \
    int tx = LID(0), ty = LID(1), tid = ty * LX + tx;                                      \
    int c0 = GRP(0) * TN, r0 = GRP(1) * TM;                                                \
    int raw[RM][RN];                                                                       \
    for (int i = 0; i < RM; ++i)                                                           \
        for (int j = 0; j < RN; ++j) raw[i][j] = 0;                                        \
    for (int k0 = 0; k0 < K4; k0 += TK) {                                                  \
        for (int l = tid; l < TK * TM; l += LX * LY) {                                     \
            int kk = l % TK, rr = l / TK;                                                  \
            int r = r0 + rr, k = k0 + kk;                                                  \
            As[kk][rr] = (r < R && k < K4) ? A[r * K4 + k] : 0;                            \
        }                                                                                  \
        for (int l = tid; l < TK * TN; l += LX * LY) {                                     \
            int kk = l % TK, cc = l / TK;                                                  \
            int cl = c0 + cc, k = k0 + kk;                                                 \
            Bs[kk][cc] = (cl < CN && k < K4) ? B[cl * K4 + k] : 0;                         \
        }                                                                                  \
        barrier(CLK_LOCAL_MEM_FENCE);                                                      \
        for (int kk = 0; kk < TK; ++kk) {                                                  \
            int av[RM], bv[RN];                                                            \
            for (int i = 0; i < RM; ++i) av[i] = As[kk][ty + i * LY];                      \
            for (int j = 0; j < RN; ++j) bv[j] = Bs[kk][tx + j * LX];                      \
            for (int i = 0; i < RM; ++i)                                                   \
                for (int j = 0; j < RN; ++j) raw[i][j] = DOT4(raw[i][j], av[i], bv[j]);    \
        }                                                                                  \
        barrier(CLK_LOCAL_MEM_FENCE);                                                      \
    }

/* Convolution: weights on the A side. A = packed weights [group][Mg][K4] with row sums wsum and
 * shifted zero points zw per output channel; B = packed patches [N * group][P][K4] with sums bsum.
 * global (ceil(P / TN) * LX, ceil(Mg / TM) * LY, N * group), local (LX, LY, 1); y is [N][M][P]. */
__kernel void qconv_packed(__global const int* wpk, __global const int* wsum, __global const int* zw,
                           __global const int* xpk, __global const int* xsum, int zx,
                           int Mg, int P, int K4, int K, int group,
                           __global const int* bias, int has_bias, __global const float* mult,
                           float zy, float lo, float hi, __global u8* y)
{
    int z = GRP(2), g = z % group;
    __global const int* A = wpk + g * Mg * K4;
    __global const int* B = xpk + z * P * K4;
    PACKED_PRODUCT(A, B, Mg, P, K4)
    for (int i = 0; i < RM; ++i) {
        int r = r0 + ty + i * LY;
        if (r >= Mg) continue;
        int ch = g * Mg + r;
        int zr = zw[ch], rs = wsum[ch];
        int b0 = has_bias ? bias[ch] : 0;
        float m = mult[ch];
        for (int j = 0; j < RN; ++j) {
            int p = c0 + tx + j * LX;
            if (p >= P) continue;
            int acc = raw[i][j] - zx * rs - zr * xsum[z * P + p] + K * zr * zx + b0;
            y[(z * Mg + r) * P + p] = requant_q8(acc, m, zy, lo, hi);
        }
    }
}

/* Matrix product with weights on the B side: A = packed activations [batch][R][K4] with sums
 * asum and shifted zero point za; B = packed weights [N][K4] with column sums wsum and shifted
 * zero points zw per column. Bias element (r, c) at c[r * scm + c * scn].
 * global (ceil(N / TN) * LX, ceil(R / TM) * LY, batch), local (LX, LY, 1); y is [batch][R][N]. */
__kernel void qgemm_packed(__global const int* apk, __global const int* asum, int za,
                           __global const int* wpk, __global const int* wsum, __global const int* zw,
                           int R, int N, int K4, int K,
                           __global const int* bias, int has_bias, int scm, int scn,
                           __global const float* mult, float zy, float lo, float hi, __global u8* y)
{
    int z = GRP(2);
    __global const int* A = apk + z * R * K4;
    PACKED_PRODUCT(A, wpk, R, N, K4)
    for (int i = 0; i < RM; ++i) {
        int r = r0 + ty + i * LY;
        if (r >= R) continue;
        int rs = asum[z * R + r];
        for (int j = 0; j < RN; ++j) {
            int nc = c0 + tx + j * LX;
            if (nc >= N) continue;
            int zc = zw[nc];
            int acc = raw[i][j] - zc * rs - za * wsum[nc] + K * za * zc;
            if (has_bias) acc += bias[r * scm + nc * scn];
            y[(z * R + r) * N + nc] = requant_q8(acc, mult[nc], zy, lo, hi);
        }
    }
}

/* Epilogue for a raw product computed elsewhere (cuBLAS int8 GEMM): raw is [batch][R][N] int32. */
__kernel void qgemm_epilogue(__global const int* raw, __global const int* asum, int za,
                             __global const int* wsum, __global const int* zw,
                             int R, int N, int K, __global const int* bias, int has_bias, int scm, int scn,
                             __global const float* mult, float zy, float lo, float hi, __global u8* y, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int nc = i % N, t = i / N;
    int r = t % R;
    int zc = zw[nc];
    int acc = raw[i] - zc * asum[t] - za * wsum[nc] + K * za * zc;
    if (has_bias) acc += bias[r * scm + nc * scn];
    y[i] = requant_q8(acc, mult[nc], zy, lo, hi);
}

/* Epilogue of a convolution whose raw product raw[M][P] (weights x patches, one image, one group)
 * was computed elsewhere (cuBLAS int8 GEMM). */
__kernel void qconv_epilogue(__global const int* raw, __global const int* wsum, __global const int* zw,
                             __global const int* xsum, int zx, int M, int P, int K,
                             __global const int* bias, int has_bias, __global const float* mult,
                             float zy, float lo, float hi, __global u8* y, int n)
{
    int i = GID(0);
    if (i >= n) return;
    int p = i % P, r = i / P;
    int zr = zw[r];
    int acc = raw[i] - zx * wsum[r] - zr * xsum[p] + K * zr * zx;
    if (has_bias) acc += bias[r];
    y[i] = requant_q8(acc, mult[r], zy, lo, hi);
}
