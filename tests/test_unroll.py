"""`unroll` against a Python loop over `apply`; reverse, lengths, stacks, gradients, compile caching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnn_jax as rj

T, B, I, H = 8, 3, 5, 4
CELLS = {
    "elman": lambda: rj.elman(H),
    "elman-sigmoid": lambda: rj.elman(H, "sigmoid", use_bias=False),
    "lstm": lambda: rj.lstm(H),
    "gru": lambda: rj.gru(H),
    "stack": lambda: rj.stack([rj.lstm(H), rj.gru(H + 1), rj.elman(H)]),
}


def setup(name, key=0):
    cell = CELLS[name]()
    params = cell.init(jax.random.PRNGKey(key), I)
    xs = jax.random.normal(jax.random.PRNGKey(key + 1), (T, B, I))
    return cell, params, xs


def python_loop(cell, params, xs, carry=None):
    carry = cell.initial_carry(xs.shape[1:-1]) if carry is None else carry
    ys = []
    for x in xs:
        carry, y = cell.apply(params, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys)


def assert_trees_close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("unroll", [1, 3])
def test_unroll_matches_python_loop(name, unroll):
    cell, params, xs = setup(name)
    carry, ys = rj.unroll(cell, params, xs, unroll=unroll)
    ref_carry, ref_ys = python_loop(cell, params, xs)
    assert_trees_close((carry, ys), (ref_carry, ref_ys), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_unbatched_and_multi_batch_dims(name):
    cell, params, xs = setup(name)
    _, ys = rj.unroll(cell, params, xs)
    _, y0 = rj.unroll(cell, params, xs[:, 0])
    np.testing.assert_allclose(y0, ys[:, 0], rtol=1e-5, atol=1e-6)
    xs4 = jnp.stack([xs, xs], axis=1)  # [T, 2, B, I]
    _, ys4 = rj.unroll(cell, params, xs4)
    np.testing.assert_allclose(ys4[:, 1], ys, rtol=1e-5, atol=1e-6)
    # vmap over the batch gives the same as leading batch dims.
    _, yv = jax.vmap(lambda x: rj.unroll(cell, params, x), in_axes=1, out_axes=(0, 1))(xs)
    np.testing.assert_allclose(yv, ys, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_reverse_equals_forward_on_flipped_input(name):
    cell, params, xs = setup(name)
    carry, ys = rj.unroll(cell, params, xs, reverse=True)
    ref_carry, ref_ys = rj.unroll(cell, params, xs[::-1])
    assert_trees_close((carry, ys), (ref_carry, ref_ys[::-1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_lengths_stop_the_carry_and_zero_the_padding(name):
    cell, params, xs = setup(name)
    lengths = jnp.array([T, 3, 0])
    carry, ys = rj.unroll(cell, params, xs, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        ref_carry, ref_ys = python_loop(cell, params, xs[:n, b]) if n else (cell.initial_carry(()), None)
        assert_trees_close(jax.tree.map(lambda c: c[b], carry), ref_carry, rtol=1e-5, atol=1e-6)
        if n:
            np.testing.assert_allclose(ys[:n, b], ref_ys, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[n:, b], 0.0)


@pytest.mark.parametrize("name", ["lstm", "stack"])
def test_reverse_with_lengths_reads_each_sequence_backwards_from_its_end(name):
    cell, params, xs = setup(name)
    lengths = jnp.array([T, 5, 1])
    carry, ys = rj.unroll(cell, params, xs, lengths=lengths, reverse=True)
    for b, n in enumerate(lengths.tolist()):
        ref_carry, ref_ys = python_loop(cell, params, xs[:n, b][::-1])
        assert_trees_close(jax.tree.map(lambda c: c[b], carry), ref_carry, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ys[:n, b], ref_ys[::-1], rtol=1e-5, atol=1e-6)


def test_stack_matches_layers_applied_by_hand():
    cells = [rj.lstm(H), rj.gru(H + 1), rj.elman(H, "sigmoid")]
    cell = rj.stack(cells)
    params = cell.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I))
    carry, ys = rj.unroll(cell, params, xs)
    h = xs
    for layer, p, c in zip(cells, params, carry):
        ref_c, h = python_loop(layer, p, h)
        assert_trees_close(c, ref_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, h, rtol=1e-5, atol=1e-6)
    # A stack is a cell: its own step-by-step apply agrees with the layer-by-layer unroll.
    assert_trees_close(python_loop(cell, params, xs), (carry, ys), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_gradients_match_finite_differences(name):
    jax.config.update("jax_enable_x64", True)
    try:
        cell = CELLS[name]()
        params = cell.init(jax.random.PRNGKey(0), I)
        xs = jax.random.normal(jax.random.PRNGKey(1), (5, 2, I))
        lengths = jnp.array([5, 3])

        def loss(params, xs):
            carry, ys = rj.unroll(cell, params, xs, lengths=lengths)
            return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(carry))

        assert xs.dtype == jnp.float64
        check_grads(loss, (params, xs), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_second_call_with_same_shapes_does_not_recompile():
    cell = rj.lstm(H)
    traces = []

    @jax.jit
    def run(params, xs):
        traces.append(1)
        return rj.unroll(cell, params, xs)[1].sum()

    params = cell.init(jax.random.PRNGKey(0), I)
    run(params, jnp.ones((T, B, I)))
    run(jax.tree.map(lambda p: p + 1, params), jnp.zeros((T, B, I)))
    assert len(traces) == 1
    assert run._cache_size() == 1
    run(params, jnp.ones((T + 1, B, I)))
    assert run._cache_size() == 2


@pytest.mark.parametrize("name", ["elman", "lstm", "gru", "stack"])
@pytest.mark.parametrize("backward", ["fused", "autodiff"])
def test_inputs_and_a_given_carry_follow_the_parameters_dtype(name, backward):
    """bf16 parameters take float32 data (and a float32 carry): the run is the bf16 run of the
    data cast to bf16, and the gradient with respect to the data comes back in float32."""
    make = {
        "elman": lambda: rj.elman(H, dtype=jnp.bfloat16, backward=backward),
        "lstm": lambda: rj.lstm(H, dtype=jnp.bfloat16, backward=backward),
        "gru": lambda: rj.gru(H, dtype=jnp.bfloat16, backward=backward),
        "stack": lambda: rj.stack([rj.lstm(H, dtype=jnp.bfloat16, backward=backward), rj.gru(H, backward=backward)]),
    }
    cell = make[name]()
    params = cell.init(jax.random.PRNGKey(0), I)
    xs = jax.random.normal(jax.random.PRNGKey(1), (T, B, I))
    carry32 = jax.tree.map(lambda c: c.astype(jnp.float32) + 0.1, cell.initial_carry((B,), jnp.bfloat16))
    got = rj.unroll(cell, params, xs, carry32)
    first = jax.tree.leaves(params[0] if name == "stack" else params)[0].dtype
    carry_ref = jax.tree.map(lambda c: c.astype(first), carry32) if name != "stack" else (
        jax.tree.map(lambda c: c.astype(jnp.bfloat16), carry32[0]), carry32[1])
    expected = python_loop(cell, params, xs.astype(jnp.bfloat16), carry_ref)
    assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, expected)
    assert_trees_close(jax.tree.map(lambda a: a.astype(jnp.float32), got), jax.tree.map(lambda a: a.astype(jnp.float32), expected), rtol=2e-2, atol=2e-2)
    grad = jax.grad(lambda xs: jnp.sum(rj.unroll(cell, params, xs)[1].astype(jnp.float32)))(xs)
    assert grad.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0
