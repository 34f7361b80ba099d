"""Helpers shared by the library's tests (not a test module itself).

The tests check semantics, not speed, so every program is compiled with XLA:CPU's cheapest
settings (no backend optimisation, the older fusion emitters): compiles take a third of the time
and the results agree to rounding. Compiled programs are shared between tests by making the
cell a static argument of one module-level jitted function. Test data come from a seeded NumPy
generator (`normal`), because each eager `jax.random` call compiles a program per shape.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def jit(fun=None, **kwargs):
    """`jax.jit` with `FAST_COMPILE` on the CPU (the backend the tests run on)."""
    if fun is None:
        return functools.partial(jit, **kwargs)
    options = FAST_COMPILE if jax.default_backend() == "cpu" else None
    return jax.jit(fun, compiler_options=options, **kwargs)


def normal(seed: int, shape, dtype=None):
    """Standard normal test data, `[*shape]`, in `dtype` (None: JAX's default float)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype or jnp.result_type(float))


@functools.lru_cache(maxsize=None)
def _init_program(cell, input_size: int, seed: int):
    return jit(lambda: cell.init(jax.random.PRNGKey(seed), input_size))


def init(cell, input_size: int, seed: int = 0):
    """`cell.init(PRNGKey(seed), input_size)` as one compiled program per cell (eagerly, each
    random draw would compile its own)."""
    return _init_program(cell, input_size, seed)()  # jit retraces when float64 is switched on


@contextlib.contextmanager
def x64():
    """Float64 inside the block."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


def python_loop(cell, params, xs, carry=None):
    """The reference unroll: a Python loop over `cell.apply`, time-major `xs`."""
    carry = cell.initial_carry(xs.shape[1:-1], xs.dtype) if carry is None else carry
    ys = []
    for x in xs:
        carry, y = cell.apply(params, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys)


def scan_apply(cell, params, xs, carry=None):
    """The plain reference recurrence: `lax.scan` of `cell.apply` over time-major `xs`, no masks or
    fast paths (compiles one step, where `python_loop` compiles one per time step)."""
    carry = cell.initial_carry(xs.shape[1:-1], xs.dtype) if carry is None else carry
    return jax.lax.scan(lambda c, x: cell.apply(params, c, x), carry, xs)


def assert_trees_close(a, b, tol=None, **kw):
    """Same structure, leaves close (`tol` sets both rtol and atol)."""
    if tol is not None:
        kw = dict(rtol=tol, atol=tol, **kw)
    assert jax.tree.structure(a) == jax.tree.structure(b), (jax.tree.structure(a), jax.tree.structure(b))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def to_flax_lstm(p, H):
    """`LSTMParams` as the parameters of Flax's `LSTMCell(H)` (gates i, f, g, o; biases on the `h*` side)."""
    out = {}
    for k, g in enumerate("ifgo"):
        sl = slice(k * H, (k + 1) * H)
        out["i" + g] = {"kernel": p.w_x[:, sl]}
        out["h" + g] = {"kernel": p.w_h[:, sl], "bias": p.b[sl]}
    return out


def to_flax_gru(p, H):
    """`GRUParams` as the parameters of Flax's `GRUCell(H)` (gates r, z, n; `b_hn` is `hn`'s bias)."""
    out = {}
    for k, g in enumerate("rzn"):
        sl = slice(k * H, (k + 1) * H)
        out["i" + g] = {"kernel": p.w_x[:, sl], "bias": p.b_x[sl]}
        out["h" + g] = {"kernel": p.w_h[:, sl]}
    out["hn"]["bias"] = p.b_hn
    return out


# A run of the app in a second or two: 3-bit operands, 4 hidden units, 2 chunks of 20 steps.
TINY = [
    "task.bits=4",
    "model.hidden=4",
    "train.steps=40",
    "train.log_every=20",
    "task.batch_size=8",
    "task.stop_when_solved=false",
    "train.progress=false",
    "task.generalization_bits=[6]",
    "task.generalization_samples=16",
    "task.carry_chain_lengths=[]",  # the carry-chain evaluation has its own tests
    "task.long_random_bits=[]",
]


def compose(*overrides):
    """conf/ composed with `overrides` as the app composes it: the typed, validated config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnn_jax.apps import CONF_DIR
    from rnn_jax.apps.train import to_config

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return to_config(hydra_compose("config", overrides=list(overrides)))
