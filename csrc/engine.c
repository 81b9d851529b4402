/* engine.c: training steps, inference and full-batch gradients over a network plan.
 *
 * Design notes
 * 1. One call runs many steps without the GIL: gather the batch rows through the shuffled
 *    index, forward, loss gradient, backward, global norm, clipping and update. Python sees only
 *    the plan, the optimizer settings and the figures in fm_stats.
 * 2. Workspace (one block of bytes from the caller, sized by fm_workspace_bytes, laid out the
 *    same way on every call): the gathered batch X_b (B x I0) and Y_b, each layer's output A_l
 *    (B x O_l), two dZ buffers (B x max O) used in turn as backward walks down the layers, and
 *    the product's scratch. Every region starts on a 64-byte boundary. Nothing is allocated here.
 * 3. The cache is the activation output alone: act'(z) follows from a = act(z) (act.h), and the
 *    derivative of the layer below is applied in the epilogue of its dA product (dense.c).
 * 4. Clipping never rewrites the gradient: the update uses lr * c with c = min(1, tau/||g||),
 *    which is the same step as scaling g first, in one pass instead of two.
 * 5. A step whose loss or gradient norm is not finite is not applied: the call returns at once
 *    with the step's index, so the parameters are those after the last good step.
 * 6. A step of one row (single-sample SGD) has dW = a dz^T of rank one. Writing it, reading it
 *    for the norm and again for the update would triple the memory traffic of a step whose
 *    arithmetic is tiny, so it is never stored: ||dW||_F = ||a|| ||dz|| exactly (up to
 *    rounding), and fm_sgd_rank1 applies W -= lr a dz^T in the one pass over W the update needs.
 *    The update runs from the top layer down: the rows of W that dA_in just read are still in
 *    L1 when they are updated (digits at batch 1: 68 KB of weights against a 32 KB L1; the
 *    W2b1 epoch 4.84 -> 4.69 ms on Zen 4, medians of 7 alternating runs; W2 unchanged).
 * 7. A finite gradient can still overflow a parameter (a huge rate). Each |g_i| <= ||g||, so
 *    an SGD step moves no parameter by more than lr ||g||, and momentum and Adam have bounds of
 *    their own (step_bound in engine_t.h). A step is refused unless max|p| + that bound stays
 *    below a quarter of the dtype's largest value; no parameter can then become infinite, and
 *    a refused step leaves every parameter as it was. max|p| is measured once per call and then
 *    carried as a bound, max|p| + the step's bound, so the update passes need no reduction
 *    (optim.c note 6). Within a call the bound only grows, by the sum of the steps' moves: far
 *    below the limit in any run that is not already diverging. A team (note 11) measures
 *    max|p| and max|state| with its blocks' sums, each thread over the part it is about to
 *    update: measured by thread 0 alone, they had taken back every line the other thread's
 *    update then wrote, and a call's first step waited 19-22 us longer (digits
 *    64-128-64-10, Adam, batch 200, two threads: 106 -> 89 us a one-step call; the digits
 *    estimator's fit, whose every epoch is a call, 0.161 -> 0.157 s, processes of the two
 *    builds alternating, 8 pairs). The state may also come from outside fit (a user's
 *    optimizer.state_): the pass that measures max|state| also finds a value that is not
 *    finite or a negative second moment (then the bound is +inf: no step is applied), and
 *    whether every m_i^2 <= k2 v_i (adam_k2), which the moments of any gradient history
 *    meet; only then does Adam's bound use that history (step_bound's c), else it is
 *    lr max|m'| / eps. New user #22 set m = 1e34 where g and v were 0: the step wrote -inf
 *    and fit returned normally. Adam's second moment holds (c g)^2, so a step with
 *    c ||g|| >= sqrt(max / 4) is refused too, with a status of its own (FM_EOVERFLOW_STATE:
 *    no rate helps there), and so is a step whose L2 term of the loss, computed in double,
 *    is infinite (FM_ENONFINITE_L2: float64 weights near 1e200).
 * 8. A layer with a skip connection is not fused: its product writes z, an element-wise pass
 *    keeps h = act(z) (the cache its derivative needs, since the output is no longer act(z))
 *    and forms the output. Backward then needs the plain dA of that layer: the product above
 *    writes dz W^T without an epilogue, a residual layer adds its own dA (kept in d2), and the
 *    derivative 1 + act'(z) or act'(z) is applied in a separate pass. Skips are the teaching
 *    case, so the extra passes over B x O values are accepted; layers without skips keep the
 *    fused path.
 * 9. Dead units: a ReLU unit whose pre-activation is <= 0 for every row never fires. Forward
 *    marks each unit that fired (h > 0, i.e. z > 0) in a byte flag per unit when asked, one pass
 *    over the layer's output per step.
 * 10. The gather reads batch rows scattered over X (a 188 MB X for W3: each row a cache miss
 *    chain of its own). After each step's forward pass the next batch's rows are prefetched,
 *    one hint per cache line, so they arrive while backward runs. W3 (batch 128, 2 threads,
 *    Zen 4), whole epochs, builds with and without the hints run in alternation, 4 rounds:
 *    1.533 s against 1.552 s (medians; the gather alone was ~110 us of a ~2.4 ms step).
 *    A batch of at least GATHER_PAR_MIN bytes of X is gathered by the threads, a block of rows
 *    each (a copy: no bit depends on it): W3 at two threads 1079 -> 1071 ms per epoch (5
 *    alternating runs of 5 s each, every run faster but one); one thread against two in the
 *    same process, 6 rounds: 1.979 / 1.095 s, 1.81x.
 *    The hints are volatile asm (prefetch_read): GCC 12 took the functions that held only
 *    __builtin_prefetch calls for pure and deleted their calls, so builds until 2026-12-05 had
 *    no hint at all, and the Zen 4 figures above compared two builds without them. Restored
 *    on the Xeon, one process alternating the forms epoch by epoch (W3 on 20000 and 30000
 *    rows, two threads, 8 pairs each): 0.450 -> 0.447 and 0.635 -> 0.619 s (medians), within
 *    the pairs' spread (0.88-1.13).
 * 11. A small network's products (each B I O < 2^21) run on one thread each (gemm.c note 4), so
 *    with nt >= 2 its steps are split instead: each step's rows into q = nt blocks (at most
 *    FM_TEAM_MAX), and a team of threads takes a block each, through the forward pass, the
 *    loss and the backward pass, without meeting: the products of a block give its rows the
 *    bits of the whole batch's (fm_gemm_rows), and its dW and db are the sums over its rows,
 *    in a buffer of its own. The team then meets to add the blocks' sums in block order (each
 *    thread a part of every parameter block, into grads), thread 0 takes the norms and the
 *    decisions of note 7, and each thread updates the part it added. Four meetings a step
 *    (five with sample weights, whose sum over the batch divides the gradient).
 *    Each thread also sums the squares of its part of every layer's dW, db and (with L2) W
 *    while it holds them, so thread 0's norms and L2 term add q numbers a layer instead of
 *    passing over the gradient and the weights alone while the others wait (on digits at
 *    batch 200, 10-14 us of a 140-215 us step); block 0's sums have a buffer of their own
 *    too, so no thread writes a part of grads another one added the step before. Digits
 *    64-128-64-10, batch 200, two threads, 600 epochs a process, 10 processes alternating
 *    the builds: 1.62 -> 1.50 ms an epoch (medians; the pairs' ratios 1.09). The norms'
 *    last bits then differ from a whole-batch step's, as the gradient's already do.
 *    This replaced a team that split every product by columns and met after every layer:
 *    on a 2-core Intel Xeon (Sapphire Rapids class) the activations, dZ and W rows it passed
 *    between the cores cost more than the second core gave (digits 64-128-64-10 at batch
 *    200: 156-182 us a step against 131-178 on one thread, standalone harness). Split by
 *    rows, only W and the blocks' sums cross (68 KB a step there): 110-131 us.
 *    Each thread's update writes the parameters that both threads read through the step, so
 *    every line it writes is first taken back from the other core. The thread asks for
 *    ownership of those lines (PREFETCHW) as it starts adding the blocks' sums, and they
 *    arrive while it adds and thread 0 decides. The digits estimator ((128, 64), batch 200,
 *    200 epochs, two threads; fits alternating the forms in one process, 16 pairs, medians):
 *    SGD with momentum 0.286 -> 0.265 s (13 of the 16 pairs faster), Adam 0.352 -> 0.348 s.
 *    The blocks' sums make the bits depend on q, so on nt, but never on who runs the
 *    blocks: without the team one thread runs them in turn, with the same calls (tested with
 *    the team forced on, off and timed, 2 and 3 blocks). Networks with skips, batches under
 *    TEAM_MIN_ROWS and the steps of fewer rows (an epoch's last) are not split.
 *    Whether the team pays depends on the machine and its load, so it is timed (note 12).
 *    TEAM_MIN_ROWS = 32 (blocks of 16 rows or more) was tried on the 2-core Zen 4: W2
 *    (batch 32, plain SGD) ran back to back 1.88 ms an epoch on one thread and 1.49 as a
 *    team, but the team reached that only after ~20 epochs in a row (1.95 ms before), the
 *    blocks in turn (the one-thread mode with the team's bits) took 2.05 ms, and the peer
 *    benchmark's W2 median, whose epochs follow pauses, went 1.94 -> 2.18 ms. So 150 stays.
 * 12. Threads pay only when the cores are free. With another process busy on both cores of
 *    the Xeon, every meeting of the threads waited for a descheduled thread: a new user saw
 *    an epoch of 20-256-256-2 (16000 rows, batch 32: products threaded by gemm.c) take 19.4 s
 *    on two threads and 0.07 s on one, and `fastmlp train` 32 s against 1.5 s. So whenever
 *    nt threads would change anything (a team, a threaded product, gather or update), the
 *    engine times the two modes, whose bits are equal: the fit's workspace (kept by the
 *    network between fits of the same batch size and threads) holds the seconds per step of
 *    each; one thread is timed first, then many, each on TUNE_FIRST steps (a large network
 *    pays for every step it runs on one thread, a loaded machine for every step on many:
 *    a short fit must not spend a whole chunk learning that; the first step of each of these
 *    first timings is left out of it: waking the threads after a pause is paid once, not
 *    every step, and counted, it had a fresh digits fit (64-128-64-10, batch 200, Xeon)
 *    choose one thread for its first 16 chunks in 2 fits of 3, 180-200 us a step against
 *    120-130 on two; now 0 of 3); a chunk of TUNE_CHUNK steps runs in the faster mode (many
 *    threads unless one thread is faster by TUNE_MARGIN: timings are noisy, and a wrong turn to
 *    one thread costs a large network TUNE_GAP_MIN chunks at its one-thread speed; the
 *    60000 x 784 estimator fit took 5-8% longer without the margin), the slower one is timed again
 *    after TUNE_GAP_MIN chunks (twice as late after each probe it loses; when the faster mode's
 *    own chunks slow past the other one, the mode left behind is timed again after
 *    TUNE_FLIP_GAP chunks, not after the long gap its rival had earned: in the peer benchmark
 *    on the Xeon, a moment of load had kept W3 on one thread for 4 of 5 epochs, 1.31 s an epoch
 *    against 0.90 for fit; 0.4 s of a busy core then cost the next four epochs 1.24-1.39 s
 *    each, and with a wait of TUNE_GAP_MIN chunks only its own, 1.13 s, against 0.82-0.87; but
 *    16 chunks are three epochs of W4 (79 steps), one of whose `fit` epochs in the peer
 *    benchmark took 0.68 s against 0.38, so the first probe after the swap comes after
 *    TUNE_FLIP_GAP chunks, and a loaded machine pays for it about one slow step (the chunk ends
 *    at the first step over TUNE_SLOW one-thread steps, below); after that the probes double
 *    their gaps from TUNE_GAP_MIN as always), and a step on many threads longer than TUNE_SLOW
 *    one-thread steps (a thread descheduled at a meeting) ends its chunk at once. The first
 *    step of a chunk, which wakes the threads, ends it only in the first timing of many
 *    threads: a fresh fit on a loaded machine then pays one slow step, not two (with both cores
 *    busy, a one-epoch digits fit took 80 ms on two threads against 2.2 on one, two slow steps
 *    of about a scheduler time slice each).
 *    Before each timing of many threads (the first and the probes) the team's threads are
 *    spread over distinct CPUs where a worker shares one with a lower thread (config.c note
 *    1): a fresh process's worker had started on the main thread's CPU, and the two spun
 *    there in turns for the 100-300 ms the first timing fell in.
 *    Inference (fm_forward) is timed the same way with a block of rows as the chunk and the
 *    seconds per row as the unit, in a record the network keeps for each thread count apart
 *    from any workspace, so the timing carries from one call to the next whatever the
 *    calls' sizes and thread counts (a new user found it lost at each change of either).
 *    A prediction of 1024 rows of 784-512-512-10, 100 calls on two threads, with the other
 *    core running another test suite: 24.0 ms a call (median) with the threads forced,
 *    10.1 ms timed; with two spinning processes besides: 48.0 against 38.0 ms; on the idle
 *    machine, two runs: 9.94 against 9.86 ms and 9.21 against 9.14 ms.
 * 13. fit draws each epoch's order with fm_permutation, seeded by one 64-bit draw of the
 *    network's generator, so the generator still carries the whole state of a run
 *    (network.py). NumPy's Generator.shuffle took 32 us for the 1797 rows of digits (18 ns a
 *    row: a bounded draw each), some 3% of an epoch of the digits estimator; this loop takes
 *    4.3 us with the draw. The orders differ from the ones shuffle gave, so a seed's fits
 *    differ from those of earlier builds (and a checkpoint of one resumes with the new
 *    orders).
 * 14. A network may be read from other Python threads while a fit runs (the engine holds no
 *    GIL). Those readers (predict, save, pickle) must see the parameters of one step, not a
 *    mix of two: a new user found 59 of 2898 predictions made during a fit matching no
 *    step. A sequence count (a seqlock) guards the updates: the count is made odd before a
 *    step's update writes its first parameter and even again after its last (a team's after
 *    the barrier that ends the step), and only the update phase writes parameters. A reader
 *    reads the count, the parameters, then the count again: equal and even, what it read
 *    lies between two updates. fm_params_snapshot copies the parameters until that holds;
 *    a prediction first runs on the parameters in place and is checked the same way
 *    (network.py). The update is a small part of a step, so a copy rarely needs a second
 *    try. The readers never make the engine wait.
 * 15. fastmlp.profile times the kernels one call each, which is not how the engine runs a
 *    team's step (note 11): there the blocks' products, the meetings and the sums of the
 *    blocks are the step. When fm_stats.phase is set, thread 0 adds the seconds it spends in
 *    each phase of every step (FM_PHASE_*): gathering the rows, forward, the loss and
 *    backward, the team's sums, the norms and checks, the update, and, in a team, waiting for
 *    the others at the meetings. A clock read per phase (about 20 ns) costs nothing in a
 *    large step but a visible share of a W1 step (about 1 us), so phases are timed only
 *    when asked for, and the branch on a NULL pointer is all an untimed step pays.
 * 16. Training flushes numbers below the normal range to zero: fm_train_steps sets FTZ and DAZ
 *    on the calling thread, every parallel region hands the caller's mode to its threads
 *    (fpmode.h), and the caller's own mode is back when the call returns. An Intel core
 *    takes a microcode assist on each product or sum that falls below the normal range, and
 *    a fit that drives its gradients there pays for it every step: a digits fit
 *    (64-128-64-10, batch 200, Adam; Xeon), steps timed over chunks of 20 epochs, ran
 *    154 -> 190-220 us a step on one thread after epoch 80 and 103 -> 125-140 on two, and
 *    flat at 150-160 and 100-106 with the flush. Values that small are far below any step
 *    that moves a parameter of normal size; the standalone kernels (`_core`) and inference
 *    keep them (the product tests check them to a few subnormal units). Frameworks differ
 *    here: TensorFlow's threads flush them by default, PyTorch leaves it to
 *    torch.set_flush_denormal. The AMX tiles flush them whatever the mode (gemm_amx.c).
 *    tests/test_fpmode.py checks the flush, the caller's mode afterwards, and one against
 *    two threads with subnormal terms in a flushing caller and in training.
 */
