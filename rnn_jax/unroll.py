"""Running a cell over a sequence with `jax.lax.scan`, or with its fused whole-sequence path."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import fused
from rnn_jax._checks import check_bool, check_choice, check_sequence, layout
from rnn_jax.cells import Cell
from rnn_jax.linear_cells import LINEAR_CELLS
from rnn_jax.linear_scan import SCANS, LinearEquations, choose, linear_sequence
from rnn_jax.scan import masked_scan, sequence_mask


def _param_dtype(params):
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return leaves[0].dtype if leaves else None


def _check_lengths(lengths, batch_shape, steps: int, time_major: bool):
    if tuple(jnp.shape(lengths)) != tuple(batch_shape):
        raise ValueError(
            f"lengths must have the batch shape of xs, {tuple(batch_shape)} (xs is {layout(time_major)}), "
            f"got shape {tuple(jnp.shape(lengths))}"
        )
    if not jnp.issubdtype(jnp.asarray(lengths).dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {jnp.asarray(lengths).dtype}")
    if not isinstance(lengths, jax.core.Tracer):  # values are checkable only outside jit
        values = np.asarray(lengths)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > steps:
            where = "xs.shape[0]" if time_major else "xs.shape[-2]"
            raise ValueError(f"lengths must lie in [0, T={steps}] (T is {where}), got values from {low} to {high}")


def _per_step(flags, name: str, xs, time_major: bool):
    """`flags` (`[T, *batch]`, or `[*batch, T]` batch-major, as `xs` in the caller's layout) as time-major
    booleans; None stays None."""
    if flags is None:
        return None
    if tuple(jnp.shape(flags)) != xs.shape[:-1]:
        raise ValueError(
            f"{name} must be {layout(time_major, '')} like xs without its last axis, {xs.shape[:-1]}, "
            f"got shape {tuple(jnp.shape(flags))}"
        )
    flags = jnp.asarray(flags)
    if flags.dtype != jnp.bool_:
        raise TypeError(f"{name} must be booleans, got dtype {flags.dtype}")
    return flags if time_major else jnp.moveaxis(flags, -1, 0)


def unroll(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: Optional[jax.Array] = None,
    mask: Optional[jax.Array] = None,
    resets: Optional[jax.Array] = None,
    reverse: bool = False,
    time_major: bool = True,
    unroll: Optional[int] = None,
    scan: str = "auto",
):
    """Runs `cell` over the sequence `xs`.

    Args:
      cell: any `Cell` (a `stack` is unrolled layer by layer).
      params: the cell's parameters.
      xs: `[T, *batch, input_size]` (time-major); `[*batch, T, input_size]` with
        `time_major=False`. Leading batch dimensions are optional.
      carry: the initial carry; zeros when None. Inputs and carry are cast to the parameters'
        dtype (bf16 parameters take float32 data).
      lengths: `[*batch]` integers in [0, T]; steps `t >= length` are padding: they leave the carry
        unchanged and their outputs are zero, so the final carry is the one after `length` steps.
        Values outside [0, T] are an error when `lengths` is concrete (under `jit` they cannot be seen).
      mask: `[T, *batch]` booleans (`[*batch, T]` batch-major); False marks padding steps anywhere,
        as `lengths` marks the tail. Both may be given: a step is real where both say so.
      resets: `[T, *batch]` booleans (`[*batch, T]` batch-major), True at the first step of each
        segment, for several sequences laid end to end in one row: the carry is set back to the
        initial carry (`carry`, or zeros) before that step is computed, inside the one scan. Marks
        on padding steps have no effect.
      reverse: run from the last step to the first (outputs stay in input order). With
        `lengths`, the padded tail is skipped first, so a reverse run starts at step length-1.
        With `resets`, each segment is run from its last step back to its first: the carry is set
        back before the last step of each segment, so a reversed run over packed segments equals
        each segment reversed alone.
      time_major: whether time is the first axis of `xs`, the outputs, `mask` and `resets`
        (True), or the axis before the features (False, as PyTorch's `batch_first` and Flax's
        `time_major=False`).
      unroll: how many steps `lax.scan` unrolls per loop iteration (a speed knob only). None: the
        cell's choice for its platform (Elman, LSTM and GRU: `rnn_jax.fused.BACKEND_DEFAULTS`), else 1.
      scan: for the linear-recurrence cells (`rnn_jax.linear_cells`), "sequential" (`lax.scan` of
        the step), "parallel" (`lax.associative_scan` of the whole sequence,
        `rnn_jax.linear_scan`; same results up to rounding, gradients by autodiff through it) or
        "auto" (the cell's own `options.scan`; where that is "auto" too, by sequence length, as
        measured for the cell's platform: `rnn_jax.linear_scan.AUTO_MIN_STEPS`). Other cells run
        sequentially; "parallel" is an error for them (in a `stack`, for any layer that is not a
        linear recurrence).

    Returns:
      `(final_carry, ys)` with `ys` of shape `[T, *batch, hidden_size]` (`[*batch, T, hidden_size]`
      batch-major).

    Raises:
      TypeError, ValueError: at trace time, naming the argument, for params or a carry that the
      cell's `init` and `initial_carry` would not make for `xs` (another kind of cell, another
      batch, hidden or input size), `lengths`, `mask` or `resets` of another shape and flags that
      are not bools.
    """
    check_bool(reverse, "reverse")
    check_choice(scan, "scan", SCANS)
    batch_shape = check_sequence(cell.init, cell.initial_carry, params, xs, carry, time_major)
    mask = _per_step(mask, "mask", xs, time_major)
    resets = _per_step(resets, "resets", xs, time_major)
    if not time_major:
        xs = jnp.moveaxis(xs, -2, 0)  # [T, *batch, input]
    if carry is None:
        carry = cell.initial_carry(batch_shape, _param_dtype(params))
    if lengths is not None:
        _check_lengths(lengths, batch_shape, xs.shape[0], time_major)
        by_length = sequence_mask(lengths, xs.shape[0], len(batch_shape))  # [T, *batch]
        mask = by_length if mask is None else mask & by_length

    if cell.layers:
        carries = []
        for layer, p, c in zip(cell.layers, params, carry):
            c, xs = unroll_layer(layer, p, xs, c, mask, resets, reverse, unroll, scan)
            carries.append(c)
        carry, ys = tuple(carries), xs
    else:
        carry, ys = unroll_layer(cell, params, xs, carry, mask, resets, reverse, unroll, scan)
    return carry, (ys if time_major else jnp.moveaxis(ys, 0, -2))


def unroll_layer(cell: Cell, params, xs, carry, mask, resets, reverse: bool, unroll: Optional[int], scan: str = "auto"):
    """One layer over the time-major sequence `xs`; `mask` and `resets` are `[T, *batch]` or None.

    A cell whose `equations` have a fused whole-sequence path (Elman, LSTM, GRU) runs through it
    when its `options` resolve to the fused backward on their platform; otherwise `lax.scan` of
    the plain step, with the input projection hoisted out of the loop as one `[T*B, I] x [I, G]`
    matmul or applied inside each step, as the platform's defaults say (a cell without `options`:
    hoisted, unroll 1 unless given). A linear-recurrence cell runs through the parallel scan
    when `scan` says so ("auto": `rnn_jax.linear_scan.choose`).
    """
    dtype = _param_dtype(params)
    if dtype is not None:  # a given carry follows the layer's parameters, as its inputs do
        carry = jax.tree.map(lambda c: c.astype(dtype), carry)
    opts = cell.options
    if isinstance(cell.equations, LinearEquations):
        if scan == "auto" and opts is not None:
            scan = opts.scan
        if choose(scan, xs.shape[0], None if opts is None else opts.platform) == "parallel":
            return linear_sequence(cell.equations, params, cell.project(params, xs), carry, mask, resets, reverse)
    elif scan == "parallel":
        names = ", ".join(LINEAR_CELLS)
        raise ValueError(f"scan='parallel' needs a linear-recurrence cell ({names}); this layer is not one")
    if opts is None:
        unroll, remat, hoist = unroll or 1, False, True
    else:
        sequence = fused.SEQUENCES.get(type(cell.equations))
        backward = opts.backward if sequence is not None else "autodiff"
        plan = fused.resolve(backward, unroll, opts.remat, opts.platform)
        if plan.backward == "fused":
            return sequence(cell, params, xs, carry, mask, resets, reverse, plan)
        unroll, remat, hoist = plan.unroll, opts.remat, plan.hoist
    if cell.project is not None and hoist:
        xs, step = cell.project(params, xs), cell.step  # [T, *batch, G]
    else:
        step = cell.apply
    return masked_scan(step, params, xs, carry, mask, resets=resets, reverse=reverse, unroll=unroll, remat=remat)
