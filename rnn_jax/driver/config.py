"""The typed configuration: what `conf/` may say, checked before anything runs.

Frozen dataclasses, so nothing downstream can write back into the config. The app registers
them with Hydra's ConfigStore (`schema_nodes`), so an unknown key or a wrong type fails at start
with Hydra's own message; `validate` then checks ranges and choices against the registries
(`CELLS`, `OPTIMIZERS`, `SCHEDULES`, `TASKS`, ...) and raises `ConfigError`, which the app prints
as one line. Nothing here imports Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rnn_jax.build import DTYPES, ModelConfig
from rnn_jax.cells import ACTIVATIONS, CELLS
from rnn_jax.driver.backend import BACKENDS
from rnn_jax.driver.distributed import MODES, DistributedConfig
from rnn_jax.driver.loggers import LoggerConfig
from rnn_jax.driver.optim import OPTIMIZERS, SCHEDULES, OptimConfig
from rnn_jax.initializers import INITIALIZERS
from rnn_jax.tasks.registry import TASKS
from rnn_jax.tasks.base import ConfigError, check_at_least, check_choice, check_fraction, check_positive

__all__ = ["BackendConfig", "Config", "ConfigError", "ModelConfig", "OptimConfig", "TrainConfig", "validate"]


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    seeds: int = 1  # independent replicas trained at once with vmap
    log_every: Any = "auto"  # steps per compiled chunk, or auto (tasks.base.log_every); Python runs only between chunks
    dtype: str = "float32"
    unroll_steps: int = 1  # lax.scan unroll of the loop over training steps inside a chunk
    stop_when_solved: bool = False  # addition: stop at the first log where every seed is exact
    resume: Optional[str] = None  # a run directory to continue from (default: this run's own, if it has a checkpoint)
    progress: bool = True  # a progress bar on the terminal


@dataclass(frozen=True)
class BackendConfig:
    name: str = "auto"
    compilation_cache: Optional[str] = None  # JAX's persistent compilation cache directory; None: off
    devices: str = "all"  # the devices of the platform the run uses: all (in every process), or a count
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass(frozen=True)
class Config:
    task: Any = None  # the dataclass of TASKS[name].config, chosen by the task group
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0


def validate(cfg: Config) -> Config:
    """Checks ranges and choices; raises `ConfigError` naming the first bad key. Returns `cfg`."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    check_choice("model.cell", m.cell, tuple(CELLS))
    check_at_least("model.hidden", m.hidden, 1)
    check_at_least("model.layers", m.layers, 1)
    check_choice("model.activation", m.activation, tuple(ACTIVATIONS))
    check_choice("model.init", m.init, INITIALIZERS)
    if m.recurrent_init is not None:
        check_choice("model.recurrent_init", m.recurrent_init, INITIALIZERS)
    check_choice("model.readout_init", m.readout_init, INITIALIZERS)
    if m.unroll is not None:
        check_at_least("model.unroll", m.unroll, 1)
    check_choice("optim.name", o.name, tuple(OPTIMIZERS))
    check_positive("optim.lr", o.lr)
    check_fraction("optim.momentum", o.momentum, closed_low=True)
    check_fraction("optim.decay", o.decay, closed_low=True)
    if o.eps is not None:
        check_positive("optim.eps", o.eps)
    if o.clip_norm is not None:
        check_positive("optim.clip_norm", o.clip_norm)
    check_choice("optim.schedule", o.schedule, tuple(SCHEDULES))
    check_positive("optim.decay_rate", o.decay_rate)
    check_at_least("optim.decay_steps", o.decay_steps, 1)
    check_at_least("optim.warmup_steps", o.warmup_steps, 0)
    check_at_least("train.steps", t.steps, 1)
    check_at_least("train.batch_size", t.batch_size, 1)
    check_at_least("train.seeds", t.seeds, 1)
    if t.log_every != "auto" and not (isinstance(t.log_every, int) and t.log_every >= 1):
        raise ConfigError("train.log_every", t.log_every, "allowed: auto, or an integer >= 1")
    check_at_least("train.unroll_steps", t.unroll_steps, 1)
    check_choice("train.dtype", t.dtype, tuple(DTYPES))
    check_choice("backend.name", cfg.backend.name, BACKENDS)
    b = cfg.backend
    if b.devices != "all" and not (str(b.devices).isdigit() and int(b.devices) >= 1):
        raise ConfigError("backend.devices", b.devices, "allowed: all, or a count >= 1")
    check_choice("backend.distributed.mode", b.distributed.mode, MODES)
    if b.distributed.num_processes is not None:
        check_at_least("backend.distributed.num_processes", b.distributed.num_processes, 1)
    if b.distributed.process_id is not None:
        check_at_least("backend.distributed.process_id", b.distributed.process_id, 0)
    spec = next((s for s in TASKS.values() if isinstance(cfg.task, s.config)), None)
    if spec is None:
        raise ConfigError("task", type(cfg.task).__name__, "allowed: " + ", ".join(TASKS))
    spec.check(cfg)
    return cfg
