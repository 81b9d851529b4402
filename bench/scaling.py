"""How fastmlp's epoch time grows with the rows of the data and with the width of the network.

    python bench/scaling.py                 # rows 1e3..1e6 (W1, W2 shapes), widths 64..2048
    python bench/scaling.py --quick         # rows up to 1e5, widths up to 1024
    python bench/scaling.py --numpy         # the NumPy trainer beside fastmlp (slower)

Rows: the W1 network (2-8-8-1 tanh, batch 10) and the W2 network (64-128-64-10 relu, batch
32) on 1e3, 1e4, 1e5 and 1e6 rows (W1's circle data drawn anew, the digits tiled). A cost linear
in rows shows as a constant time per row. Width: 784-w-w-10 relu softmax, batch 128, on 4096
random rows, w from 64 to 2048; the flops grow as w^2, so GFLOP/s is the figure to read.

Each point: one warm-up epoch, then the median of `--repeats` epochs of fastmlp's engine
(``_core.train_steps`` over a fresh permutation each epoch, as in peers.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _variant(base, sizes=None):
    wl = _common.WORKLOADS[base]
    return _common.Workload(wl.name, wl.title, sizes or wl.sizes, wl.activation, wl.output,
                            wl.n, wl.batch, wl.lr, wl.epochs, wl.quick_epochs)


def time_epochs(wl, n, repeats, threads, impls):
    """Median seconds per epoch of each implementation on n rows of wl's data."""
    from _trainers import TRAINERS
    X, y = _common.make_data(wl, n)
    trainers = [TRAINERS[i](wl, _common.initial_network(wl), X, y, threads) for i in impls]
    rng = np.random.default_rng(5)
    times = {t.name: [] for t in trainers}
    for r in range(repeats + 1):
        perm = rng.permutation(n).astype(np.int64)
        for t in trainers:
            t.prepare(perm)
            t0 = time.perf_counter()
            t.run()
            if r:
                times[t.name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--numpy", action="store_true", help="time the NumPy trainer too")
    p.add_argument("--threads", type=_common.threads, default=_common.n_cpus())
    p.add_argument("--repeats", type=_common.count, default=3)
    a = p.parse_args()
    from threadpoolctl import threadpool_limits
    impls = ["fastmlp"] + (["numpy"] if a.numpy else [])
    print(f"fastmlp scaling benchmark ({a.threads} threads, median of {a.repeats} epochs)")
    for line in _common.machine_lines():
        print("  " + line)
    rows = [1000, 10000, 100000] + ([] if a.quick else [1000000])
    widths = [64, 128, 256, 512, 1024] + ([] if a.quick else [2048])
    with threadpool_limits(a.threads, user_api="blas"):
        print("\n| network | rows | " + " | ".join(f"{i} s/epoch | {i} us/row"
                                                  for i in impls) + " |")
        print("|---|---|" + "---|---|" * len(impls))
        for base in ("W1", "W2"):
            wl = _variant(base)
            shape = "-".join(map(str, wl.sizes)) + f", batch {wl.batch}"
            for n in rows:
                t = time_epochs(wl, n, a.repeats, a.threads, impls)
                cells = " | ".join(f"{t[i]:.4g} | {1e6 * t[i] / n:.3g}" for i in impls)
                print(f"| {shape} | {n} | {cells} |", flush=True)
        n = 4096
        print(f"\n| network | rows | " + " | ".join(f"{i} s/epoch | {i} GFLOP/s"
                                                   for i in impls) + " |")
        print("|---|---|" + "---|---|" * len(impls))
        for w in widths:
            wl = _variant("W3", (784, w, w, 10))
            t = time_epochs(wl, n, a.repeats, a.threads, impls)
            flops = _common.flops_per_row(wl.sizes) * n
            cells = " | ".join(f"{t[i]:.4g} | {flops / t[i] / 1e9:.3g}" for i in impls)
            print(f"| 784-{w}-{w}-10, batch 128 | {n} | {cells} |", flush=True)
    print(f"\n  load average (1, 5, 15 min) at the end: {_common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
