"""The task protocol's pieces, each alone on hand-made inputs. (That runs of one shape stacked along
the addition program's replica axis train each as alone is tested with the fused launcher,
tests/test_fused_launcher.py.)"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax.build import MODEL_CONFIGS, model_config
from rnn_jax.driver.config import Config
from rnn_jax.tasks.addition import report as addition_report
from rnn_jax.tasks.addition import task as addition
from rnn_jax.tasks.base import DIVERGED, SOLVED, TRAINING, parameter_count, restore_tally, values_kept_per_step
from rnn_jax.tasks.charlm import task as charlm
from rnn_jax.tasks.lstm2014 import reference2014
from rnn_jax.tasks.lstm2014 import task as lstm2014


def test_addition_observe_folds_a_chunk_into_the_tally():
    tally = addition_report.fresh_tally(3)
    losses = np.array([[1.0, 2.0], [np.nan, 1.0], [0.5, 0.5]])
    tally, fields = addition_report.observe(tally, (losses, np.array([1.0, 1.0, 0.5])), 10)
    assert tally.finite == [True, False, True]
    assert tally.accuracy == [1.0, 0.0, 0.5]  # a seed with a non-finite loss counts 0
    assert tally.steps_to_solve == [10, None, None]
    assert fields["loss"] == pytest.approx((1.5 + 0.5) / 2)  # the mean over the finite seeds
    assert fields["accuracy"] == pytest.approx(0.5)
    assert math.isnan(fields["per_seed"]["loss"][1])
    # Later: a solved seed keeps its first step; a non-finite one stays failed though finite now.
    tally, _ = addition_report.observe(tally, (np.ones((3, 2)), np.array([1.0, 1.0, 1.0])), 20)
    assert tally.steps_to_solve == [10, None, 20] and tally.finite == [True, False, True]
    one, fields = addition_report.observe(addition_report.fresh_tally(1), (np.ones((1, 2)), np.array([0.25])), 5)
    assert "per_seed" not in fields and one.accuracy == [0.25]


def test_addition_status():
    t = addition_report.AdditionTally([True, True], [1.0, 1.0], [10, 10])
    assert addition_report.status(True, t) == SOLVED
    assert addition_report.status(False, t) == TRAINING  # stop_when_solved=false trains on
    assert addition_report.status(True, t._replace(accuracy=[1.0, 0.99])) == TRAINING
    assert addition_report.status(True, t._replace(finite=[False, False], accuracy=[0.0, 0.0])) == DIVERGED


def test_addition_seed_figures_count_non_finite_weights_as_failed():
    tally = addition_report.AdditionTally([True, True, False], [1.0, 0.5, 0.0], [30, None, None])
    per_width = np.array([[1.0, 0.75], [0.5, 0.25], [0.9, 0.9]])
    fig = addition_report.seed_figures(tally, [4, 5, 6], [True, False, True], [16, 32], per_width)
    assert fig["failed_seeds"] == [5, 6] and fig["status"] == "ok"
    assert fig["per_seed_accuracy"] == [1.0, 0.0, 0.0]
    assert fig["success_rate"] == pytest.approx(1 / 3) and fig["final_accuracy"] == pytest.approx(1 / 3)
    assert fig["generalization_per_seed"] == {"16": [1.0, 0.0, 0.0], "32": [0.75, 0.0, 0.0]}
    assert fig["generalization"]["32"] == pytest.approx(0.25)
    failed = addition_report.seed_figures(
        tally._replace(finite=[False] * 3), [4, 5, 6], [True] * 3, [16], per_width[:, :1]
    )
    assert failed["status"] == "failed" and "error" in failed


def test_charlm_observe_and_status():
    tally, fields = charlm.observe(charlm.CharLMTally(None), np.array([math.log(2), math.log(2)]), 7)
    assert tally.train_bpc == pytest.approx(1.0) and fields["train_loss"] == pytest.approx(math.log(2))
    assert charlm.status(tally) == TRAINING and charlm.status(charlm.CharLMTally(None)) == TRAINING
    assert charlm.status(charlm.CharLMTally(float("nan"))) == DIVERGED


def test_lstm2014_observe_keeps_the_chunks_last_update_and_prints_the_references_line():
    losses, predictions = np.array([3.0, 2.0]), np.array([[0.1, 0.2], [0.3, 0.4]])
    tally, fields = lstm2014.observe(lstm2014.LSTM2014Tally(), (losses, predictions), 2)
    assert tally.loss == 2.0 and tally.predictions == pytest.approx([0.3, 0.4]) and fields == tally._asdict()
    assert lstm2014.log_line({"step": 2, **fields}) == reference2014.format_line(1, [0.3, 0.4], 2.0)
    assert lstm2014.status(tally._replace(loss=float("inf"))) == DIVERGED


def test_a_tally_restored_from_a_checkpoint_keeps_its_type_and_defaults():
    initial = addition_report.fresh_tally(2)
    restored = restore_tally(initial, {"finite": [True, False], "accuracy": [1.0, 0.0], "unknown": 1})
    assert isinstance(restored, addition_report.AdditionTally)
    assert restored.finite == [True, False] and restored.steps_to_solve == [None, None]
    assert restore_tally(lstm2014.LSTM2014Tally(), {}) == lstm2014.LSTM2014Tally()  # a checkpoint of old runs


def test_memory_estimates_take_shapes_from_the_model_for_every_cell():
    """A product `x @ p` keeps its input for the backward pass: 2 values per step of 2 inputs;
    `(x @ p) @ q` also keeps `x @ p`, 3 more. Every cell's addition estimate comes from its model."""
    init = lambda key: (jnp.zeros((2, 3)), jnp.zeros((3, 1)))  # noqa: E731
    step = jax.ShapeDtypeStruct((2,), jnp.float32)
    assert values_kept_per_step(init, lambda p, x: x @ p[0], step) == 2
    assert values_kept_per_step(init, lambda p, x: (x @ p[0]) @ p[1], step) == 2 + 3
    assert parameter_count(init) == 9
    for cell in MODEL_CONFIGS:
        small, large = (
            addition.memory(Config(task=addition.AdditionTask(), model=model_config(cell, hidden=h))) for h in (4, 8)
        )
        for part in small:
            assert 0 < small[part] <= large[part], (cell, part)
