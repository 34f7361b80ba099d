"""The fast paths (hand-written backward, bf16 matmuls, remat, unroll) against the plain scan and
`jax.grad` of it, forward and gradients, over lengths, reverse and batch shapes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import assert_trees_close, init, jit, normal, x64

import rnn_jax as rj
from rnn_jax import fused, scan

T, B, I, H = 8, 3, 5, 4
MAKERS = {"lstm": rj.lstm, "gru": rj.gru}
LENGTHS = jnp.array([T, 5, 0])


def outputs_and_grads(cell, params, xs, carry, lengths=None, reverse=False, unroll=None):
    """Outputs and the gradient of a loss that reads every output and the final carry."""

    def loss(params, xs, carry):
        final, ys = rj.unroll(cell, params, xs, carry, lengths=lengths, reverse=reverse, unroll=unroll)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final)), (final, ys)

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, carry)
    return out, grads


@functools.partial(jit, static_argnames=("cells", "cases"))
def runs(cells, params, xs, carry, lengths, cases=((False, False, None),)):
    """`outputs_and_grads` of each cell for each case `(reverse, with_lengths, unroll)`, all in one
    compiled program."""
    return [
        [
            outputs_and_grads(c, params, xs, carry, lengths if with_lengths else None, reverse, unroll)
            for reverse, with_lengths, unroll in cases
        ]
        for c in cells
    ]


def setup(name, batch=(B,)):
    ref = MAKERS[name](H, backward="autodiff")
    params = init(ref, I)
    xs = normal(1, (T, *batch, I))
    carry = jax.tree.map(lambda c: 0.5 * jnp.ones_like(c), ref.initial_carry(batch))
    return ref, params, xs, carry


def assert_trees_close_in_norm(a, b, tol):
    """Each leaf within `tol` of `b` relative to `b`'s norm: bf16 rounding spreads over every
    element, so an elementwise bound is either loose or brittle; a wrong gradient is off by O(1)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert np.linalg.norm(x - y) <= tol * np.linalg.norm(y), (np.linalg.norm(x - y), np.linalg.norm(y))


OPTIONS = {  # factory arguments and unroll
    "fused-unroll2": (dict(backward="fused"), 2),  # CPU: the projection inside the step
    "autodiff-unroll3": (dict(backward="autodiff"), 3),
    "remat": (dict(remat=True), None),
    "auto": (dict(), None),
    "gpu-defaults": (dict(platform="gpu"), None),  # fused, unroll 8, the projection hoisted out of the loop
    "hoisted-plain-scan": (dict(backward="autodiff", platform="gpu"), 2),
}
VARIANTS = ((False, False), (True, True), (False, True))  # (reverse, with lengths)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_fast_path_equals_plain_scan(name, option):
    """Each option, over every (reverse, lengths) variant in one program, against the plain scan."""
    kwargs, unroll = OPTIONS[option]
    _, params, xs, carry = setup(name)
    cell = MAKERS[name](H, **kwargs)
    [got] = runs((cell,), params, xs, carry, LENGTHS, cases=tuple((r, n, unroll) for r, n in VARIANTS))
    for variant, g, want in zip(VARIANTS, got, plain_reference(name)):
        assert_trees_close(g, want, 1e-5, err_msg=f"reverse, with lengths = {variant}")


@functools.lru_cache(maxsize=None)
def plain_reference(name):
    ref, params, xs, carry = setup(name)
    [want] = runs(
        (ref,), params, xs, carry, LENGTHS, cases=tuple((r, n, 1) for r, n in VARIANTS)
    )  # CPU default: not hoisted
    return want


@functools.partial(jit, static_argnums=(0, 1))
def on_batch_shapes(cell, ref, params, xs_carries):
    return [(outputs_and_grads(cell, params, xs, c), outputs_and_grads(ref, params, xs, c)) for xs, c in xs_carries]


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_handles_any_batch_shape(name):
    cell = MAKERS[name](H, backward="fused")
    ref, params, _, _ = setup(name)
    cases = [setup(name, batch)[2:] for batch in [(), (2, B)]]
    for got, want in on_batch_shapes(cell, ref, params, cases):
        assert_trees_close(got, want, 1e-5)


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_gradients_in_float64_match_autodiff_tightly(name):
    with x64():
        ref, params, xs, carry = setup(name)
        assert xs.dtype == jnp.float64
        cell = MAKERS[name](H, backward="fused")
        [got], [want] = runs((cell, ref), params, xs, carry, jnp.array([T, 2, 6]), cases=((False, True, None),))
        assert_trees_close(got, want, 1e-12)


