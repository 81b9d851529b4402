"""pytest configuration of the kernel benchmarks (pytest-benchmark).

Run from the repository root, e.g.

    PYTHONPATH=src python -m pytest bench/ --benchmark-max-time=0.2
    PYTHONPATH=src python -m pytest bench/ -k "gemm and training" --bench-threads 1

Like every benchmark here, this process drops OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE and
re-executes itself before NumPy is imported (_common.clean_blas_env); tests/ leaves them alone.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    """Re-execute without the OpenBLAS overrides, before any test module imports NumPy.

    pytest captures output at the file-descriptor level by now; the capture is suspended first
    so that the new process writes to the real terminal."""
    if any(k in os.environ for k in _common.BLAS_OVERRIDES):
        capman = config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.suspend_global_capture(in_=True)
        _common.clean_blas_env()


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=_common.threads, default=None,
                     help="threads for fastmlp's kernels and NumPy's BLAS "
                          "(default: fastmlp's default)")


def pytest_report_header(config):
    import fastmlp
    lines = list(_common.machine_lines())
    lines.append(f"fastmlp {fastmlp.__version__}: {fastmlp._core.gemm_isa()} kernels, "
                 f"threads {config.getoption('--bench-threads') or fastmlp.get_num_threads()}")
    return lines


@pytest.fixture(scope="session")
def threads(request):
    """The thread count of every variant; NumPy's BLAS is held to it for the session."""
    from threadpoolctl import threadpool_limits

    import fastmlp
    n = request.config.getoption("--bench-threads") or fastmlp.get_num_threads()
    with threadpool_limits(n, user_api="blas"):
        yield n
