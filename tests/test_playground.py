"""The playground's server and JSON API (the page itself: test_playground_browser.py).

Each test starts its own server on 127.0.0.1 with a free port. Numbers the server draws are
checked against a float64 NumPy forward pass written here from the snapshot's weights, with a
tolerance of half a quantization step of the int8 image codes (session.py, design note 5).
"""
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmlp.playground import session as S
from fastmlp.playground.server import PlaygroundServer, is_loopback

# the folder that holds the fastmlp being tested (the source tree or site-packages)
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(S.__file__))))
SPIRAL = {"dataset": "spiral", "activation": "tanh", "hidden": [8, 8], "lr": 0.1,
          "features": ["x1", "x2", "sin x1", "sin x2"]}


# ---------------------------------------------------------------- helpers

class Client:
    """A tiny HTTP client for one server (a new connection per request)."""

    def __init__(self, server):
        self.host, self.port = server.server_address[:2]

    def raw(self, method, path, body=b"", headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            res = conn.getresponse()
            return res.status, res.getheader("Content-Type"), res.read()
        finally:
            conn.close()

    def call(self, method, path, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        status, _, raw = self.raw(method, path, data)
        return status, json.loads(raw)


@pytest.fixture
def server():
    srv = PlaygroundServer("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.close()
    thread.join(5)


@pytest.fixture
def client(server):
    return Client(server)


def decode(image):
    """Values of an image of a snapshot: mid + half * q / 127."""
    q = np.frombuffer(base64.b64decode(image["q"]), dtype=np.int8).astype(np.float64)
    return image["mid"] + image["half"] * q / 127.0


def half_step(image):
    """Largest error of a decoded value inside the clipping range: half a code step."""
    return image["half"] / 127.0 / 2 + 1e-6 * max(1.0, abs(image["mid"]))


def ref_features(P, names):
    x1, x2 = P[:, 0], P[:, 1]
    cols = {"x1": x1, "x2": x2, "x1^2": x1 ** 2, "x2^2": x2 ** 2, "x1*x2": x1 * x2,
            "sin x1": np.sin(x1), "sin x2": np.sin(x2)}
    return np.column_stack([cols[n] for n in names])


def ref_forward(snap, P):
    """(output, hidden activations) of the snapshot's network at points P, float64."""
    acts = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z,
            "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
    a = ref_features(P, snap["features"])
    hidden = []
    L = len(snap["weights"])
    for l in range(L):
        z = a @ np.array(snap["weights"][l], dtype=np.float64) + np.array(snap["biases"][l])
        if l == L - 1:
            out = acts[snap["output"]](z)[:, 0]
            return out, hidden
        f = acts[snap["activation"]](z)
        a = a + f if snap["skip"] == "residual" else z + f if snap["skip"] == "preact" else f
        hidden.append(a)


def plane(n, extent=6.0):
    h = 2 * extent / n
    t = -extent + (np.arange(n) + 0.5) * h
    return np.array([(x1, x2) for x2 in t[::-1] for x1 in t])


def poll_until(client, sid, done, timeout=60.0, interval=0.05):
    """Poll the session until done(snapshot); the test fails after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        status, snap = client.call("GET", f"/api/session/{sid}")
        assert status == 200, snap
        if done(snap):
            return snap
        assert time.monotonic() < end, f"not reached within {timeout} s: {snap['loss']}"
        time.sleep(interval)


# ---------------------------------------------------------------- settings

def test_parse_config_defaults_and_order():
    cfg = S.parse_config({})
    assert cfg == S.DEFAULTS
    cfg = S.parse_config({"features": ["sin x2", "x1"], "hidden": [], "noise": 1})
    assert cfg["features"] == ["x1", "sin x2"]       # the page's order
    assert cfg["hidden"] == [] and cfg["noise"] == 1.0


@pytest.mark.parametrize("raw, fragment", [
    ({"dataset": "moons"}, "dataset must be one of"),
    ({"hidden": [0]}, "hidden[0] must be an integer from 1 to 8"),
    ({"hidden": [8] * 100}, "hidden must be a list of 0 to 6"),
    ({"hidden": [8] * 7}, "hidden must be a list of 0 to 6"),
    ({"hidden": [9]}, "hidden[0] must be an integer from 1 to 8"),
    ({"hidden": [True]}, "hidden[0]"),
    ({"lr": -0.1}, "lr must be > 0"),
    ({"lr": 0}, "lr must be > 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": "0.1"}, "lr must be a finite number"),
    ({"l2": -1}, "l2 must be >= 0"),
    ({"batch_size": 0}, "batch_size must be from 1"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"features": []}, "features must be a non-empty list"),
    ({"features": ["x3"]}, "unknown feature 'x3'"),
    ({"features": ["x1", "x1"]}, "twice"),
    ({"activation": "gelu"}, "activation must be one of"),
    ({"clip": "yes"}, "clip must be true or false"),
    ({"train_ratio": 1.0}, "train_ratio must be"),
    ({"seed": -1}, "seed must be from 0"),
    ({"lr": 1e-50}, "lr=1e-50 is 0 in float32"),
    ({"clip": True, "tau": 1e-50}, "tau=1e-50 is 0 in float32"),
    ({"epochs": 3}, "unknown setting(s) ['epochs']"),
    ([1, 2], "must be a JSON object"),
])
def test_parse_config_refuses_with_the_key_named(raw, fragment):
    with pytest.raises(S.BadRequest) as e:
        S.parse_config(raw)
    assert fragment in str(e.value)


_scalars = (st.none() | st.booleans() | st.integers(-10, 3000) | st.integers() |
            st.floats() | st.text(max_size=6) |
            st.sampled_from(S.DATASETS + S.FEATURES + S.ACTIVATIONS + S.SKIPS + S.INITS))
_json_values = _scalars | st.lists(_scalars, max_size=8) | \
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(S.DEFAULTS)), _json_values, max_size=6))
def test_parse_config_accepts_only_what_the_session_can_build(raw):
    """Any JSON settings either raise BadRequest or give values of the right type in range."""
    try:
        cfg = S.parse_config(raw)
    except S.BadRequest:
        return
    assert set(cfg) == set(S.DEFAULTS)
    assert cfg["dataset"] in S.DATASETS and cfg["activation"] in S.ACTIVATIONS
    assert 0 <= len(cfg["hidden"]) <= 6 and all(1 <= w <= 8 for w in cfg["hidden"])
    assert all(type(w) is int for w in cfg["hidden"])
    assert cfg["features"] and set(cfg["features"]) <= set(S.FEATURES)
    assert 0 < cfg["lr"] <= 10 and 0 <= cfg["l2"] <= 10 and 0 <= cfg["noise"] <= 3
    assert type(cfg["batch_size"]) is int and 1 <= cfg["batch_size"] <= 2000
    assert type(cfg["clip"]) is bool and cfg["tau"] > 0


def test_features_match_their_formulas():
    P = np.array([[0.5, -2.0], [3.0, 1.5]])
    F = S.features(P, list(S.FEATURES))
    np.testing.assert_allclose(F, ref_features(P, list(S.FEATURES)), rtol=1e-15)


def test_plane_grid_is_row_major_from_the_top_left():
    G = S.plane_grid(4)
    np.testing.assert_allclose(G[0], [-4.5, 4.5])     # top left: x1 low, x2 high
    np.testing.assert_allclose(G[3], [4.5, 4.5])
    np.testing.assert_allclose(G[-1], [4.5, -4.5])
    np.testing.assert_allclose(G, plane(4))


# ---------------------------------------------------------------- the JSON API

def test_new_session_snapshot_matches_a_numpy_forward_pass(client):
    status, snap = client.call("POST", "/api/session", {"dataset": "xor", "hidden": [3, 2],
                                                         "features": ["x1", "x2", "x1*x2"]})
    assert status == 200
    assert snap["layers"] == [3, 3, 2, 1] and snap["mode"] == "train"
    assert len(snap["points"]["train"]) == 250 and len(snap["points"]["test"]) == 250
    # The heat map is P(class 1) on the GRID x GRID plane grid.
    hm = snap["heatmap"]
    out, hidden = ref_forward(snap, plane(hm["n"]))
    np.testing.assert_allclose(decode(hm), out, rtol=0, atol=half_step(hm) + 1e-5)
    # Each hidden neuron's image is its tanh output on the neuron grid.
    out_n, hidden_n = ref_forward(snap, plane(snap["neuron_grid"]))
    for l, A in enumerate(hidden_n):
        for k in range(A.shape[1]):
            img = snap["neurons"][l + 1][k]
            np.testing.assert_allclose(decode(img), A[:, k], rtol=0,
                                       atol=half_step(img) + 1e-5)
    np.testing.assert_allclose(decode(snap["neurons"][-1][0]), out_n, rtol=0,
                               atol=half_step(snap["neurons"][-1][0]) + 1e-5)
    # Input images: each feature over the plane.
    F = ref_features(plane(snap["neuron_grid"]), snap["features"])
    for j, img in enumerate(snap["neurons"][0]):
        np.testing.assert_allclose(decode(img), F[:, j], rtol=0, atol=half_step(img))


def test_reported_losses_are_the_binary_cross_entropy_of_the_points(client):
    status, snap = client.call("POST", "/api/session", {"dataset": "circle", "noise": 0.5})
    assert status == 200
    for name in ("train", "test"):
        pts = np.array(snap["points"][name])
        p, _ = ref_forward(snap, pts[:, :2])
        y = pts[:, 2]
        bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        # weights rounded to 6 digits and points to 3 decimals: loss agrees to ~1e-3
        assert snap["loss"][name] == pytest.approx(bce, rel=2e-3, abs=2e-3)


def test_play_trains_the_spiral_and_pause_stops(client):
    status, snap = client.call("POST", "/api/session", SPIRAL)
    sid = snap["session"]
    start = snap["loss"]["test"]
    assert start > 0.5
    assert client.call("POST", f"/api/session/{sid}/play")[1]["playing"] is True
    snap = poll_until(client, sid, lambda s: s["loss"]["test"] < 0.2)
    assert snap["step"] > 0 and snap["epoch"] > 0
    assert len(snap["curve"]["step"]) >= 2
    assert snap["curve"]["step"] == sorted(snap["curve"]["step"])
    assert len(snap["grad_norms"]) == 3 and all(g > 0 for g in snap["grad_norms"])
    status, paused = client.call("POST", f"/api/session/{sid}/pause")
    assert status == 200 and paused["playing"] is False
    time.sleep(0.3)
    a = client.call("GET", f"/api/session/{sid}")[1]
    time.sleep(0.3)
    b = client.call("GET", f"/api/session/{sid}")[1]
    assert a["step"] == b["step"] and a["weights"] == b["weights"]


@pytest.mark.parametrize("l2", [0.0, 3.0])
def test_step_is_one_sgd_step(client, l2):
    """A full-batch step moves the weights by -lr times the gradient of the mean loss (plus
    l2 * W / n), computed here by hand-written float64 backpropagation."""
    cfg = {"dataset": "gaussian", "noise": 1.0, "hidden": [3], "activation": "tanh",
           "batch_size": 250, "lr": 0.5, "l2": l2}
    snap0 = client.call("POST", "/api/session", cfg)[1]
    sid = snap0["session"]
    client.call("POST", f"/api/session/{sid}/step")
    snap1 = poll_until(client, sid, lambda s: s["step"] == 1)
    assert snap1["playing"] is False and len(snap1["grad_norms"]) == 2
    pts = np.array(snap0["points"]["train"])
    F, y = ref_features(pts[:, :2], snap0["features"]), pts[:, 2:]
    W0, W1 = (np.array(w, dtype=np.float64) for w in snap0["weights"])
    b0, b1 = (np.array(b, dtype=np.float64) for b in snap0["biases"])
    a1 = np.tanh(F @ W0 + b0)
    p = 1 / (1 + np.exp(-(a1 @ W1 + b1)))
    dz2 = (p - y) / len(y)                 # d mean BCE / d logit
    dz1 = (dz2 @ W1.T) * (1 - a1 ** 2)
    n = len(y)
    expected = [W0 - 0.5 * (F.T @ dz1 + l2 * W0 / n), W1 - 0.5 * (a1.T @ dz2 + l2 * W1 / n)]
    for l in range(2):
        got = np.array(snap1["weights"][l])
        moved = np.abs(expected[l] - np.array(snap0["weights"][l])).max()
        assert moved > 1e-3
        # rounding of the snapshot (6 digits, points to 3 decimals) and float32 training
        np.testing.assert_allclose(got, expected[l], rtol=0, atol=2e-3 * moved + 1e-5)


def test_divergence_pauses_with_a_message(client):
    cfg = {"lr": 10, "activation": "identity", "hidden": [8] * 6, "init": "he",
           "features": ["x1^2", "x2^2", "x1*x2"], "batch_size": 1}
    sid = client.call("POST", "/api/session", cfg)[1]["session"]
    client.call("POST", f"/api/session/{sid}/play")
    snap = poll_until(client, sid, lambda s: s["error"], timeout=30)
    assert "diverged" in snap["error"] and snap["playing"] is False
    status, _, raw = client.raw("GET", f"/api/session/{sid}")
    def strict(token):
        raise ValueError(f"not JSON: {token}")
    json.loads(raw, parse_constant=strict)   # no NaN or Infinity for the browser's parser
    # Play again after lowering the rate: the session trains on.
    status, snap = client.call("POST", f"/api/session/{sid}/config", {**cfg, "lr": 1e-5})
    assert status == 200 and snap["error"] is None


def test_optimizer_settings_change_without_reset(client):
    snap = client.call("POST", "/api/session", SPIRAL)[1]
    sid = snap["session"]
    client.call("POST", f"/api/session/{sid}/step")
    poll_until(client, sid, lambda s: s["step"] == 1)
    status, snap = client.call("POST", f"/api/session/{sid}/config",
                               {**SPIRAL, "lr": 0.01, "clip": True, "tau": 0.5})
    assert status == 200 and snap["step"] == 1 and snap["config"]["lr"] == 0.01
    status, snap = client.call("POST", f"/api/session/{sid}/config", {"hidden": [3]})
    assert status == 200 and snap["step"] == 0 and snap["layers"] == [4, 3, 1]
    status, snap = client.call("POST", f"/api/session/{sid}/reset")
    assert status == 200 and snap["step"] == 0 and snap["config"]["hidden"] == [3]


@pytest.mark.parametrize("skip, hidden", [("residual", [2, 2]), ("preact", [3, 4])])
def test_skip_connections_in_the_snapshot(client, skip, hidden):
    status, snap = client.call("POST", "/api/session", {"skip": skip, "hidden": hidden,
                                                         "activation": "tanh"})
    assert status == 200 and snap["skip"] == skip
    hm = snap["heatmap"]
    out, _ = ref_forward(snap, plane(hm["n"]))
    np.testing.assert_allclose(decode(hm), out, rtol=0, atol=half_step(hm) + 1e-5)
    _, hidden_n = ref_forward(snap, plane(snap["neuron_grid"]))
    img = snap["neurons"][2][1]
    np.testing.assert_allclose(decode(img), hidden_n[1][:, 1], rtol=0,
                               atol=half_step(img) + 1e-5)


def test_residual_layer_must_keep_its_width(client):
    status, err = client.call("POST", "/api/session", {"skip": "residual", "hidden": [4]})
    assert status == 400 and "residual" in err["error"]


def test_no_hidden_layer_and_relu_dead_units(client):
    status, snap = client.call("POST", "/api/session", {"hidden": []})
    assert status == 200 and snap["layers"] == [2, 1] and snap["dead"] == []
    # Zero weights give z = 0 <= 0 on every point: every ReLU unit is dead.
    status, snap = client.call("POST", "/api/session", {"hidden": [3, 2], "activation": "relu",
                                                         "init": "zeros"})
    assert snap["dead"] == [[True] * 3, [True] * 2]
    status, snap = client.call("POST", "/api/session", {"hidden": [3], "activation": "tanh"})
    assert snap["dead"] == [None]


def test_lecture_example_is_the_hand_set_network(client):
    sid = client.call("POST", "/api/session", {})[1]["session"]
    status, snap = client.call("POST", f"/api/session/{sid}/lecture")
    assert status == 200 and snap["mode"] == "lecture"
    assert snap["weights"] == [[[5, -5], [-5, 5]], [[-3], [-3]]]
    assert snap["biases"] == [[1, 1], [0]]
    assert snap["loss"] is None and snap["points"] is None
    P = plane(snap["heatmap"]["n"])
    x1, x2 = P[:, 0], P[:, 1]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    g = -3 * (sig(5 * x1 - 5 * x2 + 1) + sig(-5 * x1 + 5 * x2 + 1))
    hm = snap["heatmap"]
    np.testing.assert_allclose(decode(hm), g, rtol=0, atol=half_step(hm) + 1e-9)
    assert hm["lo"] == pytest.approx(g.min(), abs=1e-5)
    # Shown without training: play and step are refused, and nothing moves.
    for action in ("play", "step"):
        status, err = client.call("POST", f"/api/session/{sid}/{action}")
        assert status == 400 and "without training" in err["error"]
    status, snap = client.call("POST", f"/api/session/{sid}/reset")
    assert status == 200 and snap["mode"] == "train"


# ---------------------------------------------------------------- bad requests

def test_bad_requests_get_400_and_the_server_stays_up(client, server):
    sid = client.call("POST", "/api/session", {})[1]["session"]
    cases = [
        ("POST", "/api/session", b'{"dataset": "moons"}', "dataset must be one of"),
        ("POST", "/api/session", b'{"hidden": [0]}', "hidden[0]"),
        ("POST", "/api/session", json.dumps({"hidden": [8] * 100}).encode(), "0 to 6"),
        ("POST", "/api/session", b'{"lr": -1}', "lr must be > 0"),
        ("POST", "/api/session", b'{"lr": NaN}', "lr must be a finite number"),
        ("POST", "/api/session", b'{"dataset": ', "not valid JSON"),
        ("POST", "/api/session", b'\xff\xfe', "not valid JSON"),
        ("POST", "/api/session", b'[1, 2]', "must be a JSON object"),
        # found by a new user: 1000 levels (2 kB) raised RecursionError, answered 500
        ("POST", "/api/session", b"[" * 20000 + b"]" * 20000, "nested too deeply"),
        ("POST", f"/api/session/{sid}/config", b'{"batch_size": -3}', "batch_size"),
        ("POST", f"/api/session/{sid}/config", b'"spiral"', "must be a JSON object"),
        ("POST", f"/api/session/{sid}/reset", b'{"skip": "sideways"}', "skip must be"),
        ("GET", "/api/session", b"", "POST /api/session"),
    ]
    for method, path, body, fragment in cases:
        status, ctype, raw = client.raw(method, path, body)
        assert status == 400, (path, body, raw)
        assert ctype == "application/json"
        assert fragment in json.loads(raw)["error"], (body, raw)
    # The session is unchanged by its refused settings and still answers.
    status, snap = client.call("GET", f"/api/session/{sid}")
    assert status == 200 and snap["config"]["batch_size"] == S.DEFAULTS["batch_size"]


def test_other_errors_and_static_files(client):
    assert client.raw("GET", "/api/session/nope")[0] == 404
    sid = client.call("POST", "/api/session", {})[1]["session"]
    assert client.raw("POST", f"/api/session/{sid}/explode")[0] == 404
    assert client.raw("GET", "/static/../session.py")[0] == 404
    assert client.raw("GET", "/nothing")[0] == 404
    big = b'{"seed": 1' + b" " * (70 * 1024) + b"}"
    assert client.raw("POST", "/api/session", big)[0] == 413
    status, _, raw = client.raw("GET", "/", headers={"Host": "example.test"})
    assert status == 403 and b"127.0.0.1 only" in raw
    # names that only start like a loopback address (found by a new user: DNS rebinding)
    for host in ("127.0.0.1.attacker.example", "127.attacker.example:8080", "127.0.0.1x"):
        assert client.raw("GET", "/", headers={"Host": host})[0] == 403, host
    for host in ("127.0.0.2", "127.1.2.3:9", "localhost:80", "[::1]:8000"):
        assert client.raw("GET", "/", headers={"Host": host})[0] == 200, host
    # two Host headers, and a request line naming another host (found by a new user)
    assert client.raw("GET", "/", headers={"Host": "127.0.0.1", "host": "evil.example"}
                      )[0] == 400
    assert client.raw("GET", "http://evil.example/")[0] == 403
    assert client.raw("GET", f"http://127.0.0.1:{client.port}/")[0] == 200
    status, ctype, raw = client.raw("GET", "/")
    assert status == 200 and ctype.startswith("text/html") and b"app.js" in raw
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, ctype, raw = client.raw("GET", f"/static/{name}")
        assert status == 200 and kind in ctype and len(raw) > 1000


def test_two_different_content_lengths_are_refused(server):
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as c:
        c.sendall(b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                  b"Content-Length: 50\r\n\r\n{}")
        reply = b""
        while chunk := c.recv(4096):  # the server closes the connection after its reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400") and b"more than one Content-Length" in reply
    for length in (b"-0", b"+2", b"0_2"):  # digits only (RFC 9112); int() took these
        with socket.create_connection(("127.0.0.1", server.server_address[1]),
                                      timeout=10) as c:
            c.sendall(b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                      + length + b"\r\n\r\n{}")
            reply = b""
            while chunk := c.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400") and b"bad Content-Length" in reply, length


def test_play_on_a_training_split_of_one_class(client):
    """Found by a new user: 2 training rows of one class played into 'internal error'."""
    cfg = {"dataset": "circle", "seed": 2, "n_samples": 20, "train_ratio": 0.1}
    sid = client.call("POST", "/api/session", cfg)[1]["session"]
    assert client.call("POST", f"/api/session/{sid}/play")[0] == 200
    snap = poll_until(client, sid, lambda s: s["epoch"] > 0 or s["error"])
    assert snap["epoch"] > 0 and snap["error"] is None


def test_one_connection_survives_odd_requests(server):
    """Keep-alive: a GET with a body, a refused body and a silent second client do not
    desynchronize or block the connection; chunked bodies are refused."""
    host, port = server.server_address[:2]
    silent = socket.create_connection((host, port))   # says nothing, holds a thread
    try:
        with socket.create_connection((host, port), timeout=10) as conn:
            f = conn.makefile("rb")
            conn.sendall(b"GET /api/session/none HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: 5\r\n\r\nhello"
                         b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Length: 3\r\n\r\n{x}"
                         b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            for expected in (404, 400, 200):
                status = int(f.readline().split()[1])
                length = 0
                while True:
                    line = f.readline().strip()
                    if not line:
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                f.read(length)
                assert status == expected
        status, _, raw = Client(server).raw("POST", "/api/session", b"2\r\n{}\r\n0\r\n\r\n",
                                            headers={"Transfer-Encoding": "chunked"})
        assert status == 400 and b"Content-Length" in raw
    finally:
        silent.close()


def test_static_files_fetch_nothing_from_elsewhere():
    folder = os.path.join(os.path.dirname(S.__file__), "static")
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
        urls = [w for w in text.replace('"', " ").split() if "://" in w]
        assert set(urls) <= {"http://www.w3.org/2000/svg"}, (name, urls)  # a namespace name


def test_close_and_expiry():
    srv = PlaygroundServer("127.0.0.1", 0, ttl=0.5)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    client = Client(srv)
    try:
        a = client.call("POST", "/api/session", {})[1]["session"]
        b = client.call("POST", "/api/session", {})[1]["session"]
        assert client.raw("POST", f"/api/session/{a}/close")[0] == 200
        assert client.raw("GET", f"/api/session/{a}")[0] == 404
        end = time.monotonic() + 10
        while client.raw("GET", f"/api/session/{b}")[0] == 200 and time.monotonic() < end:
            time.sleep(0.7)  # longer than ttl between polls: it expires
        assert client.raw("GET", f"/api/session/{b}")[0] == 404
        assert len(srv.store) == 0
    finally:
        srv.close()


def test_session_limit_gives_503():
    srv = PlaygroundServer("127.0.0.1", 0, max_sessions=2)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    client = Client(srv)
    try:
        assert client.raw("POST", "/api/session")[0] == 200
        assert client.raw("POST", "/api/session")[0] == 200
        status, _, raw = client.raw("POST", "/api/session")
        assert status == 503 and b"2 sessions are open" in raw
    finally:
        srv.close()


# ---------------------------------------------------------------- many sessions at once

def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_many_sessions(server, n_sessions, seconds):
    """n_sessions play at once, each polled by its own thread for ``seconds``."""
    client = Client(server)
    before_threads = threading.active_count()
    sids = []
    for i in range(n_sessions):
        cfg = {**SPIRAL, "seed": i, "hidden": [8] * (1 + i % 6)}
        status, snap = client.call("POST", "/api/session", cfg)
        assert status == 200, snap
        sids.append(snap["session"])
        assert client.raw("POST", f"/api/session/{snap['session']}/play")[0] == 200
    rss0 = _rss_mib()
    failures, steps = [], {}

    def poller(sid):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            status, snap = client.call("GET", f"/api/session/{sid}")
            if status != 200:
                failures.append((sid, status))
                return
            steps[sid] = snap["step"]
            time.sleep(0.1)

    threads = [threading.Thread(target=poller, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    rss1 = _rss_mib()
    assert not failures
    assert len(steps) == n_sessions and all(s > 0 for s in steps.values()), steps
    assert len(server.store) == n_sessions
    # Memory stays bounded: each session holds a few small arrays and one snapshot.
    assert rss1 - rss0 < 100, (rss0, rss1)
    for sid in sids:
        assert client.raw("POST", f"/api/session/{sid}/close")[0] == 200
    assert len(server.store) == 0
    end = time.monotonic() + 10
    while threading.active_count() > before_threads and time.monotonic() < end:
        time.sleep(0.05)
    assert threading.active_count() <= before_threads   # every training thread ended
    status, _, _ = client.raw("GET", "/")
    assert status == 200


def test_twenty_sessions_train_at_once(server):
    run_many_sessions(server, 20, seconds=4)


@pytest.mark.slow
def test_twenty_sessions_train_at_once_for_ten_seconds(server):
    run_many_sessions(server, 20, seconds=10)


# ---------------------------------------------------------------- the command

def test_host_check():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert is_loopback("127.0.0.2") and not is_loopback("127.0.0.1.attacker.example")


def test_command_serves_until_ctrl_c(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "fastmlp", "playground"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fastmlp playground: serving at http://127.0.0.1:"), line
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/api/session", body=b'{"dataset": "moons"}')
        assert conn.getresponse().status == 400
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def test_command_bad_port_is_a_user_error(capsys):
    from fastmlp.cli import main

    assert main(["playground", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


def test_single_row_steps_never_stop_the_session(client):
    """A one-row batch holds one class: steps must go on (a batch, not the data set)."""
    cfg = {"dataset": "xor", "hidden": [4], "activation": "tanh", "batch_size": 1, "lr": 0.1}
    sid = client.call("POST", "/api/session", cfg)[1]["session"]
    for k in range(1, 6):
        client.call("POST", f"/api/session/{sid}/step")
        snap = poll_until(client, sid, lambda s, k=k: s["step"] == k or s["error"])
        assert not snap["error"], snap["error"]


def test_a_burst_of_new_sessions_is_answered():
    """60 tabs opening at once: every connection gets an answer (200, or 503 at the limit),
    none is reset by a full listen queue."""
    from collections import Counter
    from fastmlp.playground.server import PlaygroundServer
    srv = PlaygroundServer("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    port, results = srv.server_address[1], []

    def open_session():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/api/session", body="{}",
                         headers={"Content-Type": "application/json"})
            results.append(conn.getresponse().status)
        except OSError as e:
            results.append(type(e).__name__)
        finally:
            conn.close()

    try:
        clients = [threading.Thread(target=open_session) for _ in range(60)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
    finally:
        srv.shutdown()
        srv.close()
    counts = Counter(results)
    assert set(counts) <= {200, 503} and sum(counts.values()) == 60, counts


def test_a_divergence_inside_a_chunk_counts_the_steps_it_applied(monkeypatch):
    """Found by new users: after a divergence the snapshot said step 0, while the network
    kept the weights of the steps before the refused one. A fit that diverges at step 3 of
    its second epoch applied one epoch and two steps, and the counts say so."""
    import fastmlp
    from fastmlp.playground.session import Session, parse_config

    session = Session(parse_config({}))
    try:
        n = len(session._y_train)
        per_epoch = -(-n // session._optimizer.batch_size)

        def diverging_fit(*args, **kwargs):
            raise fastmlp.DivergenceError(2, 3, "loss", -1, 0.1)

        monkeypatch.setattr(session._net, "fit", diverging_fit)
        step, epoch = session.step, session.epoch
        with session._lock:
            try:
                session._chunk()
            except fastmlp.DivergenceError:
                pass
            else:
                raise AssertionError("the divergence was not passed on")
        assert session.step == step + per_epoch + 2
        assert session.epoch == epoch + 1
    finally:
        session.close()


def test_a_divergence_at_a_later_fits_first_step_keeps_the_networks_advice():
    """Every chunk and step of a session is a fit of its own. The session once replaced the
    advice of a divergence at a later fit's first step by the rate's, which lost the weight
    decay's (found by a new user: lr 10, l2 10, batch 1); the network now knows that its
    weights came from earlier steps, and its advice stands."""
    import fastmlp
    from fastmlp.playground.session import Session, parse_config

    session = Session(parse_config({"lr": 10, "l2": 10, "batch_size": 1}))
    try:
        with session._lock:
            for _ in range(1000):
                try:
                    session._one_step()
                except fastmlp.DivergenceError as e:
                    error = e
                    break
        assert session.step > 0 and (error.epoch, error.step) == (1, 1)
        assert "The weight decay alone makes every weight grow" in str(error), str(error)
    finally:
        session.close()


def test_other_methods_get_json_405_and_head_gets_headers_only(server):
    """Found by a new user: PUT, DELETE, OPTIONS and HEAD got the standard library's HTML 501
    page, though every answer is JSON. HEAD answers as GET without a body, and the same
    connection's next request still gets its body."""
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
        try:
            conn.request(method, "/api/session", body=b"{}")
            res = conn.getresponse()
            body = json.loads(res.read())
        finally:
            conn.close()
        assert res.status == 405 and res.getheader("Allow") == "GET, HEAD, POST"
        assert res.getheader("Content-Type") == "application/json"
        assert body["error"].startswith(f"{method} is not served here"), body
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.request("HEAD", "/")
        res = conn.getresponse()
        assert res.status == 200 and int(res.getheader("Content-Length")) > 0
        assert res.read() == b""
        conn.request("GET", "/")
        res = conn.getresponse()
        assert res.status == 200 and len(res.read()) == int(res.getheader("Content-Length"))
    finally:
        conn.close()
