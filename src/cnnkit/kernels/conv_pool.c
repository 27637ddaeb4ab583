/* The first block of a small convnet on a CPU, in one pass over the images:
 *
 *     y = act(max_pool_PxP(conv_KxK(x, w) + b))        stride-1 'valid' convolution, stride-P pooling
 *
 * and its weight and bias gradients. Why: with one or a few input channels, oneDNN's convolution
 * is memory-bound (it writes a (B, H-K+1, W-K+1, CO) map that pooling reads back and shrinks
 * four-fold, and the backward pass zero-fills and scatters into a map of the same size); here
 * each pooling window's P*P convolution outputs live in registers, and only the pooled output
 * and a byte per output (which window cell won) reach memory. For the article's CNN this is a
 * third of a CPU training step.
 *
 * Shapes are compile-time constants (-DK=3 -DCIN=1 -DCO=32 -DP=2 -DH=28 -DW=28), so every loop
 * has a constant trip count and unrolls; cnnkit/kernels/build.py compiles one library per shape.
 * Tensors are NHWC float32, contiguous:
 *     x (B, H, W, CIN)   w (K, K, CIN, CO)   b (CO)   y (B, HO, WO, CO)   idx (B, HO, WO, CO) uint8
 * Semantics follow torch: the first maximum of a window wins (row-major order) and a NaN always
 * wins; ReLU passes NaN through; its gradient is zero where y <= 0 or y is NaN.
 */
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define HO ((H - K + 1) / P)
#define WO ((W - K + 1) / P)
#define G (P * P)                          /* cells in a pooling window */
#define T (K * K * CIN)                    /* taps of one filter */
#define OB (CO % 16 == 0 ? 16 : 8)         /* output channels kept in registers at a time */
#define NV (OB / 8)                        /* 8-float vectors per block */
#if CO % 8 || G > 255
#error "CO must be a multiple of 8 and P*P below 256"
#endif

/* GCC/Clang vector extensions: AVX on x86-64, NEON on arm64, plain loops elsewhere. */
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));
typedef uint8_t v8u8 __attribute__((vector_size(8), aligned(1)));

/* The input pixel under tap (kh, kw, c) of window cell g of pooled output (i, j). */
#define PIXEL(xn, i, j, g, kh, kw, c) \
    (xn)[((P * (i) + (g) / P + (kh)) * W + P * (j) + (g) % P + (kw)) * CIN + (c)]

void conv_pool_forward(const float *restrict x, const float *restrict w, const float *restrict b,
                       float *restrict y, uint8_t *restrict idx, int batch, int relu, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < batch; n++) {
        const float *xn = x + (size_t)n * H * W * CIN;
        for (int i = 0; i < HO; i++)
            for (int j = 0; j < WO; j++) {
                const size_t at = (((size_t)n * HO + i) * WO + j) * CO;
                for (int ob = 0; ob < CO; ob += OB) {
                    v8 acc[G][NV];  /* the convolution at each cell of the window: in registers */
                    for (int g = 0; g < G; g++)
                        for (int q = 0; q < NV; q++) acc[g][q] = *(const v8 *)(b + ob + 8 * q);
                    for (int kh = 0; kh < K; kh++)
                        for (int kw = 0; kw < K; kw++)
                            for (int c = 0; c < CIN; c++) {
                                const float *wp = w + ((kh * K + kw) * CIN + c) * CO + ob;
                                v8 wv[NV];
                                for (int q = 0; q < NV; q++) wv[q] = *(const v8 *)(wp + 8 * q);
                                for (int g = 0; g < G; g++) {
                                    const float v = PIXEL(xn, i, j, g, kh, kw, c);
                                    for (int q = 0; q < NV; q++) acc[g][q] += v * wv[q];
                                }
                            }
                    for (int q = 0; q < NV; q++) {
                        /* the window's maximum and which cell holds it, without branches */
                        v8 best = acc[0][q];
                        v8i arg = {0};
                        for (int g = 1; g < G; g++) {
                            const v8i take = (acc[g][q] > best) | (acc[g][q] != acc[g][q]);
                            best = (v8)((take & (v8i)acc[g][q]) | (~take & (v8i)best));
                            arg = (take & g) | (~take & arg);
                        }
                        if (relu) best = (v8)((v8i)best & ((best > 0.0f) | (best != best)));
                        *(v8 *)(y + at + ob + 8 * q) = best;
                        *(v8u8 *)(idx + at + ob + 8 * q) = __builtin_convertvector(arg, v8u8);
                    }
                }
            }
    }
}

/* gy (B, HO, WO, CO): the gradient of the block's output. parts (threads, T * CO + CO), zeroed by
 * the caller: each thread adds its share of the batch's dw (K, K, CIN, CO) then db (CO) to its
 * row; the caller sums the rows in order, so a run is bit-for-bit repeatable with the same
 * thread count. */
void conv_pool_backward(const float *restrict x, const float *restrict y, const float *restrict gy,
                        const uint8_t *restrict idx, float *restrict parts, int batch, int relu,
                        int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int tid = 0, team = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        team = omp_get_num_threads();
#endif
        float *restrict dw = parts + (size_t)tid * (T * CO + CO), *restrict db = dw + T * CO;
        const int first = (int)((int64_t)batch * tid / team), last = (int)((int64_t)batch * (tid + 1) / team);
        for (int n = first; n < last; n++) {
            const float *xn = x + (size_t)n * H * W * CIN;
            for (int i = 0; i < HO; i++)
                for (int j = 0; j < WO; j++) {
                    const size_t at = (((size_t)n * HO + i) * WO + j) * CO;
                    for (int ob = 0; ob < CO; ob += OB) {
                        v8 gm[G][NV];  /* the gradient each window cell receives: zero but at the winner */
                        for (int q = 0; q < NV; q++) {
                            const size_t o = at + ob + 8 * q;
                            v8 ge = *(const v8 *)(gy + o);
                            if (relu) ge = (v8)((v8i)ge & (*(const v8 *)(y + o) > 0.0f));
                            *(v8 *)(db + ob + 8 * q) += ge;
                            const v8i won = __builtin_convertvector(*(const v8u8 *)(idx + o), v8i);
                            for (int g = 0; g < G; g++) gm[g][q] = (v8)((v8i)ge & (won == g));
                        }
                        for (int kh = 0; kh < K; kh++)
                            for (int kw = 0; kw < K; kw++)
                                for (int c = 0; c < CIN; c++) {
                                    float *dp = dw + ((kh * K + kw) * CIN + c) * CO + ob;
                                    v8 d[NV];
                                    for (int q = 0; q < NV; q++) d[q] = *(v8 *)(dp + 8 * q);
                                    for (int g = 0; g < G; g++) {
                                        const float v = PIXEL(xn, i, j, g, kh, kw, c);
                                        for (int q = 0; q < NV; q++) d[q] += v * gm[g][q];
                                    }
                                    for (int q = 0; q < NV; q++) *(v8 *)(dp + 8 * q) = d[q];
                                }
                    }
                }
        }
    }
}
