"""scikit-learn estimators trained by fastmlp's core: ``MLPClassifier`` and ``MLPRegressor``.

Design notes
1. Drop-in: the constructor parameters, their defaults and meaning, the fitted attributes and
   the training policy follow ``sklearn.neural_network`` (read against its
   ``_multilayer_perceptron.py`` and ``_stochastic_optimizers.py``): Glorot-uniform
   initialization drawn from ``random_state`` in the same order, 'invscaling' updated per epoch
   from ``t_``, 'adaptive' dividing the rate by 5 after ``n_iter_no_change`` epochs without
   improvement, stopping on ``tol``, early stopping on a held-out validation score with the
   best weights restored, and a ConvergenceWarning when ``max_iter`` is reached.
2. One call to ``MLP.fit`` covers a whole ``fit`` (``max_iter`` epochs) or one ``partial_fit``
   epoch, so X is converted once. Momentum, Nesterov, Adam, L2 (``alpha``) and sample weights
   run per step inside the C core (``fastmlp.SGD`` / ``fastmlp.Adam``); the per-epoch policy
   (schedules, stopping, best weights) runs in ``_EpochPolicy``, the fit's callback, which may
   change ``opt.lr`` between epochs and returns True to stop.
3. The optimizer object is kept between ``partial_fit`` calls, so its velocity / moments and
   step count carry on, as scikit-learn's ``_optimizer`` does.
4. Loss values are on scikit-learn's scale, so curves compare: the core's half squared error
   is summed over outputs, scikit-learn averages it over outputs (divide by ``n_outputs_``);
   log losses are the same; the L2 term 0.5 * alpha * ||W||^2 / (the batch's weight
   sum, or its rows) is added per batch, as the engine reports it in ``History.penalty``.
5. Persistence: instances pickle (the network pickles its parameters exactly); ``save`` writes
   the network's data-only .npz with the estimator's settings and fitted attributes as JSON
   metadata under the key "estimator", which ``fastmlp.load`` hands to ``_from_network``.
"""
import math
import numbers
import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.multiclass import check_classification_targets, type_of_target

import fastmlp
from fastmlp._threads import _cpus, resolve_threads
from fastmlp._validation import _asarray, check_rates
from fastmlp.network import (_UNORDERED_OR_TEXT, MLP, DivergenceError, NonFiniteOutputError,
                             _ParamList, check_memory, upgrade_advice)

try:  # public since scikit-learn 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

__all__ = ["MLPClassifier", "MLPRegressor"]

ESTIMATOR_FORMAT = 1
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_INITS = ("glorot", "he", "xavier", "zeros")


# ---------------------------------------------------------------- parameter checks (data)

def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _real(lo, hi=math.inf, lo_open=False, hi_open=False):
    def ok(v):
        if not _is_real(v) or not math.isfinite(v):  # inf too, as in scikit-learn
            return False
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
    return ok, f"a number in {left}{lo}, {hi}{right}"


def _int_at_least(lo):
    return (lambda v: _is_int(v) and v >= lo), f"an integer >= {lo}"


def _one_of(*choices):
    return (lambda v: isinstance(v, str) and v in choices), f"one of {list(choices)}"


def _bool():
    return (lambda v: isinstance(v, (bool, np.bool_))), "True or False"


def _hidden_ok(v):
    if _is_int(v):
        return v >= 1
    if isinstance(v, _UNORDERED_OR_TEXT):  # b"2" is not the size 50, nor {4, 8} an order
        return False
    try:
        sizes = list(v)
    except TypeError:
        return False
    return all(_is_int(s) and s >= 1 for s in sizes)


def _skip_ok(v):
    if v is None or isinstance(v, str):
        return v is None or v in ("none", "residual", "preact")
    try:
        return all(s in ("none", "residual", "preact") for s in v)
    except TypeError:
        return False


_CONSTRAINTS = {
    "hidden_layer_sizes": (_hidden_ok, "a positive integer or a sequence of them"),
    "activation": _one_of(*_ACTIVATIONS),
    "solver": _one_of("sgd", "adam", "lbfgs"),
    "alpha": _real(0),
    "batch_size": ((lambda v: v == "auto" if isinstance(v, str) else _is_int(v) and v >= 1),
                   "'auto' or an integer >= 1"),
    "learning_rate": _one_of("constant", "invscaling", "adaptive"),
    "learning_rate_init": _real(0, lo_open=True),
    "power_t": _real(0),
    "max_iter": _int_at_least(1),
    "shuffle": _bool(),
    "random_state": ((lambda v: v is None or (_is_int(v) and 0 <= v < 2**32)
                      or isinstance(v, np.random.RandomState)),
                     "None, an integer in [0, 2**32) or a numpy RandomState"),
    "tol": _real(0),
    "verbose": ((lambda v: isinstance(v, (bool, np.bool_)) or _is_int(v) and v >= 0),
                "a bool or an integer >= 0"),
    "warm_start": _bool(),
    "momentum": _real(0, 1),
    "nesterovs_momentum": _bool(),
    "early_stopping": _bool(),
    "validation_fraction": _real(0, 1, hi_open=True),
    "beta_1": _real(0, 1, hi_open=True),
    "beta_2": _real(0, 1, hi_open=True),
    "epsilon": _real(0, lo_open=True),
    "n_iter_no_change": ((lambda v: (_is_int(v) and v >= 1) or (_is_real(v) and v == math.inf)),
                         "an integer >= 1 or numpy.inf"),
    "max_fun": _int_at_least(1),
    "clip_norm": ((lambda v: v is None or _real(0, lo_open=True)[0](v)),
                  "None or a number > 0"),
    "init": _one_of(*_INITS),
    "skip_connections": (_skip_ok, "None, 'none', 'residual', 'preact' or a list of those"),
    "dtype": ((lambda v: _dtype_name(v) is not None), "'float32' or 'float64'"),
    "n_threads": ((lambda v: v is None or (_is_int(v) and v != 0)),
                  "None or a non-zero integer (negative: counted back from the CPUs)"),
    "loss": _one_of("squared_error", "poisson"),
}


