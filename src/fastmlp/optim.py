"""Optimizer settings handed to the C engine.

An optimizer is a description plus its state, not a loop: the update itself runs inside the C
core, one call per block of steps, so nothing here runs per step. The state (momentum's
velocity, Adam's moments and step count) lives in the optimizer object, as in PyTorch: fitting
again with the same object continues from it, and ``reset()`` forgets it.
"""
import numbers
import threading
import weakref

import numpy as np

from fastmlp._validation import (aligned_copy, aligned_zeros, check_positive_float,
                                 check_positive_int, check_rates)


def _as_real(value, name, what):
    """value as a float; TypeError naming `what` for anything but a real number (bools too)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number {what}, got {value!r}")
    return float(value)


def _check_unit(value, name):
    """A float in [0, 1)."""
    v = _as_real(value, name, "in [0, 1)")
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


def _check_momentum(value, name):
    """A float in [0, 1] (scikit-learn's range: 1 keeps the whole velocity)."""
    v = _as_real(value, name, "in [0, 1]")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_steps(value, name):
    """Adam's step count: an int >= 0 (its bias correction reads it)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not \
            0 <= value < 2**62:
        raise ValueError(f"{name} must be an int in [0, 2**62), got {value!r}")
    return int(value)


def _check_nonneg(value, name):
    v = _as_real(value, name, ">= 0")
    if not v >= 0.0 or v == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


# State values per parameter of each kind the engine runs: velocity; Adam's m and v.
_STATE_PER_PARAM = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# Every setting is checked when it is set, in the constructor or later (a callback may change
# lr between epochs), so the engine never sees a value the constructor would refuse.
_CHECKS = {
    "lr": check_positive_float,
    "batch_size": lambda v, name: check_positive_int(v, name, allow_none=True),
    "clip_norm": lambda v, name: check_positive_float(v, name, allow_none=True),
    "l2": _check_nonneg,
    "momentum": _check_momentum,
    "t_": _check_steps,
    "nesterov": _check_bool,
    "beta1": _check_unit,
    "beta2": _check_unit,
    "eps": check_positive_float,
}


class _Optimizer:
    """Shared parts: batch size, clipping, L2, the checks of every setting and the state."""

    def __setattr__(self, name, value):
        # The engine reads the settings and writes the state at every call of a fit: a
        # change from another thread would go unchecked (a rate that is 0 in the network's
        # dtype) or mismatch the state (momentum switched on). The fit's own callbacks run
        # in its thread and may change them.
        fitting = self.__dict__.get("_fit_thread")
        if fitting is not None and fitting != threading.get_ident():
            raise RuntimeError("this optimizer is in use by a fit in another thread; change "
                               "its settings from that fit's callback, or once it has ended")
        check = _CHECKS.get(name)
        if check is not None:
            value = check(value, name)
            if (name == "nesterov" and value and getattr(self, "momentum", 1.0) == 0.0) or (
                    name == "momentum" and value == 0.0 and getattr(self, "nesterov", False)):
                raise ValueError("nesterov=True needs momentum > 0")
        object.__setattr__(self, name, value)

    def _common(self, lr, batch_size, clip_norm, l2):
        self._fit_lock = threading.Lock()  # one fit at a time uses the state (network.fit)
        self._loss_clip = 0.0  # the reported loss's clip (fm_loss); the estimators set eps
        self.lr = lr
        self.batch_size = batch_size
        self.clip_norm = clip_norm
        self.l2 = l2
        self.reset()

    def reset(self):
        """Forget the state (velocity, moments, step count)."""
        self.state_ = None
        self.t_ = 0
        self._owner = None
        self._owner_uid = None

    def _rates(self):
        """The settings check_rates looks at: the rate, Adam's eps and the clipping norm."""
        return self.lr, getattr(self, "eps", None), self.clip_norm

    def _check_rates(self, dtype):
        """check_rates on these settings in a network's dtype; returns what it checked."""
        rates = self._rates()
        check_rates(rates[0], rates[1], dtype, clip=rates[2])
        return rates

    def _state_for(self, net):
        """The state buffer for ``net``: kept while the same network is trained, else new."""
        n = self._state_per_param() * net.n_params
        if n == 0:
            return None
        if (not self._owned_by(net) or self.state_ is None or self.state_.size != n
                or self.state_.dtype != net.dtype):
            self.reset()
            self.state_ = aligned_zeros(n, net.dtype)
        elif self.state_.ctypes.data % 64:  # a pickled or copied state: on a line again
            self.state_ = aligned_copy(self.state_)
        self._link(net)
        return self.state_

    def _link(self, net):
        self._owner, self._owner_uid = weakref.ref(net), net._uid

    def _foreign_state(self, net):
        """Whether a fit of ``net`` would discard state built for another network
        (``bind`` hands it over)."""
        return (not self._owned_by(net) and self.state_ is not None
                and bool(self.t_ or self.state_.any()))

    def _owned_by(self, net):
        """Whether the state is linked to ``net``: a weak reference to it, or, after pickling
        or copying (which drop the reference), the identity of the network it was made for,
        which that network's pickles and copies keep."""
        if self._owner is not None:
            return self._owner() is net
        return self._owner_uid is not None and self._owner_uid == net._uid

    def _state_per_param(self):
        return _STATE_PER_PARAM[self._kind()]

    def bind(self, net):
        """Attach the state this optimizer holds to ``net``, so that the next fit of ``net``
        continues from it. Without it, an optimizer continues its state only on the network
        it trained, or on that network's pickles and copies (its link is the network's
        identity, which they keep). The state must have been made for a network of the same
        size and dtype."""
        n = self._state_per_param() * net.n_params
        if self.state_ is not None and (self.state_.size != n or self.state_.dtype != net.dtype):
            raise ValueError(f"this optimizer's state ({self.state_.size} values of "
                             f"{self.state_.dtype}) does not fit a network of "
                             f"{net.n_params} {net.dtype} parameters")
        self._link(net)
        return self

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_owner"] = None  # the reference does not travel; _owner_uid does
        state.pop("_fit_lock", None)
        state.pop("_fit_thread", None)  # a copy is no fit's
        return state

    def __copy__(self):
        """A copy with a state of its own: it continues on the network (or its copies) as
        the original would, and neither one's steps reach the other's state."""
        new = type(self).__new__(type(self))
        new.__setstate__(self.__getstate__())
        if self.state_ is not None:
            new.state_ = aligned_copy(self.state_)
        return new

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__["_fit_lock"] = threading.Lock()
        self.__dict__.setdefault("_loss_clip", 0.0)  # pickled before it existed
        self.__dict__.setdefault("_owner_uid", None)


class SGD(_Optimizer):
    """Mini-batch stochastic gradient descent, with optional momentum, L2 and clipping.

    Each step takes a batch and computes the gradient g of the batch's mean loss (plus
    ``l2 / n_batch * W`` for every weight matrix), then with ``c = min(1, clip_norm / ||g||)``
    (``||g||`` the L2 norm over all parameters together; c = 1 without clipping):

    - plain: ``p <- p - lr * c * g``
    - momentum: ``v <- momentum * v - lr * c * g``; ``p <- p + v``
    - Nesterov: the same v, then ``p <- p + momentum * v - lr * c * g``

    (scikit-learn's forms; its ``alpha`` is ``l2`` here).

    Parameters
    ----------
    lr : float > 0
        The learning rate (step size).
    batch_size : int >= 1 or None
        Rows per step: 1 is single-sample SGD, None the full batch (plain gradient descent).
        A batch size larger than the data is clipped to it with a warning.
    clip_norm : float > 0 or None
        The clipping threshold tau on the global gradient norm; None never clips.
    momentum : float in [0, 1)
    nesterov : bool
        Nesterov's momentum (needs momentum > 0).
    l2 : float >= 0
        L2 penalty on the weights (not the biases), scikit-learn's ``alpha``.
    """

    def __init__(self, lr=0.01, batch_size=32, clip_norm=None, momentum=0.0, nesterov=False,
                 l2=0.0):
        self.momentum = momentum
        self.nesterov = nesterov
        self._common(lr, batch_size, clip_norm, l2)

    def _kind(self):
        if self.momentum == 0.0:
            return "sgd"
        return "nesterov" if self.nesterov else "momentum"

    def _settings(self):
        """The tuple _core.train_steps reads."""
        return (self._kind(), self.lr, self.clip_norm or 0.0, self.momentum, 0.9, 0.999,
                1e-8, self.l2, self.t_, self._loss_clip)

    def __repr__(self):
        extra = ""
        if self.momentum:
            extra += f", momentum={self.momentum!r}"
        if self.nesterov:
            extra += ", nesterov=True"
        if self.l2:
            extra += f", l2={self.l2!r}"
        return (f"SGD(lr={self.lr!r}, batch_size={self.batch_size!r}, "
                f"clip_norm={self.clip_norm!r}{extra})")


class Adam(_Optimizer):
    """Adam (Kingma and Ba), in scikit-learn's form, with optional L2 and clipping.

    With the (clipped) gradient g of step t: ``m <- beta1 m + (1 - beta1) g``,
    ``v <- beta2 v + (1 - beta2) g^2``, ``p <- p - lr_t m / (sqrt(v) + eps)`` with
    ``lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)``.

    Parameters
    ----------
    lr : float > 0
    batch_size, clip_norm, l2
        As for ``SGD``.
    beta1, beta2 : float in [0, 1)
    eps : float > 0
    """

    def __init__(self, lr=0.001, batch_size=32, clip_norm=None, beta1=0.9, beta2=0.999,
                 eps=1e-8, l2=0.0):
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self._common(lr, batch_size, clip_norm, l2)

    def _kind(self):
        return "adam"

    def _settings(self):
        return ("adam", self.lr, self.clip_norm or 0.0, 0.0, self.beta1, self.beta2, self.eps,
                self.l2, self.t_, self._loss_clip)

    def __repr__(self):
        extra = f", l2={self.l2!r}" if self.l2 else ""
        return (f"Adam(lr={self.lr!r}, batch_size={self.batch_size!r}, "
                f"clip_norm={self.clip_norm!r}, beta1={self.beta1!r}, beta2={self.beta2!r}, "
                f"eps={self.eps!r}{extra})")
