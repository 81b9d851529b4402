"""The implementations the peer benchmark trains: fastmlp and its peers, one class each.

Every trainer starts from the same weights (copied from one fastmlp MLP), runs plain SGD
without momentum or weight decay, and visits the rows in the order of a permutation it is given
once per epoch, so all of them do the same work. ``prepare(perm)`` runs outside the timed
region; ``run()`` is one timed epoch and returns the epoch's mean loss on fastmlp's scale (the
mean over the batches of the batch loss before its update, per row):

- cross-entropy: the same in every library;
- squared: fastmlp's L = sum_k (g_k - y_k)^2; the peers minimise half of that with twice
  fastmlp's rate (the same steps), and their losses are doubled when reported.

How each one is driven
- ``fastmlp``: the C engine directly, ``_core.train_steps`` over the whole epoch with the
  permutation as its index array (it gathers the batches itself, as ``fit`` does).
- ``fastmlp.fit``: ``MLP.fit(..., epochs=1, shuffle=False)`` on a permuted copy of the data made
  in ``prepare``; its time is the epoch time ``fit`` records (History.epoch_time), which leaves
  out the one-off input checks of each call. It shows the cost of the Python fit loop.
- ``numpy``: a vectorised float32 implementation: batch gathered with ``np.take`` into a
  preallocated buffer, products with ``np.dot(..., out=...)``, element-wise work in place.
- ``torch``: an ``nn.Sequential`` of ``nn.Linear`` and activations in eager mode,
  ``torch.optim.SGD(momentum=0)``, batches by ``index_select``; losses accumulated as tensors and
  read once per epoch.
- ``sklearn``: ``MLPClassifier`` / ``MLPRegressor(solver='sgd', momentum=0, alpha=0,
  shuffle=False)`` and one ``partial_fit`` per epoch on a permuted copy made in ``prepare``
  (scikit-learn takes no index array), its ``coefs_`` and ``intercepts_`` overwritten in place
  with the shared initial weights after a first call that builds them.

The BLAS thread count of the NumPy and scikit-learn trainers is set once for the whole run by
the caller (threadpoolctl), not per epoch: entering a limit costs about a millisecond.
"""
import warnings

import numpy as np

import _common


class Trainer:
    name = "?"

    def prepare(self, perm, Xp=None, yp=None):
        self.perm = perm

    def run(self):
        raise NotImplementedError

    def threads(self):
        return ""


class FastmlpEngine(Trainer):
    name = "fastmlp"

    def __init__(self, wl, net, X, y, threads):
        from fastmlp import _core
        self._core = _core
        self.net, self.X, self.y, self.nt = net, X, y, threads
        self.B = wl.batch
        self.lr = wl.fastmlp_lr
        self.ws, self.cap = net._new_workspace(self.B, threads), self.B
        self.n_steps = -(-X.shape[0] // self.B)
        self.stats = np.zeros((net.n_layers, 4))

    def run(self):
        net = self.net
        st = self._core.train_steps(net._plan, net.loss, net._params, net._grads, None,
                                    self.ws, self.cap, self.X, self.y, None, self.perm, self.B,
                                    0, self.n_steps, _common.sgd_settings(self.lr), self.stats,
                                    None, self.nt)
        return st[0] / st[3]

    def threads(self):
        return f"{self.nt} OpenMP"


class FastmlpFit(Trainer):
    name = "fastmlp.fit"
    uses_copies = True
    reports_own_time = True

    def __init__(self, wl, net, X, y, threads):
        from fastmlp import SGD
        self.net, self.nt = net, threads
        self.opt = SGD(lr=wl.fastmlp_lr, batch_size=wl.batch)

    def prepare(self, perm, Xp=None, yp=None):
        self.Xp, self.yp = Xp, yp

    def run(self):
        h = self.net.fit(self.Xp, self.yp, optimizer=self.opt, epochs=1, shuffle=False,
                         n_threads=self.nt)
        self.own_time = h.epoch_time[0]
        return h.loss[0]

    def threads(self):
        return f"{self.nt} OpenMP"


# ------------------------------------------------------------------ NumPy

def _act_forward(name, z):
    if name == "relu":
        np.maximum(z, 0, out=z)
    elif name == "tanh":
        np.tanh(z, out=z)
    elif name == "sigmoid":
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)


