/* loss.c: the three losses, each value followed by its gradient, from the network's raw output.
 *
 * Design notes
 * 1. Cross-entropies are computed from the logits, never from a probability: log-sum-exp with
 *    the row maximum subtracted for softmax, and max(g,0) - g y + log1p(exp(-|g|)) for the
 *    sigmoid. Both are finite for every finite logit: logits [1000, 0, -1000] give losses
 *    0 / 1000 / 2000 for targets 0 / 1 / 2 with no overflow.
 * 2. The softmax loss is formed as log(s) - (g_y - m) with s = sum exp(g - m): each term is
 *    small and exact where it can be, so a float32 row of equal logits -200 gives ln 4 to
 *    float32 accuracy (m + log(s) - g_y would lose the digits of ln 4 against 200).
 * 3. Per-row sums (the losses, and softmax's sum of exponentials) are accumulated in double in
 *    both dtypes; the gradient is written in T. A new user found the float32 sum of
 *    exponentials in float: a row of 5000 logits, one 16.7 above the others, gave loss 0 and
 *    a label gradient of 0 for 2.79e-4 and -2.79e-4.
 * 4. squared follows the lecture: L = sum_k (g_k - y_k)^2 without the 1/2, so dL/dg = 2 (g - y).
 * 5. The float32 softmax spent most of its time in libm's expf, one call per logit: 100 rows
 *    of 10 classes (a digits block of a team step at batch 200) took 6.1 us, 8% of the step's
 *    products. It now takes the rows a block at a time: g - m for the block, one exp over the
 *    whole block in plain C that GCC vectorises per ISA (FM_CLONES), then each row's sum, log
 *    and scaling as before: 2.3 us (1000 rows: 59 -> 22 us; Xeon, one thread, from Python,
 *    call overhead taken off). The exp is Cephes expf's reduction and polynomial; with every
 *    operation rounded on its own it is within 0.98 ulp of exp in double for all 1.1e9 floats
 *    in [-87, 0], on the AVX-512 clone and the baseline alike (one harness, both builds), and
 *    gives the same bits on every clone. Below -87 its 2^n would leave the normal range, so a
 *    row with such an entry (a probability under 1.6e-38, or a NaN) is done again with expf.
 *    Fits of digits (128, 64), batch 200, 200 epochs, one process alternating the two forms
 *    (16 pairs, medians): SGD two threads 0.288 -> 0.271 s, one thread 0.298 -> 0.284, Adam
 *    two threads 0.291 -> 0.282 (1.04x each); W2's 20 epochs at batch 32, one thread, 1.06x.
 *    float64 keeps libm's exp for every row.
 * 6. scikit-learn reports the log loss of probabilities clipped to [eps, 1 - eps] of their
 *    dtype, so a row it predicts wrongly by more than -log(eps) (36.04 nats in float64) counts
 *    36.04. A new user's fit (inputs scaled by 1000, labels 10% flipped) had the same weights
 *    as scikit-learn's and a loss curve 504 / 293 / 218 against its 21.5 / 18.5 / 16.7, which
 *    would also change when tol and n_iter_no_change stop a fit. With clip > 0 each finite
 *    loss term (a softmax row's; each sigmoid output's, as scikit-learn's binary and
 *    multilabel losses clip each output) is held in [-log(1 - clip), -log(clip)]; the
 *    scikit-learn estimators pass their dtype's eps. The gradient is never clipped, and an
 *    infinite or NaN loss is left as it is, so such a step is still refused.
 */
#include <math.h>
#include <string.h>
#include "fastmlp.h"

/* Note 6: the range a clipped probability's loss keeps; lo > hi: no clipping. */
typedef struct {
    double lo, hi;
} fm_clip_range;

static fm_clip_range fm_clip_range_of(double clip) {
    fm_clip_range r = {1.0, 0.0};
    if (clip > 0.0) {
        r.lo = -log1p(-clip);
        r.hi = -log(clip);
    }
    return r;
}

