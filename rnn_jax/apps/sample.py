"""Sampling text or poems from a trained char-rnn run.

    python -m rnn_jax.sample run=<run dir> temperature=0.8 prime="def " length=500 seed=0
    python -m rnn_jax.sample run=<run dir> head=春夏秋冬 form=5     # an acrostic of 4 five-character lines
    python -m rnn_jax.sample run=<run dir> poems=3 form=7 lines=8 prefix=明月 top_k=50

Poems (`rnn_jax.tasks.charlm.poem`): asked for by any of head, form, lines, prefix, poems, or by a
run trained with task.unit=line. `form=5|7` characters per line and `lines=4|8` make a regulated
poem: only CJK characters of the vocabulary inside a line, ，and 。 ending the lines by turns;
`head=` starts line i with its i-th character (form 5 and one line per character unless given);
`prefix=` is read before the poem (it sets the mood) and not printed; without a form a poem is
free and ends where the model ends it (at most `length` characters). `top_k=0` keeps every
allowed character.

Arguments are `key=value` pairs of `SampleConfig` (split at the first `=`, so the priming text
may hold any character, which Hydra's override grammar would not accept). The model, its
vocabulary and its config come from the checkpoint, so sampling needs no other file. The text is
generated on the device with `lax.scan` (`rnn_jax.charlm.generate`); temperature 0 is argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.apps import parse_key_values, run_cli
from rnn_jax.build import dtype_of, recorded_model_config
from rnn_jax.driver import checkpoint
from rnn_jax.driver.checkpoint import CheckpointError
from rnn_jax.tasks.charlm.corpus import Vocab, VocabularyError, decode, encode, make_vocab
from rnn_jax.tasks.charlm.model import CharLM, build_char_lm, generate
from rnn_jax.tasks.charlm.poem import PoemError, PoemSpec, write_poems


@dataclass(frozen=True)
class SampleConfig:
    run: Optional[str] = None  # the run directory (required unless checkpoint is a path)
    checkpoint: str = "best"  # best | last | a checkpoint directory
    temperature: float = 0.8  # 0: argmax
    prime: str = ""  # the text to start from; "": the first character of the corpus
    length: int = 500  # characters to generate after the prime (a free poem: at most)
    seed: int = 0
    poems: int = 0  # poems to write (0: one, when a poem is asked for; else text)
    head: str = ""  # an acrostic: line i starts with its i-th character
    prefix: str = ""  # read before each poem, not printed
    form: int = 0  # characters per line, 5 or 7 (0: free, or 5 with head or lines)
    lines: int = 0  # 4 or 8 (0: one per head character, else 4)
    top_k: int = 0  # draw among the k most likely allowed characters (0: all)


class SampleArgError(ValueError):
    """A bad command-line argument; the message names it."""


def parse_args(argv) -> SampleConfig:
    """`SampleConfig` from `key=value` strings, typed by the dataclass's defaults."""
    cfg = parse_key_values(argv, SampleConfig, SampleArgError)
    if cfg.run is None and cfg.checkpoint in ("best", "last"):
        raise SampleArgError("run=<run dir> is required (or checkpoint=<checkpoint dir>)")
    if not cfg.temperature >= 0:
        raise SampleArgError(f"temperature={cfg.temperature}: must be >= 0")
    if cfg.length < 0:
        raise SampleArgError(f"length={cfg.length}: must be >= 0")
    for key in ("poems", "form", "lines", "top_k"):
        if getattr(cfg, key) < 0:
            raise SampleArgError(f"{key}={getattr(cfg, key)}: must be >= 0")
    return cfg


def wants_poems(cfg: SampleConfig, meta: dict) -> bool:
    """Poems rather than text: asked for by a poem argument, or the run trained on poems."""
    unit = meta.get("config", {}).get("task", {}).get("unit", "stream")
    return unit == "line" or bool(cfg.poems or cfg.head or cfg.prefix or cfg.form or cfg.lines)


def poem_spec(cfg: SampleConfig) -> Optional[PoemSpec]:
    """The form the arguments ask for; None: free poems."""
    if not (cfg.form or cfg.lines or cfg.head):
        return None
    return PoemSpec(form=cfg.form or 5, lines=cfg.lines or len(cfg.head) or 4, head=cfg.head)


def checkpoint_path(run: Optional[str], which: str) -> Path:
    """The checkpoint to sample from; a run directory that is not a charlm run, or whose best
    checkpoint is missing, is explained rather than reported as a missing directory."""
    if which not in ("best", "last"):
        path = Path(which).expanduser()
        if not path.is_dir():
            raise CheckpointError(
                f"checkpoint={which}: no such directory; "
                "allowed: best, last (with run=<run dir>) or a checkpoint directory"
            )
        return path
    run_dir = Path(run).expanduser()
    path = run_dir / "checkpoints" / which
    if not path.is_dir():
        if (run_dir / "checkpoints" / "last").is_dir():
            raise CheckpointError(
                f"run={run_dir} has no {which} checkpoint (no finite validation loss yet); "
                f"use checkpoint={run_dir / 'checkpoints' / 'last'}"
            )
        raise CheckpointError(f"run={run_dir}: no checkpoint at {path} (not a charlm run directory)")
    return path


def load_model(path) -> tuple[CharLM, object, Vocab, dict]:
    """`(model, params, vocab, meta)` from a charlm checkpoint directory; `CheckpointError` if
    it is missing, corrupt or not a charlm checkpoint."""
    meta = checkpoint.read_meta(path)
    if meta.get("task") != "charlm":
        raise CheckpointError(
            f"checkpoint {path} is of task {meta.get('task')!r}; sampling needs a charlm run (task=charlm)"
        )
    state, meta = checkpoint.load(path)
    cfg = meta["config"]
    vocab = make_vocab(meta["identity"]["vocab"])
    model = build_char_lm(
        recorded_model_config(cfg["model"]), vocab.size, cfg["task"]["embedding"], 0.0, dtype_of(cfg["train"]["dtype"])
    )
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


def sample(argv: list[str]) -> None:
    """Prints the text or the poems the `key=value` arguments ask for."""
    cfg = parse_args(argv)
    model, params, vocab, meta = load_model(checkpoint_path(cfg.run, cfg.checkpoint))
    if wants_poems(cfg, meta):
        spec = poem_spec(cfg)
        options = dict(prefix=cfg.prefix, temperature=cfg.temperature, top_k=cfg.top_k, seed=cfg.seed)
        poems = write_poems(model, params, vocab, max(cfg.poems, 1), spec, **options, max_length=max(cfg.length, 1))
        print("\n\n".join(poems))
    else:
        prime = cfg.prime or meta["identity"]["first_char"]
        print(sample_text(model, params, vocab, prime, cfg.length, cfg.temperature, cfg.seed))


def main(argv=None) -> int:
    return run_cli(sample, argv, (SampleArgError, CheckpointError, VocabularyError, PoemError), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
