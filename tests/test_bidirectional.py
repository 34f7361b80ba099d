"""`bidirectional` against two `unroll` calls on each unpadded sequence, and against Flax's
`nn.Bidirectional` of `nn.RNN` (LSTMCell forward, GRUCell backward) with the same weights."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import assert_trees_close, init, jit, normal, to_flax_gru, to_flax_lstm

import rnn_jax as rj

T, B, I, H = 8, 3, 5, 4
LENGTHS = (T, 5, 1)
LAYERS = {
    "concat": rj.bidirectional(rj.lstm(H), rj.gru(H + 1)),
    "sum": rj.bidirectional(rj.stack([rj.elman(H), rj.lstm(H)]), rj.gru(H, backward="autodiff"), merge=jnp.add),
}


@functools.partial(jit, static_argnums=0)
def padded_and_alone(layer, params, xs, w):
    """Outputs, final carry and the gradient of a loss over the real steps: the padded batch in
    one `apply`, and each sequence alone, unpadded, through `unroll` forward and on the flipped
    sequence (outputs flipped back)."""

    def padded(params):
        carry, ys = layer.apply(params, xs, lengths=jnp.array(LENGTHS))
        return jnp.sum(w * jnp.sin(ys)), (carry, ys)

    def alone(params):
        loss, carries, rows = 0.0, [], []
        for b, n in enumerate(LENGTHS):
            fw, ys_fw = rj.unroll(layer.fw, params.fw, xs[:n, b])
            bw, ys_bw = rj.unroll(layer.bw, params.bw, xs[:n, b][::-1])
            merged = layer.merge(ys_fw, ys_bw[::-1])
            loss += jnp.sum(w[:n, b] * jnp.sin(merged))
            carries.append(rj.BidirectionalCarry(fw, bw))
            rows.append(jnp.concatenate([merged, jnp.zeros((T - n, merged.shape[-1]))]))
        carry = jax.tree.map(lambda *cs: jnp.stack(cs), *carries)
        return loss, (carry, jnp.stack(rows, axis=1))

    return [jax.value_and_grad(f, has_aux=True)(params) for f in (padded, alone)]


@pytest.mark.parametrize("merge", list(LAYERS))
def test_bidirectional_equals_two_unrolls_on_each_unpadded_sequence(merge):
    layer = LAYERS[merge]
    assert layer.output_size == {"concat": 2 * H + 1, "sum": H}[merge]
    params = init(layer, I)
    assert isinstance(params, rj.BidirectionalParams)
    xs = normal(1, (T, B, I))
    w = normal(2, (T, B, layer.output_size))
    got, want = padded_and_alone(layer, params, xs, w)
    (_, (carry, ys)), _ = got
    assert ys.shape == (T, B, layer.output_size)
    assert_trees_close(got, want, 1e-5)  # loss, final carries, outputs (zero on padding), gradients


def flax_bidirectional(return_carry):
    from flax import linen as nn

    return nn.Bidirectional(nn.RNN(nn.LSTMCell(H)), nn.RNN(nn.GRUCell(H)), return_carry=return_carry)


def test_bidirectional_matches_flax_with_seq_lengths():
    """Batch-major, as Flax's default: `time_major=False` on our side."""
    layer = rj.bidirectional(rj.lstm(H), rj.gru(H))
    params = init(layer, I)
    xs = normal(1, (B, T, I))  # [B, T, I]
    lengths = jnp.array(LENGTHS)
    flax_layer = flax_bidirectional(return_carry=True)
    variables = jax.eval_shape(lambda: flax_layer.init(jax.random.PRNGKey(2), xs, seq_lengths=lengths))
    mapped = {"forward_rnn": {"cell": to_flax_lstm(params.fw, H)}, "backward_rnn": {"cell": to_flax_gru(params.bw, H)}}
    assert jax.tree.structure(mapped) == jax.tree.structure(variables["params"])

    @jit
    def both(params, mapped, xs):
        ours = layer.apply(params, xs, lengths=lengths, time_major=False)
        theirs = flax_layer.apply({"params": mapped}, xs, seq_lengths=lengths)
        return ours, theirs

    (carry, ys), ((f_fw, f_bw), f_ys) = both(params, mapped, xs)
    for b, n in enumerate(LENGTHS):  # Flax leaves padding outputs unspecified; ours are zeros
        np.testing.assert_allclose(ys[b, :n], f_ys[b, :n], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
    c, h = f_fw  # Flax's LSTM carry is (c, h)
    assert_trees_close((carry.fw.h, carry.fw.c, carry.bw), (h, c, f_bw), 1e-5)


def test_bidirectional_with_resets_equals_each_segment_alone():
    """Segments laid end to end with `resets`: each direction restarts at segment bounds, so the
    packed row equals each segment run through the layer on its own."""
    layer = LAYERS["concat"]
    params = init(layer, I)
    xs = normal(3, (T, 1, I))
    resets = jnp.zeros((T, 1), bool).at[jnp.array([0, 3])].set(True)  # segments [0, 3) and [3, 8)

    @jit
    def packed_and_alone(params, xs):
        return layer.apply(params, xs, resets=resets)[1], [layer.apply(params, xs[a:b])[1] for a, b in [(0, 3), (3, T)]]

    packed, alone = packed_and_alone(params, xs)
    np.testing.assert_allclose(packed, jnp.concatenate(alone), rtol=1e-5, atol=1e-6)
