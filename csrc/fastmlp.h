/* fastmlp.h: the C API of the training core.
 *
 * Design notes
 * 1. Three layers: these C kernels and the engine (no Python headers, no allocation inside a
 *    step, status codes instead of printing), one Cython bridge (_core.pyx) that checks shapes and
 *    dtypes once and releases the GIL, and the Python classes that hold the policy.
 * 2. Dimension letters used in every file: N rows of the batch, I inputs of a layer (fan_in),
 *    O outputs of a layer (fan_out), K outputs of the network (classes or targets).
 *    All matrices are row-major; W has shape I x O (as scikit-learn's coefs_).
 * 3. Parameters of a network live in one buffer: layer l's W at params + w_off (I x O), its b at
 *    params + b_off (O). Gradients use a second buffer with the same layout, so the global norm,
 *    clipping and the update are passes over one array.
 * 4. Gradient convention: every kernel OVERWRITES the gradients it writes (dW, db, dA, dG),
 *    unless it is called with accumulate = 1 (dense backward, to sum a batch chunk by chunk).
 * 5. The network plan is an array of fm_layer records, six int64 each, written by Python once.
 *    Layer 0 reads the input X; the last layer's output is what the loss sees (the logits for
 *    softmax/sigmoid cross-entropy, whose last layer therefore has the identity activation).
 * 6. Sizes and index arithmetic use ptrdiff_t/int64_t throughout; nothing is an int product.
 */
#ifndef FASTMLP_H
#define FASTMLP_H

#include <stddef.h>
#include <stdint.h>
#include "act.h"
#include "gemm.h"

/* Compute-bound element-wise passes get one clone per ISA, chosen at load time (an ifunc):
 * optim.c note 8, loss.c note 5. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_CLONES
#endif

enum {
    FM_OK = 0,
    FM_EARG = 1,              /* a size or plan record is out of range */
    FM_ELABEL = 2,            /* a class label is outside [0, K) */
    FM_ENONFINITE_LOSS = 3,   /* the loss of a batch is NaN or infinite */
    FM_ENONFINITE_GRAD = 4,   /* a gradient is NaN or infinite */
    FM_EOVERFLOW_STEP = 5,    /* the update could overflow a parameter (refused, not applied) */
    FM_EOVERFLOW_STATE = 6,   /* Adam: the gradient's square could overflow its second moment */
    FM_ENONFINITE_L2 = 7,     /* the L2 term of the loss, (l2 / 2) ||W||^2, is infinite */
};

enum { FM_LOSS_SQUARED = 0, FM_LOSS_SOFTMAX_CE = 1, FM_LOSS_SIGMOID_BCE = 2,
       FM_LOSS_HALF_SQUARED = 3, FM_LOSS_COUNT = 4 };
/* Skip connections of a hidden layer, z = A_in W + b, h = act(z):
 *   FM_SKIP_RESIDUAL  A_out = A_in + h  (needs I == O)
 *   FM_SKIP_PREACT    A_out = z + h     (the lecture's form: dA_out/dz = 1 + act'(z), so a unit
 *                                        whose ReLU is off still passes gradient)
 * The output layer has none. */
enum { FM_SKIP_NONE = 0, FM_SKIP_RESIDUAL = 1, FM_SKIP_PREACT = 2, FM_SKIP_COUNT = 3 };
enum { FM_OPT_SGD = 0, FM_OPT_MOMENTUM = 1, FM_OPT_NESTEROV = 2, FM_OPT_ADAM = 3,
       FM_OPT_COUNT = 4 };

#define FM_MAX_LAYERS 256

typedef struct {
    int64_t fan_in, fan_out;  /* I, O */
    int64_t w_off, b_off;     /* element offsets of W (I x O) and b (O) in the parameter buffer */
    int64_t act;              /* FM_ACT_* */
    int64_t skip;             /* FM_SKIP_* */
} fm_layer;

