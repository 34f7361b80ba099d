"""A trained addition network as float64 NumPy arrays, and its step written once for any arithmetic.

The verifier runs the same cell equations on plain arrays (simulation, counterexample search) and
on affine forms (proofs). `step(ar, net, state, pair)` is written against a small `Arith`
interface so that both share one text of the equations: `rnn_jax.verification.affine.AFFINE` and
`NUMPY` below. The state of a network is one flat vector per example, the layers' states laid end
to end (`[h]` for Elman and GRU, `[h, c]` for LSTM).

Equations (those of `rnn_jax.cells`, read from the checkpoint's config):

    Elman: h' = act(x @ w_x + h @ w_h + b)
    LSTM:  [i, f, g, o] = x @ w_x + h @ w_h + b;  c' = s(f) c + s(i) tanh(g);  h' = s(o) tanh(c')
           (h' = s(o) c' without output_tanh)
    GRU:   [r, z, n] = x @ w_x + b_x (+ h @ w_h);  n = tanh(x_n + r (h @ w_hn + b_hn));
           h' = n + z (h - n)          (the cell's (1 - z) n + z h, with one product fewer)
    logit = h_last @ w_out + b_out; the output bit is 1 when logit > 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

CELL_KINDS = ("elman", "lstm", "gru")
ACTIVATIONS = ("tanh", "sigmoid", "relu")
PAIRS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)  # input pair p = a + 2 b


class Layer(NamedTuple):
    kind: str  # "elman" | "lstm" | "gru"
    w_x: np.ndarray  # [I, G*H]
    w_h: np.ndarray  # [H, G*H]
    b: np.ndarray  # [G*H]; zeros for an Elman cell without bias
    b_hn: np.ndarray | None = None  # GRU: [H]
    activation: str = "tanh"  # Elman
    output_tanh: bool = True  # LSTM

    @property
    def hidden(self) -> int:
        return self.w_h.shape[0]

    @property
    def state_size(self) -> int:
        return 2 * self.hidden if self.kind == "lstm" else self.hidden


class Network(NamedTuple):
    """Layers, then the 1-wide readout; float64 copies of the trained (float32) weights."""

    layers: tuple
    w_out: np.ndarray  # [H_last]
    b_out: float

    @property
    def state_size(self) -> int:
        return sum(layer.state_size for layer in self.layers)

    @property
    def parameter_count(self) -> int:
        arrays = [a for layer in self.layers for a in (layer.w_x, layer.w_h, layer.b, layer.b_hn) if a is not None]
        return int(sum(a.size for a in arrays) + self.w_out.size + 1)


class Arith(NamedTuple):
    """The operations the equations need; `x` values are `[B, d]` arrays or affine forms."""

    const: Callable[[np.ndarray], Any]  # [B, d] exact values -> a value
    linear: Callable[[Any, np.ndarray, np.ndarray], Any]  # x @ w + b
    add: Callable[[Any, Any], Any]
    sub: Callable[[Any, Any], Any]
    mul: Callable[[Any, Any], Any]
    act: Callable[[str, Any], Any]  # elementwise tanh | sigmoid | relu
    cols: Callable[[Any, int, int], Any]  # x[:, start:stop]
    concat: Callable[[list], Any]  # along the last axis


def sigmoid(z):
    """The logistic function to a few ulp everywhere (no overflow, no cancellation for z << 0)."""
    q = np.exp(-np.abs(z))
    r = 1.0 / (1.0 + q)
    return np.where(z >= 0, r, q * r)


NUMPY_ACT = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda z: np.maximum(z, 0.0)}

NUMPY = Arith(
    const=lambda v: np.asarray(v, np.float64),
    linear=lambda x, w, b: x @ w + b,
    add=np.add,
    sub=np.subtract,
    mul=np.multiply,
    act=lambda name, x: NUMPY_ACT[name](x),
    cols=lambda x, i, j: x[:, i:j],
    concat=lambda xs: np.concatenate(xs, axis=-1),
)


def layer_step(ar: Arith, layer: Layer, state, x):
    """One layer's step: `(new_state, output)` from its state and its input `x`."""
    H = layer.hidden
    if layer.kind == "elman":
        h = ar.act(layer.activation, ar.linear(ar.concat([x, state]), np.concatenate([layer.w_x, layer.w_h]), layer.b))
        return h, h
    if layer.kind == "lstm":
        h, c = ar.cols(state, 0, H), ar.cols(state, H, 2 * H)
        z = ar.linear(ar.concat([x, h]), np.concatenate([layer.w_x, layer.w_h]), layer.b)  # [B, 4H]
        i, f, g, o = (ar.cols(z, k * H, (k + 1) * H) for k in range(4))
        c = ar.add(ar.mul(ar.act("sigmoid", f), c), ar.mul(ar.act("sigmoid", i), ar.act("tanh", g)))
        h = ar.mul(ar.act("sigmoid", o), ar.act("tanh", c) if layer.output_tanh else c)
        return ar.concat([h, c]), h
    # GRU: the gates r, z read x and h together; the candidate keeps its two halves apart.
    w_x, w_h = layer.w_x, layer.w_h
    rz = ar.linear(ar.concat([x, state]), np.concatenate([w_x[:, : 2 * H], w_h[:, : 2 * H]]), layer.b[: 2 * H])
    r, z = ar.act("sigmoid", ar.cols(rz, 0, H)), ar.act("sigmoid", ar.cols(rz, H, 2 * H))
    x_n = ar.linear(x, w_x[:, 2 * H :], layer.b[2 * H :])
    h_n = ar.linear(state, w_h[:, 2 * H :], layer.b_hn)
    n = ar.act("tanh", ar.add(x_n, ar.mul(r, h_n)))
    h = ar.add(n, ar.mul(z, ar.sub(state, n)))
    return h, h


