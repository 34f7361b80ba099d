"""Running a cell over a sequence with `jax.lax.scan`, or with its fused whole-sequence path."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import fused
from rnn_jax.cells import Cell
from rnn_jax.scan import masked_scan, sequence_mask


def _param_dtype(params):
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else None


def _check_lengths(lengths, batch_shape, steps: int):
    if tuple(jnp.shape(lengths)) != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape of xs, {tuple(batch_shape)} (xs is [T, *batch, input]), "
            f"got shape {tuple(jnp.shape(lengths))}"
        )
    if not jnp.issubdtype(jnp.asarray(lengths).dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {jnp.asarray(lengths).dtype}")
    if not isinstance(lengths, jax.core.Tracer):  # values are checkable only outside jit
        values = np.asarray(lengths)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > steps:
            raise ValueError(f"lengths must lie in [0, T={steps}] (T is xs.shape[0]), got values from {low} to {high}")


def unroll(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: Optional[jax.Array] = None,
    reverse: bool = False,
    unroll: Optional[int] = None,
):
    """Runs `cell` over the time-major sequence `xs`.

    Args:
      cell: any `Cell` (a `stack` is unrolled layer by layer).
      params: the cell's parameters.
      xs: `[T, *batch, input_size]`; leading batch dimensions are optional.
      carry: the initial carry; zeros when None. Inputs and carry are cast to the parameters'
        dtype (bf16 parameters take float32 data).
      lengths: `[*batch]` integers in [0, T]; steps `t >= length` are padding: they leave the carry
        unchanged and their outputs are zero, so the final carry is the one after `length` steps.
        Values outside [0, T] are an error when `lengths` is concrete (under `jit` they cannot be seen).
      reverse: run from the last step to the first (outputs stay in input order). With
        `lengths`, the padded tail is skipped first, so a reverse run starts at step length-1.
      unroll: how many steps `lax.scan` unrolls per loop iteration (a speed knob only). None: the
        cell's choice for its platform (Elman, LSTM and GRU: `rnn_jax.fused.BACKEND_DEFAULTS`), else 1.

    Returns:
      `(final_carry, ys)` with `ys` of shape `[T, *batch, hidden_size]`.
    """
    if xs.ndim < 2:
        raise ValueError(f"xs must be [T, *batch, input_size] (time-major), got shape {tuple(xs.shape)}")
    batch_shape = xs.shape[1:-1]
    if carry is None:
        carry = cell.initial_carry(batch_shape, _param_dtype(params))
    if lengths is not None:
        _check_lengths(lengths, batch_shape, xs.shape[0])
    mask = sequence_mask(lengths, xs.shape[0], len(batch_shape))  # [T, *batch] or None

    if cell.layers:
        carries = []
        for layer, p, c in zip(cell.layers, params, carry):
            c, xs = unroll_layer(layer, p, xs, c, mask, reverse, unroll)
            carries.append(c)
        return tuple(carries), xs
    return unroll_layer(cell, params, xs, carry, mask, reverse, unroll)


def unroll_layer(cell: Cell, params, xs, carry, mask, reverse: bool, unroll: Optional[int]):
    """One layer over the sequence.

    A cell whose `equations` have a fused whole-sequence path (Elman, LSTM, GRU) runs through it
    when its `options` resolve to the fused backward on their platform; otherwise `lax.scan` of
    the plain step, with the input projection hoisted out of the loop as one `[T*B, I] x [I, G]`
    matmul or applied inside each step, as the platform's defaults say (a cell without `options`:
    hoisted, unroll 1 unless given).
    """
    dtype = _param_dtype(params)
    if dtype is not None:  # a given carry follows the layer's parameters, as its inputs do
        carry = jax.tree.map(lambda c: c.astype(dtype), carry)
    opts = cell.options
    if opts is None:
        unroll, remat, hoist = unroll or 1, False, True
    else:
        sequence = fused.SEQUENCES.get(type(cell.equations))
        backward = opts.backward if sequence is not None else "autodiff"
        plan = fused.resolve(backward, unroll, opts.remat, opts.platform)
        if plan.backward == "fused":
            return sequence(cell, params, xs, carry, mask, reverse, plan)
        unroll, remat, hoist = plan.unroll, opts.remat, plan.hoist
    if cell.project is not None and hoist:
        xs, step = cell.project(params, xs), cell.step  # [T, *batch, G]
    else:
        step = cell.apply
    return masked_scan(step, params, xs, carry, mask, reverse=reverse, unroll=unroll, remat=remat)
