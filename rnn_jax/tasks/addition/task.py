"""Binary addition as a driver task: its config (`task.*`), checks, memory estimate, and `make`,
which binds the device program (`program.py`: `task.seeds` replicas trained at once, exactness
checked after every chunk) and the host report (`report.py`: the tally, the status, length
generalisation and carry chains measured at the end) into a `Task`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional

import jax
import numpy as np
import optax

from rnn_jax.build import build_model, dtype_of
from rnn_jax.tasks.addition import carry_chain, reference2015
from rnn_jax.tasks.addition import data as addition
from rnn_jax.tasks.addition import report as host
from rnn_jax.tasks.addition.evaluate import EVAL_PIECE_FLOATS, eval_set
from rnn_jax.tasks.addition.program import (
    AdditionConsts,
    Setup,
    chunk,
    compile_options,
    initial_state,
    initial_state_2015,
    partition,
    sharded_chunk,
)
from rnn_jax.tasks.base import (
    ConfigError,
    Display,
    Program,
    Report,
    Task,
    TaskSpec,
    check_at_least,
    check_choice,
    check_has_model,
    log_every,
    parameter_count,
    values_kept_per_step,
)

LOSSES = ("bce", "mse")


DATA = ("jax", "numpy2015")


@dataclass(frozen=True)
class AdditionTask:
    """Binary addition, least-significant bit first: 2 inputs and 1 output per step."""

    name: str = "addition"
    bits: int = 8  # sequence length n
    full_range: bool = (
        False  # False: operands in [0, 2^(n-1)), the sum fits n bits (2015); True: [0, 2^n), n+1 output bits
    )
    loss: str = "bce"  # bce (logits) | mse (0.5 * sum of squared errors of sigmoid outputs, the 2015 loss)
    # jax: operands from the run's PRNG key | numpy2015: replay the 2015 script's numpy stream (init and operands)
    data: str = "jax"
    eval_samples: int = 65536  # all operand pairs when there are at most this many, else this many random pairs
    generalization_bits: List[int] = field(default_factory=lambda: [16, 32, 64, 256])
    generalization_samples: int = 4096  # random operand pairs per generalisation width
    seeds: int = 1  # independent replicas trained at once with vmap (the run's parallel axis)
    batch_size: int = 64  # operand pairs per replica and step
    stop_when_solved: bool = True  # stop at the first evaluation where every seed is exact
    # After training (tasks/addition/carry_chain.py): adversarial sums (2^n-1)+1, +0, +(2^n-1) and
    # carries propagated over runs of L bits, for each n = L here; [] skips both.
    carry_chain_lengths: List[int] = field(default_factory=lambda: [10, 100, 1000])
    carry_chain_samples: int = 4  # random pairs per carry-run length
    long_random_bits: List[int] = field(default_factory=lambda: [1000])  # random operands this wide; [] skips
    long_random_samples: int = 4  # random pairs per width
    chain_piece_steps: int = 4096  # time steps evaluated at once (memory: S x R x steps x hidden values)


def check(cfg) -> None:
    task, m = cfg.task, cfg.model
    check_has_model(cfg)
    check_at_least("task.bits", task.bits, 2)  # 1 bit has one operand pair, 0 + 0: nothing to learn
    check_choice("task.loss", task.loss, LOSSES)
    check_choice("task.data", task.data, DATA)
    check_at_least("task.eval_samples", task.eval_samples, 1)
    check_at_least("task.generalization_samples", task.generalization_samples, 1)
    check_at_least("task.seeds", task.seeds, 1)
    check_at_least("task.batch_size", task.batch_size, 1)
    if not task.generalization_bits:
        raise ConfigError(
            "task.generalization_bits", list(task.generalization_bits), "must name at least one width, e.g. [16, 32]"
        )
    for n in task.generalization_bits:
        check_at_least("task.generalization_bits", n, 1)
    for key in ("carry_chain_lengths", "long_random_bits"):
        for n in getattr(task, key):
            check_at_least(f"task.{key}", n, 1)
    for key in ("carry_chain_samples", "long_random_samples", "chain_piece_steps"):
        check_at_least(f"task.{key}", getattr(task, key), 1)
    if task.data == "numpy2015" and not (m.cell == "elman" and m.layers == 1 and task.batch_size == 1):
        raise ConfigError(
            "task.data",
            task.data,
            "numpy2015 replays the 2015 script: needs model=elman, model.layers=1, task.batch_size=1",
        )


def addition_model(cfg, platform: Optional[str] = None):
    """The model of an addition run: the cell stack, a 1-wide readout, a sigmoid."""
    return build_model(cfg.model, 1, output_activation="sigmoid", dtype=dtype_of(cfg.train.dtype), platform=platform)


def make_setup(cfg, optimizer: optax.GradientTransformation, platform: Optional[str]) -> Setup:
    """The device program's static part for `cfg`."""
    return Setup(
        addition_model(cfg, platform),
        optimizer,
        cfg.task.loss,
        cfg.task.bits,
        cfg.task.full_range,
        cfg.task.batch_size,
        dtype_of(cfg.train.dtype),
        cfg.model.unroll,
        cfg.train.unroll_steps,
        cfg.model.hidden * cfg.model.layers,
    )


