"""Linear-recurrence cells: minGRU, minLSTM (Feng et al. 2024), LRU (Orvieto et al. 2023) and
RG-LRU (De et al. 2024).

In each of them the gates and candidate read the input alone, so a step is an affine map of the
carry, `h' = a(x) * h + b(x)`, and a whole sequence can be computed by a parallel scan
(`rnn_jax.linear_scan`) as well as step by step. Each factory returns a `Cell` like those of
`rnn_jax.cells`: `project` computes everything that depends on `x` (one matmul over the sequence),
`step` is the recurrence, and `equations` is a `LinearEquations` that `unroll(..., scan=...)`
reads to run the sequence by `lax.scan` ("sequential") or `lax.associative_scan` ("parallel").
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from rnn_jax._checks import add_last, as_input, check_choice, check_positive_int
from rnn_jax.cells import Cell, _initializers, _speed_options, _zeros_carry
from rnn_jax.linear_scan import SCANS, ComplexPair, LinearEquations, linear_step


class MinGRUParams(NamedTuple):
    w: jax.Array  # [I, 2H], in the order z, h
    b: jax.Array  # [2H]


class MinLSTMParams(NamedTuple):
    w: jax.Array  # [I, 3H], in the order f, i, h
    b: jax.Array  # [3H]


class LRUParams(NamedTuple):
    nu_log: jax.Array  # [H], |lambda| = exp(-exp(nu_log))
    theta_log: jax.Array  # [H], arg(lambda) = exp(theta_log)
    b_re: jax.Array  # [I, H], B's real part
    b_im: jax.Array  # [I, H], B's imaginary part
    c_re: jax.Array  # [H, H], C's real part (state -> output)
    c_im: jax.Array  # [H, H], C's imaginary part
    d: jax.Array  # [I, H], the skip connection D


class RGLRUParams(NamedTuple):
    w_in: jax.Array  # [I, H], the input to the recurrence's width
    b_in: jax.Array  # [H]
    w_g: jax.Array  # [H, 2H], gates in the order r (recurrence), i (input)
    b_g: jax.Array  # [2H]
    lam: jax.Array  # [H], a = sigmoid(lam)


def positive(x):
    """Feng et al. 2024, Appendix (log-space minGRU/minLSTM): `g(x) = x + 0.5` for `x >= 0`,
    `sigmoid(x)` below; continuous, increasing and positive, so the state stays positive."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def _dense_params(key, input_size, gates, hidden_size, init, dtype):
    """`w [I, G*H]`, `b [G*H]` of a linear layer, scaled by fan-in as PyTorch's `nn.Linear`."""
    check_positive_int(input_size, "input_size")
    k_w, k_b = jax.random.split(key)
    return init(k_w, (input_size, gates * hidden_size), dtype, input_size), init(
        k_b, (gates * hidden_size,), dtype, input_size
    )


def _times_last(x, v):
    """`x * v` for `v [n]` against `x [..., n]`, explicit about the broadcast (as `add_last`)."""
    return x * jnp.reshape(v, (1,) * (x.ndim - 1) + (-1,))


def _project(params, x):
    x = as_input(x, params.w)
    return add_last(x @ params.w, params.b)  # [*batch, G*H]


def _identity_output(params, h, xp):
    return h


def _linear_cell(init, initial_carry, project, eqs: LinearEquations, hidden_size: int, platform, scan) -> Cell:
    def step(params, carry, xp):
        return linear_step(eqs, params, carry, xp)

    def apply(params, carry, x):
        return step(params, carry, project(params, x))

    check_choice(scan, "scan", SCANS)
    options = _speed_options("auto", False, None, platform)._replace(scan=scan)  # no fused path: "auto" is autodiff
    return Cell(init, initial_carry, apply, hidden_size, project, step, (), eqs, options)


def _check_positive_candidate(value):
    if not isinstance(value, bool):
        raise TypeError(f"positive_candidate must be a bool, got {value!r}")


def _min_cell(params_type, gates, coefficients, hidden_size, positive_candidate, init, dtype, platform, scan) -> Cell:
    """What minGRU and minLSTM share: `gates` input projections of width H in one dense layer
    (`params_type(w [I, gates*H], b [gates*H])`), `coefficients(params, xp) -> (a, b)` of
    `h' = a * h + b`, and `y = h`."""
    check_positive_int(hidden_size, "hidden_size")
    _check_positive_candidate(positive_candidate)
    init_fn, _ = _initializers(init, None)

    def init_params(key, input_size: int):
        return params_type(*_dense_params(key, input_size, gates, hidden_size, init_fn, dtype))

    eqs = LinearEquations(coefficients, _identity_output)
    return _linear_cell(init_params, _zeros_carry(hidden_size), _project, eqs, hidden_size, platform, scan)


