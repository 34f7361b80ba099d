"""Optax optimizers from the `optim` config: name, learning-rate schedule, gradient clipping."""

from __future__ import annotations

import optax

from rnn_jax.driver.config import OptimConfig


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.ScalarOrSchedule:
    """The learning rate: a plain float when constant (no step counter in the optimizer state,
    nothing evaluated per step), else an Optax schedule."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.lr, max(total_steps, 1))
    if cfg.schedule == "exponential":
        return optax.exponential_decay(cfg.lr, cfg.decay_steps, cfg.decay_rate)
    if cfg.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, max(total_steps, cfg.warmup_steps + 1))
    raise ValueError(f"optim.schedule={cfg.schedule!r} is not allowed")


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimizer `cfg` names, with its schedule, behind global-norm clipping if asked."""
    lr = make_schedule(cfg, total_steps)
    if cfg.name == "sgd":
        opt = optax.sgd(lr)
    elif cfg.name == "momentum":
        opt = optax.sgd(lr, momentum=cfg.momentum)
    elif cfg.name == "adam":
        opt = optax.adam(lr)
    elif cfg.name == "rmsprop":
        opt = optax.rmsprop(lr)
    elif cfg.name == "adagrad":
        opt = optax.adagrad(lr)
    else:
        raise ValueError(f"optim.name={cfg.name!r} is not allowed")
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt
