"""fastmlp.datasets: the bundled toy sets and the CSV reader with its error messages."""
import numpy as np
import pytest

from fastmlp import datasets
from fastmlp.datasets import (DataError, load_builtin, load_digits, parse_number,
                              read_columns, read_csv)


def write(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


# ---------------------------------------------------------------- toy data sets

def test_load_digits_is_scaled_stratified_and_fixed_by_seed():
    X_train, X_test, y_train, y_test = load_digits()
    assert X_train.shape == (1347, 64) and X_test.shape == (450, 64)
    assert X_train.min() == 0.0 and X_train.max() == 1.0
    assert y_train.dtype == np.int64 and set(np.unique(y_test)) == set(range(10))
    # stratified: each digit's share of the test set is within one image of its overall share
    counts_all = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    counts_test = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(counts_test - counts_all * 450 / 1797) <= 1)
    again = load_digits(seed=0)
    other = load_digits(seed=1)
    assert np.array_equal(again[1], X_test) and np.array_equal(again[3], y_test)
    assert not np.array_equal(other[1], X_test)


def test_load_digits_test_size():
    _, X_test, _, _ = load_digits(test_size=0.5)
    assert X_test.shape[0] == 899
    for bad in (0, 1, 1.5, -0.1, "0.2", True):
        with pytest.raises(ValueError, match="test_size"):
            load_digits(test_size=bad)


@pytest.mark.parametrize("name, task, shape, n_classes", [
    ("digits", "classification", (1797, 64), 10),
    ("iris", "classification", (150, 4), 3),
    ("breast_cancer", "classification", (569, 30), 2),
    ("wine", "classification", (178, 13), 3),
    ("diabetes", "regression", (442, 10), None),
])
def test_load_builtin(name, task, shape, n_classes):
    X, y, meta = load_builtin(name)
    assert X.shape == shape and X.dtype == np.float64 and np.isfinite(X).all()
    assert y.shape == (shape[0],)
    assert meta["task"] == task
    assert len(meta["feature_names"]) == shape[1]
    assert all(isinstance(n, str) for n in meta["feature_names"])
    if n_classes is None:
        assert meta["target_names"] is None and y.dtype == np.float64
    else:
        assert len(meta["target_names"]) == n_classes
        assert y.dtype == np.int64 and set(np.unique(y)) == set(range(n_classes))


def test_load_builtin_digits_is_raw_and_iris_names_classes():
    X, _, _ = load_builtin("digits")
    assert X.max() == 16.0
    assert load_builtin("iris")[2]["target_names"] == ["setosa", "versicolor", "virginica"]


def test_load_builtin_unknown_name():
    with pytest.raises(ValueError, match="name must be one of .*'iris'.*got 'mnist'"):
        load_builtin("mnist")


# ---------------------------------------------------------------- reading CSV

def test_read_csv_numeric_and_text_targets(tmp_path):
    path = write(tmp_path, "a,b,label,size\n1,2.5,cat,3\n-4e2, 5 ,dog,4\n")
    text = read_csv(path, target="label")
    assert text.feature_names == ["a", "b", "size"] and text.target == "label"
    assert text.X.dtype == np.float64
    np.testing.assert_array_equal(text.X, [[1, 2.5, 3], [-400, 5, 4]])
    assert text.y.tolist() == ["cat", "dog"]
    num = read_csv(path, target="size", features=["b", "a"])
    assert num.feature_names == ["b", "a"]
    np.testing.assert_array_equal(num.X, [[2.5, 1], [5, -400]])
    assert num.y.dtype == np.int64 and num.y.tolist() == [3, 4]  # integers read exactly
    floats = read_csv(path, target="b", features=["a"])
    assert floats.y.dtype == np.float64 and floats.y.tolist() == [2.5, 5.0]
    assert read_csv(str(path), features=["a"]).y is None


def test_read_csv_bom_quotes_blank_lines(tmp_path):
    text = '"x, first",y\n\n1,"a, b"\n   \n2,c\n\n'
    path = write(tmp_path, text, encoding="utf-8-sig")
    data = read_csv(path, target="y")
    assert data.feature_names == ["x, first"]
    assert data.X[:, 0].tolist() == [1.0, 2.0]
    assert data.y.tolist() == ["a, b", "c"]
    assert read_columns(path) == ["x, first", "y"]


def test_read_csv_mixed_target_stays_text(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n2,b\n")
    assert read_csv(path, target="y").y.tolist() == ["2", "b"]


ERROR_CASES = [
    # (file content or None for no file, target, features, expected fragments)
    (None, "y", None, ["missing.csv: no such file"]),
    ("", "y", None, ["data.csv: the file is empty"]),
    ("\n  \n", "y", None, ["data.csv: the file is empty"]),
    ("a,y\n", "y", None, ["data.csv: the header has no data rows"]),
    ("1,2,3\n4,5,6\n", None, None, ["data.csv: the header is missing", "(1, 2, 3)"]),
    ("a,,y\n1,2,3\n", "y", None, ["data.csv: column 2 of the header has no name"]),
    ("a,b,a\n1,2,3\n", None, None, ["column 'a' twice (columns 1 and 3)"]),
    ("a,b,y\n1,2,3\n4,5\n", "y", None,
     ["data.csv, row 2 (line 3): 2 cells, but the header names 3 columns"]),
    ("a,b,y\n1,2,3\n", "target", None,
     ["data.csv: no target column 'target'; the columns are: a, b, y"]),
    ("a;b;y\n1;2;3\n", "y", None, ["no target column 'y'", "may not be comma-separated"]),
    ("a,b,y\n1,2,3\n4,x5,6\n", "y", None,
     ["data.csv, row 2 (line 3), column 'b': 'x5' is not a number"]),
    ("a,b,y\n1,2,3\n\n4,,6\n", "y", None, ["data.csv, row 2 (line 4), column 'b': empty cell"]),
    ("a,b,y\n1,2,3\n4,5,6\n7,nan,9\n", "y", None,
     ["data.csv, row 3 (line 4), column 'b': 'nan' is not a finite number"]),
    ("a,b,y\n-inf,2,3\n", "y", None, ["row 1 (line 2), column 'a': '-inf' is not a finite"]),
    ("a,b,y\n1,2,3\n4,5,\n", "y", None,
     ["data.csv, row 2 (line 3), column 'y' (the target): empty cell"]),
    ("a,b,y\n1,2,cat\n4,5,NaN\n", "y", None,
     ["row 2 (line 3), column 'y' (the target): 'NaN' is not a finite number"]),
    ("a,b,y\n1,2,3\n", None, ["a", "c", "d"],
     ["data.csv: missing feature column(s) 'c', 'd'; the columns are: a, b, y"]),
    ("y\n1\n", "y", None, ["no feature columns besides the target 'y'"]),
    ("a,y\n1,2\n1_000,3\n", "y", None,
     ["data.csv, row 2 (line 3), column 'a': '1_000' is not a number"]),
    ("a,y\n１２,3\n", "y", None, ["data.csv, row 1 (line 2), column 'a': '１２' is not a number"]),
    ("a,y\n0x10,3\n", "y", None, ["row 1 (line 2), column 'a': '0x10' is not a number"]),
    ("a,y\n1e400,3\n", "y", None,
     ["row 1 (line 2), column 'a': '1e400' is too large to represent"]),
    ("a,y\n1,-1e999\n", "y", None,
     ["row 1 (line 2), column 'y' (the target): '-1e999' is too large to represent"]),
]


@pytest.mark.parametrize("content, target, features, fragments", ERROR_CASES)
def test_read_csv_errors_name_file_column_row(tmp_path, monkeypatch, content, target,
                                               features, fragments):
    monkeypatch.chdir(tmp_path)
    name = "missing.csv" if content is None else "data.csv"
    if content is not None:
        write(tmp_path, content)
    with pytest.raises(DataError) as info:
        read_csv(name, target=target, features=features)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_read_csv_not_text_and_directory(tmp_path):
    binary = tmp_path / "model.npz"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00\x01")
    with pytest.raises(DataError, match="model.npz: not a UTF-8 text file"):
        read_csv(binary)
    with pytest.raises(DataError, match="is a directory"):
        read_csv(tmp_path)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)
    assert datasets.DataError is DataError


@pytest.mark.parametrize("text, value", [
    ("12", 12.0), ("-0.5", -0.5), ("+.5", 0.5), ("3.", 3.0), ("1e-3", 1e-3),
    ("2.5E+10", 2.5e10), ("007", 7.0), ("1e400", float("inf")),
])
def test_parse_number_takes_plain_decimal_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["nan", "NaN", "-inf", "Infinity", "+INF"])
def test_parse_number_takes_non_finite_words(text):
    assert not np.isfinite(parse_number(text))


@pytest.mark.parametrize("text", ["1_000", "１２", "٣", "0x10", "1e", "e5", ".", "1.2.3",
                                  "- 1", "1 2", "", "nan1", "infinit", "1e5\n", "1d5"])
def test_parse_number_refuses_what_float_alone_would_take_or_garble(text):
    with pytest.raises(ValueError, match="not a number"):
        parse_number(text)


def test_read_csv_keeps_non_plain_numbers_as_names_and_labels(tmp_path):
    path = write(tmp_path, "1_000,２\n1,1_000\n2,２\n")
    data = read_csv(path, target="２")
    assert data.feature_names == ["1_000"]
    assert data.y.tolist() == ["1_000", "２"]  # text: a classification target


def test_read_csv_rows_know_their_lines(tmp_path):
    path = write(tmp_path, "a,y\n1,2\n\n3,4\n")
    data = read_csv(path, target="y")
    assert data.lines == [2, 4]
    assert data.where(1, "a") == f"{path}, row 2 (line 4), column 'a'"


# ---------------------------------------------------------------- 2-D two-class sets

