"""Shared parts of the benchmark scripts: environment, machine, FMA peak probe, workloads, data.

Design notes
1. On some processors this machine sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which make a
   current NumPy's OpenBLAS pick slower kernels. A benchmark removes both from its own
   environment and re-executes itself before NumPy is imported (``clean_blas_env``); the test
   suite under tests/ leaves them alone.
2. The FMA peak comes from a tiny C loop compiled at run time with the system C compiler:
   12 independent vector accumulators (more than FMA latency x FMA ports on any x86 core we
   know), one OpenMP thread per core, best of five runs. NumPy's matmul is no peak probe.
3. Flops of a training step are counted, not measured: forward 2 I O per row and layer, the
   weight gradient 2 I O, the input gradient 2 I O for every layer but the first (no
   implementation computes the gradient of the data). Every implementation is charged the
   same count, so GFLOP/s are comparable.
4. Data are synthetic with fixed seeds except the digits, which ship inside scikit-learn.
"""
import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def seconds(text):
    """argparse type: a finite number of seconds >= 0 (a pause)."""
    v = float(text)
    if not 0.0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return v


def count(text):
    """argparse type: a whole number >= 1 (epochs, rounds, repeats, rows)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def counts(text):
    """argparse type: a comma-separated list of whole numbers >= 1."""
    return [count(x) for x in text.split(",")]


def name_list(choices, what):
    """argparse type: a comma-separated list of at least one of `choices` (a `what` each)."""
    def parse(text):
        names = [x.strip() for x in text.split(",") if x.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"names no {what}")
        for x in names:
            if x not in choices:
                raise argparse.ArgumentTypeError(f"unknown {what} {x!r}; choose from "
                                                 f"{', '.join(choices)}")
        return names
    return parse


def threads(text):
    """argparse type: a thread count from 1 to the CPUs this process may use. More would time
    the machine's oversubscription, not the implementations (fastmlp itself clamps to the CPUs,
    OpenBLAS to its build's limit, each silently)."""
    v = count(text)
    if v > n_cpus():
        raise argparse.ArgumentTypeError(f"{v} threads is more than the {n_cpus()} CPUs this "
                                         f"process may use")
    return v


def json_path(text):
    """argparse type: a file the run can write its figures to, checked before the run."""
    path = os.path.abspath(text)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file name")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {parent} is not a writable "
                                         f"directory")
    return text


def clean_blas_env():
    """Re-execute this process without the OpenBLAS overrides (call before importing NumPy)."""
    if not any(k in os.environ for k in BLAS_OVERRIDES):
        return
    env = {k: v for k, v in os.environ.items() if k not in BLAS_OVERRIDES}
    env["FASTMLP_BENCH_REMOVED"] = ",".join(k for k in BLAS_OVERRIDES if k in os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


# ------------------------------------------------------------------ machine

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def simd_summary():
    flags = cpu_flags()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq",
              "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "unknown"


def n_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


def blas_info():
    """The BLAS libraries NumPy (and SciPy, scikit-learn) run on, as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    rows = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, "
            f"{i.get('num_threads')} threads)" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return "; ".join(rows) or "none found"


def fastmlp_build():
    """The fastmlp being measured: its extension's file date and, in a git checkout, the commit
    (with '+changes' when csrc/ or src/ differ from it)."""
    import datetime
    try:
        from fastmlp import _core
    except ImportError:
        return "fastmlp not importable"
    so = _core.__file__
    when = datetime.datetime.fromtimestamp(os.path.getmtime(so)).strftime("%Y-%m-%d %H:%M")
    text = f"extension built {when}"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(so))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "csrc", "src"],
                               capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            text += f", source commit {head.stdout.strip()}"
            text += " +changes" if dirty.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return text


def machine_lines():
    import numpy as np
    la = load_average()
    lines = [f"CPU: {cpu_model()}, {n_cpus()} CPUs usable, SIMD: {simd_summary()}",
             f"load average (1, 5, 15 min) at start: {la}",
             f"numpy {np.__version__}, BLAS: {blas_info()}"]
    removed = os.environ.get("FASTMLP_BENCH_REMOVED")
    lines.append(f"OpenBLAS overrides removed for this process: {removed or 'none were set'}")
    lines.append(f"fastmlp: {fastmlp_build()}")
    return lines


# ------------------------------------------------------------------ FMA peak probe

_PROBE_C = r"""
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define NACC 12
#if defined(USE512)
  typedef __m512 VS; typedef __m512d VD;
  #define SET_S _mm512_set1_ps
  #define SET_D _mm512_set1_pd
  #define FMA_S _mm512_fmadd_ps
  #define FMA_D _mm512_fmadd_pd
  #define SUM_S(v) _mm512_reduce_add_ps(v)
  #define SUM_D(v) _mm512_reduce_add_pd(v)
  #define WS 16
#else
  typedef __m256 VS; typedef __m256d VD;
  #define SET_S _mm256_set1_ps
  #define SET_D _mm256_set1_pd
  #define FMA_S _mm256_fmadd_ps
  #define FMA_D _mm256_fmadd_pd
  static float SUM_S(__m256 v) { float t[8]; _mm256_storeu_ps(t, v); return t[0] + t[7]; }
  static double SUM_D(__m256d v) { double t[4]; _mm256_storeu_pd(t, v); return t[0] + t[3]; }
  #define WS 8
#endif

volatile double sink;

/* acc = acc * m + c converges to c / (1 - m): no overflow, no denormals. */
#define BODY(V, SET, FMA, SUM, M, C) {                                            \
    V acc[NACC]; const V m = SET(M), c = SET(C);                                   \
    for (int j = 0; j < NACC; j++) acc[j] = SET(1 + j * 1e-3);                     \
    for (long i = 0; i < iters; i++) {                                             \
        acc[0] = FMA(acc[0], m, c); acc[1] = FMA(acc[1], m, c);                    \
        acc[2] = FMA(acc[2], m, c); acc[3] = FMA(acc[3], m, c);                    \
        acc[4] = FMA(acc[4], m, c); acc[5] = FMA(acc[5], m, c);                    \
        acc[6] = FMA(acc[6], m, c); acc[7] = FMA(acc[7], m, c);                    \
        acc[8] = FMA(acc[8], m, c); acc[9] = FMA(acc[9], m, c);                    \
        acc[10] = FMA(acc[10], m, c); acc[11] = FMA(acc[11], m, c);                \
    }                                                                              \
    double s = 0; for (int j = 0; j < NACC; j++) s += SUM(acc[j]);                 \
    sink = s; }

