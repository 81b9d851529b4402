# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True
"""The one bridge between Python and the C core (csrc/).

Design notes
1. This module checks what C cannot (dtype, contiguity, shapes) once per call, releases the GIL
   around every C call, and turns C status codes into Python exceptions. It does no numerical
   work of its own. Outputs are passed in by the caller, already allocated.
2. Arrays arrive as C-contiguous typed memoryviews of one float type (``floating``: float32 or
   float64); the Python classes convert user input once, at their boundary. ``# IN`` / ``# OUT``
   mark which buffers a call reads and which it writes.
3. The network plan is an int64 array of shape (n_layers, 6) whose rows are the C struct
   fm_layer (fan_in, fan_out, w_off, b_off, act, skip); it is checked by fm_plan_check on every
   engine call, so no C loop can index outside the parameter buffer.
4. Compiler directives are set once at the top; building with FASTMLP_DEBUG=1 turns bounds
   checks back on (setup.py).
5. Every call that takes a thread count passes it through fm_team first: in a child forked
   from a process that had asked for a team it becomes 1 (csrc/config.c).
"""
from cython cimport floating
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset
import numpy as np

from fastmlp._core cimport *

fm_gemm_init()
fm_fork_guard()

ACTIVATIONS = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3}
LOSSES = {"squared": FM_LOSS_SQUARED, "cross_entropy": FM_LOSS_SOFTMAX_CE,
          "binary_cross_entropy": FM_LOSS_SIGMOID_BCE, "half_squared": FM_LOSS_HALF_SQUARED}
SKIPS = {"none": FM_SKIP_NONE, "residual": FM_SKIP_RESIDUAL, "preact": FM_SKIP_PREACT}
OPTIMIZERS = {"sgd": FM_OPT_SGD, "momentum": FM_OPT_MOMENTUM, "nesterov": FM_OPT_NESTEROV,
              "adam": FM_OPT_ADAM}
MAX_LAYERS = FM_MAX_LAYERS
# the phases train_steps can time (engine.c note 15), in the order of its `phases` array
PHASES = ("gather", "forward", "backward", "reduce", "norms", "update", "wait")
assert len(PHASES) == FM_PHASES and PHASES.index("wait") == FM_PHASE_WAIT
TUNE_DOUBLES = FM_TUNE_BYTES // 8  # forward's timing record (doubles: 8-byte aligned)


class NonFiniteError(FloatingPointError):
    """A batch's loss, gradient or update is not finite; the step was not applied.

    Attributes: ``what`` ('loss', 'gradient', 'L2 term ...' or 'update ...'), ``kind`` (one
    of NONFINITE_KINDS), ``step`` (index within the epoch), ``layer`` (first layer with a
    non-finite gradient, or -1), ``stats`` (figures of the steps done).
    """

    def __init__(self, what, step, layer, stats, kind):
        where = f" in layer {layer}" if layer >= 0 else ""
        super().__init__(f"non-finite {what}{where} at step {step}")
        self.what, self.step, self.layer, self.stats = what, step, layer, stats
        self.kind = kind

    def __reduce__(self):  # pickled whole, as a worker's exception is sent back
        return (type(self), (self.what, self.step, self.layer, self.stats, self.kind),
                self.__dict__)


# What a refused step met (train_steps): NonFiniteError.kind and its `what`.
NONFINITE_KINDS = {
    FM_ENONFINITE_LOSS: ("loss", "loss"),
    FM_ENONFINITE_GRAD: ("gradient", "gradient"),
    FM_ENONFINITE_L2: ("l2", "L2 term of the loss (l2 / 2) ||W||^2"),
    FM_EOVERFLOW_STATE: ("adam-state", "update (the gradient's square would overflow Adam's "
                                       "second moment)"),
    FM_EOVERFLOW_STEP: ("overflow", "update (it would overflow the parameters)"),
}


cdef int _check(int rc, str where) except -1:
    if rc == FM_OK:
        return 0
    if rc == FM_ELABEL:
        raise ValueError(f"{where}: a class label is outside [0, n_outputs)")
    raise ValueError(f"{where}: invalid sizes or arguments (status {rc})")


cdef int _engine_threads(int nthreads, str where) except -1:
    """fm_team(nthreads) for an engine call, which needs at least one thread."""
    if nthreads < 1:
        raise ValueError(f"{where}: nthreads must be at least 1, got {nthreads}")
    return fm_team(nthreads)


