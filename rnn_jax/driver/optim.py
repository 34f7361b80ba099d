"""Optax optimizers from the `optim` config: one registry of optimizers, one of learning-rate
schedules, each a name -> small factory; validation, building and `--help` read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import optax


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # a name in OPTIMIZERS
    lr: float = 1e-2
    momentum: float = 0.9  # momentum only
    decay: float = 0.9  # rmsprop: decay of the moving average of squared gradients
    eps: Optional[float] = None  # adam, rmsprop, adagrad; None: optax's default (1e-8; adagrad 1e-7)
    eps_in_sqrt: bool = True  # rmsprop: g / sqrt(v + eps) (optax); false: g / (sqrt(v) + eps) (char-rnn, PyTorch)
    clip_norm: Optional[float] = None  # global-norm gradient clipping
    schedule: str = "constant"  # a name in SCHEDULES
    decay_rate: float = 0.97  # exponential: lr * decay_rate ** (step / decay_steps)
    decay_steps: int = 1000
    warmup_steps: int = 0


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
    "warmup_cosine": lambda cfg, total: optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, max(total, cfg.warmup_steps + 1)),
}


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer `cfg` names, with its schedule, behind global-norm clipping if asked."""
    opt = OPTIMIZERS[cfg.name](cfg, SCHEDULES[cfg.schedule](cfg, total_steps))
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt
