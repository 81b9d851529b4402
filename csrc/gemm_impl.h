/* gemm_impl.h: private interface between gemm.c (argument checks, ISA dispatch, threads) and the
 * kernel files (gemm_avx2.c, gemm_avx512.c; the portable path lives in gemm.c itself). Not part
 * of the API.
 *
 * gemm.c validates the arguments of a call once, folds them into one fm_gemm_prob, picks the path
 * and the thread count from the shape alone, and then calls either the direct (unpacked,
 * single-thread) worker, or the packed worker once per thread inside its own
 * `#pragma omp parallel` (the parallel region stays in baseline-compiled code; see gemm.c).
 */
#ifndef FASTMLP_GEMM_IMPL_H
#define FASTMLP_GEMM_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* The AVX2 kernels exist where GCC's x86 intrinsics and __builtin_cpu_supports do. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FM_GEMM_HAVE_AVX2 1
#else
#define FM_GEMM_HAVE_AVX2 0
#endif
/* The AVX-512 kernels need GCC 7 or later (the AVX512DQ 256-bit extract and insert intrinsics)
 * or clang. */
#if FM_GEMM_HAVE_AVX2 && (defined(__clang__) || __GNUC__ >= 7)
#define FM_GEMM_HAVE_AVX512 1
#else
#define FM_GEMM_HAVE_AVX512 0
#endif

/* The AMX kernels (gemm_amx.c) need GCC 11 or clang 12 (the tile intrinsics) and Linux (the
 * request for the tile state). */