/* Optimizer settings of one call. g is the batch gradient (with the L2 term), c = min(1,
 * clip_norm / ||g||) when clip_norm > 0 (the global norm over all parameters), else 1:
 *   FM_OPT_SGD       p <- p - lr c g
 *   FM_OPT_MOMENTUM  v <- mu v - lr c g;  p <- p + v             (state: v)
 *   FM_OPT_NESTEROV  v <- mu v - lr c g;  p <- p + mu v - lr c g (state: v)
 *   FM_OPT_ADAM      t <- t + 1;  m <- b1 m + (1 - b1) c g;  v <- b2 v + (1 - b2) (c g)^2;
 *                    p <- p - lr_t m / (sqrt(v) + eps),  lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)
 *                    (state: m, then v)
 * These are scikit-learn's forms. l2 adds l2 / s * W to every weight gradient (not the biases),
 * s the batch's sample-weight sum (its row count without weights): scikit-learn's alpha. */
typedef struct {
    int64_t kind;             /* FM_OPT_* */
    double lr;
    double clip_norm;         /* <= 0: no clipping */
    double momentum;          /* mu */
    double beta1, beta2, eps;
    double l2;
    int64_t t;                /* in/out: Adam steps taken so far */
    double loss_clip;         /* > 0: the loss reported as fm_loss's clip (not the gradient) */
} fm_opt;

/* Figures the engine adds up over the steps of one call. The caller passes the epoch's running
 * sums in (loss_sum, norm_sum, reg_sum), so that they are added step by step in the same order
 * however the epoch is split into calls (call sizes follow their timing). */
typedef struct {
    double loss_sum;          /* sum over rows of the per-row loss L */
    double norm_sum;          /* sum over steps of the pre-clip global gradient norm */
    double norm_max;
    int64_t rows;             /* rows seen */
    int64_t steps;            /* steps completed (updates applied) */
    int64_t clipped;          /* steps whose gradient was clipped */
    int64_t bad_step;         /* on FM_ENONFINITE_*: the step that failed (not applied) */
    int64_t bad_layer;        /* on FM_ENONFINITE_GRAD: the first layer with a non-finite norm */
    double param_max;         /* in/out: largest |parameter|, or < 0 if unknown (then measured) */
    double state_max;         /* in/out: largest |v| (momentum) or |m| (Adam), < 0 if unknown */
    int state_held;           /* in/out: 1 if Adam's state meets every gradient history's
                                 bound (engine.c note 7), 0 if not, < 0 if unknown (then
                                 measured, with state_max) */
    double reg_sum;           /* sum over steps of (l2 / 2) ||W||^2 nb / s (scikit-learn's term) */
    int64_t *seq;             /* the parameters' sequence count (engine.c note 14), or NULL */
    double *phase;            /* FM_PHASES seconds thread 0 spent in each phase, added to; or
                                 NULL: not timed (engine.c note 15) */
} fm_stats;

/* The phases of a step the engine can time (fm_stats.phase, engine.c note 15). */
enum {
    FM_PHASE_GATHER,    /* the batch's rows */
    FM_PHASE_FORWARD,   /* every layer's product, bias and activation */
    FM_PHASE_BACKWARD,  /* the loss gradient and every layer's backward products */
    FM_PHASE_REDUCE,    /* a team's sums of the blocks' gradients (note 11) */
    FM_PHASE_NORMS,     /* the L2 term, the norms and the step's checks (note 7) */
    FM_PHASE_UPDATE,    /* the optimizer's update of the parameters */
    FM_PHASE_WAIT,      /* thread 0 waiting for the team at its meetings (note 11) */
    FM_PHASES
};

/* ---- element-wise and layer kernels (kernels.c, loss.c, optim.c) ---- */
int fm_act_forward_f32(float *A, const float *Z, ptrdiff_t n, int act);
int fm_act_forward_f64(double *A, const double *Z, ptrdiff_t n, int act);
/* dZ = dA * act'(z), with act' taken from the output A (act.h). dZ may alias dA. */
int fm_act_backward_f32(float *dZ, const float *dA, const float *A, ptrdiff_t n, int act);
int fm_act_backward_f64(double *dZ, const double *dA, const double *A, ptrdiff_t n, int act);

