"""Rigorous affine arithmetic (zonotopes) in float64, batched: the sets the proofs push through a cell.

An affine form `Form(c, G, e)` of width d stands for the set of vectors

    { c + G eps + diag(e) delta :  eps in [-1, 1]^m,  delta in [-1, 1]^d }

with `eps` shared by every form of one computation (the generators of the set being pushed: they
carry the correlations, so a contracting map shrinks the set instead of wrapping it in a box) and
`delta` a fresh, arbitrary bounded error per entry (nothing is assumed about how errors of two
forms relate, so using a form twice is sound). Shapes: c `[B, d]`, G `[B, d, m]`, e `[B, d]`.

Soundness. Every operation returns a form that contains the exact real image of every point of
its arguments' sets (the *true* real-number result, with the float64 weights read as exact
reals). Floating-point results are kept as they come out (round to nearest, IEEE 754 binary64)
and every rounding error is bounded and added to `e`:

- A single +, -, x, / of floats is exact up to half an ulp, so the true value lies between the
  computed one's `np.nextafter` neighbours; `_up`/`_down` step one ulp outward (this holds for
  subnormal results too; a flush-to-zero result is off by less than 2.3e-308 < `TINY`).
- A sum of k products (a matrix product, whatever the order of summation or use of FMA) is
  within `gamma_k sum|a_i b_i|`, gamma_k = k u / (1 - k u), u = 2^-53 (Higham, *Accuracy and
  Stability of Numerical Algorithms*, 2nd ed., eq. 3.5); `_bound(x, k)` turns a nonnegative
  quantity computed in floats from k terms into an upper bound of its exact value
  (x (1 + 4(k + 2) u) + (k + 2) TINY, which covers the k roundings of its own computation).
  Rounding errors of the new center and generators are bounded by `_bound` of
  `2 (k + 2) u |.|`-terms; this is Rump's midpoint-radius interval arithmetic (BIT 39, 1999).
- tanh and the logistic sigmoid: f(x) = lam x + g(x) with lam the chord slope
  (f(u) - f(l)) / (u - l) of the input interval [l, u], computed in floats (any lam is sound: only
  the range of g is claimed). g is smooth, so its extremes on [l, u] lie at l, u or where
  f'(x) = lam, i.e. at +-x0 (f' is even and unimodal); x0 comes from a formula without
  cancellation with an error delta below 1e-12 (1 + |x0|), and since |g'| <= sup|f''| |x - x0|
  <= |x - x0| near x0, g at the computed point is within delta^2 < 1e-15 (`CRITICAL_ALLOWANCE`)
  of its true extreme. g at each candidate is bounded with one ulp outward per operation, and
  f's values from NumPy's libm tanh/exp are widened by `FUNC_MARGIN` (1e-13 relative + 1e-300
  absolute, hundreds of ulp; `tests/test_verification.py` checks the margin against mpmath at
  50 digits on 10^4 points, saturated ones included). This is the chord ("parallelogram")
  relaxation; for a saturating unit it keeps about half the error of the minimum-slope one of
  DeepZ (Singh et al., NeurIPS 2018) and keeps the unit's correlation with the set.
- ReLU: f(x) - lam x is piecewise linear with a kink at 0, so its range is spanned by its values
  at l, u and 0 (when 0 is inside), for any lam.
- Products: (x0 + a)(y0 + b) = x0 y0 + x0 b + y0 a + a b with |a b| <= rad(x) rad(y).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnn_jax.verification.network import Arith, sigmoid

U = 2.0**-53  # unit roundoff of float64
TINY = 1e-300  # covers underflow (and flush-to-zero) of one operation
FUNC_MARGIN = 1e-13  # relative widening of libm's tanh / exp results
CRITICAL_ALLOWANCE = 1e-15  # covers f - lam x at a computed rather than exact critical point (see `act`)


class Form(NamedTuple):
    c: np.ndarray  # [B, d] center
    G: np.ndarray  # [B, d, m] generators (shared noise symbols)
    e: np.ndarray  # [B, d] >= 0: independent error radius


def _up(x):
    return np.nextafter(x, np.inf)


def _down(x):
    return np.nextafter(x, -np.inf)


def _bound(x, k: int):
    """An upper bound of the exact value of a nonnegative quantity `x` computed in floats from `k`
    terms (sums of products, any order)."""
    return x * (1.0 + 4.0 * (k + 2) * U) + (k + 2) * TINY


def _err(magnitude, k: int):
    """Bound on the rounding error of results computed from `k` terms each whose absolute values
    sum to `magnitude` (summed over entries, if it is a row sum): 2 (k + 2) u |.| >= gamma_k |.|
    with a factor 2 to spare for the rounding of `magnitude`'s own computation."""
    return _bound(2.0 * (k + 2) * U * magnitude, k)


