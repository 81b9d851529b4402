"""The ``fastmlp`` command: train a network on the digits or a CSV file, predict, show the build.

Usage::

    fastmlp train [DATA.csv --target COLUMN [--ignore COLUMN]...] [--hidden 128,64]
                  [--activation relu]
                  [--epochs N] [--batch-size N|full] [--lr LR] [--clip-norm TAU] [--seed N]
                  [--task auto|classification|regression] [--test-size F] [--threads N]
                  [--out MODEL.npz] [--checkpoint-every N] [--checkpoint PATH] [--resume]
                  [--quiet]
    fastmlp predict MODEL.npz DATA.csv|- [--out PREDICTIONS.csv] [--threads N]
    fastmlp demo NAME [--plot OUT.png] [--seed N]      (fastmlp demo --list names them)
    fastmlp config                      (the same as fastmlp --version --verbose)

``fastmlp train ... --plot OUT.png`` also draws the run's loss, per-layer gradient norms, dead
ReLU units and (for two features) the decision boundary; plots need ``fastmlp[plot]``.
    fastmlp --version

Exit codes: 0 success; 1 training diverged (the message suggests a smaller ``--lr`` or a
``--clip-norm``); 2 a user error (bad option value, missing or malformed file, bad data), told
in one line on stderr that starts with ``fastmlp: error:``; 130 Ctrl-C (``train`` first saves the
model of the last completed step).

Design notes
1. The task of a CSV target, with ``--task auto``: classification when any value is not a
   number, or when every value is an integer and there are at most ``MAX_AUTO_CLASSES``
   distinct values; regression otherwise. The choice and its reason are printed.
2. Everything ``predict`` needs travels in the model's metadata: feature names, the feature
   scaling ``x' = (x - x_mean) / x_scale`` fitted on the training split (a constant column
   gets scale 1), the class labels as read (class k of the network is ``classes[k]``), and
   for regression the target scaling ``y' = (y - y_mean) / y_scale``, undone on the way out.
   The digits model stores ``x_mean = 0`` and ``x_scale = 16``, so it predicts from raw pixel
   columns named ``pixel_0_0`` ... ``pixel_7_7``.
3. Default settings, found by trying: hidden layers 128,64, batch 32, 40 epochs; lr 0.1 for
   classification (held-out accuracy on the digits 0.967-0.98 over 20 seeds) and 0.02 for
   regression, whose squared loss (no 1/2) diverged at 0.1 on standardized toy targets.
4. Options are checked while parsing, the output folder before training, so a user error costs
   no training time. Errors from the core are caught only where they answer the user's input
   (building the network, loading or saving a model, memory for the sizes asked for);
   anything else is a bug and shows its traceback.
5. Limits, all refused with exit 2 before training. Hidden layers are at most ``MAX_WIDTH``
   (65536) wide and a network has at most ``MAX_PARAMS`` (2**28, 1 GiB as float32 weights;
   training needs a few times that) parameters. ``--seed`` is in [0, 2**32 - 1], what
   NumPy's and scikit-learn's seeds take. A CSV value used as a number (a feature, or a
   regression target) is at most ``MAX_ABS_VALUE`` (1e30) in magnitude: the network computes
   in float32 (largest 3.4e38), and 1e30 leaves eight orders of magnitude for the sums and
   products of the forward pass, while the mean and std (computed in float64, after scaling
   each column by a power of two so that no square overflows) stay finite. ``predict`` applies
   the same limit to each feature after the model's scaling, naming the cell that breaks it.
6. The output path is checked before training: its folder must exist and allow creating
   files (``os.access``), and an existing target must be a writable regular file (a symbolic
   link to one is replaced by the saved file). ``os.access`` cannot see everything (for root it
   allows any folder, and some file systems refuse files anyway), so a failing save is also
   reported in one line, exit 2, naming the path and the system's reason.
7. ``predict`` reads only what it checked: a model file that cannot be opened or parsed is
   reported as not a readable model, and each key of the CLI metadata is checked against the
   network (types, lengths, finite positive scales) before it is used. A model saved from
   Python without the CLI's metadata takes every column of the CSV file in order, unscaled.
8. Checkpoints. ``train`` runs one ``fit`` call per epoch, so that the state between epochs is
   only the parameters and the row-shuffling generator (plain SGD keeps no other state).
   ``--checkpoint-every N`` saves the model every N epochs (atomically, like every save) to
   ``--checkpoint PATH``, by default to the ``--out`` path, with ``training`` metadata: the
   epochs done, the generator's state and the settings that shape the run. ``--resume``
   reads that file, checks that the data (row counts, scaling, classes, and a digest of the
   training and held-out values: a new user's column permuted over the rows kept the counts
   and the scaling) and the settings match, and continues to ``--epochs``: the result is bit
   for bit the model of an uninterrupted run (also for a finished model and a larger
   ``--epochs``). The file also
   records the thread count and how the row orders were drawn (network.ROW_ORDER); when
   either differs, the run resumes with a warning that its last bits may differ. A model saved
   after Ctrl-C holds the weights of a step in mid-epoch and is marked not resumable; when
   it would overwrite the checkpoint (the default path), the checkpoint is kept instead.
"""
import argparse
import csv
import hashlib
import io
import math
import os
import shlex
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np

import fastmlp
from fastmlp import datasets
from fastmlp.diagnostics import epoch_warnings
from fastmlp._threads import resolve_threads
from fastmlp.network import (ACTIVATIONS, ROW_ORDER, DivergenceError, NonFiniteOutputError,
                             _clip_advice, _Progress, count_params, replace_file)

MAX_AUTO_CLASSES = 20
DEFAULT_HIDDEN = (128, 64)
DEFAULT_EPOCHS = 40
DEFAULT_LR = {"classification": 0.1, "regression": 0.02}
DEFAULT_BATCH = 32
METADATA_VERSION = 1
MAX_WIDTH = 65536
MAX_PARAMS = 2 ** 28
MAX_SEED = 2 ** 32 - 1
MAX_ABS_VALUE = 1e30


class UsageError(Exception):
    """A user error: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, and lets a
    failed write of --help through (argparse drops it: `--help > /dev/full` exited 0)."""

    def error(self, message):
        raise UsageError(message)

    def _print_message(self, message, file=None):
        file = file or sys.stderr  # --help with standard output closed goes to stderr
        if message and file is not None:
            file.write(message)


