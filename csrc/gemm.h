/* gemm.h: the matrix product every dense layer runs on, with a fused epilogue.
 *
 * All matrices are row-major: element (i, j) of a matrix with leading dimension ld is p[i*ld + j].
 *
 *   C (M x N) = beta * C + op(A) (M x K) * op(B) (K x N),   then the epilogue on each element.
 *
 *   trans_a = 0: A is stored M x K (lda >= K);   trans_a = 1: A is stored K x M, op(A) = A^T.
 *   trans_b = 0: B is stored K x N (ldb >= N);   trans_b = 1: B is stored N x K, op(B) = B^T.
 *   beta is 0 or 1. With beta = 0, C is never read (it may hold NaN from np.empty).
 *   K = 0 is legal: the product is zero. M = 0 or N = 0: nothing is written.
 *
 * The three uses in training (W has shape fan_in x fan_out):
 *   forward   Z = A_in W            trans_a 0, trans_b 0, epilogue BIAS_ACT
 *   weights   dW = A_in^T dZ        trans_a 1, trans_b 0, no epilogue
 *   input     dA_in = dZ W^T        trans_a 0, trans_b 1, epilogue DACT with H = A_in
 *
 * Epilogue (applied exactly once per element, after the whole K sum):
 *   FM_EPI_NONE      C[i,j] unchanged
 *   FM_EPI_BIAS_ACT  C[i,j] = act(C[i,j] + bias[j])           (bias may be NULL: no bias)
 *   FM_EPI_DACT      C[i,j] = C[i,j] * act'(H[i,j])           (act' from the output, act.h)
 *
 * work: scratch of at least fm_gemm_work_bytes(nthreads) bytes, allocated once by the caller
 * (the engine's workspace); the product itself never allocates. Any alignment of work is
 * accepted (the implementation aligns inside it). nthreads >= 1 is the most threads to use;
 * small products use one. Results are bitwise independent of nthreads. In NN and TN
 * products (the forward pass and dW) a row's result is bitwise independent of M too, except
 * on the "amx" ISA (gemm.c note 7); not in NT products (dA), whose path is chosen from
 * M N K (gemm.c note 2): a row alone (dot-product tiles) may differ in the last bits from the
 * same row in a larger product (one chain of FMAs per element). The engine takes one path
 * for a whole batch, so a team's blocks of rows have the bits of the whole.
 * Returns 0 on success, nonzero (FM_GEMM_EARG) on a bad argument (negative size, bad ld).
 */
#ifndef FASTMLP_GEMM_H
#define FASTMLP_GEMM_H

#include <stddef.h>

#include "fpmode.h"

enum { FM_EPI_NONE = 0, FM_EPI_BIAS_ACT = 1, FM_EPI_DACT = 2 };
enum { FM_GEMM_OK = 0, FM_GEMM_EARG = 1 };

typedef struct {
    int kind;          /* FM_EPI_* */
    int act;           /* FM_ACT_* (act.h) */
    const void *bias;  /* BIAS_ACT: N values of the GEMM's dtype, or NULL */
    const void *h;     /* DACT: M x N activation outputs of the GEMM's dtype */
    ptrdiff_t ldh;     /* DACT: leading dimension of h */
} fm_epilogue;

int fm_gemm_f32(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb,
                float beta, float *C, ptrdiff_t ldc, const fm_epilogue *epi,
                void *work, int nthreads);
int fm_gemm_f64(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                const double *A, ptrdiff_t lda, const double *B, ptrdiff_t ldb,
                double beta, double *C, ptrdiff_t ldc, const fm_epilogue *epi,
                void *work, int nthreads);

/* Products with M N K at least this run on fm_gemm's nthreads; smaller ones on one thread
 * (gemm.c note 2), except direct ones of at least FM_GEMM_DIRECT_PAR_MIN, split into blocks
 * of at least FM_GEMM_DIRECT_PAR_ROWS rows (gemm.c note 8). */
#define FM_GEMM_PAR_MIN ((double)(1 << 21))
#define FM_GEMM_DIRECT_PAR_MIN ((double)(1 << 19))
#define FM_GEMM_DIRECT_PAR_ROWS 16

/* `rows` rows of a product of M rows (rows <= M): A (op(A)'s rows), C and the epilogue's h
 * start at the block's first row. On the calling thread, with scratch slot `slot` of work (so
 * work must hold fm_gemm_work_bytes(slot + 1)). The path is the one the M-row product takes,
 * so every element gets the bits fm_gemm gives it there. For threads that already run
 * together and split a step's rows among themselves (engine.c). trans_a = 0 only in use. */
int fm_gemm_rows_f32(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t rows, ptrdiff_t N,
                     ptrdiff_t K, const float *A, ptrdiff_t lda, const float *B, ptrdiff_t ldb,
                     float beta, float *C, ptrdiff_t ldc, const fm_epilogue *epi, void *work,
                     int slot);
int fm_gemm_rows_f64(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t rows, ptrdiff_t N,
                     ptrdiff_t K, const double *A, ptrdiff_t lda, const double *B,
                     ptrdiff_t ldb, double beta, double *C, ptrdiff_t ldc,
                     const fm_epilogue *epi, void *work, int slot);

/* Rows i0 <= i < i1 of W (I x O, leading dimension O) -= r (a dz^T): each element becomes
 * w - r (a_i dz_j), rounded in that order (what forming g = a_i dz_j and then w - r g gives);
 * a row whose a_i is 0 is left alone (it would only subtract +-0). The update of a single-row
 * SGD step, on the instruction set the products use. One thread; callers split the rows. */
void fm_rank1_sub_f32(float *W, const float *a, const float *dz, ptrdiff_t i0, ptrdiff_t i1,
                      ptrdiff_t O, float r);
void fm_rank1_sub_f64(double *W, const double *a, const double *dz, ptrdiff_t i0,
                      ptrdiff_t i1, ptrdiff_t O, double r);

/* Bytes of scratch one call needs at most, for any shape, with up to nthreads threads. */
size_t fm_gemm_work_bytes(int nthreads);
/* Scratch slot `slot` of work (fm_gemm_work_bytes(slot + 1) bytes): the scratch of a
 * one-thread call that runs beside others on the same work. */
void *fm_gemm_slot(void *work, int slot);

/* The instruction set the kernels run on: "amx" (AVX-512, and AMX tiles for large float32
 * products), "avx512", "avx2", or "portable". Chosen once, on the first call of
 * fm_gemm_init(); FASTMLP_ISA=portable|avx2|avx512|amx in the environment overrides
 * (a request the CPU cannot run falls back to the best it can). */
void fm_gemm_init(void);
const char *fm_gemm_isa(void);
/* Force an ISA by name at run time (tests run every path on one machine); returns 0 if taken,
 * nonzero if the CPU cannot run it (then nothing changes). */
int fm_gemm_set_isa(const char *name);

#endif
