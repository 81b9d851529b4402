"""``fastmlp playground``: a neural-network playground in the browser, trained by the C core.

``python -m fastmlp.playground`` (or ``fastmlp playground``) serves a page on 127.0.0.1 where
one picks a two-class data set in the plane, input features, hidden layers, activation,
initialization and the SGD settings, then watches training: the decision boundary, every
neuron's output over the plane, the weights, the loss curves, per-layer gradient norms and dead
units. Standard library only on the server side (``http.server``); the page is plain
HTML/CSS/JavaScript shipped in ``static/``, fetching nothing from elsewhere.
"""
from fastmlp.playground.server import PlaygroundServer, serve
from fastmlp.playground.session import DEFAULTS, BadRequest, Session, parse_config

__all__ = ["PlaygroundServer", "serve", "Session", "parse_config", "BadRequest", "DEFAULTS"]
