"""fastmlp: fast training of fully-connected neural networks on the CPU.

The hot path (dense forward and backward, losses, global-norm clipping, the SGD update, whole
training steps) runs in C with OpenMP; these Python classes describe the network and the
optimizer and hand them to that core.
"""
from fastmlp import _core
from fastmlp._threads import _cpus, get_num_threads, set_num_threads
from fastmlp.diagnostics import TrainingWarning
from fastmlp.network import MLP, DivergenceError, History, load
from fastmlp.optim import SGD, Adam
from fastmlp.profiling import profile

__version__ = "0.1.0"
__all__ = ["MLP", "SGD", "Adam", "DivergenceError", "History", "TrainingWarning", "load",
           "profile", "show_config", "set_num_threads", "get_num_threads", "__version__"]


def _built(path):
    import datetime
    import os

    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return "at an unknown time"


_ISA_NOTE = {"amx": ": float32 products of M N K >= 2^21 on the AMX tiles, the rest on AVX-512"}


def show_config(file=None):
    """Print (and return) how this fastmlp was built and what it will run on."""
    import os
    import platform
    import sys

    import numpy as np

    isa = _core.gemm_isa()
    lines = [
        f"fastmlp {__version__}",
        f"python {platform.python_version()}, numpy {np.__version__}",
        f"platform {platform.system()} {platform.machine()}",
        f"openmp {'on' if _core.openmp_enabled() else 'off (single-threaded build)'}",
        f"threads {get_num_threads()} (CPUs {_cpus()} usable of {os.cpu_count()})",
        f"matrix kernels: fastmlp's own ({isa} path{_ISA_NOTE.get(isa, '')}); "
        "no BLAS in the hot path"
        + _isa_setting_note(os.environ.get("FASTMLP_ISA"), isa, _ISA_AT_IMPORT),
        "numbers below the normal range: "
        + ("flushed to zero by this thread's setting (FTZ/DAZ, set by another library?)"
           if _core.fp_flush() else "kept by the kernels")
        + "; training flushes them to zero",
        f"compile flags {_core.build_flags()}",
        f"extension {_core.__file__}, built {_built(_core.__file__)}",
    ]
    text = "\n".join(lines)
    print(text, file=file or sys.stdout)
    return text


_ISAS = ("portable", "avx2", "avx512", "amx")  # csrc/gemm.c, lowest first


def _isa_setting_note(want, isa, at_import):
    """What show_config says of FASTMLP_ISA (`want` now, `at_import` when the kernels read
    it): chose the path, asked above the CPU, set after import, or ignored."""
    if not want:
        return ""
    if want not in _ISAS:
        return f"; FASTMLP_ISA={want!r} ignored (not one of {', '.join(_ISAS)})"
    if want == isa:
        return f"; chosen by FASTMLP_ISA={want}"
    if want != at_import:
        return f"; FASTMLP_ISA={want} not applied (set after import: it is read at import)"
    if _ISAS.index(want) > _ISAS.index(isa):
        return f"; FASTMLP_ISA={want} not applied (this CPU runs at most {isa})"
    return f"; FASTMLP_ISA={want} not applied (the path was changed after import)"


def _check_isa_setting():
    """FASTMLP_ISA lowers the kernels' instruction set (csrc/gemm.c note 1). Another value
    is ignored, which a typo (found by new user #21: "generic") should not be silently; nor
    should a request above what the CPU runs (new user #23 asked for avx512 on an AVX2 CPU).
    stacklevel 3 names the line that imports fastmlp: warnings skips importlib's frames."""
    import os
    import warnings

    want, isa = os.environ.get("FASTMLP_ISA"), _core.gemm_isa()
    if want and want not in _ISAS:  # empty: as if unset
        warnings.warn(f"FASTMLP_ISA={want!r} is not one of {', '.join(_ISAS)} and is ignored; "
                      f"the matrix kernels take the {isa} path, the best this CPU runs",
                      RuntimeWarning, stacklevel=3)
    elif want and _ISAS.index(want) > _ISAS.index(isa):
        warnings.warn(f"FASTMLP_ISA={want} is above what this CPU runs; the matrix kernels "
                      f"take the {isa} path, the best it runs", RuntimeWarning,
                      stacklevel=3)
    return want


_ISA_AT_IMPORT = _check_isa_setting()


def __getattr__(name):
    """``fastmlp.sklearn`` is imported on first use (scikit-learn is slow to import)."""
    if name == "sklearn":
        import importlib
        return importlib.import_module("fastmlp.sklearn")
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
