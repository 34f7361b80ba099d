"""The 2015 numpy RNN that learns binary addition ("anyone can code an LSTM"), kept as a reference.

Per step it reads one bit of each operand, least-significant bit first, through 16 sigmoid hidden
units with a recurrent matrix and no biases, to one sigmoid output. Weights start U[-1, 1), the
error is y - out on every bit, backpropagated through time by hand (delta = error * out * (1 - out)),
and plain SGD with learning rate 0.1 updates after every example. The random stream is the
original's: `np.random.seed(seed)`, then the three weight matrices (input, output, recurrent),
then two `randint(2**(bits-1))` operands per update.

This module is deliberately the original algorithm, loops and all; `rnn_jax` is tested against it.
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple

import numpy as np


class Weights2015(NamedTuple):
    w_in: np.ndarray  # synapse_0, [2, H]
    w_out: np.ndarray  # synapse_1, [H, 1]
    w_rec: np.ndarray  # synapse_h, [H, H]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def int2binary(bits: int) -> np.ndarray:
    """The original lookup table: row v is v's bits, most significant first."""
    values = np.arange(2**bits, dtype=np.uint64)
    return ((values[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint64)) & 1).astype(np.int64)


def initial_weights(rng: np.random.RandomState, hidden: int = 16) -> Weights2015:
    w_in = 2 * rng.random_sample((2, hidden)) - 1
    w_out = 2 * rng.random_sample((hidden, 1)) - 1
    w_rec = 2 * rng.random_sample((hidden, hidden)) - 1
    return Weights2015(w_in, w_out, w_rec)


def draw_operands(rng: np.random.RandomState, bits: int = 8):
    a = rng.randint(2 ** (bits - 1))
    b = rng.randint(2 ** (bits - 1))
    return a, b


def stream(seed: int = 0, steps: int = 10_000, bits: int = 8, hidden: int = 16):
    """The initial weights and the `[steps, 2]` operands that the 2015 script draws for `seed`."""
    rng = np.random.RandomState(seed)
    weights = initial_weights(rng, hidden)
    operands = np.array([draw_operands(rng, bits) for _ in range(steps)], dtype=np.int64)
    return weights, operands


def forward_backward(w: Weights2015, a: int, b: int, bits: int = 8, table=None):
    """One example, as the original writes it: the output bits (least significant first) and the
    update (= minus the gradient of 0.5 * sum(err^2))."""
    table = int2binary(bits) if table is None else table
    hidden = w.w_rec.shape[0]
    a_bin, b_bin, c_bin = table[a], table[b], table[a + b]
    layer_2_deltas = list()
    layer_1_values = list()
    layer_1_values.append(np.zeros(hidden))
    outputs = []
    for position in range(bits):
        X = np.array([[a_bin[bits - position - 1], b_bin[bits - position - 1]]])
        y = np.array([[c_bin[bits - position - 1]]]).T
        layer_1 = sigmoid(np.dot(X, w.w_in) + np.dot(layer_1_values[-1], w.w_rec))
        layer_2 = sigmoid(np.dot(layer_1, w.w_out))
        layer_2_error = y - layer_2
        layer_2_deltas.append(layer_2_error * layer_2 * (1 - layer_2))
        outputs.append(np.round(layer_2[0][0]))
        layer_1_values.append(copy.deepcopy(layer_1))
    u_in, u_out, u_rec = np.zeros_like(w.w_in), np.zeros_like(w.w_out), np.zeros_like(w.w_rec)
    future_layer_1_delta = np.zeros(hidden)
    for position in range(bits):
        X = np.array([[a_bin[position], b_bin[position]]])
        layer_1 = layer_1_values[-position - 1]
        prev_layer_1 = layer_1_values[-position - 2]
        layer_2_delta = layer_2_deltas[-position - 1]
        layer_1_delta = (future_layer_1_delta.dot(w.w_rec.T) + layer_2_delta.dot(w.w_out.T)) * layer_1 * (1 - layer_1)
        u_out += np.atleast_2d(layer_1).T.dot(layer_2_delta)
        u_rec += np.atleast_2d(prev_layer_1).T.dot(layer_1_delta)
        u_in += X.T.dot(layer_1_delta)
        future_layer_1_delta = layer_1_delta
    return np.array(outputs), Weights2015(u_in, u_out, u_rec)


def train(seed: int = 0, steps: int = 10_000, bits: int = 8, hidden: int = 16, lr: float = 0.1, log_every: int = 0):
    """Runs the 2015 algorithm; returns the final weights and the seconds the updates took."""
    rng = np.random.RandomState(seed)
    w = initial_weights(rng, hidden)
    table = int2binary(bits)
    start = time.perf_counter()
    for j in range(steps):
        a, b = draw_operands(rng, bits)
        out, u = forward_backward(w, a, b, bits, table)
        for p, d in zip(w, u):
            p += d * lr
        if log_every and j % log_every == 0:
            guess = int(sum(int(o) << k for k, o in enumerate(out)))
            print(f"step {j}: {a} + {b} = {guess} ({'right' if guess == a + b else 'wrong'})")
    return w, time.perf_counter() - start


def exact_accuracy(w: Weights2015, bits: int = 8) -> float:
    """Fraction of all operand pairs in [0, 2^(bits-1))^2 whose sum comes out exactly (vectorised)."""
    n = 2 ** (bits - 1)
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a, b = a.ravel(), b.ravel()
    h = np.zeros((a.size, w.w_rec.shape[0]))
    guess = np.zeros(a.size, dtype=np.int64)
    for t in range(bits):
        x = np.stack([(a >> t) & 1, (b >> t) & 1], axis=1).astype(np.float64)
        h = sigmoid(x @ w.w_in + h @ w.w_rec)
        guess += (sigmoid(h @ w.w_out)[:, 0] > 0.5).astype(np.int64) << t
    return float(np.mean(guess == a + b))


if __name__ == "__main__":
    weights, seconds = train(log_every=1000)
    print(f"10,000 updates in {seconds:.2f} s; exact accuracy on all pairs: {exact_accuracy(weights):.4f}")
