"""Optax optimizers from the `optim` config: one registry of optimizers, one of learning-rate
schedules, each a name -> small factory, and a config schema per optimizer; validation, building
and `--help` read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import optax


@dataclass(frozen=True)
class OptimConfig:
    """What every optimizer's `optim` section holds; each optimizer's schema (`OPTIM_CONFIGS`)
    adds its own keys. The schedules' keys are None unless the chosen schedule reads them."""

    name: str = "adam"  # a name in OPTIMIZERS; chosen with optim=<name>
    lr: float = 1e-2
    clip_norm: Optional[float] = None  # global-norm gradient clipping
    schedule: str = "constant"  # a name in SCHEDULES
    decay_rate: Optional[float] = None  # exponential: lr * decay_rate ** (step / decay_steps)
    decay_steps: Optional[int] = None  # exponential
    warmup_steps: Optional[int] = None  # warmup_cosine: steps of linear warm-up from 0


@dataclass(frozen=True)
class SGDConfig(OptimConfig):
    name: str = "sgd"


@dataclass(frozen=True)
class MomentumConfig(OptimConfig):
    name: str = "momentum"
    momentum: float = 0.9


@dataclass(frozen=True)
class AdamConfig(OptimConfig):
    name: str = "adam"
    eps: Optional[float] = None  # None: optax's default, 1e-8


@dataclass(frozen=True)
class RMSpropConfig(OptimConfig):
    name: str = "rmsprop"
    decay: float = 0.9  # decay of the moving average of squared gradients
    eps: Optional[float] = None  # None: optax's default, 1e-8
    eps_in_sqrt: bool = True  # g / sqrt(v + eps) (optax); false: g / (sqrt(v) + eps) (char-rnn, PyTorch)


@dataclass(frozen=True)
class AdagradConfig(OptimConfig):
    name: str = "adagrad"
    eps: Optional[float] = None  # None: optax's default, 1e-7


# The `optim` schema of each optimizer (conf/optim/<name>.yaml).
OPTIM_CONFIGS = {
    "sgd": SGDConfig,
    "momentum": MomentumConfig,
    "adam": AdamConfig,
    "rmsprop": RMSpropConfig,
    "adagrad": AdagradConfig,
}

# The keys each schedule reads besides lr; a key given to a schedule that does not read it is refused.
SCHEDULE_KEYS = {
    "constant": (),
    "cosine": (),
    "exponential": ("decay_rate", "decay_steps"),
    "warmup_cosine": ("warmup_steps",),
}
# Schedules whose shape depends on train.steps: extending such a run changes its trajectory.
SCHEDULES_OVER_TRAINING = ("cosine", "warmup_cosine")


def _eps(cfg: OptimConfig, default: float) -> float:
    return default if cfg.eps is None else cfg.eps


# name -> (config, learning rate or schedule) -> transformation
OPTIMIZERS = {
    "sgd": lambda cfg, lr: optax.sgd(lr),
    "momentum": lambda cfg, lr: optax.sgd(lr, momentum=cfg.momentum),
    "adam": lambda cfg, lr: optax.adam(lr, eps=_eps(cfg, 1e-8)),
    "rmsprop": lambda cfg, lr: optax.rmsprop(lr, decay=cfg.decay, eps=_eps(cfg, 1e-8), eps_in_sqrt=cfg.eps_in_sqrt),
    "adagrad": lambda cfg, lr: optax.adagrad(lr, eps=_eps(cfg, 1e-7)),
}

# name -> (config, total steps) -> learning rate. A constant rate stays a float: no step counter
# in the optimizer state, nothing evaluated per step.
SCHEDULES = {
    "constant": lambda cfg, total: cfg.lr,
    "cosine": lambda cfg, total: optax.cosine_decay_schedule(cfg.lr, max(total, 1)),
    "exponential": lambda cfg, total: optax.exponential_decay(cfg.lr, cfg.decay_steps, cfg.decay_rate),
    "warmup_cosine": lambda cfg, total: optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, cfg.warmup_steps, max(total, cfg.warmup_steps + 1)
    ),
}


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer `cfg` names, with its schedule, behind global-norm clipping if asked."""
    opt = OPTIMIZERS[cfg.name](cfg, SCHEDULES[cfg.schedule](cfg, total_steps))
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt
