"""The numpy reference of nicodjimenez/lstm: its random stream, forward equations, hand-written
gradient, published output, and its weights in rnn_jax's LSTM layout."""

import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.cells import LSTMCarry, LSTMParams, lstm
from rnn_jax.tasks.lstm2014 import reference2014 as ref


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))  # a different formula from the module's on purpose


def _small(seed=1, hidden=5, x_dim=3, steps=4, scale=1.0):
    """Parameters larger than the original's, so every gate is well away from its linear regime."""
    rng = np.random.RandomState(seed)
    params = ref.Params2014(
        *(scale * rng.uniform(-1, 1, (hidden, x_dim + hidden)) for _ in range(4)),
        *(scale * rng.uniform(-1, 1, hidden) for _ in range(4)),
    )
    return params, rng.uniform(-1, 1, (steps, x_dim)), rng.uniform(-0.5, 0.5, steps)


def test_rand_arr_stream_reseeds_every_array():
    hidden, x_dim = 7, 3
    params, xs = ref.stream(hidden=hidden, x_dim=x_dim)
    draws = np.random.RandomState(0).random_sample(hidden * (x_dim + hidden) + 4 * x_dim)
    w = draws[: hidden * (x_dim + hidden)].reshape(hidden, x_dim + hidden) * 0.2 - 0.1
    for p in params[:4]:
        np.testing.assert_array_equal(p, w)
    for p in params[4:]:
        np.testing.assert_array_equal(p, draws[:hidden] * 0.2 - 0.1)
    np.testing.assert_array_equal(xs, draws[hidden : hidden + 4 * x_dim].reshape(4, x_dim))
    # test.py's own seed is overridden by rand_arr's reseeding
    for a, b in zip(ref.stream(seed=5, hidden=hidden, x_dim=x_dim), (params, xs)):
        np.testing.assert_array_equal(
            np.concatenate([np.ravel(v) for v in a]), np.concatenate([np.ravel(v) for v in b])
        )
    assert all(p.dtype == np.float64 for p in params) and xs.dtype == np.float64


def test_sequential_stream_draws_each_array_in_turn():
    hidden, x_dim = 7, 3
    params, xs = ref.stream(seed=3, hidden=hidden, x_dim=x_dim, init="sequential")
    sizes = [hidden * (x_dim + hidden)] * 4 + [hidden] * 4
    draws = np.random.RandomState(3).random_sample(sum(sizes) + 4 * x_dim)
    offsets = np.cumsum([0] + sizes)
    for p, start, stop in zip(params, offsets[:-1], offsets[1:]):
        np.testing.assert_array_equal(p.ravel(), (draws[start:stop] - 0.5) * 0.1)
    np.testing.assert_array_equal(xs, draws[offsets[-1] :].reshape(4, x_dim))
    with pytest.raises(ValueError, match="init"):
        ref.stream(init="normal")


def test_forward_follows_the_equations():
    params, xs, _ = _small()
    states, predictions = ref.forward(params, xs)
    hidden, x_dim = params.b_g.shape[0], xs.shape[1]
    s, h = np.zeros(hidden), np.zeros(hidden)
    for t, x in enumerate(xs):
        pre = {
            k: np.einsum("hx,x->h", w[:, :x_dim], x) + np.einsum("hk,k->h", w[:, x_dim:], h) + b
            for k, w, b in zip("gifo", params[:4], params[4:])
        }
        g, i, f, o = np.tanh(pre["g"]), _sigmoid(pre["i"]), _sigmoid(pre["f"]), _sigmoid(pre["o"])
        s = g * i + s * f
        h = s * o  # no tanh on the cell output
        for name, want in zip("gifosh", (g, i, f, o, s, h)):
            np.testing.assert_allclose(getattr(states, name)[t], want, rtol=1e-13, atol=1e-15)
        assert predictions[t] == states.h[t, 0]


def _loss(params, xs, ys):
    _, predictions = ref.forward(params, xs)
    return np.sum((predictions - ys) ** 2)


def test_gradient_matches_central_differences():
    params, xs, ys = _small()
    loss, grads = ref.loss_and_grads(params, xs, ys)
    assert loss == pytest.approx(_loss(params, xs, ys), rel=1e-14)
    eps = 1e-5
    for k, (p, g) in enumerate(zip(params, grads)):
        numeric = np.zeros_like(p)
        for index in np.ndindex(p.shape):
            plus, minus = p.copy(), p.copy()
            plus[index] += eps
            minus[index] -= eps
            numeric[index] = (
                _loss(params._replace(**{params._fields[k]: plus}), xs, ys)
                - _loss(params._replace(**{params._fields[k]: minus}), xs, ys)
            ) / (2 * eps)
        assert np.abs(g).max() > 1e-3  # every parameter group takes part
        assert np.linalg.norm(g - numeric) <= 1e-8 * np.linalg.norm(g), params._fields[k]  # measured 6e-10
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9 * np.abs(g).max(), err_msg=params._fields[k])


def test_gradient_of_the_full_size_problem_along_random_directions():
    params, xs = ref.stream()
    ys = np.array(ref.TARGETS)
    _, grads = ref.loss_and_grads(params, xs, ys)
    rng = np.random.RandomState(0)
    eps = 1e-6
    for _ in range(3):
        v = ref.Params2014(*(rng.standard_normal(p.shape) for p in params))
        plus = ref.Params2014(*(p + eps * d for p, d in zip(params, v)))
        minus = ref.Params2014(*(p - eps * d for p, d in zip(params, v)))
        numeric = (_loss(plus, xs, ys) - _loss(minus, xs, ys)) / (2 * eps)
        analytic = sum(np.vdot(g, d) for g, d in zip(grads, v))
        assert analytic == pytest.approx(numeric, rel=1e-8)