def _plus(*xs):
    """An upper bound of the sum of nonnegative floats (one ulp up per addition)."""
    total = xs[0]
    for x in xs[1:]:
        total = _up(total + x)
    return total


def radius(x: Form):
    """Upper bound of max |value - c| per entry, `[B, d]`."""
    m = x.G.shape[-1]
    return _plus(_bound(np.abs(x.G).sum(-1), m), x.e)


def interval(x: Form):
    """`(lo, hi)`, rigorous bounds of every entry, `[B, d]` each."""
    r = radius(x)
    return _down(x.c - r), _up(x.c + r)


def point(v: np.ndarray, m: int = 0) -> Form:
    """The exact values `v` `[B, d]` as a form with `m` (zero) generators."""
    v = np.asarray(v, np.float64)
    return Form(v, np.zeros(v.shape + (m,)), np.zeros(v.shape))


def _generators(x: Form, m: int) -> np.ndarray:
    """`x.G` widened to `m` generators (a constant has none; new noise symbols come last)."""
    pad = m - x.G.shape[-1]
    if pad == 0:
        return x.G
    return np.concatenate([x.G, np.zeros(x.G.shape[:-1] + (pad,))], axis=-1)


def _common(x: Form, y: Form):
    m = max(x.G.shape[-1], y.G.shape[-1])
    return _generators(x, m), _generators(y, m)


def linear(x: Form, w: np.ndarray, b) -> Form:
    """`x @ w + b` (`w` `[d, d']`, or `[B, d, d']`: a matrix per row; `b` `[d']` or None: exact
    float64 constants)."""
    d = w.shape[-2]
    aw = np.abs(w)
    if w.ndim == 2:
        times = np.matmul
        G = np.swapaxes(np.swapaxes(x.G, -1, -2) @ w, -1, -2)  # [B, d', m]
    else:  # the same sums of d products, one matrix per row
        times = lambda v, m: np.einsum("bd,bde->be", v, m)
        G = np.einsum("bdm,bde->bem", x.G, w)
    c = times(x.c, w)
    magnitude = times(np.abs(x.c), aw)
    if b is not None:
        c = c + b
        magnitude = magnitude + np.abs(b)
    g_abs = _bound(np.abs(x.G).sum(-1), x.G.shape[-1])  # [B, d] >= rowsum |G|
    e = _plus(_bound(times(x.e, aw), d), _err(magnitude, d + 1), _err(times(g_abs, aw), d))
    return Form(c, G, e)


def add(x: Form, y: Form) -> Form:
    gx, gy = _common(x, y)
    c, G = x.c + y.c, gx + gy
    m = G.shape[-1]
    return Form(c, G, _plus(x.e, y.e, _err(np.abs(c), 1), _err(_bound(np.abs(G).sum(-1), m), 1)))


def neg(x: Form) -> Form:
    return Form(-x.c, -x.G, x.e)


def sub(x: Form, y: Form) -> Form:
    return add(x, neg(y))


def mul(x: Form, y: Form) -> Form:
    """Elementwise product; the product of the two deviations goes into the error."""
    gx, gy = _common(x, y)
    c = x.c * y.c
    G = x.c[..., None] * gy + y.c[..., None] * gx
    m = G.shape[-1]
    rx, ry = radius(x), radius(y)
    magnitude_g = _bound((np.abs(x.c[..., None] * gy) + np.abs(y.c[..., None] * gx)).sum(-1), m)
    e = _plus(_up(np.abs(x.c) * y.e), _up(np.abs(y.c) * x.e), _up(rx * ry), _err(np.abs(c), 1), _err(magnitude_g, 2))
    return Form(c, G, e)


def _scale_shift(x: Form, lam, lo_g, hi_g) -> Form:
    """`lam * x + [lo_g, hi_g]` (elementwise), rigorous."""
    mid = 0.5 * (lo_g + hi_g)
    half = np.maximum(_up(hi_g - mid), _up(mid - lo_g))
    c = lam * x.c + mid
    G = lam[..., None] * x.G
    m = G.shape[-1]
    e = _plus(_up(lam * x.e), half, _err(np.abs(lam * x.c) + np.abs(mid), 2), _err(_bound(np.abs(G).sum(-1), m), 1))
    return Form(c, G, e)


