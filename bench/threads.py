"""Four networks fitted one after another, then by four Python threads at once.

    python bench/threads.py                # 64-128-64-10 relu on 4096 rows, 3 epochs each
    python bench/threads.py --quick        # fewer rows and repeats (a smoke run)

fit releases the GIL inside the C engine, so Python threads fitting different networks run
on different cores. Each fit asks for one OpenMP thread (``n_threads=1``), so the parallelism
measured is the Python threads' alone. Before any timing, the threaded run's weights are
checked to equal the sequential run's bit for bit. Prints the median wall time of
``--repeats`` runs of each, and their ratio; on a machine with fewer than four free cores the
ratio is bounded by the cores there are.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastmlp  # noqa: E402


def fit_one(seed, X, y, epochs):
    net = fastmlp.MLP([64, 128, 64, 10], output="softmax", seed=seed)
    net.fit(X, y, optimizer=fastmlp.SGD(lr=0.05, batch_size=32), epochs=epochs, n_threads=1)
    return net._params.tobytes()


def sequential(X, y, epochs):
    return [fit_one(s, X, y, epochs) for s in range(4)]


def threaded(X, y, epochs):
    out = [None] * 4

    def work(s):
        out[s] = fit_one(s, X, y, epochs)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=_common.count, default=4096)
    parser.add_argument("--epochs", type=_common.count, default=3)
    parser.add_argument("--repeats", type=_common.count, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.repeats = 512, 1, 2
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, 64)).astype(np.float32)
    y = rng.integers(0, 10, args.rows)
    if sequential(X, y, 1) != threaded(X, y, 1):
        sys.exit("threaded fits differ from sequential ones; not timing")
    seq = [timed(sequential, X, y, args.epochs) for _ in range(args.repeats)]
    thr = [timed(threaded, X, y, args.epochs) for _ in range(args.repeats)]
    s, t = statistics.median(seq), statistics.median(thr)
    print(f"4 fits of 64-128-64-10, {args.rows} rows, {args.epochs} epochs, n_threads=1 each; "
          f"CPUs {os.cpu_count()}; median of {args.repeats}")
    print(f"one after another: {s:.3f} s")
    print(f"4 Python threads:  {t:.3f} s")
    print(f"ratio: {s / t:.2f}x")


if __name__ == "__main__":
    main()
