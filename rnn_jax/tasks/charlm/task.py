"""The char-rnn as a driver task: train on a corpus, validate and sample every `task.eval_every` steps.

Everything a step needs (the batch, the dropout key, whether the recurrent state restarts) is a
function of the step number, so a run resumed from a checkpoint takes exactly the steps an
uninterrupted run would. The run directory gets `samples/step_NNNNNN.txt` at every validation
beside what the driver writes.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from rnn_jax.build import dtype_of
from rnn_jax.tasks.base import (
    DIVERGED,
    TRAINING,
    ConfigError,
    Display,
    Program,
    Report,
    Task,
    TaskSpec,
    Validation,
    check_at_least,
    check_choice,
    check_fraction,
    check_has_model,
    parameter_count,
    to_host,
    values_kept_per_step,
)
from rnn_jax.tasks.charlm.corpus import (
    CorpusError,
    Streams,
    Vocab,
    batch_at,
    bits,
    decode,
    encode,
    layout,
    make_vocab,
    num_batches,
    read_corpus,
    split,
    unigram_bpc,
)
from rnn_jax.tasks.charlm.model import (
    Batch,
    CharLM,
    build_char_lm,
    generate,
    make_evaluate,
    make_evaluate_packed,
    make_loss,
    reset_at_epoch_start,
)
from rnn_jax.tasks.charlm.packing import Packed, pack, split_poems
from rnn_jax.training import TrainState, init_state, make_chunk, make_step


@dataclass(frozen=True)
class CharLMTask:
    """Character-level language model over a UTF-8 corpus."""

    name: str = "charlm"
    corpus: Optional[str] = None  # path to a UTF-8 text file; None: the default stdlib corpus
    seq_len: int = 50
    val_fraction: float = 0.05
    embedding: int = 64
    dropout: float = 0.0
    eval_every: int = 200  # steps between validations (each writes a sample and the checkpoints)
    eval_batches: int = 20  # validation batches at most (of up to batch_size x seq_len characters)
    sample_length: int = 300  # characters sampled at each validation (0: none)
    sample_temperature: float = 0.8
    batch_size: int = 32  # sequences per step (the run's parallel axis)
    # stream: char-rnn's contiguous text, the state carried from batch to batch; line: each line
    # of the corpus (a poem) from the initial state, poems packed whole into rows of seq_len steps
    unit: str = "stream"


def check(cfg) -> None:
    task = cfg.task
    check_has_model(cfg)
    check_at_least("task.seq_len", task.seq_len, 2)
    check_fraction("task.val_fraction", task.val_fraction)
    check_at_least("task.embedding", task.embedding, 1)
    check_fraction("task.dropout", task.dropout, closed_low=True)
    check_at_least("task.eval_every", task.eval_every, 1)
    check_at_least("task.eval_batches", task.eval_batches, 1)
    check_at_least("task.sample_length", task.sample_length, 0)
    check_at_least("task.sample_temperature", task.sample_temperature, 0.0)
    check_at_least("task.batch_size", task.batch_size, 1)
    check_choice("task.unit", task.unit, UNITS)


class CharLMState(NamedTuple):
    train: TrainState
    carry: Any  # the recurrent state after the last batch, carried into the next (char-rnn)


class CharLMData(NamedTuple):
    vocab: Vocab
    train: Streams  # [B, n_train * T]
    val: Streams  # [B_val, n_val * T]
    first_char: str  # the default priming text
    n_chars: int
    unigram_bpc: float


def load_data(task: CharLMTask, batch_size: int) -> CharLMData:
    """Reads, encodes, splits and lays out the corpus; `CorpusError` when it is too short."""
    text = read_corpus(task.corpus)
    name = f"corpus {task.corpus}" if task.corpus is not None else "default corpus"
    vocab = make_vocab(text)
    if vocab.size < 2:
        raise CorpusError(
            f"{name}: has {vocab.size} distinct character ({text[:1]!r}); a language model needs at least 2"
        )
    ids = encode(vocab, text)
    train_ids, val_ids = split(ids, task.val_fraction)
    T = task.seq_len
    if len(train_ids) < batch_size * T + 1:
        raise CorpusError(
            f"{name}: too short: {len(text)} characters leave {len(train_ids)} for training, fewer than one batch "
            f"of task.batch_size={batch_size} sequences of task.seq_len={T} (+1) = {batch_size * T + 1}"
        )
    if len(val_ids) < T + 1:
        raise CorpusError(
            f"{name}: too short: {len(text)} characters leave {len(val_ids)} for validation "
            f"(task.val_fraction={task.val_fraction}), fewer than one sequence of task.seq_len={T} (+1)"
        )
    val_rows = min(batch_size, (len(val_ids) - 1) // T)
    return CharLMData(
        vocab,
        layout(train_ids, batch_size, T),
        layout(val_ids, val_rows, T, task.eval_batches),
        text[0],
        len(text),
        unigram_bpc(ids),
    )


UNITS = ("stream", "line")
END = "\n"  # the end-of-poem mark of task.unit=line, which also begins each poem


class PoemData(NamedTuple):
    """The corpus as poems (`task.unit=line`)."""

    vocab: Vocab
    train: Packed  # fields [B, n_batches, T]: batch k is [:, k]
    val: Packed  # fields [R_val, T], R_val a multiple of the batch size
    n_chars: int
    unigram_bpc: float
    poems: dict  # counts for the summary: train, val, left_out (longer than seq_len - 1)
    padding: float  # the fraction of training steps that are padding


def load_poems(task: CharLMTask, batch_size: int, key) -> PoemData:
    """The corpus's lines as packed poems: the training rows in an order drawn from `key`, as
    many whole batches as cover them (the last filled with the first rows again, so no batch is
    padding); the validation rows padded with empty ones to whole batches, at most
    `task.eval_batches` batches of them (a fixed draw of rows when there are more).
    `CorpusError` when no poem is left for either."""
    text = read_corpus(task.corpus)
    name = f"corpus {task.corpus}" if task.corpus is not None else "default corpus"
    vocab = make_vocab(text + END)
    train_poems, val_poems = split_poems(text, task.val_fraction)
    T = task.seq_len
    train, left_train = pack([encode(vocab, p) for p in train_poems], T, vocab.index[END])
    val, left_val = pack([encode(vocab, p) for p in val_poems], T, vocab.index[END], rows_multiple=batch_size)
    if val.inputs.shape[0] > task.eval_batches * batch_size:  # rows of one fixed draw, the same in every run
        keep = np.asarray(jax.random.permutation(jax.random.PRNGKey(0), val.inputs.shape[0]))
        val = Packed(*(x[keep[: task.eval_batches * batch_size]] for x in val))
    if not train.valid.any() or not val.valid.any():
        raise CorpusError(
            f"{name}: {len(train_poems)} training and {len(val_poems)} validation poems (lines), of which "
            f"{left_train + left_val} are longer than task.seq_len={T} - "
            "1 characters; task.unit=line needs one of each that fits"
        )
    order = np.asarray(jax.random.permutation(key, train.inputs.shape[0]))
    n = -(-len(order) // batch_size)
    order = np.resize(order, n * batch_size)  # wraps around: the last batch repeats the first rows
    train_rows = Packed(*(x[order].reshape(batch_size, n, T) for x in train))  # row b * ... of batch k at [b, k]
    poems = {
        "train": len(train_poems),
        "val": len(val_poems),
        "val_evaluated": int(val.resets.sum()),
        "left_out": left_train + left_val,
    }
    return PoemData(vocab, train_rows, val, len(text), unigram_bpc(encode(vocab, text)), poems, train.padding)


def make_poem_chunk(model: CharLM, optimizer, cfg, dropout_key) -> Any:
    """`chunk(state, rows, first_step, k) -> (state, losses [k])` for `task.unit=line`: step `i`
    trains on batch `i mod n_batches` of the packed rows, every poem from the initial state."""
    step = make_step(make_loss(model, cfg.model.unroll), optimizer)
    use_dropout = cfg.task.dropout > 0

    def chunk(state: CharLMState, rows: Packed, start, k: int):
        zero = model.initial_carry((rows.inputs.shape[0],), state.train.params.embed.dtype)

        def body(s: CharLMState, i):
            b = i % rows.inputs.shape[1]
            x = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, b, axis=1, keepdims=False), rows)  # [B, T]
            key = jax.random.fold_in(dropout_key, i) if use_dropout else None
            train, (loss, _) = step(s.train, Batch(x.inputs, x.targets, zero, key, x.resets, x.valid))
            return CharLMState(train, s.carry), loss

        return make_chunk(body, cfg.train.unroll_steps)(state, start + jnp.arange(k, dtype=jnp.int32))

    return chunk


def make_train_chunk(model: CharLM, optimizer, cfg, dropout_key) -> Any:
    """`chunk(state, streams, first_step, k) -> (state, losses [k])`: k steps in one `lax.scan`.

    Step `i` trains on batch `i mod n_batches` with dropout key `fold_in(dropout_key, i)`; the
    carried state restarts from zeros at batch 0, where each row of the stream restarts.
    """
    T = cfg.task.seq_len
    step = make_step(make_loss(model, cfg.model.unroll), optimizer)
    use_dropout = cfg.task.dropout > 0

    def chunk(state: CharLMState, streams: Streams, start, k: int):
        zero = model.initial_carry((streams.inputs.shape[0],), state.train.params.embed.dtype)

        def body(s: CharLMState, i):
            b = i % num_batches(streams, T)
            inputs, targets = batch_at(streams, b, T)
            key = jax.random.fold_in(dropout_key, i) if use_dropout else None
            batch = Batch(inputs, targets, reset_at_epoch_start(b, s.carry, zero), key)
            train, (loss, carry) = step(s.train, batch)
            return CharLMState(train, carry), loss

        return make_chunk(body, cfg.train.unroll_steps)(state, start + jnp.arange(k, dtype=jnp.int32))

    return chunk


class CharLMTally(NamedTuple):
    train_bpc: Optional[float]  # the latest chunk's mean training bits per character


def observe(tally: CharLMTally, losses, step: int) -> tuple[CharLMTally, dict]:
    """A chunk's losses (nats per character, `[k]`): their mean, in nats and in bits."""
    train_loss = float(np.mean(losses))
    return CharLMTally(bits(train_loss)), {"train_loss": train_loss, "train_bpc": bits(train_loss)}


