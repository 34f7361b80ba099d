"""The fast paths (hand-written backward, bf16 matmuls, remat, unroll) against the plain scan and
`jax.grad` of it, forward and gradients, over lengths, reverse and batch shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax import fused, scan

T, B, I, H = 8, 3, 5, 4
MAKERS = {"lstm": rj.lstm, "gru": rj.gru}


def run(cell, params, xs, carry, lengths=None, **kw):
    """Outputs and the gradient of a loss that reads every output and the final carry."""

    def loss(params, xs, carry, lengths):
        final, ys = rj.unroll(cell, params, xs, carry, lengths=lengths, **kw)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final)), (final, ys)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))  # one compile, no op-by-op
    (_, out), grads = grad(params, xs, carry, lengths)
    return out, grads


def setup(name, batch=(B,)):
    ref = MAKERS[name](H, backward="autodiff")
    params = ref.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, *batch, I))
    carry = jax.tree.map(lambda c: 0.5 * jnp.ones_like(c), ref.initial_carry(batch))
    return ref, params, xs, carry


def assert_trees_close(a, b, tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


def assert_trees_close_in_norm(a, b, tol):
    """Each leaf within `tol` of `b` relative to `b`'s norm: bf16 rounding spreads over every
    element, so an elementwise bound is either loose or brittle; a wrong gradient is off by O(1)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert np.linalg.norm(x - y) <= tol * np.linalg.norm(y), (np.linalg.norm(x - y), np.linalg.norm(y))


OPTIONS = {  # factory arguments, unroll, and the defaults to use as the CPU's (None: the real ones)
    "fused-unroll2": (dict(backward="fused"), 2, None),  # CPU: the projection inside the step
    "autodiff-unroll3": (dict(backward="autodiff"), 3, None),
    "remat": (dict(remat=True), None, None),
    "auto": (dict(), None, None),
    "gpu-defaults": (dict(), None, "gpu"),  # fused, unroll 8, the projection hoisted out of the loop
    "hoisted-plain-scan": (dict(backward="autodiff"), 2, "hoist"),
}


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("reverse, with_lengths", [(False, False), (True, True), (False, True)])
def test_fast_path_equals_plain_scan(name, option, reverse, with_lengths, monkeypatch):
    kwargs, unroll, defaults = OPTIONS[option]
    if defaults is not None:
        d = fused.BACKEND_DEFAULTS["gpu"] if defaults == "gpu" else fused.BACKEND_DEFAULTS["cpu"]._replace(hoist=True)
        monkeypatch.setitem(fused.BACKEND_DEFAULTS, "cpu", d)
    _, params, xs, carry = setup(name)
    cell = MAKERS[name](H, **kwargs)
    lengths = jnp.array([T, 5, 0]) if with_lengths else None
    got = run(cell, params, xs, carry, lengths=lengths, reverse=reverse, unroll=unroll)
    assert_trees_close(got, plain_reference(name, reverse, with_lengths), 1e-5)


@functools.lru_cache(maxsize=None)
def plain_reference(name, reverse, with_lengths):
    ref, params, xs, carry = setup(name)
    lengths = jnp.array([T, 5, 0]) if with_lengths else None
    return run(ref, params, xs, carry, lengths=lengths, reverse=reverse, unroll=1)  # CPU default: not hoisted


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_handles_any_batch_shape(name):
    cell = MAKERS[name](H, backward="fused")
    for batch in [(), (2, B)]:
        ref, params, xs, carry = setup(name, batch)
        assert_trees_close(run(cell, params, xs, carry), run(ref, params, xs, carry), 1e-5)


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_gradients_in_float64_match_autodiff_tightly(name):
    jax.config.update("jax_enable_x64", True)
    try:
        ref, params, xs, carry = setup(name)
        assert xs.dtype == jnp.float64
        cell = MAKERS[name](H, backward="fused")
        lengths = jnp.array([T, 2, 6])
        got = run(cell, params, xs, carry, lengths=lengths)
        want = run(ref, params, xs, carry, lengths=lengths)
        assert_trees_close(got, want, 1e-12)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("platform", ["cpu", "gpu"], ids=["projection-in-step", "projected"])
