"""Recurrent cells as pure functions: Elman RNN, LSTM and GRU.

Every factory returns a `Cell`, a NamedTuple of pure functions over plain parameter pytrees:

    params = cell.init(key, input_size)
    carry = cell.initial_carry(batch_shape)
    carry, y = cell.apply(params, carry, x)     # the argument order lax.scan wants

`x` is `[*batch, input_size]`; any number of leading batch dimensions (or none) is allowed,
and `vmap` works as well. Each cell also exposes its step split in two, `project` (the part
that depends on the input alone, hoisted out of the time loop by `unroll` as one large matmul)
and `step` (the recurrence), with `apply(p, c, x) == step(p, c, project(p, x))`. All three
refuse, at trace time and in one line naming the argument, params or a carry that the cell's own
`init` and `initial_carry` would not make for `x` (`rnn_jax._checks`).

The cells are plain: their functions are the equations, nothing more. What a cell is and how it
may be run fast are data on the `Cell`: `equations` names the recurrence (`ElmanEquations`,
`LSTMEquations`, `GRUEquations`) and `options` holds the speed options (`SpeedOptions`). `unroll`
reads both and may hand a whole sequence to a hand-written implementation of the same equations
(`rnn_jax.fused`), which builds on this module, never the reverse.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from rnn_jax._checks import add_last, as_input, check_choice, check_params, check_positive_int, check_step
from rnn_jax.initializers import get_initializer
from rnn_jax.scan import ACTIVATIONS, matmul

BACKWARDS = ("auto", "fused", "autodiff")


class SpeedOptions(NamedTuple):
    """How `unroll` runs a cell over a sequence; the results are the same up to rounding.

    Attributes:
      platform: the backend whose measured defaults apply ("cpu", "gpu", "tpu"; a key of
        `rnn_jax.fused.BACKEND_DEFAULTS`, unknown ones take the GPU's).
      backward: "fused", "autodiff" or "auto" (see `lstm`).
      remat: `jax.checkpoint` each step of the plain scan.
      matmul_dtype: operand dtype of the matmuls, or None.
      scan: for the linear-recurrence cells, "sequential", "parallel" or "auto" (see
        `rnn_jax.unroll`'s `scan`, which overrides it when not "auto").
    """

    platform: str
    backward: str = "auto"
    remat: bool = False
    matmul_dtype: Any = None
    scan: str = "auto"


class ElmanEquations(NamedTuple):
    """`h' = act(x @ w_x + h @ w_h + b)` over `ElmanParams`."""

    activation: str = "tanh"


class LSTMEquations(NamedTuple):
    """The LSTM of `lstm` over `LSTMParams` and `LSTMCarry`; `h' = sigmoid(o) * tanh(c')`, or
    `sigmoid(o) * c'` without `output_tanh`."""

    output_tanh: bool = True


class GRUEquations(NamedTuple):
    """The GRU of `gru` over `GRUParams`."""


class Cell(NamedTuple):
    """A recurrent cell: pure functions and the sizes they were built for.

    Attributes:
      init: `(key, input_size) -> params`.
      initial_carry: `(batch_shape=(), dtype=None) -> carry`, all zeros.
      apply: `(params, carry, x) -> (new_carry, y)` for one time step.
      hidden_size: width of `y`.
      project: `(params, x) -> xp`, the input-only part of the step; works on any leading dims.
      step: `(params, carry, xp) -> (new_carry, y)`, the recurrent part.
      layers: for a `stack`, the cells it is made of (unrolled layer by layer); else `()`.
      equations: which recurrence `step` computes (`ElmanEquations`, `LSTMEquations`,
        `GRUEquations`), so that `unroll` may run a whole sequence of it through
        `rnn_jax.fused`; None for any other cell.
      options: `SpeedOptions`, or None: the plain scan with the projection hoisted out of the loop.
    """

    init: Callable[..., Any]
    initial_carry: Callable[..., Any]
    apply: Callable[..., Any]
    hidden_size: int
    project: Optional[Callable[..., Any]] = None
    step: Optional[Callable[..., Any]] = None
    layers: tuple = ()
    equations: Any = None
    options: Optional[SpeedOptions] = None


class ElmanParams(NamedTuple):
    w_x: jax.Array  # [I, H]
    w_h: jax.Array  # [H, H]
    b: Optional[jax.Array]  # [H] or None


class LSTMParams(NamedTuple):
    w_x: jax.Array  # [I, 4H], gates in the order i, f, g, o
    w_h: jax.Array  # [H, 4H]
    b: jax.Array  # [4H]


class LSTMCarry(NamedTuple):
    h: jax.Array  # [*batch, H]
    c: jax.Array  # [*batch, H]


class GRUParams(NamedTuple):
    w_x: jax.Array  # [I, 3H], gates in the order r, z, n
    w_h: jax.Array  # [H, 3H]
    b_x: jax.Array  # [3H], input-side biases
    b_hn: jax.Array  # [H], recurrent bias of the candidate, inside r * (.)


def _make_weights(key, input_size, hidden_size, gates, init, recurrent_init, dtype):
    check_positive_int(input_size, "input_size")
    k_x, k_h, k_b = jax.random.split(key, 3)
    w_x = init(k_x, (input_size, gates * hidden_size), dtype, hidden_size)
    w_h = recurrent_init(k_h, (hidden_size, gates * hidden_size), dtype, hidden_size)
    return w_x, w_h, k_b


def _zeros_carry(hidden_size):
    def initial_carry(batch_shape: Sequence[int] = (), dtype=None):
        return jnp.zeros((*tuple(batch_shape), hidden_size), dtype)

    return initial_carry


def _from_parts(init, initial_carry, project, step, hidden_size, equations, options) -> Cell:
    """The cell, its public functions checking their arguments (at trace time) against what `init`
    and `initial_carry` make."""

    def checked_project(params, x):
        check_params(init, params, jnp.shape(x))
        return project(params, x)

    def checked_step(params, carry, xp):
        check_step(init, initial_carry, params, carry, xp, projected=True)
        return step(params, carry, xp)

    def apply(params, carry, x):
        check_step(init, initial_carry, params, carry, x)
        return step(params, carry, project(params, x))

    return Cell(init, initial_carry, apply, hidden_size, checked_project, checked_step, (), equations, options)


def _speed_options(backward, remat, matmul_dtype, platform) -> SpeedOptions:
    """The speed options, `platform` None read once here as JAX's default backend (never while tracing)."""
    check_choice(backward, "backward", BACKWARDS)
    if remat and backward == "fused":
        raise ValueError("remat=True recomputes steps under autodiff; use backward='auto' or 'autodiff' with it")
    platform = jax.default_backend() if platform is None else platform
    if not isinstance(platform, str) or not platform:
        raise TypeError(f"platform must be a backend name such as 'cpu' or 'gpu', got {platform!r}")
    return SpeedOptions(platform, backward, remat, matmul_dtype)


def _initializers(init: str, recurrent_init: Optional[str]):
    return get_initializer(init, "init"), get_initializer(recurrent_init or init, "recurrent_init")


def elman(
    hidden_size: int,
    activation: str = "tanh",
    *,
    use_bias: bool = True,
    init: str = "pytorch",
    recurrent_init: Optional[str] = None,
    dtype=None,
    matmul_dtype=None,
    backward: str = "auto",
    remat: bool = False,
    platform: Optional[str] = None,
) -> Cell:
    """Elman RNN: `h' = act(x @ w_x + h @ w_h + b)`, `y = h'`.

    Args:
      hidden_size: number of hidden units H.
      activation: "tanh", "sigmoid" (the 2015 numpy RNN) or "relu".
      use_bias: whether `b` exists; without it `params.b` is None.
      init: initialiser of `w_x` and `b` (see `rnn_jax.initializers`); "uniform" is U[-1, 1).
      recurrent_init: initialiser of `w_h`; defaults to `init`.
      dtype: parameter dtype; None means JAX's default float.
      matmul_dtype, backward, remat, platform: speed options, as in `lstm` ("fused" is
        `rnn_jax.fused.elman_sequence`).
    """
    check_positive_int(hidden_size, "hidden_size")
    check_choice(activation, "activation", tuple(ACTIVATIONS))
    options = _speed_options(backward, remat, matmul_dtype, platform)
    act = ACTIVATIONS[activation]
    init_fn, rec_fn = _initializers(init, recurrent_init)

    def init_params(key, input_size: int) -> ElmanParams:
        w_x, w_h, k_b = _make_weights(key, input_size, hidden_size, 1, init_fn, rec_fn, dtype)
        b = init_fn(k_b, (hidden_size,), dtype, hidden_size) if use_bias else None
        return ElmanParams(w_x, w_h, b)

    def project(params: ElmanParams, x):
        x = as_input(x, params.w_x)
        xp = matmul(x, params.w_x, matmul_dtype)  # [*batch, H]
        return xp if params.b is None else add_last(xp, params.b)

    def step(params: ElmanParams, h, xp):
        h = act(xp + matmul(h, params.w_h, matmul_dtype))
        return h, h

    equations = ElmanEquations(activation)
    return _from_parts(init_params, _zeros_carry(hidden_size), project, step, hidden_size, equations, options)


def lstm(
    hidden_size: int,
    *,
    init: str = "pytorch",
    recurrent_init: Optional[str] = None,
    forget_bias: float = 1.0,
    output_tanh: bool = True,
    dtype=None,
    matmul_dtype=None,
    backward: str = "auto",
    remat: bool = False,
    platform: Optional[str] = None,
) -> Cell:
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with a forget gate).

        [i, f, g, o] = x @ w_x + h @ w_h + b
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')        (output_tanh=False: h' = sigmoid(o) * c')
        y = h'

    Same equations as Flax's `LSTMCell` (whose `hi`, `hf`, `hg`, `ho` biases are our `b`).
    Without `output_tanh` it is the LSTM of Nico Jimenez's 2014 numpy code (`h' = s' * o`), whose
    output is unbounded as the cell state is.

    Args:
      hidden_size: number of hidden units H; the carry is `LSTMCarry(h, c)`.
      init: initialiser of `w_x` and `b`.
      recurrent_init: initialiser of `w_h` (e.g. "orthogonal"); defaults to `init`.
      forget_bias: added to the initial forget-gate bias (1.0 as in Jozefowicz et al. 2015).
      output_tanh: squash the cell state by `tanh` before the output gate (the usual LSTM);
        False: `h' = sigmoid(o) * c'`.
      dtype: parameter dtype; None means JAX's default float.
      matmul_dtype: operand dtype of the matmuls (e.g. `jnp.bfloat16`), accumulated and combined
        with the state in the parameters' dtype; None: the parameters' dtype.
      backward: how gradients of a whole sequence are computed by `unroll`: "fused" (the
        hand-written backward of `rnn_jax.fused`, one weight-gradient matmul over all steps),
        "autodiff" (`jax.grad` of the plain scan; the one to use for forward-mode `jax.jvp`), or
        "auto" (the faster one on the backend, `rnn_jax.fused.BACKEND_DEFAULTS`).
      remat: `jax.checkpoint` each step (autodiff): the backward recomputes a step's gates
        instead of storing them, for sequences too long to keep every step's intermediates.
      platform: the backend whose measured defaults `backward="auto"` and `unroll(...,
        unroll=None)` take ("cpu", "gpu", "tpu"); None: `jax.default_backend()`, read once here.
    """
    check_positive_int(hidden_size, "hidden_size")
    if not isinstance(output_tanh, bool):
        raise TypeError(f"output_tanh must be a bool, got {output_tanh!r}")
    options = _speed_options(backward, remat, matmul_dtype, platform)
    init_fn, rec_fn = _initializers(init, recurrent_init)
    H = hidden_size

    def init_params(key, input_size: int) -> LSTMParams:
        w_x, w_h, k_b = _make_weights(key, input_size, H, 4, init_fn, rec_fn, dtype)
        b = init_fn(k_b, (4 * H,), dtype, H)
        b = b.at[H : 2 * H].add(forget_bias)
        return LSTMParams(w_x, w_h, b)

    def initial_carry(batch_shape: Sequence[int] = (), dtype=None) -> LSTMCarry:
        zeros = jnp.zeros((*tuple(batch_shape), H), dtype)
        return LSTMCarry(zeros, zeros)

    def project(params: LSTMParams, x):
        x = as_input(x, params.w_x)
        return add_last(matmul(x, params.w_x, matmul_dtype), params.b)  # [*batch, 4H]

    def step(params: LSTMParams, carry: LSTMCarry, xp):
        z = xp + matmul(carry.h, params.w_h, matmul_dtype)
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * (jnp.tanh(c) if output_tanh else c)
        return LSTMCarry(h, c), h

    return _from_parts(init_params, initial_carry, project, step, H, LSTMEquations(output_tanh), options)


def gru(
    hidden_size: int,
    *,
    init: str = "pytorch",
    recurrent_init: Optional[str] = None,
    dtype=None,
    matmul_dtype=None,
    backward: str = "auto",
    remat: bool = False,
    platform: Optional[str] = None,
) -> Cell:
    """Gated recurrent unit (Cho et al. 2014), in the convention of Flax's `GRUCell` and cuDNN:

        r = sigmoid(x @ w_xr + b_xr + h @ w_hr)
        z = sigmoid(x @ w_xz + b_xz + h @ w_hz)
        n = tanh(x @ w_xn + b_xn + r * (h @ w_hn + b_hn))
        h' = (1 - z) * n + z * h
        y = h'

    Args:
      hidden_size: number of hidden units H.
      init: initialiser of `w_x` and the biases.
      recurrent_init: initialiser of `w_h`; defaults to `init`.
      dtype: parameter dtype; None means JAX's default float.
      matmul_dtype, backward, remat, platform: speed options, as in `lstm`.
    """
    check_positive_int(hidden_size, "hidden_size")
    options = _speed_options(backward, remat, matmul_dtype, platform)
    init_fn, rec_fn = _initializers(init, recurrent_init)
    H = hidden_size

    def init_params(key, input_size: int) -> GRUParams:
        w_x, w_h, k_b = _make_weights(key, input_size, H, 3, init_fn, rec_fn, dtype)
        k_bx, k_bh = jax.random.split(k_b)
        return GRUParams(w_x, w_h, init_fn(k_bx, (3 * H,), dtype, H), init_fn(k_bh, (H,), dtype, H))

    def project(params: GRUParams, x):
        x = as_input(x, params.w_x)
        return add_last(matmul(x, params.w_x, matmul_dtype), params.b_x)  # [*batch, 3H]

    def step(params: GRUParams, h, xp):
        x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(matmul(h, params.w_h, matmul_dtype), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * add_last(h_n, params.b_hn))
        h = (1.0 - z) * n + z * h
        return h, h

    return _from_parts(init_params, _zeros_carry(H), project, step, H, GRUEquations(), options)


def stack(cells: Sequence[Cell]) -> Cell:
    """Layers of cells as one cell: layer k reads layer k-1's output.

    Params and carry are tuples with one entry per layer. `unroll` runs a stack layer by layer,
    so each layer's input projection is hoisted out of its time loop.
    """
    cells = tuple(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise TypeError(f"stack needs a non-empty sequence of Cell, got {cells!r}")

    def init(key, input_size: int):
        keys = jax.random.split(key, len(cells))
        sizes = (input_size,) + tuple(c.hidden_size for c in cells[:-1])
        return tuple(c.init(k, n) for c, k, n in zip(cells, keys, sizes))

    def initial_carry(batch_shape: Sequence[int] = (), dtype=None):
        return tuple(c.initial_carry(batch_shape, dtype) for c in cells)

    def apply(params, carry, x):
        check_step(init, initial_carry, params, carry, x)
        new_carry = []
        for cell, p, c in zip(cells, params, carry):
            c, x = cell.apply(p, c, x)
            new_carry.append(c)
        return tuple(new_carry), x

    return Cell(init, initial_carry, apply, cells[-1].hidden_size, layers=cells)


# The linear-recurrence cells build on this module's `Cell`; they join the one registry here.
from rnn_jax.linear_cells import LINEAR_CELLS  # noqa: E402

CELLS = {"elman": elman, "lstm": lstm, "gru": gru, **LINEAR_CELLS}