def status(tally: CharLMTally) -> str:
    """DIVERGED once the training bpc is NaN or Inf; a language model never stops early."""
    return DIVERGED if tally.train_bpc is not None and not math.isfinite(tally.train_bpc) else TRAINING


class Sampler(NamedTuple):
    """What a validation's sample needs: a jitted `generate`, its priming text and key."""

    generate: Any  # (params, prime ids, key, temperature) -> ids
    first_char: str
    key: Any
    length: int
    temperature: float


def validate(evaluate, val, vocab: Vocab, sampler: Sampler, state: CharLMState, step: int) -> tuple[dict, dict]:
    """Validation bpc (`evaluate(params, val)` is the mean loss in nats), and a sample of
    `sampler.length` characters for `samples/step_NNNNNN.txt` (none for length 0)."""
    fields = {"val_bpc": bits(float(to_host(evaluate(state.train.params, val))))}
    if sampler.length == 0:
        return fields, {}
    prime = encode(vocab, sampler.first_char)  # host arrays: jit places them beside the parameters
    key = jax.random.fold_in(sampler.key, 2 + step)
    ids = to_host(sampler.generate(state.train.params, prime, key, sampler.temperature))
    return fields, {f"samples/step_{step:06d}.txt": sampler.first_char + decode(vocab, ids)}


