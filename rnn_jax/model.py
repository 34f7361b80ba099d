"""Readout layers and the sequence model: a cell (or stack) followed by a dense readout."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax._checks import add_last, as_input, check_choice, check_positive_int
from rnn_jax.cells import Cell
from rnn_jax.initializers import get_initializer
from rnn_jax.unroll import unroll as unroll_cell

OUTPUT_ACTIVATIONS = {
    None: lambda z: z,
    "identity": lambda z: z,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": jax.nn.softmax,
}


class DenseParams(NamedTuple):
    w: jax.Array  # [in, out]
    b: Optional[jax.Array]  # [out] or None


class Dense(NamedTuple):
    """`y = x @ w + b`: `init(key, in_size) -> DenseParams`, `apply(params, x) -> y`."""

    init: Callable[..., DenseParams]
    apply: Callable[..., jax.Array]
    out_size: int


def dense(out_size: int, *, use_bias: bool = True, init: str = "pytorch", dtype=None) -> Dense:
    """A dense layer over the last axis; `init` names the initialiser (fan-in scaled for "pytorch")."""
    check_positive_int(out_size, "out_size")
    init_fn = get_initializer(init, "init")

    def init_params(key, in_size: int) -> DenseParams:
        check_positive_int(in_size, "in_size")
        k_w, k_b = jax.random.split(key)
        w = init_fn(k_w, (in_size, out_size), dtype, in_size)
        b = init_fn(k_b, (out_size,), dtype, in_size) if use_bias else None
        return DenseParams(w, b)

    def apply(params: DenseParams, x):
        y = as_input(x, params.w) @ params.w
        return y if params.b is None else add_last(y, params.b)

    return Dense(init_params, apply, out_size)


class ModelParams(NamedTuple):
    cell: Any
    readout: DenseParams


class SequenceModel(NamedTuple):
    """A cell and a readout applied at every step.

    `init(key, input_size) -> ModelParams`;
    `apply(params, xs, carry=None, *, lengths=None, mask=None, resets=None, time_major=True,
    unroll=None, scan="auto") -> (final_carry, outputs)` with `xs` `[T, *batch, input_size]` and outputs
    `[T, *batch, output_size]` after `output_activation` (the keyword arguments as in `unroll`);
    `logits(...)` is the same before the activation (what a numerically stable loss wants).
    """

    init: Callable[..., ModelParams]
    apply: Callable[..., Any]
    logits: Callable[..., Any]
    cell: Cell
    readout: Dense


def sequence_model(
    cell: Cell,
    output_size: int,
    *,
    readout_bias: bool = True,
    readout_init: str = "pytorch",
    output_activation: Optional[str] = None,
    dtype=None,
) -> SequenceModel:
    """Cell (or `stack`) -> dense readout -> output activation, at every time step.

    The 2015 numpy RNN that adds binary numbers is exactly
    `sequence_model(elman(16, "sigmoid", use_bias=False, init="uniform"), 1,
    readout_bias=False, readout_init="uniform", output_activation="sigmoid")`.
    """
    check_choice(output_activation, "output_activation", tuple(OUTPUT_ACTIVATIONS))
    readout = dense(output_size, use_bias=readout_bias, init=readout_init, dtype=dtype)
    out_act = OUTPUT_ACTIVATIONS[output_activation]

    def init(key, input_size: int) -> ModelParams:
        k_cell, k_out = jax.random.split(key)
        return ModelParams(cell.init(k_cell, input_size), readout.init(k_out, cell.hidden_size))

    def logits(params: ModelParams, xs, carry=None, **unroll_options):
        carry, hs = unroll_cell(cell, params.cell, xs, carry, **unroll_options)
        return carry, readout.apply(params.readout, hs)

    def apply(params: ModelParams, xs, carry=None, **unroll_options):
        carry, z = logits(params, xs, carry, **unroll_options)
        return carry, out_act(z)

    return SequenceModel(init, apply, logits, cell, readout)