TWO_D = [datasets.circle, datasets.xor, datasets.gaussian, datasets.spiral]


@pytest.mark.parametrize("make", TWO_D)
@pytest.mark.parametrize("noise", [0.0, 0.5, 3.0])
def test_two_d_shapes_range_labels(make, noise):
    X, y = make(201, noise=noise, seed=3)
    assert X.shape == (201, 2) and X.dtype == np.float64 and X.flags.c_contiguous
    assert y.shape == (201,) and y.dtype == np.int64
    assert np.all(np.abs(X) <= 6.0)
    assert np.bincount(y).tolist() == [100, 101]
    assert np.isfinite(X).all()
    # the rows are shuffled: the labels are not one block followed by the other
    assert np.count_nonzero(np.diff(y)) > 20


@pytest.mark.parametrize("make", TWO_D)
def test_two_d_default_size_and_seed(make):
    X, y = make(seed=7)
    assert X.shape == (500, 2) and y.shape == (500,)
    X2, y2 = make(seed=7)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X3, _ = make(seed=8)
    assert not np.array_equal(X, X3)
    # noise moves the same clean points: same labels, coordinates differ by about the noise
    Xn, yn = make(seed=7, noise=0.1)
    assert np.array_equal(y, yn)
    d = Xn - X
    assert 0.05 < d.std() < 0.15


def test_circle_clean_labels_are_inside_radius():
    X, y = datasets.circle(400, seed=0)
    r = np.hypot(X[:, 0], X[:, 1])
    assert np.array_equal(y, (r < 2.5).astype(np.int64))
    assert r[y == 1].max() <= 2.0 and r[y == 0].min() >= 3.0 and r.max() <= 5.0


def test_xor_clean_labels_are_the_sign_of_the_product():
    X, y = datasets.xor(400, seed=0)
    prod = X[:, 0] * X[:, 1]
    assert np.array_equal(y, (prod > 0).astype(np.int64))
    assert np.abs(X).min() >= 0.3 and np.abs(X).max() <= 5.0
    # every quadrant is used
    quadrants = set(zip(np.sign(X[:, 0]).tolist(), np.sign(X[:, 1]).tolist()))
    assert len(quadrants) == 4


def test_gaussian_clean_labels_are_the_side_of_the_diagonal():
    X, y = datasets.gaussian(400, seed=0)
    assert np.array_equal(y, (X.sum(axis=1) > 0).astype(np.int64))
    centre = np.where(y[:, None] == 1, 2.0, -2.0)
    dist = np.hypot(*(X - centre).T)
    assert dist.max() <= 2.5
    # unit spread (truncated at 2.5 standard deviations): each coordinate's std is near 0.9
    assert 0.8 < (X - centre).std() < 1.0


def test_spiral_clean_points_lie_on_their_arm():
    X, y = datasets.spiral(400, seed=0)
    r = np.hypot(X[:, 0], X[:, 1])
    t = r / 5.0
    # the angle each arm prescribes at this radius, compared as a point on the unit circle
    angle = 1.75 * 2 * np.pi * t + y * np.pi
    assert np.allclose(X[:, 0], r * np.cos(angle), atol=1e-12)
    assert np.allclose(X[:, 1], r * np.sin(angle), atol=1e-12)
    # the arms keep apart: away from the centre, where they start, no point of one class
    # lies within 1.3 of a point of the other (the radial gap between the arms is 5/3.5)
    far = r > 1.0
    a, b = X[far & (y == 0)], X[far & (y == 1)]
    assert np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min() > 1.3


def test_make_2d_by_name():
    for name, make in zip(datasets.TWO_D, TWO_D):
        X, y = datasets.make_2d(name, 50, 0.2, 1)
        X2, y2 = make(50, 0.2, 1)
        assert np.array_equal(X, X2) and np.array_equal(y, y2)
    with pytest.raises(ValueError, match="name must be one of"):
        datasets.make_2d("moons")


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(n_samples=1), ValueError, "n_samples must be at least 2"),
    (dict(n_samples=10.0), TypeError, "n_samples must be an integer"),
    (dict(n_samples=True), TypeError, "n_samples"),
    (dict(noise=-0.1), ValueError, "noise must be a finite number >= 0"),
    (dict(noise=float("nan")), ValueError, "noise"),
    (dict(noise="0.1"), TypeError, "noise must be a number"),
    (dict(seed=-1), ValueError, "seed must be None"),
    (dict(seed=1.5), ValueError, "seed"),
])
@pytest.mark.parametrize("make", TWO_D)
def test_two_d_bad_arguments(make, kwargs, err, match):
    with pytest.raises(err, match=match):
        make(**kwargs)


def test_two_d_accepts_a_generator_and_numpy_ints():
    rng = np.random.default_rng(5)
    X, _ = datasets.spiral(np.int64(30), np.float32(0.5), rng)
    X2, _ = datasets.spiral(30, 0.5, np.random.default_rng(5))
    assert np.array_equal(X, X2)
