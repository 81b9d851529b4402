"""fastmlp.demos and ``fastmlp demo`` / ``fastmlp train --plot``: every demo runs, prints its
numbers, tells the story it claims (checked against independent values where they are known)
and writes a real PNG."""
import io
import math
import sys

import pytest

from fastmlp import demos
from fastmlp.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sigma(z):
    return 1.0 / (1.0 + math.exp(-z))


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000


def run_demo(name, tmp_path, seed=0, plot=True):
    if plot:
        pytest.importorskip("matplotlib")
    out = io.StringIO()
    path = tmp_path / f"{name}.png" if plot else None
    numbers = demos.run(name, plot=path, seed=seed, file=out)
    if plot:
        assert_png(path)
    return numbers, out.getvalue()


def check_two_layer(n, text):
    # by hand: g(0,0) = -3 (sigma(1) + sigma(1)); g(1,0) = -3 (sigma(6) + sigma(-4))
    g00 = -3 * 2 * sigma(1.0)
    g10 = -3 * (sigma(6.0) + sigma(-4.0))
    assert n["g00"] == pytest.approx(g00, rel=1e-14) and n["g11"] == pytest.approx(g00,
                                                                                   rel=1e-14)
    assert n["g10"] == pytest.approx(g10, rel=1e-14) and n["g01"] == pytest.approx(g10,
                                                                                   rel=1e-14)
    assert n["threshold"] == pytest.approx((g00 + g10) / 2, rel=1e-14)
    d = n["band"]          # across the diagonal the output crosses the threshold at |d| = band
    assert -3 * (sigma(5 * d + 1) + sigma(-5 * d + 1)) == pytest.approx(n["threshold"],
                                                                       abs=1e-12)
    assert n["xor"] == [0, 1, 1, 0]
    assert f"g(0,0) = g(1,1) = {g00:.4f}" in text and "-4.386" in text


def check_dead_relu(n, text):
    assert n["dead_at_start"] == [1.0, 1.0]
    assert n["plain_moved"] == [0.0, 0.0, 0.0]         # not one weight changed
    assert all(m > 0.01 for m in n["preact_moved"])
    assert abs(n["plain_loss"] - math.log(2)) < 0.01   # only the output bias learned
    assert n["plain_accuracy"] <= 0.6
    assert n["preact_loss"] < 0.2 and n["preact_accuracy"] > 0.9
    assert "largest change of each layer's weights: 0, 0, 0" in text


def check_depth(n, text):
    for init in ("zeros", "xavier", "he"):
        r = n[f"sigmoid, {init}"]
        assert r["ratio"] < 1e-6 and r["accuracy"] < 0.65
        assert "vanishing gradients" in r["warnings"]
    assert n["sigmoid, zeros"]["ratio"] == 0.0
    assert "symmetric units" in n["sigmoid, zeros"]["warnings"]
    relu = n["relu, he"]
    assert 0.1 < relu["ratio"] < 10 and relu["accuracy"] > 0.9 and relu["warnings"] == []
    assert "relu, he: none" in text


def check_clipping(n, text):
    assert n["diverged"] and "FloatingPointError: training diverged in epoch" in text
    assert n["clipped_loss_last"] < 0.01 * n["clipped_loss_first"]
    assert n["clipped_r2"] > 0.99
    assert n["n_clipped_last"] > 0


def check_playground(n, text):
    assert n["test_accuracy"] > 0.85 and n["train_accuracy"] > 0.85
    assert "Final accuracy: training" in text


CHECKS = {"two-layer": check_two_layer, "dead-relu": check_dead_relu, "depth": check_depth,
          "clipping": check_clipping, "playground": check_playground}