int main(int argc, char **argv) {
    long iters = atol(argv[1]);
    int threads = atoi(argv[2]), dbl = atoi(argv[3]);
    double t0 = omp_get_wtime();
    #pragma omp parallel num_threads(threads)
    {
        if (dbl) BODY(VD, SET_D, FMA_D, SUM_D, 0.9999999, 1e-7)
        else BODY(VS, SET_S, FMA_S, SUM_S, 0.999f, 1e-3f)
    }
    double t = omp_get_wtime() - t0;
    double lanes = dbl ? WS / 2 : WS;
    printf("%.6e\n", 2.0 * lanes * NACC * (double)iters * threads / t);
    return 0;
}
"""

_probe_cache = {}


def _probe_binary():
    if "exe" in _probe_cache:
        return _probe_cache["exe"]
    cc = shutil.which("gcc") or shutil.which("cc")
    flags = cpu_flags()
    exe = None
    if cc and "fma" in flags:
        isa = ["-mavx512f", "-DUSE512"] if "avx512f" in flags else ["-mavx2"]
        d = tempfile.mkdtemp(prefix="fastmlp-fma-")
        atexit.register(shutil.rmtree, d, True)
        src, exe = os.path.join(d, "probe.c"), os.path.join(d, "probe")
        with open(src, "w") as f:
            f.write(_PROBE_C)
        cmd = [cc, "-O2", "-mfma", *isa, "-fopenmp", src, "-o", exe]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            exe = None
        _probe_cache["isa"] = "avx512" if "-DUSE512" in isa else "avx2"
    _probe_cache["exe"] = exe
    return exe


def _probe_rate(threads, double=False, seconds=0.25):
    """One run of the FMA loop for about `seconds` on `threads` threads: FLOP/s, or None."""
    exe = _probe_binary()
    if exe is None:
        return None

    def run(iters):
        out = subprocess.run([exe, str(iters), str(threads), str(int(double))],
                             capture_output=True, text=True, check=True)
        return float(out.stdout)

    key = ("iters", threads, double, seconds)
    if key not in _probe_cache:
        rate = run(1_000_000)
        _probe_cache[key] = max(1_000_000, int(seconds * rate / (2 * 8 * 12 * threads)))
    return run(_probe_cache[key])


def fma_peak(threads, double=False, seconds=0.25, runs=5):
    """Measured FMA peak in GFLOP/s on `threads` threads (None when it cannot be probed).

    The best of `runs` runs: on a loaded machine every run is low, so this is a lower bound.
    """
    key = (threads, double)
    if key not in _probe_cache:
        rates = [_probe_rate(threads, double, seconds) for _ in range(runs)]
        _probe_cache[key] = None if rates[0] is None else max(rates) / 1e9
    return _probe_cache[key]


def fma_scaling(threads, pairs=7, seconds=0.25):
    """The FMA loop's rate on `threads` threads over its rate on one, in `pairs` runs of each,
    alternating: (median, min, max), or None. What a kernel with no serial part and no
    memory traffic would gain from the threads in these minutes; on a shared VM the vCPUs
    are not always equally fast while all of them are busy."""
    ratios = []
    for _ in range(pairs):
        one = _probe_rate(1, seconds=seconds)
        many = _probe_rate(threads, seconds=seconds)
        if one is None or many is None:
            return None
        ratios.append(many / one)
    return statistics.median(ratios), min(ratios), max(ratios)


def probe_isa():
    _probe_binary()
    return _probe_cache.get("isa", "none")


# ------------------------------------------------------------------ workloads

class Workload:
    """One training workload: network shape, data, batch, rate and epochs."""

    def __init__(self, name, title, sizes, activation, output, n, batch, lr, epochs,
                 quick_epochs):
        self.name, self.title = name, title
        self.sizes, self.activation, self.output = tuple(sizes), activation, output
        self.n, self.batch, self.lr = n, batch, lr
        self.epochs, self.quick_epochs = epochs, quick_epochs

    @property
    def squared(self):
        return self.output != "softmax"

    @property
    def fastmlp_lr(self):
        """fastmlp's squared loss has no 1/2: half the rate follows the peers' trajectory."""
        return self.lr / 2 if self.squared else self.lr

    def describe(self):
        shape = "-".join(str(s) for s in self.sizes)
        loss = "squared" if self.squared else "softmax cross-entropy"
        return (f"{self.name} {self.title}: {shape} {self.activation}, {loss}, {self.n} rows, "
                f"batch {self.batch}, lr {self.lr:g} (fastmlp {self.fastmlp_lr:g})")

    def flops_per_epoch(self):
        return flops_per_row(self.sizes) * self.n


def flops_per_row(sizes):
    """Flops of one training row (design note 3)."""
    macs = [sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
    return 4 * sum(macs) + 2 * sum(macs[1:])


WORKLOADS = {
    "W1": Workload("W1", "playground", (2, 8, 8, 1), "tanh", "identity", 1000, 10, 0.03,
                   40, 10),
    "W2": Workload("W2", "digits", (64, 128, 64, 10), "relu", "softmax", 1797, 32, 0.05,
                   40, 10),
    "W2b1": Workload("W2b1", "digits, batch 1", (64, 128, 64, 10), "relu", "softmax", 1797,
                     1, 0.01, 9, 3),
    "W3": Workload("W3", "random 784-d", (784, 512, 512, 10), "relu", "softmax", 60000, 128,
                   0.01, 5, 2),
    "W4": Workload("W4", "random regression", (256, 1024, 1024, 1), "relu", "identity", 20000,
                   256, 0.005, 5, 2),
}


def make_data(wl, n=None):
    """(X float32 (n, I0), y) of a workload: int64 labels for softmax, else float32 (n, 1)."""
    import numpy as np
    n = wl.n if n is None else n
    f32 = np.float32
    if wl.name == "W1":
        # The playground's circle: +1 inside radius 0.5, -1 outside, on [-1, 1]^2.
        rng = np.random.default_rng(1)
        X = rng.uniform(-1, 1, size=(n, 2)).astype(f32)
        y = np.where(np.hypot(X[:, 0], X[:, 1]) < 0.5, 1.0, -1.0).astype(f32)[:, None]
    elif wl.name in ("W2", "W2b1"):
        from sklearn.datasets import load_digits
        d = load_digits()
        reps = -(-n // d.data.shape[0])
        X = np.tile(d.data / 16.0, (reps, 1))[:n].astype(f32)
        y = np.tile(d.target, reps)[:n].astype(np.int64)
    elif wl.name == "W3":
        # Random rows; labels from a random linear teacher, so the loss can fall.
        rng = np.random.default_rng(3)
        X = rng.standard_normal((n, wl.sizes[0]), dtype=f32)
        T = rng.standard_normal((wl.sizes[0], wl.sizes[-1]), dtype=f32)
        y = np.argmax(X @ T, axis=1).astype(np.int64)
    elif wl.name == "W4":
        rng = np.random.default_rng(4)
        X = rng.standard_normal((n, wl.sizes[0]), dtype=f32)
        t = rng.standard_normal(wl.sizes[0], dtype=f32) / np.sqrt(f32(wl.sizes[0]))
        y = (np.tanh(X @ t) + f32(0.1) * rng.standard_normal(n, dtype=f32))[:, None]
        y = y.astype(f32)
    else:
        raise KeyError(wl.name)
    return np.ascontiguousarray(X), np.ascontiguousarray(y)


def initial_network(wl, dtype="float32"):
    """The fastmlp MLP every implementation starts from: seed 0, He init."""
    from fastmlp import MLP
    return MLP(list(wl.sizes), activation=wl.activation, output=wl.output, init="he",
               dtype=dtype, seed=0)


def rss_bytes(field="VmRSS"):
    """A field of /proc/self/status in bytes (VmRSS now, VmHWM the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in /proc/self/status")


def sgd_settings(lr, clip_norm=0.0):
    """The optimizer tuple ``_core.train_steps`` reads, for plain SGD."""
    return ("sgd", lr, clip_norm, 0.0, 0.9, 0.999, 1e-8, 0.0, 0)
