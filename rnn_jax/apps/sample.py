"""Sampling text from a trained char-rnn run.

    python -m rnn_jax.sample run=<run dir> temperature=0.8 prime="def " length=500 seed=0

Arguments are `key=value` pairs of `SampleConfig` (split at the first `=`, so the priming text
may hold any character, which Hydra's override grammar would not accept). The model, its
vocabulary and its config come from the checkpoint, so sampling needs no other file. The text is
generated on the device with `lax.scan` (`rnn_jax.charlm.generate`); temperature 0 is argmax.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.build import dtype_of, model_config
from rnn_jax.driver import checkpoint
from rnn_jax.driver.checkpoint import CheckpointError
from rnn_jax.tasks.charlm.corpus import Vocab, VocabularyError, decode, encode, make_vocab
from rnn_jax.tasks.charlm.model import CharLM, build_char_lm, generate


@dataclass(frozen=True)
class SampleConfig:
    run: Optional[str] = None  # the run directory (required unless checkpoint is a path)
    checkpoint: str = "best"  # best | last | a checkpoint directory
    temperature: float = 0.8  # 0: argmax
    prime: str = ""  # the text to start from; "": the first character of the corpus
    length: int = 500  # characters to generate after the prime
    seed: int = 0


class SampleArgError(ValueError):
    """A bad command-line argument; the message names it."""


def parse_args(argv) -> SampleConfig:
    """`SampleConfig` from `key=value` strings, typed by the dataclass's defaults."""
    fields = {f.name: f for f in dataclasses.fields(SampleConfig)}
    values = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in fields:
            raise SampleArgError(f"{arg!r}: expected key=value with key one of {', '.join(fields)}")
        kind = type(fields[key].default) if fields[key].default is not None else str
        try:
            values[key] = kind(value)
        except ValueError:
            raise SampleArgError(f"{key}={value!r}: expected {_KIND_NAMES.get(kind, kind.__name__)}") from None
    cfg = SampleConfig(**values)
    if cfg.run is None and cfg.checkpoint in ("best", "last"):
        raise SampleArgError("run=<run dir> is required (or checkpoint=<checkpoint dir>)")
    if not cfg.temperature >= 0:
        raise SampleArgError(f"temperature={cfg.temperature}: must be >= 0")
    if cfg.length < 0:
        raise SampleArgError(f"length={cfg.length}: must be >= 0")
    return cfg


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}


def checkpoint_path(run: Optional[str], which: str) -> Path:
    """The checkpoint to sample from; a run directory that is not a charlm run, or whose best
    checkpoint is missing, is explained rather than reported as a missing directory."""
    if which not in ("best", "last"):
        path = Path(which).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"checkpoint={which}: no such directory; allowed: best, last (with run=<run dir>) or a checkpoint directory")
        return path
    run_dir = Path(run).expanduser()
    path = run_dir / "checkpoints" / which
    if not path.is_dir():
        if (run_dir / "checkpoints" / "last").is_dir():
            raise CheckpointError(f"run={run_dir} has no {which} checkpoint (no finite validation loss yet); use checkpoint={run_dir / 'checkpoints' / 'last'}")
        raise CheckpointError(f"run={run_dir}: no checkpoint at {path} (not a charlm run directory)")
    return path


def load_model(path) -> tuple[CharLM, object, Vocab, dict]:
    """`(model, params, vocab, meta)` from a charlm checkpoint directory; `CheckpointError` if
    it is missing, corrupt or not a charlm checkpoint."""
    meta = checkpoint.read_meta(path)
    if meta.get("task") != "charlm":
        raise CheckpointError(f"checkpoint {path} is of task {meta.get('task')!r}; sampling needs a charlm run (task=charlm)")
    state, meta = checkpoint.load(path)
    cfg = meta["config"]
    vocab = make_vocab(meta["identity"]["vocab"])
    model = build_char_lm(model_config(**cfg["model"]), vocab.size, cfg["task"]["embedding"], 0.0, dtype_of(cfg["train"]["dtype"]))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))  # the structure, nothing computed
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    params = checkpoint.to_target(path, template, state["train"]["params"])
    return model, jax.device_put(params), vocab, meta


def sample_text(model: CharLM, params, vocab: Vocab, prime: str, length: int, temperature: float, seed: int = 0) -> str:
    """`prime` and `length` characters sampled after it. `VocabularyError` names an unknown
    character of the prime."""
    if not prime:
        raise VocabularyError("prime: the priming text is empty; give at least one character")
    try:
        ids = jnp.asarray(encode(vocab, prime))
    except VocabularyError as e:
        raise VocabularyError(f"prime: {e}") from None
    out = jax.jit(generate, static_argnums=(0, 5))(model, params, ids, jax.random.PRNGKey(seed), temperature, length)
    return prime + decode(vocab, out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    try:
        cfg = parse_args(argv)
        model, params, vocab, meta = load_model(checkpoint_path(cfg.run, cfg.checkpoint))
        prime = cfg.prime or meta["identity"]["first_char"]
        print(sample_text(model, params, vocab, prime, cfg.length, cfg.temperature, cfg.seed))
    except (SampleArgError, CheckpointError, VocabularyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
