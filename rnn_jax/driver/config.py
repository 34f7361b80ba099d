"""The typed configuration: what `conf/` may say, checked before anything runs.

Frozen dataclasses, so nothing downstream can write back into the config. The app registers
them with Hydra's ConfigStore (`rnn_jax.apps.schema`), so an unknown key or a wrong type fails at start
with Hydra's own message; `validate` then checks ranges and choices against the registries
(`CELLS`, `OPTIMIZERS`, `SCHEDULES`, `TASKS`, ...) and raises `ConfigError`, which the app prints
as one line. Nothing here imports Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rnn_jax.build import DTYPES, MODEL_CONFIGS, ElmanConfig, ModelConfig
from rnn_jax.cells import ACTIVATIONS
from rnn_jax.config_checks import ConfigError, check_at_least, check_choice, check_fraction, check_positive
from rnn_jax.driver.backend import BACKENDS
from rnn_jax.driver.distributed import DistributedConfig
from rnn_jax.driver.distributed import check as check_distributed
from rnn_jax.driver.loggers import LoggerConfig
from rnn_jax.driver.optim import OPTIM_CONFIGS, OPTIMIZERS, SCHEDULE_KEYS, SCHEDULES, AdamConfig, OptimConfig
from rnn_jax.initializers import INITIALIZERS
from rnn_jax.tasks.registry import TASKS

__all__ = ["BackendConfig", "Config", "ConfigError", "ModelConfig", "OptimConfig", "TrainConfig", "validate"]

RESUME_CHANGES = ("refuse", "allow")


@dataclass(frozen=True)
class TrainConfig:
    """What every task's training loop reads; a task's own settings (seeds, batch size, ...)
    are under `task`."""

    steps: int = 1000
    log_every: Any = "auto"  # steps per compiled chunk, or auto (tasks.base.log_every); Python runs only between chunks
    dtype: str = "float32"
    unroll_steps: int = 1  # lax.scan unroll of the loop over training steps inside a chunk
    resume: Optional[str] = None  # a run directory to continue from (default: this run's own, if it has a checkpoint)
    resume_changes: str = "refuse"  # a resume with other settings that change the run: refuse | allow (and record them)
    progress: bool = True  # a progress bar on the terminal


@dataclass(frozen=True)
class BackendConfig:
    name: str = "auto"
    compilation_cache: Optional[str] = None  # JAX's persistent compilation cache directory; None: off
    devices: str = "auto"  # auto: as many as divide the task's parallel axis; all; or a count
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass(frozen=True)
class Config:
    task: Any = None  # the dataclass of TASKS[name].config, chosen by the task group
    model: Any = field(
        default_factory=ElmanConfig
    )  # MODEL_CONFIGS[cell], chosen by the model group; None: the task has no model settings
    optim: Any = field(default_factory=AdamConfig)  # OPTIM_CONFIGS[name], chosen by the optim group
    train: TrainConfig = field(default_factory=TrainConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0


def _check_schema(key: str, value, name: str, schemas: dict) -> None:
    """`value` is the schema its group option chose, and its name field says the same."""
    check_choice(f"{key}.{'cell' if key == 'model' else 'name'}", name, tuple(schemas))
    if type(value) is not schemas[name]:
        chosen = next((n for n, s in schemas.items() if type(value) is s), type(value).__name__)
        raise ConfigError(
            f"{key}.{'cell' if key == 'model' else 'name'}",
            name,
            f"the {key} group chose {chosen}; choose another with {key}={name}",
        )


def validate(cfg: Config) -> Config:
    """Checks ranges and choices; raises `ConfigError` naming the first bad key. Returns `cfg`."""
    m, o, t = cfg.model, cfg.optim, cfg.train
    if m is not None:
        _check_schema("model", m, m.cell, MODEL_CONFIGS)
        check_at_least("model.hidden", m.hidden, 1)
        check_at_least("model.layers", m.layers, 1)
        if hasattr(m, "activation"):
            check_choice("model.activation", m.activation, tuple(ACTIVATIONS))
        if hasattr(m, "init"):
            check_choice("model.init", m.init, INITIALIZERS)
        if getattr(m, "recurrent_init", None) is not None:
            check_choice("model.recurrent_init", m.recurrent_init, INITIALIZERS)
        check_choice("model.readout_init", m.readout_init, INITIALIZERS)
        if m.unroll is not None:
            check_at_least("model.unroll", m.unroll, 1)
    _check_schema("optim", o, o.name, OPTIM_CONFIGS)
    check_choice("optim.name", o.name, tuple(OPTIMIZERS))
    check_positive("optim.lr", o.lr)
    if hasattr(o, "momentum"):
        check_fraction("optim.momentum", o.momentum, closed_low=True)
    if hasattr(o, "decay"):
        check_fraction("optim.decay", o.decay, closed_low=True)
    if getattr(o, "eps", None) is not None:
        check_positive("optim.eps", o.eps)
    if o.clip_norm is not None:
        check_positive("optim.clip_norm", o.clip_norm)
    check_choice("optim.schedule", o.schedule, tuple(SCHEDULES))
    reads = SCHEDULE_KEYS[o.schedule]
    for key in ("decay_rate", "decay_steps", "warmup_steps"):
        value = getattr(o, key)
        if key in reads and value is None:
            raise ConfigError(
                f"optim.{key}",
                value,
                f"optim.schedule={o.schedule} needs it: set " + ", ".join(f"optim.{k}" for k in reads),
            )
        if key not in reads and value is not None:
            readers = ", ".join(n for n, keys in SCHEDULE_KEYS.items() if key in keys)
            raise ConfigError(
                f"optim.{key}", value, f"optim.schedule={o.schedule} does not read it (only {readers} does); remove it"
            )
    if o.decay_rate is not None:
        check_positive("optim.decay_rate", o.decay_rate)
    if o.decay_steps is not None:
        check_at_least("optim.decay_steps", o.decay_steps, 1)
    if o.warmup_steps is not None:
        check_at_least("optim.warmup_steps", o.warmup_steps, 0)
    check_at_least("train.steps", t.steps, 1)
    if t.log_every != "auto" and not (isinstance(t.log_every, int) and t.log_every >= 1):
        raise ConfigError("train.log_every", t.log_every, "allowed: auto, or an integer >= 1")
    check_at_least("train.unroll_steps", t.unroll_steps, 1)
    check_choice("train.dtype", t.dtype, tuple(DTYPES))
    check_choice("train.resume_changes", t.resume_changes, RESUME_CHANGES)
    check_choice("backend.name", cfg.backend.name, BACKENDS)
    b = cfg.backend
    if b.devices not in ("auto", "all") and not (str(b.devices).isdigit() and int(b.devices) >= 1):
        raise ConfigError("backend.devices", b.devices, "allowed: auto, all, or a count >= 1")
    check_distributed(b.distributed)
    spec = next((s for s in TASKS.values() if isinstance(cfg.task, s.config)), None)
    if spec is None:
        raise ConfigError("task", type(cfg.task).__name__, "allowed: " + ", ".join(TASKS))
    spec.check(cfg)
    return cfg
