"""Bidirectional layers: two cells over the same inputs, one forward and one backward in time.

    layer = bidirectional(lstm(32), lstm(32))
    params = layer.init(key, input_size)               # BidirectionalParams(fw, bw)
    carry, ys = layer.apply(params, xs, lengths=lengths)   # ys [T, *batch, 64]

As Flax's `nn.Bidirectional` and PyTorch's `bidirectional=True`: the backward direction reads
each sequence from its own last step (`lengths`) back to its first, and its outputs are put back
in input order before the two are merged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from rnn_jax._checks import check_sequence
from rnn_jax.cells import Cell
from rnn_jax.unroll import unroll


class BidirectionalParams(NamedTuple):
    fw: Any  # the forward cell's parameters
    bw: Any  # the backward cell's parameters


class BidirectionalCarry(NamedTuple):
    fw: Any  # the forward cell's carry; final: after each sequence's last step
    bw: Any  # the backward cell's carry; final: after step 0


def concatenate(y_fw, y_bw):
    """The default merge: `[..., H_fw + H_bw]`, forward features first (as Flax and PyTorch)."""
    return jnp.concatenate([y_fw, y_bw], axis=-1)


class Bidirectional(NamedTuple):
    """A bidirectional layer: pure functions and the cells they run.

    Attributes:
      init: `(key, input_size) -> BidirectionalParams`.
      initial_carry: `(batch_shape=(), dtype=None) -> BidirectionalCarry`, all zeros.
      apply: `(params, xs, carry=None, *, lengths=None, mask=None, resets=None, time_major=True,
        unroll=None, scan="auto") -> (BidirectionalCarry, ys)`, the keyword arguments as in `rnn_jax.unroll`
        (the backward direction runs with `reverse=True`); `ys` is `merge(ys_fw, ys_bw)`.
      output_size: the width of `ys`.
      fw, bw: the two cells.
      merge: `(ys_fw, ys_bw) -> ys`.
    """

    init: Callable[..., BidirectionalParams]
    initial_carry: Callable[..., BidirectionalCarry]
    apply: Callable[..., Any]
    output_size: int
    fw: Cell
    bw: Cell
    merge: Callable[[Any, Any], Any]


def bidirectional(cell_fw: Cell, cell_bw: Cell, merge: Callable[[Any, Any], Any] = concatenate) -> Bidirectional:
    """Runs `cell_fw` forward and `cell_bw` backward over the same inputs and merges their outputs.

    Args:
      cell_fw, cell_bw: any cells (a `stack` too); they may differ in kind and size.
      merge: `(ys_fw [..., H_fw], ys_bw [..., H_bw]) -> ys`, elementwise over time and batch;
        concatenation by default (e.g. `jnp.add` for a sum of equal-width directions).
    """
    if not isinstance(cell_fw, Cell) or not isinstance(cell_bw, Cell):
        raise TypeError(f"bidirectional needs two Cell, got {type(cell_fw).__name__} and {type(cell_bw).__name__}")
    if not callable(merge):
        raise TypeError(f"merge must be a function (ys_fw, ys_bw) -> ys, got {merge!r}")
    merged = jax.eval_shape(
        merge,
        jax.ShapeDtypeStruct((1, cell_fw.hidden_size), jnp.float32),
        jax.ShapeDtypeStruct((1, cell_bw.hidden_size), jnp.float32),
    )

    def init(key, input_size: int) -> BidirectionalParams:
        k_fw, k_bw = jax.random.split(key)
        return BidirectionalParams(cell_fw.init(k_fw, input_size), cell_bw.init(k_bw, input_size))

    def initial_carry(batch_shape: Sequence[int] = (), dtype=None) -> BidirectionalCarry:
        return BidirectionalCarry(cell_fw.initial_carry(batch_shape, dtype), cell_bw.initial_carry(batch_shape, dtype))

    def apply(
        params: BidirectionalParams,
        xs,
        carry: Optional[BidirectionalCarry] = None,
        *,
        lengths=None,
        mask=None,
        resets=None,
        time_major: bool = True,
        unroll: Optional[int] = None,
        scan: str = "auto",
    ):
        check_sequence(init, initial_carry, params, xs, carry, time_major)  # params.fw, ... named in its errors
        fw, bw = (None, None) if carry is None else carry
        options = dict(lengths=lengths, mask=mask, resets=resets, time_major=time_major, unroll=unroll, scan=scan)
        fw, ys_fw = _unroll(cell_fw, params.fw, xs, fw, reverse=False, **options)
        bw, ys_bw = _unroll(cell_bw, params.bw, xs, bw, reverse=True, **options)
        return BidirectionalCarry(fw, bw), merge(ys_fw, ys_bw)

    return Bidirectional(init, initial_carry, apply, merged.shape[-1], cell_fw, cell_bw, merge)


_unroll = unroll  # `apply`'s argument `unroll` shadows the function
