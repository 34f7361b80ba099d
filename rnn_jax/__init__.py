"""rnn_jax: recurrent networks as pure JAX functions, and the experiments built on them."""

from rnn_jax.bidirectional import Bidirectional, BidirectionalCarry, BidirectionalParams, bidirectional
from rnn_jax.cells import (
    CELLS,
    Cell,
    ElmanEquations,
    ElmanParams,
    GRUEquations,
    GRUParams,
    LSTMCarry,
    LSTMEquations,
    LSTMParams,
    SpeedOptions,
    elman,
    gru,
    lstm,
    stack,
)
from rnn_jax.fused import BACKEND_DEFAULTS, elman_sequence, gru_sequence, lstm_sequence
from rnn_jax.initializers import INITIALIZERS, get_initializer
from rnn_jax.linear_cells import LRUParams, MinGRUParams, MinLSTMParams, RGLRUParams, lru, mingru, minlstm, rglru
from rnn_jax.linear_scan import ComplexPair, LinearEquations, linear_sequence
from rnn_jax.model import Dense, DenseParams, ModelParams, SequenceModel, dense, sequence_model
from rnn_jax.scan import masked_scan, sequence_mask
from rnn_jax.softmax import softmax_cross_entropy
from rnn_jax.unroll import unroll

__version__ = "0.1.0"

_FLAX_ADAPTER = ("RNNCellModule", "RNNModule")  # imported on first use: `import rnn_jax` stays free of Flax


def __getattr__(name):
    if name in _FLAX_ADAPTER:
        from rnn_jax import flax_adapter

        return getattr(flax_adapter, name)
    raise AttributeError(f"module 'rnn_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_FLAX_ADAPTER])


__all__ = [
    "BACKEND_DEFAULTS",
    "ComplexPair",
    "LinearEquations",
    "LRUParams",
    "MinGRUParams",
    "MinLSTMParams",
    "RGLRUParams",
    "linear_sequence",
    "lru",
    "mingru",
    "minlstm",
    "rglru",
    "Bidirectional",
    "BidirectionalCarry",
    "BidirectionalParams",
    "bidirectional",
    "gru_sequence",
    "elman_sequence",
    "lstm_sequence",
    "masked_scan",
    "sequence_mask",
    "CELLS",
    "Cell",
    "Dense",
    "DenseParams",
    "ElmanEquations",
    "ElmanParams",
    "GRUEquations",
    "GRUParams",
    "INITIALIZERS",
    "LSTMCarry",
    "LSTMEquations",
    "LSTMParams",
    "ModelParams",
    "RNNCellModule",
    "RNNModule",
    "SequenceModel",
    "SpeedOptions",
    "dense",
    "elman",
    "get_initializer",
    "gru",
    "lstm",
    "sequence_model",
    "softmax_cross_entropy",
    "stack",
    "unroll",
]