@dataclass
class _Data:
    """A training set after splitting and scaling, with the metadata predict will need."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    meta: dict


# ---------------------------------------------------------------- option types

def _type(check):
    """An argparse type from check(text) that raises ValueError with a short reason."""
    def convert(text):
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}, got {text!r}") from None
    return convert


def _number(text):
    try:
        return datasets.parse_number(text.strip())
    except ValueError:
        raise ValueError("must be a number") from None


def _integer(text):
    """Plain ASCII digits with an optional sign (no '1_000', no other scripts' digits)."""
    try:
        if datasets.is_integer(text):
            return int(text)
    except ValueError:  # more digits than int() converts
        pass
    raise ValueError("must be an integer")


def _positive_int(text):
    n = _integer(text)
    if n < 1:
        raise ValueError("must be a positive integer")
    return n


def _positive_float(text):
    x = _number(text)
    if not (math.isfinite(x) and x > 0):
        raise ValueError("must be a positive number")
    return x


def _hidden_sizes(text):
    """'128,64' -> [128, 64]; 'none' -> [] (no hidden layer)."""
    if text.strip().lower() == "none":
        return []
    try:
        sizes = [_integer(s) for s in text.split(",")]
    except ValueError:
        raise ValueError("must be comma-separated layer widths such as 128,64 "
                         "(or none)") from None
    if any(s < 1 for s in sizes):
        raise ValueError("layer widths must be positive integers")
    if max(sizes) > MAX_WIDTH:
        raise ValueError(f"layer widths must be at most {MAX_WIDTH}")
    between = count_params(sizes)
    if between > MAX_PARAMS:
        raise ValueError(f"the hidden layers alone hold {between} parameters; the limit is "
                         f"{MAX_PARAMS} (2**28)")
    return sizes


def _batch_size(text):
    """A positive row count, or 'full' (None: the whole training set per step)."""
    if text.strip().lower() == "full":
        return None
    try:
        return _positive_int(text)
    except ValueError:
        raise ValueError("must be a positive integer or 'full'") from None


def _test_size(text):
    x = _number(text)
    if not 0 <= x < 1:
        raise ValueError("must be a fraction in [0, 1)")
    return x


def _threads(text):
    n = _integer(text)
    if n == 0:
        raise ValueError("must be a positive count, or negative for all CPUs but -N-1")
    return n


def _seed(text):
    n = _integer(text)
    if not 0 <= n <= MAX_SEED:
        raise ValueError(f"must be an integer from 0 to {MAX_SEED} (2**32 - 1)")
    return n


# ---------------------------------------------------------------- parser

def _build_parser():
    parser = _Parser(prog="fastmlp", description="Train multi-layer perceptrons on the CPU.")
    parser.add_argument("-V", "--version", action="store_true",
                        help="print the version (with --verbose: the build configuration)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="with --version, print fastmlp.show_config()")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_plot_option(sub.choices["train"])
    _add_predict(sub)
    _add_demo(sub)
    sub.add_parser("config", help="print the build configuration (fastmlp.show_config())")
    _add_playground(sub)
    return parser


def _add_train(sub):
    p = sub.add_parser("train", help="train a network (on the digits without a CSV file)",
                       description="Train a network on scikit-learn's digits, or on a CSV "
                       "file with --target. CSV features are standardized with the training "
                       "split's mean and std. With --task auto, a target is classified when "
                       "it is non-numeric, or integer-valued with at most "
                       f"{MAX_AUTO_CLASSES} distinct values; else regressed.")
    p.add_argument("data", nargs="?", metavar="DATA.csv",
                   help="a CSV file with a header line (default: the digits)")
    p.add_argument("--target", metavar="COLUMN", help="the target column of DATA.csv")
    p.add_argument("--ignore", metavar="COLUMN", action="append", default=[],
                   help="a column of DATA.csv to leave out of the features, such as an id "
                        "(repeat for more); every other column but the target is a feature")
    p.add_argument("--task", choices=("auto", "classification", "regression"),
                   default="auto", help="what to learn (default: auto)")
    p.add_argument("--hidden", type=_type(_hidden_sizes), default=list(DEFAULT_HIDDEN),
                   metavar="W1,W2,...", help="hidden layer widths (default: 128,64)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="hidden activation (default: relu)")
    p.add_argument("--epochs", type=_type(_positive_int), default=DEFAULT_EPOCHS,
                   help=f"passes over the training data (default: {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=_type(_batch_size), default=DEFAULT_BATCH,
                   metavar="N|full", help=f"rows per step (default: {DEFAULT_BATCH})")
    p.add_argument("--lr", type=_type(_positive_float), default=None,
                   help="learning rate (default: 0.1 classification, 0.02 regression)")
    p.add_argument("--clip-norm", type=_type(_positive_float), default=None, metavar="TAU",
                   help="clip the global gradient norm to TAU (default: no clipping)")
    p.add_argument("--seed", type=_type(_seed), default=0,
                   help="seed of the split, initialization and shuffling (default: 0)")
    p.add_argument("--test-size", type=_type(_test_size), default=None, metavar="F",
                   help="share of rows held out (default: 0.25 digits, 0.2 CSV; 0: none)")
    p.add_argument("--threads", type=_type(_threads), default=None, metavar="N",
                   help="threads for the kernels (default: OpenMP's)")
    p.add_argument("--out", metavar="MODEL.npz",
                   help="where to save the model (default: fastmlp-<data>.npz here)")
    p.add_argument("--checkpoint-every", type=_type(_positive_int), default=None, metavar="N",
                   help="save the model with its training state every N epochs, atomically, "
                   "to the --checkpoint path (default: the --out path)")
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="where --checkpoint-every writes and --resume reads (default: the "
                   "--out path); Ctrl-C never overwrites a checkpoint here")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in the checkpoint up to --epochs, with the "
                   "same options and data: the result equals an uninterrupted run's")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict with a model saved by fastmlp train",
                       description="Predict for each row of a CSV file. The feature columns "
                       "are found by name; other columns (such as the target) are ignored.")
    p.add_argument("model", metavar="MODEL.npz")
    p.add_argument("data", metavar="DATA.csv", help="the rows to predict; - reads standard input")
    p.add_argument("--out", metavar="PREDICTIONS.csv",
                   help="write the predictions here (default, or -: standard output)")
    p.add_argument("--threads", type=_type(_threads), default=None, metavar="N",
                   help="threads for the kernels (default: OpenMP's)")


# ---------------------------------------------------------------- playground

def _add_playground(sub):
    p = sub.add_parser("playground", help="an interactive network playground in the browser",
                       description="Serve the playground page on 127.0.0.1 (a free port "
                       "unless --port) until Ctrl-C. Each browser tab gets its own session, "
                       "trained by the C core.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_type(_port), default=0,
                   help="port to listen on (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")


