"""Shared fixtures of the numerical tests (test_kernels, test_network, test_training).

The references themselves live in reference.py (plain NumPy float64, no fastmlp).
"""
import numpy as np
import pytest

# The instruction sets the kernels have paths for (csrc/gemm.c note 1); a test on one this CPU
# cannot run is skipped.
ISAS = ("portable", "avx2", "avx512", "amx")


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """Both precisions the package computes in."""
    return request.param


@pytest.fixture
def rng():
    """A fixed-seed generator: every test sees the same data on every run."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test with the matrix kernels forced onto one instruction set (skipped when this
    CPU or build cannot run it); the previous choice is restored afterwards."""
    from fastmlp import _core

    before = _core.gemm_isa()
    if not _core.set_gemm_isa(request.param):
        pytest.skip(f"the {request.param} kernels cannot run here")
    assert _core.gemm_isa() == request.param
    yield request.param
    assert _core.set_gemm_isa(before)
