"""Optimizer settings handed to the C engine.

The optimizer is a description, not a loop: the update itself runs inside the C core, one call
per block of steps, so nothing here runs per step.
"""
from fastmlp._validation import check_positive_float, check_positive_int


class SGD:
    """Mini-batch stochastic gradient descent with optional clipping by global norm.

    Each step takes a batch, computes the gradient g of the batch's mean loss and updates every
    parameter: ``W <- W - lr * c * g`` with ``c = min(1, clip_norm / ||g||)``, where ``||g||`` is
    the L2 norm over all parameters of the network together (c = 1 without clipping).

    Parameters
    ----------
    lr : float > 0
        The learning rate (step size).
    batch_size : int >= 1 or None
        Rows per step: 1 is single-sample SGD, None the full batch (plain gradient descent).
        A batch size larger than the data is clipped to it with a warning.
    clip_norm : float > 0 or None
        The clipping threshold tau on the global gradient norm; None never clips.
    """

    def __init__(self, lr=0.01, batch_size=32, clip_norm=None):
        self.lr = check_positive_float(lr, "lr")
        self.batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
        self.clip_norm = check_positive_float(clip_norm, "clip_norm", allow_none=True)

    def __repr__(self):
        return (f"SGD(lr={self.lr!r}, batch_size={self.batch_size!r}, "
                f"clip_norm={self.clip_norm!r})")