def _port(text):
    n = _integer(text)
    if not 0 <= n <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return n


def _playground(args):
    from fastmlp.playground.server import OutputError, is_loopback, serve

    if not is_loopback(args.host):
        print(f"fastmlp: warning: listening on {args.host}, not on 127.0.0.1 only: anyone "
              f"who reaches this address can use the playground (it has no password) and "
              f"this machine's CPU", file=sys.stderr)
    try:
        serve(args.host, args.port, open_browser=args.open)
    except OutputError as e:
        raise UsageError(e.strerror) from None
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host} port {args.port}: "
                         f"{e.strerror or e}") from None
    return 0


# ---------------------------------------------------------------- entry point

def main(argv=None):
    """Run the ``fastmlp`` command.

    Parameters
    ----------
    argv : list of str or None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 success, 1 divergence, 2 user error, 130 interrupted, 141 the
        output pipe was closed by its reader.
    """
    # Warnings (the training diagnostics) print as one line each, like the errors, not with
    # the source line that raised them; recorders (catch_warnings(record=True)) still see them.
    format_before = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        try:
            args = _build_parser().parse_args(argv)
            if sys.stdout is None and _prints_results(args):
                raise UsageError(f"standard output is closed: fastmlp "
                                 f"{args.command or '--version'} prints its results there; "
                                 f"redirect it (> FILE, or > /dev/null) instead")
            code = _dispatch(args)
        except SystemExit as e:  # --help, --version
            code = e.code if isinstance(e.code, int) else 0
        except (UsageError, datasets.DataError) as e:
            code = _error(e, 2)
        except DivergenceError as e:  # in the CLI's terms: its flags, and no model is written
            msg = e.message(_not_saved(getattr(e, "checkpointed", False)),
                            e.advice or e.rate_advice("--lr", "--clip-norm"))
            code = _error(msg, 1)
        except FloatingPointError as e:
            code = _error(e, 1)
        # Flushed here, where a failure is one line, not at the interpreter's exit (a message
        # with "Exception ignored" and exit 120).
        if sys.stdout is not None:
            sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        _say("fastmlp: interrupted")
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`fastmlp predict ... | head`): stop quietly, as a
        # process killed by SIGPIPE would, and keep the interpreter's last flush from failing.
        _silence_stdout()
        return 141
    except OSError as e:  # files are checked before any work; what fails later is output
        where = e.filename if e.filename else "standard output"
        _silence_stdout()
        return _error(f"cannot write to {where}: {_reason(e)}", 2)
    finally:
        warnings.formatwarning = format_before


def _silence_stdout():
    """Point file descriptor 1 at /dev/null, so that output still buffered goes nowhere."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _say(text):
    """A line on standard error, when there is one (it may be closed: 2>&-)."""
    if sys.stderr is not None:
        try:
            print(text, file=sys.stderr)
        except OSError:
            pass


def _error(message, code):
    """Say `fastmlp: error: message`; returns the exit code."""
    _say(f"fastmlp: error: {message}")
    return code


def _format_warning(message, category, filename, lineno, line=None):
    return f"fastmlp: warning: {message}\n"


def _prints_results(args):
    """Whether the command's results go to standard output (predict's may go to --out; the
    playground gives its address on stderr when stdout is closed)."""
    if args.version:
        return True
    if args.command == "predict":
        return args.out in (None, "-")
    return args.command in ("train", "demo", "config")


def _dispatch(args):
    if args.version:
        print(_config_text() if args.verbose else f"fastmlp {fastmlp.__version__}")
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "predict":
        return _predict(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "config":
        print(_config_text())
        return 0
    if args.command == "playground":
        return _playground(args)
    raise UsageError("a command is needed: train, predict, demo, config or playground "
                     "(see fastmlp --help)")


def _config_text():
    return fastmlp.show_config(file=io.StringIO())


# ---------------------------------------------------------------- train

def _train(args):
    if args.data == "-":
        raise UsageError("fastmlp train reads its data from a file, not from standard input "
                         "('-' is predict's); save the CSV to a file first")
    out = _default_out(args.data) if args.out is None else args.out
    for path, what in ((out, "--out"), (args.checkpoint, "--checkpoint")):
        if path is not None and args.data is not None and _same_file(path, args.data):
            raise UsageError(f"{what} {path} is the data file; the model would overwrite it")
    _check_writable(out, "the model")
    args.plot = _check_plot(args.plot, out)
    ckpt = _checkpoint_path(args, out)
    data = _digits(args) if args.data is None else _csv_data(args)
    n_out = len(data.meta["classes"]) if data.meta["task"] == "classification" else 1
    net = _network(data.X_train.shape[1], args, n_out)
    opt = _optimizer(args, len(data.y_train), data.meta["task"])
    settings = _run_settings(args, data, opt, net)
    start = 0
    if args.resume:
        net, start = _resume(ckpt, net, data, settings, args.epochs, args.threads)
    print(f"network: {'-'.join(map(str, net.layer_sizes))}, {args.activation} hidden, "
          f"{net.output} output; {opt!r}, {_count(args.epochs, 'epoch')}", flush=True)
    if start:
        print(f"resuming from {ckpt} after epoch {start}", flush=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fit interrupted", category=UserWarning)
        try:
            hist, saved = _fit_epochs(net, data, opt, args, start, ckpt, settings)
        except MemoryError:
            raise UsageError(f"out of memory while training a network of {net.n_params} "
                             f"parameters; try a smaller --hidden or --batch-size") from None
    done = start + hist.epochs
    # After Ctrl-C the resumable file at --out (this run's last checkpoint, or the one it
    # resumed from) is kept: the mid-epoch model could not be resumed. The score printed is
    # then that file's, not the discarded mid-epoch model's.
    last = saved or start
    keep_checkpoint = hist.interrupted and last > 0 and ckpt == out
    if keep_checkpoint:
        net = fastmlp.load(out)  # written by this run, or checked by --resume
    data.meta["metrics"] = _report(
        net, data, args.threads,
        f"training was diverging. {_not_saved(saved or start)} Try a smaller learning rate "
        f"than --lr={opt.lr:g}, or {_clip_advice(opt.clip_norm, '--clip-norm')}.")
    if not keep_checkpoint:
        _save(net, out, _with_state(data.meta, net, done, settings, args.threads,
                                    resumable=not hist.interrupted))
    _plot_training(args.plot, hist, net, data)
    if hist.interrupted:
        print(f"training interrupted after {done} of {args.epochs} epochs")
        if keep_checkpoint:
            print(f"the checkpoint of epoch {last} in {out} is kept; continue with --resume")
        else:
            print(f"model of the last completed step saved to {out}")
            if args.checkpoint_every is not None and ckpt == out:
                print("no checkpoint was reached, so --resume cannot continue it")
        return 130
    print(f"model saved to {out}")
    return 0


# ---------------------------------------------------------------- epochs and checkpoints

_SETTING_OPTIONS = {"task": "--task", "hidden": "--hidden", "activation": "--activation",
                    "batch_size": "--batch-size", "lr": "--lr", "clip_norm": "--clip-norm",
                    "seed": "--seed", "rows": "--test-size (training and held-out rows)",
                    "dtype": "the network's dtype"}


def _checkpoint_path(args, out):
    """Where checkpoints are written and read (design note 8); None without checkpointing."""
    if args.checkpoint is not None and args.checkpoint_every is None and not args.resume:
        raise UsageError("--checkpoint needs --checkpoint-every or --resume")
    if args.checkpoint_every is None and not args.resume:
        return None
    path = out if args.checkpoint is None else args.checkpoint
    if args.checkpoint_every is not None and path != out:
        _check_writable(path, "checkpoints")
    return path


def _run_settings(args, data, opt, net):
    """What shapes the trajectory besides the data; a resumed run must match it."""
    return {"task": data.meta["task"], "hidden": list(args.hidden),
            "activation": args.activation, "batch_size": opt.batch_size, "lr": opt.lr,
            "clip_norm": opt.clip_norm, "seed": args.seed, "dtype": net.dtype.name,
            "rows": [len(data.y_train), len(data.y_test)], "data": _digest(data)}


def _digest(data):
    """A digest of the training and held-out values as the network sees them (a checkpoint's
    record of its data, design note 8)."""
    h = hashlib.blake2b(digest_size=16)
    for a in (data.X_train, data.y_train, data.X_test, data.y_test):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _with_state(meta, net, epoch, settings, threads, resumable=True):
    """The model's metadata plus its training state (design note 8)."""
    return {**meta, "training": {"epoch": epoch, "resumable": resumable,
                                 "shuffle_state": net.get_shuffle_state(),
                                 "row_order": ROW_ORDER, "threads": resolve_threads(threads),
                                 "settings": settings}}


