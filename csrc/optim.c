/* optim.c: global gradient norm, clipping by that norm, and the SGD, momentum and Adam updates.
 *
 * Design notes
 * 1. Squares are summed in double. For float32 gradients this cannot overflow (even 3.4e38^2
 *    times 2^60 values fits a double). For float64 a sum that overflows while every value is
 *    finite is redone scaled by the largest magnitude m, and the norm returned as m sqrt(r),
 *    so the norm of [1e200, 1e200] is 1.414e200, not inf. Norms of several blocks are combined
 *    the same way (fm_norm_combine). A NaN or infinite value gives a non-finite norm, which
 *    callers treat as an error and never apply.
 * 2. `omp simd reduction` lets the compiler vectorise the sum without -ffast-math; the order of
 *    the additions is then fixed by the build, not by the thread count.
 * 3. Clipping scales by tau / ||g|| only when ||g|| > tau, so all-zero gradients stay zero and a
 *    gradient already inside the ball is left bit-identical.
 * 4. Momentum and Adam read the clipped gradient as c g inside their single pass (the same step as
 *    clipping first) and update the state in place. Their thread split is by contiguous ranges,
 *    each element's arithmetic independent of the split, so results do not depend on nt.
 * 5. The single-row update skips the rows of W whose input a_i is 0: they would subtract
 *    r (0 dz_j) = +-0, which leaves every value as it is (only a -0 weight could turn into +0).
 *    On digits (about half the pixels 0, half the ReLUs off) this halves the update. The rows
 *    to update are listed first, without a branch per row: a test-and-skip per row was
 *    mispredicted about half the time on digits (~15 cycles each, some 0.7 us of a 3.1 us
 *    batch-1 step on Zen 4). The pass itself is fm_rank1_sub (gemm.h), on the instruction set
 *    of the products, which lists the rows a vector at a time (gemm_simd_t.h notes 4 and 5).
 * 6. The steps the engine runs (fm_*_step, fm_sgd_rank1) are plain passes with no reduction:
 *    a running max|p| in the same loop made every vector wait for the previous one's max
 *    (a loop-carried dependence), which cost more than the update itself on batch-1 steps.
 *    The engine bounds max|p| instead (engine.c note 7). The public fm_sgd_update and
 *    fm_opt_update, off the hot path, still return the maxima, by a second pass.
 * 7. The sum of squares keeps NORM_LANES = 16 partial sums (one running sum waited 4 cycles per add: the
 *    W3 network's 669706 gradients took 141 us, single-threaded, on Zen 4) over blocks whose
 *    length depends on n alone; threads take whole blocks and the block sums are added in
 *    order, so the norm is the same for any thread count. Figures in the engine's step, W3
 *    (784-512-512-10, batch 128, 2 threads): see bench/RESULTS.md. 32 or 64 partial sums
 *    were no faster (2.25 us for the digits network's 17226 values with 16, 32 and 64, one
 *    thread, AVX-512 clone): the conversions and multiplies bound the pass, not the adds.
 * 8. The baseline build is plain x86-64 (SSE2), which is all a memory-bound pass needs. The
 *    sum of squares and the momentum/Adam pass are compute-bound (a conversion and a multiply
 *    per value; a square root and a division), so GCC builds them once per ISA
 *    (target_clones: AVX-512, AVX2, baseline) and the loader picks one for the CPU. Adam's
 *    pass on the digits network (17226 values): 47.7 us with libm's sqrtf per value (before
 *    -fno-math-errno, setup.py), 17.2 us vectorised on SSE2, 11.9 us with the AVX-512 clone.
 *    The SGD passes are cloned too: small ones run from L1. (The single-row update, cloned
 *    here at first, went to the product's kernels: note 5.) With the branchless row list the
 *    digits epoch at batch 1 (W2b1, one thread, Zen 4) went from 6.13 to 4.33 ms (medians of
 *    3 runs of 4 s, the two builds alternating). -ffp-contract=off (setup.py) keeps every clone's
 *    rounding the same as the baseline's.
 * 9. With L2, the plain step adds (l2 / div) W to dW and needs ||W|| (the loss's L2 term) and
 *    ||dW|| after the addition (the global norm). Three passes did that: ||W|| on the
 *    threads, the addition on one thread while the others waited, ||dW|| on the threads.
 *    fm_l2_grad is one pass on the threads over the blocks of note 7: each block's addition,
 *    then the sums of squares of its W and dW from L1. Each sum has the bits the separate
 *    passes gave, and so has every weight of a fit. Random 60000 x 784, (512, 512), batch
 *    200, l2 1e-4, two threads, one process alternating the forms epoch by epoch (10 epochs
 *    of 20000 rows each, medians): Adam 0.463 -> 0.445 and 0.466 -> 0.434 s, SGD 0.431 ->
 *    0.409 s.
 * 10. The team of threads (engine.c note 11) added two blocks' gradient sums into grads in one
 *    pass, then ran the pass of note 9 over the result: four passes over each thread's part
 *    of the gradient. fm_add2_l2_sumsq does both in one (cloned, note 8), each value and each
 *    lane's sum of squares rounded as the two passes round them: the weights of fits with
 *    SGD, Nesterov with clipping and Adam, L2 on and off, float32 and float64, at batches 200
 *    and 171 hashed the same. Digits 64-128-64-10, batch 200, Nesterov and l2 1e-4, two
 *    threads, the forms alternating in one process (medians of 40-epoch fits): the team
 *    0.0513 -> 0.0511 s with 15 of 24 pairs faster (median ratio 1.017), the blocks in turn
 *    on one thread 0.0585 -> 0.0565 s (1.020). More than two blocks keep the separate passes:
 *    one function for any number of blocks (the block count a constant 2 where it is 2, the
 *    lanes written once for both L2 forms) gave the same bits but took 4.62 -> 5.01 us per
 *    call on 8640 values (two blocks, L2 on; 2.07 -> 2.32 without), one process calling both
 *    builds in turn, so the two-block pass stays as it is.
 */