#include <float.h>
#include <math.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "fastmlp.h"

/* Note 10: a batch of at least this many bytes of X rows is gathered by the threads. */
#ifndef GATHER_PAR_MIN
#define GATHER_PAR_MIN (256.0 * 1024.0)
#endif

/* Where decide finds each layer's ||dW|| and ||db||. */
enum {
    NORM_PASS,   /* a pass over the gradient */
    NORM_GIVEN,  /* ||dW|| already in w->norms (the L2 pass of the plain step), ||db|| a pass */
    NORM_RANK1,  /* ||dW|| = ||a|| ||db||: the weight gradients were not formed (note 6) */
    NORM_TEAM    /* the blocks' sums of squares (note 11) */
};

/* Prefetch hints as volatile asm: GCC counts __builtin_prefetch as free of side effects, so it
 * found the functions that only prefetch pure and deleted their calls (no prefetch was left
 * in the build). PREFETCHW (ownership, ahead of a write) is a no-op on x86 CPUs without it. */
static inline void prefetch_read(const void *p) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("prefetcht1 %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 0, 2);
#endif
}

static inline void prefetch_own(const void *v, size_t bytes) {
    const char *c = (const char *)v;
    for (size_t o = 0; o < bytes; o += 64) {
#if defined(__x86_64__) || defined(__i386__)
        __asm__ volatile("prefetchw %0" : : "m"(c[o]));
#else
        __builtin_prefetch(c + o, 1, 3);
#endif
    }
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Note 15: a clock in seconds, and the time since *t added to phase k (then *t = now). */
static double wall_seconds(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

static inline double phase_start(const fm_stats *st) { return st->phase ? wall_seconds() : 0.0; }

static inline void phase_end(fm_stats *st, int k, double *t) {
    if (!st->phase || !t) return;  /* t NULL: not thread 0 */
    double now = wall_seconds();
    st->phase[k] += now - *t;
    *t = now;
}

/* Note 7: m_i^2 <= k2 v_i holds for Adam's moments after any gradients g_k (Cauchy-Schwarz:
 * m = (1 - b1) sum b1^k g_k, v = (1 - b2) sum b2^k g_k^2, r = b1 / sqrt(b2) < 1), 1% added
 * for rounding; where it holds, so does step_bound's bound c. 0 when r >= 1 (c is not used). */
static double adam_k2(const fm_opt *o) {
    double r2 = o->beta1 * o->beta1 / o->beta2;
    if (!(r2 < 1.0)) return 0.0;
    return 1.01 * (1.0 - o->beta1) * (1.0 - o->beta1) / ((1.0 - r2) * (1.0 - o->beta2));
}

/* [*lo, *hi): the block of n items (rows, columns, weights) thread t of q takes, in order. */
static inline void team_block(int64_t n, int t, int q, int64_t *lo, int64_t *hi) {
    *lo = n * t / q;
    *hi = n * (t + 1) / q;
}

/* Block b of q of a layer's weights [*i0, *i1) and biases [*j0, *j1): the part of the
 * gradient thread b adds and the part of the parameters it updates (note 11). */
static inline void team_part(const fm_layer *p, int b, int q, int64_t *i0, int64_t *i1,
                             int64_t *j0, int64_t *j1) {
    team_block(p->fan_in * p->fan_out, b, q, i0, i1);
    team_block(p->fan_out, b, q, j0, j1);
}

/* Note 11: the team of threads that shares the steps of a small network. */
#define FM_TEAM_MAX 8                       /* threads in a team at most */
#define TEAM_MAX_MNK FM_GEMM_PAR_MIN        /* a product this large threads by itself (gemm.c) */
#define TEAM_MIN_WORK ((double)(1 << 16))   /* sum of B I O over the layers, at least */
#define TEAM_MIN_ROWS 150                   /* rows in a step, at least */
#define TUNE_CHUNK 16                       /* steps timed together */
#define TUNE_FIRST 3                        /* ... but only these in each mode's first */
#define TUNE_MARGIN 1.2                     /* many threads unless one is this much faster */
#define TUNE_GAP_MIN 16                     /* chunks between probes of the slower mode ... */
#define TUNE_FLIP_GAP 2                     /* ... but only these after the modes swap places */
#define TUNE_GAP_MAX 1024                   /* ... doubled after each probe it loses, to this */
#define TUNE_SLOW 4.0                       /* a team step this many one-thread steps long */
#define TUNE_MAGIC 0x66746d6c7074756eULL

/* The timings of the two modes: a fit's in its workspace across its calls, inference's in a
 * record of the caller's (FM_TUNE_BYTES) across calls. */
typedef struct {
    uint64_t magic;
    double t_many, t_one;                   /* seconds per step or row, 0 until measured */
    int64_t chunks, next_probe, gap;
} fm_tune;
_Static_assert(sizeof(fm_tune) <= FM_TUNE_BYTES, "FM_TUNE_BYTES too small");

/* Note 12: start a workspace's timings, unless it holds some already. */
static void tune_init(fm_tune *tu) {
    if (tu->magic == TUNE_MAGIC) return;
    memset(tu, 0, sizeof *tu);
    tu->magic = TUNE_MAGIC;
    tu->gap = TUNE_GAP_MIN;
}

/* Note 12: whether the next chunk runs on many threads (1) or one (0); *probe: it times the
 * slower mode again; *first: it is the first timing of a mode (one thread first, then many),
 * which runs a short chunk. */
static int tune_pick(const fm_tune *tu, int *probe, int *first) {
    *probe = 0;
    *first = tu->t_one == 0.0 || tu->t_many == 0.0;
    if (*first) return tu->t_one > 0.0;
    *probe = tu->chunks >= tu->next_probe;
    return (tu->t_many <= TUNE_MARGIN * tu->t_one) != *probe;
}

/* Note 12: a chunk in mode `many` took `per` seconds a unit (a step, or a row of inference);
 * a probe that lost waits twice as long for the next one. */
static void tune_record(fm_tune *tu, int many, int probe, double per) {
    int known = tu->t_one > 0.0 && tu->t_many > 0.0;
    int was = tu->t_many <= TUNE_MARGIN * tu->t_one;
    if (per > 0.0) {
        double *t = many ? &tu->t_many : &tu->t_one;
        *t = *t == 0.0 || probe ? per : 0.5 * (*t + per);
    }
    tu->chunks++;
    if (!probe && known && was != (tu->t_many <= TUNE_MARGIN * tu->t_one)) {
        /* The faster mode slowed past the other one: the mode now left behind is timed
         * again after TUNE_FLIP_GAP chunks (a moment of load passes), then as any probe. */
        tu->gap = TUNE_GAP_MIN;
        tu->next_probe = tu->chunks + TUNE_FLIP_GAP;
    } else if (probe) {
        int lost = many ? tu->t_many > TUNE_MARGIN * tu->t_one
                        : TUNE_MARGIN * tu->t_one >= tu->t_many;
        tu->gap = lost ? (tu->gap < TUNE_GAP_MAX ? 2 * tu->gap : tu->gap) : TUNE_GAP_MIN;
        tu->next_probe = tu->chunks + tu->gap;
    }
}

#ifdef _OPENMP
#define TEAM_SYNC(nth)                                                                        \
    do {                                                                                      \
        if ((nth) > 1) {                                                                      \
            _Pragma("omp barrier")                                                            \
        }                                                                                     \
    } while (0)
#else
#define TEAM_SYNC(nth) ((void)(nth))
#endif

/* -1: the team or one thread, whichever is faster (note 11); 0: never the team; 1: the team
 * whenever the network allows it (tests compare the two forms bit for bit). */
static int team_policy = -1;

int fm_set_team_policy(int policy) {
    if (policy < -1 || policy > 1) return FM_EARG;
    team_policy = policy;
    return FM_OK;
}

/* How many blocks of rows the steps of batch size B are split into (1: none). Note 11. */
static int team_size(const fm_layer *plan, int64_t L, int64_t B, int nt) {
    if (nt < 2 || B < TEAM_MIN_ROWS) return 1;
    double work = 0.0;
    for (int64_t l = 0; l < L; l++) {
        double mnk = (double)B * (double)plan[l].fan_in * (double)plan[l].fan_out;
        if (plan[l].skip != FM_SKIP_NONE || mnk >= TEAM_MAX_MNK) return 1;
        work += mnk;
    }
    if (work < TEAM_MIN_WORK) return 1;
    return nt < FM_TEAM_MAX ? nt : FM_TEAM_MAX;
}

/* The high 64 bits of a b, from 32-bit halves (no 128-bit type: 32-bit targets lack it). */
static uint64_t mulhi64(uint64_t a, uint64_t b) {
    uint64_t al = a & 0xffffffffu, ah = a >> 32, bl = b & 0xffffffffu, bh = b >> 32;
    uint64_t lo = al * bl, m1 = al * bh, m2 = ah * bl;
    uint64_t mid = (lo >> 32) + (m1 & 0xffffffffu) + (m2 & 0xffffffffu);
    return ah * bh + (m1 >> 32) + (m2 >> 32) + (mid >> 32);
}

/* Note 13: Fisher-Yates from the top, each j uniform in [0, i] by the multiply-shift of one
 * splitmix64 output (the bias of that map is below (i + 1) / 2^64). */
void fm_permutation(int64_t *idx, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    uint64_t x = seed;
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        int64_t j = (int64_t)mulhi64(z, (uint64_t)(i + 1));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

int fm_plan_check(const fm_layer *plan, int64_t L, int64_t n_params) {
    if (L < 1 || L > FM_MAX_LAYERS || n_params < 0) return FM_EARG;
    for (int64_t l = 0; l < L; l++) {
        const fm_layer *p = plan + l;
        if (p->fan_in < 1 || p->fan_out < 1) return FM_EARG;
        if (l > 0 && p->fan_in != plan[l - 1].fan_out) return FM_EARG;
        if (p->act < 0 || p->act >= FM_ACT_COUNT) return FM_EARG;
        if (p->skip < 0 || p->skip >= FM_SKIP_COUNT) return FM_EARG;
        if (p->skip != FM_SKIP_NONE && l == L - 1) return FM_EARG;
        if (p->skip == FM_SKIP_RESIDUAL && p->fan_in != p->fan_out) return FM_EARG;
        if (p->w_off < 0 || p->b_off < 0) return FM_EARG;
        /* Both blocks inside the buffer; written so that no product can overflow int64. */
        if (p->fan_in > n_params || p->fan_out > n_params) return FM_EARG;
        if (p->w_off > n_params - p->fan_in * p->fan_out) return FM_EARG;
        if (p->b_off > n_params - p->fan_out) return FM_EARG;
    }
    return FM_OK;
}

static int64_t max_width(const fm_layer *plan, int64_t L) {
    int64_t m = plan[0].fan_in;
    for (int64_t l = 0; l < L; l++) m = plan[l].fan_out > m ? plan[l].fan_out : m;
    return m;
}

/* Room for one gathered target row: an int64 label or K values (the larger, so that one
 * workspace serves every loss). */
static size_t target_row_bytes(const fm_layer *plan, int64_t L, size_t elem) {
    size_t k = (size_t)plan[L - 1].fan_out * elem;
    return k > sizeof(int64_t) ? k : sizeof(int64_t);
}

/* One past the last parameter the plan uses. */
static int64_t plan_extent(const fm_layer *plan, int64_t L) {
    int64_t e = 0;
    for (int64_t l = 0; l < L; l++) {
        int64_t w = plan[l].w_off + plan[l].fan_in * plan[l].fan_out;
        int64_t b = plan[l].b_off + plan[l].fan_out;
        e = w > e ? w : e;
        e = b > e ? b : e;
    }
    return e;
}

/* Whether inference of batches of B rows runs anything on several threads (note 12): a
 * product (gemm.h: the smallest that threads), or a pass over the outputs. */
static int forward_uses_threads(const fm_layer *plan, int64_t L, int64_t B) {
    for (int64_t l = 0; l < L; l++) {
        double bo = (double)B * (double)plan[l].fan_out;
        if (bo * (double)plan[l].fan_in >= FM_GEMM_DIRECT_PAR_MIN || bo >= 32768.0) return 1;
    }
    return 0;
}

/* Whether nt threads may change anything in a plain step of batch B (note 12): a product,
 * the gather, or a pass large enough to be threaded. Passes are judged by the smallest of
 * their cut-offs (dense.c's 32768 values): a step that threads nothing times two equal modes,
 * which costs nothing. */
static int uses_threads(const fm_layer *plan, int64_t L, int64_t B, size_t elem) {
    return (double)B * (double)plan[0].fan_in * (double)elem >= GATHER_PAR_MIN ||
           forward_uses_threads(plan, L, B) || plan_extent(plan, L) >= 32768;
}

/* The units of all layers (one fired-unit flag each). */
static int64_t plan_units(const fm_layer *plan, int64_t L) {
    int64_t u = 0;
    for (int64_t l = 0; l < L; l++) u += plan[l].fan_out;
    return u;
}

/* Bytes of one block's sums of squares (3 per layer) and bounds (3), a cache line apart
 * (note 11). */
static size_t team_sq_bytes(int64_t L) { return round64((size_t)(3 * L + 3) * sizeof(double)); }

/* The blocks a workspace for batches of up to max_batch rows keeps room for: team_size at the
 * largest batch whose products all stay under TEAM_MAX_MNK (team_size of any smaller batch
 * is 1 or the same). */
static int team_reserved(const fm_layer *plan, int64_t L, int64_t max_batch, int nt) {
    double io = 0.0;
    for (int64_t l = 0; l < L; l++) {
        double v = (double)plan[l].fan_in * (double)plan[l].fan_out;
        io = v > io ? v : io;
    }
    double cap = ceil(TEAM_MAX_MNK / io) - 1.0;
    int64_t B = (double)max_batch < cap ? max_batch : (int64_t)cap;
    return B >= 1 ? team_size(plan, L, B, nt) : 1;
}

size_t fm_workspace_bytes(const fm_layer *plan, int64_t L, int64_t max_batch, size_t elem,
                          int nt) {
    size_t B = (size_t)max_batch;
    size_t n = round64(B * (size_t)plan[0].fan_in * elem);
    n += round64(B * target_row_bytes(plan, L, elem));
    n += round64(B * elem) + round64(B * sizeof(double));
    for (int64_t l = 0; l < L; l++) {
        n += round64(B * (size_t)plan[l].fan_out * elem);
        if (plan[l].skip != FM_SKIP_NONE) n += round64(B * (size_t)plan[l].fan_out * elem);
    }
    n += 3 * round64(B * (size_t)max_width(plan, L) * elem);
    n += round64(sizeof(fm_tune));
    n += round64(fm_gemm_work_bytes(nt));
    size_t q = (size_t)team_reserved(plan, L, max_batch, nt);
    if (q > 1)
        n += q * (round64((size_t)plan_extent(plan, L) * elem) + team_sq_bytes(L)) +
             (q - 1) * round64((size_t)plan_units(plan, L));
    return n + 64;  /* room to align the start */
}

/* Note 14: the writer's side of the count; seq may be NULL (no readers to tell). */
static void seq_write_begin(int64_t *seq) {
    if (!seq) return;
    __atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);  /* the odd count before any parameter write */
}

static void seq_write_end(int64_t *seq) {
    if (!seq) return;
    __atomic_store_n(seq, __atomic_load_n(seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
}

int64_t fm_seq_read(const int64_t *seq, int after) {
    if (after) __atomic_thread_fence(__ATOMIC_ACQUIRE);  /* the parameter reads come first */
    return __atomic_load_n(seq, after ? __ATOMIC_RELAXED : __ATOMIC_ACQUIRE);
}

#define SNAPSHOT(T, SFX)                                                                  \
    void fm_params_snapshot_##SFX(T *out, const T *params, int64_t n, const int64_t *seq) { \
        for (;;) {                                                                        \
            int64_t s0 = fm_seq_read(seq, 0);                                             \
            if (s0 & 1) continue;  /* an update is writing */                             \
            memcpy(out, params, (size_t)n * sizeof(T));                                   \
            if (fm_seq_read(seq, 1) == s0) return;                                        \
        }                                                                                 \
    }
SNAPSHOT(float, f32)
SNAPSHOT(double, f64)

#define T float
#define TMAX FLT_MAX
#define S(name) name##_f32
#include "engine_t.h"
#undef T
#undef TMAX
#undef S
#define T double
#define TMAX DBL_MAX
#define S(name) name##_f64
#include "engine_t.h"
#undef T
#undef TMAX
#undef S
