"""``fastmlp train --checkpoint-every N`` and ``--resume`` (cli.py design note 8): a resumed run
gives bit for bit the model of an uninterrupted one, after a checkpoint, a Ctrl-C or a kill."""
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp._threads import resolve_threads
from fastmlp import cli
from fastmlp.cli import main

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastmlp.__file__)))
SMALL = ["--hidden", "16", "--batch-size", "64", "-q"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def params(path):
    return fastmlp.load(path)._params.tobytes()


@pytest.fixture
def full6(tmp_path, capsys):
    """An uninterrupted six-epoch run without checkpoints: the reference."""
    path = tmp_path / "full6.npz"
    code, _, err = run(capsys, "train", "--epochs", 6, "--out", path, *SMALL)
    assert code == 0, err
    return path


def test_checkpoints_do_not_change_the_run_and_resume_exactly(tmp_path, capsys, full6):
    out, ck = tmp_path / "out.npz", tmp_path / "ck.npz"
    code, _, err = run(capsys, "train", "--epochs", 6, "--checkpoint-every", 2,
                       "--checkpoint", ck, "--out", out, *SMALL)
    assert code == 0, err
    assert params(out) == params(full6)
    state = fastmlp.load(ck).metadata["training"]
    assert state["epoch"] == 4 and state["resumable"] is True
    assert params(ck) != params(full6)
    resumed = tmp_path / "resumed.npz"
    code, text, err = run(capsys, "train", "--epochs", 6, "--resume", "--checkpoint", ck,
                          "--out", resumed, *SMALL)
    assert code == 0, err
    assert f"resuming from {ck} after epoch 4" in text
    assert params(resumed) == params(full6)
    assert fastmlp.load(resumed).metadata["training"]["epoch"] == 6


def test_a_finished_model_resumes_to_more_epochs(tmp_path, capsys, full6):
    """The default checkpoint path is --out: resuming a finished six-epoch model to eight
    equals a direct eight-epoch run."""
    direct = tmp_path / "direct8.npz"
    assert run(capsys, "train", "--epochs", 8, "--out", direct, *SMALL)[0] == 0
    code, _, err = run(capsys, "train", "--epochs", 8, "--resume", "--out", full6, *SMALL)
    assert code == 0, err
    assert params(full6) == params(direct)


def test_ctrl_c_keeps_the_checkpoint_at_the_out_path(tmp_path, capsys, monkeypatch, full6):
    fits = []

    class Interrupted(fastmlp.MLP):
        def fit(self, *args, **kwargs):
            fits.append(1)
            if len(fits) == 5:  # in epoch 5, before it completes
                raise KeyboardInterrupt
            return super().fit(*args, **kwargs)

    out = tmp_path / "m.npz"
    monkeypatch.setattr(fastmlp, "MLP", Interrupted)
    code, text, err = run(capsys, "train", "--epochs", 6, "--checkpoint-every", 2,
                          "--out", out, *SMALL)
    monkeypatch.undo()
    assert code == 130, err
    assert "training interrupted after 4 of 6 epochs" in text
    assert f"the checkpoint of epoch 4 in {out} is kept; continue with --resume" in text
    code, _, err = run(capsys, "train", "--epochs", 6, "--resume", "--out", out, *SMALL)
    assert code == 0, err
    assert params(out) == params(full6)


def test_ctrl_c_in_a_resumed_run_keeps_the_checkpoint_it_resumed_from(tmp_path, capsys,
                                                                     monkeypatch, full6):
    """Found by a new-user run: a Ctrl-C in a resumed run, before its own first checkpoint,
    replaced the checkpoint it had resumed from with a mid-epoch model that cannot resume."""
    out = tmp_path / "m.npz"
    assert run(capsys, "train", "--epochs", 4, "--checkpoint-every", 2, "--out", out,
               *SMALL)[0] == 0
    before = out.read_bytes()
    real_fit = fastmlp.MLP.fit

    def interrupted_fit(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastmlp.MLP, "fit", interrupted_fit)
    code, text, err = run(capsys, "train", "--epochs", 6, "--checkpoint-every", 2, "--resume",
                          "--out", out, *SMALL)
    monkeypatch.setattr(fastmlp.MLP, "fit", real_fit)
    assert code == 130, err
    assert f"the checkpoint of epoch 4 in {out} is kept; continue with --resume" in text
    assert out.read_bytes() == before
    code, _, err = run(capsys, "train", "--epochs", 6, "--checkpoint-every", 2, "--resume",
                       "--out", out, *SMALL)
    assert code == 0, err
    assert params(out) == params(full6)


def test_model_saved_after_ctrl_c_is_not_resumable(tmp_path, capsys, monkeypatch):
    class Interrupted(fastmlp.MLP):
        def fit(self, *args, **kwargs):
            raise KeyboardInterrupt

    out = tmp_path / "m.npz"
    monkeypatch.setattr(fastmlp, "MLP", Interrupted)
    code, text, _ = run(capsys, "train", "--epochs", 3, "--checkpoint-every", 2, "--out", out,
                        *SMALL)
    monkeypatch.undo()
    assert code == 130
    assert "no checkpoint was reached, so --resume cannot continue it" in text
    assert fastmlp.load(out).metadata["training"]["resumable"] is False
    code, _, err = run(capsys, "train", "--epochs", 3, "--resume", "--out", out, *SMALL)
    assert code == 2 and "cannot be resumed exactly" in err


@pytest.mark.parametrize("change, fragment", [
    (["--lr", "0.05"], "trained with --lr 0.1, this run has 0.05"),
    (["--seed", "1"], "--seed"),
    (["--hidden", "8"], "--hidden"),
    (["--batch-size", "32"], "--batch-size"),
    (["--test-size", "0.5"], "--test-size"),
])
def test_resume_refuses_other_settings(tmp_path, capsys, full6, change, fragment):
    argv = ["train", "--epochs", 8, "--resume", "--checkpoint", full6,
            "--out", tmp_path / "x.npz", *SMALL, *change]
    code, out, err = run(capsys, *argv)
    assert code == 2 and fragment in err, err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--checkpoint", "{tmp}/c.npz"], "--checkpoint needs --checkpoint-every or --resume"),
    (["--resume", "--checkpoint", "{tmp}/none.npz"], "no checkpoint at"),
    (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--resume", "--epochs", "6", "--checkpoint", "{full6}"], "already trained 6 epochs"),
    (["--checkpoint-every", "1", "--checkpoint", "{tmp}/no/such/c.npz"], "does not exist"),
])
def test_checkpoint_user_errors(tmp_path, capsys, full6, argv, fragment):
    argv = [a.format(tmp=tmp_path, full6=full6) for a in argv]
    code, _, err = run(capsys, "train", "--out", tmp_path / "m.npz", *SMALL, *argv)
    assert code == 2 and fragment in err, err


