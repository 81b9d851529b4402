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
 * 3. Per-row sums are accumulated in double in both dtypes; the gradient is written in T.
 * 4. squared follows the lecture: L = sum_k (g_k - y_k)^2 without the 1/2, so dL/dg = 2 (g - y).
 */
#include <math.h>
#include "fastmlp.h"

#define T float
#define S(name) name##_f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#include "loss_t.h"
#undef T
#undef S
#undef EXP
#undef LOG
#undef LOG1P
#define T double
#define S(name) name##_f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#include "loss_t.h"
#undef T
#undef S
#undef EXP
#undef LOG
#undef LOG1P