class NumpyMLP(Trainer):
    """Clean vectorised NumPy: preallocated buffers, np.dot into them, in-place updates."""

    name = "numpy"

    def __init__(self, wl, net, X, y, threads):
        self.X, self.y, self.B, self.lr = X, y, wl.batch, wl.lr
        self.act, self.softmax = wl.activation, wl.output == "softmax"
        self.W = [np.array(w, dtype=np.float32) for w in net.weights]
        self.b = [np.array(b, dtype=np.float32) for b in net.biases]
        B, sizes = self.B, wl.sizes
        f32 = np.float32
        self.xb = np.empty((B, sizes[0]), f32)
        self.yb = np.empty((B,), np.int64) if self.softmax else np.empty((B, sizes[-1]), f32)
        self.h = [np.empty((B, o), f32) for o in sizes[1:]]      # layer outputs
        self.d = [np.empty((B, o), f32) for o in sizes[1:]]      # dJ/dZ of each layer
        self.t = [np.empty((B, o), f32) for o in sizes[1:]]      # derivative scratch
        self.mask = [np.empty((B, o), bool) for o in sizes[1:]]
        self.dW = [np.empty_like(w) for w in self.W]
        self.db = [np.empty_like(b) for b in self.b]
        self.rows = np.arange(B)
        self.nt = threads

    def _step(self, idx):
        nb, L = idx.shape[0], len(self.W)
        x = np.take(self.X, idx, axis=0, out=self.xb[:nb])
        y = np.take(self.y, idx, axis=0, out=self.yb[:nb])
        a = x
        for l in range(L):
            z = self.h[l][:nb]
            np.dot(a, self.W[l], out=z)
            z += self.b[l]
            if l < L - 1:
                _act_forward(self.act, z)
            a = z
        D = self.d[-1][:nb]
        if self.softmax:
            m = a.max(axis=1, keepdims=True)
            np.subtract(a, m, out=D)
            shifted_y = D[self.rows[:nb], y]
            np.exp(D, out=D)
            s = D.sum(axis=1, keepdims=True)
            loss = float(np.log(s).sum() - shifted_y.sum())
            D /= s
            D[self.rows[:nb], y] -= 1
        else:
            np.subtract(a, y, out=D)
            loss = float(np.vdot(D, D))        # fastmlp's scale; the step uses half of it
        D *= 1.0 / nb
        for l in range(L - 1, -1, -1):
            a_in = x if l == 0 else self.h[l - 1][:nb]
            np.dot(a_in.T, D, out=self.dW[l])
            np.sum(D, axis=0, out=self.db[l])
            if l:
                Dn = self.d[l - 1][:nb]
                np.dot(D, self.W[l].T, out=Dn)
                if self.act == "relu":
                    m = np.greater(a_in, 0, out=self.mask[l - 1][:nb])
                    np.multiply(Dn, m, out=Dn)
                else:
                    t = self.t[l - 1][:nb]
                    if self.act == "tanh":              # 1 - h^2
                        np.multiply(a_in, a_in, out=t)
                        np.subtract(1, t, out=t)
                    else:                               # sigmoid: h (1 - h)
                        np.subtract(1, a_in, out=t)
                        t *= a_in
                    Dn *= t
                D = Dn
        for W, dW, b, db in zip(self.W, self.dW, self.b, self.db):
            dW *= self.lr
            W -= dW
            db *= self.lr
            b -= db
        return loss

    def run(self):
        total, B, perm = 0.0, self.B, self.perm
        for r0 in range(0, perm.shape[0], B):
            total += self._step(perm[r0:r0 + B])
        return total / perm.shape[0]

    def threads(self):
        return f"{self.nt} BLAS"


# ------------------------------------------------------------------ PyTorch

class TorchMLP(Trainer):
    name = "torch"

    def __init__(self, wl, net, X, y, threads):
        import torch
        from torch import nn
        self.torch = torch
        torch.set_num_threads(threads)
        act = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[wl.activation]
        layers = []
        for l, (W, b) in enumerate(zip(net.weights, net.biases)):
            lin = nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(np.array(b)))
            layers.append(lin)
            if l < net.n_layers - 1:
                layers.append(act())
        self.model = nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=wl.lr, momentum=0.0)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.B, self.softmax = wl.batch, wl.output == "softmax"

    def prepare(self, perm, Xp=None, yp=None):
        self.perm = self.torch.from_numpy(perm)

    def run(self):
        torch = self.torch
        F = torch.nn.functional
        total = torch.zeros((), dtype=torch.float64)
        n, B = self.perm.shape[0], self.B
        for r0 in range(0, n, B):
            idx = self.perm[r0:r0 + B]
            xb, yb = self.X.index_select(0, idx), self.y.index_select(0, idx)
            out = self.model(xb)
            if self.softmax:
                loss = F.cross_entropy(out, yb)
            else:
                loss = 0.5 * F.mse_loss(out, yb)     # one output: half the squared error
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach() * idx.shape[0]
        scale = 1.0 if self.softmax else 2.0
        return scale * total.item() / n

    def threads(self):
        return f"{self.torch.get_num_threads()} torch"


# ------------------------------------------------------------------ scikit-learn

class SklearnMLP(Trainer):
    name = "sklearn"
    uses_copies = True

    def __init__(self, wl, net, X, y, threads):
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        self.softmax = wl.output == "softmax"
        cls = MLPClassifier if self.softmax else MLPRegressor
        self.model = cls(hidden_layer_sizes=tuple(wl.sizes[1:-1]), activation=wl.activation,
                         solver="sgd", alpha=0.0, batch_size=wl.batch,
                         learning_rate="constant", learning_rate_init=wl.lr, momentum=0.0,
                         nesterovs_momentum=False, shuffle=False, early_stopping=False,
                         n_iter_no_change=10 ** 9, tol=0.0, random_state=0)
        k = min(X.shape[0], 200)
        y0 = y[:k] if self.softmax else y[:k, 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.softmax:
                self.model.partial_fit(X[:k], y0, classes=np.arange(wl.sizes[-1]))
            else:
                self.model.partial_fit(X[:k], y0)
        for c, i, W, b in zip(self.model.coefs_, self.model.intercepts_, net.weights,
                              net.biases):
            assert c.dtype == np.float32 and c.shape == W.shape
            c[...] = W
            i[...] = b
        self.nt = threads

    def prepare(self, perm, Xp=None, yp=None):
        self.Xp = Xp
        self.yp = yp if self.softmax else yp[:, 0]

    def run(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model.partial_fit(self.Xp, self.yp)
        return self.model.loss_ * (1.0 if self.softmax else 2.0)

    def threads(self):
        return f"{self.nt} BLAS"


TRAINERS = {"fastmlp": FastmlpEngine, "fastmlp.fit": FastmlpFit, "numpy": NumpyMLP,
            "torch": TorchMLP, "sklearn": SklearnMLP}
