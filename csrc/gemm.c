/* gemm.c: the matrix product behind every dense layer (contract in gemm.h): argument checks,
 * the choice of instruction set and path, and the threads. The kernels are in gemm_avx512.c
 * (AVX-512), gemm_avx2.c (AVX2 + FMA), both instances of gemm_simd_t.h, and
 * gemm_portable_t.h (plain C, the fallback).
 *
 * Design notes
 * 1. Dispatch: fm_gemm_init() picks the ISA once: AMX (note 7) when the CPU has the tiles and
 *    Linux grants them, else AVX-512 (F, VL, DQ, BW) when __builtin_cpu_supports says the CPU
 *    and the OS can run it, else AVX2 + FMA, else portable;
 *    FASTMLP_ISA=portable|avx2|avx512|amx lowers that choice, never raises it, and
 *    fm_gemm_set_isa() refuses an ISA the CPU cannot run. The products call fm_gemm_init()
 *    themselves, so the ISA is settled before the first product even if nobody called it.
 *    The two SIMD paths are one template (gemm_simd_t.h) on 256- or 512-bit vectors; the
 *    cut-offs below hold for both (on the Zen 4 where the AVX-512 path was written, it is
 *    0-11% faster than AVX2 on the training shapes and up to 1.36x on thin ones:
 *    gemm_avx512.c note 3).
 * 2. Paths, chosen from the shape alone (never from nthreads, so results stay bitwise equal
 *    for any thread count):
 *      direct  unpacked register tiles on the operands in place (no scratch but note 9's):
 *              NN and TN when M N K < DIRECT_MAX; NT when M N K <= NT_DIRECT_MAX (its
 *              dot-product tiles pay a horizontal sum per tile), or below DIRECT_MAX with
 *              op(B) transposed into the slot first (note 9);
 *              any non-TT product with M <= 4 (batch 1 to 4: B is streamed once, and packing
 *              it would double the memory traffic).
 *      packed  everything else (and all TT): packing and blocking, threads when
 *              M N K >= PAR_MIN.
 *      K = 0   the portable loop (C zeroed or kept, then the epilogue); no product to speed up.
 *    The direct path runs on threads too from DIRECT_PAR_MIN (note 8).
 * 3. Threads: the `#pragma omp parallel` stays here, in code compiled for the baseline ISA, and
 *    each thread calls the ISA worker with its id; the workers take chunks of C on the tile
 *    grid one at a time (gemm_simd_t.h notes 1 and 7), or, when a thread's scratch
 *    cannot hold the shared operand whole, a block each. K is never split.
 * 4. Cut-offs, measured with a standalone harness on the 2-core AMD EPYC (Zen 1) this was
 *    written on, interleaving the variants call by call (medians; the machine was shared and
 *    noisy, so the figures are indicative). Time per call in us, f32 (f64), 1 thread:
 *                          direct       packed        packed, 2 threads (quiet machine)
 *      NN 32x128x64       15.0 (29.8)  18.5 (37.7)
 *      NN 64x64x64        14.4 (28.8)  18.2 (35.3)   10.4 (25.2)
 *      NN 128x64x64       29.9 (59.3)  34.5 (66.2)   17.7 (48.5)
 *      NN 128x128x128    129  (222)   125  (246)     69  (133)
 *      NT 10x8x8           0.34 (0.25)  1.07 (0.39)
 *      NT 32x64x10         6.8  (6.8)   2.8  (4.9)
 *      NT 32x128x64       23.9 (41.9)  21.3 (41.5)
 *      NT 64x64x64        23.3 (41.6)  18.8 (35.5)   13.4 (25.0)
 *      NN 1x512x784       53.6 (184)  185   (398)
 *      NT 1x784x512       40.6 (167)  263   (483)
 *    So: direct beats packed on one thread for NN and TN up to M N K ~ 2^22; two threads beat
 *    both from 2^18 on, but only on an idle machine.
 *    PAR_MIN = 2^21, not 2^18: with the other core busy (a shared machine, or NumPy's threads)
 *    a step of eight ~2^18 products, each joining a team, ran 3-4x SLOWER on two threads
 *    (digits 64-128-64-10, batch 32: 0.040-0.048 s per epoch against 0.011-0.016 s on one,
 *    same run). From 2^21 (128^3: 125 -> 69 us) the work per join is large enough that a late
 *    thread costs a fraction of it. Below PAR_MIN every product runs on one thread, where NN
 *    and TN are fastest direct: DIRECT_MAX = PAR_MIN (direct below it, packed from it on).
 *    For NT the packed path wins from a few thousand M N K; NT_DIRECT_MAX = 2^13.
 *    Checked again on a 2-core Zen 4 (AVX-512 path) with PAR_MIN = 2^20, which threads the
 *    digits products of batch 200 (200x64x128 = 1.6M): idle, 2 threads 1.43 ms per epoch
 *    against 1.75 at 2^21 (1.22x); with a busy loop on the other core, 7.1-12.5 ms against
 *    1.77-1.86 (4-7x slower). One thread got slower too (1.89 against 1.76 ms: packed
 *    instead of direct). 2^21 stays.
 * 5. Thin products are turned around before dispatch (thin_form). A matrix-vector product
 *    (N = 1) ran one useful lane in 16 on the register tiles; it is computed as the single row
 *    C^T = b^T op(A)^T, which the direct path streams at full width (M' = 1). An outer
 *    product (K = 1) with trans_b = 1 becomes trans_b = 0 on the same memory. A bias and
 *    activation epilogue on a matrix-vector product is applied afterwards, over the M values,
 *    by act.h. Each rewrite needs the vectors contiguous (ld 1); otherwise the product goes as
 *    it came. The form depends on the shape and strides only, and a row's value does not
 *    depend on M (each element is one dot product, summed in an order set by K alone), so a
 *    row predicted alone gets the bits it gets in a batch. Single-thread us, f32, on the
 *    Zen 4, medians of 31 calls from Python (W4's output layer, 1024 -> 1, batch 256):
 *      NN 256x1x1024 (forward)      75.4 -> 37.0
 *      TN 1024x1x256 (dW)          128.4 -> 33.9
 *      NT 256x1024x1 (dA_in)        60.2 -> 19.4
 * 6. fm_gemm_rows computes a block of rows of a product on the calling thread (A, C and the
 *    epilogue's h given from the block's first row), for a team of threads that splits a
 *    step's rows among itself (engine.c note 11). The path is chosen from the whole
 *    product's row count, and every path sums an element in an order set by K alone,
 *    wherever its row lies (note 5), so each element gets the bits fm_gemm gives it in the
 *    whole product. Block `slot` uses scratch slot `slot`.
 * 7. AMX (gemm_amx.c): on a CPU with AMX tiles that Linux hands out, the ISA is "amx": float32
 *    products of M N K >= AMX_MIN (= PAR_MIN) on the packed path, not TT, whose operand
 *    packed whole fits a slot with one chunk of the other (fm_gemm_amx_fits), run on the
 *    tiles at float32 accuracy (gemm_amx.c note 1); everything else (float64, smaller
 *    products, the direct path, TT, rank-1) runs the AVX-512 kernels (vector_isa). The
 *    cut-off is M N K, as for threads, so the small networks whose steps a team splits
 *    (engine.c note 11) never meet the tiles. The price: a row's bits then depend on whether
 *    its batch's product reaches AMX_MIN (note 5's promise holds on the other ISAs only).
 *    The slot grew from 1.5 to 2 MiB so that W4's products (256 x 1024 op(A)) fit.
 *    Measured on a 2-core Intel Xeon (family 6 model 167 under KVM, AMX-BF16), epochs of
 *    builds or FASTMLP_ISA settings alternating (medians, seconds):
 *      W3 (784-512-512-10, batch 128) 1 thread   1.466 -> 1.130
 *      W3                             2 threads  0.84-0.92 -> 0.80-0.85
 *      W4 (256-1024-1024-1, batch 256) 2 threads 0.560 -> 0.420-0.449
 *    Products alone, one thread, us: NN 128x512x784 716 -> 564, TN 784x512x128 631 -> 469,
 *    NT 256x1024x1024 3882 -> 2543. Two threads gain less than one on W3: stores to lines
 *    the other core holds stall the tile loads (gemm_amx.c note 4). W3's update and norms
 *    passes had run 2x longer on two threads after AMX products: each thread's chunks had
 *    lain in stripes over the gradients, so the passes read half their lines from the other
 *    core; contiguous shares (gemm_amx.c note 5) made W3's epochs 0.863 -> 0.797 s.
 * 8. A direct product of M N K >= DIRECT_PAR_MIN (2^19) and at least 2 DIRECT_PAR_ROWS rows
 *    runs on nthreads threads (at most one per DIRECT_PAR_ROWS rows), a block of rows each,
 *    with the bits of one thread (each row is summed in an order set by K alone, note 5).
 *    These are the output layers of large networks (W3's 128x512 -> 10: forward 128x10x512
 *    and dW 512x10x128, 655K each), which otherwise ran on one thread while the other
 *    waited: W3 epochs on two threads 0.679 -> 0.648 s (builds alternating, 4 rounds of 3);
 *    W2 and W4 unchanged. From 2^19, not 2^18: at 2^18 W2 (batch 32, 32x64x128 products)
 *    went 1.5 -> 2.8 ms an epoch, a thread's block too small to pay for the meeting. The
 *    engine counts such products among those that use threads (engine.c note 12), so its
 *    timing of one thread against many covers them on a loaded machine.
 * 9. A mid-size NT product (M > 4, NT_DIRECT_MAX < M N K < DIRECT_MAX: the dA = dZ W^T of
 *    small networks) writes op(B) = B^T (K x N) into the thread's slot, 8 x 8 blocks
 *    transposed in registers for float32, and runs the NN row-vector tiles on it. The packed
 *    path it replaces transposed B the same way and packed A besides, for a 6 x 32 tile that
 *    gains nothing at these sizes. Each element is still one chain of FMAs in increasing k,
 *    so the bits are those of the packed path (11 shapes, float32 and float64, AVX2 and
 *    AVX-512, 1 to 3 threads) and of the NN product on a transposed copy of B. Products
 *    alone, float32, one thread, on a 2-core Intel Xeon (family 6 model 167), us: NT
 *    32x128x64 7.0 -> 5.5, NT 100x128x64 14.2 -> 11.9, NT 200x128x64 24.1 -> 20.6 (4 x 4
 *    blocks instead of 8 x 8: 6.1, 12.2, 21.4). Epochs, processes of the two builds
 *    alternating (6 pairs, medians), with 4 x 4 and then 8 x 8 blocks: W2 (batch 32, one
 *    thread) 1.47 -> 1.37 and 1.41 -> 1.28 ms (every pair faster), the digits estimator's
 *    fit (Adam, batch 200, two threads) 0.179 -> 0.169 and 0.169 -> 0.165 s (1.06x, 1.02x
 *    on the medians; 5 of 6 pairs faster in each run). The choice is made for the whole
 *    product, so a team's blocks of rows (note 6) take the path the whole batch takes. A
 *    float64 B^T that does not fit the slot beside the list of note 4 stays packed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "act.h"
#include "gemm.h"
#include "gemm_impl.h"

#define PAR_MIN FM_GEMM_PAR_MIN
#define DIRECT_MAX PAR_MIN
#define NT_DIRECT_MAX ((double)(1 << 13))
#define AMX_MIN PAR_MIN
#define DIRECT_PAR_MIN FM_GEMM_DIRECT_PAR_MIN
#define DIRECT_PAR_ROWS FM_GEMM_DIRECT_PAR_ROWS

/* ---- the portable kernels, once per dtype ---- */
#define T float
#define S(name) name##_f32
#include "gemm_portable_t.h"
#undef T
#undef S
#define T double
#define S(name) name##_f64
#include "gemm_portable_t.h"
#undef T
#undef S

