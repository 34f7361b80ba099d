"""The typed configuration schema: what `conf/` may say, checked before anything runs.

Hydra composes `conf/` against these dataclasses (registered in its ConfigStore by
`register_configs`), so an unknown key or a wrong type fails at start with Hydra's own message.
`validate` then checks ranges and choices and raises `ConfigError`, which the entry points print
as one line. The library itself never imports Hydra: these are plain dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from rnn_jax.driver.backend import BACKENDS
from rnn_jax.cells import CELLS
from rnn_jax.fused import ACTIVATIONS
from rnn_jax.initializers import INITIALIZERS

# The choices the library itself offers, taken from its tables so the two never drift apart.
CELL_NAMES = tuple(CELLS)
ACTIVATION_NAMES = tuple(ACTIVATIONS)
INIT_NAMES = INITIALIZERS
BACKEND_NAMES = BACKENDS
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "rmsprop", "adagrad")
SCHEDULE_NAMES = ("constant", "cosine", "exponential", "warmup_cosine")
DTYPE_NAMES = ("float32", "float64")
LOSS_NAMES = ("bce", "mse")
DATA_NAMES = ("jax", "numpy2015")


class ConfigError(ValueError):
    """A config value out of range; the message names the key and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={value!r} is not allowed; {allowed}")
        self.key = key


@dataclass
class AdditionTask:
    """Binary addition, least-significant bit first: 2 inputs and 1 output per step."""

    name: str = "addition"
    bits: int = 8  # sequence length n
    full_range: bool = False  # False: operands in [0, 2^(n-1)), the sum fits n bits (2015); True: [0, 2^n), n+1 output bits
    loss: str = "bce"  # bce (logits) | mse (0.5 * sum of squared errors of sigmoid outputs, the 2015 loss)
    data: str = "jax"  # jax: operands from the run's PRNG key | numpy2015: replay the 2015 script's numpy stream (init and operands)
    eval_samples: int = 65536  # all operand pairs when there are at most this many, else this many random pairs
    generalization_bits: List[int] = field(default_factory=lambda: [16, 32, 64, 256])
    generalization_samples: int = 4096  # random operand pairs per generalisation width


@dataclass
class CharLMTask:
    """Character-level language model over a UTF-8 corpus."""

    name: str = "charlm"
    corpus: Optional[str] = None  # path to a UTF-8 text file; None: the default stdlib corpus
    seq_len: int = 50
    val_fraction: float = 0.05
    embedding: int = 64
    dropout: float = 0.0
    eval_every: int = 200  # steps between validations (each writes a sample and the checkpoints)
    eval_batches: int = 20  # validation batches at most (of up to batch_size x seq_len characters)
    sample_length: int = 300  # characters sampled at each validation (0: none)
    sample_temperature: float = 0.8


@dataclass
class ModelConfig:
    cell: str = "elman"
    hidden: int = 16
    layers: int = 1
    activation: str = "tanh"  # Elman only
    use_bias: bool = True
    init: str = "pytorch"
    recurrent_init: Optional[str] = None  # None: same as init
    forget_bias: float = 1.0  # LSTM only
    readout_bias: bool = True
    readout_init: str = "pytorch"
    unroll: Optional[int] = None  # lax.scan unroll of the time loop; None: the measured default for the backend


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-2
    momentum: float = 0.9  # optim.name=momentum only
    clip_norm: Optional[float] = None  # global-norm gradient clipping
    schedule: str = "constant"
    decay_rate: float = 0.97  # exponential: lr * decay_rate ** (step / decay_steps)
    decay_steps: int = 1000
    warmup_steps: int = 0


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    seeds: int = 1  # independent replicas trained at once with vmap
    log_every: int = 100  # steps per compiled chunk; Python is touched only between chunks
    dtype: str = "float32"
    unroll_steps: int = 1  # lax.scan unroll of the loop over training steps inside a chunk
    stop_when_solved: bool = False  # addition: stop at the first log where every seed is exact
    resume: Optional[str] = None  # charlm: run directory to continue from
    progress: bool = True  # a progress bar on the terminal


@dataclass
class BackendConfig:
    name: str = "auto"
    compilation_cache: Optional[str] = None  # JAX's persistent compilation cache directory; None: off


