"""Text corpora for the character-level language model: reading, vocabulary, split and batches.

The vocabulary is the set of characters present (sorted by code point), so any UTF-8 text
works, Chinese with its thousands of characters included. Batches follow char-rnn (Karpathy
2015): the token stream is cut into `batch_size` contiguous rows and batch `k` is the `k`-th
window of `seq_len` characters of every row, so row `b` of batch `k + 1` continues row `b` of
batch `k` and the recurrent state can be carried from one batch to the next.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The default corpus: these CPython standard-library modules' source, read from the running
# interpreter and concatenated in this order. No download; the exact text depends on the Python
# version (the summary records its size and the Python version).
DEFAULT_MODULES = (
    "argparse",
    "collections",
    "contextlib",
    "dataclasses",
    "fractions",
    "functools",
    "heapq",
    "pathlib",
    "string",
    "textwrap",
)


class CorpusError(ValueError):
    """A corpus that cannot be used: missing, empty, not UTF-8 or too short; names the file."""


class VocabularyError(ValueError):
    """Text holding a character that is not in the vocabulary; names the character."""


def default_corpus(modules: Sequence[str] = DEFAULT_MODULES) -> str:
    """The source text of `modules` (standard-library module names), concatenated in order."""
    parts = []
    for name in modules:
        path = inspect.getsourcefile(importlib.import_module(name))
        if path is None:
            raise CorpusError(f"default corpus: no source file for standard-library module {name!r}")
        parts.append(Path(path).read_text(encoding="utf-8"))
    return "".join(parts)


def read_corpus(path: Optional[str]) -> str:
    """The text of the UTF-8 file at `path`, or the default corpus when `path` is None; `builtin:NAME`
    is a corpus shipped with rnn_jax (`rnn_jax.tasks.charlm.poetry_data.SHIPPED`).

    Raises `CorpusError` naming the file for a missing, unreadable, empty or non-UTF-8 file.
    """
    if path is None:
        return default_corpus()
    if path.startswith("builtin:"):
        from rnn_jax.tasks.charlm.poetry_data import builtin_path

        path = str(builtin_path(path))
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"corpus {p}: no such file")
    if not p.is_file():
        raise CorpusError(f"corpus {p}: not a regular file")
    data = p.read_bytes()
    if not data:
        raise CorpusError(f"corpus {p}: the file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus {p}: not UTF-8 text (byte {e.start} is {data[e.start : e.start + 1]!r})") from None


class Vocab(NamedTuple):
    """The characters of a corpus; a character's id is its position in `chars`."""

    chars: tuple  # sorted distinct characters
    index: dict  # character -> id

    @property
    def size(self) -> int:
        return len(self.chars)


def make_vocab(text_or_chars) -> Vocab:
    """The vocabulary of `text_or_chars` (a text, or the characters of a saved vocabulary)."""
    chars = tuple(sorted(set(text_or_chars)))
    return Vocab(chars, {c: i for i, c in enumerate(chars)})


def encode(vocab: Vocab, text: str) -> np.ndarray:
    """`text` as int32 ids `[len(text)]`; `VocabularyError` names the first unknown character."""
    try:
        return np.fromiter((vocab.index[c] for c in text), dtype=np.int32, count=len(text))
    except KeyError as e:
        c = e.args[0]
        raise VocabularyError(
            f"character {c!r} (U+{ord(c):04X}, position {text.index(c)}) "
            f"is not in the vocabulary of {vocab.size} characters"
        ) from None


def decode(vocab: Vocab, ids) -> str:
    return "".join(vocab.chars[i] for i in np.asarray(ids).reshape(-1))


def split(ids: np.ndarray, val_fraction: float):
    """`(train, val)`: the first `1 - val_fraction` of the stream and the rest (as char-rnn)."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class Streams(NamedTuple):
    """A token stream as `batch_size` contiguous rows: `targets[b, t]` follows `inputs[b, t]`."""

    inputs: jax.Array  # [B, n * T]
    targets: jax.Array  # [B, n * T]


def layout(ids: np.ndarray, batch_size: int, seq_len: int, max_batches: Optional[int] = None) -> Streams:
    """The first `n * batch_size * seq_len + 1` tokens of `ids` as `Streams` of `n` batches.

    `n` is as many whole batches as fit (at most `max_batches`); the tail that does not fill a
    batch is left out. Raises `ValueError` when not even one batch fits.
    """
    n = (len(ids) - 1) // (batch_size * seq_len)
    if max_batches is not None:
        n = min(n, max_batches)
    if n < 1:
        raise ValueError(f"{len(ids)} characters do not fill one batch of {batch_size} x {seq_len} (+1) characters")
    m = n * batch_size * seq_len
    ids = np.asarray(ids, np.int32)
    return Streams(ids[:m].reshape(batch_size, n * seq_len), ids[1 : m + 1].reshape(batch_size, n * seq_len))


def num_batches(streams: Streams, seq_len: int) -> int:
    return streams.inputs.shape[1] // seq_len


def batch_at(streams: Streams, k, seq_len: int):
    """`(inputs, targets)`, each `[B, T]`: batch `k` (may be traced, so this runs inside `scan`)."""
    B = streams.inputs.shape[0]
    start = (jnp.zeros((), jnp.int32), jnp.asarray(k, jnp.int32) * seq_len)
    return (
        jax.lax.dynamic_slice(streams.inputs, start, (B, seq_len)),
        jax.lax.dynamic_slice(streams.targets, start, (B, seq_len)),
    )


def unigram_bpc(ids: np.ndarray) -> float:
    """Entropy in bits of the character frequencies of `ids`: the bpc of the best model that
    ignores context, the baseline a language model must beat."""
    counts = np.array(list(Counter(np.asarray(ids).tolist()).values()), np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def bits(nats: float) -> float:
    return nats / math.log(2)