/* A finite loss term held in the range (inf and NaN stay, to be refused as ever). */
static inline double fm_clip_loss(fm_clip_range r, double L) {
    if (r.lo <= r.hi && isfinite(L)) L = L < r.lo ? r.lo : L > r.hi ? r.hi : L;
    return L;
}

static int softmax_block_f32(float *dG, double *row_loss, double *loss_sum, const float *G,
                             const int64_t *Y, ptrdiff_t N, ptrdiff_t K, float sc,
                             fm_clip_range cr);

#define T float
#define S(name) name##_f32
#define EXP expf
#define LOG1P log1pf
#define SOFTMAX_BLOCK softmax_block_f32
#include "loss_t.h"
#undef T
#undef S
#undef EXP
#undef LOG1P
#undef SOFTMAX_BLOCK

/* Note 5: exp(x) for x in [EXP_LO, 0] as 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 with
 * n ln 2 in two parts (the first exact for |n| < 2^15), exp(r) from Cephes expf's polynomial;
 * lower x (and NaN) are clamped (such rows take the library's exp). Each operation is rounded
 * on its own (-ffp-contract=off), so every clone gives the same bits. */
#define EXP_LO (-87.0f)
static inline float exp_poly(float x) {
    x = x > EXP_LO ? x : EXP_LO;
    const float shift = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + shift) - shift;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t e = ((int32_t)n + 127) * (1 << 23);  /* n >= -126: a normal 2^n */
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}

FM_CLONES static void exp_run(float *v, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) v[i] = exp_poly(v[i]);
}

/* Note 5: softmax cross-entropy of float32 rows a block at a time: g - m for the block's rows,
 * one vectorised exp over the block, then each row's sum, loss and scaling. A row with an
 * entry below EXP_LO (or NaN) is done again with the library's exp. */
static int softmax_block_f32(float *dG, double *row_loss, double *loss_sum, const float *G,
                             const int64_t *Y, ptrdiff_t N, ptrdiff_t K, float sc,
                             fm_clip_range cr) {
    enum { ROWS = 256 };
    double gy[ROWS];  /* g_y - m of each row of the block; NaN: the row takes softmax_row */
    ptrdiff_t rows = 4096 / K < 1 ? 1 : 4096 / K > ROWS ? ROWS : 4096 / K;
    double total = 0.0;
    for (ptrdiff_t i0 = 0; i0 < N; i0 += rows) {
        ptrdiff_t n = N - i0 < rows ? N - i0 : rows;
        for (ptrdiff_t r = 0; r < n; r++) {
            const float *g = G + (i0 + r) * K;
            float *d = dG + (i0 + r) * K;
            int64_t y = Y[i0 + r];
            if (y < 0 || y >= K) return FM_ELABEL;
            float m = g[0];
            for (ptrdiff_t k = 1; k < K; k++) m = g[k] > m ? g[k] : m;
            int near = 1;
            for (ptrdiff_t k = 0; k < K; k++) {
                d[k] = g[k] - m;
                near &= d[k] >= EXP_LO;
            }
            gy[r] = near ? (double)g[y] - (double)m : NAN;
        }
        exp_run(dG + i0 * K, n * K);
        for (ptrdiff_t r = 0; r < n; r++) {
            ptrdiff_t i = i0 + r;
            double L = gy[r] == gy[r] ? softmax_finish_f32(dG + i * K, Y[i], K, sc, gy[r])
                                      : softmax_row_f32(dG + i * K, G + i * K, Y[i], K, sc);
            L = fm_clip_loss(cr, L);
            if (row_loss) row_loss[i] = L;
            total += L;
        }
    }
    *loss_sum = total;
    return FM_OK;
}
#define T double
#define S(name) name##_f64
#define EXP exp
#define LOG1P log1p
#include "loss_t.h"
#undef T
#undef S
#undef EXP
#undef LOG1P