def _fit_epochs(net, data, opt, args, start, ckpt, settings):
    """Epochs start+1 .. --epochs, one fit each; returns (History, last checkpoint epoch).

    The training warnings are judged on the history of the whole run, as one fit would:
    each fit's own (on its single epoch) are silenced."""
    hist, saved = fastmlp.History(), 0
    checks = {}  # epoch_warnings' memory: each warning once per run
    progress = _Progress(not args.quiet, args.epochs, start)
    try:
        for epoch in range(start, args.epochs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fastmlp.TrainingWarning)
                try:
                    h = net.fit(data.X_train, data.y_train, optimizer=opt, epochs=1,
                                verbose=0, n_threads=args.threads)
                except DivergenceError as e:  # fit counts its own single epoch as 1
                    e.epoch = epoch + 1
                    e.checkpointed = bool(saved or start)  # a checkpoint of this run exists
                    raise
                except ValueError as e:  # e.g. a training split of one class
                    raise UsageError(f"cannot train on {args.data or 'digits'}: {e}") from None
            for key in hist._keys:  # an interrupted fit holds 0 or 1 complete epochs
                getattr(hist, key).extend(getattr(h, key))
            if h.interrupted:
                hist.interrupted = True
                break
            for message in epoch_warnings(net, hist, checks):
                warnings.warn(message, fastmlp.TrainingWarning, stacklevel=2)
            progress.update(epoch + 1, h)
            every = args.checkpoint_every
            if every is not None and (epoch + 1) % every == 0 and epoch + 1 < args.epochs:
                _save(net, ckpt, _with_state(data.meta, net, epoch + 1, settings, args.threads))
                saved = epoch + 1
    except KeyboardInterrupt:  # between two epochs: the network holds the last one's weights
        hist.interrupted = True
    finally:
        progress.close()
    net.history_ = hist
    return hist, saved


def _resume(path, net, data, settings, epochs, threads):
    """The network and epoch count of the checkpoint at path, checked against this run."""
    if not os.path.exists(path):
        raise UsageError(f"--resume: no checkpoint at {path}")
    saved, meta = _load_model(path)
    state = meta.get("training")
    if not isinstance(state, dict) or "epoch" not in state:
        raise UsageError(f"--resume: {path} holds no training state (it was not saved by "
                         f"fastmlp train with this version)")
    if state.get("resumable") is not True:
        raise UsageError(f"--resume: {path} was saved after Ctrl-C in the middle of an epoch "
                         f"and cannot be resumed exactly; resume from a checkpoint "
                         f"(--checkpoint-every with a separate --checkpoint PATH)")
    old = state.get("settings")
    if not isinstance(old, dict):
        raise UsageError(f"--resume: {path} has invalid training settings")
    for key, option in _SETTING_OPTIONS.items():
        if old.get(key) != settings[key]:
            was, now = _short(old.get(key)), _short(settings[key])
            if key == "hidden" and isinstance(old.get(key), list):  # as the option is written
                was = ",".join(map(str, old[key]))[:40] or "none"
                now = ",".join(map(str, settings[key])) or "none"
            raise UsageError(f"--resume: {path} was trained with {option} {was}, this run has "
                             f"{now}")
    was, now = meta.get("feature_names"), data.meta.get("feature_names")
    if was != now and isinstance(was, list):
        def listed(names):
            text = ", ".join(map(str, names))
            return text if len(text) <= 60 else text[:57] + "..."
        raise UsageError(f"--resume: {path} was trained on the feature columns "
                         f"{listed(was)}; this run has {listed(now)}" +
                         (" (in another order)" if sorted(map(str, was)) == sorted(now)
                          else " (see --ignore)"))
    for key in ("x_mean", "x_scale", "classes", "y_mean", "y_scale", "feature_names"):
        if meta.get(key) != data.meta.get(key):
            raise UsageError(f"--resume: the data differ from those {path} was trained on "
                             f"({key} of the training split)")
    if "data" in old and old["data"] != settings["data"]:  # earlier versions wrote none
        raise UsageError(f"--resume: the data differ from those {path} was trained on (their "
                         f"values, with the same row counts and scaling)")
    if saved.layer_sizes != net.layer_sizes or saved.dtype != net.dtype:
        raise UsageError(f"--resume: {path} holds a different network")
    done = state["epoch"]
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        raise UsageError(f"--resume: {path} has an invalid epoch count {_short(done)}")
    if done >= epochs:
        raise UsageError(f"--resume: {path} has already trained {_count(done, 'epoch')}; "
                         f"ask for more with --epochs")
    try:
        saved.set_shuffle_state(state.get("shuffle_state"))
    except ValueError as e:
        raise UsageError(f"--resume: {path}: {e}") from None
    # Neither changes what the run computes, only its last bits: said, not refused.
    if state.get("row_order", 1) != ROW_ORDER:
        warnings.warn(f"{path} was written by a fastmlp that drew each epoch's row order "
                      f"another way; the run goes on in this version's orders, so it is not "
                      f"bit for bit an uninterrupted run of either version", UserWarning)
    was, now = state.get("threads"), resolve_threads(threads)
    known = isinstance(was, int) and not isinstance(was, bool) and 1 <= was <= 1 << 16
    if not known or was != now:
        had = f"on {was} thread{'s' * (was != 1)}" if known else "on an unrecorded thread count"
        warnings.warn(f"{path} was trained {had} and this run uses {now}: a small network's "
                      f"batches are split among the threads, so the result may differ in the "
                      f"last bits from an uninterrupted run" +
                      (f" (--threads {was} matches it)" if known else ""), UserWarning)
    saved._stepped = done > 0  # its weights are this run's steps: a divergence is the rate's
    return saved, done


