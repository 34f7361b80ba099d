"""Nico Jimenez's numpy LSTM (github.com/nicodjimenez/lstm, `lstm.py` and `test.py`; its backward pass
is explained at nicodjimenez.github.io/2014/08/08/lstm.html), kept as a reference.

One layer of H memory cells reads x (dimension X) with the previous (s, h) through the
concatenation xc = [x, h]; every weight matrix is [H, X + H]:

    g = tanh(W_g xc + b_g)    i = sigmoid(W_i xc + b_i)
    f = sigmoid(W_f xc + b_f)    o = sigmoid(W_o xc + b_o)
    s' = g * i + s * f    h' = s' * o    (no tanh on the cell output)

from s = h = 0. The toy task of `test.py`: four fixed random inputs, targets y = [-0.5, 0.2, 0.1, -0.5]
read from the first cell, loss sum_t (h_t[0] - y_t)^2 (so dL/dh_t[0] = 2 (h_t[0] - y_t)), its exact
gradient backpropagated through the four steps and summed over them, and `p -= 0.1 * dp` on every
parameter, 100 times. Each iteration prints the four predictions and the loss of the forward pass
that precedes its update, in `test.py`'s format (`format_line`).

The random stream, as the original draws it (`init`):
  "rand_arr" (lstm.py as the repository keeps it, which made the published output): every array
    is `rand_arr(-0.1, 0.1, *shape)`, which calls `np.random.seed(0)` before
    `np.random.rand(*shape) * 0.2 - 0.1`. So the four weight matrices are one and the same
    U[-0.1, 0.1) matrix, the four biases one and the same vector (the first H values of that
    stream), and `test.py`'s own `np.random.seed(seed)` has no effect: the inputs, drawn after the
    parameters as `np.random.random(X)` four times, are draws H .. H + 4X of the seed-0 stream.
  "sequential" (the first revision of lstm.py): after `np.random.seed(seed)`,
    `(np.random.random(shape) - 0.5) * 0.1` for W_g, W_i, W_f, W_o, b_g, b_i, b_f, b_o in turn,
    U[-0.05, 0.05), then the four inputs.

The backward pass sums in the original's order (steps last to first; the input gradient as
W_i, W_f, W_o, W_g; the loss from the last step to the first), so it rounds as the original does.
Float64 throughout. `rnn_jax` is tested against this module; `to_rnn_jax_layout` gives its weights
in `rnn_jax.cells.lstm`'s layout.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import numpy as np

TARGETS = (-0.5, 0.2, 0.1, -0.5)  # test.py's y_list
INITS = ("rand_arr", "sequential")


class Params2014(NamedTuple):
    w_g: np.ndarray  # wg, [H, X + H]
    w_i: np.ndarray  # wi, [H, X + H]
    w_f: np.ndarray  # wf, [H, X + H]
    w_o: np.ndarray  # wo, [H, X + H]
    b_g: np.ndarray  # bg, [H]
    b_i: np.ndarray  # bi, [H]
    b_f: np.ndarray  # bf, [H]
    b_o: np.ndarray  # bo, [H]


class States2014(NamedTuple):
    """A forward pass's values, one row per step (the original's `LstmState`s)."""

    g: np.ndarray  # [T, H]
    i: np.ndarray  # [T, H]
    f: np.ndarray  # [T, H]
    o: np.ndarray  # [T, H]
    s: np.ndarray  # [T, H] cell state after the step
    h: np.ndarray  # [T, H] output after the step


class History2014(NamedTuple):
    predictions: np.ndarray  # [iterations, T]: h_t[0] of the forward pass before each update
    losses: np.ndarray  # [iterations]: the loss of that forward pass
    params: Params2014  # after the last update


def sigmoid(x):
    return 1.0 / (1 + np.exp(-x))


def rand_arr(rng: np.random.RandomState, a: float, b: float, *shape) -> np.ndarray:
    """The original's `rand_arr`: U[a, b) of `shape`, reseeding the stream with 0 first."""
    rng.seed(0)
    return rng.rand(*shape) * (b - a) + a


def initial_params(
    rng: np.random.RandomState, hidden: int = 100, x_dim: int = 50, init: str = "rand_arr"
) -> Params2014:
    """`LstmParam(hidden, x_dim)`'s parameters drawn from `rng` (standing in for `np.random`).

    Args:
      rng: the stream; "rand_arr" reseeds it with 0 (as the original reseeds `np.random`).
      hidden: H, `mem_cell_ct`.
      x_dim: X.
      init: "rand_arr" or "sequential" (module docstring).
    """
    shapes = [(hidden, x_dim + hidden)] * 4 + [(hidden,)] * 4  # wg, wi, wf, wo, bg, bi, bf, bo
    if init == "rand_arr":
        return Params2014(*(rand_arr(rng, -0.1, 0.1, *shape) for shape in shapes))
    if init == "sequential":
        return Params2014(*((rng.random_sample(shape) - 0.5) * 0.1 for shape in shapes))
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def inputs(rng: np.random.RandomState, n: int = 4, x_dim: int = 50) -> np.ndarray:
    """`[np.random.random(x_dim) for _ in y_list]`, as an [n, X] array."""
    return np.stack([rng.random_sample(x_dim) for _ in range(n)])


def stream(seed: int = 0, hidden: int = 100, x_dim: int = 50, n: int = 4, init: str = "rand_arr"):
    """The initial parameters and the [n, X] inputs that `test.py` draws after `np.random.seed(seed)`."""
    rng = np.random.RandomState(seed)
    params = initial_params(rng, hidden, x_dim, init)
    return params, inputs(rng, n, x_dim)


def step(params: Params2014, s: np.ndarray, h: np.ndarray, x: np.ndarray):
    """One step (`LstmNode.bottom_data_is`): returns (g, i, f, o, s', h'), each [H]."""
    xc = np.hstack((x, h))  # [X + H]
    g = np.tanh(params.w_g @ xc + params.b_g)
    i = sigmoid(params.w_i @ xc + params.b_i)
    f = sigmoid(params.w_f @ xc + params.b_f)
    o = sigmoid(params.w_o @ xc + params.b_o)
    s = g * i + s * f
    return g, i, f, o, s, s * o


def forward(params: Params2014, xs: np.ndarray):
    """Runs the [T, X] inputs from s = h = 0; returns (States2014, predictions [T] = h_t[0])."""
    hidden = params.b_g.shape[0]
    s, h = np.zeros(hidden), np.zeros(hidden)
    rows = []
    for x in xs:
        row = step(params, s, h, x)
        s, h = row[4], row[5]
        rows.append(row)
    states = States2014(*(np.stack(column) for column in zip(*rows)))
    return states, states.h[:, 0].copy()


