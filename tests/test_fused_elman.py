"""Elman's hand-written backward (`fused.elman_sequence`) against autodiff of the plain scan."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import init, jit, normal

import rnn_jax as rj
from rnn_jax import fused

T, B, I, H = 8, 3, 5, 4
VARIANTS = ((None, False), ((8, 5, 0), False), ((8, 5, 1), True))  # (lengths, reverse)


def outputs_and_grads(cell, params, xs, carry, lengths, reverse):
    def loss(params, xs, carry):
        final, ys = rj.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2), (final, ys)

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)
    return out, grads


@functools.partial(jit, static_argnums=(0, 1))
def both_backwards(fast, ref, params, xs, carry):
    """Outputs and gradients of both cells for every (lengths, reverse) variant, one program."""
    return [
        [
            outputs_and_grads(c, params, xs, carry, None if n is None else jnp.array(n), reverse)
            for n, reverse in VARIANTS
        ]
        for c in (fast, ref)
    ]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_fused_equals_autodiff(activation, x64):
    ref = rj.elman(H, activation, backward="autodiff")
    fast = rj.elman(H, activation, backward="fused")
    params = init(ref, I)
    xs = normal(1, (T, B, I))
    carry = 0.5 * jnp.ones((B, H))
    got, expected = both_backwards(fast, ref, params, xs, carry)
    for variant, g, e in zip(VARIANTS, got, expected):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=str(variant)), g, e)


def test_fused_unbatched_and_without_bias_matches_numpy_bptt(x64):
    """The 2015 network's case: one example, no bias, sigmoid; the gradient of w_h by hand."""
    cell = rj.elman(H, "sigmoid", use_bias=False, backward="fused")
    p = init(cell, 2)
    xs = jnp.asarray(np.random.default_rng(1).random((T, 2)) < 0.5, jnp.float64)
    g = jit(jax.grad(lambda p: jnp.sum(rj.unroll(cell, p, xs)[1])))(p)
    wx, wh = np.asarray(p.w_x), np.asarray(p.w_h)
    hs = [np.zeros(H)]
    for x in np.asarray(xs):
        hs.append(1 / (1 + np.exp(-(x @ wx + hs[-1] @ wh))))
    dh, dwh = np.zeros(H), np.zeros((H, H))
    for t in reversed(range(T)):
        dz = (dh + 1.0) * hs[t + 1] * (1 - hs[t + 1])
        dwh += np.outer(hs[t], dz)
        dh = dz @ wh.T
    np.testing.assert_allclose(g.w_h, dwh, rtol=1e-12)


def test_cpu_default_for_elman_is_the_fused_backward():
    assert fused.resolve("auto", None, backend="cpu").backward == "fused"
    assert fused.resolve("auto", None, remat=True, backend="cpu").backward == "autodiff"


def test_bf16_matmuls_stay_close():
    ref = rj.elman(16, backward="autodiff")
    fast = rj.elman(16, backward="fused", matmul_dtype=jnp.bfloat16)
    params = init(ref, I)
    xs = normal(1, (T, B, I))
    got, expected = jit(lambda p, xs, c: [outputs_and_grads(cell, p, xs, c, None, False) for cell in (fast, ref)])(
        params, xs, jnp.zeros((B, 16))
    )
    assert got[0][1].dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):  # within 2% in norm: bf16 keeps 8 bits
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b)