def _default_out(data):
    stem = "digits" if data is None else os.path.splitext(os.path.basename(data))[0]
    return f"fastmlp-{stem}.npz"


def _check_writable(path, what):
    """Refuse an output path that cannot take a new file, before any work (design note 6)."""
    where = f"cannot write {what} to {path}"
    if not path:
        raise UsageError(f"cannot write {what}: the output path is empty")
    if path.endswith(("/", os.sep)):
        raise UsageError(f"{where}: it names a folder, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        is_folder = stat.S_ISDIR(os.stat(folder).st_mode)
    except FileNotFoundError:
        raise UsageError(f"{where}: folder {folder} does not exist") from None
    except OSError as e:
        raise UsageError(f"{where}: folder {folder}: {_reason(e)}") from None
    if not is_folder:
        raise UsageError(f"{where}: {folder} is not a folder")
    try:  # what the save will do: a file of its own beside the target (the system's reason:
        # permission denied, a read-only file system; root passes every access() check)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".fastmlp-", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"{where}: cannot create files in {folder} ({_reason(e)})") from None
    os.close(fd)
    os.unlink(probe)
    if os.path.lexists(path):
        _check_target(path, where)


def _check_target(path, where):
    """An existing output path must be (or link to) a regular file this user may write."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UsageError(f"{where}: it is a broken symbolic link") from None
    except OSError as e:
        raise UsageError(f"{where}: {_reason(e)}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{where}: it is a directory")
    if not stat.S_ISREG(mode):
        link = " links to" if os.path.islink(path) else " is"
        raise UsageError(f"{where}: it{link} a device, pipe or socket, not a regular file")
    if not os.access(path, os.W_OK):
        raise UsageError(f"{where}: permission denied (the file is read-only)")


def _reason(error):
    """The system's reason for an OSError (from its errno when it has one), lower case."""
    text = os.strerror(error.errno) if error.errno else (error.strerror or str(error))
    return text[:1].lower() + text[1:]


def _save(net, out, meta):
    """Save the model; a failure the pre-check could not foresee is still one line."""
    try:
        net.save(out, metadata=meta)
    except OSError as e:
        raise UsageError(f"cannot save the model to {out}: {_reason(e)} (the trained model "
                         f"was not saved)") from None


def _network(n_features, args, n_outputs):
    sizes = [n_features, *args.hidden, n_outputs]
    n_params = count_params(sizes)
    if n_params > MAX_PARAMS:
        raise UsageError(f"the network {'-'.join(map(str, sizes))} would hold {n_params} "
                         f"parameters; the limit is {MAX_PARAMS} (2**28): use a smaller "
                         f"--hidden")
    output = "softmax" if n_outputs > 1 else "identity"
    try:
        return fastmlp.MLP(sizes, activation=args.activation, output=output, init="he",
                           seed=args.seed)
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot build the network: {e}") from None
    except MemoryError:
        raise UsageError(f"not enough memory for a network of {n_params} parameters; "
                         f"use a smaller --hidden") from None


def _optimizer(args, n_train, task):
    lr = DEFAULT_LR[task] if args.lr is None else args.lr
    batch = args.batch_size
    if batch is not None and batch > n_train:
        print(f"note: --batch-size {batch} is more than the {n_train} training rows; "
              f"using full batches")
        batch = None
    return fastmlp.SGD(lr=lr, batch_size=batch, clip_norm=args.clip_norm)


def _digits(args):
    if args.target is not None or args.ignore:
        option = "--target" if args.target is not None else "--ignore"
        raise UsageError(f"{option} needs a CSV file (fastmlp train DATA.csv --target COLUMN)")
    if args.task == "regression":
        raise UsageError("the digits are a classification task; --task regression needs a "
                         "CSV file")
    test_size = 0.25 if args.test_size is None else args.test_size
    X, y, info = datasets.load_builtin("digits")
    if test_size == 0:
        X_train, X_test, y_train, y_test = X / 16.0, X[:0], y, y[:0]
    else:
        try:  # a split that leaves no training rows, or fewer held-out rows than classes
            X_train, X_test, y_train, y_test = datasets.load_digits(args.seed, test_size)
        except ValueError as e:
            raise UsageError(f"--test-size {test_size}: the split of the {len(y)} digits "
                             f"fails: {e}") from None
    n = X_train.shape[1]
    meta = _metadata("digits", "digit", "classification", info["feature_names"],
                     np.zeros(n), np.full(n, 16.0), classes=info["target_names"])
    print(f"data: digits (8x8 images from scikit-learn), {len(y_train)} training rows, "
          f"{len(y_test)} held out")
    return _Data(X_train, X_test, y_train, y_test, meta)


def _metadata(source, target, task, feature_names, x_mean, x_scale, classes=None,
              y_mean=None, y_scale=None):
    """What predict needs to use the model on a CSV file (design note 2), JSON-ready."""
    return {"fastmlp_cli": METADATA_VERSION, "source": source, "target": target,
            "task": task, "feature_names": list(feature_names),
            "x_mean": [float(v) for v in x_mean], "x_scale": [float(v) for v in x_scale],
            "classes": classes, "y_mean": y_mean, "y_scale": y_scale}


def _csv_data(args):
    if args.target is None:
        columns = ", ".join(datasets.read_columns(args.data))
        raise UsageError(f"--target is needed with a CSV file: name the column to predict "
                         f"(columns of {args.data}: {columns})")
    try:
        table = datasets.read_csv(args.data, target=args.target, ignore=args.ignore)
    except datasets.DataError as e:
        column = getattr(e, "text_column", None)
        if column is None:
            raise
        raise datasets.DataError(f"{e}; every column but the target is a feature: leave a "
                                 f"column of text out with --ignore {shlex.quote(column)}"
                                 ) from None
    _check_magnitude(table, table.X, table.feature_names)
    task = _choose_task(table, args.task)
    test_size = 0.2 if args.test_size is None else args.test_size
    if task == "classification":
        y, classes = _encode_classes(table)
    else:
        y, classes = table.y.astype(np.float64), None
        _check_magnitude(table, y[:, None], [table.target], " (the target)")
    X_train, X_test, y_train, y_test = _split(table.X, y, test_size, args.seed,
                                              stratify=classes is not None)
    if classes is not None and len(np.unique(y_train)) < 2:
        only, k = classes[int(y_train[0])], len(y_train)
        rows = f"the {k} training row{'s' * (k != 1)} left by --test-size {test_size}"
        raise UsageError(f"{rows} hold{'s' * (k == 1)} only the class {only!r} of column "
                         f"{args.target!r}; a classifier needs two classes: use more rows or "
                         f"a smaller --test-size")
    x_mean, x_scale = _scaling(X_train)
    meta = _metadata(os.path.basename(args.data), args.target, task, table.feature_names,
                     x_mean, x_scale, classes=classes)
    if task == "regression":
        y_mean, y_scale = (float(v[0]) for v in _scaling(y_train[:, None]))
        meta.update(y_mean=y_mean, y_scale=y_scale)
        y_train, y_test = (y_train - y_mean) / y_scale, (y_test - y_mean) / y_scale
    print(f"data: {args.data}, {len(y_train)} training rows, {len(y_test)} held out, "
          f"{_count(X_train.shape[1], 'feature')}")
    return _Data((X_train - x_mean) / x_scale, (X_test - x_mean) / x_scale, y_train,
                 y_test, meta)


def _encode_classes(table):
    """Class indices 0..K-1 of the target, and the labels they stand for (sorted)."""
    values, y = np.unique(table.y, return_inverse=True)
    classes = _labels(values)
    if len(classes) < 2:
        raise UsageError(f"{table.path}: the target column {table.target!r} holds one value "
                         f"only ({classes[0]!r}); nothing to classify")
    return y, classes


def _choose_task(table, task):
    """The task for the target column (design note 1); prints the choice and its reason."""
    y, name = table.y, table.target
    # integers beyond int64 come as their text (datasets.read_csv): labels, or numbers
    big = y.dtype.kind == "U" and all(datasets.is_number(v) for v in y)
    numeric = y.dtype.kind in "fi" or big
    if task == "regression" and not numeric:
        bad = next(v for v in y if not datasets.is_number(v))
        raise UsageError(f"{table.path}: --task regression needs a numeric target, but "
                         f"column {name!r} holds {str(bad)!r}")
    if task != "auto":
        print(f"task: {task} (--task {task})")
        return task
    if not numeric:
        print(f"task: classification (target {name!r} is not numeric)")
        return "classification"
    if big:
        print(f"task: classification (target {name!r} holds integers beyond int64, kept "
              f"exactly as labels; use --task regression to regress)")
        return "classification"
    distinct = np.unique(y)
    if np.all(distinct == np.round(distinct)) and len(distinct) <= MAX_AUTO_CLASSES:
        print(f"task: classification (target {name!r} holds {len(distinct)} distinct "
              f"integers; use --task regression to regress)")
        return "classification"
    print(f"task: regression (target {name!r} is numeric with {len(distinct)} distinct "
          f"values; use --task classification to classify)")
    return "regression"


def _too_large(X):
    """(row, column) of the first entry of X that is NaN or beyond MAX_ABS_VALUE, or None."""
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(X) <= MAX_ABS_VALUE)
    return tuple(np.argwhere(bad)[0]) if bad.any() else None


