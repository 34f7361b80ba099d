"""`unroll` against a Python loop over `apply`; reverse, lengths, stacks, gradients, compile caching.

Every cell is built once per module and is a static argument of module-level jitted functions, so
each program is compiled once and shared by the tests that need it (`rnn_testing`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import assert_trees_close, init, jit, normal, scan_apply, x64

import rnn_jax as rj

T, B, I, H = 8, 3, 5, 4
CELLS = {
    "elman": rj.elman(H),
    "elman-sigmoid": rj.elman(H, "sigmoid", use_bias=False),
    "lstm": rj.lstm(H),
    "gru": rj.gru(H),
    "stack": rj.stack([rj.lstm(H), rj.gru(H + 1), rj.elman(H)]),
    "minlstm": rj.minlstm(H),  # a linear-recurrence cell (sequential at T = 8 on the CPU; tests/test_linear_cells.py)
}


def setup(name, key=0):
    cell = CELLS[name]
    params = init(cell, I, key)
    xs = normal(key + 1, (T, B, I))
    return cell, params, xs


def python_loop(cell, params, xs, carry=None):
    carry = cell.initial_carry(xs.shape[1:-1]) if carry is None else carry
    ys = []
    for x in xs:
        carry, y = cell.apply(params, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys)


@functools.partial(jit, static_argnums=0)
def loop_reference(cell, params, xs):
    """The Python loop over `apply`, on the padded batch, and on the first n steps of every row
    forward and flipped, for each nonzero n in LENGTHS (what `lengths` and `reverse` must reproduce)."""
    full = python_loop(cell, params, xs)
    steps = [n for n in LENGTHS_LIST if n]
    prefixes = {n: python_loop(cell, params, xs[:n]) for n in steps}
    flipped = {n: python_loop(cell, params, xs[:n][::-1]) for n in steps}
    return full, prefixes, flipped


@functools.partial(jit, static_argnums=0)
def unrolled(cell, params, xs, lengths):
    """`unroll` with unroll 1 and 3, in reverse, with lengths forward and reverse, on one row, on
    two batch axes, and under vmap."""
    return dict(
        unroll1=rj.unroll(cell, params, xs, unroll=1),
        unroll3=rj.unroll(cell, params, xs, unroll=3),
        reverse=rj.unroll(cell, params, xs, reverse=True),
        lengths=rj.unroll(cell, params, xs, lengths=lengths),
        lengths_reverse=rj.unroll(cell, params, xs, lengths=lengths, reverse=True),
        row0=rj.unroll(cell, params, xs[:, 0]),
        two_batch_axes=rj.unroll(cell, params, jnp.stack([xs, xs], axis=1)),  # [T, 2, B, I]
        vmapped=jax.vmap(lambda x: rj.unroll(cell, params, x), in_axes=1, out_axes=(0, 1))(xs),
    )


LENGTHS_LIST = (T, 3, 0)
LENGTHS = jnp.array(LENGTHS_LIST)


@functools.lru_cache(maxsize=None)
def results(name):
    cell, params, xs = setup(name)
    return unrolled(cell, params, xs, LENGTHS), loop_reference(cell, params, xs)


def row(tree, b):
    return jax.tree.map(lambda c: c[b], tree)


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("unroll", [1, 3])
def test_unroll_matches_python_loop(name, unroll):
    got, (full, _, _) = results(name)
    assert_trees_close(got[f"unroll{unroll}"], full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_unbatched_and_multi_batch_dims(name):
    got, _ = results(name)
    ys = got["unroll1"][1]
    np.testing.assert_allclose(got["row0"][1], ys[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["two_batch_axes"][1][:, 1], ys, rtol=1e-5, atol=1e-6)
    # vmap over the batch gives the same as leading batch dims.
    np.testing.assert_allclose(got["vmapped"][1], ys, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_reverse_equals_forward_on_flipped_input(name):
    got, (_, _, flipped) = results(name)
    ref_carry, ref_ys = flipped[T]
    assert_trees_close(got["reverse"], (ref_carry, ref_ys[::-1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_lengths_stop_the_carry_and_zero_the_padding(name):
    got, (_, prefixes, _) = results(name)
    carry, ys = got["lengths"]
    cell = CELLS[name]
    for b, n in enumerate(LENGTHS.tolist()):
        if n:
            ref_carry, ref_ys = prefixes[n]
            assert_trees_close(row(carry, b), row(ref_carry, b), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ys[:n, b], ref_ys[:, b], rtol=1e-5, atol=1e-6)
        else:
            assert_trees_close(row(carry, b), cell.initial_carry(()), rtol=0, atol=0)
        np.testing.assert_array_equal(ys[n:, b], 0.0)


@pytest.mark.parametrize("name", list(CELLS))
def test_reverse_with_lengths_reads_each_sequence_backwards_from_its_end(name):
    got, (_, _, flipped) = results(name)
    carry, ys = got["lengths_reverse"]
    for b, n in enumerate(LENGTHS.tolist()):
        if n:
            ref_carry, ref_ys = flipped[n]
            assert_trees_close(row(carry, b), row(ref_carry, b), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ys[:n, b], ref_ys[::-1, b], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[n:, b], 0.0)


def test_stack_matches_layers_applied_by_hand():
    cell, params, xs = setup("stack")
    got, (full, _, _) = results("stack")
    carry, ys = got["unroll1"]

    @jit
    def by_hand(params, xs):
        h, carries = xs, []
        for layer, p in zip(cell.layers, params):
            c, h = python_loop(layer, p, h)
            carries.append(c)
        return tuple(carries), h

    assert_trees_close(by_hand(params, xs), (carry, ys), rtol=1e-5, atol=1e-6)
    # A stack is a cell: its own step-by-step apply agrees with the layer-by-layer unroll.
    assert_trees_close(full, (carry, ys), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_gradients_match_finite_differences(name):
    """Reverse-mode gradients against central differences along random directions, float64 (as
    `jax.test_util.check_grads`, written out so that each program is compiled once)."""
    with x64():
        cell = CELLS[name]
        params = init(cell, I)
        xs = normal(1, (5, 2, I))
        lengths = jnp.array([5, 3])

        def loss(args):
            params, xs = args
            carry, ys = rj.unroll(cell, params, xs, lengths=lengths)
            return jnp.sum(ys**2) + sum(jnp.sum(jnp.sin(c)) for c in jax.tree.leaves(carry))

        @jit
        def directional(args, v, eps):
            """`<grad loss, v>` by reverse mode, and by central differences with step `eps`."""
            grad = jax.grad(loss)(args)
            exact = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(v)))
            shifted = [jax.tree.map(lambda a, d: a + s * eps * d, args, v) for s in (1.0, -1.0)]
            return exact, (loss(shifted[0]) - loss(shifted[1])) / (2 * eps)

        assert xs.dtype == jnp.float64
        args = (params, xs)
        leaves, treedef = jax.tree.flatten(args)
        for seed in range(3):  # three random directions through every parameter and input at once
            v = treedef.unflatten([normal(10 * seed + k, a.shape) for k, a in enumerate(leaves)])
            exact, numeric = directional(args, v, 1e-5)
            np.testing.assert_allclose(exact, numeric, rtol=1e-6, atol=1e-6)


def test_second_call_with_same_shapes_does_not_recompile():
    cell = rj.lstm(H)
    traces = []

    @jax.jit
    def run(params, xs):
        traces.append(1)
        return rj.unroll(cell, params, xs)[1].sum()

    params = init(cell, I)
    run(params, jnp.ones((T, B, I)))
    run(jax.tree.map(lambda p: p + 1, params), jnp.zeros((T, B, I)))
    assert len(traces) == 1
    assert run._cache_size() == 1
    run(params, jnp.ones((T + 1, B, I)))
    assert run._cache_size() == 2


@functools.partial(jit, static_argnums=0)
def run_and_reference(cell, params, xs, carry32, carry_ref):
    """`unroll` on float32 data and carry, and a scan of `apply` on the data cast to bf16; the
    gradient with respect to the float32 data of both."""

    def ours(xs):
        return rj.unroll(cell, params, xs, carry32)

    def reference(xs):
        return scan_apply(cell, params, xs.astype(jnp.bfloat16), carry_ref)

    def grad(run):
        return jax.grad(lambda xs: jnp.sum(run(xs)[1].astype(jnp.float32)))(xs)

    return ours(xs), reference(xs), grad(ours), grad(reference)


def assert_close_in_norm(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a - b) <= tol * np.linalg.norm(b), (np.linalg.norm(a - b), np.linalg.norm(b))


@pytest.mark.parametrize(
    "name, backward",
    [(n, b) for n in ["elman", "lstm", "gru", "stack"] for b in ["fused", "autodiff"]] + [("rglru", "auto")],
)
def test_inputs_and_a_given_carry_follow_the_parameters_dtype(name, backward):
    """bf16 parameters take float32 data (and a float32 carry): the run is the bf16 run of the
    data cast to bf16, and the gradient with respect to the data comes back in float32, equal to
    the gradient through the cast of the bf16 scan of `apply`."""
    make = {
        "elman": lambda: rj.elman(H, dtype=jnp.bfloat16, backward=backward),
        "lstm": lambda: rj.lstm(H, dtype=jnp.bfloat16, backward=backward),
        "gru": lambda: rj.gru(H, dtype=jnp.bfloat16, backward=backward),
        "stack": lambda: rj.stack([rj.lstm(H, dtype=jnp.bfloat16, backward=backward), rj.gru(H, backward=backward)]),
        "rglru": lambda: rj.rglru(H, dtype=jnp.bfloat16, scan="parallel"),
    }
    cell = make[name]()
    params = init(cell, I)
    xs = normal(1, (T, B, I))
    carry32 = jax.tree.map(lambda c: c.astype(jnp.float32) + 0.1, cell.initial_carry((B,), jnp.bfloat16))
    first = jax.tree.leaves(params[0] if name == "stack" else params)[0].dtype
    carry_ref = (
        jax.tree.map(lambda c: c.astype(first), carry32)
        if name != "stack"
        else (jax.tree.map(lambda c: c.astype(jnp.bfloat16), carry32[0]), carry32[1])
    )
    got, expected, grad, ref_grad = run_and_reference(cell, params, xs, carry32, carry_ref)
    assert jax.tree.map(lambda a: a.dtype, got) == jax.tree.map(lambda a: a.dtype, expected)
    assert_trees_close(
        jax.tree.map(lambda a: a.astype(jnp.float32), got),
        jax.tree.map(lambda a: a.astype(jnp.float32), expected),
        rtol=2e-2,
        atol=2e-2,
    )
    assert grad.dtype == jnp.float32 and np.isfinite(np.asarray(grad)).all()
    assert_close_in_norm(grad, ref_grad, 2e-2)  # bf16 keeps 8 bits; rounded in other places
