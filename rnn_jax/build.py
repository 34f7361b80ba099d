"""Cells and models from a `ModelConfig`: the `model` section of the app's config, as plain data.

Each cell has its own schema (`MODEL_CONFIGS`: the keys every cell has, plus its own, such as
Elman's `activation`). The cell is looked up in `rnn_jax.cells.CELLS`, and every config field the
cell's factory takes by name is passed to it, so a new cell needs its registry entry, its schema
here and a `conf/model/` file.
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
    """What every cell's `model` section holds; each cell's schema (`MODEL_CONFIGS`) adds its own
    keys, so a key of another cell is an unknown key at start."""

    cell: str = "elman"  # the cell's name in rnn_jax.cells.CELLS; chosen with model=<name>
    hidden: int = 16
    layers: int = 1
    readout_bias: bool = True
    readout_init: str = "pytorch"
    unroll: Optional[int] = None  # lax.scan unroll of the time loop; None: the measured default for the backend


@dataclass(frozen=True)
class ClassicConfig(ModelConfig):
    """Elman, LSTM and GRU: input and recurrent weights, each with its initialiser."""

    init: str = "pytorch"
    recurrent_init: Optional[str] = None  # None: same as init


@dataclass(frozen=True)
class ElmanConfig(ClassicConfig):
    cell: str = "elman"
    activation: str = "tanh"
    use_bias: bool = True


@dataclass(frozen=True)
class LSTMConfig(ClassicConfig):
    cell: str = "lstm"
    forget_bias: float = 1.0
    output_tanh: bool = True  # h = o * tanh(c); false: h = o * c (the 2014 numpy LSTM)


@dataclass(frozen=True)
class GRUConfig(ClassicConfig):
    cell: str = "gru"


@dataclass(frozen=True)
class LinearConfig(ModelConfig):
    """The linear-recurrence cells (`rnn_jax.linear_cells`): their sequence runs by either scan."""

    scan: str = "auto"  # sequential | parallel | auto (rnn_jax.unroll)


@dataclass(frozen=True)
class MinGRUConfig(LinearConfig):
    cell: str = "mingru"
    init: str = "pytorch"  # the gates' and candidate's input weights (no recurrent weights)


@dataclass(frozen=True)
class MinLSTMConfig(LinearConfig):
    cell: str = "minlstm"
    init: str = "pytorch"


@dataclass(frozen=True)
class LRUConfig(LinearConfig):
    cell: str = "lru"
    r_min: float = 0.0  # initial eigenvalue moduli lie on the ring [r_min, r_max]
    r_max: float = 1.0
    max_phase: float = 6.283185307179586  # initial eigenvalue phases in [0, max_phase] (2 pi)


@dataclass(frozen=True)
class RGLRUConfig(LinearConfig):
    cell: str = "rglru"
    init: str = "pytorch"


# The `model` schema of each cell (conf/model/<name>.yaml): a new cell adds its line here.
MODEL_CONFIGS = {
    "elman": ElmanConfig, "lstm": LSTMConfig, "gru": GRUConfig,
    "mingru": MinGRUConfig, "minlstm": MinLSTMConfig, "lru": LRUConfig, "rglru": RGLRUConfig,
}  # fmt: skip


def model_config(cell: str = "elman", **fields) -> ModelConfig:
    """The `model` section for `cell` (its own schema from `MODEL_CONFIGS`) with `fields` set."""
    return MODEL_CONFIGS[cell](cell=cell, **fields)


def recorded_model_config(fields: dict) -> ModelConfig:
    """The `model` section a run recorded (`summary.json`'s or a checkpoint's `config["model"]`) as
    its cell's schema. Runs recorded before the per-cell schemas hold every cell's keys; only the
    recorded cell's are kept."""
    schema = MODEL_CONFIGS[fields["cell"]]
    return schema(**{f.name: fields[f.name] for f in dataclasses.fields(schema) if f.name in fields})


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


def build_model(
    cfg: ModelConfig, output_size: int, *, output_activation=None, dtype=None, platform=None
) -> SequenceModel:
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