#include <float.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "fastmlp.h"

/* Updates of at least this many values split over threads. Measured on the 2-core Zen 1 this
 * was written on, idle machine, float32 fm_sgd_update, medians of 300 interleaved calls (us,
 * one thread / two): 32768: 16.5 / 16.5 (below the cut-off: the same path); 65536: 31.4 /
 * 29.1; 131072: 61.0 / 58.6; 262144: 121 / 110; 1048576: 1042 / 727. The pass is bound by
 * memory, so a second thread gains under 10% until the vectors leave the caches; at 65536 it
 * breaks even, which keeps the threaded path in use (and tested) on mid-sized networks. */
#define FM_PAR_MIN 65536

/* Note 7: sums of squares are taken over blocks of at least NORM_BLOCK values, at most
 * NORM_MAX_BLOCKS of them (their sums wait on the stack). */
#define NORM_BLOCK 4096
#define NORM_LANES 16
#define NORM_MAX_BLOCKS 512

/* sqrt(sum_i v_i^2) of n norms, scaled by the largest so that no square overflows. */
double fm_norm_combine(const double *v, ptrdiff_t n) {
    double m = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) return v[i] != v[i] ? v[i] : INFINITY;
        m = v[i] > m ? v[i] : m;
    }
    if (m == 0.0) return 0.0;
    double r = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) r += (v[i] / m) * (v[i] / m);
    return m * sqrt(r);
}

#define T float
#define S(name) name##_f32
#define SQRT sqrtf
#include "optim_t.h"
#undef T
#undef S
#undef SQRT
#define T double
#define S(name) name##_f64
#define SQRT sqrt
#include "optim_t.h"
#undef T
#undef S
#undef SQRT