def summarize(task: CharLMTask, data, state: CharLMState, tally: CharLMTally) -> dict:
    """The corpus, the vocabulary, the parameter count and the reference bpcs (unigram, uniform)."""
    failed = {"status": "failed", "error": "loss became NaN or Inf"} if status(tally) == DIVERGED else {}
    return {
        **failed,
        "corpus": task.corpus or "default (Python stdlib sources)",
        "corpus_chars": data.n_chars,
        "python_version": sys.version.split()[0],
        "vocab_size": data.vocab.size,
        "params": int(sum(np.size(x) for x in jax.tree.leaves(state.train.params))),
        "final_train_bpc": tally.train_bpc,
        "unigram_bpc": data.unigram_bpc,
        "uniform_bpc": math.log2(data.vocab.size),
        "unit": task.unit,
        **({"poems": data.poems, "padding_fraction": data.padding} if task.unit == "line" else {}),
    }


def make(cfg, optimizer: optax.GradientTransformation, devices) -> Task:
    """The task; with several devices, the batch is split over them (data parallel: XLA reduces
    the gradients, as the shardings of the parameters and the batch say)."""
    task: CharLMTask = cfg.task
    if cfg.task.batch_size % devices.count:
        raise ConfigError(
            "task.batch_size",
            cfg.task.batch_size,
            f"must be a multiple of the {devices.count} devices (backend.devices), each taking as many sequences",
        )
    key = jax.random.PRNGKey(cfg.seed)
    lines = task.unit == "line"
    if lines:
        data = load_poems(task, cfg.task.batch_size, jax.random.fold_in(key, 3))
    else:
        data = load_data(task, cfg.task.batch_size)
    dtype = dtype_of(cfg.train.dtype)
    model = build_char_lm(cfg.model, data.vocab.size, task.embedding, task.dropout, dtype, devices.platform)

    @jax.jit  # one compiled program; run eagerly, each initialiser would compile on its own
    def init() -> CharLMState:
        params = model.init(jax.random.fold_in(key, 0))
        return CharLMState(init_state(params, optimizer), model.initial_carry((cfg.task.batch_size,), dtype))

    if lines:
        evaluate = jax.jit(partial(make_evaluate_packed(model, cfg.model.unroll), batch_size=cfg.task.batch_size))
        first_char, reset_id = END, data.vocab.index[END]  # a sample is poems, each from the initial state
    else:
        evaluate = jax.jit(make_evaluate(model, task.seq_len, cfg.model.unroll))
        first_char, reset_id = data.first_char, None
    generate_ = jax.jit(partial(generate, model, length=task.sample_length, unroll=cfg.model.unroll, reset_id=reset_id))
    sampler = Sampler(generate_, first_char, key, task.sample_length, task.sample_temperature)
    program = Program(
        init=init,
        chunk=(make_poem_chunk if lines else make_train_chunk)(model, optimizer, cfg, jax.random.fold_in(key, 1)),
        consts=jax.device_put(data.train),
        partition=(CharLMState(train=P(), carry=P("data")), P("data")),  # rows of the batch over the devices
    )
    report = Report(CharLMTally(None), observe, status, partial(summarize, task, data))
    return Task(
        program,
        report,
        validation=Validation(partial(validate, evaluate, data.val, data.vocab, sampler), task.eval_every, "val_bpc"),
        display=Display(progress=("train_bpc", "val_bpc"), throughput=("chars", cfg.task.batch_size * task.seq_len)),
        identity={"vocab": "".join(data.vocab.chars), "first_char": first_char, **({"unit": "line"} if lines else {})},
    )


