"""`unroll`'s resets, mask and time_major: packed segments against each segment run alone as its
own row (outputs, final carry and gradients, both backwards, forward and reverse), a mask against
a Python loop over the steps left in, batch-major against transposing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import assert_trees_close, init, jit, normal, python_loop, x64

import rnn_jax as rj
from rnn_jax.scan import restarts

T, B, I, H = 8, 3, 5, 4
SEGMENTS = ((3, 5), (8,), (2, 2, 1))  # per row, laid end to end; row 2 is padded by lengths to 5 steps
LENGTHS = tuple(sum(s) for s in SEGMENTS)


def make(name, backward):
    return {
        "elman": lambda: rj.elman(H, backward=backward),
        "lstm": lambda: rj.lstm(H, backward=backward),
        "lstm-no-output-tanh": lambda: rj.lstm(H, output_tanh=False, backward=backward, platform="gpu"),
        "gru": lambda: rj.gru(H, backward=backward),
        "stack": lambda: rj.stack(
            [rj.lstm(H, backward=backward), rj.gru(H + 1, backward=backward), rj.elman(H, "sigmoid", backward=backward)]
        ),
    }[name]()


CELLS = {
    (name, b): make(name, b)
    for name in ["elman", "lstm", "lstm-no-output-tanh", "gru", "stack"]
    for b in ["fused", "autodiff"]
}


def packed_resets():
    resets = np.zeros((T, B), bool)
    for b, segments in enumerate(SEGMENTS):
        resets[np.cumsum((0,) + segments[:-1]), b] = True
    return jnp.asarray(resets)


def loss_terms(final, ys, w):
    return jnp.sum(w * jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final))


@functools.partial(jit, static_argnums=0)
def packed_run(cell, params, xs, carry, w):
    """Outputs, final carry and gradients of the packed rows, forward and reverse, in one program."""

    def loss(params, xs, carry, reverse):
        final, ys = rj.unroll(
            cell, params, xs, carry, lengths=jnp.array(LENGTHS), resets=packed_resets(), reverse=reverse
        )
        return loss_terms(final, ys, w), (final, ys)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    return [grad(params, xs, carry, reverse) for reverse in (False, True)]


PIECES = tuple(
    (b, sum(segments[:k]), n) for b, segments in enumerate(SEGMENTS) for k, n in enumerate(segments)
)  # (row, start, length)


@functools.partial(jit, static_argnums=0)
def alone_run(cell, params, xs, carry, w):
    """The same as `packed_run` with each segment alone: every segment is its own row of a batch
    (padded at its end, from its row's initial carry), with no resets, forward or reverse; the
    outputs are laid back end to end, and the final carry is each row's last segment's, or in
    reverse its first segment's (the one a reverse run ends with)."""

    def loss(params, xs, carry, reverse):
        pieces = jnp.stack([jnp.pad(xs[t : t + n, b], ((0, T - n), (0, 0))) for b, t, n in PIECES], axis=1)  # [T, S, I]
        starts = jax.tree.map(lambda c: jnp.stack([c[b] for b, _, _ in PIECES]), carry)
        ends, ys = rj.unroll(
            cell, params, pieces, starts, lengths=jnp.array([n for _, _, n in PIECES]), reverse=reverse
        )
        rows, finals = [], []
        for b in range(B):
            mine = [s for s, piece in enumerate(PIECES) if piece[0] == b]
            row = jnp.concatenate([ys[: PIECES[s][2], s] for s in mine])
            rows.append(jnp.concatenate([row, jnp.zeros((T - row.shape[0], ys.shape[-1]), ys.dtype)]))
            finals.append(jax.tree.map(lambda e: e[mine[0] if reverse else mine[-1]], ends))
        final, ys = jax.tree.map(lambda *cs: jnp.stack(cs), *finals), jnp.stack(rows, axis=1)
        return loss_terms(final, ys, w), (final, ys)

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    return [grad(params, xs, carry, reverse) for reverse in (False, True)]


def data(cell):
    params = init(cell, I)
    xs = normal(1, (T, B, I))
    carry = jax.tree.map(
        lambda c: c + 0.3, cell.initial_carry((B,), jnp.float64)
    )  # restarts go back to it, not to zeros
    w = normal(2, (T, B, cell.hidden_size))
    return params, xs, carry, w


@functools.lru_cache(maxsize=None)
def reference(name):
    with x64():
        cell = CELLS[name, "autodiff"]
        return alone_run(cell, *data(cell))


@pytest.mark.parametrize("backward", ["fused", "autodiff"])
@pytest.mark.parametrize("name", ["elman", "lstm", "lstm-no-output-tanh", "gru", "stack"])
def test_packed_segments_with_resets_equal_each_segment_alone(name, backward):
    want = reference(name)
    with x64():
        cell = CELLS[name, backward]
        got = packed_run(cell, *data(cell))
    for direction, g, r in zip(["forward", "reverse"], got, want):
        (loss, (final, ys)), grads = g
        (ref_loss, (ref_final, ref_ys)), ref_grads = r
        np.testing.assert_array_equal(ys[LENGTHS[2] :, 2], 0.0)
        assert_trees_close((loss, final, ys), (ref_loss, ref_final, ref_ys), 1e-12, err_msg=direction)
        assert_trees_close(grads, ref_grads, 1e-11, err_msg=direction)


def test_restarts_mark_segment_starts_forward_and_segment_ends_in_reverse():
    resets = jnp.array([[1, 0, 0, 1, 0, 1, 1, 0]], bool).T  # [T, 1]: segments [0, 3), [3, 5), [5], [6, 8)
    mask = jnp.arange(T)[:, None] < 7  # the last step is padding: its own restart is dropped
    np.testing.assert_array_equal(restarts(resets, None, False)[:, 0], [1, 0, 0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(restarts(resets, None, True)[:, 0], [0, 0, 1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(restarts(resets, mask, True)[:, 0], [0, 0, 1, 0, 1, 1, 0, 0])
    resets = resets.at[7, 0].set(True)  # a mark on a padding step has no effect, forward or reverse
    np.testing.assert_array_equal(restarts(resets, mask, False)[:, 0], [1, 0, 0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(restarts(resets, mask, True)[:, 0], [0, 0, 1, 0, 1, 1, 0, 0])
    assert restarts(None, mask, True) is None


@functools.partial(jit, static_argnums=0)
def masked_and_batch_major(cell, params, xs, mask, resets):
    """Time-major with a mask and resets; the same batch-major; and a loss's gradient for both."""

    def time_major(params, xs):
        return rj.unroll(cell, params, xs, mask=mask, resets=resets, lengths=jnp.array([T, 6, 7]), reverse=True)

    def batch_major(params, xs):
        xs = jnp.swapaxes(xs, 0, 1)  # [B, T, I]
        m, r = mask.T, resets.T
        final, ys = rj.unroll(
            cell, params, xs, mask=m, resets=r, lengths=jnp.array([T, 6, 7]), reverse=True, time_major=False
        )
        return final, jnp.swapaxes(ys, 0, 1)

    def grad(run):
        return jax.grad(lambda p, xs: jnp.sum(jnp.sin(run(p, xs)[1])), argnums=(0, 1))(params, xs)

    return time_major(params, xs), batch_major(params, xs), grad(time_major), grad(batch_major)


@pytest.mark.parametrize("name", ["lstm", "stack"])
def test_batch_major_equals_time_major_transposed(name):
    cell = CELLS[name, "fused"]
    params = init(cell, I)
    xs = normal(1, (T, B, I))
    rng = np.random.default_rng(2)
    mask, resets = jnp.asarray(rng.random((T, B)) < 0.7), jnp.asarray(rng.random((T, B)) < 0.3)
    tm, bm, g_tm, g_bm = masked_and_batch_major(cell, params, xs, mask, resets)
    assert_trees_close(bm, tm, 1e-6)
    assert_trees_close(g_bm, g_tm, 1e-6)


MASK = jnp.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
MASK_LENGTHS = (T, 5, 7)


@functools.partial(jit, static_argnums=0)
def masked_runs(name, params, xs):
    """Both backwards, forward and reverse, with `MASK` and lengths; and the Python loop over each
    row's kept steps, forward and flipped."""
    kept = np.asarray(MASK) & (np.arange(T)[:, None] < np.array(MASK_LENGTHS))
    runs = {
        (b, r): rj.unroll(CELLS[name, b], params, xs, mask=MASK, lengths=jnp.array(MASK_LENGTHS), reverse=r)
        for b in ["fused", "autodiff"]
        for r in [False, True]
    }
    cell = CELLS[name, "autodiff"]
    loops = {
        r: [python_loop(cell, params, xs[np.flatnonzero(kept[:, b])[:: -1 if r else 1], b]) for b in range(B)]
        for r in [False, True]
    }
    return runs, loops


@pytest.mark.parametrize("name", ["gru", "stack"])
def test_a_mask_leaves_steps_out(name):
    """Masked steps (anywhere, with lengths on top) output zeros and leave the carry as it was:
    each row equals a Python loop over its kept steps, forward and reverse."""
    kept = np.asarray(MASK) & (np.arange(T)[:, None] < np.array(MASK_LENGTHS))
    params = init(CELLS[name, "fused"], I)
    runs, loops = masked_runs(name, params, normal(1, (T, B, I)))
    for (backward, reverse), (final, ys) in runs.items():
        for b in range(B):
            steps = np.flatnonzero(kept[:, b])
            ref_final, ref_ys = loops[reverse][b]
            assert_trees_close(jax.tree.map(lambda c: c[b], final), ref_final, 1e-5)
            np.testing.assert_allclose(ys[steps, b], ref_ys[::-1] if reverse else ref_ys, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(ys[~kept[:, b], b], 0.0)


def test_bad_mask_or_resets_name_the_argument():
    cell = CELLS["lstm", "fused"]
    params = init(cell, I)
    xs = jnp.zeros((T, B, I))
    with pytest.raises(ValueError, match=r"resets must be \[T, \*batch\]"):
        rj.unroll(cell, params, xs, resets=jnp.zeros((B, T), bool))
    with pytest.raises(ValueError, match=r"mask must be \[\*batch, T\]"):
        rj.unroll(cell, params, jnp.zeros((B, T, I)), mask=jnp.zeros((T, B), bool), time_major=False)
    with pytest.raises(TypeError, match="resets must be booleans"):
        rj.unroll(cell, params, xs, resets=jnp.zeros((T, B), jnp.int32))