def mingru(
    hidden_size: int,
    *,
    positive_candidate: bool = True,
    init: str = "pytorch",
    dtype=None,
    platform: Optional[str] = None,
    scan: str = "auto",
) -> Cell:
    """minGRU (Feng et al. 2024, "Were RNNs all we needed?", arXiv 2410.01201, Sec. 3.1.3):

        z_t = sigmoid(x_t @ w_z + b_z)
        h~_t = g(x_t @ w_h + b_h)            (positive_candidate=False: without g)
        h_t = (1 - z_t) * h_{t-1} + z_t * h~_t,   y_t = h_t

    `g` is the Appendix's positive map (`positive`), which the log-space form of the parallel
    scan needs; here the scan runs in linear space, so `g` is optional (kept by default as in the
    paper's log-space models). Gates and candidate read `x_t` only: the parallel scan applies.

    Args:
      hidden_size: H. init: initialiser of `w`, `b` (fan-in scaled). dtype: parameter dtype.
      platform: the backend whose measured `scan="auto"` choice applies; None: JAX's default.
      scan: how `unroll` runs a sequence of this cell by default: "sequential" (`lax.scan`),
        "parallel" (`lax.associative_scan`) or "auto" (by length; `rnn_jax.linear_scan.choose`).
    """

    def coefficients(params, xp):
        k_z, k_h = jnp.split(xp, 2, axis=-1)
        candidate = positive(k_h) if positive_candidate else k_h
        return jax.nn.sigmoid(-k_z), jax.nn.sigmoid(k_z) * candidate  # 1 - z, z * h~

    return _min_cell(MinGRUParams, 2, coefficients, hidden_size, positive_candidate, init, dtype, platform, scan)


def minlstm(
    hidden_size: int,
    *,
    positive_candidate: bool = True,
    init: str = "pytorch",
    dtype=None,
    platform: Optional[str] = None,
    scan: str = "auto",
) -> Cell:
    """minLSTM (Feng et al. 2024, arXiv 2410.01201, Sec. 3.2.3), with the normalised gates:

        f_t = sigmoid(x_t @ w_f + b_f),  i_t = sigmoid(x_t @ w_i + b_i)
        f'_t = f_t / (f_t + i_t),        i'_t = i_t / (f_t + i_t)
        h~_t = g(x_t @ w_h + b_h)        (positive_candidate=False: without g)
        h_t = f'_t * h_{t-1} + i'_t * h~_t,   y_t = h_t

    Args as `mingru`.
    """

    def coefficients(params, xp):
        k_f, k_i, k_h = jnp.split(xp, 3, axis=-1)
        f, i = jax.nn.sigmoid(k_f), jax.nn.sigmoid(k_i)
        candidate = positive(k_h) if positive_candidate else k_h
        return f / (f + i), i / (f + i) * candidate

    return _min_cell(MinLSTMParams, 3, coefficients, hidden_size, positive_candidate, init, dtype, platform, scan)


def lru(
    hidden_size: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    *,
    dtype=None,
    platform: Optional[str] = None,
    scan: str = "auto",
) -> Cell:
    """Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting recurrent neural networks for long
    sequences", arXiv 2303.06349, Sec. 3, Eq. (7) with the exponential parameterisation of 3.3):

        lambda = exp(-exp(nu_log) + i * exp(theta_log))        (complex, diagonal)
        gamma = sqrt(1 - |lambda|^2)                          (normalisation, Sec. 3.4)
        h_t = lambda * h_{t-1} + gamma * (x_t @ B)            (h complex, [H])
        y_t = Re(h_t @ C) + x_t @ D

    The carry is `ComplexPair(re, im)`. `gamma` is computed from `lambda` (the paper also trains it
    as a free parameter from this value). `D` is a dense `[I, H]` matrix, since the input and
    output widths may differ (the paper's is diagonal, for equal widths). Initialisation as the
    paper's: `|lambda|` uniform on the ring [r_min, r_max] of the complex plane, phase uniform in
    [0, max_phase]; `B` ~ N(0, 1/(2I)) per part, `C` ~ N(0, 1/H) per part, `D` ~ N(0, 1/I).

    Args:
      hidden_size: H, the number of complex state units and the output width.
      r_min, r_max: 0 <= r_min < r_max <= 1, the ring of initial eigenvalue moduli.
      max_phase: the largest initial eigenvalue phase (radians).
      dtype: parameter dtype. platform, scan: as in `mingru`.
    """
    check_positive_int(hidden_size, "hidden_size")
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"r_min and r_max must satisfy 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be positive, got {max_phase}")
    H = hidden_size

    def init_params(key, input_size: int) -> LRUParams:
        check_positive_int(input_size, "input_size")
        k1, k2, kb1, kb2, kc1, kc2, kd = jax.random.split(key, 7)
        u1, u2 = jax.random.uniform(k1, (H,), dtype), jax.random.uniform(k2, (H,), dtype)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)

        def normal(k, shape, fan):
            return jax.random.normal(k, shape, dtype) / math.sqrt(fan)

        return LRUParams(
            nu_log,
            theta_log,
            normal(kb1, (input_size, H), 2 * input_size),
            normal(kb2, (input_size, H), 2 * input_size),
            normal(kc1, (H, H), H),
            normal(kc2, (H, H), H),
            normal(kd, (input_size, H), input_size),
        )

    def initial_carry(batch_shape: Sequence[int] = (), dtype=None) -> ComplexPair:
        zeros = jnp.zeros((*tuple(batch_shape), H), dtype)
        return ComplexPair(zeros, zeros)

    def project(params: LRUParams, x):
        x = as_input(x, params.b_re)
        return x @ jnp.concatenate([params.b_re, params.b_im, params.d], axis=1)  # [*batch, 3H]: Bx re, im, Dx

    def coefficients(params: LRUParams, xp):
        bx_re, bx_im, _ = jnp.split(xp, 3, axis=-1)
        modulus, phase = jnp.exp(-jnp.exp(params.nu_log)), jnp.exp(params.theta_log)
        gamma = jnp.sqrt(-jnp.expm1(-2 * jnp.exp(params.nu_log)))  # sqrt(1 - |lambda|^2)
        a = ComplexPair(
            jnp.broadcast_to(modulus * jnp.cos(phase), bx_re.shape),
            jnp.broadcast_to(modulus * jnp.sin(phase), bx_im.shape),
        )
        return a, ComplexPair(_times_last(bx_re, gamma), _times_last(bx_im, gamma))

    def output(params: LRUParams, h: ComplexPair, xp):
        dx = jnp.split(xp, 3, axis=-1)[2]
        return h.re @ params.c_re - h.im @ params.c_im + dx

    eqs = LinearEquations(coefficients, output, complex=True)
    return _linear_cell(init_params, initial_carry, project, eqs, H, platform, scan)