#if FM_GEMM_HAVE_AVX512 && defined(__linux__) && defined(__x86_64__) && \
    (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define FM_GEMM_HAVE_AMX 1
#else
#define FM_GEMM_HAVE_AMX 0
#endif

/* One validated product. Sizes are > 0 except K, which may be 0 only for the portable worker
 * (gemm.c handles K = 0 itself). Pointers are typed by the caller's dtype. */
typedef struct {
    int trans_a, trans_b;
    ptrdiff_t M, N, K;
    const void *A;
    ptrdiff_t lda;
    const void *B;
    ptrdiff_t ldb;
    int beta;          /* 0: C is only written; 1: C += op(A) op(B) */
    void *C;
    ptrdiff_t ldc;
    int epi, act;      /* FM_EPI_* (NONE when the caller passed no epilogue), FM_ACT_* */
    const void *bias;  /* BIAS_ACT: N values or NULL */
    const void *h;     /* DACT: M x N, leading dimension ldh */
    ptrdiff_t ldh;
    char *work;        /* 64-byte aligned; FM_GEMM_SLOT_BYTES per thread, slot t for thread t */
    int *tiny;         /* a team's shared flag: the AMX path's tiny values (gemm_amx.c note 7);
                          NULL on one thread */
    uint64_t *take;    /* a team's chunks taken, FM_GEMM_RANGES counts (fm_gemm_take) */
    int bt;            /* NT on the direct path with op(B) transposed into the slot first,
                          chosen for the whole product (gemm.c note 9) */
} fm_gemm_prob;

/* Ranges of chunks a team's product hands out (gemm_simd_t.h note 7); threads from this id on
 * have no range of their own and only take from the others'. */
#define FM_GEMM_RANGES 64

/* The next chunk of n for thread tid of nth, or -1 when all are taken (gemm_simd_t.h note 7):
 * the chunks lie in min(nth, FM_GEMM_RANGES) contiguous ranges, one a thread; a thread takes
 * from the front of its own, then from the back of the others', so its chunks lie together
 * unless it ran out first. take[r] counts range r's chunks taken from its front (low 32 bits)
 * and from its back (high 32; C of 2^32 chunks of 32 or more elements would not fit in
 * memory): all zero at the start, so nothing is set up before the team starts. */
static inline ptrdiff_t fm_gemm_take(uint64_t *take, int tid, int nth, ptrdiff_t n) {
    int nr = nth < FM_GEMM_RANGES ? nth : FM_GEMM_RANGES;
    for (int v = 0; v < nr; v++) {
        int r = (tid + v) % nr, front = r == tid;
        ptrdiff_t s = n * r / nr, e = n * (r + 1) / nr;
        uint64_t w = __atomic_load_n(take + r, __ATOMIC_RELAXED);
        for (;;) {
            ptrdiff_t f = (ptrdiff_t)(w & 0xffffffffu), b = (ptrdiff_t)(w >> 32);
            if (s + f + b >= e) break;
            uint64_t nw = w + (front ? 1 : (uint64_t)1 << 32);
            if (__atomic_compare_exchange_n(take + r, &w, nw, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                return front ? s + f : e - 1 - b;
        }
    }
    return -1;
}

/* n rows of p from row i0 (A, C and the epilogue's h moved there), or n columns from column
 * j0 (B, C, the bias and h), as a product of their own; es: the element's bytes. The threads
 * of a direct product take blocks of rows (gemm.c note 8), the AMX path's chunks with tiny
 * values go to the AVX-512 kernels as either (gemm_amx.c note 2). */
static inline fm_gemm_prob fm_gemm_rows_of(const fm_gemm_prob *p, ptrdiff_t i0, ptrdiff_t n,
                                           size_t es) {
    fm_gemm_prob q = *p;
    q.A = (const char *)p->A + (p->trans_a ? (size_t)i0 : (size_t)i0 * (size_t)p->lda) * es;
    q.C = (char *)p->C + (size_t)i0 * (size_t)p->ldc * es;
    if (q.h) q.h = (const char *)p->h + (size_t)i0 * (size_t)p->ldh * es;
    q.M = n;
    return q;
}

static inline fm_gemm_prob fm_gemm_cols_of(const fm_gemm_prob *p, ptrdiff_t j0, ptrdiff_t n,
                                           size_t es) {
    fm_gemm_prob q = *p;
    q.B = (const char *)p->B + (p->trans_b ? (size_t)j0 * (size_t)p->ldb : (size_t)j0) * es;
    q.C = (char *)p->C + (size_t)j0 * es;
    if (q.bias) q.bias = (const char *)p->bias + (size_t)j0 * es;
    if (q.h) q.h = (const char *)p->h + (size_t)j0 * es;
    q.N = n;
    return q;
}

/* Scratch per thread: the packed A block and B panel of the SIMD paths (each kernel file checks
 * its blocking fits), the transposed op(B) tile of the portable path, or a direct NT product's
 * op(B) (gemm.c note 9). A multiple of 4 KiB so every slot starts page-aligned when the first
 * one does. */
#define FM_GEMM_SLOT_BYTES ((size_t)2048 * 1024)

/* Where a direct NT product's op(B) goes in the slot (gemm.c note 9): past the list of a
 * single row's nonzero k (gemm_simd_t.h note 4, K + VL entries). */
static inline size_t fm_gemm_bt_offset(ptrdiff_t K) {
    return ((size_t)(K + 16) * sizeof(int32_t) + 63) / 64 * 64;
}
/* Rows of W listed per pass of the rank-1 update (fm_rank1_sub; a stack array of ints). */
#define RANK1_CHUNK 256

/* AVX2 + FMA kernels (gemm_avx2.c). direct: one thread, no packing, trans_a = 0 or trans_b = 0
 * (not TT). packed: any transposes; thread tid of nth computes its own block of C. */
#if FM_GEMM_HAVE_AVX2
void fm_gemm_avx2_direct_f32(const fm_gemm_prob *p);
void fm_gemm_avx2_direct_f64(const fm_gemm_prob *p);
void fm_gemm_avx2_packed_f32(const fm_gemm_prob *p, int tid, int nth);
void fm_gemm_avx2_packed_f64(const fm_gemm_prob *p, int tid, int nth);
void fm_gemm_avx2_rank1_f32(float *W, const float *a, const float *dz, ptrdiff_t i0,
                            ptrdiff_t i1, ptrdiff_t O, float r);
void fm_gemm_avx2_rank1_f64(double *W, const double *a, const double *dz, ptrdiff_t i0,
                            ptrdiff_t i1, ptrdiff_t O, double r);
#endif

/* AVX-512 kernels (gemm_avx512.c): the same two paths on 512-bit vectors. */
#if FM_GEMM_HAVE_AVX512
void fm_gemm_avx512_direct_f32(const fm_gemm_prob *p);
void fm_gemm_avx512_direct_f64(const fm_gemm_prob *p);
void fm_gemm_avx512_packed_f32(const fm_gemm_prob *p, int tid, int nth);
void fm_gemm_avx512_packed_f64(const fm_gemm_prob *p, int tid, int nth);
void fm_gemm_avx512_rank1_f32(float *W, const float *a, const float *dz, ptrdiff_t i0,
                              ptrdiff_t i1, ptrdiff_t O, float r);
void fm_gemm_avx512_rank1_f64(double *W, const double *a, const double *dz, ptrdiff_t i0,
                              ptrdiff_t i1, ptrdiff_t O, double r);
#endif

/* AMX tiles (gemm_amx.c), float32 only: usable says whether this CPU and OS run them (it asks
 * Linux for the tile state); fits whether the operand packed whole and a chunk of the other fit
 * a slot (gemm_amx.c note 5). packed: trans_a = 0 or trans_b = 0, K > 0. */
#if FM_GEMM_HAVE_AMX
int fm_gemm_amx_usable(void);
int fm_gemm_amx_fits(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K);
void fm_gemm_amx_packed_f32(const fm_gemm_prob *p, int tid, int nth);
#endif

#endif