/* A_out (N x O) = act(A_in (N x I) W (I x O) + b (O)). */
int fm_dense_forward_f32(float *A_out, const float *A_in, const float *W, const float *b,
                         ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act, void *work, int nt);
int fm_dense_forward_f64(double *A_out, const double *A_in, const double *W, const double *b,
                         ptrdiff_t N, ptrdiff_t I, ptrdiff_t O, int act, void *work, int nt);
/* From dZ (N x O) of this layer: dW = A_in^T dZ, db = column sums of dZ, and when dA_in is not
 * NULL, dA_in = (dZ W^T) * act_in'(A_in), the layer below's dZ (act_in = FM_ACT_IDENTITY gives
 * the plain dL/dA_in). accumulate = 1 adds to dW and db instead of overwriting them (used to
 * sum a large batch chunk by chunk); dA_in is always overwritten. dW NULL skips dW (the
 * engine's single-row steps apply the rank-1 dW = a dz^T inside the update instead). */
int fm_dense_backward_f32(float *dW, float *db, float *dA_in, const float *dZ,
                          const float *A_in, const float *W, ptrdiff_t N, ptrdiff_t I,
                          ptrdiff_t O, int act_in, int accumulate, void *work, int nt);
int fm_dense_backward_f64(double *dW, double *db, double *dA_in, const double *dZ,
                          const double *A_in, const double *W, ptrdiff_t N, ptrdiff_t I,
                          ptrdiff_t O, int act_in, int accumulate, void *work, int nt);

/* The same two on `rows` rows of a batch of N rows, every matrix but W given from the block's
 * first row, on the calling thread with scratch slot `slot` (gemm.h, fm_gemm_rows), for the
 * engine's team of threads: the outputs and dA_in get the bits of the whole call; dW and db
 * are the sums over these rows alone, overwritten. */
int fm_dense_forward_rows_f32(float *A_out, const float *A_in, const float *W, const float *b,
                              ptrdiff_t N, ptrdiff_t rows, ptrdiff_t I, ptrdiff_t O, int act,
                              void *work, int slot);
int fm_dense_forward_rows_f64(double *A_out, const double *A_in, const double *W,
                              const double *b, ptrdiff_t N, ptrdiff_t rows, ptrdiff_t I,
                              ptrdiff_t O, int act, void *work, int slot);
int fm_dense_backward_rows_f32(float *dW, float *db, float *dA_in, const float *dZ,
                               const float *A_in, const float *W, ptrdiff_t N, ptrdiff_t rows,
                               ptrdiff_t I, ptrdiff_t O, int act_in, void *work, int slot);
int fm_dense_backward_rows_f64(double *dW, double *db, double *dA_in, const double *dZ,
                               const double *A_in, const double *W, ptrdiff_t N,
                               ptrdiff_t rows, ptrdiff_t I, ptrdiff_t O, int act_in, void *work,
                               int slot);
/* Loss of outputs G (N x K) against targets Y: for FM_LOSS_SOFTMAX_CE an int64 label per row,
 * otherwise an N x K matrix of the same dtype. Writes dG = scale * dL/dG (N x K), the per-row
 * losses into row_loss when it is not NULL, and their sum into *loss_sum.
 *   squared   L = sum_k (g_k - y_k)^2                       dL/dg = 2 (g - y)
 *   half sq.  L = sum_k (g_k - y_k)^2 / 2                   dL/dg = g - y
 *   softmax   L = logsumexp(g) - g_y                         dL/dg = softmax(g) - onehot(y)
 *   sigmoid   L = sum_k max(g,0) - g y + log1p(exp(-|g|))    dL/dg = sigmoid(g) - y
 * clip > 0: each finite loss term of a cross-entropy (a softmax row's, a sigmoid output's)
 * is held within [-log(1 - clip), -log(clip)], the loss of a probability clipped to
 * [clip, 1 - clip] as scikit-learn reports it (loss.c note 6); dG is not clipped. */
