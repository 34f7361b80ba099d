"""Cells and models from the `model` config: the name -> factory table in one place."""

from __future__ import annotations

import jax.numpy as jnp

from rnn_jax.cells import Cell, elman, gru, lstm, stack
from rnn_jax.driver.config import ModelConfig
from rnn_jax.model import SequenceModel, sequence_model


def build_cell(cfg: ModelConfig, dtype=None) -> Cell:
    """One cell, or a `stack` of `cfg.layers` cells, as `cfg` describes."""

    def one() -> Cell:
        common = dict(init=cfg.init, recurrent_init=cfg.recurrent_init, dtype=dtype)
        if cfg.cell == "elman":
            return elman(cfg.hidden, cfg.activation, use_bias=cfg.use_bias, **common)
        if cfg.cell == "lstm":
            return lstm(cfg.hidden, forget_bias=cfg.forget_bias, **common)
        if cfg.cell == "gru":
            return gru(cfg.hidden, **common)
        raise ValueError(f"model.cell={cfg.cell!r} is not allowed; allowed: elman, lstm, gru")

    return one() if cfg.layers == 1 else stack([one() for _ in range(cfg.layers)])


def build_model(cfg: ModelConfig, output_size: int, *, output_activation=None, dtype=None) -> SequenceModel:
    """Cell stack -> dense readout of width `output_size` -> `output_activation`."""
    return sequence_model(
        build_cell(cfg, dtype),
        output_size,
        readout_bias=cfg.readout_bias,
        readout_init=cfg.readout_init,
        output_activation=output_activation,
        dtype=dtype,
    )


def dtype_of(name: str):
    return {"float32": jnp.float32, "float64": jnp.float64}[name]
