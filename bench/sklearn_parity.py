"""fastmlp.sklearn against scikit-learn's own MLP: held-out scores and fit times.

Run from the repository root, with fastmlp importable (installed, or built in place and
PYTHONPATH=src):

    python bench/sklearn_parity.py              # scores on 5 data sets x 2 solvers, digits timing
    python bench/sklearn_parity.py --large      # also 60000 x 784, hidden (512, 512) (minutes)
    python bench/sklearn_parity.py --quick      # 2 seeds, 1 timing round: a first look

Scores: digits, breast cancer, iris, wine (accuracy) and diabetes (R^2, targets standardized
on the training part) with the same hyper-parameters for both, features standardized on the
training part, 5 seeds (each seed draws the train/test split and is the random_state of both
estimators). fastmlp passes when its mean held-out score is at least scikit-learn's mean minus
one standard deviation of scikit-learn's scores.

Timing: whole ``fit`` calls, fastmlp and scikit-learn interleaved (A B A B ...) so that the
load of the shared machine drifts over both alike; medians are reported. Both run a fixed
number of epochs (tol=0 with n_iter_no_change=inf, so neither stops early). Each timed fit
starts after a pause (`--settle`, 0.3 s, as in peers.py): OpenBLAS's worker thread spins for
about 0.13 s after scikit-learn's last product (its CPU time, read from /proc, on the 2-core
Xeon), and a fit started meanwhile shares the other core with it.
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
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

from fastmlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

DATASETS = {
    "digits": (datasets.load_digits, "clf"),
    "breast_cancer": (datasets.load_breast_cancer, "clf"),
    "iris": (datasets.load_iris, "clf"),
    "wine": (datasets.load_wine, "clf"),
    "diabetes": (datasets.load_diabetes, "reg"),
}
SOLVERS = {
    "sgd": dict(solver="sgd", learning_rate_init=0.01, momentum=0.9),
    "adam": dict(solver="adam", learning_rate_init=0.001),
}
COMMON = dict(hidden_layer_sizes=(64,), alpha=1e-4, max_iter=200)


def _split(name, seed):
    X, y = DATASETS[name][0](return_X_y=True)
    clf = DATASETS[name][1] == "clf"
    Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.25, random_state=seed,
                                      stratify=y if clf else None)
    mu, sd = Xa.mean(0), Xa.std(0)
    sd[sd == 0] = 1
    Xa, Xb = (Xa - mu) / sd, (Xb - mu) / sd
    if not clf:
        ym, ys = ya.mean(), ya.std()
        ya, yb = (ya - ym) / ys, (yb - ym) / ys
    return Xa, Xb, ya, yb, clf


def scores(seeds):
    rows = []
    for name in DATASETS:
        for sname, sargs in SOLVERS.items():
            ours, theirs = [], []
            for seed in seeds:
                Xa, Xb, ya, yb, clf = _split(name, seed)
                pair = (MLPClassifier, SkClassifier) if clf else (MLPRegressor, SkRegressor)
                for cls, out in zip(pair, (ours, theirs)):
                    est = cls(random_state=seed, **COMMON, **sargs)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        est.fit(Xa, ya)
                    out.append(est.score(Xb, yb))
            mo, mt = float(np.mean(ours)), float(np.mean(theirs))
            st = float(np.std(theirs))
            rows.append((name, sname, mo, float(np.std(ours)), mt, st, mo >= mt - st))
            print(f"  {name} {sname}: fastmlp {mo:.4f}, scikit-learn {mt:.4f} +- {st:.4f}",
                  file=sys.stderr, flush=True)
    return rows


def _timed_fit(est, X, y):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return time.perf_counter() - t0


def timing(X, y, hidden, epochs, rounds, solver, settle):
    """Median seconds of fastmlp's and scikit-learn's fit, interleaved."""
    args = dict(hidden_layer_sizes=hidden, max_iter=epochs, tol=0.0, n_iter_no_change=np.inf,
                random_state=0, **SOLVERS[solver])
    ours, theirs = [], []
    for _ in range(rounds):
        time.sleep(settle)
        ours.append(_timed_fit(MLPClassifier(**args), X, y))
        time.sleep(settle)
        theirs.append(_timed_fit(SkClassifier(**args), X, y))
        print(f"  fastmlp {ours[-1]:.2f} s, scikit-learn {theirs[-1]:.2f} s", file=sys.stderr,
              flush=True)
    return statistics.median(ours), statistics.median(theirs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--large", action="store_true", help="also time 60000 x 784, (512, 512)")
    ap.add_argument("--quick", action="store_true", help="2 seeds and 1 timing round")
    ap.add_argument("--rounds", type=_common.count, default=3, help="timing rounds (default 3)")
    ap.add_argument("--large-epochs", type=_common.count, default=3)
    ap.add_argument("--timing-only", action="store_true", help="skip the held-out scores")
    ap.add_argument("--settle", type=_common.seconds, default=0.3, metavar="SECONDS",
                    help="pause before each timed fit (default 0.3)")
    args = ap.parse_args(argv)
    seeds = range(2) if args.quick else range(5)
    rounds = 1 if args.quick else args.rounds

    print("\n".join(_common.machine_lines()))
    ok_all = True
    if not args.timing_only:
        print(f"\nHeld-out score, mean +- std over {len(seeds)} seeds; hidden (64,), alpha "
              f"1e-4, max_iter 200, sgd: lr 0.01 momentum 0.9 (Nesterov), adam: lr 0.001\n")
        print("| data | solver | fastmlp | scikit-learn | within one std or better |")
        print("|---|---|---|---|---|")
    for name, sname, mo, so, mt, st, ok in ([] if args.timing_only else scores(seeds)):
        ok_all &= ok
        print(f"| {name} | {sname} | {mo:.4f} +- {so:.4f} | {mt:.4f} +- {st:.4f} | "
              f"{'yes' if ok else 'NO'} |")

    print("\n| fit | epochs | fastmlp (s) | scikit-learn (s) | speed-up | target | met |")
    print("|---|---|---|---|---|---|---|")
    X, y = datasets.load_digits(return_X_y=True)
    X = X / 16.0
    for solver in ("adam", "sgd"):
        f, s = timing(X, y, (128, 64), 200, rounds, solver, args.settle)
        print(f"| digits 1797x64, (128, 64), {solver} | 200 | {f:.2f} | {s:.2f} | "
              f"{s / f:.1f}x | >= 10x | {'yes' if s / f >= 10 else 'no'} |")
    if args.large:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((60000, 784)).astype(np.float32)
        y = rng.integers(0, 10, 60000)
        f, s = timing(X, y, (512, 512), args.large_epochs, rounds, "adam",
                      args.settle)
        print(f"| random 60000x784, (512, 512), adam | {args.large_epochs} | {f:.2f} | "
              f"{s:.2f} | {s / f:.1f}x | >= 3x | {'yes' if s / f >= 3 else 'no'} |")
    if not args.timing_only:
        print(f"\nscores: {'all within one std or better' if ok_all else 'SOME BELOW'}")


if __name__ == "__main__":
    main()