def test_resume_refuses_a_model_without_training_state(tmp_path, capsys):
    net = fastmlp.MLP([64, 16, 10], output="softmax")
    net.save(tmp_path / "plain.npz")
    code, _, err = run(capsys, "train", "--resume", "--checkpoint", tmp_path / "plain.npz",
                       "--out", tmp_path / "m.npz", *SMALL)
    assert code == 2 and "no training state" in err


def rewritten(src, dst, **training):
    """The checkpoint at src saved again to dst with some of its training state changed."""
    net = fastmlp.load(src)
    meta = dict(net.metadata)
    meta["training"] = {**meta["training"], **training}
    net.save(dst, metadata=meta)
    return dst


def test_resume_says_when_the_result_will_not_be_bit_for_bit(tmp_path, capsys, full6):
    """A checkpoint of a build that drew the row orders another way (no row_order in it), or
    trained on other threads, resumes with a warning each; the same threads resume silently."""
    ck = tmp_path / "ck.npz"
    code, _, err = run(capsys, "train", "--epochs", 6, "--checkpoint-every", 3, "--checkpoint",
                       ck, "--out", tmp_path / "o.npz", "--threads", 2, *SMALL)
    assert code == 0, err
    state = fastmlp.load(ck).metadata["training"]
    assert state["row_order"] == 2 and state["threads"] == resolve_threads(2)
    cases = [(ck, 2, None),
             (ck, 1, f"trained on {state['threads']} threads and this run uses 1"),
             (rewritten(ck, tmp_path / "old.npz", row_order=1), 2, "row order another way")]
    for path, threads, warning in cases:
        if warning and "threads" in warning and state["threads"] == 1:
            continue  # a one-CPU machine runs both on one thread
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            code, _, err = run(capsys, "train", "--epochs", 6, "--resume", "--checkpoint",
                               path, "--out", tmp_path / "r.npz", "--threads", threads, *SMALL)
        assert code == 0, err
        said = [str(w.message) for w in said if w.category is UserWarning]
        assert any(warning in m for m in said) if warning else not said, said


@pytest.mark.parametrize("bad", [-1, 2 ** 200, "x"])
def test_resume_refuses_a_damaged_row_order_state(tmp_path, capsys, full6, bad):
    saved = fastmlp.load(full6).metadata["training"]["shuffle_state"]
    path = rewritten(full6, tmp_path / "bad.npz",
                     shuffle_state={**saved, "state": {**saved["state"], "state": bad}})
    code, _, err = run(capsys, "train", "--epochs", 8, "--resume", "--checkpoint", path,
                       "--out", tmp_path / "x.npz", *SMALL)
    assert code == 2 and "not a shuffle state" in err, err
    assert not (tmp_path / "x.npz").exists()


