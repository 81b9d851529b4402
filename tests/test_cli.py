"""The fastmlp command end to end: train, predict, version and config, and its user errors.

Most runs call ``fastmlp.cli.main`` in-process; a few start ``python -m fastmlp`` for real.
"""
import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import fastmlp
from fastmlp import datasets
from fastmlp.cli import main
from fastmlp.datasets import load_builtin

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastmlp.__file__)))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_column(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [r[0] for r in rows[1:]]


@pytest.fixture
def iris_csv(tmp_path):
    """Iris with text labels, the target in the middle, and a constant column."""
    X, y, meta = load_builtin("iris")
    names = meta["feature_names"]
    rows = [[*x[:2], meta["target_names"][t], *x[2:], 1.0] for x, t in zip(X, y)]
    return write_csv(tmp_path / "iris.csv", [*names[:2], "species", *names[2:], "const"],
                     rows)


@pytest.fixture
def linear_csv(tmp_path):
    """y = 3 x1 - 2 x2 + 100 plus a little noise; x3 is irrelevant."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = 3 * X[:, 0] - 2 * X[:, 1] + 100 + 0.05 * rng.normal(size=400)
    return write_csv(tmp_path / "linear.csv", ["x1", "x2", "x3", "y"],
                     [[*x, t] for x, t in zip(X, y)])


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def accuracy(out):
    return float(re.search(r"held-out accuracy: ([0-9.]+)", out).group(1))


# ---------------------------------------------------------------- train on the digits

def test_train_digits_few_epochs(tmp_path, capsys):
    model = tmp_path / "m.npz"
    code, out, _ = run(capsys, "train", "--epochs", 3, "--out", model, "-q")
    assert code == 0
    assert "64-128-64-10" in out and "1347 training rows, 450 held out" in out
    assert accuracy(out) > 0.8
    assert f"model saved to {model}" in out
    net = fastmlp.load(model)
    assert net.layer_sizes == (64, 128, 64, 10)
    assert net.metadata["classes"] == list(range(10))
    assert len(net.metadata["feature_names"]) == 64
    assert net.metadata["metrics"]["accuracy"] == pytest.approx(accuracy(out), abs=1e-4)


def test_train_digits_defaults_reach_95_percent(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train")
    assert code == 0
    assert accuracy(out) >= 0.95
    assert (tmp_path / "fastmlp-digits.npz").is_file()
    assert "model saved to fastmlp-digits.npz" in out
    # stderr is not a terminal here: the progress is one line per epoch with the loss
    assert re.search(r"epoch 40/40 loss [0-9.]+", err)


def test_train_options_full_batch_no_hidden_layer_no_test(tmp_path, capsys):
    model = tmp_path / "m.npz"
    code, out, _ = run(capsys, "train", "--hidden", "none", "--batch-size", "full",
                       "--epochs", 5, "--lr", 0.5, "--test-size", 0, "--threads", 1,
                       "--activation", "tanh", "--out", model, "-q")
    assert code == 0
    assert "64-10," in out and "batch_size=None" in out
    assert "training (no rows held out) accuracy" in out
    assert fastmlp.load(model).layer_sizes == (64, 10)


def test_digits_model_predicts_from_raw_pixel_csv(tmp_path, capsys):
    model = tmp_path / "m.npz"
    assert run(capsys, "train", "--epochs", 10, "--out", model, "-q")[0] == 0
    X, y, meta = load_builtin("digits")
    data = write_csv(tmp_path / "pixels.csv", meta["feature_names"], X[:300].astype(int))
    preds = tmp_path / "p.csv"
    assert run(capsys, "predict", model, data, "--out", preds)[0] == 0
    header, labels = read_column(preds)
    assert header == ["digit"] and len(labels) == 300
    assert np.mean(np.array(labels, dtype=int) == y[:300]) > 0.9


# ---------------------------------------------------------------- CSV round trips

def test_csv_classification_round_trip(iris_csv, tmp_path, capsys):
    model, preds = tmp_path / "iris.npz", tmp_path / "preds.csv"
    code, out, _ = run(capsys, "train", iris_csv, "--target", "species", "--epochs", 60,
                       "--out", model, "-q")
    assert code == 0
    assert "task: classification (target 'species' is not numeric)" in out
    assert "120 training rows, 30 held out, 5 features" in out
    assert accuracy(out) >= 0.8
    meta = fastmlp.load(model).metadata
    assert meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["x_scale"][-1] == 1.0  # the constant column
    code, _, _ = run(capsys, "predict", model, iris_csv, "--out", preds)
    assert code == 0
    header, labels = read_column(preds)
    assert header == ["species"] and len(labels) == 150
    assert set(labels) <= {"setosa", "versicolor", "virginica"}
    _, y, iris = load_builtin("iris")
    assert np.mean(np.array(labels) == np.array(iris["target_names"])[y]) > 0.85


def test_predict_finds_features_by_name_and_ignores_other_columns(iris_csv, tmp_path,
                                                                  capsys):
    model = tmp_path / "iris.npz"
    assert run(capsys, "train", iris_csv, "--target", "species", "--epochs", 20,
               "--out", model, "-q")[0] == 0
    code, first, _ = run(capsys, "predict", model, iris_csv)
    assert code == 0
    with open(iris_csv, newline="") as f:
        rows = list(csv.reader(f))
    order = [5, 4, 3, 1, 0]  # reversed, and no species column
    shuffled = write_csv(tmp_path / "shuffled.csv", [rows[0][j] for j in order] + ["note"],
                         [[r[j] for j in order] + ["x"] for r in rows[1:]])
    code, second, _ = run(capsys, "predict", model, shuffled)
    assert code == 0
    assert second == first and first.startswith("species\nsetosa\n")


def test_ignore_leaves_columns_out_of_training_and_prediction(iris_csv, tmp_path, capsys):
    """--ignore drops a column (an id, say) from the features; the model's feature names
    leave it out, so predict ignores it as it does the target, and the predictions equal
    those of a model trained on the file without the column."""
    with open(iris_csv, newline="") as f:
        rows = list(csv.reader(f))
    with_id = write_csv(tmp_path / "with_id.csv", ["id"] + rows[0],
                        [[str(1000 + i)] + r for i, r in enumerate(rows[1:])])
    model, plain = tmp_path / "ignored.npz", tmp_path / "plain.npz"
    args = ("--target", "species", "--epochs", 20, "-q")
    code, out, _ = run(capsys, "train", with_id, *args, "--ignore", "id", "--ignore", "const",
                       "--out", model)
    assert code == 0 and "120 training rows, 30 held out, 4 features" in out
    assert "id" not in fastmlp.load(model).metadata["feature_names"]
    no_id = write_csv(tmp_path / "no_id.csv", rows[0][:-1], [r[:-1] for r in rows[1:]])
    assert run(capsys, "train", no_id, *args, "--out", plain)[0] == 0
    assert (fastmlp.load(model)._params.tobytes() == fastmlp.load(plain)._params.tobytes())
    first, second = run(capsys, "predict", model, with_id), run(capsys, "predict", plain, no_id)
    assert first[0] == second[0] == 0 and first[1] == second[1]


@pytest.mark.parametrize("extra, message", [
    (("--ignore", "nope"), r"no column 'nope'; the columns are: sepal length"),
    (("--ignore", "species"), r"the target column 'species' cannot be ignored"),
    (tuple(a for c in ("sepal length (cm)", "sepal width (cm)", "petal length (cm)",
                       "petal width (cm)", "const") for a in ("--ignore", c)),
     r"no feature columns besides the target 'species' and the ignored columns"),
])
def test_ignore_refuses_unknown_target_and_all_columns(iris_csv, tmp_path, capsys, extra,
                                                       message):
    code, _, err = run(capsys, "train", iris_csv, "--target", "species", *extra,
                       "--out", tmp_path / "m.npz")
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "m.npz").exists()


def test_ignore_needs_a_csv_file(capsys):
    code, _, err = run(capsys, "train", "--ignore", "id")
    assert code == 2 and "--ignore needs a CSV file" in err


def test_csv_regression_round_trip(linear_csv, tmp_path, capsys):
    model = tmp_path / "linear.npz"
    code, out, _ = run(capsys, "train", linear_csv, "--target", "y", "--out", model, "-q")
    assert code == 0
    assert "task: regression" in out
    r2 = float(re.search(r"held-out R\^2: ([-0-9.]+), RMSE: ([0-9.]+)", out).group(1))
    assert r2 > 0.95
    meta = fastmlp.load(model).metadata
    assert meta["task"] == "regression" and meta["y_mean"] == pytest.approx(100, abs=1)
    code, out, _ = run(capsys, "predict", model, linear_csv)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "y" and len(lines) == 401
    pred = np.array(lines[1:], dtype=float)
    with open(linear_csv, newline="") as f:
        truth = np.array([r[3] for r in list(csv.reader(f))[1:]], dtype=float)
    assert 1 - np.sum((pred - truth) ** 2) / np.sum((truth - truth.mean()) ** 2) > 0.95


def test_integer_targets_task_rule(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    few = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0) + 1  # 1..4
    many = np.round(10 * X[:, 0] + 50).astype(int)  # integers with > 20 distinct values
    data = write_csv(tmp_path / "ints.csv", ["a", "b", "few", "many"],
                     [[*x, f, m] for x, f, m in zip(X, few, many)])
    model = tmp_path / "m.npz"
    code, out, _ = run(capsys, "train", data, "--target", "few", "--epochs", 5, "--out",
                       model, "-q")
    assert code == 0 and "task: classification (target 'few' holds 4 distinct" in out
    code, out, _ = run(capsys, "predict", model, data)
    assert code == 0 and set(out.splitlines()[1:]) <= {"1", "2", "3", "4"}
    code, out, _ = run(capsys, "train", data, "--target", "many", "--epochs", 2, "--out",
                       model, "-q")
    assert code == 0 and "task: regression (target 'many'" in out
    code, out, _ = run(capsys, "train", data, "--target", "few", "--task", "regression",
                       "--epochs", 2, "--out", model, "-q")
    assert code == 0 and "task: regression (--task regression)" in out
    assert fastmlp.load(model).n_outputs == 1


@pytest.mark.parametrize("size", ["0.9999", "0.0001"])
def test_digits_split_that_cannot_be_made_is_one_line(tmp_path, capsys, size):
    """No training row left, or fewer held-out rows than the 10 classes: exit 2, one line."""
    code, _, err = run(capsys, "train", "--epochs", 1, "--test-size", size,
                       "--out", tmp_path / "m.npz", "-q")
    assert code == 2 and f"--test-size {size}" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.npz").exists()


# ---------------------------------------------------------------- Ctrl-C

def test_interrupted_training_saves_model_and_exits_130(tmp_path, capsys, monkeypatch):
    fits = []

    class Interrupted(fastmlp.MLP):
        def fit(self, *args, **kwargs):
            fits.append(1)  # train runs one fit per epoch (cli.py design note 8)

            def stop(epoch, history):
                if len(fits) == 2:
                    raise KeyboardInterrupt
            return super().fit(*args, callback=stop, **kwargs)

    monkeypatch.setattr(fastmlp, "MLP", Interrupted)
    model = tmp_path / "m.npz"
    code, out, err = run(capsys, "train", "--epochs", 50, "--out", model, "-q")
    assert code == 130
    assert "training interrupted after 2 of 50 epochs" in out
    assert "Warning" not in err
    assert fastmlp.load(model).layer_sizes == (64, 128, 64, 10)


def python_m(*argv, cwd, **kwargs):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-m", "fastmlp", *map(str, argv)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def test_sigint_in_a_real_process(tmp_path):
    proc = python_m("train", "--epochs", 100000, "-q", cwd=tmp_path)
    try:
        while "network:" not in proc.stdout.readline():
            assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "training interrupted after" in out
    assert fastmlp.load(tmp_path / "fastmlp-digits.npz").n_features == 64


# ---------------------------------------------------------------- python -m, version, config

def test_python_m_train_and_version(tmp_path):
    proc = python_m("train", "--epochs", 2, "-q", "--out", "m.npz", cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "held-out accuracy" in out and (tmp_path / "m.npz").is_file()
    proc = python_m("--version", cwd=tmp_path)
    assert proc.communicate(timeout=60)[0].strip() == f"fastmlp {fastmlp.__version__}"


def test_python_m_user_error_is_one_line_exit_2(tmp_path):
    proc = python_m("train", "nothere.csv", "--target", "y", cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err == "fastmlp: error: nothere.csv: no such file\n"


def test_version_and_config(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"fastmlp {fastmlp.__version__}\n"
    code, verbose, _ = run(capsys, "--version", "--verbose")
    assert code == 0 and verbose.startswith(f"fastmlp {fastmlp.__version__}\n")
    assert "openmp" in verbose and verbose.count("\n") > 2
    code, config, _ = run(capsys, "config")
    assert code == 0 and config == verbose


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--batch-size" in out and "--target" in out


# ---------------------------------------------------------------- user errors

@pytest.fixture
def bad_files(tmp_path, iris_csv):
    write_csv(tmp_path / "text.csv", ["a", "b", "y"], [[1, 2, 0], [3, "abc", 1], [4, 5, 0]])
    write_csv(tmp_path / "nan.csv", ["a", "b", "y"], [[1, 2, 0], [3, 4, 1], ["nan", 5, 0]])
    write_csv(tmp_path / "inf.csv", ["a", "b", "y"], [[1, 2, 0], [3, "inf", 1]])
    write_csv(tmp_path / "notarget.csv", ["a", "b", "y"], [[1, 2, 0], [3, 4, ""]])
    write_csv(tmp_path / "ragged.csv", ["a", "b", "y"], [[1, 2, 0], [3, 4]])
    write_csv(tmp_path / "one.csv", ["a", "y"], [[1, "k"], [2, "k"], [3, "k"]])
    write_csv(tmp_path / "nofeat.csv", ["sepal length (cm)", "species"], [[1, "x"]])
    (tmp_path / "empty.csv").write_text("")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    return tmp_path


USER_ERRORS = [
    (["train", "missing.csv", "--target", "y"], ["missing.csv: no such file"]),
    (["train", "empty.csv", "--target", "y"], ["empty.csv: the file is empty"]),
    (["train", "iris.csv", "--target", "kind"],
     ["iris.csv: no target column 'kind'", "species", "petal width (cm)"]),
    (["train", "iris.csv"], ["--target is needed", "species"]),
    (["train", "text.csv", "--target", "y"],
     ["text.csv, row 2 (line 3), column 'b': 'abc' is not a number"]),
    (["train", "nan.csv", "--target", "y"],
     ["nan.csv, row 3 (line 4), column 'a': 'nan' is not a finite number"]),
    (["train", "inf.csv", "--target", "y"], ["inf.csv, row 2 (line 3), column 'b'"]),
    (["train", "notarget.csv", "--target", "y"],
     ["notarget.csv, row 2 (line 3), column 'y' (the target): empty cell"]),
    (["train", "ragged.csv", "--target", "y"], ["ragged.csv, row 2 (line 3): 2 cells"]),
    (["train", "one.csv", "--target", "y"], ["one.csv", "'y' holds one value only ('k')"]),
    (["train", "iris.csv", "--target", "species", "--task", "regression"],
     ["--task regression needs a numeric target", "'species'", "'setosa'"]),
    (["train", "--target", "y"], ["--target needs a CSV file"]),
    (["train", "--task", "regression"], ["digits are a classification task"]),
    (["train", "--hidden", "0"], ["argument --hidden", "'0'"]),
    (["train", "--hidden", "64,x"], ["argument --hidden", "'64,x'"]),
    (["train", "--lr", "-1"], ["argument --lr: must be a positive number, got '-1'"]),
    (["train", "--lr", "inf"], ["argument --lr"]),
    (["train", "--epochs", "0"], ["argument --epochs", "'0'"]),
    (["train", "--epochs", "2.5"], ["argument --epochs: must be an integer"]),
    (["train", "--batch-size", "-3"], ["argument --batch-size", "'full'"]),
    (["train", "--clip-norm", "0"], ["argument --clip-norm"]),
    (["train", "--test-size", "1"], ["argument --test-size", "[0, 1)"]),
    (["train", "--threads", "0"], ["argument --threads"]),
    (["train", "--seed", "-1"], ["argument --seed"]),
    (["train", "--activation", "softplus"], ["argument --activation", "'softplus'"]),
    (["train", "--out", "nowhere/m.npz"], ["nowhere/m.npz", "does not exist"]),
    (["train", "--epochs"], ["argument --epochs: expected one argument"]),
    (["predict", "iris.csv", "iris.csv"], ["iris.csv is not a fastmlp model"]),
    (["predict", "other.npz", "iris.csv"], ["other.npz is not a fastmlp model"]),
    (["predict", "absent.npz", "iris.csv"], ["absent.npz: no such file"]),
    (["predict", "model.npz", "nofeat.csv"],
     ["nofeat.csv: missing feature column(s) 'sepal width (cm)', 'petal length (cm)'"]),
    (["predict", "model.npz", "missing.csv"], ["missing.csv: no such file"]),
    (["predict", "model.npz"], ["required: DATA.csv"]),
    (["fit"], ["invalid choice: 'fit'"]),
    ([], ["a command is needed"]),
]


@pytest.mark.parametrize("argv, fragments", USER_ERRORS,
                         ids=[" ".join(a) or "(none)" for a, _ in USER_ERRORS])
def test_user_errors_exit_2_with_one_line(bad_files, capsys, monkeypatch, argv, fragments):
    monkeypatch.chdir(bad_files)
    if "model.npz" in argv:
        assert main(["train", "iris.csv", "--target", "species", "--epochs", "1", "-q",
                     "--out", "model.npz"]) == 0
        capsys.readouterr()
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("fastmlp: error: ") and err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err
    assert "model saved" not in out


def test_divergence_exits_1_with_advice(tmp_path, capsys):
    model = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", "--lr", "1e6", "--epochs", 3, "--out", model, "-q")
    assert code == 1
    assert err.startswith("fastmlp: error: training diverged") and err.count("\n") == 1
    assert "learning rate" in err and not model.exists()
    # In the CLI's terms: its flags, and what happened to the model file.
    assert "than --lr=1e+06, or set --clip-norm." in err and "was not saved" in err
    assert "keeps the weights" not in err


# ---------------------------------------------------------------- limits and damaged inputs

def one_line_error(capsys, *argv):
    """Run argv, check that it failed with exit 2 and one line on stderr, return the line."""
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("fastmlp: error: ") and err.count("\n") == 1, err
    assert "model saved" not in out
    return err


def small_csv(tmp_path, name, first, target=None):
    """Ten rows of x (the first one `first`) and a 0/1 label, or `target` as the target."""
    ys = [0, 1] * 5 if target is None else target
    rows = [[first, ys[0]]] + [[i, y] for i, y in zip(range(1, 10), ys[1:])]
    return write_csv(tmp_path / name, ["x", "label"], rows)


@pytest.mark.parametrize("value", ["1e200", "-1e200", "1.6e308", "1.7e308", "1e31"])
def test_train_refuses_features_too_large_to_scale(tmp_path, capsys, value):
    data = small_csv(tmp_path, "b.csv", value)
    model = tmp_path / "m.npz"
    err = one_line_error(capsys, "train", data, "--target", "label", "--out", model, "-q")
    assert f"b.csv, row 1 (line 2), column 'x': {float(value)!r} is too large to scale" in err
    assert "up to 1e+30" in err
    assert not model.exists()


def test_train_refuses_regression_target_too_large(tmp_path, capsys):
    targets = [1e300] + [0.5 * i for i in range(1, 10)]
    data = small_csv(tmp_path, "r.csv", 0, target=targets)
    err = one_line_error(capsys, "train", data, "--target", "label", "--out",
                         tmp_path / "m.npz", "--task", "regression", "-q")
    assert "r.csv, row 1 (line 2), column 'label' (the target): 1e+300 is too large" in err


def test_values_at_the_limit_train_and_save(tmp_path, capsys):
    """Features and a regression target of magnitude 1e30, and a column of spread 1e-299."""
    rows = [[1e30 * (-1) ** i, 1e-300 * i, 1e30 * (i % 3 - 1), i % 2] for i in range(40)]
    data = write_csv(tmp_path / "edge.csv", ["big", "tiny", "y", "label"], rows)
    model = tmp_path / "m.npz"
    for target, task in (("label", "classification"), ("y", "regression")):
        code, out, err = run(capsys, "train", data, "--target", target, "--task", task,
                             "--epochs", 2, "--out", model, "-q")
        assert code == 0, err
        meta = fastmlp.load(model).metadata
        assert np.isfinite(meta["x_mean"]).all() and np.isfinite(meta["x_scale"]).all()
        assert meta["x_scale"][0] == pytest.approx(1e30, rel=0.05)
        assert 5e-300 < meta["x_scale"][1] < 2e-299
    assert meta["y_scale"] == pytest.approx(0.82e30, rel=0.1)
    code, out, err = run(capsys, "predict", model, data)
    assert code == 0, err
    assert np.isfinite(np.array(out.splitlines()[1:], dtype=float)).all()


def test_predict_refuses_values_too_large_after_scaling(tmp_path, capsys):
    model = tmp_path / "m.npz"
    train = small_csv(tmp_path, "ok.csv", 0)
    assert run(capsys, "train", train, "--target", "label", "--epochs", 1, "--out", model,
               "-q")[0] == 0
    big = write_csv(tmp_path / "big.csv", ["x"], [[1], [2], [1e300]])
    err = one_line_error(capsys, "predict", model, big)
    assert "big.csv, row 3 (line 4), column 'x': 1e+300 is too large for" in err
    assert "m.npz: scaled as in its training it is" in err


@pytest.mark.parametrize("seed, ok", [("4294967296", False), ("99999999999999999999", False),
                                      ("4294967295", True)])
def test_seed_range(tmp_path, capsys, seed, ok):
    argv = ["train", small_csv(tmp_path, "s.csv", 0), "--target", "label", "--seed", seed,
            "--epochs", 1, "--out", tmp_path / "m.npz", "-q"]
    if ok:
        assert run(capsys, *argv)[0] == 0
        return
    err = one_line_error(capsys, *argv)
    assert "argument --seed: must be an integer from 0 to 4294967295" in err


@pytest.mark.parametrize("hidden, fragment", [
    ("1000000,1000000", "layer widths must be at most 65536"),
    ("65537", "layer widths must be at most 65536"),
    ("20000,20000", "the hidden layers alone hold 400020000 parameters; the limit is "
                    "268435456"),
    ("65536,4090", "the network 64-65536-4090-10 would hold 272347080 parameters"),
    ("1_000", "comma-separated layer widths"),
    ("１２８", "comma-separated layer widths"),
])
def test_hidden_layer_limits(tmp_path, capsys, hidden, fragment):
    err = one_line_error(capsys, "train", "--hidden", hidden, "--out", tmp_path / "m.npz")
    assert fragment in err


@pytest.mark.parametrize("option, value", [("--epochs", "1_0"), ("--epochs", "１"),
                                           ("--lr", "1_0"), ("--threads", "٣")])
def test_numeric_options_take_plain_ascii_numbers(capsys, option, value):
    err = one_line_error(capsys, "train", option, value)
    assert f"argument {option}" in err


# ---------------------------------------------------------------- the output path

def test_out_checks_that_fail_for_every_user(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", tmp_path / "to-fifo")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    cases = [("afile/m.npz", f"{tmp_path / 'afile'} is not a folder"),
             ("afile/sub/m.npz", "afile/sub: not a directory"),
             ("folder", "it is a directory"),
             ("new/", "it names a folder, not a file"),
             ("fifo", "it is a device, pipe or socket, not a regular file"),
             ("to-fifo", "it links to a device, pipe or socket"),
             ("dangling", "it is a broken symbolic link"),
             ("", "the output path is empty")]
    for out, fragment in cases:
        path = f"{tmp_path}/{out}" if out else ""
        err = one_line_error(capsys, "train", "--epochs", 1, "--out", path, "-q")
        assert "cannot write the model" in err and fragment in err, (out, err)
        err = one_line_error(capsys, "predict", "model.npz", "data.csv", "--out", path)
        assert "cannot write the predictions" in err and fragment in err, (out, err)
    assert sorted(os.listdir(tmp_path)) == ["afile", "dangling", "fifo", "folder", "to-fifo"]


@pytest.fixture
def non_root():
    """Skip when running as root, whom file permissions do not hold back."""
    if os.geteuid() == 0:
        pytest.skip("root is not held back by file permissions")


@pytest.mark.parametrize("out", ["ro/m.npz", "/proc/m.npz", "readonly.npz"])
def test_out_without_write_permission(non_root, tmp_path, capsys, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ro").mkdir(mode=0o500)
    (tmp_path / "readonly.npz").write_text("")
    os.chmod(tmp_path / "readonly.npz", 0o400)
    err = one_line_error(capsys, "train", "--epochs", 1, "--out", out, "-q")
    assert f"cannot write the model to {out}: permission denied" in err
    assert not os.listdir(tmp_path / "ro")


def test_a_failing_save_is_one_line(tmp_path, capsys, monkeypatch):
    class FolderGone(fastmlp.MLP):
        """The output folder disappears while training, after the pre-check."""

        def fit(self, *args, **kwargs):
            (tmp_path / "out").rmdir()
            return super().fit(*args, **kwargs)

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(fastmlp, "MLP", FolderGone)
    model = tmp_path / "out" / "m.npz"
    err = one_line_error(capsys, "train", "--hidden", 8, "--epochs", 1, "--out", model, "-q")
    assert f"cannot save the model to {model}: no such file or directory" in err
    assert "was not saved" in err


# ---------------------------------------------------------------- damaged or crafted models

@pytest.fixture
def small_model(tmp_path, capsys):
    """A 1-2-2 classifier with CLI metadata, and the CSV file it was trained on."""
    data = small_csv(tmp_path, "ok.csv", 0)
    model = tmp_path / "m.npz"
    assert run(capsys, "train", data, "--target", "label", "--hidden", 2, "--epochs", 1,
               "--out", model, "-q")[0] == 0
    return model, data


def test_predict_reads_standard_input(small_model, capsys, monkeypatch):
    """`fastmlp predict MODEL -` reads the CSV from standard input (UTF-8, a BOM allowed), with
    the same predictions as from the file, and names <stdin> in its errors."""
    def stdin(raw):
        buffer = io.BytesIO(raw)
        buffer.name = "<stdin>"  # as sys.stdin.buffer names itself
        return io.TextIOWrapper(buffer)

    model, data = small_model
    code, from_file, _ = run(capsys, "predict", model, data)
    assert code == 0
    for raw in (data.read_bytes(), b"\xef\xbb\xbf" + data.read_bytes()):
        monkeypatch.setattr(sys, "stdin", stdin(raw))
        code, out, _ = run(capsys, "predict", model, "-")
        assert code == 0 and out == from_file
    monkeypatch.setattr(sys, "stdin", stdin(b"nothing,here\n1,2\n"))
    code, _, err = run(capsys, "predict", model, "-")
    assert code == 2 and "<stdin>: missing feature column" in err
    monkeypatch.setattr(sys, "stdin", stdin(b""))
    code, _, err = run(capsys, "predict", model, "-")
    assert code == 2 and "<stdin>: the file is empty" in err


def test_predict_refuses_to_write_over_its_model_or_data(small_model, capsys):
    """Found by a new user: --out naming the model or the data file replaced it."""
    model, data = small_model
    before = model.read_bytes(), data.read_bytes()
    for out, what in ((model, "model"), (data, "data file")):
        code, _, err = run(capsys, "predict", model, data, "--out", out)
        assert code == 2 and f"is the {what}; the predictions would overwrite it" in err
    assert (model.read_bytes(), data.read_bytes()) == before


def test_predict_refuses_hard_links_and_a_closed_stdin(small_model, tmp_path, capsys,
                                                      monkeypatch):
    """Found by a second new user: --out through a hard link to the data or the model wrote
    into it; `-` with standard input closed raised AttributeError; --out - made a file."""
    model, data = small_model
    before = model.read_bytes(), data.read_bytes()
    for target, what in ((data, "data file"), (model, "model")):
        link = tmp_path / f"link-{target.name}"
        os.link(target, link)
        code, _, err = run(capsys, "predict", model, data, "--out", link)
        assert code == 2 and f"is the {what}" in err
    assert (model.read_bytes(), data.read_bytes()) == before
    code, out, _ = run(capsys, "predict", model, data, "--out", "-")
    assert code == 0 and out == run(capsys, "predict", model, data)[1]
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "-").exists()
    monkeypatch.setattr(sys, "stdin", None)
    code, _, err = run(capsys, "predict", model, "-")
    assert code == 2 and "standard input is closed" in err


def test_predict_model_with_a_flipped_byte(small_model, tmp_path, capsys):
    model, data = small_model
    raw = model.read_bytes()
    at = raw.index(fastmlp.load(model)._params.tobytes())
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1:])
    err = one_line_error(capsys, "predict", flipped, data)
    assert "flipped.npz is not a readable fastmlp model" in err


def test_predict_survives_every_flipped_byte(small_model, tmp_path, capsys):
    model, data = small_model
    raw = model.read_bytes()
    damaged = tmp_path / "damaged.npz"
    outcomes = set()
    for at in range(len(raw)):
        damaged.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
        code, _, err = run(capsys, "predict", damaged, data)
        assert code in (0, 2), (at, err)
        assert code == 0 or (err.startswith("fastmlp: error: ") and err.count("\n") == 1)
        outcomes.add(code)
    assert outcomes == {0, 2}  # a flipped weight byte still predicts


@pytest.mark.parametrize("error", [zipfile.BadZipFile("Bad CRC-32"),
                                   NotImplementedError("That compression method"),
                                   EOFError(), OSError(22, "Invalid argument")])
def test_predict_load_errors_do_not_depend_on_the_core(small_model, capsys, monkeypatch,
                                                        error):
    model, data = small_model

    def load(path):
        raise error

    monkeypatch.setattr(fastmlp, "load", load)
    err = one_line_error(capsys, "predict", model, data)
    assert f"{model} is not a readable fastmlp model: {type(error).__name__}" in err


def test_predict_model_is_a_directory(tmp_path, capsys):
    err = one_line_error(capsys, "predict", tmp_path, "data.csv")
    assert "is a directory, not a model file" in err


def test_predict_unreadable_model_says_permission_denied(non_root, small_model, capsys):
    model, data = small_model
    os.chmod(model, 0)
    err = one_line_error(capsys, "predict", model, data)
    assert f"{model}: cannot read the model: permission denied" in err
    assert "not an .npz file" not in err


def crafted(model, path, **changes):
    """A copy of model at path whose CLI metadata has `changes` (None deletes a key)."""
    net = fastmlp.load(model)
    meta = dict(net.metadata)
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    net.save(path, metadata=meta)
    return path


@pytest.mark.parametrize("changes, fragment", [
    ({"x_scale": [0]}, "'x_scale' holds 0 at 0; needs a finite positive number"),
    ({"x_scale": [-2.0]}, "'x_scale' holds -2.0 at 0"),
    ({"x_scale": 1.0}, "'x_scale' is not a list of 1 numbers"),
    ({"x_mean": ["0"]}, "'x_mean' holds '0' at 0"),
    ({"x_mean": [10 ** 400]}, "'x_mean' holds 1000000000000000000000000000000000000..."),
    ({"x_mean": None}, "'x_mean' is missing"),
    ({"x_mean": [0, 0]}, "'x_mean' is not a list of 1 numbers"),
    ({"classes": [0]}, "'classes' lists 1 labels for the network's 2 outputs"),
    ({"classes": "ab"}, "'classes' lists no labels for the network's 2 outputs"),
    ({"classes": [0, [1]]}, "'classes' holds [1] at 1"),
    ({"classes": None}, "'classes' is missing"),
    ({"feature_names": "x"}, "'feature_names' is not a list of column names"),
    ({"feature_names": ["x", "y"]}, "'feature_names' lists 2 names"),
    ({"feature_names": None}, "'feature_names' is missing"),
    ({"task": "regression", "y_mean": 0, "y_scale": 1},
     "'task' is 'regression', but the network has a 'softmax' output"),
    ({"task": "ranking"}, "'task' is 'ranking'"),
    ({"target": 3}, "'target' is 3, not a column name"),
    ({"fastmlp_cli": 2}, "'fastmlp_cli' is 2; this fastmlp reads version 1"),
])
def test_predict_refuses_crafted_metadata(small_model, tmp_path, capsys, changes, fragment):
    model, data = small_model
    bad = crafted(model, tmp_path / "bad.npz", **changes)
    err = one_line_error(capsys, "predict", bad, data)
    assert f"bad.npz: the model's metadata {fragment}" in err


@pytest.mark.parametrize("changes, fragment", [
    ({"y_scale": 0}, "'y_scale' is 0; needs a finite positive number within 2e+30"),
    ({"y_scale": 1e300}, "'y_scale' is 1e+300"),
    ({"y_mean": "100"}, "'y_mean' is '100'"),
    ({"y_mean": None}, "'y_mean' is missing"),
])
def test_predict_refuses_crafted_regression_metadata(linear_csv, tmp_path, capsys, changes,
                                                     fragment):
    model = tmp_path / "linear.npz"
    assert run(capsys, "train", linear_csv, "--target", "y", "--hidden", 2, "--epochs", 1,
               "--out", model, "-q")[0] == 0
    bad = crafted(model, tmp_path / "bad.npz", **changes)
    err = one_line_error(capsys, "predict", bad, linear_csv)
    assert f"bad.npz: the model's metadata {fragment}" in err


@pytest.mark.parametrize("metadata", [None, {"x_scale": 0, "target": ["not", "used"]}])
def test_network_saved_from_python_is_refused_by_predict(tmp_path, capsys, metadata):
    """A bare network has no feature names, scaling or labels: its columns would be taken by
    position, unscaled, the target among them (found by a new user), so predict refuses it."""
    bare = tmp_path / "bare.npz"
    fastmlp.MLP([2, 1]).save(bare, metadata=metadata)
    data = write_csv(tmp_path / "d.csv", ["a", "b"], [[1, 2], [3, 4]])
    err = one_line_error(capsys, "predict", bare, data)
    assert "bare.npz holds a network saved from Python, not a model of fastmlp train" in err
    assert "fastmlp.load()" in err


# ---------------------------------------------------------------- found by a new user

def test_train_out_may_not_overwrite_the_data(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a,b,price\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(30)))
    before = data.read_bytes()
    code, _, err = run(capsys, "train", data, "--target", "price", "--out", data)
    assert code == 2 and "is the data file" in err
    assert data.read_bytes() == before


def test_train_two_rows_is_one_line_error(tmp_path, capsys):
    data = tmp_path / "t.csv"
    data.write_text("a,b,label\n1,2,0\n4,5,1\n")
    code, _, err = run(capsys, "train", data, "--target", "label", "--task", "classification",
                       "--out", tmp_path / "m.npz")
    assert code == 2 and err.count("\n") == 1 and "fastmlp: error:" in err


def test_divergence_names_the_run_epoch(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    p = X @ [1, 2, -1] + 0.1 * rng.normal(size=300)
    data = tmp_path / "g.csv"
    np.savetxt(data, np.c_[X, p], delimiter=",", header="a,b,c,price", comments="")
    code, out, err = run(capsys, "train", data, "--target", "price", "--lr", "0.4",
                         "--batch-size", "full", "--epochs", "40", "--out", tmp_path / "m.npz")
    assert code == 1
    # The same run through the Python API (one fit of 40 epochs) diverges in epoch 4.
    assert re.search(r"diverged in epoch 4, step 1:", err), err
    # The CLI fits one epoch at a time, but the steps of epochs 1-3 were applied: the
    # advice is the rate's, not the one for a first step of all.
    assert "smaller learning rate" in err and "No step was applied" not in err, err
    assert "checkpoints already written" not in err  # there are none
    # Resumed from epoch 3's checkpoint, epoch 4 is the run's first: the same advice.
    args = ("train", data, "--target", "price", "--lr", "0.4", "--batch-size", "full",
            "--checkpoint-every", 3, "--out", tmp_path / "c.npz")
    assert run(capsys, *args, "--epochs", 3)[0] == 0
    code, out, err = run(capsys, *args, "--epochs", 40, "--resume")
    assert code == 1 and re.search(r"diverged in epoch 4, step 1:", err), err
    assert "smaller learning rate" in err and "No step was applied" not in err, err


def test_predict_refuses_an_estimator_file_with_one_line(tmp_path, capsys):
    from fastmlp.sklearn import MLPClassifier
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    MLPClassifier(max_iter=5).fit(X, y).save(tmp_path / "clf.npz")
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",", header="a,b,c", comments="")
    code, _, err = run(capsys, "predict", tmp_path / "clf.npz", data)
    assert code == 2 and "saved from Python" in err


def test_training_warnings_print_as_one_line(tmp_path):
    """The diagnostics reach the terminal as 'fastmlp: warning: ...' lines, without the
    source line of the code that raised them."""
    proc = python_m("train", "--epochs", 2, "--activation", "sigmoid", "--hidden",
                    "16,16,16,16,16,16", "--out", tmp_path / "m.npz", "-q", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert any(l.startswith("fastmlp: warning: vanishing gradients") for l in lines), lines
    assert all(l.startswith("fastmlp: ") for l in lines), lines


def test_predict_into_a_pipe_closed_early(small_model, tmp_path):
    """`fastmlp predict ... | head -1` (found by a new-user run): the reader leaving early
    ends the process quietly with 141, as SIGPIPE would, without a traceback."""
    model, _ = small_model
    big = write_csv(tmp_path / "big.csv", ["x", "label"], [[i % 10, i % 2] for i in range(20000)])
    proc = python_m("predict", model, big, cwd=tmp_path)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert first.strip()
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ---------------------------------------------------------------- from a third new user's run

def test_predict_out_failing_midway_keeps_the_previous_file(small_model, tmp_path, capsys,
                                                          monkeypatch):
    """--out wrote in place: a full disk, a size limit or a Ctrl-C left a partial file where the
    previous predictions were. Now it is written beside and renamed over."""
    import fastmlp.cli as cli
    model, data = small_model
    out = tmp_path / "pred.csv"
    out.write_text("previous\n")
    real = cli._write_rows

    def failing(error):
        def write(f, header, rows):
            real(f, header, rows)
            f.flush()
            raise error
        return write

    monkeypatch.setattr(cli, "_write_rows", failing(OSError(27, "File too large")))
    err = one_line_error(capsys, "predict", model, data, "--out", out)
    assert "cannot write the predictions to" in err and "file too large" in err
    monkeypatch.setattr(cli, "_write_rows", failing(KeyboardInterrupt()))
    code, _, err = run(capsys, "predict", model, data, "--out", out)
    assert code == 130 and "interrupted" in err
    assert out.read_text() == "previous\n"
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", "ok.csv", "pred.csv"])
    monkeypatch.setattr(cli, "_write_rows", real)
    assert run(capsys, "predict", model, data, "--out", out)[0] == 0
    assert out.read_text().startswith("label\n")


def _cli_process(argv, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "fastmlp", *map(str, argv)], cwd=cwd, env=env,
                          stdout=stdout, stderr=stderr, text=True, timeout=300)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_failing_or_closed_standard_output_is_one_line(small_model, tmp_path):
    """Found by a new user: stdout on a full disk or closed gave tracebacks (exit 1, or 120
    from the interpreter's last flush)."""
    model, data = small_model
    with open("/dev/full", "w") as full:
        for argv in (["predict", model, data], ["--version"], ["--help"], ["train", "--help"]):
            proc = _cli_process(argv, tmp_path, stdout=full)
            assert proc.returncode == 2, (argv, proc.stderr)
            assert proc.stderr.startswith("fastmlp: error: cannot write") and \
                proc.stderr.count("\n") == 1, proc.stderr
            assert "no space left on device" in proc.stderr
        # the playground's address: not "cannot listen" (found by a second new user)
        proc = _cli_process(["playground", "--port", "0"], tmp_path, stdout=full)
        assert proc.returncode == 2, proc.stderr
        assert "cannot write the address (http://127.0.0.1:" in proc.stderr
        assert "cannot listen" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, os; os.close(1); sys.stdout = None; "
         "from fastmlp.cli import main; sys.exit(main(sys.argv[1:]))", "predict", str(model),
         str(data)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": SRC},
        stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 2
    assert "standard output is closed" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_help_into_a_full_disk_is_an_error(tmp_path, unbuffered):
    """Found by a new user: `fastmlp --help > /dev/full` exited 0. argparse drops a failed
    write; with PYTHONUNBUFFERED set the write itself fails, else the last flush."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "fastmlp", "predict", "--help"],
                              cwd=tmp_path, env={**env, "PYTHONPATH": SRC}, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == ("fastmlp: error: cannot write to standard output: no space left on "
                           "device\n")


def test_train_with_standard_output_closed_is_refused_before_training(tmp_path):
    """Found by a new user: `fastmlp train >&-` trained, saved and exited 0 with its results
    lost. It is refused before any work; --help then goes to standard error."""
    data = small_csv(tmp_path, "s.csv", 0)
    closed = ("import sys, os; os.close(1); sys.stdout = None; "
              "from fastmlp.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": SRC}
    for argv in (["train", str(data), "--target", "label", "--epochs", "1", "--out", "m.npz"],
                 ["config"], ["demo", "dead-relu"]):
        proc = subprocess.run([sys.executable, "-c", closed, *argv], cwd=tmp_path, env=env,
                              stderr=subprocess.PIPE, text=True, timeout=300)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.startswith("fastmlp: error: standard output is closed: fastmlp "
                                      f"{argv[0]} prints its results there"), proc.stderr
    assert not (tmp_path / "m.npz").exists()
    proc = subprocess.run([sys.executable, "-c", closed, "--help"], cwd=tmp_path, env=env,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr.startswith("usage: fastmlp")


def test_train_with_standard_error_closed_still_trains_and_saves(tmp_path):
    """Found by a new user: `2>&-` made the progress bar raise AttributeError; nothing saved."""
    data = small_csv(tmp_path, "s.csv", 0)
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, os; os.close(2); sys.stderr = None; "
         "from fastmlp.cli import main; sys.exit(main(sys.argv[1:]))", "train", str(data),
         "--target", "label", "--epochs", "3", "--out", "m.npz"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert "model saved to m.npz" in proc.stdout
    assert fastmlp.load(tmp_path / "m.npz").n_features == 1


@pytest.mark.parametrize("flag", ["--lr", "--clip-norm"])
def test_a_rate_that_is_zero_in_float32_is_refused(tmp_path, capsys, flag):
    """Found by a new user: --lr 1e-320 trained nothing and exited 0 with chance accuracy."""
    data = small_csv(tmp_path, "s.csv", 0)
    model = tmp_path / "m.npz"
    err = one_line_error(capsys, "train", data, "--target", "label", flag, "1e-320", "--out",
                         model, "-q")
    assert "is 0 in float32" in err and "train nothing" in err
    assert not model.exists()


def test_a_training_split_of_one_class_is_named_as_such(tmp_path, capsys):
    """Found by a new user: the message said `y holds only class 1` of a file with two."""
    data = write_csv(tmp_path / "t.csv", ["x", "label"], [[0, 0], [1, 1], [2, 1]])
    err = one_line_error(capsys, "train", data, "--target", "label", "--test-size", "0.6",
                         "--out", tmp_path / "m.npz", "-q")
    assert "the 1 training row left by --test-size 0.6 holds only the class" in err
    assert "a classifier needs two classes" in err


def test_integer_labels_beyond_float_precision_come_back_exactly(tmp_path, capsys):
    """Found by a new user: labels 9007199254740993 and ...995 were read as float64 and
    predicted as 9007199254740992 and ...996, values not in the data."""
    big = [9007199254740993, 9007199254740995]
    rows = [[i % 7, i % 3, big[i % 2]] for i in range(40)]
    data = write_csv(tmp_path / "big.csv", ["a", "b", "label"], rows)
    model, pred = tmp_path / "m.npz", tmp_path / "p.csv"
    code, _, err = run(capsys, "train", data, "--target", "label", "--epochs", "2", "--out",
                       model, "-q")
    assert code == 0, err
    assert fastmlp.load(model).metadata["classes"] == big
    code, _, err = run(capsys, "predict", model, data, "--out", pred)
    assert code == 0, err
    with open(pred) as f:
        labels = {line.split(",")[-1].strip() for line in f.readlines()[1:]}
    assert labels <= {str(b) for b in big} and labels


def test_a_target_of_integers_reads_as_int64(tmp_path):
    ints = write_csv(tmp_path / "i.csv", ["x", "y"], [[0, "007"], [1, "-3"], [2, "+12"]])
    assert datasets.read_csv(ints, target="y").y.tolist() == [7, -3, 12]
    assert datasets.read_csv(ints, target="y").y.dtype == np.int64
    mixed = write_csv(tmp_path / "m.csv", ["x", "y"], [[0, "7"], [1, "7.5"]])
    assert datasets.read_csv(mixed, target="y").y.dtype == np.float64
    huge = write_csv(tmp_path / "h.csv", ["x", "y"], [[0, str(2**63)], [1, "1"]])
    assert datasets.read_csv(huge, target="y").y.tolist() == [str(2**63), "1"]  # exact text


def test_train_from_standard_input_is_refused_with_the_reason(capsys):
    err = one_line_error(capsys, "train", "-", "--target", "label")
    assert "reads its data from a file, not from standard input" in err


def test_integer_labels_beyond_int64_are_kept_exactly(tmp_path, capsys):
    """Found by a new user: labels 2**63 and 2**63 + 1 (read as floats) merged into one class,
    and 2**64 - 1 came back as 2**64."""
    labels = ["9223372036854775808", "9223372036854775809", "18446744073709551615", "5"]
    rows = [[i % 5, i % 3, labels[i % 4]] for i in range(60)]
    data = write_csv(tmp_path / "big.csv", ["a", "b", "label"], rows)
    model, pred = tmp_path / "m.npz", tmp_path / "p.csv"
    code, out, err = run(capsys, "train", data, "--target", "label", "--epochs", "2", "--out",
                         model)
    assert code == 0, err
    assert "holds integers beyond int64, kept exactly as labels" in out
    assert sorted(fastmlp.load(model).metadata["classes"]) == sorted(labels)
    code, _, err = run(capsys, "predict", model, data, "--out", pred)
    assert code == 0, err
    with open(pred) as f:
        assert {line.split(",")[-1].strip() for line in f.readlines()[1:]} <= set(labels)
    code, out, err = run(capsys, "train", data, "--target", "label", "--task", "regression",
                         "--epochs", "1", "--out", model, "-q")
    assert code == 0, err


def test_a_plot_name_without_an_extension_is_named_as_written(tmp_path, capsys):
    """Found by a new user: --plot nox said 'plot written to nox'; matplotlib wrote nox.png."""
    pytest.importorskip("matplotlib")
    code, out, err = run(capsys, "demo", "depth", "--plot", tmp_path / "nox")
    assert code == 0, err
    assert f"{tmp_path / 'nox.png'}" in out + err and (tmp_path / "nox.png").exists()
    assert not (tmp_path / "nox").exists()
    # "k." was written as k.png over the model saved there (found by a new user)
    data = small_csv(tmp_path, "d.csv", 0)
    err = one_line_error(capsys, "train", data, "--target", "label", "--out",
                         tmp_path / "k.png", "--plot", tmp_path / "k.")
    assert "would overwrite the model" in err and not (tmp_path / "k.png").exists()
    err = one_line_error(capsys, "demo", "depth", "--plot", "")
    assert "--plot needs a file name" in err
    # an existing folder became FOLDER.png beside it (found by a new user)
    (tmp_path / "pics").mkdir()
    err = one_line_error(capsys, "demo", "depth", "--plot", tmp_path / "pics")
    assert "it is a directory; give a file name in it" in err
    assert not (tmp_path / "pics.png").exists()


def test_outputs_that_overflow_are_one_line_errors(tmp_path, capsys):
    """Found by a new user: training ended on finite weights whose held-out outputs overflow,
    and train (then predict, on such a model) died with a traceback that said to scale the
    inputs, which were standardized. Both now exit 1 with one line blaming the weights."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    data = write_csv(tmp_path / "r.csv", ["a", "b", "c", "d", "y"],
                     [[*x, 2 * x[0] + x[1] - x[2]] for x in X])
    out = tmp_path / "m.npz"
    code, _, err = run(capsys, "train", data, "--target", "y", "--epochs", 3, "--lr", 2,
                       "--batch-size", "full", "--out", out, "-q")
    assert code == 1 and "Traceback" not in err, err
    assert re.search(r"error: the trained network's output for held-out row \d+ is not "
                     r"finite: .*largest \|weight\| .*training was diverging\. The model was "
                     r"not saved\. Try a smaller learning rate than --lr=2", err), err
    assert not out.exists()
    code, _, err = run(capsys, "train", data, "--target", "y", "--epochs", 1, "--lr", "1e15",
                       "--clip-norm", 1, "--batch-size", "full", "--out", out, "-q")
    assert code == 1 and "Try a smaller learning rate than --lr=1e+15, or a smaller " \
                         "--clip-norm than 1." in err, err  # not 'set --clip-norm'
    ok = tmp_path / "ok.npz"
    assert run(capsys, "train", data, "--target", "y", "--epochs", 2, "--out", ok, "-q")[0] == 0
    net = fastmlp.load(ok)
    net.weights = [w * 1e15 for w in net.weights]
    net.save(tmp_path / "big.npz")
    code, printed, err = run(capsys, "predict", tmp_path / "big.npz", data)
    assert code == 1 and printed == "" and "Traceback" not in err
    assert re.search(r"big\.npz: its output for .*r\.csv, row 1 \(line 2\) is not finite: .*"
                     r"the weights are too large", err), err


def test_resume_with_other_feature_columns_names_them(tmp_path, capsys):
    """Found by a new user: resuming with another --ignore said the data differ ('x_mean of
    the training split'); the feature columns are named first."""
    rng = np.random.default_rng(0)
    data = write_csv(tmp_path / "r.csv", ["id", "a", "b", "y"],
                     [[i, *rng.normal(size=2), float(i % 3)] for i in range(60)])
    out = tmp_path / "ck.npz"
    args = ("train", data, "--target", "y", "--checkpoint-every", 1, "--out", out, "-q")
    assert run(capsys, *args, "--ignore", "id", "--epochs", 2)[0] == 0
    code, _, err = run(capsys, *args, "--epochs", 4, "--resume")
    assert code == 2 and ("ck.npz was trained on the feature columns a, b; this run has id, "
                          "a, b (see --ignore)") in err, err


def test_a_text_feature_column_names_ignore_and_names_are_stripped(tmp_path, capsys):
    """Found by a new user: a column of text refused without a word on --ignore, and
    --ignore ' id' (spaces kept) missed the header's id (its cells are stripped)."""
    data = write_csv(tmp_path / "p.csv", ["person", "a", "y"],
                     [[f"person {i}", i % 5, i % 2] for i in range(40)])
    code, _, err = run(capsys, "train", data, "--target", "y", "--out", tmp_path / "m.npz")
    assert code == 2 and ("'person 0' is not a number; every column but the target is a "
                          "feature: leave a column of text out with --ignore person") in err, err
    code, out, _ = run(capsys, "train", data, "--target", " y ", "--ignore", " person ",
                       "--epochs", 1, "--out", tmp_path / "m.npz")
    assert code == 0 and "1 feature\n" in out and "1 epoch\n" in out, out