@pytest.mark.parametrize("platform", ["cpu", "gpu"], ids=["projection-in-step", "projected"])
def test_lstm_without_output_tanh_fused_gradients_equal_autodiff(platform):
    """`h' = sigmoid(o) * c'`: the fused backward against autodiff, float64, over a stack of two such
    layers, lengths, forward and reverse, with the projection in the step (CPU defaults) and
    before the loop (GPU defaults)."""
    with x64():

        def make(backward):
            layer = functools.partial(rj.lstm, H, output_tanh=False, backward=backward, platform=platform)
            return rj.stack([layer(), layer()])

        ref, cell = make("autodiff"), make("fused")
        params = init(ref, I)
        xs = normal(1, (T, B, I))
        carry = jax.tree.map(lambda c: 0.5 * jnp.ones_like(c), ref.initial_carry((B,), jnp.float64))
        got, want = runs(
            (cell, ref), params, xs, carry, jnp.array([T, 2, 6]), cases=((False, True, None), (True, True, None))
        )
        assert_trees_close(got, want, 1e-12)


@pytest.mark.parametrize("in_step", [False, True], ids=["projected", "projection-in-step"])
def test_lstm_sequence_vjp_equals_grad_of_the_plain_recurrence(in_step):
    """The custom VJP alone, on raw arrays, against `jax.vjp` of `masked_scan` over the cell's step
    (or `apply`, when the projection is inside the step); with a mask and with resets, forward and
    reverse."""
    cell = rj.lstm(H, backward="autodiff")
    params = init(cell, I, 4)
    xs = normal(0, (T, B, I if in_step else 4 * H))  # raw or projected input
    h0, c0 = normal(1, (B, H)), normal(2, (B, H))
    mask = jnp.arange(T)[:, None] < jnp.array([[T, 4, 1]])
    resets = jnp.asarray(np.random.default_rng(5).random((T, B)) < 0.3)

    def plain(params, xs, h0, c0, resets, reverse):
        step = cell.apply if in_step else cell.step
        (h, c), ys = scan.masked_scan(step, params, xs, rj.LSTMCarry(h0, c0), mask, resets=resets, reverse=reverse)
        return h, c, ys

    def custom(params, xs, h0, c0, resets, reverse):
        proj = fused.Projection(params.w_x, params.b) if in_step else None
        return fused.lstm_sequence(params.w_h, xs, h0, c0, mask, proj, reverse, resets=resets)

    args = (params, xs, h0, c0)
    ct = (normal(6, (B, H)), normal(7, (B, H)), normal(8, (T, B, H)))

    @jit
    def out_and_vjp(args, ct):
        results = []
        for r, reverse in [(None, False), (resets, False), (resets, True)]:
            for f in (custom, plain):
                out, vjp = jax.vjp(lambda *a: f(*a, r, reverse), *args)
                results.append((out, vjp(ct)))
        return results

    results = out_and_vjp(args, ct)
    for got, want in zip(results[0::2], results[1::2]):
        assert_trees_close(got, want, 1e-5)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("backward", ["fused", "autodiff"])
def test_bf16_matmuls_keep_f32_state_and_stay_close(name, backward):
    ref, params, xs, carry = setup(name)
    cell = MAKERS[name](H, matmul_dtype=jnp.bfloat16, backward=backward)
    other = MAKERS[name](H, matmul_dtype=jnp.bfloat16, backward="autodiff")
    [got], [want], [autodiff_bf16] = runs(
        (cell, ref, other), params, xs, carry, jnp.array([T, 5, 2]), cases=((True, True, None),)
    )
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(got))
    assert_trees_close_in_norm(got, want, 2e-2)  # bf16 has 8 significant bits: about 0.4% here
    # ... and the fused bf16 backward equals autodiff of the same bf16 forward.
    assert_trees_close_in_norm(got, autodiff_bf16, 2e-2)  # rounded in other places


def test_fused_gradient_of_gradient_works():
    cell = rj.gru(H, backward="fused")
    params = init(cell, I)
    xs = normal(1, (T, B, I))
    ref = rj.gru(H, backward="autodiff")

    def hvp(cell):
        def f(xs):
            return jnp.sum(rj.unroll(cell, params, xs)[1] ** 2)

        return jax.grad(lambda xs: jnp.sum(jax.grad(f)(xs)))(xs)

    got, want = jit(lambda: (hvp(cell), hvp(ref)))()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


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