def _dtype_name(v):
    if v is None:  # NumPy reads None as float64 (and warns in finfo)
        return None
    try:
        dt = np.dtype(v)
    except TypeError:
        return None
    return dt.name if dt in (np.float32, np.float64) else None


def _check_params(est):
    """Every constructor parameter against _CONSTRAINTS; the error names the parameter."""
    for name, value in est.get_params(deep=False).items():
        ok, needs = _CONSTRAINTS[name]
        if not ok(value):
            raise ValueError(f"The {name!r} parameter of {type(est).__name__} must be {needs}; "
                             f"got {value!r}")
    if est.solver == "lbfgs":
        raise NotImplementedError(
            f"{type(est).__name__}(solver='lbfgs') is not implemented by fastmlp, which "
            f"trains with stochastic solvers only; use solver='adam' or solver='sgd', or "
            f"scikit-learn's own estimator for L-BFGS")
    if getattr(est, "loss", "squared_error") == "poisson":
        raise NotImplementedError("MLPRegressor(loss='poisson') is not implemented by fastmlp; "
                                  "only loss='squared_error'")
    # before any state changes: a refused fit leaves the estimator as it was
    check_rates(est.learning_rate_init, est.epsilon if est.solver == "adam" else None,
                _dtype_name(est.dtype), "learning_rate_init", "epsilon", est.clip_norm)


def _hidden(sizes):
    return [int(sizes)] if _is_int(sizes) else [int(s) for s in sizes]


# ---------------------------------------------------------------- threads