def test_lstm_without_output_tanh_fused_gradients_equal_autodiff(platform):
    """`h' = sigmoid(o) * c'`: the fused backward against autodiff, float64, over a stack of two such
    layers, lengths, forward and reverse, with the projection in the step (CPU defaults) and
    before the loop (GPU defaults)."""
    jax.config.update("jax_enable_x64", True)
    try:
        def make(backward):
            layer = functools.partial(rj.lstm, H, output_tanh=False, backward=backward, platform=platform)
            return rj.stack([layer(), layer()])

        ref, cell = make("autodiff"), make("fused")
        params = ref.init(jax.random.PRNGKey(0), I)
        xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I))
        carry = jax.tree.map(lambda c: 0.5 * jnp.ones_like(c), ref.initial_carry((B,), jnp.float64))
        lengths = jnp.array([T, 2, 6])
        for reverse in [False, True]:
            want = run(ref, params, xs, carry, lengths=lengths, reverse=reverse)
            assert_trees_close(run(cell, params, xs, carry, lengths=lengths, reverse=reverse), want, 1e-12)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("in_step", [False, True], ids=["projected", "projection-in-step"])
def test_lstm_sequence_vjp_equals_grad_of_the_plain_recurrence(in_step):
    """The custom VJP alone, on raw arrays, against `jax.vjp` of `masked_scan` over the cell's step
    (or `apply`, when the projection is inside the step)."""
    cell = rj.lstm(H, backward="autodiff")
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    params = cell.init(keys[4], I)
    xs = jax.random.normal(keys[0], (T, B, I if in_step else 4 * H))  # raw or projected input
    h0, c0 = jax.random.normal(keys[1], (B, H)), jax.random.normal(keys[2], (B, H))
    mask = jnp.arange(T)[:, None] < jnp.array([[T, 4, 1]])

    def plain(params, xs, h0, c0):
        step = cell.apply if in_step else cell.step
        (h, c), ys = scan.masked_scan(step, params, xs, rj.LSTMCarry(h0, c0), mask)
        return h, c, ys

    def custom(params, xs, h0, c0):
        proj = fused.Projection(params.w_x, params.b) if in_step else None
        return fused.lstm_sequence(params.w_h, xs, h0, c0, mask, proj)

    args = (params, xs, h0, c0)
    ct = jax.tree.map(lambda a: jax.random.normal(keys[3], a.shape), custom(*args))

    @jax.jit
    def out_and_vjp(args, ct):
        return jax.vjp(custom, *args)[0], jax.vjp(custom, *args)[1](ct), jax.vjp(plain, *args)[0], jax.vjp(plain, *args)[1](ct)

    out, grads, ref_out, ref_grads = out_and_vjp(args, ct)
    assert_trees_close(out, ref_out, 1e-5)
    assert_trees_close(grads, ref_grads, 1e-5)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("backward", ["fused", "autodiff"])
def test_bf16_matmuls_keep_f32_state_and_stay_close(name, backward):
    ref, params, xs, carry = setup(name)
    cell = MAKERS[name](H, matmul_dtype=jnp.bfloat16, backward=backward)
    lengths = jnp.array([T, 5, 2])
    got = run(cell, params, xs, carry, lengths=lengths, reverse=True)
    want = run(ref, params, xs, carry, lengths=lengths, reverse=True)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(got))
    assert_trees_close_in_norm(got, want, 2e-2)  # bf16 has 8 significant bits: about 0.4% here
    # ... and the fused bf16 backward equals autodiff of the same bf16 forward.
    other = MAKERS[name](H, matmul_dtype=jnp.bfloat16, backward="autodiff")
    assert_trees_close_in_norm(got, run(other, params, xs, carry, lengths=lengths, reverse=True), 2e-2)  # rounded in other places


def test_fused_gradient_of_gradient_works():
    cell = rj.gru(H, backward="fused")
    params = cell.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I))
    ref = rj.gru(H, backward="autodiff")

    def hvp(cell):
        def f(xs):
            return jnp.sum(rj.unroll(cell, params, xs)[1] ** 2)

        return jax.jit(jax.grad(lambda xs: jnp.sum(jax.grad(f)(xs))))(xs)

    np.testing.assert_allclose(hvp(cell), hvp(ref), rtol=1e-4, atol=1e-5)


def test_auto_resolves_to_the_backend_table():
    for backend, d in fused.BACKEND_DEFAULTS.items():
        unroll = d.fused_unroll if d.backward == "fused" else d.autodiff_unroll
        assert fused.resolve("auto", None, backend=backend) == (d.backward, unroll, d.hoist)
        assert fused.resolve("auto", None, remat=True, backend=backend) == ("autodiff", d.autodiff_unroll, d.hoist)
        assert fused.resolve("fused", 2, backend=backend) == ("fused", 2, d.hoist)


def test_bad_speed_options_name_the_argument():
    with pytest.raises(ValueError, match="backward"):
        rj.lstm(H, backward="cudnn")
    with pytest.raises(ValueError, match="remat"):
        rj.gru(H, backward="fused", remat=True)