def step(ar: Arith, net: Network, state, x):
    """`(new_state, logit)` of the whole network for inputs `x` (`[B, 2]`, or a value of `ar`)."""
    new, start = [], 0
    for layer in net.layers:
        part = ar.cols(state, start, start + layer.state_size)
        start += layer.state_size
        part, x = layer_step(ar, layer, part, x)
        new.append(part)
    logit = ar.linear(x, net.w_out[:, None], np.array([net.b_out]))
    return (new[0] if len(new) == 1 else ar.concat(new)), logit


def initial_state(net: Network, batch: int = 1) -> np.ndarray:
    """The zero state every sum starts from, `[batch, n]`."""
    return np.zeros((batch, net.state_size))


def run(net: Network, pairs: np.ndarray, state: np.ndarray | None = None, keep_states: bool = True):
    """Runs `[T, B]` input pairs (0..3, `a + 2 b`) in float64: `(states [T, B, n], logits [T, B])`,
    the state after each step (`keep_states=False`: None for the states, which thousands of steps
    of a batch would spend most of the time storing)."""
    T, B = pairs.shape
    state = initial_state(net, B) if state is None else state
    states, logits = np.empty((T, B, net.state_size)) if keep_states else None, np.empty((T, B))
    for t in range(T):
        state, logit = step(NUMPY, net, state, PAIRS[pairs[t]])
        logits[t] = logit[:, 0]
        if keep_states:
            states[t] = state
    return states, logits


# --- from a checkpoint ---------------------------------------------------------------------------


class NetworkError(ValueError):
    """Parameters or a config the verifier cannot read; the message says which and why."""


def _layer(kind: str, p: dict, model: dict) -> Layer:
    f64 = lambda a: np.asarray(a, np.float64)
    w_x, w_h = f64(p["w_x"]), f64(p["w_h"])
    if kind == "elman":
        b = f64(p["b"]) if p.get("b") is not None else np.zeros(w_h.shape[1])
        return Layer("elman", w_x, w_h, b, activation=model.get("activation", "tanh"))
    if kind == "lstm":
        return Layer("lstm", w_x, w_h, f64(p["b"]), output_tanh=bool(model.get("output_tanh", True)))
    return Layer("gru", w_x, w_h, f64(p["b_x"]), b_hn=f64(p["b_hn"]))


def _cell_layers(cell) -> list:
    """A cell's parameters, or a stack's (a list, or a dict with keys "0", "1", ...), as a list."""
    if isinstance(cell, dict) and "w_h" in cell:
        return [cell]
    if isinstance(cell, dict):
        return [cell[k] for k in sorted(cell, key=int)]
    return list(cell)


def seed_count(params: dict) -> int:
    """How many seeds a checkpoint's `state["train"]["params"]` holds (its leading axis)."""
    first = _cell_layers(params["cell"])[0]["w_h"]
    return int(np.shape(first)[0]) if np.ndim(first) == 3 else 1


def from_params(params: dict, model: dict, seed: int | None = None) -> Network:
    """The network of seed index `seed` from `state["train"]["params"]` (nested dicts of arrays,
    a leading seed axis when the checkpoint has one) and the run's `config["model"]`."""
    kind = model.get("cell")
    if kind not in CELL_KINDS:
        raise NetworkError(f"model.cell={kind!r}: the verifier knows {', '.join(CELL_KINDS)}")
    if kind == "elman" and model.get("activation", "tanh") not in ACTIVATIONS:
        raise NetworkError(f"model.activation={model.get('activation')!r}: allowed {', '.join(ACTIVATIONS)}")
    batched = np.ndim(_cell_layers(params["cell"])[0]["w_h"]) == 3
    pick = (lambda a: None if a is None else np.asarray(a)[seed]) if batched else (lambda a: a)
    cells = [{k: pick(v) for k, v in p.items()} for p in _cell_layers(params["cell"])]
    readout = {k: pick(v) for k, v in params["readout"].items()}
    layers = tuple(_layer(kind, p, model) for p in cells)
    w_out = np.asarray(readout["w"], np.float64)
    if w_out.ndim != 2 or w_out.shape[1] != 1:
        raise NetworkError(f"readout.w has shape {w_out.shape}; an addition network has a 1-wide readout")
    b_out = float(np.asarray(readout["b"]).reshape(-1)[0]) if readout.get("b") is not None else 0.0
    return Network(layers, w_out[:, 0], b_out)
