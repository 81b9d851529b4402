"""Model search over fastmlp estimators on a dask.distributed cluster (loopback only).

The cluster runs worker processes on this machine, started and stopped inside the test; the
search goes through joblib's Dask backend, exactly as on a real cluster (where only the
scheduler address changes). Skipped when dask or distributed is not installed.
"""
import logging
import os
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

from fastmlp.sklearn import MLPClassifier

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=logging.ERROR)
    with cluster, distributed.Client(cluster) as c:
        yield c


def _data():
    return make_classification(n_samples=150, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)


def _scorers():
    """Scorers that report where and with how many threads each fit ran (run on a worker)."""
    def threads(est, X, y):
        return est.n_threads_

    def omp_default(est, X, y):
        from fastmlp import _core
        return _core.omp_max_threads()

    def pid(est, X, y):
        return os.getpid()

    return {"acc": "accuracy", "threads": threads, "omp": omp_default, "pid": pid}


def test_grid_search_runs_on_workers_with_capped_threads(client):
    X, y = _data()
    est = MLPClassifier(max_iter=15, random_state=0, n_threads=None)
    grid = {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-2]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        local = GridSearchCV(est, grid, cv=3, scoring="accuracy", n_jobs=1).fit(X, y)
        search = GridSearchCV(est, grid, cv=3, scoring=_scorers(), refit="acc")
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
    res = search.cv_results_
    pids = {int(p) for k in res if k.startswith("split") and k.endswith("test_pid")
            for p in res[k]}
    workers = set(client.run(os.getpid).values())
    assert pids and pids <= workers and os.getpid() not in pids
    # each worker has 1 thread of 2 on this cluster: every fit resolved n_threads=None to 1
    for k in res:
        if k.startswith("split") and (k.endswith("test_threads") or k.endswith("test_omp")):
            assert np.all(res[k] == 1), (k, res[k])
    # the same search, run here one fit at a time, gives the same scores: fits are seeded
    np.testing.assert_allclose(res["mean_test_acc"], local.cv_results_["mean_test_score"],
                               rtol=0, atol=1e-12)
    assert search.best_params_ == local.best_params_
    assert search.best_estimator_.score(X, y) == local.best_estimator_.score(X, y)


def test_randomized_search_on_workers(client):
    X, y = _data()
    search = RandomizedSearchCV(MLPClassifier(max_iter=10, random_state=0),
                                {"learning_rate_init": [1e-3, 3e-3, 1e-2],
                                 "hidden_layer_sizes": [(8,), (12,)]},
                                n_iter=4, cv=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert 0 <= search.best_score_ <= 1
