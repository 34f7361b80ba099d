"""rnn_jax cells inside Flax linen models.

    class Tagger(nn.Module):
        @nn.compact
        def __call__(self, xs, lengths):                  # xs [batch, T, input]
            hs = RNNModule(rj.lstm(64))(xs, seq_lengths=lengths)
            return nn.Dense(10)(hs)

`RNNModule` runs a whole sequence through `rnn_jax.unroll` (with its fused backward, masks and
resets); `RNNCellModule` is one step, a Flax `RNNCellBase`, for `nn.RNN`, `nn.Bidirectional` or a
hand-written loop. Both keep the cell's parameters as its own pytree (e.g. `LSTMParams`) under the
name "cell", so `variables["params"][...]["cell"]` can be passed straight to `cell.apply`.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax

from rnn_jax.cells import Cell
from rnn_jax.unroll import unroll


def _cell_params(module: nn.Module, cell: Cell, input_size: int):
    return module.param("cell", lambda key: cell.init(key, input_size))


class RNNCellModule(nn.RNNCellBase):
    """One step of an rnn_jax cell as a Flax linen RNN cell: `(carry, x) -> (carry, y)`.

    Attributes:
      cell: any `rnn_jax` `Cell` (its own dtype and initialisers apply).
    """

    cell: Cell

    @nn.compact
    def __call__(self, carry, x):
        params = _cell_params(self, self.cell, x.shape[-1])
        return self.cell.apply(params, carry, x)

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple) -> Any:
        """Zeros for inputs of shape `input_shape` (`[*batch, input_size]`); `rng` is unused."""
        return self.cell.initial_carry(tuple(input_shape[:-1]))

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNNModule(nn.Module):
    """An rnn_jax cell over a whole sequence as a Flax linen module, through `rnn_jax.unroll`.

    The arguments follow Flax's `nn.RNN`: batch-major by default (`time_major=False`: `xs` is
    `[*batch, T, input]`), `seq_lengths` `[*batch]`, `reverse` (outputs in input order, as
    `keep_order=True`), `return_carry`.

    Attributes:
      cell: any `rnn_jax` `Cell`.
      time_major, reverse, return_carry: as in `nn.RNN`.
      unroll: `lax.scan` unroll, None for the cell's platform default.
      scan: "sequential", "parallel" or "auto", as in `rnn_jax.unroll` (linear-recurrence cells).
    """

    cell: Cell
    time_major: bool = False
    reverse: bool = False
    return_carry: bool = False
    unroll: Optional[int] = None
    scan: str = "auto"

    @nn.compact
    def __call__(self, xs, *, initial_carry=None, seq_lengths=None, resets=None, mask=None):
        """`ys` (`[*batch, T, hidden]`, or time-major), or `(final_carry, ys)` with `return_carry`;
        `resets` and `mask` as in `rnn_jax.unroll`, in the module's time layout."""
        params = _cell_params(self, self.cell, xs.shape[-1])
        carry, ys = unroll(
            self.cell,
            params,
            xs,
            initial_carry,
            lengths=seq_lengths,
            mask=mask,
            resets=resets,
            reverse=self.reverse,
            time_major=self.time_major,
            unroll=self.unroll,
            scan=self.scan,
        )
        return (carry, ys) if self.return_carry else ys
