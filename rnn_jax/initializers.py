"""Weight initialisers chosen by name, so configs and factories can say which one they mean."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]  # (key, shape, dtype, hidden_size) -> array

INITIALIZERS = ("uniform", "pytorch", "glorot", "orthogonal", "zeros")


def _uniform(key, shape, dtype, hidden_size):
    # The 2015 numpy RNN: 2 * np.random.random(shape) - 1, i.e. U[-1, 1).
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


def _pytorch(key, shape, dtype, hidden_size):
    # torch.nn.RNN/LSTM/GRU: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
    bound = 1.0 / (hidden_size**0.5)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _glorot(key, shape, dtype, hidden_size):
    if len(shape) < 2:
        return jnp.zeros(shape, dtype)
    return jax.nn.initializers.glorot_uniform()(key, shape, dtype)


def _orthogonal(key, shape, dtype, hidden_size):
    """Orthogonal [H, H] blocks, one per gate, for a [H, G*H] recurrent matrix."""
    if len(shape) < 2:
        return jnp.zeros(shape, dtype)
    rows, cols = shape
    blocks = max(cols // rows, 1)
    keys = jax.random.split(key, blocks)
    init = jax.nn.initializers.orthogonal()
    return jnp.concatenate([init(k, (rows, cols // blocks), dtype) for k in keys], axis=1)


def _zeros(key, shape, dtype, hidden_size):
    return jnp.zeros(shape, dtype)


_TABLE = {
    "uniform": _uniform,
    "pytorch": _pytorch,
    "glorot": _glorot,
    "orthogonal": _orthogonal,
    "zeros": _zeros,
}


def get_initializer(name: str, argument: str = "init") -> Initializer:
    """Returns the initialiser called `name`; `argument` names the option in the error message."""
    try:
        return _TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"{argument}={name!r} is not an initialiser; allowed: {', '.join(INITIALIZERS)}") from None
