"""Memory of fastmlp's training: RSS flatness over epochs and the peak RSS of a W3 fit.

    python bench/memory.py                  # flatness on W1, W2, W2b1, W3; peak of a W3 fit
    python bench/memory.py --quick          # flatness on W2 only, peak of a W3 fit

Every measurement runs in a fresh child process (this script with --child), so one does not
inherit another's heap.

- Flatness: ``MLP.fit`` for 1 + E epochs (E = 10), reading VmRSS from /proc/self/status in
  the epoch callback. Target: RSS varies by at most 1 MB over the E epochs after the first
  (nothing allocated per step).
- Peak: the W3 data (float32 from the start, no float64 temporary) and the network are made,
  then the high-water mark is reset (``5`` into /proc/self/clear_refs, Linux), RSS is read
  (``before``: interpreter, libraries, data, parameters) and ``MLP.fit`` trains 2 epochs.
  Overhead = peak during the fit - before. Target: at most 64 MB. The gradients, the
  workspace, fit's input checks and the OpenMP thread stacks all count as overhead.
  ``before`` is read after the data are made rather than right after the imports because
  making the data touches OpenBLAS's per-thread buffers (its first matrix product), which are
  NumPy's memory, not fastmlp's.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

if __name__ == "__main__":
    _common.clean_blas_env()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402

MB = 1024 * 1024
FLAT_TARGET = 1 * MB
PEAK_TARGET = 64 * MB


def _fit_args(wl):
    from fastmlp import SGD
    return SGD(lr=wl.fastmlp_lr, batch_size=wl.batch)


def child_flat(name, epochs, threads):
    import numpy as np
    wl = _common.WORKLOADS[name]
    X, y = _common.make_data(wl)
    net = _common.initial_network(wl)
    rss = []
    net.fit(X, y, optimizer=_fit_args(wl), epochs=epochs + 1, n_threads=threads,
            callback=lambda epoch, hist: rss.append(_common.rss_bytes()))
    after = np.array(rss[1:], dtype=np.int64)
    return {"workload": name, "rss": rss, "spread": int(after.max() - after.min()),
            "loss": net.history_.loss[-1]}


def child_peak(name, epochs, threads):
    import fastmlp  # noqa: F401  (its import belongs to the base)
    import sklearn.datasets  # noqa: F401
    wl = _common.WORKLOADS[name]
    base = _common.rss_bytes()
    X, y = _common.make_data(wl)
    net = _common.initial_network(wl)
    data = X.nbytes + y.nbytes
    params = net._params.nbytes
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _common.rss_bytes()
    net.fit(X, y, optimizer=_fit_args(wl), epochs=epochs, n_threads=threads)
    peak = _common.rss_bytes("VmHWM")
    return {"workload": name, "base": base, "data": data, "params": params,
            "before": before, "peak": peak, "overhead": peak - before,
            "after": _common.rss_bytes()}


def _run_child(kind, name, epochs, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--workload", name,
           "--epochs", str(epochs), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=_common.threads, default=_common.n_cpus())
    p.add_argument("--epochs", type=_common.count, default=10,
                   help="epochs after the first (flatness)")
    p.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", choices=("flat", "peak"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        fn = child_flat if a.child == "flat" else child_peak
        print(json.dumps(fn(a.workload, a.epochs, a.threads)))
        return 0
    print(f"fastmlp memory benchmark ({a.threads} threads)")
    for line in _common.machine_lines():
        print("  " + line)
    names = ["W2"] if a.quick else ["W1", "W2", "W2b1", "W3"]
    ok = True
    print(f"\nRSS over epochs 2..{a.epochs + 1} of MLP.fit (target: spread <= 1 MB)")
    for name in names:
        epochs = a.epochs if name != "W2b1" or not a.quick else 3
        r = _run_child("flat", name, epochs, a.threads)
        mbs = " ".join(f"{x / MB:.1f}" for x in r["rss"])
        met = r["spread"] <= FLAT_TARGET
        ok &= met
        print(f"  {name:<5} spread {r['spread'] / 1024:8.0f} KiB "
              f"({'met' if met else 'NOT met'}); RSS MB per epoch: {mbs}")
    r = _run_child("peak", "W3", 2, a.threads)
    met = r["overhead"] <= PEAK_TARGET
    ok &= met
    print("\nPeak RSS of a W3 fit (2 epochs; target: peak - before <= 64 MB)")
    rows = [("RSS after the imports", r["base"]), ("data X, y", r["data"]),
            ("parameters", r["params"]), ("before: RSS with data and network", r["before"]),
            ("peak RSS (VmHWM) during fit", r["peak"]), ("RSS after fit", r["after"])]
    for label, v in rows:
        print(f"  {label:<36} {v / MB:8.1f} MB")
    print(f"  {'overhead of the fit':<36} {r['overhead'] / MB:8.1f} MB "
          f"({'met' if met else 'NOT met'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
