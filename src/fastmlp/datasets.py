"""Data for fastmlp: scikit-learn's bundled toy data sets, the user's CSV files, and the
two-class point sets of a neural-network playground (:func:`circle`, :func:`xor`,
:func:`gaussian`, :func:`spiral`).

Nothing here downloads: the toy sets ship inside scikit-learn, the 2-D sets are drawn with
NumPy from a seed. CSV files are read with the standard library's ``csv`` module and NumPy only.

Errors in a CSV file raise :class:`DataError` (a ``ValueError``) with a one-line message that
names the file and, where it applies, the column and the row. Rows are numbered the way a user
finds them: ``row 1`` is the first data row after the header, and ``line N`` is the line of the
file on which that row starts, which is also the row number a spreadsheet shows (the header is
line 1, so the first data row is line 2 unless blank lines come before it). Messages give both,
for example ``data.csv, row 3 (line 4), column 'x': empty cell``.

A cell is a number only when it is written as one in plain ASCII: an optional sign, digits
with an optional decimal point, and an optional exponent (``12``, ``-0.5``, ``.5``, ``3.``,
``1e-3``, ``2.5E+10``), or one of the words ``nan``, ``inf`` and ``infinity`` in any case,
which are numbers but not finite ones. Python's ``float()`` alone would also take ``1_000``
and digits of other scripts (full-width ``１２``); those are reported as not numbers.
"""
import contextlib
import csv
import dataclasses
import math
import numbers
import re

import numpy as np

_BUILTIN = {
    "digits": "classification",
    "iris": "classification",
    "breast_cancer": "classification",
    "wine": "classification",
    "diabetes": "regression",
}
_MAX_LISTED = 20
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NONFINITE_WORD = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


class DataError(ValueError):
    """A problem in the user's data, with a one-line message naming the file, column and row."""


@dataclasses.dataclass
class CSVData:
    """A CSV file read by :func:`read_csv`.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float64
        The feature columns, finite.
    y : ndarray of shape (n_rows,) or None
        The target column as read: int64 when every value is an integer written as one,
        float64 when every value is a number, else the cells' text (str); None when no target
        was asked for.
    feature_names : list of str
        The names of the columns of ``X``, in order.
    target : str or None
        The name of the target column.
    path : str
        The file, as given.
    lines : list of int or None
        The line of the file on which each row starts (see the module notes).
    """

    X: np.ndarray
    y: object
    feature_names: list
    target: object
    path: str
    lines: list = None

    def where(self, row, column):
        """The place of a cell in messages: ``path, row R (line L), column 'name'``.

        ``row`` counts from 0 as in ``X``; ``column`` is a name.
        """
        line = f" (line {self.lines[row]})" if self.lines is not None else ""
        return f"{self.path}, row {row + 1}{line}, column {column!r}"


