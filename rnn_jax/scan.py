"""The plain recurrence: `lax.scan` of a step function over time, with padding and carry restarts.

These primitives know nothing of any particular cell. The cells (`rnn_jax.cells`) build their
steps from `matmul` and `ACTIVATIONS`; `rnn_jax.unroll` runs them with `masked_scan`; the
hand-written whole-sequence paths (`rnn_jax.fused`) share `keep` and `restarts` so that they
mean exactly what the plain scan means.

Two per-step boolean arrays, both `[T, *batch]` and both in input order, shape a run:

  * `mask`: False marks a padding step. It leaves the carry unchanged and outputs zeros.
  * `resets`: True marks the first step of a new segment (several sequences laid end to end in
    one row). The carry is set back to the initial carry of the run before that step is
    computed. With `reverse=True` each segment is run from its last step back to its first, so
    the carry is set back before the last step of each segment, i.e. before every step that
    precedes a mark. Marks on padding steps have no effect.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


def operand(w, dtype):
    """`w` cast to the matmul operand dtype (None: as it is), once, outside a loop."""
    return w if dtype is None else w.astype(dtype)


def matmul(a, b, dtype=None):
    """`a @ b` with operands cast to `dtype` (None: as they are), accumulated in `a`'s dtype."""
    if dtype is None:
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=a.dtype)


def keep(m, new, old):
    """`new` where the step is real (`m`), `old` on padding; `m` is `[*batch]` or None."""
    return new if m is None else jnp.where(m[..., None], new, old)


def restart(r, initial, carry):
    """`carry` with every leaf set back to `initial`'s where `r` (`[*batch]`, or None: nowhere)."""
    if r is None:
        return carry
    return jax.tree.map(lambda i, c: jnp.where(r[..., None], i, c), initial, carry)


def sequence_mask(lengths: Optional[jax.Array], steps: int, batch_ndim: int):
    """`[T, *batch]` booleans, True where `t < lengths`; None when `lengths` is None."""
    if lengths is None:
        return None
    t = jnp.arange(steps).reshape((-1,) + (1,) * batch_ndim)
    return t < jnp.expand_dims(jnp.asarray(lengths), 0)


def restarts(resets: Optional[jax.Array], mask: Optional[jax.Array], reverse: bool):
    """Where the carry is set back to the initial one before the step is computed, `[T, *batch]`,
    from the segment starts `resets` (see the module docstring); None when `resets` is None.

    Forward, a segment restarts at its first step. In reverse, the scan enters a segment at its
    last step, the step before the next mark (the final step needs none: the scan starts there
    from the initial carry). Marks on padding steps, and restarts of padding steps, are dropped.
    """
    if resets is None:
        return None
    r = jnp.asarray(resets, bool)
    if mask is not None:
        r = r & mask
    if reverse:
        r = jnp.concatenate([r[1:], jnp.zeros_like(r[:1])], axis=0)
        if mask is not None:
            r = r & mask
    return r


def masked_scan(step, params, xp, carry, mask=None, *, resets=None, reverse=False, unroll=1, remat=False):
    """The plain recurrence: `lax.scan` of `step(params, carry, xp_t) -> (carry, y)`, differentiated
    by autodiff.

    Args:
      step: one time step, `(params, carry, x) -> (new_carry, y)`.
      params: passed to every step.
      xp: `[T, *batch, ...]`, the per-step inputs.
      carry: the initial carry (leaves `[*batch, ...]`), also the one `resets` restarts from.
      mask: `[T, *batch]` booleans or None; padding steps (False) keep the carry and output zeros.
      resets: `[T, *batch]` booleans or None, segment starts in input order (module docstring).
      reverse, unroll: as in `lax.scan` (outputs stay in input order).
      remat: wrap the step in `jax.checkpoint`, so the backward pass recomputes each step's
        intermediates from its carry instead of storing them (less memory for long sequences,
        one more forward step of compute).

    Returns:
      `(final_carry, ys)` with `ys` `[T, *batch, ...]`.
    """
    if remat:
        step = jax.checkpoint(step, prevent_cse=False)  # prevent_cse is not needed inside scan
    initial = carry

    def body(carry, inp):
        x, m, r = inp
        carry = restart(r, initial, carry)
        new_carry, y = step(params, carry, x)
        new_carry = jax.tree.map(lambda n, o: keep(m, n, o), new_carry, carry)
        return new_carry, keep(m, y, jnp.zeros_like(y))

    r = restarts(resets, mask, reverse)
    return jax.lax.scan(body, carry, (xp, mask, r), reverse=reverse, unroll=unroll)
