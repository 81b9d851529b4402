"""64-bit index arithmetic: an input of more than 2^31 float32 elements (about 8.6 GB).

Every row's output is known exactly, so a row offset computed in 32 bits (which wraps or turns
negative past element 2^31) would show as a wrong value, or a crash, in the last rows.
"""
import numpy as np
import pytest

import fastmlp

N_FEATURES = 1024
N_ROWS = 2**21 + 8  # 2^31 + 8192 elements: the last 8 rows lie past element 2^31


def available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
def test_more_than_2_31_elements_last_rows_exact():
    """X[i] = (0, ..., 0, i, 1) with i < 2^24 (exact in float32). One linear layer with
    weights (0, ..., 0, 1, 0.5) and bias 3 gives i + 3.5 exactly for every row i; the loss
    gradient of the mean over the rows is checked against its closed form too."""
    need = N_ROWS * N_FEATURES * 4 + (2 << 30)  # X plus headroom for the rest
    if available_bytes() < need:
        pytest.skip(f"needs {need / 2**30:.1f} GiB of available memory")
    X = np.zeros((N_ROWS, N_FEATURES), dtype=np.float32)
    assert X.size > 2**31
    X[:, -2] = np.arange(N_ROWS, dtype=np.float32)
    X[:, -1] = 1.0
    net = fastmlp.MLP([N_FEATURES, 1], output="identity", init="zeros", dtype="float32")
    W = np.zeros((N_FEATURES, 1))
    W[-2, 0], W[-1, 0] = 1.0, 0.5
    net.weights[0] = W
    net.biases[0] = [3.0]
    tail = np.arange(N_ROWS - 4096, N_ROWS)
    out = net.predict(X)
    assert out.shape == (N_ROWS,)
    assert np.array_equal(out[tail], tail + 3.5)
    assert np.array_equal(out[:8], np.arange(8) + 3.5)
    # Targets equal to the output but for the last row, off by 2: J = 4 / n and the
    # gradient is 2 * 2 / n times that row (only the last row contributes).
    y = out.astype(np.float64)
    y[-1] -= 2.0
    J, dW, db = net.loss_and_gradients(X, y)
    n = N_ROWS
    assert J == pytest.approx(4.0 / n, rel=1e-6)
    expect = np.zeros(N_FEATURES)
    expect[-2], expect[-1] = 4.0 * (n - 1) / n, 4.0 / n
    np.testing.assert_allclose(dW[0][:, 0], expect, rtol=1e-6, atol=0)
    assert db[0][0] == pytest.approx(4.0 / n, rel=1e-6)
