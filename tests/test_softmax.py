"""The fused, chunked softmax cross-entropy against `log_softmax` + `take_along_axis` on the
whole logits, with the same weights; and the char-LM's loss and evaluation with either readout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax import softmax as sm
from rnn_jax.tasks.charlm.corpus import layout
from rnn_jax.tasks.charlm.model import Batch, char_lm, make_evaluate, make_loss, resolve_readout

N, H, V = 13, 4, 7  # 13 rows: most chunk sizes below leave a partial last chunk


def reference(h, w, b, targets):
    """The definition, on the whole [N, V] logits."""
    logits = h @ w + (0.0 if b is None else b[None, :])
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[:, None], axis=-1))


def problem(dtype, n=N, v=V, scale=1.0, seed=0):
    k_h, k_w, k_b, k_t = jax.random.split(jax.random.PRNGKey(seed), 4)
    h = scale * jax.random.normal(k_h, (n, H), dtype)
    w = jax.random.normal(k_w, (H, v), dtype)
    b = jax.random.normal(k_b, (v,), dtype)
    t = jax.random.randint(k_t, (n,), 0, v).at[0].set(0).at[1].set(v - 1)  # both ends of the vocabulary
    return h, w, b, t


def value_and_grads(loss, h, w, b, t):
    if b is None:
        return jax.value_and_grad(lambda h, w: loss(h, w, None, t), argnums=(0, 1))(h, w)
    return jax.value_and_grad(lambda h, w, b: loss(h, w, b, t), argnums=(0, 1, 2))(h, w, b)


CHUNKS = [1, 2, 5, 8, N, 64, None]  # 2, 5, 8 do not divide N; N and 64: one chunk


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("bias", [True, False])
def test_value_and_gradients_equal_the_reference_in_float64(x64, chunk, bias):
    h, w, b, t = problem(jnp.float64)
    b = b if bias else None
    want, want_g = value_and_grads(reference, h, w, b, t)
    got, got_g = value_and_grads(lambda *a: sm.softmax_cross_entropy(*a, chunk_size=chunk), h, w, b, t)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    for g, r in zip(got_g, want_g):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_value_and_gradients_equal_the_reference_in_float32(chunk):
    h, w, b, t = problem(jnp.float32)
    want, want_g = value_and_grads(reference, h, w, b, t)
    got, got_g = jax.jit(lambda *a: value_and_grads(lambda *x: sm.softmax_cross_entropy(*x, chunk_size=chunk), *a))(
        h, w, b, t
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, r in zip(got_g, want_g):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("readout", sorted(sm.READOUT_LOSSES))
def test_every_readout_equals_the_reference(readout):
    h, w, b, t = problem(jnp.float32)
    want, want_g = value_and_grads(reference, h, w, b, t)
    got, got_g = value_and_grads(sm.READOUT_LOSSES[readout], h, w, b, t)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, r in zip(got_g, want_g):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_the_value_alone_equals_the_value_with_gradients(x64):
    """Undifferentiated, the loss runs its own (loss-only) loop; the two agree."""
    h, w, b, t = problem(jnp.float64)
    alone = sm.softmax_cross_entropy(h, w, b, t, chunk_size=5)
    with_grads, _ = value_and_grads(lambda *a: sm.softmax_cross_entropy(*a, chunk_size=5), h, w, b, t)
    np.testing.assert_allclose(alone, with_grads, rtol=1e-14)
    np.testing.assert_allclose(alone, reference(h, w, b, t), rtol=1e-12)


def test_gradients_scale_with_the_cotangent(x64):
    """The gradients are computed with the loss; the backward pass must still apply the chain rule."""
    h, w, b, t = problem(jnp.float64)

    def outer(loss):
        return lambda h, w, b: 3.0 * loss(h, w, b, t) + loss(h, w, b, t) ** 2

    want = jax.grad(outer(reference), argnums=(0, 1, 2))(h, w, b)
    got = jax.grad(outer(lambda *a: sm.softmax_cross_entropy(*a, chunk_size=4)), argnums=(0, 1, 2))(h, w, b)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


def test_large_logits_stay_finite_and_exact():
    """Logits in the hundreds: the max-shifted exp neither overflows nor loses the loss."""
    h, w, b, t = problem(jnp.float32, scale=100.0)
    want, want_g = value_and_grads(reference, h, w, b, t)
    got, got_g = value_and_grads(lambda *a: sm.softmax_cross_entropy(*a, chunk_size=3), h, w, b, t)
    assert np.isfinite(float(got)) and float(want) > 10.0
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_g, want_g):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_bfloat16_matmuls_stay_close_to_float32():
    h, w, b, t = problem(jnp.float32, n=64, v=50)
    want, want_g = value_and_grads(reference, h, w, b, t)
    got, got_g = value_and_grads(
        lambda *a: sm.softmax_cross_entropy(*a, chunk_size=16, matmul_dtype=jnp.bfloat16), h, w, b, t
    )
    assert got.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in got_g)
    np.testing.assert_allclose(got, want, rtol=1e-2)
    for g, r in zip(got_g, want_g):  # bf16 keeps 8 bits: about 0.4% per operand
        assert float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r)) < 2e-2


def test_the_whole_logits_never_exist():
    """The compiled gradient holds one chunk of logits at a time: its scratch memory is a
    fraction of the [N, V] logits that the reference keeps for its backward pass."""
    n, v, chunk = 512, 2000, 32
    h, w, b, t = problem(jnp.float32, n=n, v=v)
    logits_bytes = n * v * 4

    def temp_bytes(loss):
        fn = jax.jit(lambda h, w, b: jax.grad(lambda *a: loss(*a, t), argnums=(0, 1, 2))(h, w, b))
        return fn.lower(h, w, b).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(reference) >= logits_bytes
    assert temp_bytes(lambda *a: sm.softmax_cross_entropy(*a, chunk_size=chunk)) < logits_bytes / 4


def test_default_chunk_size():
    assert sm.default_chunk_size(2500, 99) == 2500  # small vocabulary: one chunk
    c = sm.default_chunk_size(2500, 6041)
    assert c * 6041 <= 1.1 * sm.DEFAULT_CHUNK_ELEMENTS
    k = -(-2500 // c)
    assert k * c - 2500 < k  # near-equal chunks: less than one row of padding per chunk
    assert sm.default_chunk_size(100, 10**9) == 8  # at least 8 rows a chunk


def test_shape_errors_name_the_shapes():
    h, w, b, t = problem(jnp.float32)
    with pytest.raises(ValueError, match=r"w must be \[H, V\] with H = 4 .*got shape \(7, 4\)"):
        sm.softmax_cross_entropy(h, w.T, b, t)
    with pytest.raises(ValueError, match=r"b must be \[V\] = \(7,\) .*got shape \(6,\)"):
        sm.softmax_cross_entropy(h, w, b[:-1], t)
    with pytest.raises(ValueError, match="chunk_size"):
        sm.softmax_cross_entropy(h, w, b, t, chunk_size=0)


# The char-LM's loss and evaluation: the fused readout is the plain one, to rounding.


def tiny_lm(vocab=11):
    model = char_lm([rj.lstm(5), rj.lstm(6)], vocab, 3)
    return model, model.init(jax.random.PRNGKey(0))


def test_char_lm_loss_and_gradients_are_the_same_with_either_readout():
    model, params = tiny_lm()
    B, T = 3, 8
    k_i, k_t = jax.random.split(jax.random.PRNGKey(1))
    batch = Batch(
        jax.random.randint(k_i, (B, T), 0, 11), jax.random.randint(k_t, (B, T), 0, 11), model.initial_carry((B,)), None
    )
    results = {}
    for readout in ("plain", "fused"):
        loss_fn = make_loss(model, readout=readout, chunk_size=5)
        (loss, carry), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, batch)
        results[readout] = (loss, carry, grads)
    (l0, c0, g0), (l1, c1, g1) = results["plain"], results["fused"]
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves((c1, g1)), jax.tree.leaves((c0, g0))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_char_lm_evaluation_is_the_same_with_either_readout():
    model, params = tiny_lm()
    ids = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (3 * 8 * 4 + 1,), 0, 11), np.int32)
    streams = layout(ids, 3, 8)
    plain = jax.jit(make_evaluate(model, 8, readout="plain"))(params, streams)
    fused = jax.jit(make_evaluate(model, 8, readout="fused", chunk_size=7))(params, streams)
    np.testing.assert_allclose(fused, plain, rtol=1e-6)


def test_auto_readout_follows_the_vocabulary_size():
    from rnn_jax.tasks.charlm.model import FUSED_READOUT_MIN_VOCAB

    assert resolve_readout("auto", FUSED_READOUT_MIN_VOCAB) == "fused"
    assert resolve_readout("auto", FUSED_READOUT_MIN_VOCAB - 1) == "plain"
    assert resolve_readout("plain", 10**5) == "plain"
    with pytest.raises(ValueError, match="readout='softmax' is not allowed"):
        resolve_readout("softmax", 10)
