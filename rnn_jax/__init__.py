"""rnn_jax: recurrent networks as pure JAX functions, and the experiments built on them."""

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
from rnn_jax.model import Dense, DenseParams, ModelParams, SequenceModel, dense, sequence_model
from rnn_jax.scan import masked_scan, sequence_mask
from rnn_jax.unroll import unroll

__version__ = "0.1.0"

__all__ = [
    "BACKEND_DEFAULTS",
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
    "SequenceModel",
    "SpeedOptions",
    "dense",
    "elman",
    "get_initializer",
    "gru",
    "lstm",
    "sequence_model",
    "stack",
    "unroll",
]
