"""Binary addition: data, metric, the 2015 gradient and trajectory, seeds, generalisation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.build import model_config
from rnn_jax.driver import checkpoint
from rnn_jax.driver.backend import one_device
from rnn_jax.driver.config import Config, TrainConfig
from rnn_jax.driver.loop import run
from rnn_jax.driver.optim import SGDConfig, make_optimizer
from rnn_jax.model import DenseParams, ModelParams
from rnn_jax.tasks.addition import data as addition
from rnn_jax.tasks.addition import evaluate, reference2015
from rnn_jax.tasks.addition.evaluate import (
    GENERALIZATION_SEED,
    PackedPairs,
    generalization_pairs,
    in_pieces,
    pack_pairs,
    packed_exact,
)
from rnn_jax.tasks.addition.program import addition_loss, params_from_2015
from rnn_jax.tasks.addition.task import AdditionTask, addition_model, make


@pytest.mark.parametrize("bits, full_range", [(8, False), (5, True), (70, False)])
def test_sampled_sums_are_the_sums_of_the_operands(bits, full_range):
    batch = jax.jit(addition.sample, static_argnums=(1, 2, 3))(jax.random.PRNGKey(0), 64, bits, full_range)
    T = addition.sequence_length(bits, full_range)
    assert batch.inputs.shape == (T, 64, 2) and batch.targets.shape == (T, 64, 1)
    a = addition.bits_int(batch.inputs[..., 0])
    b = addition.bits_int(batch.inputs[..., 1])
    s = addition.bits_int(batch.targets[..., 0])
    limit = 2**bits if full_range else 2 ** (bits - 1)
    assert all(0 <= v < limit for v in a + b)
    assert s == [x + y for x, y in zip(a, b)]  # the sum fits: nothing is truncated
    assert len(set(a)) > min(32, limit // 2)  # operands vary
    if full_range:
        assert any(x + y >= 2**bits for x, y in zip(a, b))  # the extra step reads out a carry


def test_a_narrower_width_padded_is_its_own_draw_and_loss_then_zeros():
    logits = jax.random.normal(jax.random.key(4), (10, 16, 1))

    @jax.jit  # one program for every case
    def cases(key):
        out = []
        for full_range in (False, True):
            narrow = addition.sample(key, 16, 5, full_range)
            wide = addition.sample(key, 16, 9, full_range, own_bits=jnp.int32(5))  # the fused launcher's padding
            T = addition.sequence_length(5, full_range)
            own = [addition_loss(loss, logits[:T], narrow.targets) for loss in ("bce", "mse")]
            padded = [addition_loss(loss, logits[: T + 4], wide.targets, jnp.int32(T)) for loss in ("bce", "mse")]
            out.append((T, narrow, wide, own, padded))
        return out

    for T, narrow, wide, own, padded in cases(jax.random.key(3, impl="rbg")):
        np.testing.assert_array_equal(wide.inputs[:T], narrow.inputs)
        np.testing.assert_array_equal(wide.targets[:T], narrow.targets)
        assert wide.targets.shape[0] == T + 4 and not np.asarray(wide.inputs[T:]).any()
        assert not np.asarray(wide.targets[T:]).any()
        np.testing.assert_allclose(padded, own, rtol=1e-6)


def test_encoding_is_lsb_first_with_carries():
    batch = addition.encode([3, 127, 0], [1, 1, 0], 8)
    np.testing.assert_array_equal(batch.inputs[:, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0])  # 3
    np.testing.assert_array_equal(batch.targets[:, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0])  # 4: two carries
    np.testing.assert_array_equal(batch.targets[:, 1, 0], [0, 0, 0, 0, 0, 0, 0, 1])  # 128
    np.testing.assert_array_equal(batch.targets[:, 2, 0], 0)
    with pytest.raises(ValueError, match="outside"):
        addition.encode([128], [0], 8)
    full = addition.encode([255], [255], 8, full_range=True)
    assert addition.bits_int(full.targets[..., 0]) == [510]


def test_all_pairs_covers_every_pair_once():
    batch = addition.all_pairs(4)
    pairs = set(zip(addition.bits_int(batch.inputs[..., 0]), addition.bits_int(batch.inputs[..., 1])))
    assert len(pairs) == batch.inputs.shape[1] == 64 == addition.operand_count(4, False)
    assert addition.bits_int(batch.targets[..., 0]) == [
        a + b for a, b in zip(*map(addition.bits_int, (batch.inputs[..., 0], batch.inputs[..., 1])))
    ]


def test_exact_accuracy_needs_every_bit():
    targets = jnp.array([[1, 0, 1], [0, 0, 1]], jnp.float32)[..., None]  # [T=2, B=3, 1]
    logits = jnp.array([[5.0, -1.0, 2.0], [-3.0, 0.5, 1.0]])[..., None]  # example 1 wrong at t=1
    assert float(addition.exact_accuracy(logits, targets)) == pytest.approx(2 / 3)
    assert float(addition.exact_accuracy(-logits, targets)) == 0.0


def model_2015():
    cfg = Config(
        task=AdditionTask(loss="mse", data="numpy2015", batch_size=1),
        model=model_config(
            "elman",
            hidden=16,
            activation="sigmoid",
            use_bias=False,
            init="uniform",
            readout_bias=False,
            readout_init="uniform",
        ),
        optim=SGDConfig(lr=0.1),
        train=TrainConfig(steps=300, dtype="float64", log_every=100),
    )
    return cfg


def test_gradient_equals_the_2015_update(x64):
    model = addition_model(model_2015())
    weights, operands = reference2015.stream(0, 5)
    params = params_from_2015(weights, jnp.float64)
    for a, b in operands:
        _, update = reference2015.forward_backward(weights, int(a), int(b))
        batch = addition.encode([a], [b], 8, dtype=np.float64)
        grads = jax.grad(lambda p: addition_loss("mse", model.logits(p, batch.inputs)[1], batch.targets))(params)
        np.testing.assert_allclose(-grads.cell.w_x, update.w_in, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(-grads.cell.w_h, update.w_rec, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(-grads.readout.w, update.w_out, rtol=1e-12, atol=1e-14)


def test_numpy2015_replay_follows_the_reference_trajectory(tmp_path):
    cfg = model_2015()
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, progress=False),
        task=dataclasses.replace(cfg.task, generalization_bits=[8], generalization_samples=8),
    )
    try:
        run(cfg, tmp_path)
    finally:
        jax.config.update("jax_enable_x64", False)
    ref, _ = reference2015.train(seed=0, steps=cfg.train.steps)
    state, meta = checkpoint.load(tmp_path / "checkpoints" / "last")
    params = state["train"]["params"]
    assert meta["step"] == 300
    np.testing.assert_allclose(params["cell"]["w_h"][0], ref.w_rec, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(params["cell"]["w_x"][0], ref.w_in, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(params["readout"]["w"][0], ref.w_out, rtol=1e-10, atol=1e-12)


def perfect_adder(dtype=jnp.float32, carry_weight=1.0) -> ModelParams:
    """3 sigmoid units counting a + b + carry >= 1, 2, 3; the sum bit is h1 - h2 + h3, the carry h2."""
    k = 20.0
    w_x = k * jnp.ones((2, 3), dtype)
    w_h = jnp.zeros((3, 3), dtype).at[1, :].set(k * carry_weight)
    b = -k * jnp.array([0.5, 1.5, 2.5], dtype)
    readout = DenseParams(k * jnp.array([[1.0], [-1.0], [1.0]], dtype), jnp.array([-0.5 * k], dtype))
    return ModelParams(rj.ElmanParams(w_x, w_h, b), readout)


def test_generalization_of_a_hand_set_adder():
    cfg = Config(
        task=AdditionTask(generalization_bits=[64, 8], generalization_samples=500),
        model=model_config("elman", hidden=3, activation="sigmoid"),
    )
    model = addition_model(cfg)
    widths, pieces = generalization_pairs([64, 8], 500, False, 3)
    assert widths == [8, 64] and pieces.inputs.shape == (1, 64, -(-500 // 8) + 500, 2)
    exact = np.asarray(packed_exact(model, perfect_adder(), pieces, 1000)).reshape(2, 500)
    np.testing.assert_array_equal(exact, 1.0)
    # Without its carry it adds exactly the pairs that never carry: a & b == 0.
    exact = np.asarray(packed_exact(model, perfect_adder(carry_weight=0.0), pieces, 1000)).reshape(2, 500)
    for j, n in enumerate(widths):
        pairs = addition.random_pairs(GENERALIZATION_SEED + n, 500, n)
        a, b = addition.bits_int(pairs.inputs[..., 0]), addition.bits_int(pairs.inputs[..., 1])
        no_carry = np.array([(x & y) == 0 for x, y in zip(a, b)], dtype=float)
        np.testing.assert_array_equal(exact[j], no_carry)
    assert exact[1].mean() < exact[0].mean()


@pytest.mark.parametrize(
    "cell,layers,full_range,rows", [("elman", 1, False, 1000), ("lstm", 2, True, 7), ("gru", 1, False, 16)]
)
def test_packed_evaluation_equals_each_pair_run_alone(cell, layers, full_range, rows):
    """Pairs of several widths packed end to end in rows, and the rows cut into pieces of `rows`,
    are judged exactly as when each width's batch runs through `model.logits` on its own; a
    model that half adds makes the verdicts vary."""
    cfg = Config(task=AdditionTask(full_range=full_range), model=model_config(cell, hidden=4, layers=layers))
    model = addition_model(cfg)
    params = model.init(jax.random.PRNGKey(3), 2)
    # Readout bias at the median logit of the widest batch, so that about half the bits are 1.
    batches = [addition.random_pairs(n, count, n, full_range) for n, count in [(3, 37), (5, 50), (11, 23)]]
    _, z = model.logits(params, batches[-1].inputs)
    params = params._replace(readout=params.readout._replace(b=params.readout.b - np.median(z)))
    bit_rate = np.mean(np.asarray(model.logits(params, batches[-1].inputs)[1]) > 0)
    assert 0.3 < bit_rate < 0.7

    expected = []
    for b in batches:
        _, logits = model.logits(params, b.inputs)
        expected.append(np.all((np.asarray(logits) > 0) == (b.targets > 0.5), axis=(0, 2)).astype(np.float32))
    pieces = in_pieces(pack_pairs(batches), rows, PackedPairs(0, 0, False, -1))
    assert pieces.inputs.shape[0] == -(-pack_pairs(batches).inputs.shape[1] // rows)
    got = np.asarray(jax.jit(packed_exact, static_argnums=(0, 3))(model, params, pieces, 110))
    np.testing.assert_array_equal(got, np.concatenate(expected))


def test_the_evaluation_set_in_pieces_gives_the_accuracy_of_the_whole_set(monkeypatch):
    """A wide task's evaluation set is cut into pieces (here forced small: 3 pieces, the last one
    padded); the accuracy equals `exact_accuracy` on the whole set at once."""
    cfg = Config(
        task=AdditionTask(bits=5, eval_samples=100), model=model_config("elman", hidden=3, activation="sigmoid")
    )
    model = addition_model(cfg)
    monkeypatch.setattr(evaluate, "EVAL_PIECE_FLOATS", 5 * 3 * 40)  # 40 rows per piece
    pieces = evaluate.eval_set(5, False, 100, 3)
    assert pieces.inputs.shape == (3, 5, 40, 2) and pieces.valid.sum() == 100 and pieces.inputs.dtype == np.uint8
    params = perfect_adder(carry_weight=0.0)  # right exactly on the pairs that never carry
    whole = addition.eval_batch(5, False, 100, GENERALIZATION_SEED)
    _, logits = model.logits(params, whole.inputs)
    expected = float(addition.exact_accuracy(logits, whole.targets))
    assert 0 < expected < 1
    assert float(jax.jit(evaluate.exact_fraction, static_argnums=0)(model, params, pieces)) == pytest.approx(
        expected, abs=1e-7
    )


def test_a_seed_left_with_non_finite_weights_is_a_failed_seed():
    """Its losses were finite up to its last update, which left NaN weights: the summary lists it
    under failed_seeds with accuracy 0, and the other seed keeps its figures."""
    cfg = Config(
        task=AdditionTask(bits=4, generalization_bits=[8], generalization_samples=16, seeds=2),
        model=model_config("lstm", hidden=4),
    )
    task = make(cfg, make_optimizer(cfg.optim, cfg.train.steps), one_device())
    state = task.program.init()
    params = state.train.params
    w_h = params.cell.w_h.at[1, 0, 0].set(jnp.nan)
    state = state._replace(train=state.train._replace(params=params._replace(cell=params.cell._replace(w_h=w_h))))
    summary = task.report.summarize(state, task.report.tally._replace(accuracy=[0.5, 0.5]))
    assert summary["failed_seeds"] == [1] and summary["status"] == "ok"
    assert summary["per_seed_accuracy"] == [0.5, 0.0]
    assert summary["generalization_per_seed"]["8"][1] == 0.0