def make(cfg, optimizer: optax.GradientTransformation, devices) -> Task:
    """The task; with several devices, each trains `task.seeds / devices` of the replicas."""
    task: AdditionTask = cfg.task
    if task.seeds % devices.count:
        raise ConfigError(
            "task.seeds",
            task.seeds,
            f"must be a multiple of the {devices.count} devices (backend.devices), each training as many replicas",
        )
    dtype, platform, replay = dtype_of(cfg.train.dtype), devices.platform, task.data == "numpy2015"
    setup = make_setup(cfg, optimizer, platform)
    seeds = [cfg.seed + i for i in range(task.seeds)]
    width = setup.state_size * len(seeds)
    consts = AdditionConsts(
        jax.device_put(eval_set(task.bits, task.full_range, task.eval_samples, width)),
        replay_stream(cfg, seeds, dtype) if replay else None,
    )
    if replay:
        init = partial(initial_state_2015, setup, seeds, cfg.model.hidden)
    else:
        init = partial(initial_state, setup, seeds, compile_options(platform, one_shot=True))
    program = Program(
        init=init,
        chunk=partial(chunk, setup) if devices.count == 1 else partial(sharded_chunk, setup, devices.mesh, replay),
        consts=consts,
        partition=partition(replay),
        compile_options=compile_options(platform),
    )
    report = Report(
        tally=host.fresh_tally(len(seeds)),
        observe=host.observe,
        status=partial(host.status, task.stop_when_solved),
        summarize=partial(host.summarize, setup, task, seeds, platform),
    )
    return Task(program, report, display=Display(progress=("loss", "accuracy")))


def replay_stream(cfg, seeds: list[int], dtype) -> addition.Batch:
    """Every training example of the 2015 numpy stream, `[S, steps, T, 2]`: one unbatched example
    per step (batch_size is 1, and a batch axis of size 1 would turn every vector-matrix product
    into a slower matrix-matrix one)."""
    inputs, targets = [], []
    for seed in seeds:
        _, operands = reference2015.stream(seed, cfg.train.steps, cfg.task.bits, cfg.model.hidden)
        batch = addition.encode(
            operands[:, 0], operands[:, 1], cfg.task.bits, False, np.dtype(dtype)
        )  # [T, steps, ...]
        inputs.append(np.moveaxis(batch.inputs, 1, 0))
        targets.append(np.moveaxis(batch.targets, 1, 0))
    return jax.device_put(addition.Batch(np.stack(inputs), np.stack(targets)))


def memory(cfg) -> dict:
    """The peak's largest parts in bytes (see `rnn_jax.driver.memory`), from the config alone."""
    task, t, m = cfg.task, cfg.train, cfg.model
    T = addition.sequence_length(task.bits, task.full_range)
    pairs = min(addition.operand_count(task.bits, task.full_range), task.eval_samples)
    size = 8 if t.dtype == "float64" else 4
    S, B, K = cfg.task.seeds, cfg.task.batch_size, min(log_every(t), t.steps)
    model = addition_model(cfg)
    params = parameter_count(lambda key: model.init(key, 2))
    float_step = jax.ShapeDtypeStruct((2,), dtype_of(t.dtype))
    per_step = values_kept_per_step(lambda key: model.init(key, 2), lambda p, x: model.logits(p, x)[1], float_step)
    widths = sum(n + task.full_range for n in set(task.generalization_bits))
    return {
        ("the evaluation set", "task.eval_samples"): 2
        * pairs
        * T
        * 3,  # uint8 bits, in pieces on the host and on the device
        ("the generalisation pairs", "task.generalization_samples"): 3 * 8 * task.generalization_samples * widths,
        ("a chunk's batches", "train.log_every"): S * K * B * T * 3 * size,
        ("the backward pass", "task.batch_size"): 2 * S * B * T * per_step * size,
        ("an evaluation piece", "task.eval_samples"): min(pairs * T * m.hidden * m.layers * S, EVAL_PIECE_FLOATS)
        * per_step
        // (m.hidden * m.layers)
        * size,
        ("parameters and optimizer state", "model.hidden"): 4 * S * params * size,
        ("a carry-chain piece", "task.chain_piece_steps"): S
        * max(3, task.carry_chain_samples, task.long_random_samples)
        * min(task.chain_piece_steps, chain_steps(task))
        * per_step
        * size,
    }


def chain_steps(task: AdditionTask) -> int:
    """The longest sequence of the carry-chain evaluation (`carry_chain`), 0 when there is none."""
    runs = [2 * carry_chain.PAD + n + 3 for n in task.carry_chain_lengths]
    return max([*runs, *(n + 1 for n in task.long_random_bits)], default=0)


SPEC = TaskSpec(
    AdditionTask,
    check,
    make,
    memory,
    parallel=lambda cfg: ("task.seeds", cfg.task.seeds),
    objective="success_rate",
    description="binary addition: exact-sum accuracy over seeds, length generalisation",
)