@dataclass
class Config:
    task: Any = MISSING  # AdditionTask or CharLMTask, chosen by the task group
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    seed: int = 0


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(key, value, "allowed: " + ", ".join(map(str, allowed)))


def _at_least(key, value, low):
    if not value >= low:
        raise ConfigError(key, value, f"must be >= {low}")


def _positive(key, value):
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, value, "must be a finite number > 0")


def validate(cfg: Config) -> Config:
    """Checks ranges and choices; raises `ConfigError` naming the first bad key. Returns `cfg`."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    _choice("model.cell", m.cell, CELL_NAMES)
    _at_least("model.hidden", m.hidden, 1)
    _at_least("model.layers", m.layers, 1)
    _choice("model.activation", m.activation, ACTIVATION_NAMES)
    _choice("model.init", m.init, INIT_NAMES)
    if m.recurrent_init is not None:
        _choice("model.recurrent_init", m.recurrent_init, INIT_NAMES)
    _choice("model.readout_init", m.readout_init, INIT_NAMES)
    if m.unroll is not None:
        _at_least("model.unroll", m.unroll, 1)
    _choice("optim.name", o.name, OPTIMIZER_NAMES)
    _positive("optim.lr", o.lr)
    if not 0 <= o.momentum < 1:
        raise ConfigError("optim.momentum", o.momentum, "must be in [0, 1)")
    if o.clip_norm is not None:
        _positive("optim.clip_norm", o.clip_norm)
    _choice("optim.schedule", o.schedule, SCHEDULE_NAMES)
    _positive("optim.decay_rate", o.decay_rate)
    _at_least("optim.decay_steps", o.decay_steps, 1)
    _at_least("optim.warmup_steps", o.warmup_steps, 0)
    _at_least("train.steps", t.steps, 1)
    _at_least("train.batch_size", t.batch_size, 1)
    _at_least("train.seeds", t.seeds, 1)
    _at_least("train.log_every", t.log_every, 1)
    _at_least("train.unroll_steps", t.unroll_steps, 1)
    _choice("train.dtype", t.dtype, DTYPE_NAMES)
    _choice("backend.name", cfg.backend.name, BACKEND_NAMES)
    task = cfg.task
    if isinstance(task, AdditionTask):
        _at_least("task.bits", task.bits, 1)
        _choice("task.loss", task.loss, LOSS_NAMES)
        _choice("task.data", task.data, DATA_NAMES)
        _at_least("task.eval_samples", task.eval_samples, 1)
        _at_least("task.generalization_samples", task.generalization_samples, 1)
        if not task.generalization_bits:
            raise ConfigError("task.generalization_bits", list(task.generalization_bits), "must name at least one width, e.g. [16, 32]")
        for n in task.generalization_bits:
            _at_least("task.generalization_bits", n, 1)
        if t.resume is not None:
            raise ConfigError("train.resume", t.resume, "allowed only with task=charlm; addition runs are short and always start afresh")
        if task.data == "numpy2015" and not (m.cell == "elman" and m.layers == 1 and t.batch_size == 1):
            raise ConfigError(
                "task.data", task.data, "numpy2015 replays the 2015 script: needs model.cell=elman, model.layers=1, train.batch_size=1"
            )
    elif isinstance(task, CharLMTask):
        _at_least("task.seq_len", task.seq_len, 2)
        if not 0 < task.val_fraction < 1:
            raise ConfigError("task.val_fraction", task.val_fraction, "must be in (0, 1)")
        _at_least("task.embedding", task.embedding, 1)
        if not 0 <= task.dropout < 1:
            raise ConfigError("task.dropout", task.dropout, "must be in [0, 1)")
        _at_least("task.eval_every", task.eval_every, 1)
        _at_least("task.eval_batches", task.eval_batches, 1)
        _at_least("task.sample_length", task.sample_length, 0)
        _at_least("task.sample_temperature", task.sample_temperature, 0.0)
        if t.seeds != 1:
            raise ConfigError("train.seeds", t.seeds, "charlm trains one model per run: must be 1")
    else:
        raise ConfigError("task", type(task).__name__, "allowed: addition, charlm")
    return cfg


def register_configs() -> None:
    """Registers the schema with Hydra's ConfigStore (called by the entry points only)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="task", name="addition_schema", node=AdditionTask)
    cs.store(group="task", name="charlm_schema", node=CharLMTask)
