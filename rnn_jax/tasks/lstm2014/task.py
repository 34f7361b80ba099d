"""Nico Jimenez's 2014 numpy LSTM replayed by rnn_jax: `python -m rnn_jax.train experiment=lstm2014`.

rnn_jax's LSTM without the tanh on the cell output (`lstm(..., output_tanh=False)`) starts from
the reference's random weights (`reference2014.stream`, mapped by `to_rnn_jax_layout`) and reads
its four inputs; the loss is sum_t (h_t[0] - y_t)^2 and the update plain SGD, so every iteration's
predictions and loss are the reference's (`reference2014.train`). Each log line is printed in the
original's format.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax.build import dtype_of
from rnn_jax.cells import LSTMParams, lstm
from rnn_jax.tasks import base
from rnn_jax.tasks.lstm2014 import reference2014
from rnn_jax.training import TrainState, init_state, make_chunk, make_step
from rnn_jax.unroll import unroll


@dataclass(frozen=True)
class LSTM2014Task:
    """The toy problem of nicodjimenez/lstm's test.py: 4 random inputs, 4 targets read from cell 0."""

    name: str = "lstm2014"
    hidden: int = 100  # memory cells; the network is fixed by the reference, so the run has no `model` section
    x_dim: int = 50  # input size X
    init: str = (
        "rand_arr"  # the reference's random stream: rand_arr (the published output) | sequential (the first revision)
    )
    targets: List[float] = field(default_factory=lambda: list(reference2014.TARGETS))


def check(cfg) -> None:
    base.check_at_least("task.x_dim", cfg.task.x_dim, 1)
    base.check_choice("task.init", cfg.task.init, reference2014.INITS)
    if not cfg.task.targets:
        raise base.ConfigError("task.targets", list(cfg.task.targets), "must name at least one target")
    base.check_at_least("task.hidden", cfg.task.hidden, 1)
    if cfg.model is not None:
        keys = ", ".join(f"model.{k}" for k in dataclasses.asdict(cfg.model))
        raise base.ConfigError(
            "model",
            cfg.model.cell,
            f"lstm2014 replays one fixed LSTM layer of task.hidden cells and takes no model settings ({keys})",
        )


class Problem(NamedTuple):
    inputs: jax.Array  # [T, X]
    targets: jax.Array  # [T]


def initial_params(cfg, dtype) -> LSTMParams:
    """The reference's initial weights for `seed`, in rnn_jax's layout."""
    params, _ = reference2014.stream(cfg.seed, cfg.task.hidden, cfg.task.x_dim, len(cfg.task.targets), cfg.task.init)
    return LSTMParams(*(jnp.asarray(a, dtype) for a in reference2014.to_rnn_jax_layout(params)))


def problem(cfg, dtype) -> Problem:
    _, xs = reference2014.stream(cfg.seed, cfg.task.hidden, cfg.task.x_dim, len(cfg.task.targets), cfg.task.init)
    return Problem(jnp.asarray(xs, dtype), jnp.asarray(cfg.task.targets, dtype))


def make_cell(cfg, dtype, platform=None):
    """The reference's network: one LSTM layer of `task.hidden` cells without the output tanh."""
    return lstm(cfg.task.hidden, output_tanh=False, dtype=dtype, platform=platform)


def make_loss(cell):
    """`loss(params, problem) -> (sum_t (h_t[0] - y_t)^2, h[:, 0])` over one unbatched sequence."""

    def loss(params: LSTMParams, p: Problem):
        _, hs = unroll(cell, params, p.inputs)  # [T, H]
        predictions = hs[:, 0]
        return jnp.sum((predictions - p.targets) ** 2), predictions

    return loss


class LSTM2014Tally(NamedTuple):
    loss: Optional[float] = None  # the latest update's loss
    predictions: Optional[list] = None  # its h_t[0] for each step t


def observe(tally: LSTM2014Tally, outputs, step: int) -> tuple[LSTM2014Tally, dict]:
    """The chunk's last update: its loss and predictions (`outputs`: `([k], [k, T])`)."""
    losses, predictions = (np.asarray(x) for x in outputs)
    tally = LSTM2014Tally(float(losses[-1]), [float(x) for x in predictions[-1]])
    return tally, tally._asdict()


def status(tally: LSTM2014Tally) -> str:
    return base.DIVERGED if tally.loss is not None and not np.isfinite(tally.loss) else base.TRAINING


def log_line(record: dict) -> str:
    """The reference's own line for the update `record["step"] - 1`."""
    return reference2014.format_line(record["step"] - 1, record["predictions"], record["loss"])


def summarize(state: TrainState, tally: LSTM2014Tally) -> dict:
    return {"final_loss": tally.loss, "predictions": tally.predictions}


def train_chunk(step, unroll_steps: int, state: TrainState, p: Problem, start, k: int):
    """k updates of `step` on the one problem; outputs each one's loss and predictions
    `([k], [k, T])`, computed before it."""
    return make_chunk(lambda s, _: step(s, p), unroll_steps)(state, jnp.arange(k))


def make(cfg, optimizer: optax.GradientTransformation, devices) -> base.Task:
    dtype = dtype_of(cfg.train.dtype)
    step = make_step(make_loss(make_cell(cfg, dtype, devices.platform)), optimizer)
    program = base.Program(
        init=lambda: init_state(initial_params(cfg, dtype), optimizer),
        chunk=partial(train_chunk, step, cfg.train.unroll_steps),
        consts=problem(cfg, dtype),
    )
    report = base.Report(LSTM2014Tally(), observe, status, summarize)
    return base.Task(program, report, display=base.Display(progress=("loss",), log_line=log_line))


def memory(cfg) -> dict:
    """A few megabytes at most: one layer over four steps."""
    H, X, size = cfg.task.hidden, cfg.task.x_dim, 8 if cfg.train.dtype == "float64" else 4
    return {("parameters and optimizer state", "model.hidden"): 4 * 4 * H * (X + H + 1) * size}


SPEC = base.TaskSpec(
    LSTM2014Task,
    check,
    make,
    memory,
    parallel=lambda cfg: (None, 1),
    objective="final_loss",
    description="nicodjimenez's 2014 numpy LSTM, replayed: per-iteration predictions and loss",
)
