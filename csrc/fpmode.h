/* fpmode.h: the floating-point mode a thread computes in.
 *
 * Design notes
 * 1. On x86 each thread's MXCSR holds its rounding mode, exception masks and two switches for
 *    numbers below the normal range: FTZ writes such results as zero, DAZ reads such inputs as
 *    zero. OpenMP's worker threads keep the MXCSR they had, so a caller running with FTZ (set by
 *    a library built with -ffast-math, or torch.set_flush_denormal) would get other bits on
 *    two threads than on one. Every parallel region therefore starts with each thread adopting
 *    the calling thread's mode (fm_fp_adopt(mode)) and ends by putting its own back: results
 *    depend on the caller's mode and never on the thread count.
 * 2. Training flushes (engine.c note 16): fm_train_steps runs with FTZ and DAZ set and restores
 *    the caller's mode before it returns. Intel cores take a microcode assist on a product or
 *    sum that falls below the normal range; a digits fit (64-128-64-10, Adam) whose gradients
 *    had shrunk to that range ran 25-30% slower a step in its late epochs.
 * 3. Only the mode bits move (DAZ, the masks, rounding, FTZ: 0xFFC0); the sticky exception
 *    flags (the low six bits) are left as they are. Elsewhere the functions do nothing.
 */
#ifndef FASTMLP_FPMODE_H
#define FASTMLP_FPMODE_H

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FM_FP_BITS 0xFFC0u
#define FM_FP_FLUSH 0x8040u /* FTZ | DAZ */

static inline unsigned fm_fp_mode(void) { return _mm_getcsr() & FM_FP_BITS; }

/* Switch the calling thread to `mode`; returns the mode it had. */
static inline unsigned fm_fp_adopt(unsigned mode) {
    unsigned c = _mm_getcsr();
    if ((c & FM_FP_BITS) != mode) _mm_setcsr((c & ~FM_FP_BITS) | mode);
    return c & FM_FP_BITS;
}
#else
#define FM_FP_FLUSH 0u
static inline unsigned fm_fp_mode(void) { return 0u; }
static inline unsigned fm_fp_adopt(unsigned mode) { (void)mode; return 0u; }
#endif

#endif
