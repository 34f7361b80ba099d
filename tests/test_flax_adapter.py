"""The Flax adapter against Flax's own `LSTMCell` with the same weights: the step inside `nn.RNN`,
and the whole-sequence module inside a small model, outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from rnn_testing import assert_trees_close, jit, normal, to_flax_lstm

import rnn_jax as rj

T, B, I, H = 8, 3, 5, 4
LENGTHS = jnp.array([T, 5, 1])


def test_cell_module_in_flax_rnn_matches_flax_lstmcell():
    cell = rj.lstm(H)
    ours, theirs = nn.RNN(rj.RNNCellModule(cell), return_carry=True), nn.RNN(nn.LSTMCell(H), return_carry=True)
    xs = normal(1, (B, T, I))
    variables = jit(lambda xs: ours.init(jax.random.PRNGKey(0), xs))(xs)
    params = variables["params"]["cell"]["cell"]
    assert isinstance(params, rj.LSTMParams)  # the cell's own pytree, usable with cell.apply

    @jit
    def both(variables, xs):
        mapped = {"params": {"cell": to_flax_lstm(variables["params"]["cell"]["cell"], H)}}
        return ours.apply(variables, xs, seq_lengths=LENGTHS), theirs.apply(mapped, xs, seq_lengths=LENGTHS)

    (carry, ys), ((c, h), f_ys) = both(variables, xs)
    for b, n in enumerate(LENGTHS.tolist()):
        np.testing.assert_allclose(ys[b, :n], f_ys[b, :n], rtol=1e-5, atol=1e-6)
    assert_trees_close((carry.h, carry.c), (h, c), 1e-5)


class Tagger(nn.Module):
    """A recurrent layer and a dense readout; `layer` is the adapter or Flax's own `nn.RNN`."""

    layer: nn.Module

    @nn.compact
    def __call__(self, xs, lengths):
        return nn.Dense(2)(self.layer(xs, seq_lengths=lengths))


def test_sequence_module_in_a_model_matches_flax_outputs_and_gradients():
    """`RNNModule` (through `rnn_jax.unroll`, the fused backward) in a Flax model against the same
    model with `nn.RNN(nn.LSTMCell)`: loss and every gradient, mapped to Flax's layout."""
    ours, theirs = Tagger(rj.RNNModule(rj.lstm(H, backward="fused"))), Tagger(nn.RNN(nn.LSTMCell(H)))
    xs = normal(1, (B, T, I))
    targets = normal(2, (B, T, 2))
    variables = jit(lambda xs: ours.init(jax.random.PRNGKey(0), xs, LENGTHS))(xs)
    valid = (jnp.arange(T)[None, :] < LENGTHS[:, None])[..., None]  # [B, T, 1]

    def loss(model, params):
        return jnp.sum(valid * (model.apply({"params": params}, xs, LENGTHS) - targets) ** 2)

    def to_flax(params):
        return {"Dense_0": params["Dense_0"], "layer": {"cell": to_flax_lstm(params["layer"]["cell"], H)}}

    @jit
    def both(params):
        got = jax.value_and_grad(lambda p: loss(ours, p))(params)
        want = jax.value_and_grad(lambda p: loss(theirs, p))(to_flax(params))
        return (got[0], to_flax(got[1])), want

    got, want = both(variables["params"])
    assert_trees_close(got, want, 1e-5)


def test_linear_cells_in_both_modules_equal_a_python_loop_of_their_step():
    """The linear-recurrence cells, which Flax does not have, inside `nn.RNN(RNNCellModule)` and as
    `RNNModule` (the parallel scan): each equals a Python loop of the cell's own step with the same
    parameters, padded steps leaving the carry as it was."""
    xs = normal(1, (B, T, I))
    for make in (rj.mingru, rj.minlstm, rj.lru, rj.rglru):
        cell = make(H)
        step, whole = nn.RNN(rj.RNNCellModule(cell), return_carry=True), rj.RNNModule(cell, scan="parallel")
        variables = jit(lambda xs: whole.init(jax.random.PRNGKey(0), xs))(xs)
        params = variables["params"]["cell"]
        ys = jit(lambda v, xs: whole.apply(v, xs, seq_lengths=LENGTHS))(variables, xs)
        carry_s, ys_s = jit(lambda p, xs: step.apply({"params": {"cell": {"cell": p}}}, xs, seq_lengths=LENGTHS))(
            params, xs
        )
        apply = jit(cell.apply)
        for b, n in enumerate(LENGTHS.tolist()):
            carry = cell.initial_carry(())
            for t in range(n):
                carry, y = apply(params, carry, xs[b, t])
                np.testing.assert_allclose(ys[b, t], y, rtol=1e-5, atol=1e-6, err_msg=make.__name__)
                np.testing.assert_allclose(ys_s[b, t], y, rtol=1e-5, atol=1e-6, err_msg=make.__name__)
            assert_trees_close(jax.tree.map(lambda c: c[b], carry_s), carry, 1e-5)