def _dask_worker_threads():
    """Threads of the dask worker running this code, or None outside one."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        worker = distributed.get_worker()
    except (ValueError, AttributeError):
        return None
    state = getattr(worker, "state", worker)
    return getattr(state, "nthreads", None)


def _resolve_n_threads(n_threads):
    """Threads for one fit or predict.

    An explicit ``n_threads`` is used as fastmlp.set_num_threads documents. None takes
    fastmlp's default (``set_num_threads``, then OpenMP's, which honours ``OMP_NUM_THREADS``
    and threadpoolctl); inside a dask worker it is further capped at the worker's share of the
    CPUs: each of its ``nthreads`` concurrent tasks gets ``cpus // nthreads``. (Dask's nanny
    also starts workers with ``OMP_NUM_THREADS=1`` unless configured otherwise.)"""
    n = resolve_threads(n_threads)
    if n_threads is None:
        worker_threads = _dask_worker_threads()
        if worker_threads:
            n = max(1, min(n, _cpus() // worker_threads))
    return n


def _tabled(X, name):
    """A list of rows as an array, refused by its first bad row when it is not a table
    (NumPy's own message names no row); anything else as it came, for scikit-learn's checks."""
    return _asarray(X, name) if isinstance(X, (list, tuple)) else X


def _label_kind(v):
    if isinstance(v, str):
        return "string"
    if isinstance(v, (numbers.Real, np.bool_)):
        return "number"
    return type(v).__name__


def _check_label_kinds(y, name="y", where="row"):
    """Class labels held as objects are all strings or all numbers; otherwise a ValueError
    naming the first label of another kind and its row (sorting them, as every encoder does,
    raised a bare TypeError)."""
    if y.dtype != object or y.size == 0:
        return
    flat = y.reshape(len(y), -1)
    first = _label_kind(flat.flat[0])
    for i, v in enumerate(flat.flat):
        kind = _label_kind(v)
        if kind != first or kind not in ("string", "number"):
            row = i // flat.shape[1]
            than = f", and the first is {flat.flat[0]!r} ({first})" if i else ""
            raise ValueError(f"{name}: class labels must be all strings or all numbers; the "
                             f"label at {where} {row} is {v!r} ({kind}){than}")


# ---------------------------------------------------------------- the per-epoch policy


def _copy_params(net):
    """Copies of the network's (weights, biases): early stopping's best so far."""
    return [w.copy() for w in net.weights], [b.copy() for b in net.biases]


class _EpochPolicy:
    """fit's callback: scikit-learn's per-epoch bookkeeping, schedules and stopping."""

    def __init__(self, est, opt, n_train, val):
        self.est, self.opt, self.n_train, self.val = est, opt, n_train, val
        self.stopped = False

    def __call__(self, epoch, hist):
        est = self.est
        # scikit-learn's epoch loss: the data loss on its scale (note 4) plus, per batch,
        # 0.5 * alpha * ||W||^2 / (the batch's weight sum), averaged over rows by the engine
        loss = hist.loss[-1] / est._loss_scale + hist.penalty[-1]
        norms = np.asarray(hist.layer_grad_norm[-1])[:, 0].copy()
        # The slow part (the validation forward pass, a copy of the weights) before any
        # attribute changes, so that a Ctrl-C in it leaves the epoch out of every curve, as
        # fit leaves it out of the History.
        figures = self._validation_figures() if self.val is not None else None
        est.n_iter_ += 1
        est.t_ += self.n_train
        est.loss_ = loss
        est.loss_curve_.append(loss)
        est.grad_norm_curve_.append(norms)
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, loss))
        if figures is not None:
            self._validate(*figures)
        else:
            if loss > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, loss)
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            try:
                rate = float(est.learning_rate_init) / (est.t_ + 1) ** est.power_t
            except OverflowError:  # (t + 1) ** power_t beyond a float
                rate = 0.0
            # The rate decays to the smallest normal number of the network's dtype and stays
            # there: training reads smaller ones as 0 (csrc/engine.c note 16), and steps at
            # such rates move no parameter of normal size in scikit-learn's float64 either.
            self.opt.lr = max(rate, float(np.finfo(_dtype_name(est.dtype)).tiny))
        if est._no_improvement_count > est.n_iter_no_change:
            what = "Validation score" if self.val is not None else "Training loss"
            msg = (f"{what} did not improve more than tol={est.tol:f} for "
                   f"{est.n_iter_no_change} consecutive epochs.")
            if sgd and est.learning_rate == "adaptive" and self.opt.lr > 1e-6:
                self.opt.lr /= 5.0
                est._no_improvement_count = 0
                if est.verbose:
                    print(msg + " Setting learning rate to %f" % self.opt.lr)
            else:
                if est.verbose:
                    print(msg + " Stopping.")
                self.stopped = True
                return True
        return False

    def _validation_figures(self):
        """(score, loss on the validation part, the weights if the score is the best yet)."""
        est = self.est
        X_val, y_val, w_val = self.val
        try:  # the outputs before a sigmoid, which would hide an infinity, checked
            G = est._net._raw_output(est._net._X(X_val), est._nt, answer=True)
        except NonFiniteOutputError:  # finite steps, but weights the data overflow
            steps = -(-self.n_train // (self.opt.batch_size or self.n_train))
            raise DivergenceError(est.n_iter_ + 1, steps, "output on the validation split",
                                  -1, self.opt.lr, clip_norm=self.opt.clip_norm) from None
        out = est._net._activate_output(G)
        score, val_loss = est._val_score_and_loss(out, y_val, w_val)
        best = None
        if score > est.best_validation_score_:
            best = _copy_params(est._net)
        return score, val_loss, best

    def _validate(self, score, val_loss, best):
        est = self.est
        est.validation_scores_.append(score)
        est.validation_loss_curve_.append(val_loss)
        if est.verbose:
            print("Validation score: %f" % score)
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if best is not None:
            est.best_validation_score_ = score
            est._best_params = best


# ---------------------------------------------------------------- the shared base

def _store_params(est, params):
    """Keep every constructor argument as the attribute of its name, unchanged (scikit-learn's
    rule: no logic in __init__); `params` is the constructor's locals()."""
    for name, value in params.items():
        if name not in ("self", "__class__"):
            setattr(est, name, value)


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share; not for direct use."""

    _output = None  # set by fit: the network's output ('softmax', 'sigmoid' or 'identity')

    # ------------------------------------------------------------ fitted state

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_net")

    @property
    def coefs_(self):
        """Weights per layer, (fan_in, fan_out) each: views of the network's parameters.
        ``coefs_[l] = W`` and ``coefs_ = [...]`` copy into the network, checked first (a
        refused list writes nothing)."""
        return self._layers("coefs_")

    @coefs_.setter
    def coefs_(self, values):
        self._layers("coefs_").assign(values)

    @property
    def intercepts_(self):
        """Biases per layer, (fan_out,) each: views like ``coefs_``."""
        return self._layers("intercepts_")

    @intercepts_.setter
    def intercepts_(self, values):
        self._layers("intercepts_").assign(values)

    def _layers(self, name):
        """coefs_ or intercepts_: the network's views, written through under the names an
        error should give."""
        self._require_fitted()
        views = self._net.weights if name == "coefs_" else self._net.biases
        return _ParamList(list(views), name, self._net._set_params)

    @property
    def network_(self):
        """The fitted fastmlp.MLP."""
        self._require_fitted()
        return self._net

    def _require_fitted(self):
        if not hasattr(self, "_net"):
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet")

    # ------------------------------------------------------------ fitting

    def _glorot(self, sizes, rs):
        """scikit-learn's initial weights and biases, drawn from rs in its order."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        draws = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = rs.uniform(-bound, bound, (fan_in, fan_out))
            b = rs.uniform(-bound, bound, fan_out)
            draws.append((W, b))
        return draws

    def _make_network(self, sizes, draws, seed):
        loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
                "identity": "half_squared"}[self._output]
        kw = {} if self.skip_connections is None else {"skip": self.skip_connections}
        net = MLP(sizes, activation=_ACTIVATIONS[self.activation], output=self._output,
                  loss=loss, init="zeros" if draws else self.init,
                  dtype=_dtype_name(self.dtype), seed=seed, **kw)
        for l, (W, b) in enumerate(draws or []):
            net.weights[l] = W
            net.biases[l] = b
        return net

    def _make_optimizer(self, batch):
        if self.solver == "adam":
            opt = fastmlp.Adam(lr=self.learning_rate_init, batch_size=batch,
                               clip_norm=self.clip_norm, beta1=self.beta_1, beta2=self.beta_2,
                               eps=self.epsilon, l2=self.alpha)
        else:
            kw = {}
            if self.momentum:
                kw.update(momentum=self.momentum, nesterov=bool(self.nesterovs_momentum))
            if self.alpha:
                kw.update(l2=self.alpha)
            opt = fastmlp.SGD(lr=self.learning_rate_init, batch_size=batch,
                              clip_norm=self.clip_norm, **kw)
        # scikit-learn reports the log loss of probabilities clipped to [eps, 1 - eps] of their
        # dtype (a row's loss at most 36.0 in float64, 15.9 in float32); the engine reports
        # the same for loss_ and loss_curve_ (csrc/loss.c note 6). The gradient is exact.
        opt._loss_clip = float(np.finfo(self.dtype).eps)
        return opt

    def _reset_curves(self):
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.grad_norm_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.validation_loss_curve_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _fit(self, X, y, sample_weight, incremental, first_pass):
        """X, y checked and encoded; y is what the network takes (labels or targets)."""
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not first_pass:
            # A warm start or a later partial_fit continues the fitted network; a parameter
            # set since that shapes it would be silently ignored (found by a new user), except
            # the activation, which scikit-learn's warm start takes up with the weights kept.
            wrong = self._network_mismatch(self._net, activation=False)
            if wrong is not None:
                raise ValueError(f"{wrong[1]}: {'partial_fit' if incremental else 'warm_start'}"
                                 f" continues the fitted network; set {wrong[0]} back, or fit "
                                 f"anew (warm_start=False)")
            act = _ACTIVATIONS[self.activation]
            if any(a != act for a in self._net.activations):
                self._net._set_activations([act] * len(self._net.activations))
        rs = check_random_state(self.random_state)
        n_outputs = self._n_net_outputs
        if first_pass:
            # draws in scikit-learn's order: weights, then the validation split, then (ours)
            # the seed of the network's shuffling
            sizes = [X.shape[1]] + _hidden(self.hidden_layer_sizes) + [n_outputs]
            # the float64 draws, then the network's parameters and gradients
            check_memory(sizes, 8 + 2 * np.dtype(_dtype_name(self.dtype)).itemsize,
                         "for the initial draws, the parameters and the gradients")
            draws = self._glorot(sizes, rs) if self.init == "glorot" else None
        val = None
        if self.early_stopping:
            # scikit-learn stratifies single-output classification only (binary here)
            stratify = y if (self._output == "sigmoid" and y.ndim == 1) else None
            parts = (X, y) if sample_weight is None else (X, y, sample_weight)
            fraction = float(self.validation_fraction)  # a NumPy float too
            n_val = math.ceil(fraction * X.shape[0])  # train_test_split's rule
            if n_val < 2 or n_val >= X.shape[0]:
                raise ValueError(f"early_stopping needs a validation split of at least 2 rows "
                                 f"and a training part: validation_fraction="
                                 f"{self.validation_fraction} of {X.shape[0]} rows gives "
                                 f"{n_val}. Increase 'validation_fraction' or the size of your "
                                 f"dataset.")
            try:
                split = train_test_split(*parts, random_state=rs,
                                         test_size=fraction, stratify=stratify)
            except ValueError as e:
                raise ValueError(f"early_stopping cannot split off validation_fraction="
                                 f"{self.validation_fraction} of the data: {e}") from None
            X, X_val, y, y_val = split[:4]
            if sample_weight is not None:
                sample_weight, w_val = split[4], split[5]
            else:
                w_val = None
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            val = (X_val, y_val, w_val)
        if first_pass:
            net = self._make_network(sizes, draws, int(rs.randint(0, 2**31 - 1)))
            self.n_layers_ = len(sizes)
            self.n_outputs_ = n_outputs
            self.out_activation_ = self._out_activation()
            self._reset_curves()
            if hasattr(self, "_optimizer"):
                del self._optimizer
            self._net = net  # last: a Ctrl-C before it leaves the estimator unfitted
        if self.early_stopping:
            self._best_params = _copy_params(self._net)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped", UserWarning, stacklevel=3)
            batch = min(self.batch_size, n)
        opt = getattr(self, "_optimizer", None) if incremental else None
        if opt is None:
            opt = self._make_optimizer(batch)
        opt.batch_size = batch
        self._optimizer = opt
        self._nt = _resolve_n_threads(self.n_threads)
        self.n_threads_ = self._nt
        self.n_iter_ = 0
        policy = _EpochPolicy(self, opt, n, val)
        kw = {} if sample_weight is None else {"sample_weight": sample_weight}
        try:
            hist = self._net.fit(X, y, optimizer=opt,
                                 epochs=1 if incremental else self.max_iter,
                                 shuffle=bool(self.shuffle), n_threads=self._nt,
                                 callback=policy, diagnostics=False,
                                 allow_one_class=incremental, **kw)
        except DivergenceError as e:  # the advice in this class's names, at the rate set
            e.names, e.lr = ("learning_rate_init", "clip_norm"), self.learning_rate_init
            raise
        if hist.interrupted and hist.epochs > self.n_iter_:
            # Ctrl-C cut this epoch's bookkeeping short (the policy counts n_iter_ from 0):
            # the history leaves it out too, so that every curve counts the same epochs
            hist._truncate(self.n_iter_)
        self.history_ = hist
        if self.early_stopping:
            # copied back in as the steps' own weights, not as new ones (the setters')
            for views, best in zip((self._net.weights, self._net.biases), self._best_params):
                self._net._change(views._copy_in, best)
            del self._best_params
        if (not incremental and not policy.stopped and not hist.interrupted
                and self.n_iter_ == self.max_iter):
            warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                          "optimization hasn't converged yet." % self.max_iter,
                          ConvergenceWarning, stacklevel=3)
        return self

    def _check_sample_weight(self, sample_weight, n):
        if sample_weight is None:
            return None
        w = np.asarray(_tabled(sample_weight, "sample_weight"))
        if w.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must be numeric, got dtype {w.dtype}")
        if w.ndim == 0:  # one number for every row, as scikit-learn takes it
            w = np.full(n, float(w))
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)!")
        w = np.ascontiguousarray(w, dtype=np.float64)
        if not np.isfinite(w).all():
            raise ValueError(f"sample_weight contains NaN or infinity (first at row "
                             f"{int(np.argmax(~np.isfinite(w)))})")
        if (w < 0).any():
            raise ValueError(f"Negative values in sample_weight (first at row "
                             f"{int(np.argmax(w < 0))}) are not allowed")
        if not (w > 0).any():
            raise ValueError("sample_weight is zero for every row: nothing to fit")
        return w

    def _validate_X(self, X, reset):
        return _validate_data(self, _tabled(X, "X"), reset=reset,
                              dtype=[np.float32, np.float64])

    def _outputs(self, X):
        """The fitted network's outputs for X (probabilities, or values for regression)."""
        if not hasattr(self, "_net"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. "
                                 f"Call 'fit' with appropriate arguments before using this "
                                 f"estimator.")
        X = self._validate_X(X, reset=False)
        # answer=True names a NaN set in coefs_ (views) and refuses outputs that overflow
        G = self._net._raw_output(self._net._X(X), _resolve_n_threads(self.n_threads),
                                  answer=True)
        return self._net._activate_output(G)

    def _out_activation(self):
        """scikit-learn's name of the output activation ('sigmoid' is its 'logistic')."""
        return {"sigmoid": "logistic"}.get(self._output, self._output)

    # ------------------------------------------------------------ persistence

    def _restore(self, net, f):
        """Fitted state from a loaded network and the JSON of _to_json (fastmlp.load)."""
        self._net = net
        for k in ("n_iter_", "t_"):
            v = f[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be an int >= 0, got {v!r}")
        self.n_iter_, self.t_ = f["n_iter_"], f["t_"]
        self.n_layers_, self.n_outputs_ = int(f["n_layers_"]), int(f["n_outputs_"])
        self.out_activation_ = str(f["out_activation_"])
        self.n_features_in_ = int(f["n_features_in_"])
        self._no_improvement_count = int(f["no_improvement_count"])
        self.grad_norm_curve_ = [np.asarray(g, dtype=np.float64) for g in f["grad_norm_curve_"]]
        for k in _FITTED_FLOATS:
            setattr(self, k, _unnum(f[k]))
        for k in _FITTED_LISTS:
            setattr(self, k, None if f[k] is None else [_unnum(x) for x in f[k]])
        if "feature_names_in_" in f:
            self.feature_names_in_ = np.asarray(f["feature_names_in_"], dtype=object)
        if net.n_features != self.n_features_in_ or net.n_outputs != self.n_outputs_:
            raise ValueError("the network's shape does not match n_features_in_ / n_outputs_")
        if isinstance(self, MLPClassifier):
            dt = f["classes_dtype"]
            if dt != "object" and np.dtype(dt).kind not in "biufU":
                raise ValueError(f"classes_ of dtype {dt} are not read")
            self.classes_ = np.array(f["classes_"], dtype=object if dt == "object" else dt)
            self._target_kind = f["target_kind"]
            if self._target_kind not in ("binary", "multiclass", "multilabel"):
                raise ValueError(f"unknown target kind {self._target_kind!r}")
            self._output = "softmax" if self._target_kind == "multiclass" else "sigmoid"
            self._n_net_outputs = self.n_outputs_
        else:
            self._n_net_outputs = self.n_outputs_
        want = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy",
                "identity": "half_squared"}[self._output]
        if net.loss != want:
            raise ValueError(f"the network's loss {net.loss!r} does not fit a "
                             f"{type(self).__name__} ({want!r} expected)")
        self._check_restored(net)

    def _network_mismatch(self, net, activation=True):
        """The first of the parameters that shape the network (hidden_layer_sizes, activation
        unless told not to look, dtype, skip_connections, and the output the targets call for)
        that `net` was not built with, as (name, message), or None."""
        hs = self.hidden_layer_sizes
        hs = [hs] if np.isscalar(hs) else list(hs)
        if [int(h) for h in hs] != list(net.layer_sizes[1:-1]):
            return "hidden_layer_sizes", (f"hidden_layer_sizes {tuple(hs)} do not match the "
                                          f"network's hidden layers "
                                          f"{tuple(net.layer_sizes[1:-1])}")
        if activation and any(a != _ACTIVATIONS.get(self.activation) for a in net.activations):
            return "activation", (f"activation {self.activation!r} does not match the "
                                  f"network's {net.activations}")
        if _dtype_name(self.dtype) != net.dtype.name:
            return "dtype", f"dtype {self.dtype!r} does not match the network's {net.dtype.name}"
        k = self.skip_connections
        n_hidden = len(net.layer_sizes) - 2
        skips = (("none",) * n_hidden if k is None else (k,) * n_hidden if isinstance(k, str)
                 else tuple(k))
        if skips != tuple(net.skips):
            return "skip_connections", (f"skip_connections {k!r} do not match the network's "
                                        f"{list(net.skips)}")
        if net.output != self._output:
            return "output", (f"the network's output {net.output!r} does not fit this "
                              f"{type(self).__name__} ({self._output!r} expected)")
        return None

    def _check_restored(self, net):
        """The header's description against the network it came with (a hand-edited or
        damaged header must not load into an estimator that answers wrongly)."""
        wrong = self._network_mismatch(net)
        if wrong is not None:
            raise ValueError(wrong[1])
        out_act = self._out_activation()
        if self.out_activation_ != out_act:
            raise ValueError(f"out_activation_ {self.out_activation_!r} does not fit the "
                             f"network ({out_act!r} expected)")
        names = getattr(self, "feature_names_in_", None)
        if names is not None and (names.ndim != 1 or len(names) != self.n_features_in_):
            raise ValueError(f"feature_names_in_ has {names.size} names for "
                             f"{self.n_features_in_} features")
        if self.n_layers_ != len(net.layer_sizes):
            raise ValueError(f"n_layers_ {self.n_layers_} does not match the network's "
                             f"{len(net.layer_sizes)} layers")
        if isinstance(self, MLPClassifier):
            n, kind = len(self.classes_), self._target_kind
            labels = self.classes_.tolist()
            if any(x != x for x in labels) or any(x is None or isinstance(x, (list, dict))
                                                  for x in labels):
                raise ValueError("classes_ hold a NaN, a null or a container")
            if len(set(labels)) != n:
                raise ValueError("classes_ repeat a label")
            ok = {"binary": n == 2 and self.n_outputs_ == 1,
                  "multiclass": n >= 3 and self.n_outputs_ == n,
                  "multilabel": n >= 1 and self.n_outputs_ == n}[kind]
            if not ok:
                raise ValueError(f"{n} classes_ of a {kind} classifier do not match the "
                                 f"network's {self.n_outputs_} outputs")

    def __getstate__(self):
        # A copy: on Python 3.11 the base class hands back the live __dict__, and popping from
        # it deleted _nt under a fit running in another thread (found by a new user). dict()
        # copies it in one step under the GIL, so a fit adding attributes cannot break it.
        state = dict(super().__getstate__())
        state.pop("_nt", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        # An optimizer keeps its state for the network it last trained (a weak link that
        # pickling drops); link it again so partial_fit continues where the original would.
        opt, net = state.get("_optimizer"), state.get("_net")
        if opt is not None and net is not None and getattr(opt, "state_", None) is not None:
            opt.bind(net)

    def save(self, path):
        """Write this fitted estimator to ``path`` (a data-only .npz; read by fastmlp.load).

        Holds the network's parameters and, as JSON, the constructor parameters and fitted
        attributes; the optimizer's state (velocity / Adam moments) is not kept, so a loaded
        estimator predicts exactly as this one but ``partial_fit`` restarts that state."""
        if not hasattr(self, "_net"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; "
                                 f"only a fitted estimator can be saved")
        # What load would refuse is not written (found by a new user: set_params after the
        # fit saved files that load refused)
        _check_params(self)
        wrong = self._network_mismatch(self._net)
        if wrong is not None:
            raise ValueError(f"cannot save: {wrong[0]} was changed after the fit "
                             f"({wrong[1]}); fit again, or set it back")
        return self._net.save(path, metadata={"estimator": _to_json(self)})


# ---------------------------------------------------------------- the estimators

_COMMON_DOC = """
    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start,
    momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2, epsilon,
    n_iter_no_change, max_fun
        As in scikit-learn's estimator of the same name, same defaults. ``solver='lbfgs'``
        raises NotImplementedError; ``max_fun`` (an L-BFGS setting) is accepted and ignored.
    clip_norm : float > 0 or None
        Rescale each step's gradient (all parameters together) to this norm when longer.
    init : {'glorot', 'he', 'xavier', 'zeros'}
        'glorot' is scikit-learn's uniform initialization drawn from ``random_state`` in the
        same order (for the same integer seed, the same initial weights); the others are
        fastmlp.MLP's (biases 0).
    skip_connections : None, 'none', 'residual', 'preact' or list (one per hidden layer)
        Skip connections of the hidden layers (fastmlp.MLP's ``skip``).
    dtype : 'float32' or 'float64'
        Precision of the parameters and of all computation (float32 is about twice as fast).
    n_threads : int or None
        Threads for the kernels; None takes fastmlp's default (OMP_NUM_THREADS,
        fastmlp.set_num_threads, threadpoolctl), capped inside a dask worker at its share.

    Attributes
    ----------
    coefs_, intercepts_ : list of ndarray
        Views of the network's weights (fan_in, fan_out) and biases, in ``dtype``.
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_, n_iter_, t_,
    n_layers_, n_outputs_, out_activation_, n_features_in_, feature_names_in_
        As in scikit-learn. Losses are on its scale (half squared error averaged over outputs,
        or log loss, plus the L2 term).
    validation_loss_curve_ : list of float or None
        With early_stopping, the validation split's loss after each epoch (without the L2
        term); None otherwise.
    grad_norm_curve_ : list of ndarray (n_layers_ - 1,)
        Per epoch, the mean over its steps of each layer's weight-gradient norm ||dW||.
    history_ : fastmlp.History
        The network's full record of the last fit or partial_fit call.
    n_threads_ : int
        Threads the last fit used.
    network_ : fastmlp.MLP
        The fitted network.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier, scikit-learn's interface on fastmlp's C core.

    Binary and multiclass labels (ints, strings, any sortable type) and multilabel indicator
    matrices; softmax output for multiclass, sigmoid with binary cross-entropy per column for
    binary and multilabel targets.
    """ + _COMMON_DOC

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 clip_norm=None, init="glorot", skip_connections=None, dtype="float32",
                 n_threads=None):
        _store_params(self, locals())

    _loss_scale = 1.0

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # ------------------------------------------------------------ labels

    def _set_classes(self, y, classes=None):
        """classes_, the label kind and the network's output from y (or declared classes)."""
        if classes is None:
            kind = type_of_target(y)
            if kind == "multilabel-indicator":
                self.classes_ = np.arange(y.shape[1])
            else:
                self.classes_ = np.unique(y)
        else:
            arr = None if isinstance(classes, _UNORDERED_OR_TEXT) else np.asarray(classes)
            if arr is None or arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"classes must be a non-empty 1-D array-like of every label "
                                 f"the stream can hold, got {classes!r}")
            _check_label_kinds(arr.astype(object), "classes", "position")
            self.classes_ = np.unique(arr)
            kind = "multilabel-indicator" if type_of_target(y) == "multilabel-indicator" \
                else ("binary" if len(self.classes_) <= 2 else "multiclass")
            if kind == "multilabel-indicator":
                self.classes_ = np.arange(y.shape[1])
        if kind != "multilabel-indicator" and len(self.classes_) < 2:
            only = self.classes_[0]
            only = only.item() if isinstance(only, np.generic) else only  # 1, not np.int64(1)
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data, but the data contains only one class: {only!r}")
        self._target_kind = "multilabel" if kind == "multilabel-indicator" else (
            "binary" if len(self.classes_) == 2 else "multiclass")
        self._output = "softmax" if self._target_kind == "multiclass" else "sigmoid"
        self._n_net_outputs = {"multiclass": len(self.classes_), "binary": 1,
                               "multilabel": len(self.classes_)}[self._target_kind]

    def _encode(self, y):
        """y as the network takes it: class indices (softmax) or 0/1 targets (sigmoid)."""
        if self._target_kind == "multilabel":
            if type_of_target(y) != "multilabel-indicator" or y.shape[1] != len(self.classes_):
                raise ValueError(f"y must be a multilabel indicator matrix with "
                                 f"{len(self.classes_)} columns like the first fit, got "
                                 f"{type_of_target(y)} of shape {np.shape(y)}")
            return np.ascontiguousarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels here, got shape {y.shape}")
        idx = np.searchsorted(self.classes_, y)
        idx_c = np.minimum(idx, len(self.classes_) - 1)
        bad = self.classes_[idx_c] != y
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"`y` has classes not in `self.classes_`: label "
                             f"{y[row].item()!r} at row {row}; `self.classes_` has "
                             f"{self.classes_}")
        if self._target_kind == "binary":
            return idx_c.astype(np.float64)
        return idx_c.astype(np.int64)

    def _prepare(self, X, y, reset):
        X, y = _validate_data(self, _tabled(X, "X"), _tabled(y, "y"), reset=reset,
                              multi_output=True, dtype=[np.float32, np.float64])
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        _check_label_kinds(y)
        check_classification_targets(y)
        return X, y

    # ------------------------------------------------------------ fit

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X (n_samples, n_features) and labels y; returns self.

        sample_weight : (n_samples,) or None, weights each row's loss (scikit-learn's
        convention: a batch's gradient is divided by its weight sum)."""
        _check_params(self)
        first = not (self.warm_start and hasattr(self, "_net"))
        X, y = self._prepare(X, y, reset=first)
        if first:
            self._set_classes(y)
        elif self._target_kind != "multilabel":
            classes = np.unique(y)
            if set(classes.tolist()) != set(self.classes_.tolist()):
                raise ValueError(f"warm_start can only be used where `y` has the same classes "
                                 f"as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {classes}")
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        return self._fit(X, self._encode(y), sw, incremental=False, first_pass=first)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y; ``classes`` (all labels of the stream) on the first call."""
        _check_params(self)
        first = not hasattr(self, "_net")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if not first and classes is not None:
            if not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
                raise ValueError(f"`classes={np.asarray(classes)}` is not the same as on last "
                                 f"call to partial_fit, was: {self.classes_}")
        X, y = self._prepare(X, y, reset=first)
        if first:
            self._set_classes(y, classes)
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        return self._fit(X, self._encode(y), sw, incremental=True, first_pass=first)

    # ------------------------------------------------------------ prediction

    def _proba(self, X):
        return self._outputs(X)

    def _decode(self, P):
        if self._target_kind == "multiclass":
            return self.classes_[P.argmax(axis=1)]
        if self._target_kind == "binary":
            return self.classes_[(P[:, 0] > 0.5).astype(np.int64)]
        return (P > 0.5).astype(np.int64)

    def predict(self, X):
        """Labels (n_samples,), or (n_samples, n_labels) of 0/1 for multilabel targets."""
        return self._decode(self._proba(X))

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes) in the order of ``classes_``."""
        P = self._proba(X)
        if self._target_kind == "binary":
            return np.hstack([1 - P, P])
        return P

    def predict_log_proba(self, X):
        """log of predict_proba."""
        P = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(P, out=P)

    def _val_score_and_loss(self, P, y_enc, w):
        """Accuracy and log loss (scikit-learn's formulas) of outputs P on encoded labels."""
        eps = np.finfo(P.dtype).eps
        Pc = np.clip(P.astype(np.float64), eps, 1 - eps)
        if self._target_kind == "multiclass":
            rows = -np.log(Pc[np.arange(len(y_enc)), y_enc])
            pred = P.argmax(axis=1)
        else:
            T = y_enc.reshape(len(y_enc), -1)
            rows = -(T * np.log(Pc) + (1 - T) * np.log(1 - Pc)).sum(axis=1)
            pred = (P > 0.5).astype(np.float64)
            pred = pred[:, 0] if self._target_kind == "binary" else pred
        score = accuracy_score(y_enc, pred, sample_weight=w)
        return float(score), float(np.average(rows, weights=w))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor, scikit-learn's interface on fastmlp's C core.

    Single- and multi-output targets, identity output, half squared error.
    ``loss='poisson'`` raises NotImplementedError.
    """ + _COMMON_DOC

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 clip_norm=None, init="glorot", skip_connections=None, dtype="float32",
                 n_threads=None):
        _store_params(self, locals())

    _output = "identity"

    @property
    def _loss_scale(self):
        return self.n_outputs_  # the core sums the half squared error over outputs

    def _prepare(self, X, y, reset):
        X, y = _validate_data(self, _tabled(X, "X"), _tabled(y, "y"), reset=reset,
                              multi_output=True, y_numeric=True, dtype=[np.float32, np.float64])
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        y2 = y.reshape(len(y), -1)
        if not reset and y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2.shape[1]} outputs, the fitted model has "
                             f"{self.n_outputs_}")
        self._n_net_outputs = y2.shape[1]
        return X, y2

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X (n_samples, n_features) and targets y; returns self.

        y : (n_samples,) or (n_samples, n_outputs). sample_weight as in MLPClassifier.fit."""
        _check_params(self)
        first = not (self.warm_start and hasattr(self, "_net"))
        X, y = self._prepare(X, y, reset=first)
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        return self._fit(X, y, sw, incremental=False, first_pass=first)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y (the first call initializes the model)."""
        _check_params(self)
        first = not hasattr(self, "_net")
        X, y = self._prepare(X, y, reset=first)
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        return self._fit(X, y, sw, incremental=True, first_pass=first)

    def predict(self, X):
        """Predicted values (n_samples,) or (n_samples, n_outputs)."""
        G = self._outputs(X)
        return G[:, 0] if G.shape[1] == 1 else G

    def _val_score_and_loss(self, G, y, w):
        """R^2 and half squared error averaged over outputs (scikit-learn's formulas)."""
        G64 = G.astype(np.float64)
        score = r2_score(y, G64, sample_weight=w)
        loss = 0.5 * np.average((y - G64) ** 2, weights=w, axis=0).mean()
        return float(score), float(loss)


# ---------------------------------------------------------------- saving and loading

_FITTED_FLOATS = ("loss_", "best_loss_", "best_validation_score_")
_FITTED_LISTS = ("loss_curve_", "validation_scores_", "validation_loss_curve_")


def _num(x):
    """A float for JSON: non-finite values as the strings 'inf', '-inf', 'nan'."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _unnum(x):
    return None if x is None else float(x)


def _to_json(est):
    params = {}
    for k, v in est.get_params(deep=False).items():
        if k == "hidden_layer_sizes":
            v = _hidden(v)
        elif k == "random_state" and not (v is None or _is_int(v)):
            v = None  # a RandomState object is not data; the fitted weights are kept anyway
        elif k == "n_iter_no_change":
            v = _num(v) if not _is_int(v) else int(v)
        elif k == "dtype" and not isinstance(v, str):
            v = _dtype_name(v) or v  # np.float32 or np.dtype('f4') as its name (JSON text)
        elif k == "skip_connections" and v is not None and not isinstance(v, str):
            v = list(v)
        elif _is_int(v):
            v = int(v)
        elif _is_real(v):
            v = float(v)
        elif isinstance(v, np.bool_):
            v = bool(v)
        params[k] = v
    fitted = {"n_iter_": int(est.n_iter_), "t_": int(est.t_), "n_layers_": int(est.n_layers_),
              "n_outputs_": int(est.n_outputs_), "out_activation_": est.out_activation_,
              "n_features_in_": int(est.n_features_in_),
              "no_improvement_count": int(est._no_improvement_count),
              "grad_norm_curve_": [np.asarray(g, dtype=np.float64).tolist()
                                   for g in est.grad_norm_curve_]}
    for k in _FITTED_FLOATS:
        fitted[k] = _num(getattr(est, k))
    for k in _FITTED_LISTS:
        v = getattr(est, k)
        fitted[k] = None if v is None else [_num(x) for x in v]
    if hasattr(est, "feature_names_in_"):
        fitted["feature_names_in_"] = [str(s) for s in est.feature_names_in_]
    if isinstance(est, MLPClassifier):
        c = est.classes_
        if c.dtype.kind not in "biufUO" or (c.dtype.kind == "O" and
                                             not all(isinstance(s, str) for s in c)):
            raise ValueError(f"cannot save classes_ of dtype {c.dtype} (only numbers and "
                             f"strings are stored as data)")
        fitted["classes_"] = [x if isinstance(x, str) else x.item() for x in c]
        fitted["classes_dtype"] = "object" if c.dtype.kind == "O" else c.dtype.str
        fitted["target_kind"] = est._target_kind
    return {"version": ESTIMATOR_FORMAT, "class": type(est).__name__, "params": params,
            "fitted": fitted}


_CLASSES = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}


def _from_network(path, net):
    """The estimator a file written by ``save`` holds (called by fastmlp.load)."""
    meta = net.metadata.get("estimator")
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has an invalid estimator header: not an object")
    version = meta.get("version")
    if version != ESTIMATOR_FORMAT or type(version) is not int:
        raise ValueError(f"{path} holds a fastmlp estimator of format version {version!r}; "
                         f"this fastmlp reads version {ESTIMATOR_FORMAT}"
                         + upgrade_advice(version, ESTIMATOR_FORMAT))
    try:
        cls = _CLASSES[meta["class"]]
        params = dict(meta["params"])
        if isinstance(params.get("hidden_layer_sizes"), list):
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        if isinstance(params.get("n_iter_no_change"), str):
            params["n_iter_no_change"] = float(params["n_iter_no_change"])
        est = cls(**params)
        _check_params(est)
        f = meta["fitted"]
        est._restore(net, f)
    except NotImplementedError as e:
        raise ValueError(f"{path} has an invalid estimator header: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise ValueError(f"{path} has an invalid estimator header: {type(e).__name__}: {e}"
                         ) from None
    return est