/* ---- instruction-set dispatch (note 1) ---- */
enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AMX = 3, ISA_COUNT = 4 };
static const char *const isa_names[ISA_COUNT] = {"portable", "avx2", "avx512", "amx"};
static int isa_current = -1;  /* -1 until fm_gemm_init() or fm_gemm_set_isa() */

/* The ISA of the vector kernels: AMX's are AVX-512's, with the products amx_takes picks on
 * the tiles (note 7). */
static int vector_isa(void) { return isa_current == ISA_AMX ? ISA_AVX512 : isa_current; }

static int isa_best(void) {
#if FM_GEMM_HAVE_AVX2
    __builtin_cpu_init();
#if FM_GEMM_HAVE_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")) {
#if FM_GEMM_HAVE_AMX
        static int amx = -1;  /* asked of the CPU and the OS once (gemm_amx.c note 6) */
        if (amx < 0) amx = fm_gemm_amx_usable();
        if (amx) return ISA_AMX;
#endif
        return ISA_AVX512;
    }
#endif
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_PORTABLE;
}

static int isa_from_name(const char *name) {
    for (int i = 0; name && i < ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

void fm_gemm_init(void) {
    if (isa_current >= 0) return;
    int best = isa_best(), want = isa_from_name(getenv("FASTMLP_ISA"));
    isa_current = want >= 0 && want < best ? want : best;
}

const char *fm_gemm_isa(void) {
    fm_gemm_init();
    return isa_names[isa_current];
}

int fm_gemm_set_isa(const char *name) {
    int want = isa_from_name(name);
    if (want < 0 || want > isa_best()) return 1;
    isa_current = want;
    return 0;
}

/* Every thread gets one slot of the scratch; the first slot starts on a page (room for that
 * is the extra 4 KiB), so packed panels are page- and vector-aligned. */
void *fm_gemm_slot(void *work, int slot) {
    return (char *)work + (size_t)slot * FM_GEMM_SLOT_BYTES;
}

size_t fm_gemm_work_bytes(int nthreads) {
    /* several threads: one slot more, for the AMX path's shared operand (gemm_amx.c note 7) */
    return (nthreads > 1 ? (size_t)nthreads + 1 : 1) * FM_GEMM_SLOT_BYTES + 4096;
}

/* ---- checks and the shared driver ---- */

/* Fill *p from the arguments of a call; FM_GEMM_EARG if any is out of range (gemm.h). Leading
 * dimensions need only cover the stored rows; an empty operand's pointer is not looked at. */
static int make_prob(fm_gemm_prob *p, int ta, int tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                     const void *A, ptrdiff_t lda, const void *B, ptrdiff_t ldb, double beta,
                     void *C, ptrdiff_t ldc, const fm_epilogue *epi, void *work, int nthreads) {
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || M < 0 || N < 0 || K < 0)
        return FM_GEMM_EARG;
    if (lda < (ta ? M : K) || ldb < (tb ? K : N) || ldc < N) return FM_GEMM_EARG;
    if ((beta != 0 && beta != 1) || nthreads < 1 || !work) return FM_GEMM_EARG;
    int kind = epi ? epi->kind : FM_EPI_NONE, act = epi ? epi->act : FM_ACT_IDENTITY;
    if (kind < FM_EPI_NONE || kind > FM_EPI_DACT || act < 0 || act >= FM_ACT_COUNT)
        return FM_GEMM_EARG;
    if (M > 0 && N > 0) {
        if (!C || (K > 0 && (!A || !B))) return FM_GEMM_EARG;
        if (kind == FM_EPI_DACT && (!epi->h || epi->ldh < N)) return FM_GEMM_EARG;
    }
    char *w = (char *)work;
    fm_gemm_prob q = {ta, tb, M, N, K, A, lda, B, ldb, beta != 0, C, ldc, kind, act,
                      kind == FM_EPI_BIAS_ACT ? epi->bias : NULL,
                      kind == FM_EPI_DACT ? epi->h : NULL, kind == FM_EPI_DACT ? epi->ldh : 0,
                      w + (4096 - (size_t)((uintptr_t)w % 4096)) % 4096, NULL, NULL};
    *p = q;
    return FM_GEMM_OK;
}

typedef void (*worker_fn)(const fm_gemm_prob *p, int tid, int nth);
typedef void (*direct_fn)(const fm_gemm_prob *p);

/* Run worker on nt threads (note 3): each calls it with its own id; the team may be smaller
 * than nt (nested regions, thread limits), and the workers split by the actual size. */
static void run_threads(const fm_gemm_prob *p, worker_fn worker, int nt) {
#ifdef _OPENMP
    if (nt < 2) {  /* an if(0) region still enters libgomp: ~100 us per call seen in profiles */
        worker(p, 0, 1);
        return;
    }
    /* the AMX path's shared flag, and the chunks the team has taken (gemm_simd_t.h note 7) */
    _Alignas(64) int tiny = 0;
    _Alignas(64) uint64_t take[FM_GEMM_RANGES] = {0};
    fm_gemm_prob q = *p;
    q.tiny = &tiny;
    q.take = take;
    unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
    #pragma omp parallel num_threads(nt)
    {
        unsigned own = fm_fp_adopt(fpm);
        worker(&q, omp_get_thread_num(), omp_get_num_threads());
        fm_fp_adopt(own);
    }
#else
    (void)nt;
    worker(p, 0, 1);
#endif
}

/* Note 5: rewrite a thin product in place as an equal one the kernels run at full width.
 * Returns 1 when the caller must apply the bias and activation to the M values of C itself. */
static int thin_form(fm_gemm_prob *p) {
    if (p->K == 1 && p->trans_b && p->ldb == 1) {
        /* op(B) = B^T (1 x N) is B itself read as a row. */
        p->trans_b = 0;
        p->ldb = p->N;
        return 0;
    }
    /* M = 1 too: every row of a batch must get the bits it gets alone (note 5). */
    if (p->N != 1 || (!p->trans_b && p->ldb != 1) || p->ldc != 1) return 0;
    if (p->epi == FM_EPI_DACT && p->ldh != 1) return 0;
    /* C (M x 1) read as the row C^T (1 x M) = b^T (1 x K) op(A)^T, b = op(B) contiguous. */
    int post = p->epi == FM_EPI_BIAS_ACT;
    const void *b = p->B;
    p->B = p->A;
    p->ldb = p->lda;
    p->trans_b = !p->trans_a;  /* op(A)^T is A^T when A is stored M x K, A when K x M */
    p->A = b;
    p->lda = p->K;
    p->trans_a = 0;
    p->N = p->M;
    p->M = 1;
    p->ldc = p->N;
    if (p->epi == FM_EPI_DACT) p->ldh = p->N;
    if (post) p->epi = FM_EPI_NONE;
    return post;
}

/* The bias and activation of a matrix-vector product turned around by thin_form: C is the
 * contiguous row of n values. */
#define THIN_POST(T, ACT)                                                                  \
    do {                                                                                   \
        T *c_ = (T *)p.C, b_ = p.bias ? *(const T *)p.bias : (T)0;                         \
        for (ptrdiff_t i_ = 0; i_ < p.N; i_++) c_[i_] = ACT(p.act, c_[i_] + b_);         \
    } while (0)

/* Note 9: does a direct NT product transpose op(B) into the slot first? */
static int transposes_b(const fm_gemm_prob *p, double mnk, size_t es) {
    return !p->trans_a && p->trans_b && p->M > 4 && mnk > NT_DIRECT_MAX && mnk < DIRECT_MAX &&
           fm_gemm_bt_offset(p->K) + (size_t)p->N * (size_t)p->K * es <= FM_GEMM_SLOT_BYTES;
}

/* Note 2: does the direct path take this product (K > 0) as it stands? */
static int take_direct(const fm_gemm_prob *p, double mnk) {
    if (p->trans_a && p->trans_b) return 0;
    if (p->M <= 4) return 1;
    return p->trans_b ? mnk <= NT_DIRECT_MAX : mnk < DIRECT_MAX;
}

/* Note 2: the path of a product (after thin_form): 0 portable (K = 0), 1 direct, 2 packed;
 * sets p->bt for a direct NT product that transposes op(B) first (note 9). direct is NULL
 * for the portable ISA. */
static int choose_path(fm_gemm_prob *p, direct_fn direct, size_t es) {
    double mnk = (double)p->M * (double)p->N * (double)p->K;
    if (p->K == 0) return 0;
    p->bt = direct && transposes_b(p, mnk, es);
    return direct && (p->bt || take_direct(p, mnk)) ? 1 : 2;
}

/* Note 8: a direct product split into blocks of rows, one per thread, each in its own slot. */
static void run_direct(const fm_gemm_prob *p, direct_fn direct, int nt, size_t es) {
#ifdef _OPENMP
    /* at least DIRECT_PAR_ROWS rows a block: a block of one row would take the single-row
     * kernel, whose bits differ where it skips a zero a_k against an inf (new user #15) */
    ptrdiff_t most = p->M / DIRECT_PAR_ROWS;
    if (nt > most) nt = (int)most;
    if (nt >= 2 && (double)p->M * (double)p->N * (double)p->K >= DIRECT_PAR_MIN) {
        unsigned fpm = fm_fp_mode();  /* fpmode.h note 1 */
        #pragma omp parallel num_threads(nt)
        {
            unsigned own = fm_fp_adopt(fpm);
            int t = omp_get_thread_num(), q = omp_get_num_threads();
            ptrdiff_t i0 = p->M * t / q, i1 = p->M * (t + 1) / q;
            fm_gemm_prob r = fm_gemm_rows_of(p, i0, i1 - i0, es);
            r.work = (char *)fm_gemm_slot(p->work, t);
            direct(&r);
            fm_fp_adopt(own);
        }
        return;
    }
#endif
    (void)nt;
    (void)es;
    direct(p);
}

/* Run p on its path; packed products of at least PAR_MIN use up to nthreads threads, direct
 * ones of at least DIRECT_PAR_MIN too (note 8). */
static void run_path(const fm_gemm_prob *p, int path, int nthreads, direct_fn direct,
                     worker_fn packed, worker_fn portable, size_t es) {
    double mnk = (double)p->M * (double)p->N * (double)p->K;
    if (path == 0) portable(p, 0, 1);
    else if (path == 1) run_direct(p, direct, nthreads, es);
    else run_threads(p, packed ? packed : portable, mnk >= PAR_MIN ? nthreads : 1);
}

/* Note 7: does a float32 product (after thin_form, on the packed path) go to the AMX tiles? */
#if FM_GEMM_HAVE_AMX
static int amx_takes(const fm_gemm_prob *p) {
    double mnk = (double)p->M * (double)p->N * (double)p->K;
    return isa_current == ISA_AMX && !(p->trans_a && p->trans_b) && mnk >= AMX_MIN &&
           fm_gemm_amx_fits(p->M, p->N, p->K);
}
#define AMX_TAKES_f32(p) amx_takes(p)
#define AMX_PACKED_f32 fm_gemm_amx_packed_f32
#else
#define AMX_TAKES_f32(p) 0
#define AMX_PACKED_f32 NULL
#endif
#define AMX_TAKES_f64(p) 0
#define AMX_PACKED_f64 NULL

/* The entry points of gemm.h, once per dtype: checks, thin_form, the ISA's kernels, dispatch. */
#define KERNELS(ISA, NAME, SFX)                                                               \
    if (vector_isa() == ISA) {                                                                \
        direct = fm_gemm_##NAME##_direct_##SFX;                                               \
        packed = fm_gemm_##NAME##_packed_##SFX;                                               \
    }
#if FM_GEMM_HAVE_AVX512
#define KERNELS_AVX512(SFX) KERNELS(ISA_AVX512, avx512, SFX)
#else
#define KERNELS_AVX512(SFX)
#endif
#if FM_GEMM_HAVE_AVX2
#define KERNELS_AVX2(SFX) KERNELS(ISA_AVX2, avx2, SFX)
#else
#define KERNELS_AVX2(SFX)
#endif
#define GEMM_ENTRY(T, SFX)                                                                    \
    /* rows of the M-row product, on its path (note 6); fm_gemm is rows = M. */              \
    static int gemm_##SFX(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t rows, ptrdiff_t N, \
                          ptrdiff_t K, const T *A, ptrdiff_t lda, const T *B, ptrdiff_t ldb,  \
                          T beta, T *C, ptrdiff_t ldc, const fm_epilogue *epi, void *work,    \
                          int nthreads) {                                                     \
        fm_gemm_prob p;                                                                       \
        if (rows < 0 || rows > M ||                                                           \
            make_prob(&p, trans_a, trans_b, rows, N, K, A, lda, B, ldb, beta, C, ldc, epi,    \
                      work, nthreads))                                                        \
            return FM_GEMM_EARG;                                                              \
        if (rows == 0 || N == 0) return FM_GEMM_OK;                                           \
        fm_gemm_init();                                                                       \
        direct_fn direct = NULL; /* the portable ISA has no SIMD paths */                     \
        worker_fn packed = NULL;                                                              \
        KERNELS_AVX512(SFX)                                                                   \
        KERNELS_AVX2(SFX)                                                                     \
        fm_gemm_prob whole = p;                                                               \
        whole.M = M;                                                                          \
        if (K > 0) thin_form(&whole);                                                         \
        int path = choose_path(&whole, direct, sizeof(T));                                    \
        if (path == 2 && AMX_TAKES_##SFX(&whole)) packed = AMX_PACKED_##SFX;                  \
        int post = K > 0 && thin_form(&p);                                                    \
        p.bt = whole.bt;                                                                      \
        run_path(&p, path, nthreads, direct, packed, fm_gemm_portable_##SFX, sizeof(T));      \
        if (post) THIN_POST(T, fm_act_##SFX);                                                 \
        return FM_GEMM_OK;                                                                    \
    }                                                                                         \
    int fm_gemm_##SFX(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,        \
                      const T *A, ptrdiff_t lda, const T *B, ptrdiff_t ldb, T beta, T *C,     \
                      ptrdiff_t ldc, const fm_epilogue *epi, void *work, int nthreads) {      \
        return gemm_##SFX(trans_a, trans_b, M, M, N, K, A, lda, B, ldb, beta, C, ldc, epi,    \
                          work, nthreads);                                                    \
    }                                                                                         \
    int fm_gemm_rows_##SFX(int trans_a, int trans_b, ptrdiff_t M, ptrdiff_t rows,            \
                           ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t lda, const T *B,   \
                           ptrdiff_t ldb, T beta, T *C, ptrdiff_t ldc,                        \
                           const fm_epilogue *epi, void *work, int slot) {                    \
        if (slot < 0) return FM_GEMM_EARG;                                                    \
        return gemm_##SFX(trans_a, trans_b, M, rows, N, K, A, lda, B, ldb, beta, C, ldc, epi, \
                          fm_gemm_slot(work, slot), 1);                                       \
    }