def _check_magnitude(table, X, names, suffix=""):
    """Refuse the first cell of X beyond MAX_ABS_VALUE (design note 5), naming it."""
    bad = _too_large(X)
    if bad is not None:
        i, j = bad
        raise UsageError(f"{table.where(i, names[j])}{suffix}: {float(X[i, j])!r} is too "
                         f"large to scale (fastmlp takes |values| up to {MAX_ABS_VALUE:g})")


def _labels(classes):
    """Class labels as JSON values: text stays text, integers and integer-valued numbers
    become ints."""
    if classes.dtype.kind in "iu":
        return [int(c) for c in classes]
    if classes.dtype.kind != "f":
        return [str(c) for c in classes]
    if np.all(classes == np.round(classes)):
        return [int(c) for c in classes]
    return [float(c) for c in classes]


def _split(X, y, test_size, seed, stratify):
    """Train and held-out rows; stratified by class when every class allows it."""
    if test_size == 0:
        return X, X[:0], y, y[:0]
    n_test = math.ceil(test_size * len(y))
    if n_test >= len(y):
        raise UsageError(f"--test-size {test_size} leaves no training rows out of {len(y)}")
    from sklearn.model_selection import train_test_split

    if stratify:
        try:
            return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
        except ValueError:
            pass  # a class too small to appear on both sides: split at random instead
    return train_test_split(X, y, test_size=test_size, random_state=seed)


def _scaling(X):
    """Mean and std of each column; a constant column gets scale 1.

    Each column is divided by a power of two near its largest magnitude first (exact, so
    ordinary data gets the same result as without), so that no square in the std overflows.
    A std below float64's smallest normal number is treated as a constant column's: dividing
    by it would not be accurate.
    """
    big = np.max(np.abs(X), axis=0)
    power = np.ldexp(1.0, np.frexp(np.where(big > 0, big, 1.0))[1])
    mean = (X / power).mean(axis=0) * power
    scale = (X / power).std(axis=0) * power
    tiny = np.finfo(np.float64).tiny
    scale[(np.ptp(X, axis=0) == 0) | ~(scale >= tiny)] = 1.0
    return mean, scale