def loss_and_grads(params: Params2014, xs: np.ndarray, ys=TARGETS):
    """The loss sum_t (h_t[0] - y_t)^2 and its gradient (`LstmNetwork.y_list_is`), by hand.

    Going back from the last step, with dh the loss's derivative in h_t plus what step t+1 sends
    back and ds what step t+1 sends back along the cell:
        ds <- o * dh + ds    do = s * dh    di = g * ds    dg = i * ds    df = s_{t-1} * ds
        dz_i = i (1 - i) di    dz_f = f (1 - f) df    dz_o = o (1 - o) do    dz_g = (1 - g^2) dg
        dW_k += dz_k xc_t^T    db_k += dz_k    (k = g, i, f, o)
        step t-1 receives dh = (sum_k W_k^T dz_k)[X:] and ds = ds * f.
    Returns (loss, Params2014 of gradients).
    """
    states, predictions = forward(params, xs)
    x_dim, hidden = xs.shape[1], params.b_g.shape[0]
    ys = np.asarray(ys, dtype=np.float64)
    grads = [np.zeros_like(p) for p in params]  # dW_g, dW_i, dW_f, dW_o, db_g, db_i, db_f, db_o
    loss = 0.0
    dh_next, ds_next = np.zeros(hidden), np.zeros(hidden)
    for t in reversed(range(len(xs))):
        loss += (predictions[t] - ys[t]) ** 2
        dh = np.zeros(hidden)
        dh[0] = 2 * (predictions[t] - ys[t])
        dh += dh_next
        g, i, f, o, s = states.g[t], states.i[t], states.f[t], states.o[t], states.s[t]
        h_prev = states.h[t - 1] if t > 0 else np.zeros(hidden)
        s_prev = states.s[t - 1] if t > 0 else np.zeros(hidden)
        xc = np.hstack((xs[t], h_prev))
        ds = o * dh + ds_next
        dz_i = (1.0 - i) * i * (g * ds)
        dz_f = (1.0 - f) * f * (s_prev * ds)
        dz_o = (1.0 - o) * o * (s * dh)
        dz_g = (1.0 - g**2) * (i * ds)
        for k, dz in ((1, dz_i), (2, dz_f), (3, dz_o), (0, dz_g)):
            grads[k] += np.outer(dz, xc)
            grads[k + 4] += dz
        dxc = np.zeros(x_dim + hidden)
        dxc += params.w_i.T @ dz_i
        dxc += params.w_f.T @ dz_f
        dxc += params.w_o.T @ dz_o
        dxc += params.w_g.T @ dz_g
        dh_next, ds_next = dxc[x_dim:], ds * f
    return loss, Params2014(*grads)


def apply_diff(params: Params2014, grads: Params2014, lr: float = 0.1) -> Params2014:
    """`LstmParam.apply_diff(lr)`: p - lr * dp for every parameter."""
    return Params2014(*(p - lr * d for p, d in zip(params, grads)))


def format_line(iteration: int, predictions, loss: float) -> str:
    """One iteration as `test.py` prints it: `iter  0: y_pred = [ 0.04135, ...], loss: 7.535e-01`."""
    preds = ", ".join("% 2.5f" % p for p in predictions)
    return "iter %2s: y_pred = [%s], loss: %.3e" % (iteration, preds, loss)


def train(
    iterations: int = 100,
    lr: float = 0.1,
    log: bool = True,
    seed: int = 0,
    hidden: int = 100,
    x_dim: int = 50,
    init: str = "rand_arr",
    ys=TARGETS,
) -> History2014:
    """`test.py`'s `example_0`: full-batch gradient descent on the four fixed inputs.

    Returns the predictions and loss of each iteration's forward pass (before its update) and the
    final parameters; with `log`, prints each iteration as the original does.
    """
    params, xs = stream(seed, hidden, x_dim, len(ys), init)
    predictions, losses = [], []
    for iteration in range(iterations):
        _, preds = forward(params, xs)
        loss, grads = loss_and_grads(params, xs, ys)
        if log:
            print(format_line(iteration, preds, loss))
        predictions.append(preds)
        losses.append(loss)
        params = apply_diff(params, grads, lr)
    return History2014(np.array(predictions).reshape(iterations, len(ys)), np.array(losses), params)


def to_rnn_jax_layout(params: Params2014):
    """The weights in `rnn_jax.cells.lstm`'s layout, z = x @ w_x + h @ w_h + b split as i, f, g, o.

    Returns (w_x [X, 4H], w_h [H, 4H], b [4H]). With this layout, rnn_jax's cell without the tanh on
    the cell output (and with zero added forget bias) computes `step`.
    """
    x_dim = params.w_g.shape[1] - params.w_g.shape[0]
    w = np.concatenate([params.w_i, params.w_f, params.w_g, params.w_o], axis=0)  # [4H, X + H]
    b = np.concatenate([params.b_i, params.b_f, params.b_g, params.b_o])  # [4H]
    return np.ascontiguousarray(w[:, :x_dim].T), np.ascontiguousarray(w[:, x_dim:].T), b


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Runs nicodjimenez/lstm's test.py, printing as it prints.")
    parser.add_argument("--init", choices=INITS, default="rand_arr")
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    train(iterations=args.iterations, init=args.init)