int fm_loss_f32(float *dG, double *row_loss, double *loss_sum, const float *G, const void *Y,
                ptrdiff_t N, ptrdiff_t K, int kind, double scale, double clip);
int fm_loss_f64(double *dG, double *row_loss, double *loss_sum, const double *G, const void *Y,
                ptrdiff_t N, ptrdiff_t K, int kind, double scale, double clip);

/* L2 norm of g (n values), summed in double; overflow-safe (finite whenever the norm is). */
double fm_norm_f32(const float *g, ptrdiff_t n);
double fm_norm_f64(const double *g, ptrdiff_t n);
/* The same on up to nt threads, block by block: the value does not depend on nt. */
double fm_norm_nt_f32(const float *g, ptrdiff_t n, int nt);
double fm_norm_nt_f64(const double *g, ptrdiff_t n, int nt);
/* g += a w (the L2 term of the gradient) in a pass that also takes both norms, on up to nt
 * threads: returns ||g|| after the addition and sets *wnorm = ||w||, each with the bits
 * fm_norm_nt gives it (optim.c note 9). */
double fm_l2_grad_f32(float *g, const float *w, ptrdiff_t n, double a, int nt, double *wnorm);
double fm_l2_grad_f64(double *g, const double *w, ptrdiff_t n, double a, int nt,
                      double *wnorm);
/* One block of fm_l2_grad on the calling thread: g += a w (w NULL: nothing), then the sum of
 * squares of w into *sw and, returned, of g, each as fm_sumsq sums it. */
double fm_l2_sumsq_f32(float *g, const float *w, float a, ptrdiff_t n, double *sw);
double fm_l2_sumsq_f64(double *g, const double *w, double a, ptrdiff_t n, double *sw);
/* d = p0 + p1, then fm_l2_sumsq on d, in one pass with the bits of the two (optim.c note 10). */
double fm_add2_l2_sumsq_f32(float *d, const float *p0, const float *p1, const float *w, float a,
                            ptrdiff_t n, double *sw);
double fm_add2_l2_sumsq_f64(double *d, const double *p0, const double *p1, const double *w,
                            double a, ptrdiff_t n, double *sw);
/* sum g_i^2 in double, NORM_LANES partial sums (optim.c note 7); one thread. */
double fm_sumsq_f32(const float *g, ptrdiff_t n);
double fm_sumsq_f64(const double *g, ptrdiff_t n);
/* sqrt(sum v_i^2) of n non-negative norms without overflow; NaN or inf if any v_i is. */
double fm_norm_combine(const double *v, ptrdiff_t n);
/* Scale g in place by min(1, tau / ||g||) when tau > 0; returns ||g|| before clipping. */
double fm_clip_f32(float *g, ptrdiff_t n, double tau);
double fm_clip_f64(double *g, ptrdiff_t n, double tau);
/* p <- p - lr * g over n values; returns the largest |p| after the update. */
double fm_sgd_update_f32(float *p, const float *g, ptrdiff_t n, double lr, int nt);
double fm_sgd_update_f64(double *p, const double *g, ptrdiff_t n, double lr, int nt);
/* W (I x O) <- W - lr * a dz^T: the SGD step of a single-row gradient, never stored. */
void fm_sgd_rank1_f32(float *W, const float *a, const float *dz, ptrdiff_t I, ptrdiff_t O,
                      double lr, int nt);
void fm_sgd_rank1_f64(double *W, const double *a, const double *dz, ptrdiff_t I, ptrdiff_t O,
                      double lr, int nt);
