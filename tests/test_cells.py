"""Cells against NumPy implementations written from their equations, and against Flax's cells."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import init, jit, normal, to_flax_gru, to_flax_lstm

import rnn_jax as rj

T, B, I, H = 8, 3, 5, 4


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_elman(p, xs, act):
    f = {"tanh": np.tanh, "sigmoid": np_sigmoid}[act]
    h = np.zeros((xs.shape[1], H))
    ys = []
    for x in xs:
        h = f(x @ p.w_x + h @ p.w_h + (0 if p.b is None else p.b))
        ys.append(h)
    return h, np.stack(ys)


def np_lstm(p, xs, output_tanh=True):
    h = np.zeros((xs.shape[1], H))
    c = np.zeros_like(h)
    ys = []
    for x in xs:
        z = x @ p.w_x + h @ p.w_h + p.b
        i, f, g, o = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
        c = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(g)
        h = np_sigmoid(o) * (np.tanh(c) if output_tanh else c)
        ys.append(h)
    return (h, c), np.stack(ys)


def np_gru(p, xs):
    h = np.zeros((xs.shape[1], H))
    ys = []
    wx, wh = p.w_x, p.w_h
    for x in xs:
        r = np_sigmoid(x @ wx[:, :H] + p.b_x[:H] + h @ wh[:, :H])
        z = np_sigmoid(x @ wx[:, H : 2 * H] + p.b_x[H : 2 * H] + h @ wh[:, H : 2 * H])
        n = np.tanh(x @ wx[:, 2 * H :] + p.b_x[2 * H :] + r * (h @ wh[:, 2 * H :] + p.b_hn))
        h = (1 - z) * n + z * h
        ys.append(h)
    return h, np.stack(ys)


def to_np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


@pytest.fixture(params=["f32", "f64"])
def precision(request):
    if request.param == "f64":
        jax.config.update("jax_enable_x64", True)
        yield jnp.float64, 1e-12
        jax.config.update("jax_enable_x64", False)
    else:
        yield jnp.float32, 1e-5


CASES = {  # each cell built once, so its compiled programs are shared by both precisions' tests
    "elman-tanh": (rj.elman(H, "tanh"), lambda p, xs: np_elman(p, xs, "tanh")),
    "elman-sigmoid-nobias": (
        rj.elman(H, "sigmoid", use_bias=False, init="uniform"),
        lambda p, xs: np_elman(p, xs, "sigmoid"),
    ),
    "lstm": (rj.lstm(H), np_lstm),
    "lstm-no-output-tanh": (rj.lstm(H, output_tanh=False), lambda p, xs: np_lstm(p, xs, output_tanh=False)),
    "gru": (rj.gru(H), np_gru),
}


@functools.partial(jit, static_argnums=0)
def unrolled(cell, params, xs):
    return rj.unroll(cell, params, xs)


@pytest.mark.parametrize("name", list(CASES))
def test_cell_matches_numpy_over_a_sequence(name, precision):
    dtype, rtol = precision
    cell, reference = CASES[name]
    params = init(cell, I)
    xs = normal(1, (T, B, I), dtype)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    carry, ys = unrolled(cell, params, xs)
    ref_carry, ref_ys = reference(to_np(params), np.asarray(xs, np.float64))
    assert ys.dtype == dtype
    np.testing.assert_allclose(ys, ref_ys, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(
        np.concatenate(jax.tree.leaves(carry)), np.concatenate(jax.tree.leaves(ref_carry)), rtol=rtol, atol=rtol
    )


@pytest.mark.parametrize("output_tanh", [True, False])
def test_lstm_output_tanh_every_way_it_runs_matches_numpy_in_float64(output_tanh, x64):
    """`h' = sigmoid(o) * c'` (or `* tanh(c')`) through the step, both backwards of `unroll`, with
    lengths and in reverse, each sequence against a NumPy loop of the equations."""
    cells = {b: rj.lstm(H, output_tanh=output_tanh, backward=b) for b in ["fused", "autodiff"]}
    params = init(cells["fused"], I)
    xs = normal(1, (T, B, I))
    lengths = np.array([T, 5, 1])
    p, x = to_np(params), np.asarray(xs)

    @jit
    def every_way(params, xs):
        runs = {
            (b, r): rj.unroll(c, params, xs, lengths=jnp.asarray(lengths), reverse=r)
            for b, c in cells.items()
            for r in (False, True)
        }
        return runs, cells["fused"].apply(
            params, cells["fused"].initial_carry((B,), jnp.float64), xs[0]
        )  # one plain step

    runs, (carry, y) = every_way(params, xs)
    for (backward, reverse), (carry, ys) in runs.items():
        for b, n in enumerate(lengths):
            seq = x[:n, b : b + 1][::-1] if reverse else x[:n, b : b + 1]
            (h, c), want = np_lstm(p, seq, output_tanh)
            want = want[::-1] if reverse else want
            np.testing.assert_allclose(ys[:n, b], want[:, 0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(carry.h[b], h[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(carry.c[b], c[0], rtol=1e-12, atol=1e-12)
    carry, y = every_way(params, xs)[1]
    (h, c), _ = np_lstm(p, x[:1], output_tanh)
    np.testing.assert_allclose(y, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(carry.c, c, rtol=1e-12, atol=1e-12)


def flax_loop(fcell, fparams, carry, xs):
    ys = []
    for x in xs:
        carry, y = fcell.apply({"params": fparams}, carry, x)
        ys.append(y)
    return carry, jnp.stack(ys)


def test_lstm_matches_flax_lstmcell():
    from flax import linen as nn

    cell = rj.lstm(H)
    params = init(cell, I)
    fcell = nn.LSTMCell(H)
    x0 = jnp.zeros((B, I))
    fparams = jax.eval_shape(
        lambda: fcell.init(jax.random.PRNGKey(2), fcell.initialize_carry(jax.random.PRNGKey(3), x0.shape), x0)
    )
    p = to_flax_lstm(params, H)
    assert jax.tree.structure(p) == jax.tree.structure(fparams["params"])
    xs = normal(1, (T, B, I))
    fc0 = (jnp.zeros((B, H)), jnp.zeros((B, H)))  # what initialize_carry gives: zeros (c, h)
    (carry, ys), (fc, fys) = jit(lambda p, params, xs: (rj.unroll(cell, params, xs), flax_loop(fcell, p, fc0, xs)))(
        p, params, xs
    )
    np.testing.assert_allclose(ys, fys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.c, fc[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.h, fc[1], rtol=1e-5, atol=1e-6)


def test_gru_matches_flax_grucell():
    from flax import linen as nn

    cell = rj.gru(H)
    params = init(cell, I)
    fcell = nn.GRUCell(H)
    p = to_flax_gru(params, H)
    xs = normal(1, (T, B, I))
    fparams = jax.eval_shape(lambda x: fcell.init(jax.random.PRNGKey(2), jnp.zeros((B, H)), x), xs[0])
    assert jax.tree.structure(p) == jax.tree.structure(fparams["params"])
    fh = jnp.zeros((B, H))
    (carry, ys), (fh, fys) = jit(lambda p, params, xs: (rj.unroll(cell, params, xs), flax_loop(fcell, p, fh, xs)))(
        p, params, xs
    )
    np.testing.assert_allclose(ys, fys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry, fh, rtol=1e-5, atol=1e-6)


def test_initializers():
    p = init(rj.elman(64, init="uniform"), 32)
    assert float(p.w_x.min()) >= -1 and float(p.w_x.max()) < 1 and float(p.w_x.max()) > 0.9
    p = init(rj.gru(64, init="pytorch"), 32)
    assert float(np.abs(p.w_h).max()) <= 1 / 8 and float(np.abs(p.w_h).max()) > 0.12
    p = init(rj.lstm(8, recurrent_init="orthogonal", forget_bias=1.0, init="zeros"), 3)
    w_h = np.asarray(p.w_h)
    for k in range(4):
        block = w_h[:, k * 8 : (k + 1) * 8]
        np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-5)
    np.testing.assert_array_equal(p.b, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: rj.lstm(0), ValueError, "hidden_size"),
        (lambda: rj.gru(2.5), TypeError, "hidden_size"),
        (lambda: rj.elman("8"), TypeError, "hidden_size"),
        (lambda: rj.elman(4, "softsign"), ValueError, "activation"),
        (lambda: rj.elman(4, init="xavier"), ValueError, "init"),
        (lambda: rj.lstm(4, recurrent_init="he"), ValueError, "recurrent_init"),
        (lambda: rj.lstm(4, output_tanh="no"), TypeError, "output_tanh"),
        (lambda: rj.gru(4, platform=0), TypeError, "platform"),
        (lambda: rj.lstm(4).init(jax.random.PRNGKey(0), 0), ValueError, "input_size"),
        (lambda: rj.stack([]), TypeError, "stack"),
        (lambda: rj.sequence_model(rj.lstm(4), 2, output_activation="relu6"), ValueError, "output_activation"),
    ],
)
def test_bad_arguments_name_the_argument(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_wrong_input_width_is_a_clear_error():
    cell = rj.gru(H)
    params = init(cell, I)
    with pytest.raises(ValueError, match=f"last dimension {I}"):
        rj.unroll(cell, params, jnp.zeros((T, B, I + 1)))
    with pytest.raises(ValueError, match="lengths"):
        rj.unroll(cell, params, jnp.zeros((T, B, I)), lengths=jnp.array([1, 2]))
    for bad in (T + 1, -1):
        lengths = np.full((B,), 1)
        lengths[0] = bad
        with pytest.raises(ValueError, match=rf"lengths must lie in \[0, T={T}\].* {bad}"):
            rj.unroll(cell, params, jnp.zeros((T, B, I)), lengths=lengths)


def test_sequence_model_expresses_the_2015_network():
    model = rj.sequence_model(
        rj.elman(16, "sigmoid", use_bias=False, init="uniform"),
        1,
        readout_bias=False,
        readout_init="uniform",
        output_activation="sigmoid",
    )
    params = init(model, 2)
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == rj.ModelParams(rj.ElmanParams((2, 16), (16, 16), None), rj.DenseParams((16, 1), None))
    xs = jnp.asarray(np.random.default_rng(1).random((8, 2)) < 0.5, jnp.float32)
    _, out = jit(model.apply)(params, xs)
    # The same network written out by hand.
    p = to_np(params)
    h = np.zeros(16)
    for t, x in enumerate(np.asarray(xs, np.float64)):
        h = np_sigmoid(x @ p.cell.w_x + h @ p.cell.w_h)
        np.testing.assert_allclose(out[t], np_sigmoid(h @ p.readout.w), rtol=1e-5)
