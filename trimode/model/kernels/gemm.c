/* y[M, N] = x[M, K] @ W[N, K]^T (+ bias), float32, for CPU inference at small M.
 *
 * W is packed as [ceil(N / 32)][K][32]: each panel of 32 output columns is one contiguous stream,
 * read once from memory and reused for every row of x. A tile keeps up to MT rows x 32 columns of
 * accumulators in registers (2 x MT vectors of 16 floats: 24 of the 32 AVX-512 registers), so
 * for M <= MT the weights are read exactly once, which is what bounds a forward over a few tokens.
 *
 * Every output element is one sequential sum over k = 0..K-1 (a fused multiply-add per step),
 * whatever M, the tile or the thread: a row's result is bitwise the same alone or in a batch.
 * No -ffast-math: the order of the sum is the one written here.
 */
#include <stddef.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));

#define MT 12
#define NW 32

static inline __attribute__((always_inline)) void tile(const float *x, int mt, int K, const float *w,
                                                      float *y, int N, int ncols, const float *bias)
{
    v16 a0[MT], a1[MT];
    for (int r = 0; r < mt; r++) {
        a0[r] = (v16){0};
        a1[r] = (v16){0};
    }
    for (int k = 0; k < K; k++) {
        v16 w0 = *(const v16 *)(w + (size_t)k * NW);
        v16 w1 = *(const v16 *)(w + (size_t)k * NW + 16);
        for (int r = 0; r < mt; r++) {
            float s = x[(size_t)r * K + k];
            a0[r] += s * w0;
            a1[r] += s * w1;
        }
    }
    for (int r = 0; r < mt; r++) {
        float out[NW];
        *(v16 *)out = a0[r];
        *(v16 *)(out + 16) = a1[r];
        float *yr = y + (size_t)r * N;
        if (bias)
            for (int c = 0; c < ncols; c++) yr[c] = out[c] + bias[c];
        else
            for (int c = 0; c < ncols; c++) yr[c] = out[c];
    }
}

/* One specialised copy of the tile per row count, so the accumulators stay in registers. */
#define ROWS(n) case n: tile(xr, n, K, w, yr, N, ncols, b); break;

int trimode_gemm_panel_width(void) { return NW; }

void trimode_gemm(const float *x, int M, int K, const float *packed, int N, float *y, const float *bias,
                  int nthreads)
{
    int panels = (N + NW - 1) / NW;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int p = 0; p < panels; p++) {
        const float *w = packed + (size_t)p * K * NW;
        int ncols = N - p * NW < NW ? N - p * NW : NW;
        const float *b = bias ? bias + p * NW : 0;
        for (int m0 = 0; m0 < M; m0 += MT) {
            int mt = M - m0 < MT ? M - m0 : MT;
            const float *xr = x + (size_t)m0 * K;
            float *yr = y + (size_t)m0 * N + (size_t)p * NW;
            switch (mt) { ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8) ROWS(9) ROWS(10) ROWS(11) ROWS(12) }
        }
    }
}