def memory(cfg) -> dict:
    """The peak's largest parts in bytes (see `rnn_jax.driver.memory`): the corpus as text, ids
    and streams; parameters, gradients and optimizer state; a step's logits and their gradient
    (`[batch x seq_len, vocabulary]`, what a large vocabulary makes large) and what the
    backward pass keeps."""
    task, t, m = cfg.task, cfg.train, cfg.model
    text = read_corpus(task.corpus)
    V, N = len(set(text)), len(text)
    size = 8 if t.dtype == "float64" else 4
    model = build_char_lm(m, V, task.embedding, task.dropout, dtype_of(t.dtype))
    params = parameter_count(model.init)
    id_step = jax.ShapeDtypeStruct((), jnp.int32)
    per_step = values_kept_per_step(model.init, lambda p, ids: model.apply(p, ids)[1], id_step)
    rows = task.batch_size * task.seq_len
    return {
        ("the corpus", "task.corpus"): 4 * N
        + 28 * N,  # the text, its ids, the split and the laid-out streams, on the host and the device
        ("parameters, gradients and optimizer state", "model.hidden"): 4 * params * size,
        ("a step's logits and their gradient", "task.batch_size"): 3 * rows * V * size,
        ("the backward pass", "task.batch_size"): 2 * rows * per_step * size,
    }


SPEC = TaskSpec(
    CharLMTask,
    check,
    make,
    memory,
    parallel=lambda cfg: ("task.batch_size", cfg.task.batch_size),
    objective="best_val_bpc",
    description="character-level language model (char-rnn): validation bits per character",
)
