"""Checks and conversions done once at the Python boundary.

Every public entry point converts its arrays here, once, into C-contiguous arrays of the
network's dtype (int64 for class labels). The C core then trusts what it is given. Each error
names the argument, what it got and what it needed, and is raised before any work starts.
"""
import numbers

import numpy as np


def aligned_zeros(n, dtype):
    """n zeros of dtype starting on a cache line (64 bytes), for the buffers the C core reads
    and writes on every step: the parameters, their gradients and the optimizer's state.

    NumPy places a large array 16 bytes past a page, so every 64-byte vector the kernels load
    from it spans two cache lines, and the 32-column strips two threads write side by side in
    a weight-gradient product share a line at each edge; the shared lines cost the most (the
    W3 and W4 products alone: 4-21% on two threads, 0-3% on one). Aligned, the W3 epoch
    (784-512-512-10, batch 128, two threads) went 0.900 -> 0.835 s and W4 (256-1024-1024-1,
    batch 256) 0.551 -> 0.520 s on a 2-core Intel Xeon (medians of 8 and 12 epochs, processes
    of the two builds alternating: bench/RESULTS.md).
    """
    dtype = np.dtype(dtype)
    buf = np.zeros(n * dtype.itemsize + 64, dtype=np.uint8)
    start = -buf.ctypes.data % 64
    return buf[start:start + n * dtype.itemsize].view(dtype)


def aligned_copy(a):
    """A flat copy of a on a cache line (aligned_zeros)."""
    out = aligned_zeros(a.size, a.dtype)
    out[...] = a.ravel()
    return out


