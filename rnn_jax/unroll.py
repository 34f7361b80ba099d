"""Running a cell over a sequence with `jax.lax.scan`."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from rnn_jax.cells import Cell


def _param_dtype(params):
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else None


def _check_lengths(lengths, batch_shape):
    if tuple(jnp.shape(lengths)) != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape of xs, {tuple(batch_shape)} (xs is [T, *batch, input]), "
            f"got shape {tuple(jnp.shape(lengths))}"
        )
    if not jnp.issubdtype(jnp.asarray(lengths).dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {jnp.asarray(lengths).dtype}")


def unroll(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: Optional[jax.Array] = None,
    reverse: bool = False,
    unroll: int = 1,
):
    """Runs `cell` over the time-major sequence `xs`.

    Args:
      cell: any `Cell` (a `stack` is unrolled layer by layer).
      params: the cell's parameters.
      xs: `[T, *batch, input_size]`; leading batch dimensions are optional.
      carry: the initial carry; zeros (in the parameters' dtype) when None.
      lengths: `[*batch]` integers; steps `t >= length` are padding: they leave the carry
        unchanged and their outputs are zero, so the final carry is the one after `length` steps.
      reverse: run from the last step to the first (outputs stay in input order). With
        `lengths`, the padded tail is skipped first, so a reverse run starts at step length-1.
      unroll: how many steps `lax.scan` unrolls per loop iteration (a speed knob only).

    Returns:
      `(final_carry, ys)` with `ys` of shape `[T, *batch, hidden_size]`.
    """
    if xs.ndim < 2:
        raise ValueError(f"xs must be [T, *batch, input_size] (time-major), got shape {tuple(xs.shape)}")
    batch_shape = xs.shape[1:-1]
    if carry is None:
        carry = cell.initial_carry(batch_shape, _param_dtype(params))
    mask = None
    if lengths is not None:
        _check_lengths(lengths, batch_shape)
        t = jnp.arange(xs.shape[0]).reshape((-1,) + (1,) * len(batch_shape))
        mask = t < jnp.expand_dims(jnp.asarray(lengths), 0)  # [T, *batch]

    if cell.layers:
        carries = []
        for layer, p, c in zip(cell.layers, params, carry):
            c, xs = unroll_layer(layer, p, xs, c, mask, reverse, unroll)
            carries.append(c)
        return tuple(carries), xs
    return unroll_layer(cell, params, xs, carry, mask, reverse, unroll)


def unroll_layer(cell: Cell, params, xs, carry, mask, reverse: bool, unroll: int):
    """One layer's scan; the input projection is hoisted out of the loop when the cell has one."""
    if cell.project is not None:
        inputs, step = cell.project(params, xs), cell.step  # one [T*B, I] x [I, G] matmul
    else:
        inputs, step = xs, cell.apply

    def body(carry, inp):
        x, m = inp
        new_carry, y = step(params, carry, x)
        if m is not None:
            keep = m[..., None]
            new_carry = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_carry, carry)
            y = jnp.where(keep, y, jnp.zeros_like(y))
        return new_carry, y

    return jax.lax.scan(body, carry, (inputs, mask), reverse=reverse, unroll=unroll)
