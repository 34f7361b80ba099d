"""Writing poems with a char-LM: regulated forms, acrostics, a prefix, temperature and top-k.

A poem of `lines` lines of `form` characters is `lines * (form + 1)` positions: `form` characters,
then the line's punctuation, as the corpora write it (，after the 1st, 3rd, ... line, 。after the
2nd, 4th, ...). Constrained sampling draws each position from the model's distribution renormalised
over what the position allows (`poem_constraints`, a boolean `[L, V]`): inside a line the CJK
ideographs of the vocabulary (no punctuation, marks or Latin letters), at a line's end its
punctuation alone, and with `head` (an acrostic, 藏頭詩) the first character of line i is the
i-th character of the head. Temperature and top-k apply to the allowed characters only.

Every poem starts as in training with `task.unit=line`: from the initial state, reading the
end-of-poem mark; a `prefix` is read after it, so it sets the state (the mood) and is not printed.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.tasks.charlm.corpus import Vocab, decode, encode
from rnn_jax.tasks.charlm.model import CharLM

END = "\n"  # the end-of-poem mark (`rnn_jax.tasks.charlm.task.END`)
COMMA, STOP = "，", "。"  # U+FF0C and U+3002, as the chinese-poetry collection writes them
FORMS = (5, 7)  # characters per line: 五言, 七言
LINES = (4, 8)  # 絕句, 律詩


class PoemError(ValueError):
    """A poem that cannot be written: the message names the argument and the character."""


class PoemSpec(NamedTuple):
    form: int = 5  # characters per line
    lines: int = 4
    head: str = ""  # an acrostic: line i starts with head[i] ("" : none)


def is_ideograph(c: str) -> bool:
    """A CJK ideograph (unified, extensions, compatibility), not a mark, letter or punctuation."""
    return unicodedata.name(c, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))


def ideograph_mask(vocab: Vocab) -> np.ndarray:
    """`[V]` bool: which characters of the vocabulary are CJK ideographs."""
    return np.array([is_ideograph(c) for c in vocab.chars], bool)


def _in_vocab(vocab: Vocab, c: str, what: str) -> int:
    if c not in vocab.index:
        raise PoemError(
            f"{what}: character {c!r} (U+{ord(c):04X}) is not in the model's vocabulary of {vocab.size} characters"
        )
    return vocab.index[c]


def poem_constraints(vocab: Vocab, spec: PoemSpec) -> np.ndarray:
    """`[L, V]` bool, L = `spec.lines * (spec.form + 1)`: the characters each position allows.

    Raises `PoemError` naming the argument for a form or line count not in `FORMS`/`LINES`, a
    head of another length than `spec.lines`, a head character that is not an ideograph of the
    vocabulary, and a vocabulary without ，or 。.
    """
    if spec.form not in FORMS:
        raise PoemError(f"form={spec.form} is not allowed; allowed: {', '.join(map(str, FORMS))} (characters per line)")
    if spec.head and len(spec.head) not in LINES:
        allowed = " or ".join(map(str, LINES))
        raise PoemError(f"head={spec.head}: {len(spec.head)} characters; an acrostic has one per line: {allowed}")
    if spec.lines not in LINES:
        raise PoemError(f"lines={spec.lines} is not allowed; allowed: {', '.join(map(str, LINES))}")
    if spec.head and len(spec.head) != spec.lines:
        n = len(spec.head)
        raise PoemError(f"head={spec.head}: {n} characters for {spec.lines} lines; give one per line (or lines={n})")
    ideographs = ideograph_mask(vocab)
    if not ideographs.any():
        raise PoemError(f"the model's vocabulary of {vocab.size} characters has no CJK ideograph")
    marks = [_in_vocab(vocab, p, "line-end punctuation") for p in (COMMA, STOP)]
    heads = []
    for c in spec.head:
        i = _in_vocab(vocab, c, f"head={spec.head}")
        if not ideographs[i]:
            raise PoemError(f"head={spec.head}: character {c!r} (U+{ord(c):04X}) is not a CJK ideograph")
        heads.append(i)
    allowed = np.zeros((spec.lines, spec.form + 1, vocab.size), bool)
    allowed[:, : spec.form] = ideographs
    for i in range(spec.lines):
        allowed[i, spec.form, marks[i % 2]] = True
        if heads:
            allowed[i, 0] = False
            allowed[i, 0, heads[i]] = True
    return allowed.reshape(-1, vocab.size)


def pick(logits, allowed, key, temperature, top_k: int):
    """One id from `logits [V]` over the `allowed [V]` ids: argmax when `temperature == 0`, else
    a draw from `softmax(logits / temperature)` over the `top_k` most likely allowed ids
    (`top_k == 0`: all). `temperature` may be traced; `top_k` is static."""
    masked = jnp.where(allowed, logits, -jnp.inf)
    if top_k:
        kth = jax.lax.top_k(masked, min(top_k, masked.shape[-1]))[0][-1]
        masked = jnp.where(masked >= kth, masked, -jnp.inf)
    temperature = jnp.asarray(temperature, logits.dtype)
    drawn = jax.random.categorical(key, masked / jnp.maximum(temperature, 1e-6))
    return jnp.where(temperature > 0, drawn, jnp.argmax(masked)).astype(jnp.int32)


def write_poem(model: CharLM, params, context, allowed, key, temperature, top_k: int = 0):
    """One poem, ids `[L]`: the model reads `context [P]` (the end mark, then any prefix) from the
    initial state, then position l is drawn over `allowed [l]` and read in turn. Pure; jit with
    `top_k` static, and vmap over keys for several poems."""
    carry, logits = model.apply(params, context)  # logits [P, V]

    def body(state, xs):
        carry, logits = state
        allowed_l, k = xs
        c = pick(logits, allowed_l, k, temperature, top_k)
        carry, logits = model.step(params, carry, c)
        return (carry, logits), c

    _, ids = jax.lax.scan(body, (carry, logits[-1]), (allowed, jax.random.split(key, allowed.shape[0])))
    return ids


def write_free(model: CharLM, params, context, key, temperature, top_k: int, length: int, end_id: int):
    """One poem without a form, ids `[length]`: drawn over the whole vocabulary until the end
    mark `end_id` (which, and all after it, is returned as `end_id`) or `length` characters."""
    allowed = jnp.ones((length, model.vocab_size), bool)
    ids = write_poem(model, params, context, allowed, key, temperature, top_k)
    ended = jnp.cumsum(ids == end_id) > 0
    return jnp.where(ended, end_id, ids)


def context_ids(vocab: Vocab, prefix: str = "") -> np.ndarray:
    """The ids a poem starts from: the end mark, then `prefix`; `PoemError` names an unknown character."""
    _in_vocab(vocab, END, "the end-of-poem mark (a newline; the corpus needs one poem per line)")
    for c in prefix:
        _in_vocab(vocab, c, f"prefix={prefix}")
    return encode(vocab, END + prefix)


def format_poem(vocab: Vocab, ids, form: Optional[int] = None) -> str:
    """A poem's text, one line of the poem a line: cut after each ，or 。 (a regulated poem after
    every `form + 1` characters); a free poem stops at the end mark."""
    text = decode(vocab, ids).split(END)[0]
    if form is not None:
        return "\n".join(text[i : i + form + 1] for i in range(0, len(text), form + 1))
    for p in (COMMA, STOP):
        text = text.replace(p, p + "\n")
    return text.rstrip("\n")


def write_poems(
    model: CharLM,
    params,
    vocab: Vocab,
    n: int = 1,
    spec: Optional[PoemSpec] = None,
    *,
    prefix: str = "",
    temperature: float = 0.8,
    top_k: int = 0,
    seed: int = 0,
    max_length: int = 200,
) -> list[str]:
    """`n` poems as text: of `spec`'s form (constrained), or free (`spec` None: up to
    `max_length` characters, to the end mark). `PoemError` names an argument that cannot be met."""
    if n < 1:
        raise PoemError(f"poems={n}: must be >= 1")
    if top_k < 0:
        raise PoemError(f"top_k={top_k}: must be >= 0 (0: every allowed character)")
    context = jnp.asarray(context_ids(vocab, prefix))  # checks the end mark and the prefix first
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    if spec is not None:
        allowed = jnp.asarray(poem_constraints(vocab, spec))
        one = lambda k: write_poem(model, params, context, allowed, k, temperature, top_k)  # noqa: E731
    else:
        end = vocab.index[END]
        one = lambda k: write_free(model, params, context, k, temperature, top_k, max_length, end)  # noqa: E731
    ids = np.asarray(jax.jit(jax.vmap(one))(keys))  # [n, L]
    return [format_poem(vocab, row, spec.form if spec is not None else None) for row in ids]