def _critical(name: str, lam):
    """The two points +-x0 where f'(x0) = lam (`lam` inside f's range of slopes; else 0, a harmless
    extra candidate), without cancellation: tanh' = 1 - t^2 = lam at x0 = log(1 + t) - log(lam) / 2,
    t = sqrt(1 - lam); sigmoid' = lam at x0 = 2 log(1 + r) - log(4 lam), r = sqrt(1 - 4 lam)."""
    top = 1.0 if name == "tanh" else 0.25
    inside = (lam > 0) & (lam < top)
    safe = np.where(inside, lam, 0.5 * top)
    if name == "tanh":
        x0 = np.log1p(np.sqrt(1.0 - safe)) - 0.5 * np.log(safe)
    else:
        x0 = 2.0 * np.log1p(np.sqrt(1.0 - 4.0 * safe)) - np.log(4.0 * safe)
    x0 = np.where(inside, x0, 0.0)
    return x0, -x0


def _widen(v, lower: bool):
    """`v` (a libm result) moved outward by `FUNC_MARGIN` relative + `TINY` absolute."""
    delta = FUNC_MARGIN * np.abs(v) + TINY
    return _down(v - delta) if lower else _up(v + delta)


def _slope(name: str, t):
    """f'(t) without cancellation: 1 / cosh^2 t, or e^-|t| / (1 + e^-|t|)^2."""
    if name == "tanh":
        q = np.exp(-2.0 * np.abs(t))  # 1/cosh^2 t = 4 q / (1 + q)^2
        return 4.0 * q / (1.0 + q) ** 2
    q = np.exp(-np.abs(t))
    return q / (1.0 + q) ** 2


def act(name: str, x: Form) -> Form:
    """`tanh`, `sigmoid` or `relu` of every entry (see the module docstring for the bounds)."""
    lo, hi = interval(x)
    if name == "relu":
        lam = np.clip(np.where(hi > lo, hi / np.where(hi > lo, hi - lo, 1.0), 1.0), 0.0, 1.0)
        lam = np.where(lo >= 0, 1.0, np.where(hi <= 0, 0.0, lam))
        points = [lo, hi, np.clip(0.0, lo, hi)]
        g_lo = np.min([_down(np.maximum(p, 0.0) - _up(lam * p)) for p in points], axis=0)
        g_hi = np.max([_up(np.maximum(p, 0.0) - _down(lam * p)) for p in points], axis=0)
        return _scale_shift(x, lam, g_lo, g_hi)
    f = np.tanh if name == "tanh" else sigmoid
    wide = hi - lo > 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        chord = np.where(wide, (f(hi) - f(lo)) / np.where(wide, hi - lo, 1.0), _slope(name, lo))
    lam = np.where(np.isfinite(chord), chord, 0.0)  # any slope is sound: the range of f - lam x is bounded below
    points = [lo, hi] + [np.clip(p, lo, hi) for p in _critical(name, lam)]
    g_lo = np.min([_down(_widen(f(p), lower=True) - _up(lam * p)) for p in points], axis=0)  # one ulp outward per op
    g_hi = np.max([_up(_widen(f(p), lower=False) - _down(lam * p)) for p in points], axis=0)
    allowance = np.where(lam > 0, CRITICAL_ALLOWANCE, 0.0)  # the critical points are computed, not exact
    g_lo, g_hi = _down(g_lo - allowance), _up(g_hi + allowance)
    return _scale_shift(x, lam, g_lo, g_hi)


def cols(x: Form, start: int, stop: int) -> Form:
    return Form(x.c[..., start:stop], x.G[..., start:stop, :], x.e[..., start:stop])


def concat(xs: list) -> Form:
    m = max(x.G.shape[-1] for x in xs)
    return Form(
        np.concatenate([x.c for x in xs], axis=-1),
        np.concatenate([_generators(x, m) for x in xs], axis=-2),
        np.concatenate([x.e for x in xs], axis=-1),
    )


def absorb(x: Form) -> Form:
    """The same set with its independent errors turned into new generators (one per entry), so
    that later linear maps act on them as on the rest of the set instead of boxing them."""
    B, d = x.c.shape
    fresh = np.zeros((B, d, d))
    fresh[:, np.arange(d), np.arange(d)] = x.e
    return Form(x.c, np.concatenate([x.G, fresh], axis=-1), np.zeros_like(x.e))


def shift(x: Form, v: np.ndarray) -> Form:
    """`x + v` for exact constants `v` `[d]` (or `[B, d]`, one per row)."""
    c = x.c + v
    return Form(c, x.G, _plus(x.e, _err(np.abs(c), 1)))


AFFINE = Arith(
    const=lambda v: point(v),
    linear=linear,
    add=add,
    sub=sub,
    mul=mul,
    act=act,
    cols=cols,
    concat=concat,
)
