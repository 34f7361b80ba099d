"""Whole-sequence LSTM, GRU and Elman recurrences with a hand-written backward pass (`jax.custom_vjp`).

This is the fast path. It builds on the plain cells (`rnn_jax.cells`) and computes the same
equations: `unroll` hands a whole sequence to `SEQUENCES[type(cell.equations)]` when the cell's
`options` resolve to the fused backward on its platform (`resolve`, `BACKEND_DEFAULTS`).

Autodiff of a `lax.scan` keeps every intermediate of every step and, in the backward scan, forms
the recurrent weight gradient one `[H, B] x [B, G]` outer product per step. Here, as in cuDNN:

  * the forward scan saves only what the backward needs (gate activations, the previous state);
  * the reverse scan computes, per step, the gate-preactivation gradient `dz_t` and `dh_{t-1}`
    (one `[B, G] x [G, H]` matmul per step, the only sequential work);
  * the weight gradient is then a single large matmul over all `T * B` rows,
    `dw_h = h_prev[T*B, H]^T @ dz[T*B, G]`, and `dz` itself is the gradient of the projected
    input, so `dw_x` and `db` follow from the (hoisted) input projection by ordinary autodiff.

The functions take either the projected input `xp = x @ w_x + b` (`[T, *batch, G]`, projected
before the loop in one matmul), or the raw input `x` (`[T, *batch, I]`) with `proj=Projection(w_x,
b)`, projected inside each step of the forward scan (faster on XLA:CPU, which otherwise re-reads
each step's slice of the hoisted `xp` in several fusions); the backward then forms `dw_x`, `db` and
`dx` from the saved `dz` with whole-sequence matmuls. `mask` and `resets` (`[T, *batch]`, or
None) and `reverse` have `unroll`'s meaning (`rnn_jax.scan`): a restarted step's input carry is
the initial one, so the backward adds the gradient reaching it to the initial carry's.
`matmul_dtype` (e.g. `jnp.bfloat16`) is the operand dtype of every matmul; accumulation and the
state stay in the state's dtype. Reverse-mode only: these functions support `jax.grad`/`vjp`
(also of higher order), not `jax.jvp`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnn_jax._checks import add_last, as_input
from rnn_jax.cells import Cell, ElmanEquations, GRUEquations, LSTMCarry, LSTMEquations
from rnn_jax.scan import ACTIVATIONS, keep, matmul, operand, restart, restarts


class Defaults(NamedTuple):
    """What `backward="auto"` and `unroll=None` mean on one backend, chosen by measurement
    (`python -m rnn_jax.bench preset=unroll`, see docs/benchmarks.md)."""

    backward: str  # "fused" or "autodiff"
    fused_unroll: int  # lax.scan unroll of the fused forward and backward scans
    autodiff_unroll: int  # lax.scan unroll of the plain scan (also with remat)
    hoist: bool  # project all inputs before the loop (True) or inside each step (both backwards)


# CPU (XLA:CPU, 2 cores, B32 T128 H256, interleaved in one process, docs/benchmarks.md): the
# fused backward with the input projection inside each forward step and unroll 1 was the fastest
# training step (LSTM 1.2x the plain scan and Flax; unroll 2 and 4 slower); hoisting the [T, B, G]
# projection out of the loop made the loop's fusions re-read it and was slower (also for the plain
# scan). GPU: the fused backward with unroll 8 beat cuDNN in a prototype on an H100 (not measured
# by this benchmark yet). Elman (whose fused path always projects before the loop) on the CPU:
# the fused backward with unroll 1 was the fastest training step at every size measured,
# interleaved in one process: the 2015 network (H16, one example, f64) 10.4 vs 15.2 us/update
# for autodiff with the projection in the step and 11.7 for unroll 2; H16 B64 T8 with Adam 97 vs
# 168 us; B32 T128 H256 59 vs 71 ms.
BACKEND_DEFAULTS = {
    "cpu": Defaults("fused", 1, 1, False),
    "gpu": Defaults("fused", 8, 1, True),  # not yet measured (see MEASURED)
    "tpu": Defaults("fused", 8, 1, True),  # not yet measured (see MEASURED)
}
# Where each entry of BACKEND_DEFAULTS comes from; None: a guess, never measured on that backend.
# `python -m benchmarks.accelerator_check` prints the GPU entry's replacement from its bench rows.
MEASURED = {
    "cpu": "2026-11-27, python -m rnn_jax.bench (docs/benchmarks.md, How the CPU defaults were chosen)",
    "gpu": None,
    "tpu": None,
}


class Plan(NamedTuple):
    backward: str
    unroll: int
    hoist: bool


def resolve(backward: str, unroll: Optional[int], remat: bool = False, backend: Optional[str] = None) -> Plan:
    """The plan after filling in the defaults of `backend` (a key of `BACKEND_DEFAULTS`; unknown
    ones take the GPU's); remat implies autodiff. `unroll` passes each cell's own
    `options.platform`; `backend=None`, JAX's default backend, is for callers outside tracing."""
    d = BACKEND_DEFAULTS.get(backend or jax.default_backend(), BACKEND_DEFAULTS["gpu"])
    if remat or backward == "autodiff":
        return Plan("autodiff", unroll or d.autodiff_unroll, d.hoist)
    backward = d.backward if backward == "auto" else backward
    if backward == "fused":
        return Plan("fused", unroll or d.fused_unroll, d.hoist)
    return Plan("autodiff", unroll or d.autodiff_unroll, d.hoist)


class Projection(NamedTuple):
    """The input projection `x @ w + b` that the LSTM and GRU sequence functions apply inside each step."""

    w: jax.Array  # [I, G]
    b: jax.Array  # [G]


def _project(x, proj, matmul_dtype):
    """`x` itself when it is already projected (`proj` None), else `x @ proj.w + proj.b`."""
    return x if proj is None else add_last(matmul(x, proj.w, matmul_dtype), proj.b)


def _projection_grads(xs, dz, proj, matmul_dtype):
    """Gradients of `xs` and of `proj` (None when there is none) from `dz`, the gradient of the
    projected input, `[T, *batch, G]`: each one matmul or sum over all `T * batch` rows."""
    if proj is None:
        return dz, None
    dw = _weight_grad(xs, dz, matmul_dtype, proj.w.dtype)
    db = jnp.sum(_flat(dz), axis=0).astype(proj.b.dtype)
    w_t = operand(proj.w.T, matmul_dtype)
    return matmul(dz, w_t, matmul_dtype).astype(xs.dtype), Projection(dw, db)


def fused_inputs(project, params, xs, proj: Projection, hoist: bool):
    """What the fused sequence functions take: `(project(params, xs), None)`, the inputs projected
    before the loop, when the backend runs that faster (`hoist`); else `(xs, proj)`, projected
    inside each step."""
    if hoist:
        return project(params, xs), None  # [T, *batch, G]
    return as_input(xs, proj.w), proj


def _flat(a):
    return a.reshape(-1, a.shape[-1])


def _weight_grad(h_prev, dz, dtype, out_dtype):
    """`sum_t h_prev_t^T @ dz_t` as one `[H, T*B] x [T*B, G]` matmul."""
    a, b = _flat(h_prev), _flat(dz)
    if dtype is not None:
        a, b = a.astype(dtype), b.astype(dtype)
    return jnp.matmul(a.T, b, preferred_element_type=out_dtype).astype(out_dtype)


# ----------------------------------------------------------------------------------------- LSTM


class LSTMResiduals(NamedTuple):
    gates: jax.Array  # [T, *batch, 4H]: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
    c_prev: jax.Array  # [T, *batch, H], after any restart
    out_c: jax.Array  # [T, *batch, H]: what the output gate multiplies, tanh(c') or c'
    h_prev: jax.Array  # [T, *batch, H], after any restart


def _lstm_forward(w_h, xp, h0, c0, mask, proj, reverse, unroll, matmul_dtype, output_tanh, restart_at, save):
    w = operand(w_h, matmul_dtype)  # cast once, outside the loop

    def body(carry, inp):
        x, m, r = inp
        h, c = restart(r, (h0, c0), carry)
        z = _project(x, proj, matmul_dtype) + matmul(h, w, matmul_dtype)  # [*batch, 4H]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c_new = f * c + i * g
        out_c = jnp.tanh(c_new) if output_tanh else c_new
        h_new = o * out_c
        y = keep(m, h_new, jnp.zeros_like(h_new))
        res = LSTMResiduals(jnp.concatenate([i, f, g, o], axis=-1), c, out_c, h) if save else None
        return (keep(m, h_new, h), keep(m, c_new, c)), (y, res)

    (h, c), (ys, res) = jax.lax.scan(body, (h0, c0), (xp, mask, restart_at), reverse=reverse, unroll=unroll)
    return (h, c, ys), res


@partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def lstm_sequence(
    w_h, xp, h0, c0, mask, proj=None, reverse=False, unroll=1, matmul_dtype=None, output_tanh=True, resets=None
):
    """The LSTM recurrence over a whole sequence; returns `(h_T, c_T, ys)`.

    Args:
      w_h: `[H, 4H]` recurrent weights, gates i, f, g, o.
      xp: `[T, *batch, 4H]`, the projected input `x @ w_x + b`; with `proj`, the raw input
        `[T, *batch, I]`.
      h0, c0: `[*batch, H]`, the initial state, also the one `resets` restart from.
      mask: `[T, *batch]` booleans (False: padding, the state is kept and `y` is 0) or None.
      proj: `Projection(w_x [I, 4H], b [4H])` to apply inside each step, or None.
      reverse, unroll: as in `lax.scan`.
      matmul_dtype: operand dtype of the matmuls (None: the state's).
      output_tanh: `h' = sigmoid(o) * tanh(c')`; False: `h' = sigmoid(o) * c'`.
      resets: `[T, *batch]` booleans, the first step of each segment (`rnn_jax.scan`), or None.
    """
    r = restarts(resets, mask, reverse)
    return _lstm_forward(w_h, xp, h0, c0, mask, proj, reverse, unroll, matmul_dtype, output_tanh, r, save=False)[0]


def _lstm_fwd(w_h, xp, h0, c0, mask, proj, reverse, unroll, matmul_dtype, output_tanh, resets):
    r = restarts(resets, mask, reverse)
    out, res = _lstm_forward(w_h, xp, h0, c0, mask, proj, reverse, unroll, matmul_dtype, output_tanh, r, save=True)
    return out, (w_h, None if proj is None else xp, mask, r, proj, res)


def _lstm_bwd(reverse, unroll, matmul_dtype, output_tanh, saved, cotangents):
    w_h, xs, mask, restart_at, proj, res = saved
    dh_T, dc_T, dys = cotangents
    w_t = operand(w_h.T, matmul_dtype)  # [4H, H]

    def body(carry, inp):
        (dh, dc), to_initial = carry
        dy, rs, m, r = inp
        i, f, g, o = jnp.split(rs.gates, 4, axis=-1)
        dh_new = keep(m, dh + dy, jnp.zeros_like(dh))  # gradient reaching this step's h'
        dc_new = keep(m, dc, jnp.zeros_like(dc))
        d_out_c = dh_new * o  # gradient of out_c
        dc_tot = dc_new + (d_out_c * (1.0 - rs.out_c * rs.out_c) if output_tanh else d_out_c)
        dz = jnp.concatenate(
            [
                dc_tot * g * i * (1.0 - i),
                dc_tot * rs.c_prev * f * (1.0 - f),
                dc_tot * i * (1.0 - g * g),
                dh_new * rs.out_c * o * (1.0 - o),
            ],
            axis=-1,
        )  # [*batch, 4H]
        dh_in = matmul(dz, w_t, matmul_dtype) + keep(m, jnp.zeros_like(dh), dh)
        dc_in = dc_tot * f + keep(m, jnp.zeros_like(dc), dc)
        return _split_at_restarts(r, (dh_in, dc_in), to_initial), dz

    init = ((dh_T, dc_T), _no_gradient(restart_at, (dh_T, dc_T)))
    ((dh0, dc0), to_initial), dz = jax.lax.scan(
        body, init, (dys, res, mask, restart_at), reverse=not reverse, unroll=unroll
    )
    dh0, dc0 = _add(to_initial, (dh0, dc0))
    dw_h = _weight_grad(res.h_prev, dz, matmul_dtype, w_h.dtype)
    dxs, dproj = _projection_grads(xs, dz, proj, matmul_dtype)
    return dw_h, dxs, dh0, dc0, None, dproj, None


lstm_sequence.defvjp(_lstm_fwd, _lstm_bwd)


# ------------------------------------------------------------------------------------------ GRU


class GRUResiduals(NamedTuple):
    gates: jax.Array  # [T, *batch, 3H]: r, z, n (after their nonlinearities)
    a: jax.Array  # [T, *batch, H]: h @ w_hn + b_hn, what r multiplies
    h_prev: jax.Array  # [T, *batch, H], after any restart


def _gru_forward(w_h, b_hn, xp, h0, mask, proj, reverse, unroll, matmul_dtype, restart_at, save):
    w = operand(w_h, matmul_dtype)

    def body(h, inp):
        x, m, rs = inp
        h = restart(rs, h0, h)
        x_r, x_z, x_n = jnp.split(_project(x, proj, matmul_dtype), 3, axis=-1)
        h_r, h_z, h_n = jnp.split(matmul(h, w, matmul_dtype), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        a = add_last(h_n, b_hn)
        n = jnp.tanh(x_n + r * a)
        h_new = (1.0 - z) * n + z * h
        y = keep(m, h_new, jnp.zeros_like(h_new))
        res = GRUResiduals(jnp.concatenate([r, z, n], axis=-1), a, h) if save else None
        return keep(m, h_new, h), (y, res)

    h, (ys, res) = jax.lax.scan(body, h0, (xp, mask, restart_at), reverse=reverse, unroll=unroll)
    return (h, ys), res


@partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def gru_sequence(w_h, b_hn, xp, h0, mask, proj=None, reverse=False, unroll=1, matmul_dtype=None, resets=None):
    """The GRU recurrence (Flax/cuDNN convention) over a whole sequence; returns `(h_T, ys)`.

    Args:
      w_h: `[H, 3H]` recurrent weights, gates r, z, n.
      b_hn: `[H]`, the recurrent bias of the candidate, inside `r * (.)`.
      xp: `[T, *batch, 3H]`, the projected input `x @ w_x + b_x`; with `proj`, the raw input.
      h0: `[*batch, H]`.
      mask, proj, reverse, unroll, matmul_dtype, resets: as in `lstm_sequence` (`proj.b` is `b_x`).
    """
    r = restarts(resets, mask, reverse)
    return _gru_forward(w_h, b_hn, xp, h0, mask, proj, reverse, unroll, matmul_dtype, r, save=False)[0]


def _gru_fwd(w_h, b_hn, xp, h0, mask, proj, reverse, unroll, matmul_dtype, resets):
    r = restarts(resets, mask, reverse)
    out, res = _gru_forward(w_h, b_hn, xp, h0, mask, proj, reverse, unroll, matmul_dtype, r, save=True)
    return out, (w_h, None if proj is None else xp, mask, r, proj, res)


def _gru_bwd(reverse, unroll, matmul_dtype, saved, cotangents):
    w_h, xs, mask, restart_at, proj, res = saved
    dh_T, dys = cotangents
    w_t = operand(w_h.T, matmul_dtype)  # [3H, H]

    def body(carry, inp):
        dh, to_initial = carry
        dy, rs, m, restarted = inp
        r, z, n = jnp.split(rs.gates, 3, axis=-1)
        dh_new = keep(m, dh + dy, jnp.zeros_like(dh))
        dn = dh_new * (1.0 - z) * (1.0 - n * n)  # gradient of n's preactivation
        dr = dn * rs.a * r * (1.0 - r)
        dz = dh_new * (rs.h_prev - n) * z * (1.0 - z)
        da = dn * r
        dhh = jnp.concatenate([dr, dz, da], axis=-1)  # gradient of h @ w_h, [*batch, 3H]
        dh_in = matmul(dhh, w_t, matmul_dtype) + dh_new * z + keep(m, jnp.zeros_like(dh), dh)
        return _split_at_restarts(restarted, dh_in, to_initial), (dhh, dn)

    init = (dh_T, _no_gradient(restart_at, dh_T))
    (dh0, to_initial), (dhh, dn) = jax.lax.scan(
        body, init, (dys, res, mask, restart_at), reverse=not reverse, unroll=unroll
    )
    dh0 = _add(to_initial, dh0)
    dw_h = _weight_grad(res.h_prev, dhh, matmul_dtype, w_h.dtype)
    H = w_h.shape[0]
    db_hn = jnp.sum(_flat(dhh[..., 2 * H :]), axis=0)
    dxp = jnp.concatenate([dhh[..., : 2 * H], dn], axis=-1)  # r and z enter x and h alike
    dxs, dproj = _projection_grads(xs, dxp, proj, matmul_dtype)
    return dw_h, db_hn, dxs, dh0, None, dproj, None


gru_sequence.defvjp(_gru_fwd, _gru_bwd)


# ---------------------------------------------------------------------------------------- Elman

ACTIVATION_GRADS = {  # act'(z) from h = act(z)
    "tanh": lambda h: 1.0 - h * h,
    "sigmoid": lambda h: h * (1.0 - h),
    "relu": lambda h: (h > 0).astype(h.dtype),
}


def _elman_forward(w_h, xp, h0, mask, reverse, unroll, matmul_dtype, activation, restart_at):
    act = ACTIVATIONS[activation]
    w = operand(w_h, matmul_dtype)

    def body(h, inp):
        x, m, r = inp
        h = restart(r, h0, h)
        h_new = act(x + matmul(h, w, matmul_dtype))
        return keep(m, h_new, h), (keep(m, h_new, jnp.zeros_like(h_new)), h)

    h, (ys, h_prev) = jax.lax.scan(body, h0, (xp, mask, restart_at), reverse=reverse, unroll=unroll)
    return (h, ys), h_prev


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def elman_sequence(w_h, xp, h0, mask, reverse=False, unroll=1, matmul_dtype=None, activation="tanh", resets=None):
    """The Elman recurrence `h' = act(xp_t + h @ w_h)` over a whole sequence; returns `(h_T, ys)`.

    Args:
      w_h: `[H, H]`; xp: `[T, *batch, H]`, the projected input `x @ w_x + b`; h0: `[*batch, H]`.
      mask, reverse, unroll, matmul_dtype, resets: as in `lstm_sequence`.
      activation: "tanh", "sigmoid" or "relu".
    """
    r = restarts(resets, mask, reverse)
    return _elman_forward(w_h, xp, h0, mask, reverse, unroll, matmul_dtype, activation, r)[0]


def _elman_fwd(w_h, xp, h0, mask, reverse, unroll, matmul_dtype, activation, resets):
    r = restarts(resets, mask, reverse)
    (h, ys), h_prev = _elman_forward(w_h, xp, h0, mask, reverse, unroll, matmul_dtype, activation, r)
    return (h, ys), (w_h, mask, r, ys, h_prev)


def _elman_bwd(reverse, unroll, matmul_dtype, activation, saved, cotangents):
    w_h, mask, restart_at, ys, h_prev = saved
    dh_T, dys = cotangents
    grad = ACTIVATION_GRADS[activation]
    w_t = operand(w_h.T, matmul_dtype)

    def body(carry, inp):
        dh, to_initial = carry
        dy, y, m, r = inp
        dz = keep(m, (dh + dy) * grad(y), jnp.zeros_like(dh))  # padding: y is 0, dz is 0
        dh_in = matmul(dz, w_t, matmul_dtype) + keep(m, jnp.zeros_like(dh), dh)
        return _split_at_restarts(r, dh_in, to_initial), dz

    init = (dh_T, _no_gradient(restart_at, dh_T))
    (dh0, to_initial), dz = jax.lax.scan(body, init, (dys, ys, mask, restart_at), reverse=not reverse, unroll=unroll)
    dh0 = _add(to_initial, dh0)
    return _weight_grad(h_prev, dz, matmul_dtype, w_h.dtype), dz, dh0, None, None


elman_sequence.defvjp(_elman_fwd, _elman_bwd)


# -------------------------------------------------------------------------------------- restarts


def _no_gradient(restart_at, like):
    """The gradient gathered for the initial carry from restarted steps, zero so far; None (nothing
    to gather) without restarts."""
    return None if restart_at is None else jax.tree.map(jnp.zeros_like, like)


def _split_at_restarts(r, d_in, to_initial):
    """The gradient `d_in` reaching a step's input carry, split: where the step restarted (`r`),
    that carry was the initial one, so the gradient is added to `to_initial`; elsewhere it was the
    previous step's carry. Returns `(gradient of the previous carry, to_initial)`."""
    if r is None:
        return d_in, to_initial
    prev = jax.tree.map(lambda d: jnp.where(r[..., None], jnp.zeros_like(d), d), d_in)
    gathered = jax.tree.map(lambda a, d: a + jnp.where(r[..., None], d, jnp.zeros_like(d)), to_initial, d_in)
    return prev, gathered


def _add(to_initial, d):
    """The initial carry's gradient: what reached the start of the scan plus what restarts gathered."""
    return d if to_initial is None else jax.tree.map(jnp.add, to_initial, d)


# ------------------------------------------------------------------------- cells, whole sequences


def _elman(cell: Cell, params, xs, h, mask, resets, reverse, plan):
    xp = cell.project(params, xs)  # [T, *batch, H]; Elman's fused path always projects before the loop
    eq, opt = cell.equations, cell.options
    return elman_sequence(params.w_h, xp, h, mask, reverse, plan.unroll, opt.matmul_dtype, eq.activation, resets)


def _lstm(cell: Cell, params, xs, carry, mask, resets, reverse, plan):
    xp, proj = fused_inputs(cell.project, params, xs, Projection(params.w_x, params.b), plan.hoist)
    eq, opt = cell.equations, cell.options
    h, c, ys = lstm_sequence(
        params.w_h, xp, carry.h, carry.c, mask, proj, reverse, plan.unroll, opt.matmul_dtype, eq.output_tanh, resets
    )
    return LSTMCarry(h, c), ys


def _gru(cell: Cell, params, xs, h, mask, resets, reverse, plan):
    xp, proj = fused_inputs(cell.project, params, xs, Projection(params.w_x, params.b_x), plan.hoist)
    opt = cell.options
    return gru_sequence(params.w_h, params.b_hn, xp, h, mask, proj, reverse, plan.unroll, opt.matmul_dtype, resets)


SEQUENCES = {ElmanEquations: _elman, LSTMEquations: _lstm, GRUEquations: _gru}
"""The fused whole-sequence path for each kind of `Cell.equations`:
`(cell, params, xs [T, *batch, I], carry, mask, resets, reverse, plan) -> (final_carry, ys)`."""
