/* float32 matrix products: Gemm (transposes through strides, alpha, beta * broadcast C) and
 * batched MatMul (per-batch operand offsets from the host). Tiled: a work-group of
 * (TN / RN) x (TM / RM) items computes a TM x TN block of Y, each item RM x RN outputs,
 * staging TK-deep slices of A and B in local memory. */

#define TM 32
#define TN 32
#define TK 16
#define RM 4
#define RN 4
#define LX (TN / RN)
#define LY (TM / RM)

/* global (ceil(N / TN) * LX, ceil(M / TM) * LY, batch), local (LX, LY, 1).
 * A element (m, k) at a[off_a + m * sam + k * sak]; B element (k, n) at b[off_b + k * sbk + n * sbn];
 * offsets = [off_a, off_b] per batch; Y is contiguous, M x N per batch;
 * C element (m, n) at c[m * scm + n * scn] (strides 0 where C broadcasts). */
__kernel void matmul_f32(__global const float* a, __global const float* b, __global float* y,
                         __global const int* offsets, int M, int N, int K,
                         int sam, int sak, int sbk, int sbn,
                         __global const float* c, int has_c, int scm, int scn, float alpha, float beta)
{
    __local float As[TK][TM + 1];
    __local float Bs[TK][TN + 1];
    int tx = LID(0), ty = LID(1), tid = ty * LX + tx;
    int n0 = GRP(0) * TN, m0 = GRP(1) * TM, batch = GRP(2);
    a += offsets[2 * batch];
    b += offsets[2 * batch + 1];
    y += batch * M * N;
    float acc[RM][RN];
    for (int i = 0; i < RM; ++i)
        for (int j = 0; j < RN; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TK) {
        for (int l = tid; l < TK * TM; l += LX * LY) {
            int kk = l % TK, mm = l / TK;
            int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? a[m * sam + k * sak] : 0.0f;
        }
        for (int l = tid; l < TK * TN; l += LX * LY) {
            int nn = l % TN, kk = l / TN;
            int nc = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (nc < N && k < K) ? b[k * sbk + nc * sbn] : 0.0f;
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
        if (m >= M) continue;
        for (int j = 0; j < RN; ++j) {
            int nc = n0 + tx + j * LX;
            if (nc >= N) continue;
            float v = alpha * acc[i][j];
            if (has_c) v += beta * c[m * scm + nc * scn];
            y[m * N + nc] = v;
        }
    }
}

/* y[m, n] for skinny products (M small): one work item per output, a plain dot product */
__kernel void matvec_f32(__global const float* a, __global const float* b, __global float* y,
                         __global const int* offsets, int M, int N, int K,
                         int sam, int sak, int sbk, int sbn,
                         __global const float* c, int has_c, int scm, int scn, float alpha, float beta)
{
    int nc = GID(0), m = GID(1), batch = GID(2);
    if (nc >= N || m >= M) return;
    a += offsets[2 * batch] + m * sam;
    b += offsets[2 * batch + 1] + nc * sbn;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += a[k * sak] * b[k * sbk];
    float v = alpha * acc;
    if (has_c) v += beta * c[m * scm + nc * scn];
    y[batch * M * N + m * N + nc] = v;
}