def _report(net, data, n_threads, overflow_advice):
    """Print the held-out score (the training score with --test-size 0) and return it; an
    output that overflows is a FloatingPointError ending with overflow_advice."""
    X, y, which = data.X_test, data.y_test, "held-out"
    if len(y) == 0:
        X, y, which = data.X_train, data.y_train, "training (no rows held out)"
    try:
        pred = net.predict(X, n_threads=n_threads)
    except NonFiniteOutputError as e:  # finite weights whose outputs overflow: diverging
        raise FloatingPointError(f"the trained network's output for {which} row {e.row + 1} "
                                 f"is not finite: {e.detail}; {overflow_advice}") from None
    if data.meta["task"] == "classification":
        hits = int(np.sum(pred == y))
        print(f"{which} accuracy: {hits / len(y):.4f} ({hits} of {len(y)} rows)")
        return {"accuracy": hits / len(y)}
    scale, mean = data.meta["y_scale"], data.meta["y_mean"]
    pred, y = pred.astype(np.float64) * scale + mean, y * scale + mean  # float32 overflows
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((pred - y) ** 2)) / ss_tot if ss_tot > 0 else None
    shown = "n/a (constant target)" if r2 is None else f"{r2:.4f}"
    print(f"{which} R^2: {shown}, RMSE: {rmse:.6g} ({len(y)} rows)")
    # the metadata is JSON without NaN or infinity
    return {"r2": r2 if r2 is None or math.isfinite(r2) else None,
            "rmse": rmse if math.isfinite(rmse) else None}


# ---------------------------------------------------------------- plots and demos

def _add_plot_option(p):
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="also draw the run (loss, gradient norms per layer, dead ReLU units, "
                   "decision boundary for 2 features) to this image; needs fastmlp[plot]")


def _add_demo(sub):
    from fastmlp import demos

    listing = "; ".join(f"{name}: {summary}" for name, summary in demos.list_demos())
    p = sub.add_parser("demo", help="run a small demonstration of what happens in training",
                       description=f"Run a demonstration; it prints its numbers and, with "
                       f"--plot, draws them. The demos: {listing}.")
    p.add_argument("name", nargs="?", choices=[name for name, _ in demos.list_demos()],
                   metavar="NAME", help="the demo to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the demos and exit")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="also draw the demo to this image; needs fastmlp[plot]")
    p.add_argument("--seed", type=_type(_seed), default=0,
                   help="seed of the data and the networks (default: 0)")


def _check_plot(path, model=None):
    """Refuse a plot path that cannot be written, names the model file or an image format
    matplotlib lacks, or a missing matplotlib, before any work; returns the path the plot
    will have (matplotlib writes a name without an extension as NAME.png: a new user was told
    of a file "nox" when "nox.png" was written)."""
    if path is None:
        return None
    if not os.path.basename(path).strip(". "):
        raise UsageError(f"--plot needs a file name, got {path!r}")
    if os.path.isdir(path):  # would become DIR.png beside it (found by a new user)
        raise UsageError(f"--plot {path}: it is a directory; give a file name in it, such "
                         f"as {os.path.join(path, 'plot.png')}")
    if os.path.splitext(path)[1] in ("", "."):  # "k." too: matplotlib wrote k.png over --out
        path = path.rstrip(".") + ".png"
    _check_writable(path, "the plot")
    if model is not None and os.path.abspath(path) == os.path.abspath(model):
        raise UsageError(f"--plot {path} would overwrite the model (--out); give another name")
    try:
        from fastmlp.plot import check_image_path
        check_image_path(path)
    except ImportError:
        raise UsageError('--plot needs matplotlib: pip install "fastmlp[plot]"') from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    return path


def _save_figure(fig, path):
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as e:
        why = _reason(e) if isinstance(e, OSError) else str(e)
        raise UsageError(f"cannot write the plot to {path}: {why}") from None


def _plot_training(path, hist, net, data):
    """The grid of panels that apply to this run, written to ``path`` (when given)."""
    if path is None:
        return
    if not hist.epochs:
        print("no complete epoch to plot")
        return
    from fastmlp.plot import plot_training

    fig = plot_training(hist, net, data.X_train, data.y_train)
    _save_figure(fig, path)
    print(f"plot written to {path}")


def _demo(args):
    from fastmlp import demos

    if args.list:  # with a NAME, that demo's line alone
        shown = [d for d in demos.list_demos() if args.name in (None, d[0])]
        width = max(len(name) for name, _ in shown)
        for name, summary in shown:
            print(f"{name:<{width}}  {summary}")
        return 0
    if args.name is None:
        raise UsageError("demo needs a NAME (fastmlp demo --list shows them)")
    args.plot = _check_plot(args.plot)
    try:
        demos.run(args.name, plot=args.plot, seed=args.seed)
    except OSError as e:
        raise UsageError(f"cannot write the plot to {args.plot}: {_reason(e)}") from None
    return 0


# ---------------------------------------------------------------- predict