def _work(int nt):
    return np.empty(fm_gemm_work_bytes(nt) + 64, dtype=np.uint8)


cdef int _act_code(act) except -1:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act]


# ---------------------------------------------------------------- configuration

def build_flags():
    return fm_build_flags().decode()


def openmp_enabled():
    return bool(fm_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size for the calling thread (OMP_NUM_THREADS, threadpoolctl)."""
    return fm_omp_max_threads()


def omp_thread_limit():
    """The most threads an OpenMP team may have (OMP_THREAD_LIMIT)."""
    return fm_omp_thread_limit()


def omp_num_procs():
    return fm_omp_num_procs()


def omp_place_procs():
    """The processors in OpenMP's places, each once (all it may use where it has none)."""
    return fm_omp_place_procs()


def omp_binds():
    """Whether OpenMP binds its threads to places (OMP_PROC_BIND, OMP_PLACES)."""
    return bool(fm_omp_binds())


def spread_threads(int nthreads):
    """Move the workers of a team of nthreads that share a CPU with a lower thread to CPUs of
    their masks that no thread of the team is on (csrc/config.c note 1); the engine does this
    before it times many threads against one."""
    nthreads = fm_team(nthreads)  # note 5
    with nogil:
        fm_spread_threads(nthreads)


def team_cpus(int nthreads):
    """The CPU each thread of a team of nthreads is on (-1 where unknown), for tests."""
    nthreads = fm_team(nthreads)  # note 5
    if nthreads < 1 or nthreads > 256:
        raise ValueError(f"nthreads must be in [1, 256], not {nthreads}")
    cdef int cpu[256]
    cdef int q
    with nogil:
        q = fm_team_cpus(nthreads, cpu)
    return [cpu[t] for t in range(q)]


def fork_child():
    """Whether this process was forked from one that had asked for a team of threads; every
    call here then runs on one thread (csrc/config.c, fm_team)."""
    return bool(fm_fork_child())


def fp_flush(on=None):
    """Whether the calling thread flushes numbers below the normal range to zero (x86 FTZ or
    DAZ, csrc/fpmode.h); with on=True or False, first turns both on or off for this thread and
    returns what it was (for tests and diagnostics). The kernels' threads follow the caller's
    setting; training flushes whatever it is."""
    return bool(fm_fp_flush(-1 if on is None else (1 if on else 0)))


def gemm_isa():
    return fm_gemm_isa().decode()


def set_gemm_isa(str name):
    """Force the matrix kernels onto one instruction set; False if the CPU cannot run it."""
    return fm_gemm_set_isa(name.encode()) == 0


def set_team_policy(int policy):
    """How the engine shares a small network's steps among its threads (csrc/engine.c note
    11): -1 when that has been faster (the default), 0 never, 1 always (for tests)."""
    if fm_set_team_policy(policy):
        raise ValueError(f"team policy must be -1, 0 or 1, not {policy}")


def call_holding(tuple locks, tuple messages, f, *args):
    """f(*args) with each threading.Lock of `locks` held, taken without waiting in order; a
    lock another holder has raises RuntimeError(its message) before f runs. The locks are
    taken and given back here, in C: no Python line runs between a lock's taking and the call
    of f, nor between f's return and the lock's release, so a KeyboardInterrupt cannot leave
    one taken, as it could between `lock.acquire()` and `try:` (network.py, fit)."""
    cdef list taken = []
    try:
        for lock, message in zip(locks, messages):
            if not lock.acquire(False):
                raise RuntimeError(message)
            taken.append(lock)
        return f(*args)
    finally:
        for lock in reversed(taken):
            lock.release()


def permutation(int64_t[::1] idx not None, uint64_t seed):
    """idx = a random permutation of 0 .. len(idx) - 1 drawn from seed (engine.c note 13).

    # OUT idx"""
    if idx.shape[0]:
        with nogil:
            fm_permutation(&idx[0], idx.shape[0], seed)


# ---------------------------------------------------------------- kernels

def gemm(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
         bint trans_a=False, bint trans_b=False, int nthreads=1):
    """C = op(A) op(B), op = transpose where asked.  # IN A, B  # OUT C"""
    nthreads = fm_team(nthreads)  # note 5
    cdef Py_ssize_t M = A.shape[1] if trans_a else A.shape[0]
    cdef Py_ssize_t K = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t Kb = B.shape[1] if trans_b else B.shape[0]
    cdef Py_ssize_t N = B.shape[0] if trans_b else B.shape[1]
    if K != Kb or C.shape[0] != M or C.shape[1] != N:
        raise ValueError(f"gemm: shapes do not chain: op(A) {M}x{K}, op(B) {Kb}x{N}, "
                         f"C {C.shape[0]}x{C.shape[1]}")
    cdef unsigned char[::1] work = _work(nthreads)
    cdef int rc
    cdef const floating *pa = NULL
    cdef const floating *pb = NULL
    cdef floating *pc = NULL
    if A.shape[0] and A.shape[1]:
        pa = &A[0, 0]
    if B.shape[0] and B.shape[1]:
        pb = &B[0, 0]
    if M and N:
        pc = &C[0, 0]
    with nogil:
        if floating is float:
            rc = fm_gemm_f32(trans_a, trans_b, M, N, K, pa, A.shape[1], pb, B.shape[1], 0,
                             pc, C.shape[1], NULL, &work[0], nthreads)
        else:
            rc = fm_gemm_f64(trans_a, trans_b, M, N, K, pa, A.shape[1], pb, B.shape[1], 0,
                             pc, C.shape[1], NULL, &work[0], nthreads)
    _check(rc, "gemm")


def act_forward(const floating[::1] Z, floating[::1] A, str act):
    """A = act(Z), element-wise.  # IN Z  # OUT A"""
    if Z.shape[0] != A.shape[0]:
        raise ValueError("act_forward: Z and A differ in size")
    cdef int code = _act_code(act), rc
    cdef Py_ssize_t n = Z.shape[0]
    if n == 0:
        return
    with nogil:
        if floating is float:
            rc = fm_act_forward_f32(&A[0], &Z[0], n, code)
        else:
            rc = fm_act_forward_f64(&A[0], &Z[0], n, code)
    _check(rc, "act_forward")


def act_backward(const floating[::1] dA, const floating[::1] A, floating[::1] dZ, str act):
    """dZ = dA * act'(z), the derivative read from the output A.  # IN dA, A  # OUT dZ"""
    if not (dA.shape[0] == A.shape[0] == dZ.shape[0]):
        raise ValueError("act_backward: dA, A and dZ differ in size")
    cdef int code = _act_code(act), rc
    cdef Py_ssize_t n = A.shape[0]
    if n == 0:
        return
    with nogil:
        if floating is float:
            rc = fm_act_backward_f32(&dZ[0], &dA[0], &A[0], n, code)
        else:
            rc = fm_act_backward_f64(&dZ[0], &dA[0], &A[0], n, code)
    _check(rc, "act_backward")


def dense_forward(const floating[:, ::1] A_in, const floating[:, ::1] W,
                  const floating[::1] b, floating[:, ::1] A_out, str act, int nthreads=1):
    """A_out = act(A_in W + b).  # IN A_in (N, I), W (I, O), b (O)  # OUT A_out (N, O)"""
    nthreads = fm_team(nthreads)  # note 5
    cdef Py_ssize_t N = A_in.shape[0], I = A_in.shape[1], O = W.shape[1]
    if W.shape[0] != I or b.shape[0] != O or A_out.shape[0] != N or A_out.shape[1] != O:
        raise ValueError(f"dense_forward: A_in {N}x{I}, W {W.shape[0]}x{O}, b {b.shape[0]}, "
                         f"A_out {A_out.shape[0]}x{A_out.shape[1]} do not match")
    if N == 0 or I == 0 or O == 0:
        raise ValueError("dense_forward: every dimension must be at least 1")
    cdef int code = _act_code(act), rc
    cdef unsigned char[::1] work = _work(nthreads)
    with nogil:
        if floating is float:
            rc = fm_dense_forward_f32(&A_out[0, 0], &A_in[0, 0], &W[0, 0], &b[0], N, I, O, code,
                                      &work[0], nthreads)
        else:
            rc = fm_dense_forward_f64(&A_out[0, 0], &A_in[0, 0], &W[0, 0], &b[0], N, I, O, code,
                                      &work[0], nthreads)
    _check(rc, "dense_forward")


def dense_backward(const floating[:, ::1] dZ, const floating[:, ::1] A_in,
                   const floating[:, ::1] W, floating[:, ::1] dW, floating[::1] db,
                   floating[:, ::1] dA_in=None, str act_in="identity", int nthreads=1):
    """dW = A_in^T dZ, db = sum_rows dZ, dA_in = (dZ W^T) * act_in'(A_in) when dA_in is given.

    # IN dZ (N, O), A_in (N, I), W (I, O)  # OUT dW (I, O), db (O), dA_in (N, I) or None
    """
    nthreads = fm_team(nthreads)  # note 5
    cdef Py_ssize_t N = dZ.shape[0], O = dZ.shape[1], I = A_in.shape[1]
    if (A_in.shape[0] != N or W.shape[0] != I or W.shape[1] != O or dW.shape[0] != I
            or dW.shape[1] != O or db.shape[0] != O):
        raise ValueError("dense_backward: shapes of dZ, A_in, W, dW, db do not match")
    if dA_in is not None and (dA_in.shape[0] != N or dA_in.shape[1] != I):
        raise ValueError("dense_backward: dA_in must have the shape of A_in")
    if N == 0 or I == 0 or O == 0:
        raise ValueError("dense_backward: every dimension must be at least 1")
    cdef int code = _act_code(act_in), rc
    cdef unsigned char[::1] work = _work(nthreads)
    cdef floating *pdA = NULL
    if dA_in is not None:
        pdA = &dA_in[0, 0]
    with nogil:
        if floating is float:
            rc = fm_dense_backward_f32(&dW[0, 0], &db[0], pdA, &dZ[0, 0], &A_in[0, 0], &W[0, 0],
                                       N, I, O, code, 0, &work[0], nthreads)
        else:
            rc = fm_dense_backward_f64(&dW[0, 0], &db[0], pdA, &dZ[0, 0], &A_in[0, 0], &W[0, 0],
                                       N, I, O, code, 0, &work[0], nthreads)
    _check(rc, "dense_backward")


def loss(const floating[:, ::1] G, Y, floating[:, ::1] dG, double[::1] row_loss, str kind,
         double scale=1.0, double clip=0.0):
    """Per-row losses and dG = scale * dL/dG; returns their sum. clip > 0: the losses of
    probabilities clipped to [clip, 1 - clip] (scikit-learn's report; dG is not clipped).

    # IN G (N, K), Y (N,) int64 labels for 'cross_entropy', else (N, K) like G
    # OUT dG (N, K), row_loss (N)
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; expected one of {sorted(LOSSES)}")
    if not 0.0 <= clip < 0.5:
        raise ValueError(f"loss: clip must be in [0, 0.5), got {clip!r}")
    cdef int code = LOSSES[kind], rc
    cdef Py_ssize_t N = G.shape[0], K = G.shape[1]
    if dG.shape[0] != N or dG.shape[1] != K or row_loss.shape[0] != N or K == 0:
        raise ValueError("loss: G, dG and row_loss do not match")
    cdef const int64_t[::1] lab
    cdef const floating[:, ::1] tgt
    cdef const void *py
    if code == FM_LOSS_SOFTMAX_CE:
        lab = Y
        if lab.shape[0] != N:
            raise ValueError(f"loss: {lab.shape[0]} labels for {N} rows")
        py = &lab[0] if N else NULL
    else:
        tgt = Y
        if tgt.shape[0] != N or tgt.shape[1] != K:
            raise ValueError("loss: targets must have the shape of G")
        py = &tgt[0, 0] if N else NULL
    cdef double total = 0.0
    if N == 0:
        return 0.0
    with nogil:
        if floating is float:
            rc = fm_loss_f32(&dG[0, 0], &row_loss[0], &total, &G[0, 0], py, N, K, code, scale,
                             clip)
        else:
            rc = fm_loss_f64(&dG[0, 0], &row_loss[0], &total, &G[0, 0], py, N, K, code, scale,
                             clip)
    _check(rc, "loss")
    return total


def norm(const floating[::1] g, int nthreads=1):
    """L2 norm of g, accumulated in double; finite whenever the true norm is. The same value
    for any nthreads."""
    nthreads = fm_team(nthreads)  # note 5
    if g.shape[0] == 0:
        return 0.0
    cdef double s
    with nogil:
        if floating is float:
            s = fm_norm_nt_f32(&g[0], g.shape[0], nthreads)
        else:
            s = fm_norm_nt_f64(&g[0], g.shape[0], nthreads)
    return s


def l2_grad(floating[::1] g, const floating[::1] w, double a, int nthreads=1):
    """g += a w in one pass that also takes both norms; returns (||g|| after, ||w||), each
    the value norm() gives.  # IN w  # OUT g"""
    nthreads = fm_team(nthreads)  # note 5
    if g.shape[0] != w.shape[0]:
        raise ValueError("l2_grad: g and w differ in size")
    if g.shape[0] == 0:
        return 0.0, 0.0
    cdef double gn, wn
    with nogil:
        if floating is float:
            gn = fm_l2_grad_f32(&g[0], &w[0], g.shape[0], a, nthreads, &wn)
        else:
            gn = fm_l2_grad_f64(&g[0], &w[0], g.shape[0], a, nthreads, &wn)
    return gn, wn


def clip(floating[::1] g, double tau):
    """Scale g in place by min(1, tau/||g||) (tau <= 0: never); returns ||g|| before."""
    if g.shape[0] == 0:
        return 0.0
    cdef double norm
    with nogil:
        if floating is float:
            norm = fm_clip_f32(&g[0], g.shape[0], tau)
        else:
            norm = fm_clip_f64(&g[0], g.shape[0], tau)
    return norm


def sgd_update(floating[::1] p, const floating[::1] g, double lr, int nthreads=1):
    """p -= lr * g.  # IN g  # OUT p"""
    nthreads = fm_team(nthreads)  # note 5
    if p.shape[0] != g.shape[0]:
        raise ValueError("sgd_update: p and g differ in size")
    if p.shape[0] == 0:
        return
    with nogil:
        if floating is float:
            fm_sgd_update_f32(&p[0], &g[0], p.shape[0], lr, nthreads)
        else:
            fm_sgd_update_f64(&p[0], &g[0], p.shape[0], lr, nthreads)


def opt_update(floating[::1] p, floating[::1] s1, floating[::1] s2, const floating[::1] g,
               str kind, double lr, double c=1.0, double momentum=0.0, double beta1=0.9,
               double beta2=0.999, double eps=1e-8, int nthreads=1):
    """One optimizer step (fm_opt_update); returns (max |p|, max |state|).

    # IN g  # OUT p, s1 (velocity or m), s2 (v; Adam only). lr is Adam's lr_t."""
    nthreads = fm_team(nthreads)  # note 5
    cdef int code = OPTIMIZERS[kind]
    cdef Py_ssize_t n = p.shape[0]
    if g.shape[0] != n or (code != FM_OPT_SGD and (s1 is None or s1.shape[0] != n)) or (
            code == FM_OPT_ADAM and (s2 is None or s2.shape[0] != n)):
        raise ValueError("opt_update: p, g and the state differ in size")
    cdef double pm = 0.0, sm = 0.0
    cdef floating *q1 = NULL
    cdef floating *q2 = NULL
    if n == 0:
        return pm, sm
    if code != FM_OPT_SGD:
        q1 = &s1[0]
    if code == FM_OPT_ADAM:
        q2 = &s2[0]
    with nogil:
        if floating is float:
            pm = fm_opt_update_f32(&p[0], q1, q2, &g[0], n, code, lr, c, momentum, beta1,
                                   beta2, eps, &sm, nthreads)
        else:
            pm = fm_opt_update_f64(&p[0], q1, q2, &g[0], n, code, lr, c, momentum, beta1,
                                   beta2, eps, &sm, nthreads)
    return pm, sm


# ---------------------------------------------------------------- engine

cdef const fm_layer *_plan(const int64_t[:, ::1] plan, Py_ssize_t n_params) except NULL:
    if plan.shape[1] != 6 or plan.shape[0] < 1:
        raise ValueError("plan must have shape (n_layers, 6)")
    cdef const fm_layer *p = <const fm_layer *> &plan[0, 0]
    if fm_plan_check(p, plan.shape[0], n_params) != FM_OK:
        raise ValueError("invalid network plan")
    return p


def workspace_bytes(const int64_t[:, ::1] plan, int64_t max_batch, int itemsize, int nthreads):
    """Bytes of engine workspace for batches of up to max_batch rows (any loss)."""
    cdef const fm_layer *p = _plan(plan, 1 << 62)
    return fm_workspace_bytes(p, plan.shape[0], max_batch, itemsize, nthreads)


cdef const void *_targets(Y, int code, Py_ssize_t n, Py_ssize_t K,
                         const floating *kind) except NULL:
    cdef const int64_t[::1] lab
    cdef const floating[:, ::1] tgt
    if code == FM_LOSS_SOFTMAX_CE:
        lab = Y
        if lab.shape[0] != n:
            raise ValueError(f"{lab.shape[0]} labels for {n} rows")
        return &lab[0]
    tgt = Y
    if tgt.shape[0] != n or tgt.shape[1] != K:
        raise ValueError(f"targets of shape ({tgt.shape[0]}, {tgt.shape[1]}), "
                         f"expected ({n}, {K})")
    return &tgt[0, 0]


def train_steps(const int64_t[:, ::1] plan, str loss, floating[::1] params,
                floating[::1] grads, floating[::1] state, unsigned char[::1] ws,
                int64_t max_batch, const floating[:, ::1] X, Y, const floating[::1] sw,
                const int64_t[::1] idx, int64_t batch_size, int64_t step_begin,
                int64_t step_end, tuple opt, double[:, ::1] layer_stats,
                unsigned char[::1] active, int nthreads, double param_max=-1.0,
                double state_max=-1.0, int state_held=-1, tuple sums=None,
                int64_t[::1] t_out=None,
                int64_t[::1] seq=None, double[::1] phases=None):
    """Run steps [step_begin, step_end) of an epoch (engine.c); returns the figures.

    # IN plan, X (n, I0), Y, sw (n) or None, idx (n) or None
    # OUT params, grads, state, ws, layer_stats (L, 4) +=, active (sum of fan_outs) |=
    opt = (kind, lr, clip_norm, momentum, beta1, beta2, eps, l2, t[, loss_clip]) with kind a
    key of OPTIMIZERS and loss_clip fm_loss's clip of the reported loss (default 0); state
    holds n_params values (momentum), 2 n_params (adam) or is None (sgd).
    param_max, state_max: bounds of the largest |parameter| and |state| (engine.c note 7), e.g.
    from the last call, or -1 to have them measured (one pass); state_held: whether Adam's
    state meets the bound of every gradient history (note 7), from the last call, or -1 to
    have it measured with state_max. sums: the epoch's running
    (loss_sum, norm_sum, reg_sum) from the last call, which this call goes on adding to, so
    that they do not depend on how an epoch is split into calls; None: from 0. t_out: one
    int64 that gets the optimizer's step count as the engine leaves it, written before this
    function returns (so a KeyboardInterrupt raised as it returns cannot lose it). seq: one
    int64, the parameters' sequence count (engine.c note 14), odd while an update writes them.
    phases: len(PHASES) doubles that get the seconds thread 0 spent in each phase added
    (engine.c note 15), or None: not timed.
    Returns (loss_sum, norm_sum, norm_max, rows, steps, clipped, param_max, state_max, reg_sum,
    t, state_held).
    """
    nthreads = _engine_threads(nthreads, "train_steps")  # note 5
    cdef Py_ssize_t L = plan.shape[0], n = X.shape[0], l, width = 0
    cdef const fm_layer *p = _plan(plan, params.shape[0])
    cdef int code = LOSSES[loss], rc
    cdef fm_opt o
    o.kind = OPTIMIZERS[opt[0]]
    o.lr, o.clip_norm, o.momentum, o.beta1, o.beta2, o.eps, o.l2 = opt[1:8]
    o.t = opt[8]
    o.loss_clip = opt[9] if len(opt) > 9 else 0.0
    if grads.shape[0] != params.shape[0] or X.shape[1] != p[0].fan_in or n < 1:
        raise ValueError("train_steps: params, grads and X do not match the plan")
    cdef Py_ssize_t n_state = (0 if o.kind == FM_OPT_SGD else
                               2 if o.kind == FM_OPT_ADAM else 1) * params.shape[0]
    if n_state and (state is None or state.shape[0] != n_state):
        raise ValueError(f"train_steps: the optimizer needs a state of {n_state} values")
    if not (o.lr > 0 and o.momentum >= 0 and o.l2 >= 0 and o.t >= 0 and 0 <= o.beta1 < 1
            and 0 <= o.beta2 < 1 and o.eps > 0 and 0 <= o.loss_clip < 0.5):
        raise ValueError(f"train_steps: invalid optimizer settings {opt}")
    if layer_stats.shape[0] != L or layer_stats.shape[1] != 4:
        raise ValueError("train_steps: layer_stats must have shape (n_layers, 4)")
    for l in range(L):
        width += p[l].fan_out
    if active is not None and active.shape[0] != width:
        raise ValueError(f"train_steps: active must have {width} entries")
    if sw is not None and sw.shape[0] != n:
        raise ValueError("train_steps: sw must have one entry per row")
    if idx is not None and idx.shape[0] != n:
        raise ValueError("train_steps: idx must have one entry per row")
    if batch_size < 1 or batch_size > max_batch:
        raise ValueError("train_steps: batch_size outside [1, max_batch]")
    if <size_t> ws.shape[0] < fm_workspace_bytes(p, L, max_batch, sizeof(floating), nthreads):
        raise ValueError("train_steps: workspace too small")
    cdef const void *py = _targets(Y, code, n, p[L - 1].fan_out, &params[0])
    cdef const int64_t *pidx = NULL
    cdef const floating *psw = NULL
    cdef floating *pstate = NULL
    cdef unsigned char *pact = NULL
    cdef Py_ssize_t i, bad = -1
    if idx is not None:
        with nogil:
            for i in range(n):
                if idx[i] < 0 or idx[i] >= n:
                    bad = i
                    break
        if bad >= 0:
            raise ValueError(f"train_steps: idx[{bad}] = {idx[bad]} is outside [0, {n})")
        pidx = &idx[0]
    if sw is not None:
        psw = &sw[0]
    if n_state:
        pstate = &state[0]
    if active is not None:
        pact = &active[0]
    cdef fm_stats st
    memset(&st, 0, sizeof(st))
    st.bad_step = -1
    st.bad_layer = -1
    st.param_max = param_max
    st.state_max = state_max
    st.state_held = state_held
    if sums is not None:
        st.loss_sum, st.norm_sum, st.reg_sum = sums
    if t_out is not None and t_out.shape[0] != 1:
        raise ValueError("train_steps: t_out must hold one value")
    if seq is not None:
        if seq.shape[0] != 1:
            raise ValueError("train_steps: seq must hold one value")
        st.seq = &seq[0]
    if phases is not None:
        if phases.shape[0] != FM_PHASES:
            raise ValueError(f"train_steps: phases must hold {FM_PHASES} values")
        st.phase = &phases[0]
    with nogil:
        if floating is float:
            rc = fm_train_steps_f32(p, L, code, &params[0], &grads[0], pstate, &ws[0],
                                    max_batch, &X[0, 0], py, psw, pidx, n, batch_size,
                                    step_begin, step_end, &o, &st, &layer_stats[0, 0], pact,
                                    nthreads)
        else:
            rc = fm_train_steps_f64(p, L, code, &params[0], &grads[0], pstate, &ws[0],
                                    max_batch, &X[0, 0], py, psw, pidx, n, batch_size,
                                    step_begin, step_end, &o, &st, &layer_stats[0, 0], pact,
                                    nthreads)
    if t_out is not None:
        t_out[0] = o.t
    stats = (st.loss_sum, st.norm_sum, st.norm_max, st.rows, st.steps, st.clipped,
             st.param_max, st.state_max, st.reg_sum, o.t, st.state_held)
    if rc in NONFINITE_KINDS:
        kind, what = NONFINITE_KINDS[rc]
        layer = st.bad_layer if rc == FM_ENONFINITE_GRAD else -1
        raise NonFiniteError(what, st.bad_step, layer, stats, kind)
    _check(rc, "train_steps")
    return stats


def params_snapshot(floating[::1] out, const floating[::1] params, const int64_t[::1] seq):
    """out = params as they stand between two updates of a fit that counts them in seq
    (engine.c note 14).  # IN params, seq  # OUT out"""
    if out.shape[0] != params.shape[0] or seq.shape[0] != 1:
        raise ValueError("params_snapshot: out and params differ in size, or seq is not one "
                         "value")
    if out.shape[0] == 0:
        return
    with nogil:
        if floating is float:
            fm_params_snapshot_f32(&out[0], &params[0], out.shape[0], &seq[0])
        else:
            fm_params_snapshot_f64(&out[0], &params[0], out.shape[0], &seq[0])


def seq_read(const int64_t[::1] seq, bint after=False):
    """The parameters' sequence count: read before reading them (acquire), or after
    (after=True: behind an acquire fence)."""
    if seq.shape[0] != 1:
        raise ValueError("seq_read: seq must hold one value")
    return fm_seq_read(&seq[0], after)


def forward(const int64_t[:, ::1] plan, const floating[::1] params, unsigned char[::1] ws,
            int64_t max_batch, const floating[:, ::1] X, floating[:, ::1] out, int nthreads,
            unsigned char[::1] active=None, double[::1] tune=None):
    """The last layer's output for every row of X; marks fired ReLU units in active. tune
    (TUNE_DOUBLES zeros at first) keeps the timing of one thread against nthreads between
    calls; None keeps it in ws.

    # IN X (n, I0)  # OUT out (n, K), active (sum of fan_outs) |=, tune"""
    nthreads = _engine_threads(nthreads, "forward")  # note 5
    cdef Py_ssize_t L = plan.shape[0], n = X.shape[0], l, width = 0
    cdef const fm_layer *p = _plan(plan, params.shape[0])
    cdef int rc
    cdef unsigned char *pact = NULL
    cdef void *ptune = NULL
    if tune is not None:
        if tune.shape[0] * sizeof(double) < FM_TUNE_BYTES:
            raise ValueError(f"forward: tune must have {TUNE_DOUBLES} entries")
        ptune = &tune[0]
    if X.shape[1] != p[0].fan_in or out.shape[0] != n or out.shape[1] != p[L - 1].fan_out:
        raise ValueError("forward: X or out does not match the plan")
    if max_batch < 1 or <size_t> ws.shape[0] < fm_workspace_bytes(p, L, max_batch,
                                                                  sizeof(floating), nthreads):
        raise ValueError("forward: workspace too small")
    for l in range(L):
        width += p[l].fan_out
    if active is not None:
        if active.shape[0] != width:
            raise ValueError(f"forward: active must have {width} entries")
        pact = &active[0]
    if n == 0:
        return
    with nogil:
        if floating is float:
            rc = fm_forward_f32(p, L, &params[0], &ws[0], max_batch, &X[0, 0], n, &out[0, 0],
                                pact, nthreads, ptune)
        else:
            rc = fm_forward_f64(p, L, &params[0], &ws[0], max_batch, &X[0, 0], n, &out[0, 0],
                                pact, nthreads, ptune)
    _check(rc, "forward")


def loss_and_grad(const int64_t[:, ::1] plan, str loss, const floating[::1] params,
                  floating[::1] grads, unsigned char[::1] ws, int64_t max_batch,
                  const floating[:, ::1] X, Y, int nthreads):
    """Mean loss over all rows of X and its gradient into grads.  # OUT grads"""
    nthreads = _engine_threads(nthreads, "loss_and_grad")  # note 5
    cdef Py_ssize_t L = plan.shape[0], n = X.shape[0]
    cdef const fm_layer *p = _plan(plan, params.shape[0])
    cdef int code = LOSSES[loss], rc
    if grads.shape[0] != params.shape[0] or X.shape[1] != p[0].fan_in or n < 1:
        raise ValueError("loss_and_grad: params, grads and X do not match the plan")
    if max_batch < 1 or <size_t> ws.shape[0] < fm_workspace_bytes(p, L, max_batch,
                                                                  sizeof(floating), nthreads):
        raise ValueError("loss_and_grad: workspace too small")
    cdef const void *py = _targets(Y, code, n, p[L - 1].fan_out, &params[0])
    cdef double out = 0.0
    with nogil:
        if floating is float:
            rc = fm_loss_and_grad_f32(p, L, code, &params[0], &grads[0], &ws[0], max_batch,
                                      &X[0, 0], py, n, &out, nthreads)
        else:
            rc = fm_loss_and_grad_f64(p, L, code, &params[0], &grads[0], &ws[0], max_batch,
                                      &X[0, 0], py, n, &out, nthreads)
    if rc == FM_ENONFINITE_LOSS:
        raise FloatingPointError("the loss is not finite for this data and these weights")
    _check(rc, "loss_and_grad")
    return out