/* One optimizer step over n parameters p with gradient g (see fm_opt): c is the clipping
 * factor, lr the rate (for Adam the bias-corrected lr_t), s1 and s2 the state (v, or m and v;
 * NULL where unused). Returns the largest |p| after the update and writes the largest |v|
 * (momentum) or |m| (Adam) to *smax. FM_OPT_SGD is fm_sgd_update with rate lr c. */
double fm_opt_update_f32(float *p, float *s1, float *s2, const float *g, ptrdiff_t n, int kind,
                         double lr, double c, double mu, double b1, double b2, double eps,
                         double *smax, int nt);
double fm_opt_update_f64(double *p, double *s1, double *s2, const double *g, ptrdiff_t n,
                         int kind, double lr, double c, double mu, double b1, double b2,
                         double eps, double *smax, int nt);
/* The same two updates without the maxima (what the engine runs; optim.c note 6). */
void fm_sgd_step_f32(float *p, const float *g, ptrdiff_t n, double lr, int nt);
void fm_sgd_step_f64(double *p, const double *g, ptrdiff_t n, double lr, int nt);
void fm_opt_step_f32(float *p, float *s1, float *s2, const float *g, ptrdiff_t n, int kind,
                     double lr, double c, double mu, double b1, double b2, double eps, int nt);
void fm_opt_step_f64(double *p, double *s1, double *s2, const double *g, ptrdiff_t n, int kind,
                     double lr, double c, double mu, double b1, double b2, double eps, int nt);
/* The largest |x| of n values. */
double fm_absmax_f32(const float *x, ptrdiff_t n);
double fm_absmax_f64(const double *x, ptrdiff_t n);
/* The largest |m| of an optimizer's state (+inf if a value is not finite or a v_i < 0); with
 * Adam's v, *held = whether every m_i^2 <= k2 v_i (optim_t.h). */
double fm_state_scan_f32(const float *m, const float *v, ptrdiff_t n, double k2, int *held);
double fm_state_scan_f64(const double *m, const double *v, ptrdiff_t n, double k2, int *held);

/* ---- the engine (engine.c) ---- */
/* Check a plan: sizes positive, consecutive layers chained, offsets inside n_params, codes known.
 * Returns FM_OK or FM_EARG. Every engine entry point trusts a plan that passed this check. */
int fm_plan_check(const fm_layer *plan, int64_t L, int64_t n_params);
/* Bytes of workspace for batches of up to max_batch rows with up to nt threads. */
size_t fm_workspace_bytes(const fm_layer *plan, int64_t L, int64_t max_batch, size_t elem,
                          int nt);

/* Train steps [step_begin, step_end) of an epoch: step s takes the rows idx[s*B .. s*B+B-1]
 * (the last batch may be shorter; idx NULL means the identity order) of X (n x I0) and Y, runs
 * forward, loss, backward, global norm, clipping and the optimizer's update (fm_opt; state holds
 * n_params values for momentum, 2 n_params for Adam, NULL for plain SGD). sw, when not NULL,
 * weights row i's loss by sw[i] >= 0 and the batch gradient is divided by the batch's weight
 * sum (by 1 when that sum is 0) instead of its row count. Statistics are added to *st and, per
 * layer l, to layer_stats[4l..4l+3] = (sum ||dW||, max ||dW||, sum ||db||, max ||db||), all
 * before clipping. active, when not NULL, gets active[o_l + j] = 1 for every ReLU unit j of layer
 * l whose pre-activation was > 0 for some row (o_l = the fan_outs of the layers below summed).
 * Stops before applying a step with a non-finite loss or gradient (FM_ENONFINITE_*), or one
 * whose update could overflow a parameter (FM_EOVERFLOW_STEP): the parameters and the state then
 * keep the previous step's values, all finite. */
int fm_train_steps_f32(const fm_layer *plan, int64_t L, int loss, float *params, float *grads,
                       float *state, void *ws, int64_t max_batch, const float *X, const void *Y,
                       const float *sw, const int64_t *idx, int64_t n, int64_t B,
                       int64_t step_begin, int64_t step_end, fm_opt *opt, fm_stats *st,
                       double *layer_stats, uint8_t *active, int nt);