def test_every_demo_is_checked():
    assert [name for name, _ in demos.list_demos()] == list(CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_demo_runs_and_tells_its_story(name, tmp_path):
    numbers, text = run_demo(name, tmp_path)
    CHECKS[name](numbers, text)
    assert text.rstrip().endswith(f"plot written to {tmp_path / (name + '.png')}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(CHECKS))
def test_demo_story_holds_for_other_seeds(name, seed, tmp_path):
    numbers, text = run_demo(name, tmp_path, seed=seed, plot=False)
    CHECKS[name](numbers, text)


def hide_matplotlib(monkeypatch):
    """Make `import matplotlib` (and its submodules) fail, as on a machine without it."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_demo_without_plot_needs_no_matplotlib(monkeypatch):
    hide_matplotlib(monkeypatch)
    numbers = demos.run("two-layer", file=io.StringIO())
    assert numbers["xor"] == [0, 1, 1, 0]
    with pytest.raises(ImportError, match="fastmlp\\[plot\\]"):
        demos.run("two-layer", plot="unused.png", file=io.StringIO())


def test_run_refuses_unknown_names_seeds_and_formats():
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="unknown image format 'txt'"):
        demos.run("depth", plot="depth.txt", file=io.StringIO())
    with pytest.raises(ValueError, match="unknown demo 'moons'; the demos are: two-layer"):
        demos.run("moons")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        demos.run("two-layer", seed=-1)


# ---------------------------------------------------------------- the command line

def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_demo_list(capsys):
    code, out, _ = cli(capsys, "demo", "--list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == list(CHECKS)


def test_cli_demo_with_plot_and_seed(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "two.png"
    code, out, _ = cli(capsys, "demo", "two-layer", "--plot", path, "--seed", "3")
    assert code == 0 and "g(0,0) = g(1,1) = -4.3864" in out
    assert_png(path)


@pytest.mark.parametrize("argv, message", [
    (["demo"], "demo needs a NAME"),
    (["demo", "moons"], "invalid choice: 'moons'"),
    (["demo", "depth", "--seed", "-2"], "--seed"),
    (["demo", "two-layer", "--plot", "{tmp}/no/such/folder/x.png"], "does not exist"),
])
def test_cli_demo_errors(capsys, tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and err.startswith("fastmlp: error:") and message in err
    assert out == ""                  # refused before any work


@pytest.mark.parametrize("plot, message", [
    ("model.npz", "would overwrite the model"),
    ("run.xyz", "cannot write a plot to run.xyz: unknown image format 'xyz'; use one of"),
])
def test_cli_train_plot_refused_before_training(capsys, tmp_path, monkeypatch, plot, message):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--epochs", "1", "--out", "model.npz",
                         "--plot", plot)
    assert code == 2 and message in err and out == ""
    assert not (tmp_path / "model.npz").exists()


def test_cli_plot_without_matplotlib_is_refused_before_training(capsys, tmp_path,
                                                                monkeypatch):
    hide_matplotlib(monkeypatch)
    code, out, err = cli(capsys, "train", "--epochs", "1", "--out", tmp_path / "m.npz",
                         "--plot", tmp_path / "p.png")
    assert code == 2 and 'pip install "fastmlp[plot]"' in err
    assert out == "" and not (tmp_path / "m.npz").exists()


def test_cli_train_plot_of_a_two_feature_run(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    from fastmlp import datasets

    X, y = datasets.xor(200, noise=0.2, seed=0)
    data = tmp_path / "xor.csv"
    data.write_text("x1,x2,label\n" + "".join(f"{a},{b},{'ab'[t]}\n" for (a, b), t in
                                               zip(X, y)))
    path = tmp_path / "run.png"
    code, out, _ = cli(capsys, "train", data, "--target", "label", "--hidden", "8",
                       "--activation", "tanh", "--epochs", "5", "--out",
                       tmp_path / "m.npz", "--plot", path, "--quiet")
    assert code == 0 and f"plot written to {path}" in out
    assert_png(path)
    # loss, gradient norms, decision boundary with its colour bar (tanh: no dead-unit panel)
    from matplotlib.image import imread
    assert imread(path).shape[:2] == (840, 1100)