def check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def check_positive_float(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def _first_nonfinite(a):
    bad = ~np.isfinite(a)
    pos = np.argwhere(bad)[0]
    kind = "NaN" if np.isnan(a[tuple(pos)]) else "infinity"
    return kind, pos


def _all_finite(a):
    """True if every value of a float array is finite, without a temporary the size of a.

    The sum (in a's own dtype) is finite only when every value is: a NaN or an infinity makes
    it NaN or infinite. Only when finite values overflow it are the values tested block by
    block. Summing float32 in float32 takes 10 ms for 60000 x 784 here, in float64 24 ms."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(a)
    if np.isfinite(total):
        return True
    flat = a.reshape(-1)
    step = 1 << 20
    return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))


def _row_width(r):
    """len(r) of a sequence; None for a number, a string or a 0-d array."""
    if isinstance(r, (str, bytes)):
        return None
    try:
        return len(r)
    except TypeError:
        return None


def _values(n):
    return "a single number" if n is None else f"{n} value" + "s" * (n != 1)


def _ragged(X):
    """What stops a list of rows from being a table, by its first bad row; None if nothing."""
    first = _row_width(X[0])
    for i, r in enumerate(X):
        if isinstance(r, (str, bytes)):
            return f"row {i} is a string ({r[:20]!r}), not a row of numbers"
        n = _row_width(r)
        if n != first:
            return (f"rows differ in length: row 0 holds {_values(first)}, row {i} holds "
                    f"{_values(n)}")
        for j, v in enumerate(r if n is not None else ()):
            if _row_width(v) is not None:
                return f"row {i}, column {j} holds a sequence, not a number"
    return None


def _asarray(X, name):
    """np.asarray(X); a list of rows that is not a table is refused by its first bad row."""
    try:
        return np.asarray(X)
    except ValueError:
        if isinstance(X, (list, tuple)) and X:
            bad = _ragged(X)
            if bad is not None:
                raise ValueError(f"{name}: {bad}") from None
        raise


def as_float_array(X, name, dtype, n_features=None):
    """X as a C-contiguous 2-D array of `dtype`, checked: numeric, finite, non-empty."""
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise TypeError(f"{name} is a scipy.sparse matrix, which fastmlp does not accept; "
                        f"pass {name}.toarray()")
    arr = _asarray(X, name)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = (f"; use {name}.reshape(-1, 1) for a single feature or {name}.reshape(1, -1) "
                f"for a single sample" if arr.ndim == 1 else "")
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {arr.ndim}-D "
                         f"of shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: 0 rows")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, expected {n_features}")
    with np.errstate(over="ignore"):  # a value too large for dtype is reported below
        out = np.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.kind == "f" and not _all_finite(out):
        if _all_finite(arr):
            row, col = np.argwhere(~np.isfinite(out))[0]
            raise ValueError(f"{name} holds {arr[row, col]} at row {row}, column "
                             f"{col}, too large for {np.dtype(dtype).name}")
        kind, (row, col) = _first_nonfinite(arr)
        raise ValueError(f"{name} contains {kind} (first at row {row}, column {col})")
    return out


def as_labels(y, name, n_rows, n_classes):
    """Integer class labels in [0, n_classes) as a contiguous int64 vector."""
    arr = _asarray(y, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows, X has {n_rows}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            kind, (row,) = _first_nonfinite(arr)
            raise ValueError(f"{name} contains {kind} (first at row {row})")
        if not np.all(arr == np.round(arr)):
            row = int(np.argmax(arr != np.round(arr)))
            raise ValueError(f"{name} must hold integer class labels; row {row} is {arr[row]}")
    elif arr.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold integer class labels 0..{n_classes - 1}, "
                         f"got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= n_classes)  # on the original values: no wrap-around on casting
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name} holds label {arr[row]} at row {row}, outside the "
                         f"{n_classes} classes 0..{n_classes - 1}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_targets(y, name, n_rows, n_outputs, dtype, binary=False):
    """Real targets (n_rows, n_outputs) of `dtype`; with binary, each must be 0 or 1."""
    arr = _asarray(y, name)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(f"{name} must have shape (n_samples, {n_outputs}), got {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows, X has {n_rows}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        kind, (row, col) = _first_nonfinite(arr)
        raise ValueError(f"{name} contains {kind} (first at row {row}, column {col})")
    with np.errstate(over="ignore"):  # a value too large for dtype is reported below
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(out).all():
        row, col = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(f"{name} holds {arr[row, col]} at row {row}, column {col}, too large "
                         f"for {np.dtype(dtype).name}")
    if binary and not np.isin(out, (0, 1)).all():
        row = int(np.argwhere(~np.isin(out, (0, 1)))[0][0])
        raise ValueError(f"{name} must hold 0/1 targets for binary_cross_entropy; "
                         f"row {row} holds {arr[row].tolist()}")
    return out


def check_two_classes(y, name, loss):
    """Refuse a classification target that holds one class only, naming it.

    For softmax cross-entropy ``y`` holds labels; for a single sigmoid output, 0/1 targets.
    A multi-label target (several sigmoid outputs) may have constant columns and is not
    checked."""
    if loss == "cross_entropy":
        values = np.unique(y)
    elif loss == "binary_cross_entropy" and y.ndim == 2 and y.shape[1] == 1:
        values = np.unique(y[:, 0])
    else:
        return
    if values.size == 1:
        label = values[0].item()
        label = int(label) if float(label).is_integer() else label
        raise ValueError(f"{name} holds only class {label}; a classifier needs at least two "
                         f"classes to learn from")


def check_rates(lr, eps, dtype, lr_name="lr", eps_name="eps", clip=None,
                clip_name="clip_norm"):
    """The optimizer's rate, Adam's eps and the clipping norm as the engine will use them, in
    the network's dtype: an lr that is infinite there makes every update inf (or NaN where a
    gradient is 0), an eps that is 0 there makes 0 / 0 = NaN where a gradient and its moments
    are 0, and an lr or a clip_norm that is 0 there makes every update 0 (a fit that silently
    trains nothing). Training flushes numbers below the dtype's smallest normal one to zero
    (csrc/engine.c note 16), so those count as 0."""
    t = np.dtype(dtype).type
    name = np.dtype(dtype).name
    tiny = np.finfo(dtype).tiny
    shown = str(tiny)  # the shortest that rounds to it: a rounded 1.175e-38 would be refused
    big = f"{float(np.finfo(dtype).max):.4g}"
    zero = f"is 0 in {name} training (below the smallest normal {name}, {shown}, which " \
           f"training flushes to zero)"
    with np.errstate(over="ignore", under="ignore"):
        if not np.isfinite(t(lr)):
            raise ValueError(f"{lr_name}={lr!r} is beyond the largest {name} ({big}), the "
                             f"network's dtype: every update would be infinite")
        if eps is not None and t(eps) == np.inf:
            raise ValueError(f"{eps_name}={eps!r} is beyond the largest {name} ({big}), the "
                             f"network's dtype: Adam's updates would all be 0")
        for value, what in ((lr, lr_name), (clip, clip_name)):
            if value is not None and value > 0 and not t(value) >= tiny:
                raise ValueError(f"{what}={value!r} {zero}: every update would be 0 and the "
                                 f"fit would train nothing; use {what} >= {shown}")
        if eps is not None and not t(eps) >= tiny:
            raise ValueError(f"{eps_name}={eps!r} {zero}: Adam's updates would divide 0 by 0; "
                             f"use an {eps_name} of at least {shown}")
