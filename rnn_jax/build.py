"""Cells and models from a `ModelConfig`: the `model` section of the app's config, as plain data.

The cell is looked up in `rnn_jax.cells.CELLS`, and every config field the cell's factory takes
by name (`activation`, `use_bias`, `forget_bias`, ...) is passed to it, so a new cell needs only
its registry entry and a `conf/model/` file.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Optional

import jax.numpy as jnp

from rnn_jax.cells import CELLS, Cell, stack
from rnn_jax.model import SequenceModel, sequence_model

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "elman"  # a name in rnn_jax.cells.CELLS
    hidden: int = 16
    layers: int = 1
    activation: str = "tanh"  # Elman only
    use_bias: bool = True  # Elman only
    init: str = "pytorch"
    recurrent_init: Optional[str] = None  # None: same as init
    forget_bias: float = 1.0  # LSTM only
    output_tanh: bool = True  # LSTM only: h = o * tanh(c); false: h = o * c (the 2014 numpy LSTM)
    r_min: float = 0.0  # LRU only: initial eigenvalue moduli lie on the ring [r_min, r_max]
    r_max: float = 1.0  # LRU only
    max_phase: float = 6.283185307179586  # LRU only: initial eigenvalue phases in [0, max_phase] (2 pi)
    scan: str = "auto"  # mingru, minlstm, lru, rglru only: sequential | parallel | auto (rnn_jax.unroll)
    readout_bias: bool = True
    readout_init: str = "pytorch"
    unroll: Optional[int] = None  # lax.scan unroll of the time loop; None: the measured default for the backend


def cell_arguments(cfg: ModelConfig, factory) -> dict:
    """The fields of `cfg` that `factory` takes by name (`hidden` is its first argument)."""
    accepted = inspect.signature(factory).parameters
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in accepted}


def build_cell(cfg: ModelConfig, dtype=None, platform: Optional[str] = None) -> Cell:
    """One cell, or a `stack` of `cfg.layers` cells, as `cfg` describes; `platform` ("cpu",
    "gpu", ...) picks the fast path's measured defaults."""
    factory = CELLS[cfg.cell]
    kwargs = cell_arguments(cfg, factory)
    if "platform" in inspect.signature(factory).parameters:
        kwargs["platform"] = platform
    cells = [factory(cfg.hidden, dtype=dtype, **kwargs) for _ in range(cfg.layers)]
    return cells[0] if cfg.layers == 1 else stack(cells)


def build_model(cfg: ModelConfig, output_size: int, *, output_activation=None, dtype=None, platform=None) -> SequenceModel:
    """Cell stack -> dense readout of width `output_size` -> `output_activation`."""
    return sequence_model(
        build_cell(cfg, dtype, platform),
        output_size,
        readout_bias=cfg.readout_bias,
        readout_init=cfg.readout_init,
        output_activation=output_activation,
        dtype=dtype,
    )


def dtype_of(name: str):
    return DTYPES[name]