def load_builtin(name):
    """One of scikit-learn's bundled toy data sets, as raw arrays with a description.

    Parameters
    ----------
    name : {"digits", "iris", "breast_cancer", "wine", "diabetes"}

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
        The features as scikit-learn ships them, unscaled (digits: pixels 0..16).
    y : ndarray of shape (n_samples,)
        Class labels 0..K-1 (int64) for classification, values (float64) for regression.
    meta : dict
        ``task`` ("classification" or "regression"), ``feature_names`` (list of str) and
        ``target_names`` (list naming classes 0..K-1, or None for regression).
    """
    if name not in _BUILTIN:
        raise ValueError(f"name must be one of {sorted(_BUILTIN)}, got {name!r}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    task = _BUILTIN[name]
    X = np.asarray(bunch.data, dtype=np.float64)
    y = bunch.target.astype(np.int64 if task == "classification" else np.float64)
    names = getattr(bunch, "feature_names", None)
    if names is None or len(names) != X.shape[1]:
        names = [f"x{j}" for j in range(X.shape[1])]
    target_names = None
    if task == "classification":
        target_names = [_plain(v) for v in bunch.target_names]
    meta = {"task": task, "feature_names": [str(n) for n in names],
            "target_names": target_names}
    return X, y, meta


def load_digits(seed=0, test_size=0.25):
    """The 8x8 handwritten digits, pixels scaled to [0, 1], split in a fixed stratified way.

    Parameters
    ----------
    seed : int
        Seed of the split: the same seed gives the same split.
    test_size : float in (0, 1)
        Share of the 1797 images held out for testing.

    Returns
    -------
    X_train, X_test : ndarray of shape (n, 64), float64
        Pixel intensities divided by 16.
    y_train, y_test : ndarray of shape (n,), int64
        Digits 0..9.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real) \
            or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a number between 0 and 1 (exclusive), "
                         f"got {test_size!r}")
    X, y, _ = load_builtin("digits")
    return train_test_split(X / 16.0, y, test_size=test_size, random_state=seed, stratify=y)


def read_csv(path, target=None, features=None, ignore=()):
    """Read a CSV file with a header line into numeric features and a raw target column.

    Parameters
    ----------
    path : str, os.PathLike or text stream
        A comma-separated file, UTF-8 (a byte-order mark is allowed), whose first line names
        the columns. Blank lines are skipped; cells are stripped of surrounding spaces. A
        stream opened with ``newline=""`` (such as standard input) is read as it is, and
        named in messages by its ``name``.
    target : str or None
        The name of the target column; None reads no target.
    features : list of str or None
        The feature columns, in the order wanted; None takes every column but the target and
        those in ``ignore``. Columns that are neither are ignored.
    ignore : sequence of str
        Columns to leave out when ``features`` is None (an id column, say); each must exist
        and none may be the target.

    Returns
    -------
    CSVData
        ``X`` float64 (n_rows, n_features), ``y`` (see :class:`CSVData`), the names.

    Raises
    ------
    DataError
        With a one-line message naming the file, column and row (see the module notes).
    """
    name = _name(path)
    rows = _read_records(path, name)
    columns = _check_header(name, rows[0][1])
    records = rows[1:]
    if not records:
        raise DataError(f"{name}: the header has no data rows after it")
    # names as the header's cells are read: without the spaces around them
    target = None if target is None else target.strip()
    t = None if target is None else _column_index(name, columns, target, "target column")
    if features is None:
        left = [_column_index(name, columns, c.strip(), "column") for c in ignore]
        if t is not None and t in left:
            raise DataError(f"{name}: the target column {target!r} cannot be ignored")
        cols = [j for j in range(len(columns)) if j != t and j not in left]
        if not cols:
            what = "the ignored columns" if left else ""
            if target is not None:
                what = f"the target {target!r}" + (" and " + what if what else "")
            raise DataError(f"{name}: no feature columns besides {what}")
    else:
        cols = _feature_indices(name, columns, features)
    X = _parse_features(name, records, columns, cols)
    y = None if t is None else _parse_target(name, records, columns[t], t)
    return CSVData(X=X, y=y, feature_names=[columns[j] for j in cols], target=target,
                   path=name, lines=[line for line, _ in records])


def read_columns(path):
    """The column names in the header line of a CSV file (checked as in :func:`read_csv`)."""
    name = _name(path)
    return _check_header(name, _read_records(path, name)[0][1])


def _plain(v):
    """A NumPy scalar as the plain Python value JSON can hold."""
    return v.item() if isinstance(v, np.generic) else v


def _name(path):
    """How messages name a file or a stream."""
    return str(getattr(path, "name", "<stream>")) if hasattr(path, "read") else str(path)


def _read_records(path, name):
    """(line number, stripped cells) for each non-blank record of the file, header first."""
    records = []
    reader = None
    try:
        stream = hasattr(path, "read")
        with contextlib.nullcontext(path) if stream else open(path, newline="",
                                                              encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            line = 1
            for cells in reader:
                if len(cells) > 1 or (cells and cells[0].strip()):
                    records.append((line, [c.strip() for c in cells]))
                line = reader.line_num + 1
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, not a CSV file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} "
                        f"at offset {e.start}); is it a CSV file?") from None
    except csv.Error as e:
        raise DataError(f"{name}, line {reader.line_num}: {e}") from None
    except OSError as e:
        raise DataError(f"{name}: cannot read the file ({e.strerror or e})") from None
    if not records:
        raise DataError(f"{name}: the file is empty")
    return records


def parse_number(text):
    """The float a cell holds, by the rule of the module notes; ValueError if it holds none.

    ``nan`` and ``inf`` words give non-finite floats; so does a decimal number too large for
    float64 (``1e400`` gives ``inf``).
    """
    if _DECIMAL.fullmatch(text) or _NONFINITE_WORD.fullmatch(text):
        return float(text)
    raise ValueError(f"not a number: {text!r}")


_INTEGER = re.compile(r"[+-]?[0-9]+")


def is_integer(text):
    """Whether a cell holds an integer written as one: plain ASCII digits with an optional
    sign, spaces around allowed (no '1_000', no '7.0', no other scripts' digits)."""
    return _INTEGER.fullmatch(text.strip()) is not None


def is_number(text):
    """Whether a cell holds a number by the rule of the module notes (finite or not)."""
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def _check_header(name, cells):
    """The column names of the first line, checked to be a header: named, distinct."""
    if all(is_number(c) for c in cells):
        shown = ", ".join(cells[:3]) + (", ..." if len(cells) > 3 else "")
        raise DataError(f"{name}: the header is missing: the first line holds numbers "
                        f"({shown}), not column names")
    seen = {}
    for j, c in enumerate(cells):
        if not c:
            raise DataError(f"{name}: column {j + 1} of the header has no name")
        if c in seen:
            raise DataError(f"{name}: the header names column {c!r} twice "
                            f"(columns {seen[c] + 1} and {j + 1})")
        seen[c] = j
    return cells


def _listing(columns):
    shown = ", ".join(columns[:_MAX_LISTED])
    if len(columns) > _MAX_LISTED:
        shown += f", ... ({len(columns) - _MAX_LISTED} more)"
    return shown


def _column_index(name, columns, column, what):
    if column in columns:
        return columns.index(column)
    hint = ""
    if len(columns) == 1 and any(s in columns[0] for s in ";\t|"):
        hint = "; the file may not be comma-separated"
    raise DataError(f"{name}: no {what} {column!r}; the columns are: "
                    f"{_listing(columns)}{hint}")


def _feature_indices(name, columns, features):
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataError(f"{name}: missing feature column(s) "
                        f"{', '.join(repr(m) for m in missing[:_MAX_LISTED])}"
                        f"{', ...' if len(missing) > _MAX_LISTED else ''}; "
                        f"the columns are: {_listing(columns)}")
    return [columns.index(f) for f in features]


def _cells(n):
    return f"{n} cell" if n == 1 else f"{n} cells"


def _where(name, i, line, column):
    """The place of a cell in messages: file, data row (1-based), file line, column."""
    return f"{name}, row {i + 1} (line {line}), column {column!r}"


def _parse_features(name, records, columns, cols):
    """The feature cells as a float64 array; the first bad cell raises DataError."""
    X = np.empty((len(records), len(cols)), dtype=np.float64)
    width = len(columns)
    for i, (line, cells) in enumerate(records):
        if len(cells) != width:
            raise DataError(f"{name}, row {i + 1} (line {line}): {_cells(len(cells))}, but "
                            f"the header names {width} columns")
        try:
            values = [parse_number(cells[j]) for j in cols]
        except ValueError:
            values = None
        if values is None or not all(map(math.isfinite, values)):
            _raise_bad_cell(name, i, line, cells, columns, cols)
        X[i] = values
    return X


def _raise_bad_cell(name, i, line, cells, columns, cols):
    for j in cols:
        text = cells[j]
        where = _where(name, i, line, columns[j])
        if not text:
            raise DataError(f"{where}: empty cell")
        if not is_number(text):
            error = DataError(f"{where}: {text!r} is not a number")
            error.text_column = columns[j]  # the CLI's train names --ignore
            raise error
        if not math.isfinite(parse_number(text)):
            raise DataError(f"{where}: {_not_finite(text)}")


def _not_finite(text):
    """Why a numeric cell that is not finite is refused."""
    if _DECIMAL.fullmatch(text):
        return f"{text!r} is too large to represent (beyond float64's range)"
    return f"{text!r} is not a finite number"


def _parse_target(name, records, column, t):
    """The target cells: int64 when all are integers written as such (exact: a new user's
    labels 9007199254740993 and ...995 were read as floats and came back as ...992 and ...996);
    integers beyond int64 as their decimal text (exact too, "007" as "7"); else float64 when
    all are numbers, else their text; none empty or NaN."""
    values = []
    numeric = True
    for i, (line, cells) in enumerate(records):
        text = cells[t]
        where = _where(name, i, line, column)
        if not text:
            raise DataError(f"{where} (the target): empty cell")
        try:
            v = parse_number(text)
        except ValueError:
            numeric = False
            continue
        if not math.isfinite(v):
            raise DataError(f"{where} (the target): {_not_finite(text)}")
        values.append(v)
    if numeric:
        texts = [cells[t].strip() for _, cells in records]
        if all(is_integer(x) for x in texts):
            ints = [int(x) for x in texts]
            if all(-2**63 <= v < 2**63 for v in ints):
                return np.asarray(ints, dtype=np.int64)
            return np.asarray([str(v) for v in ints], dtype=str)
        return np.asarray(values, dtype=np.float64)
    return np.asarray([cells[t] for _, cells in records], dtype=str)


# ---------------------------------------------------------------- 2-D two-class sets
#
# Each generator draws the clean points of its two classes, fixes the labels from that clean
# geometry, then jitters the coordinates with Gaussian noise of standard deviation ``noise``
# (in the plane's units) and clips them to the box [-6, 6]^2. With noise=0 every label is
# exactly what the geometry says; with noise > 0 the classes start to overlap. Class 1 gets
# ceil(n/2) points, class 0 floor(n/2), and the rows come in a random order.

BOX = 6.0
TWO_D = ("circle", "xor", "gaussian", "spiral")
CIRCLE_INNER = 2.0      # class 1: inside this radius
CIRCLE_OUTER = (3.0, 5.0)   # class 0: in this ring
XOR_MARGIN = 0.3        # no clean point closer than this to an axis
XOR_HALF = 5.0          # clean points in [-5, 5]^2
GAUSS_CENTER = 2.0      # class 1 around (2, 2), class 0 around (-2, -2)
GAUSS_RADIUS = 2.5      # blob points kept within this radius of their centre (< 2*sqrt(2))
SPIRAL_RADIUS = 5.0
SPIRAL_TURNS = 1.75


def _check_2d_args(n_samples, noise, seed):
    if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, numbers.Integral):
        raise TypeError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 (one point per class), got {n_samples}")
    if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a number >= 0, got {noise!r}")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    if seed is not None and not isinstance(seed, np.random.Generator) and (
            isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral)
            or seed < 0):
        raise ValueError(f"seed must be None, an integer >= 0 or a numpy Generator, "
                         f"got {seed!r}")
    return int(n_samples), float(noise), np.random.default_rng(seed)


