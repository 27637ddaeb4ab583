/* The backward pass of   y = act(max_pool_PxP(conv_KxK(x, w) + b))   given the pooling's argmax.
 *
 * Max pooling passes each output's gradient to one cell of its window, so of the convolution's
 * output gradient only one value in P*P is non-zero (fewer still after ReLU). torch fills that
 * sparse map in full, then runs oneDNN's dense backward convolutions over it: P*P times the
 * arithmetic needed. Here every non-zero gradient is pushed straight to the K*K input pixels and
 * weights it came from: the input gradient and the weight gradient for a quarter of the work
 * (2x2 pooling), and no full-size gradient map at all. For the article's CNN this replaces the
 * largest part of a CPU training step (conv2's backward pass and pool2's).
 *
 * Compile-time constants: -DK -DCIN -DCO -DP -DH -DW (H, W: the convolution's input, padding
 * included). NHWC float32, contiguous:
 *     x (B, H, W, CIN)   wt (K, K, CO, CIN): the weights, input channels last
 *     y, gy (B, HO, WO, CO): the block's output and its gradient
 *     won (B, HO, WO, CO) int64: torch's max-pooling indices (row * WC + column in the conv output)
 *     dx (B, H, W, CIN) or NULL: the input gradient, written in full
 *     parts (threads, K * K * CO * CIN + CO), zeroed by the caller: each thread's dw (K, K, CO, CIN)
 *     then db (CO), summed by the caller in thread order (repeatable for a given thread count).
 * Returns 0, or 1 if a thread could not allocate its work lists (the gradients are then wrong).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define WC (W - K + 1)
#define HO ((H - K + 1) / P)
#define WO ((W - K + 1) / P)
#define NV (CIN / 8)
#if CIN % 8
#error "CIN must be a multiple of 8"
#endif

typedef float v8 __attribute__((vector_size(32), aligned(4)));

int conv_pool_grad(const float *restrict x, const float *restrict wt, const float *restrict y,
                   const float *restrict gy, const int64_t *restrict won, float *restrict dx,
                   float *restrict parts, int batch, int relu, int threads) {
    int failed = 0;  /* out of memory: the caller raises rather than use partial gradients */
    #pragma omp parallel num_threads(threads)
    {
        int tid = 0, team = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        team = omp_get_num_threads();
#endif
        float *restrict dw = parts + (size_t)tid * (K * K * CO * CIN + CO), *restrict db = dw + K * K * CO * CIN;
        const int first = (int)((int64_t)batch * tid / team), last = (int)((int64_t)batch * (tid + 1) / team);
        int *pixel = malloc(sizeof(int) * HO * WO);       /* the windows that pass gradient: */
        float *grad = malloc(sizeof(float) * HO * WO);    /* where their winner is, and how much */
        if (!pixel || !grad) {
            #pragma omp atomic write
            failed = 1;
        }
        for (int n = first; n < last && pixel && grad; n++) {
            const float *xn = x + (size_t)n * H * W * CIN;
            float *dxn = dx ? dx + (size_t)n * H * W * CIN : NULL;
            if (dxn) memset(dxn, 0, sizeof(float) * H * W * CIN);
            /* One output channel at a time: first list the windows that pass gradient (ReLU
               blocks about half), then for each tap accumulate that channel's weight gradient in
               registers while adding to the input gradient (different pixels: no dependences). */
            for (int co = 0; co < CO; co++) {
                int live = 0;
                for (int ij = 0; ij < HO * WO; ij++) {
                    const size_t at = ((size_t)n * HO * WO + ij) * CO + co;
                    const float g = gy[at];
                    if (g == 0.0f || (relu && !(y[at] > 0.0f))) continue;
                    db[co] += g;
                    const int cell = (int)won[at];
                    pixel[live] = ((cell / WC) * W + cell % WC) * CIN;
                    grad[live++] = g;
                }
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        const int shift = (kh * W + kw) * CIN;
                        const size_t tap = ((size_t)(kh * K + kw) * CO + co) * CIN;
                        v8 acc[NV], wv[NV];
                        for (int q = 0; q < NV; q++) {
                            acc[q] = (v8){0};
                            wv[q] = *(const v8 *)(wt + tap + 8 * q);
                        }
                        for (int e = 0; e < live; e++) {
                            const float *xp = xn + pixel[e] + shift;
                            for (int q = 0; q < NV; q++) acc[q] += grad[e] * *(const v8 *)(xp + 8 * q);
                            if (dxn) {
                                float *dxp = dxn + pixel[e] + shift;
                                for (int q = 0; q < NV; q++) *(v8 *)(dxp + 8 * q) += grad[e] * wv[q];
                            }
                        }
                        for (int q = 0; q < NV; q++) *(v8 *)(dw + tap + 8 * q) += acc[q];
                    }
            }
        }
        free(pixel);
        free(grad);
    }
    return failed;
}