def _same_file(a, b):
    """Whether paths a and b name one file (the same path, a symbolic or a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _predict(args):
    if args.out == "-":  # standard output, as without --out
        args.out = None
    if args.out is not None:
        for path, what in ((args.model, "model"), (args.data, "data file")):
            if path != "-" and _same_file(args.out, path):
                raise UsageError(f"--out {args.out} is the {what}; the predictions would "
                                 f"overwrite it")
        _check_writable(args.out, "the predictions")
    net, meta = _load_model(args.model)
    if not meta:
        # Without the metadata of fastmlp train there are no feature names, scaling or class
        # labels: the CSV's columns would go in by position, unscaled, the target among them.
        raise UsageError(f"{args.model} holds a network saved from Python, not a model of "
                         f"fastmlp train (no feature names, input scaling or class labels); "
                         f"load it with fastmlp.load() and call its predict")
    data = args.data
    if data == "-":
        if sys.stdin is None:
            raise UsageError("standard input is closed: there is no CSV to read for '-'")
        data = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    table = datasets.read_csv(data, features=meta["feature_names"])
    with np.errstate(all="ignore"):  # overflow becomes inf, refused just below
        X = (table.X - np.asarray(meta["x_mean"])) / np.asarray(meta["x_scale"])
    _check_scaled(table, X, args.model)
    try:
        pred = net.predict(X, n_threads=args.threads)
    except NonFiniteOutputError as e:
        raise FloatingPointError(f"{args.model}: its output for {table.path}, row {e.row + 1} "
                                 f"(line {table.lines[e.row]}) is not finite: {e.detail}; "
                                 f"{e.advice}") from None
    _write_table(args.out, _header(meta, pred), _decode(pred, meta, net))
    if args.out:
        print(f"{len(pred)} predictions written to {args.out}", file=sys.stderr)
    return 0


def _check_scaled(table, X, model):
    """Refuse the first feature beyond MAX_ABS_VALUE after the model's scaling (note 5)."""
    bad = _too_large(X)
    if bad is None:
        return
    i, j = bad
    where = f"{table.where(i, table.feature_names[j])}: {float(table.X[i, j])!r} is too large"
    raise UsageError(f"{where} for {model}: scaled as in its training it is {X[i, j]:.3g}, "
                     f"and fastmlp takes |values| up to {MAX_ABS_VALUE:g}")


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _load_model(path):
    """The network at path and its CLI metadata, checked (design note 7); {} if it has none."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a model file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the model: {_reason(e)}") from None
    if not magic.startswith(_ZIP_MAGIC):
        raise UsageError(f"{path} is not a fastmlp model (not an .npz file)")
    try:
        net = fastmlp.load(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except PermissionError as e:
        raise UsageError(f"{path}: cannot read the model: {_reason(e)}") from None
    except ValueError as e:
        text = " ".join(str(e).split())
        raise UsageError(text if path in text else f"{path}: {text}") from None
    except Exception as e:  # a damaged file can make zipfile or NumPy raise almost anything
        text = " ".join(f"{type(e).__name__}: {e}".split())
        raise UsageError(f"{path} is not a readable fastmlp model: {text}") from None
    if not isinstance(net, fastmlp.MLP):
        raise UsageError(f"{path} holds a {type(net).__name__} saved from Python, not a model "
                         f"of fastmlp train; load it with fastmlp.load() and call its predict")
    meta = net.metadata if isinstance(net.metadata, dict) else {}
    if "fastmlp_cli" not in meta:
        return net, {}
    _check_metadata(path, net, meta)
    return net, meta


def _not_saved(checkpointed):
    kept = " (checkpoints already written stay as they were)" if checkpointed else ""
    return f"The model was not saved{kept}."


def _count(n, noun):
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _short(value):
    """repr of a value from a file, cut to a length that fits in a one-line message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_metadata(path, net, meta):
    """Each key predict uses, checked against the network; an error names the key."""
    def bad(key, why):
        return UsageError(f"{path}: the model's metadata {key!r} {why}")

    version = meta["fastmlp_cli"]
    if version != METADATA_VERSION or type(version) is not int:
        raise bad("fastmlp_cli", f"is {_short(version)}; this fastmlp reads version "
                  f"{METADATA_VERSION}")
    keys = ["task", "target", "feature_names", "x_mean", "x_scale"]
    keys += ["classes"] if meta.get("task") == "classification" else ["y_mean", "y_scale"]
    for key in keys:
        if key not in meta:
            raise bad(key, "is missing")
    task = meta["task"]
    if task not in ("classification", "regression"):
        raise bad("task", f"is {_short(task)}, not 'classification' or 'regression'")
    if (task == "classification") != net.is_classifier:
        raise bad("task", f"is {task!r}, but the network has a {net.output!r} output")
    if not (meta["target"] is None or isinstance(meta["target"], str)):
        raise bad("target", f"is {_short(meta['target'])}, not a column name")
    names = meta["feature_names"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise bad("feature_names", "is not a list of column names")
    if len(names) != net.n_features or len(set(names)) != len(names):
        raise bad("feature_names", f"lists {len(names)} names ({len(set(names))} distinct) "
                  f"for the network's {net.n_features} inputs")
    for key, positive in (("x_mean", False), ("x_scale", True)):
        values = meta[key]
        if not (isinstance(values, list) and len(values) == net.n_features):
            raise bad(key, f"is not a list of {net.n_features} numbers")
        for k, v in enumerate(values):
            if not _meta_number(v, positive, math.inf):
                raise bad(key, f"holds {_short(v)} at {k}; needs a finite "
                          f"{'positive ' if positive else ''}number")
    if task == "classification":
        _check_classes(meta["classes"], net, bad)
    else:
        for key, positive in (("y_mean", False), ("y_scale", True)):
            if not _meta_number(meta[key], positive, 2 * MAX_ABS_VALUE):
                raise bad(key, f"is {_short(meta[key])}; needs a finite "
                          f"{'positive ' if positive else ''}number within "
                          f"{2 * MAX_ABS_VALUE:g}")


def _check_classes(classes, net, bad):
    """The class labels: one JSON text or number per output of the network."""
    if not isinstance(classes, list) or len(classes) != net.n_outputs:
        size = len(classes) if isinstance(classes, list) else "no"
        raise bad("classes", f"lists {size} labels for the network's {net.n_outputs} outputs")
    for k, c in enumerate(classes):
        if isinstance(c, bool) or not isinstance(c, (str, int, float)):
            raise bad("classes", f"holds {_short(c)} at {k}; needs a text or number label")


def _meta_number(v, positive, limit):
    """Whether a JSON value is a usable scaling number: finite, |v| <= limit, > 0 if asked."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        v = float(v)
    except OverflowError:  # an int too large for a float
        return False
    return math.isfinite(v) and abs(v) <= limit and (v > 0 or not positive)


def _header(meta, pred):
    """The output column: the target's name; prediction_k for each output of a bare model."""
    name = meta.get("target") or "prediction"
    if pred.ndim == 1:
        return [name]
    return [f"{name}_{k}" for k in range(pred.shape[1])]


def _decode(pred, meta, net):
    """Rows of CSV cells: the original class labels, or de-standardized values."""
    if net.is_classifier:
        classes = meta.get("classes")
        if classes and pred.ndim == 1:
            return [[str(classes[k])] for k in pred]
        return [[str(int(k)) for k in row] for row in pred.reshape(len(pred), -1)]
    values = np.asarray(pred, dtype=np.float64)
    if meta.get("y_scale") is not None:
        values = values * meta["y_scale"] + meta["y_mean"]
    digits = 7 if net.dtype == np.float32 else 15
    return [[f"{v:.{digits}g}" for v in row] for row in values.reshape(len(values), -1)]


def _write_table(path, header, rows):
    """Write a CSV file to path, or to standard output when path is None."""
    if path is None:
        if sys.stdout is None:
            raise UsageError("standard output is closed: there is nowhere to write the "
                             "predictions; give --out PREDICTIONS.csv")
        _write_rows(sys.stdout, header, rows)  # a failure is main's (one line, exit 2)
        return
    # Beside the target and renamed over it, as models are saved: a full disk or a Ctrl-C
    # leaves the previous file whole.
    try:
        replace_file(path, lambda f: _write_rows(f, header, rows), text=True)
    except (OSError, ValueError) as e:
        reason = _reason(e) if isinstance(e, OSError) else "it exists and is not a regular file"
        raise UsageError(f"cannot write the predictions to {path}: {reason} (nothing was "
                         f"written)") from None


def _write_rows(f, header, rows):
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
