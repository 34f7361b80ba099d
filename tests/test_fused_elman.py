"""Elman's hand-written backward (`fused.elman_sequence`) against autodiff of the plain scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax import fused

T, B, I, H = 8, 3, 5, 4


def outputs_and_grads(cell, params, xs, carry, lengths, reverse):
    def loss(params, xs, carry):
        final, ys = rj.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final**2), (final, ys)

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(params, xs, carry)
    return out, grads


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("lengths, reverse", [(None, False), ((8, 5, 0), False), ((8, 5, 1), True)])
def test_fused_equals_autodiff(activation, lengths, reverse, x64):
    ref = rj.elman(H, activation, backward="autodiff")
    fast = rj.elman(H, activation, backward="fused")
    params = ref.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I))
    carry = 0.5 * jnp.ones((B, H))
    lengths = None if lengths is None else jnp.array(lengths)
    expected = outputs_and_grads(ref, params, xs, carry, lengths, reverse)
    got = outputs_and_grads(fast, params, xs, carry, lengths, reverse)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), got, expected)


def test_fused_unbatched_and_without_bias_matches_numpy_bptt(x64):
    """The 2015 network's case: one example, no bias, sigmoid; the gradient of w_h by hand."""
    cell = rj.elman(H, "sigmoid", use_bias=False, backward="fused")
    p = cell.init(jax.random.PRNGKey(0), 2)
    xs = jax.random.bernoulli(jax.random.PRNGKey(1), 0.5, (T, 2)).astype(jnp.float64)
    g = jax.grad(lambda p: jnp.sum(rj.unroll(cell, p, xs)[1]))(p)
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
    params = ref.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I))
    expected = outputs_and_grads(ref, params, xs, jnp.zeros((B, 16)), None, False)
    got = outputs_and_grads(fast, params, xs, jnp.zeros((B, 16)), None, False)
    assert got[0][1].dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):  # within 2% in norm: bf16 keeps 8 bits
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b)