def test_help_documents_checkpoints(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    for text in ("--checkpoint-every", "--checkpoint PATH", "--resume", "atomically"):
        assert text in out


def test_killed_process_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    """SIGKILL a real training process once it has written a checkpoint; resuming from that
    checkpoint reproduces the uninterrupted run."""
    epochs = 30
    ck = tmp_path / "ck.npz"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "fastmlp", "train", "--epochs", str(epochs),
            "--checkpoint-every", "1", "--checkpoint", str(ck), "--out",
            str(tmp_path / "never.npz"), *SMALL]
    with subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as proc:
        try:
            deadline = time.monotonic() + 120
            while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
    assert ck.exists() and proc.returncode == -signal.SIGKILL
    done = fastmlp.load(ck).metadata["training"]["epoch"]
    assert 1 <= done < epochs
    resumed, direct = tmp_path / "resumed.npz", tmp_path / "direct.npz"
    code, _, err = run(capsys, "train", "--epochs", epochs, "--resume", "--checkpoint", ck,
                       "--out", resumed, *SMALL)
    assert code == 0, err
    assert run(capsys, "train", "--epochs", epochs, "--out", direct, *SMALL)[0] == 0
    assert params(resumed) == params(direct)
    assert np.isfinite(fastmlp.load(resumed)._params).all()


def test_training_warnings_are_judged_on_the_whole_run(tmp_path, capsys, monkeypatch):
    """train runs one fit per epoch; the training warnings are computed on the run's growing
    history with one memory, as inside a single fit, and each fit's own are silenced."""
    import warnings

    from fastmlp import cli

    seen = []

    def judge(net, history, state):
        seen.append((history.epochs, id(state)))
        return ["something is off"] if history.epochs == 2 else []

    monkeypatch.setattr(cli, "epoch_warnings", judge)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(capsys, "train", "--epochs", 4, "--out", tmp_path / "m.npz",
                           "--activation", "sigmoid", "--hidden", "16,16,16,16,16", "-q")
    assert code == 0, err
    assert [e for e, _ in seen] == [1, 2, 3, 4] and len({s for _, s in seen}) == 1
    training = [w for w in caught if issubclass(w.category, fastmlp.TrainingWarning)]
    assert [str(w.message) for w in training] == ["something is off"]


def test_resume_refuses_values_moved_between_rows(tmp_path, capsys):
    """Found by a new user: a column permuted among the training rows kept the row counts and
    the training split's scaling, and --resume went on with the other data."""
    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 9, (60, 2)).astype(float), np.arange(60) % 2
    data_a = tmp_path / "a.csv"
    np.savetxt(data_a, np.column_stack([X, y]), delimiter=",", header="a,b,label",
               comments="", fmt="%g")
    # two training rows whose values of column a differ: swapping them keeps every scaling
    train = cli._split(np.arange(60.0)[:, None], y, 0.2, 0, True)[0][:, 0].astype(int)
    rows = [train[0], next(r for r in train if X[r, 0] != X[train[0], 0])]
    Xb = X.copy()
    Xb[rows[0], 0], Xb[rows[1], 0] = X[rows[1], 0], X[rows[0], 0]
    data_b = tmp_path / "b.csv"
    np.savetxt(data_b, np.column_stack([Xb, y]), delimiter=",", header="a,b,label",
               comments="", fmt="%g")
    ck = tmp_path / "ck.npz"
    common = ["--target", "label", "--hidden", "4", "-q", "--checkpoint", ck]
    code, _, err = run(capsys, "train", data_a, "--epochs", 2, "--checkpoint-every", 1,
                       "--out", tmp_path / "m.npz", *common)
    assert code == 0, err
    code, _, err = run(capsys, "train", data_b, "--epochs", 3, "--resume",
                       "--out", tmp_path / "m2.npz", *common)
    assert code == 2 and "the data differ from those" in err and "their values" in err, err
    code, _, err = run(capsys, "train", data_a, "--epochs", 3, "--resume",
                       "--out", tmp_path / "m2.npz", *common)
    assert code == 0, err


def test_ctrl_c_reports_the_score_of_the_checkpoint_it_keeps(tmp_path, capsys, monkeypatch):
    """Found by a new-user run: after a Ctrl-C that keeps the last checkpoint, the held-out
    accuracy printed was the discarded mid-epoch model's. It is now the kept file's: a
    mid-epoch model far from the checkpoint prints what the checkpoint alone prints."""
    def interrupted_run(name, spoil):
        fits = []

        class Interrupted(fastmlp.MLP):
            def fit(self, *args, **kwargs):
                fits.append(1)
                if len(fits) == 5:  # in epoch 5: the weights have moved, no epoch completed
                    if spoil:
                        self.weights[0] = -3.0 * np.asarray(self.weights[0])
                    raise KeyboardInterrupt
                return super().fit(*args, **kwargs)

        monkeypatch.setattr(fastmlp, "MLP", Interrupted)
        out = tmp_path / name
        code, text, err = run(capsys, "train", "--epochs", 6, "--checkpoint-every", 2,
                              "--out", out, *SMALL)
        monkeypatch.undo()
        assert code == 130, err
        assert f"the checkpoint of epoch 4 in {out} is kept" in text
        return [line for line in text.splitlines() if "accuracy" in line]

    kept = interrupted_run("a.npz", spoil=False)
    assert len(kept) == 1 and kept == interrupted_run("b.npz", spoil=True)
