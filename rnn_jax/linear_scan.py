"""The linear recurrence `h_t = a_t * h_{t-1} + b_t` over a whole sequence at once, by
`jax.lax.associative_scan` (Blelloch 1990; the parallel path of minGRU, minLSTM, LRU, RG-LRU).

A step is the affine map `h -> a * h + b`; two steps compose into one,
`(a2, b2) o (a1, b1) = (a2 * a1, a2 * b1 + b2)`, which is associative, so all `T` prefixes come
out of `O(log T)` rounds of elementwise work instead of `T` dependent steps.

Padding, restarts and the initial carry become coefficients, so one scan covers them all, with the
meaning `rnn_jax.scan.masked_scan` gives them:

  * a padding step is the identity, `a = 1, b = 0` (the carry passes through unchanged);
  * a step that starts from the initial carry `h0` (the first step in scan order, and every
    restart of `rnn_jax.scan.restarts`) is `a = 0, b = a_t * h0 + b_t`: the running state is
    dropped and the step is applied to `h0` itself, so a nonzero initial carry is exact.

Coefficients are pytrees shaped like the carry. A complex recurrence (the LRU) keeps real and
imaginary parts as the two leaves of a `ComplexPair`, so that everything stays a real pytree.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax.scan import restarts

SCANS = ("auto", "sequential", "parallel")

AUTO_MIN_STEPS = {"cpu": None}
"""`scan="auto"` takes the parallel path from this many steps on, per platform; None: never.
Measured on the CPU with `python -m rnn_jax.bench preset=linear` (docs/parallel_cells.md): the
sequential scan was the faster at every length measured there. A platform not listed has no
measurement behind it and runs sequentially, the path every cell has."""


class ComplexPair(NamedTuple):
    """A complex array as two real ones (a real pytree for `lax.scan`, optimizers and checkpoints)."""

    re: jax.Array  # [*batch, H]
    im: jax.Array  # [*batch, H]


class LinearEquations(NamedTuple):
    """What a linear-recurrence cell computes, split as the parallel path needs it.

    Attributes:
      coefficients: `(params, xp) -> (a, b)`, each shaped like the carry: the step is
        `h' = a * h + b`. It reads the projected input `xp` only, never the carry.
      output: `(params, h', xp) -> y`, the step's output from its new carry.
      complex: whether the carry and coefficients are `ComplexPair`s multiplied as complex numbers.
    """

    coefficients: Callable[..., Any]
    output: Callable[..., Any]
    complex: bool = False


def multiply(a, h, complex: bool):
    """`a * h`, elementwise; complex for `ComplexPair`s."""
    if complex:
        return ComplexPair(a.re * h.re - a.im * h.im, a.re * h.im + a.im * h.re)
    return a * h


def _add(x, y):
    return jax.tree.map(jnp.add, x, y)


def linear_step(eqs: LinearEquations, params, h, xp):
    """One sequential step, `h' = a * h + b`, `y = output(h')`: the step of every linear cell."""
    a, b = eqs.coefficients(params, xp)
    h = _add(multiply(a, h, eqs.complex), b)
    return h, eqs.output(params, h, xp)


def choose(scan: str, steps: int, platform: Optional[str]) -> str:
    """ "sequential" or "parallel" for `scan` ("auto": by the measured length `AUTO_MIN_STEPS`)."""
    if scan != "auto":
        return scan
    threshold = AUTO_MIN_STEPS.get(platform)
    return "parallel" if threshold is not None and steps >= threshold else "sequential"


def _where(flags, x, y):
    """Per leaf `x` where `flags` (`[T, *batch]`) else `y`."""
    return jax.tree.map(lambda u, v: jnp.where(flags[..., None], u, v), x, y)


def _flip(tree):
    return jax.tree.map(lambda x: jnp.flip(x, 0), tree)


def linear_sequence(eqs: LinearEquations, params, xp, h0, mask=None, resets=None, reverse: bool = False):
    """The recurrence of `eqs` over the projected inputs `xp` (`[T, *batch, ...]`) in parallel.

    Args and results as `rnn_jax.scan.masked_scan(partial(linear_step, eqs), params, xp, h0, mask,
    resets=resets, reverse=reverse)`: `(final_carry, ys)`, `ys` zero on padding steps.
    """
    cplx = eqs.complex
    a, b = eqs.coefficients(params, xp)  # leaves [T, *batch, H]
    if mask is not None:  # padding passes the carry through
        one = ComplexPair(jnp.ones_like(a.re), jnp.zeros_like(a.im)) if cplx else jnp.ones_like(a)
        a, b = _where(mask, a, one), _where(mask, b, jax.tree.map(jnp.zeros_like, b))
    first = jnp.zeros(xp.shape[:-1], bool)  # [T, *batch]
    first = first.at[-1 if reverse else 0].set(True)
    r = restarts(resets, mask, reverse)
    start = first if r is None else first | r
    h0_t = jax.tree.map(lambda c, x: jnp.broadcast_to(c, x.shape), h0, b)  # [T, *batch, H]
    b = _where(start, _add(multiply(a, h0_t, cplx), b), b)
    a = _where(start, jax.tree.map(jnp.zeros_like, a), a)

    def compose(earlier, later):
        (a1, b1), (a2, b2) = earlier, later
        return multiply(a2, a1, cplx), _add(multiply(a2, b1, cplx), b2)

    elems = _flip((a, b)) if reverse else (a, b)
    _, hs = jax.lax.associative_scan(compose, elems, axis=0)
    hs = _flip(hs) if reverse else hs
    ys = eqs.output(params, hs, xp)
    if mask is not None:
        ys = jnp.where(mask[..., None], ys, 0)
    final = jax.tree.map(lambda h: h[0] if reverse else h[-1], hs)
    return final, ys