def _finish(points, rng, noise):
    """Stack the classes (class 0 first), shuffle the rows, add the noise, clip to the box.

    The noise is drawn last, so the same seed gives the same clean points in the same order
    whatever the noise level."""
    X = np.concatenate(points).astype(np.float64)
    y = np.concatenate([np.full(len(p), k, dtype=np.int64) for k, p in enumerate(points)])
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    if noise > 0:
        X += rng.normal(0.0, noise, size=X.shape)
    np.clip(X, -BOX, BOX, out=X)
    return np.ascontiguousarray(X), y


def _class_sizes(n):
    return n // 2, n - n // 2


def _disc(rng, n, r_min, r_max):
    """n points uniform over the ring r_min <= r <= r_max (a disc when r_min = 0)."""
    r = np.sqrt(rng.uniform(r_min ** 2, r_max ** 2, size=n))
    angle = rng.uniform(0.0, 2 * np.pi, size=n)
    return np.column_stack([r * np.cos(angle), r * np.sin(angle)])


def circle(n_samples=500, noise=0.0, seed=None):
    """A disc of class 1 inside a ring of class 0.

    Clean points of class 1 lie uniformly in the disc of radius 2 around the origin, those of
    class 0 uniformly in the ring between radii 3 and 5, so with noise=0 the label is 1
    exactly when the point is inside radius 2.5.

    Parameters
    ----------
    n_samples : int >= 2
        Number of points; class 1 gets ceil(n/2) of them, class 0 floor(n/2).
    noise : float >= 0
        Standard deviation of the Gaussian jitter added to each coordinate after labelling
        (the plane is 12 units wide; 0.5 already blurs the boundary).
    seed : int, numpy Generator or None
        The same seed gives the same points.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64, in [-6, 6]
    y : ndarray of shape (n_samples,), int64, labels 0 and 1
    """
    n, noise, rng = _check_2d_args(n_samples, noise, seed)
    n0, n1 = _class_sizes(n)
    return _finish([_disc(rng, n0, *CIRCLE_OUTER), _disc(rng, n1, 0.0, CIRCLE_INNER)],
                   rng, noise)