def test_train_records_the_forward_pass_before_each_update():
    params, xs = ref.stream(hidden=6, x_dim=4)
    history = ref.train(iterations=2, log=False, hidden=6, x_dim=4)
    loss, grads = ref.loss_and_grads(params, xs)
    np.testing.assert_array_equal(history.predictions[0], ref.forward(params, xs)[1])
    assert history.losses[0] == loss
    after_one = ref.apply_diff(params, grads, 0.1)
    for p, want in zip(after_one, params):
        assert not np.array_equal(p, want)
    np.testing.assert_array_equal(history.predictions[1], ref.forward(after_one, xs)[1])
    loss1, grads1 = ref.loss_and_grads(after_one, xs)
    assert history.losses[1] == loss1
    for p, q, d in zip(history.params, after_one, grads1):
        np.testing.assert_array_equal(p, q - 0.1 * d)


# `python test.py` of nicodjimenez/lstm (the rand_arr stream, 100 memory cells, 50 inputs), as
# published in "[RNN] Simple LSTM代码实现 & BPTT理论推导" (Hzwcode.github.io, 2017-02-24, section
# "Test LSTM Network"), printed by Python 2 as "y_pred[%d] : %f" and str(loss) (12 digits).
PUBLISHED = {
    0: ([0.041349, 0.069304, 0.116993, 0.165624], 0.753483886253),
    1: ([-0.223297, -0.323066, -0.394514, -0.433984], 0.599065083953),
    2: ([-0.140715, -0.181836, -0.219436, -0.238904], 0.445095565699),
    3: ([-0.138010, -0.166091, -0.203394, -0.233627], 0.428061605701),
    4: ([-0.139986, -0.157368, -0.195655, -0.237612], 0.413581711096),
    5: ([-0.144410, -0.151859, -0.191676, -0.246137], 0.399770442382),
    6: ([-0.150306, -0.147921, -0.189501, -0.257119], 0.386136380384),
    7: ([-0.157119, -0.144659, -0.188067, -0.269322], 0.372552465753),
    8: ([-0.164490, -0.141537, -0.186737, -0.281914], 0.358993892096),
    9: ([-0.172187, -0.138216, -0.185125, -0.294326], 0.345449256686),
    10: ([-0.180071, -0.134484, -0.183013, -0.306198], 0.331888922037),
    97: ([-0.500351, 0.201185, 0.099026, -0.499154], 3.1926009167e-06),
    98: ([-0.500342, 0.201122, 0.099075, -0.499190], 2.88684626031e-06),
    99: ([-0.500331, 0.201063, 0.099122, -0.499226], 2.61076360677e-06),
}


def test_reproduces_the_published_output():
    history = ref.train(log=False)
    assert history.losses.shape == (100,) and history.predictions.shape == (100, 4)
    for iteration, (predictions, loss) in PUBLISHED.items():
        np.testing.assert_allclose(history.predictions[iteration], predictions, rtol=0, atol=5.0001e-7)
        # the first iterations agree to every printed digit; by iteration 99 the rounding of the
        # machine's BLAS shows: another copy of the same output ends in 2.61076357962e-06
        assert history.losses[iteration] == pytest.approx(loss, rel=1e-11 if iteration <= 10 else 2e-8)


def test_prints_as_test_py(capsys):
    ref.train(iterations=11, log=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "iter  0: y_pred = [ 0.04135,  0.06930,  0.11699,  0.16562], loss: 7.535e-01"
    assert lines[1] == "iter  1: y_pred = [-0.22330, -0.32307, -0.39451, -0.43398], loss: 5.991e-01"
    assert lines[10] == "iter 10: y_pred = [-0.18007, -0.13448, -0.18301, -0.30620], loss: 3.319e-01"


def _numpy_lstm_step(w_x, w_h, b, c, h, x):
    """A step in rnn_jax's layout without the tanh on the cell output."""
    i, f, g, o = np.split(x @ w_x + h @ w_h + b, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return c, _sigmoid(o) * c


def test_rnn_jax_layout_computes_the_same_step():
    params, xs, _ = _small(hidden=5, x_dim=3)
    w_x, w_h, b = ref.to_rnn_jax_layout(params)
    assert w_x.shape == (3, 20) and w_h.shape == (5, 20) and b.shape == (20,)
    rng = np.random.RandomState(2)
    s, h = rng.uniform(-1, 1, 5), rng.uniform(-1, 1, 5)
    c_new, h_new = _numpy_lstm_step(w_x, w_h, b, s, h, xs[0])
    *_, s_new, h_want = ref.step(params, s, h, xs[0])
    np.testing.assert_allclose(c_new, s_new, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h_new, h_want, rtol=1e-13, atol=1e-15)


def test_rnn_jax_lstm_reads_the_layout_in_its_gate_order(x64):
    params, xs, _ = _small(hidden=5, x_dim=3)
    w_x, w_h, b = ref.to_rnn_jax_layout(params)
    rng = np.random.RandomState(2)
    s, h = rng.uniform(-1, 1, 5), rng.uniform(-1, 1, 5)
    cell = lstm(5)
    carry, y = cell.apply(
        LSTMParams(jnp.asarray(w_x), jnp.asarray(w_h), jnp.asarray(b)),
        LSTMCarry(jnp.asarray(h), jnp.asarray(s)),
        jnp.asarray(xs[0]),
    )
    _, _, _, o, s_new, _ = ref.step(params, s, h, xs[0])
    np.testing.assert_allclose(carry.c, s_new, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y, o * np.tanh(s_new), rtol=1e-12, atol=1e-14)  # rnn_jax's default keeps the tanh