def rglru(
    hidden_size: int,
    c: float = 8.0,
    *,
    init: str = "pytorch",
    dtype=None,
    platform: Optional[str] = None,
    scan: str = "auto",
) -> Cell:
    """Real-Gated Linear Recurrent Unit (De et al. 2024, "Griffin", arXiv 2402.19427, Sec. 2.4,
    Eqs. (1)-(6)), on the input projected to the hidden width, `u_t = x_t @ w_in + b_in`:

        r_t = sigmoid(u_t @ w_r + b_r)                  (1) recurrence gate
        i_t = sigmoid(u_t @ w_i + b_i)                  (2) input gate
        a_t = a^(c * r_t),  a = sigmoid(lam)            (3), (6): log a_t = -c * softplus(-lam) * r_t
        h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * u_t)    (4)
        y_t = h_t                                       (5)

    `lam` is initialised so that `a^c` is uniform in [0.9, 0.999] (Sec. 2.4); the gate weights are
    dense `[H, 2H]` (Griffin's are block-diagonal, a speed choice).

    Args:
      hidden_size: H. c: the constant of Eq. (6), 8 in the paper. init: initialiser of the dense
        weights (fan-in scaled). dtype: parameter dtype. platform, scan: as in `mingru`.
    """
    check_positive_int(hidden_size, "hidden_size")
    if not c > 0:
        raise ValueError(f"c must be positive, got {c}")
    init_fn, _ = _initializers(init, None)
    H = hidden_size

    def init_params(key, input_size: int) -> RGLRUParams:
        k_in, k_g, k_a = jax.random.split(key, 3)
        w_in, b_in = _dense_params(k_in, input_size, 1, H, init_fn, dtype)
        w_g, b_g = _dense_params(k_g, H, 2, H, init_fn, dtype)
        a = jax.random.uniform(k_a, (H,), dtype, 0.9, 0.999) ** (1.0 / c)  # a^c ~ U[0.9, 0.999]
        return RGLRUParams(w_in, b_in, w_g, b_g, jnp.log(a) - jnp.log1p(-a))

    def project(params: RGLRUParams, x):
        x = as_input(x, params.w_in)
        u = add_last(x @ params.w_in, params.b_in)  # [*batch, H]
        return jnp.concatenate([u, add_last(u @ params.w_g, params.b_g)], axis=-1)  # [*batch, 3H]: u, r, i

    def coefficients(params: RGLRUParams, xp):
        u, k_r, k_i = jnp.split(xp, 3, axis=-1)
        log_a = _times_last(-c * jax.nn.sigmoid(k_r), jax.nn.softplus(-params.lam))  # c * r_t * log a
        return jnp.exp(log_a), jnp.sqrt(-jnp.expm1(2 * log_a)) * jax.nn.sigmoid(k_i) * u

    eqs = LinearEquations(coefficients, _identity_output)
    return _linear_cell(init_params, _zeros_carry(H), project, eqs, H, platform, scan)


LINEAR_CELLS = {"mingru": mingru, "minlstm": minlstm, "lru": lru, "rglru": rglru}