def xor(n_samples=500, noise=0.0, seed=None):
    """The four quadrants: class 1 where x1 and x2 have the same sign, class 0 elsewhere.

    Clean points lie uniformly in [-5, 5]^2 at least 0.3 from both axes, so with noise=0 the
    label is 1 exactly when x1 * x2 > 0. Parameters and returns as in :func:`circle`.
    """
    n, noise, rng = _check_2d_args(n_samples, noise, seed)
    points = []
    for k, m in enumerate(_class_sizes(n)):
        mag = rng.uniform(XOR_MARGIN, XOR_HALF, size=(m, 2))
        s1 = rng.choice([-1.0, 1.0], size=m)
        s2 = s1 if k == 1 else -s1          # same signs for class 1, opposite for class 0
        points.append(mag * np.column_stack([s1, s2]))
    return _finish(points, rng, noise)


def gaussian(n_samples=500, noise=0.0, seed=None):
    """Two round blobs: class 1 around (2, 2), class 0 around (-2, -2).

    Clean points are normal with unit standard deviation around their centre, truncated at
    radius 2.5 (resampled until inside), so with noise=0 the label is 1 exactly when
    x1 + x2 > 0. Parameters and returns as in :func:`circle`.
    """
    n, noise, rng = _check_2d_args(n_samples, noise, seed)
    points = []
    for k, m in enumerate(_class_sizes(n)):
        centre = GAUSS_CENTER if k == 1 else -GAUSS_CENTER
        blob = rng.normal(0.0, 1.0, size=(m, 2))
        outside = np.hypot(blob[:, 0], blob[:, 1]) > GAUSS_RADIUS
        while outside.any():                # about 4% of the draws, each redrawn
            blob[outside] = rng.normal(0.0, 1.0, size=(int(outside.sum()), 2))
            outside = np.hypot(blob[:, 0], blob[:, 1]) > GAUSS_RADIUS
        points.append(blob + centre)
    return _finish(points, rng, noise)


def spiral(n_samples=500, noise=0.0, seed=None):
    """Two interleaved spiral arms, one per class.

    A clean point of class k sits at radius r = 5 t and angle 1.75 * 2 pi * t + k pi for a
    t drawn uniformly in [0, 1]: the arms turn 1.75 times and never cross. Parameters and
    returns as in :func:`circle`.
    """
    n, noise, rng = _check_2d_args(n_samples, noise, seed)
    points = []
    for k, m in enumerate(_class_sizes(n)):
        t = rng.uniform(0.0, 1.0, size=m)
        r = SPIRAL_RADIUS * t
        angle = SPIRAL_TURNS * 2 * np.pi * t + k * np.pi
        points.append(np.column_stack([r * np.cos(angle), r * np.sin(angle)]))
    return _finish(points, rng, noise)


def make_2d(name, n_samples=500, noise=0.0, seed=None):
    """The 2-D set called ``name`` (one of :data:`TWO_D`), as returned by its generator."""
    generators = {"circle": circle, "xor": xor, "gaussian": gaussian, "spiral": spiral}
    if name not in generators:
        raise ValueError(f"name must be one of {list(TWO_D)}, got {name!r}")
    return generators[name](n_samples, noise, seed)