int fm_train_steps_f64(const fm_layer *plan, int64_t L, int loss, double *params, double *grads,
                       double *state, void *ws, int64_t max_batch, const double *X,
                       const void *Y, const double *sw, const int64_t *idx, int64_t n, int64_t B,
                       int64_t step_begin, int64_t step_end, fm_opt *opt, fm_stats *st,
                       double *layer_stats, uint8_t *active, int nt);

/* A copy of the n parameters at params that no update of a running fm_train_steps was
 * writing into (engine.c note 14): out gets the values between two of its steps' updates. seq
 * is the count that call was given in fm_stats. */
void fm_params_snapshot_f32(float *out, const float *params, int64_t n, const int64_t *seq);
void fm_params_snapshot_f64(double *out, const double *params, int64_t n, const int64_t *seq);
/* The count, read with acquire order (before reading the parameters: seq_read(..., 0)) or
 * after an acquire fence (after reading them: seq_read(..., 1)). */
int64_t fm_seq_read(const int64_t *seq, int after);

/* idx[0:n) = a random permutation of 0 .. n-1 drawn from `seed` alone (engine.c note 13). */
void fm_permutation(int64_t *idx, int64_t n, uint64_t seed);

/* How fm_train_steps may share the steps of a small network among its threads (engine.c
 * note 11): -1 (the default) when that has been faster than one thread, 0 never, 1 whenever
 * the network allows it. The results are the same bits in every case. FM_EARG for others. */
int fm_set_team_policy(int policy);

/* Forward of X (n x I0) in chunks of max_batch rows; writes the last layer's output (n x K).
 * active as in fm_train_steps (NULL: not recorded). tune: FM_TUNE_BYTES bytes (8-byte
 * aligned, zeros at first) that keep the timing of one thread against nt between calls
 * (engine.c note 12), or NULL to keep it in ws. */
#define FM_TUNE_BYTES 64
int fm_forward_f32(const fm_layer *plan, int64_t L, const float *params, void *ws,
                   int64_t max_batch, const float *X, int64_t n, float *out, uint8_t *active,
                   int nt, void *tune);
int fm_forward_f64(const fm_layer *plan, int64_t L, const double *params, void *ws,
                   int64_t max_batch, const double *X, int64_t n, double *out, uint8_t *active,
                   int nt, void *tune);

/* Mean loss J = (1/n) sum_i L_i over all n rows and its gradient into grads (overwritten), in
 * chunks of max_batch rows (the chunks' gradients are summed). */
int fm_loss_and_grad_f32(const fm_layer *plan, int64_t L, int loss, const float *params,
                         float *grads, void *ws, int64_t max_batch, const float *X,
                         const void *Y, int64_t n, double *loss_out, int nt);
int fm_loss_and_grad_f64(const fm_layer *plan, int64_t L, int loss, const double *params,
                         double *grads, void *ws, int64_t max_batch, const double *X,
                         const void *Y, int64_t n, double *loss_out, int nt);

/* ---- the build and the process (config.c) ---- */
const char *fm_build_flags(void);
int fm_openmp_enabled(void);
int fm_omp_max_threads(void);
int fm_omp_thread_limit(void);
int fm_omp_num_procs(void);
int fm_omp_binds(void);
int fm_omp_place_procs(void);
/* Spread a team of nt threads over distinct CPUs where they share one (config.c note 1). */
void fm_spread_threads(int nt);
int fm_team_cpus(int nt, int *cpu);
int fm_fp_flush(int set);
/* The team size for a call asked to run on nt threads: nt, or 1 in a child forked from a
 * process that had asked for a team (config.c). fm_fork_guard() arms it, once. */
void fm_fork_guard(void);
int fm_team(int nt);
int fm_fork_child(void);

#endif
