"""rnn_jax replays Nico Jimenez's 2014 numpy LSTM (rnn_jax.tasks.lstm2014.reference2014): the same
gradient, the same predictions and loss at every iteration, the same printed lines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import compose

from rnn_jax.cells import LSTMParams
from rnn_jax.driver import checkpoint
from rnn_jax.driver.loop import run
from rnn_jax.driver.rundir import read_jsonl
from rnn_jax.tasks.lstm2014 import reference2014 as ref
from rnn_jax.tasks.lstm2014.task import initial_params, make_cell, make_loss, problem


def preset(*overrides):
    return compose("experiment=lstm2014", *overrides)


@pytest.mark.parametrize("init", ["rand_arr", "sequential"])
def test_gradient_equals_the_hand_written_backward(x64, init):
    cfg = preset(f"task.init={init}")
    params = initial_params(cfg, jnp.float64)
    (loss, predictions), grads = jax.value_and_grad(make_loss(make_cell(cfg, jnp.float64)), has_aux=True)(
        params, problem(cfg, jnp.float64)
    )
    ref_params, xs = ref.stream(0, 100, 50, 4, init)
    ref_loss, ref_grads = ref.loss_and_grads(ref_params, xs)
    np.testing.assert_allclose(predictions, ref.forward(ref_params, xs)[1], rtol=1e-12, atol=1e-15)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    for got, want in zip(grads, LSTMParams(*ref.to_rnn_jax_layout(ref_grads))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def reference_envelope(history):
    """How far the reference itself moves when its initial weights move by one part in 1e15 (its
    own rounding): this training amplifies such a change from 1e-16 to about 1e-9 (relative loss)
    between iterations 30 and 40, so no implementation that sums in another order can agree more
    closely than this after that."""
    params, xs = ref.stream()
    params = ref.Params2014(*(a * (1 + 1e-15) for a in params))
    losses = []
    for _ in range(len(history.losses)):
        loss, grads = ref.loss_and_grads(params, xs)
        losses.append(loss)
        params = ref.apply_diff(params, grads)
    return np.abs(np.array(losses) - history.losses), params


def test_the_app_replays_every_iteration_and_prints_as_the_original(tmp_path, capsys):
    summary = run(preset(), tmp_path)
    jax.config.update("jax_enable_x64", False)
    printed = capsys.readouterr().out.splitlines()
    history = ref.train(log=True)
    expected = capsys.readouterr().out.splitlines()
    records = list(read_jsonl(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in records] == list(range(1, 101))
    losses, predictions = np.array([r["loss"] for r in records]), np.array([r["predictions"] for r in records])
    # Equal to rounding while the training is insensitive to it (the first 30 iterations) ...
    np.testing.assert_allclose(losses[:30], history.losses[:30], rtol=1e-12)
    np.testing.assert_allclose(predictions[:30], history.predictions[:30], rtol=1e-12, atol=1e-14)
    # ... and afterwards within 20x of how far the reference moves under its own rounding.
    envelope, perturbed = reference_envelope(history)
    assert (
        envelope[-1] / history.losses[-1] > 1e-10
    )  # the sensitivity is real (measured 5.5e-9), not a bound chosen loose
    assert np.all(np.abs(losses - history.losses) <= 20 * np.maximum.accumulate(envelope) + 1e-14)
    assert summary["final_loss"] == losses[-1] and summary["predictions"] == list(predictions[-1])
    assert [line for line in printed if line.startswith("iter")] == expected
    state, _ = checkpoint.load(tmp_path / "checkpoints" / "last")
    moved = [
        np.abs(a - b).max() for a, b in zip(ref.to_rnn_jax_layout(perturbed), ref.to_rnn_jax_layout(history.params))
    ]
    for name, want, tol in zip(LSTMParams._fields, ref.to_rnn_jax_layout(history.params), moved):
        np.testing.assert_allclose(state["params"][name], want, rtol=0, atol=20 * tol + 1e-14)