GEMM_ENTRY(float, f32)
GEMM_ENTRY(double, f64)

/* The rank-1 update (gemm.h) on the current ISA. */
#define RANK1_ENTRY(T, SFX)                                                                   \
    void fm_rank1_sub_##SFX(T *W, const T *a, const T *dz, ptrdiff_t i0, ptrdiff_t i1,        \
                            ptrdiff_t O, T r) {                                               \
        fm_gemm_init();                                                                       \
        if (vector_isa() == ISA_AVX512) RANK1_AVX512(SFX)(W, a, dz, i0, i1, O, r);            \
        else if (vector_isa() == ISA_AVX2) RANK1_AVX2(SFX)(W, a, dz, i0, i1, O, r);           \
        else portable_rank1_##SFX(W, a, dz, i0, i1, O, r);                                    \
    }
#if FM_GEMM_HAVE_AVX512
#define RANK1_AVX512(SFX) fm_gemm_avx512_rank1_##SFX
#else
#define RANK1_AVX512(SFX) portable_rank1_##SFX
#endif
#if FM_GEMM_HAVE_AVX2
#define RANK1_AVX2(SFX) fm_gemm_avx2_rank1_##SFX
#else
#define RANK1_AVX2(SFX) portable_rank1_##SFX
#endif
RANK1_ENTRY(float, f32)
RANK1_ENTRY(double, f64)
