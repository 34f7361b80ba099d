"""`task=charlm`: train a char-rnn on a corpus, validate, sample, checkpoint and resume.

`run(cfg, run_dir, device) -> summary` is what `rnn_jax.train` calls. The training loop runs
in compiled chunks of `lax.scan` (`rnn_jax.training.make_chunk`); Python is touched between
chunks only, to log, validate, sample and checkpoint. Everything a step needs (the batch, the
dropout key, whether the recurrent state restarts) is a function of the step number, so a run
resumed from a checkpoint takes exactly the steps an uninterrupted run would.

Run directory: `metrics.jsonl`, `summary.json`, `samples/step_NNNNNN.txt` (one per validation),
`checkpoints/last` (every validation, the end, and on SIGINT/SIGTERM) and `checkpoints/best`
(lowest validation bpc; its `meta.json` holds the step and the bpc).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.driver import checkpoint
from rnn_jax.build import dtype_of
from rnn_jax.tasks.charlm.model import Batch, CharLM, build_char_lm, generate, make_evaluate, make_loss, reset_at_epoch_start
from rnn_jax.driver.checkpoint import CheckpointError
from rnn_jax.driver.config import CharLMTask, Config
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
from rnn_jax.driver.optim import make_optimizer
from rnn_jax.driver.rundir import MetricsLog, interrupts_deferred, read_jsonl, write_summary
from rnn_jax.training import TrainState, init_state, make_chunk, make_step

KIND = "charlm"  # meta["kind"] of this task's checkpoints


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
    ids = encode(vocab, text)
    train_ids, val_ids = split(ids, task.val_fraction)
    T = task.seq_len
    if len(train_ids) < batch_size * T + 1:
        raise CorpusError(
            f"{name}: too short: {len(text)} characters leave {len(train_ids)} for training, fewer than one batch "
            f"of train.batch_size={batch_size} sequences of task.seq_len={T} (+1) = {batch_size * T + 1}"
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


def make_train_chunk(model: CharLM, optimizer, cfg: Config, dropout_key) -> Any:
    """`chunk(state, step_ids [K], streams) -> (state, losses [K])`: K steps in one `lax.scan`.

    Step `i` trains on batch `i mod n_batches` with dropout key `fold_in(dropout_key, i)`; the
    carried state restarts from zeros at batch 0, where each row of the stream restarts.
    """
    T = cfg.task.seq_len
    step = make_step(make_loss(model, cfg.model.unroll), optimizer)
    use_dropout = cfg.task.dropout > 0

    def chunk(state: CharLMState, step_ids, streams: Streams):
        zero = model.initial_carry((streams.inputs.shape[0],), state.train.params.embed.dtype)

        def body(s: CharLMState, i):
            k = i % num_batches(streams, T)
            inputs, targets = batch_at(streams, k, T)
            key = jax.random.fold_in(dropout_key, i) if use_dropout else None
            batch = Batch(inputs, targets, reset_at_epoch_start(k, s.carry, zero), key)
            train, (loss, carry) = step(s.train, batch)
            return CharLMState(train, carry), loss

        return make_chunk(body, cfg.train.unroll_steps)(state, step_ids)

    return chunk


def checkpoint_meta(cfg: Config, data: CharLMData, step: int, **extra) -> dict:
    return {
        "kind": KIND,
        "step": step,
        "vocab": "".join(data.vocab.chars),
        "first_char": data.first_char,
        "config": dataclasses.asdict(cfg),
        **extra,
    }


# Settings that shape the training state: a resume must keep them (the learning rate, dropout,
# steps and the like may change). "optim.clip_norm" counts only as set or not.
STATE_SHAPING_KEYS = (
    "model.cell", "model.hidden", "model.layers", "model.use_bias", "model.readout_bias",
    "task.embedding", "optim.name", "optim.schedule", "optim.clip_norm", "train.batch_size", "train.dtype",
)


def restore(path: Path, template: CharLMState, vocab: Optional[Vocab] = None, cfg: Optional[Config] = None):
    """`(state, meta)` from the checkpoint directory `path`; `CheckpointError` when it is not a
    charlm checkpoint, was trained on another vocabulary or with settings that shape the state
    otherwise than `cfg`, or does not fit `template`."""
    meta = checkpoint.load_meta(path)
    check_meta(path, meta, vocab)  # before reading the state
    if cfg is not None:
        check_same_shape(path, meta["config"], dataclasses.asdict(cfg))
    state, meta = checkpoint.load(path, target=template)
    return jax.device_put(state), meta


def check_same_shape(path: Path, saved: dict, wanted: dict) -> None:
    """`CheckpointError` naming every `STATE_SHAPING_KEYS` setting that differs."""

    def value(config, key):
        section, name = key.split(".")
        v = config.get(section, {}).get(name)
        return ("set" if v is not None else "None") if key == "optim.clip_norm" else v

    differ = [k for k in STATE_SHAPING_KEYS if value(saved, k) != value(wanted, k)]
    if differ:
        was = ", ".join(f"{k}={value(saved, k)}" for k in differ)
        now = ", ".join(f"{k}={value(wanted, k)}" for k in differ)
        raise CheckpointError(f"checkpoint {path} was trained with {was}; this run has {now}. Resuming needs the same model, optimizer, batch size and dtype")


def check_meta(path: Path, meta: dict, vocab: Optional[Vocab] = None) -> None:
    """`CheckpointError` unless `meta` describes a charlm checkpoint (of `vocab`, when given)."""
    if meta.get("kind") != KIND or "vocab" not in meta or "config" not in meta:
        raise CheckpointError(f"checkpoint {path}: not a charlm checkpoint (kind {meta.get('kind')!r})")
    if vocab is not None and meta["vocab"] != "".join(vocab.chars):
        raise CheckpointError(
            f"checkpoint {path}: trained on another vocabulary ({len(meta['vocab'])} characters, "
            f"the corpus now has {vocab.size}); did the corpus change?"
        )


def _continue_metrics(source: Path, run_dir: Path, step: int) -> None:
    """Keeps the metric lines up to the checkpoint's `step` (from `source`) in `run_dir`, so the
    resumed run appends to its history instead of restarting or repeating it."""
    old = source / "metrics.jsonl"
    records = [r for r in read_jsonl(old) if r.get("step", math.inf) <= step] if old.exists() else []
    text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in records)
    checkpoint.atomic_write_bytes(run_dir / "metrics.jsonl", text.encode())


def _chunk_end(step: int, cfg: Config) -> int:
    """The next step at which Python must look: a log, a validation or the end."""
    t = cfg.train
    return min(t.steps, (step // t.log_every + 1) * t.log_every, (step // cfg.task.eval_every + 1) * cfg.task.eval_every)


def run(cfg: Config, run_dir: Path, device: dict) -> dict[str, Any]:
    """Trains (or resumes) the char-rnn of `cfg` in `run_dir`; returns the summary."""
    task, t0 = cfg.task, time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(task, cfg.train.batch_size)
    dtype = dtype_of(cfg.train.dtype)
    model = build_char_lm(cfg.model, data.vocab.size, task.embedding, task.dropout, dtype)
    optimizer = make_optimizer(cfg.optim, cfg.train.steps)
    key = jax.random.PRNGKey(cfg.seed)

    @jax.jit  # one compiled program; run eagerly, each initialiser would compile on its own
    def initial_state(key) -> CharLMState:
        params = model.init(jax.random.fold_in(key, 0))
        return CharLMState(init_state(params, optimizer), model.initial_carry((cfg.train.batch_size,), dtype))

    state = initial_state(key)

    # Resume: from train.resume, else from this directory's own last checkpoint if it has one.
    source = Path(cfg.train.resume).expanduser() if cfg.train.resume else run_dir
    last, best = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    resumed_from, prev_elapsed, best_bpc = None, 0.0, math.inf
    if cfg.train.resume and not (source / "checkpoints" / "last").is_dir():
        if (source / "checkpoint").is_dir():
            raise CheckpointError(f"train.resume={cfg.train.resume} is an addition run; resuming needs a charlm run directory")
        raise CheckpointError(f"train.resume={cfg.train.resume}: no checkpoint at {source / 'checkpoints' / 'last'}")
    if (source / "checkpoints" / "last").is_dir():
        state, meta = restore(source / "checkpoints" / "last", state, data.vocab, cfg)
        resumed_from = str(source / "checkpoints" / "last")
        prev_elapsed = float(meta.get("elapsed", 0.0))
        best_bpc = meta.get("best_val_bpc") or math.inf
        _continue_metrics(source, run_dir, int(state.train.step))
        if source != run_dir and (source / "checkpoints" / "best").is_dir():
            b_state, b_meta = restore(source / "checkpoints" / "best", state, data.vocab)
            checkpoint.save(best, b_state, b_meta)
    else:  # a fresh start: lines a run that died before its first checkpoint left are void
        _continue_metrics(run_dir, run_dir, 0)

    chunk = jax.jit(make_train_chunk(model, optimizer, cfg, jax.random.fold_in(key, 1)))
    evaluate = jax.jit(make_evaluate(model, task.seq_len, cfg.model.unroll))
    sample = jax.jit(partial(generate, model, length=task.sample_length, unroll=cfg.model.unroll))
    prime = jnp.asarray(encode(data.vocab, data.first_char))
    train_streams, val_streams = jax.device_put(data.train), jax.device_put(data.val)
    metrics = MetricsLog(run_dir)
    compiled: dict[int, Any] = {}
    compile_seconds = train_seconds = 0.0
    start = step = int(state.train.step)
    chars_per_step = cfg.train.batch_size * task.seq_len
    val_bpc = train_bpc = None

    def save_last(extra=None):
        elapsed = prev_elapsed + time.perf_counter() - t0
        done = int(state.train.step)
        meta = checkpoint_meta(cfg, data, done, elapsed=elapsed, best_val_bpc=_finite(best_bpc), **(extra or {}))
        checkpoint.save(last, state, meta)

    def validate_and_sample():
        nonlocal best_bpc
        bpc = bits(float(evaluate(state.train.params, val_streams)))
        if task.sample_length > 0:
            ids = sample(state.train.params, prime, jax.random.fold_in(key, 2 + step), task.sample_temperature)
            text = data.first_char + decode(data.vocab, ids)
            path = run_dir / "samples" / f"step_{step:06d}.txt"
            checkpoint.atomic_write_bytes(path, text.encode("utf-8"))
        if bpc < best_bpc:
            best_bpc = bpc
            checkpoint.save(best, state, checkpoint_meta(cfg, data, step, val_bpc=bpc, best_val_bpc=bpc))
        return bpc

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.train.steps, initial=start, unit="step", disable=not cfg.train.progress, file=sys.stderr)
    try:
        while step < cfg.train.steps:
            end = _chunk_end(step, cfg)
            n = end - step
            step_ids = jnp.arange(step, end, dtype=jnp.int32)
            if n not in compiled:  # one program per chunk length, compiled ahead and timed apart
                c0 = time.perf_counter()
                compiled[n] = chunk.lower(state, step_ids, train_streams).compile()
                compile_seconds += time.perf_counter() - c0
            c0 = time.perf_counter()
            new_state, losses = compiled[n](state, step_ids, train_streams)
            train_loss = float(np.mean(np.asarray(losses)))  # waits for the chunk
            seconds = time.perf_counter() - c0
            # The state, the step count, the checkpoint and the log line move together: an
            # interrupt before this block drops the chunk, one inside it waits for its end.
            with interrupts_deferred():
                state = new_state
                train_seconds += seconds
                step, train_bpc = end, bits(train_loss)
                record = {"step": step, "train_loss": train_loss, "train_bpc": train_bpc}
                if step % task.eval_every == 0 or step == cfg.train.steps:
                    val_bpc = validate_and_sample()
                    record["val_bpc"] = val_bpc
                    save_last({"val_bpc": val_bpc})
                record["chars_per_sec"] = n * chars_per_step / seconds
                record["elapsed"] = prev_elapsed + time.perf_counter() - t0
                metrics.write(record)
            bar.update(n)
            bar.set_postfix(train_bpc=f"{train_bpc:.3f}", val_bpc=f"{val_bpc:.3f}" if val_bpc is not None else "-")
    except KeyboardInterrupt:
        interrupted = True
        save_last({"interrupted": True})
    else:
        interrupted = False
    finally:
        bar.close()
    if start >= cfg.train.steps:
        print(f"the checkpoint is already at step {start} >= train.steps={cfg.train.steps}: nothing to train", file=sys.stderr)
    if val_bpc is None and not interrupted:  # nothing left to train (a finished run resumed): report the checkpoint
        val_bpc = bits(float(evaluate(state.train.params, val_streams)))
        save_last({"val_bpc": val_bpc})

    trained = step - start
    finite = all(x is None or math.isfinite(x) for x in (train_bpc, val_bpc))
    return_summary = {
        "status": "interrupted" if interrupted else "ok" if finite else "failed",
        "task": KIND,
        "cell": cfg.model.cell,
        "layers": cfg.model.layers,
        "hidden": cfg.model.hidden,
        "embedding": task.embedding,
        "seq_len": task.seq_len,
        "batch_size": cfg.train.batch_size,
        "steps": step,
        "steps_this_run": trained,
        "resumed_from": resumed_from,
        "corpus": task.corpus or "default (Python stdlib sources)",
        "corpus_chars": data.n_chars,
        "python_version": sys.version.split()[0],
        "vocab_size": data.vocab.size,
        "params": int(sum(np.size(x) for x in jax.tree.leaves(state.train.params))),
        "final_train_bpc": train_bpc,
        "final_val_bpc": val_bpc,
        "best_val_bpc": _finite(best_bpc if val_bpc is None else min(best_bpc, val_bpc)),
        "unigram_bpc": data.unigram_bpc,
        "uniform_bpc": math.log2(data.vocab.size),
        "chars_per_second": trained * chars_per_step / train_seconds if trained else None,
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "elapsed_seconds": prev_elapsed + time.perf_counter() - t0,
        **{k: device.get(k) for k in ("backend", "device_kind", "jax_version")},
    }
    if not finite:
        return_summary["error"] = "loss became NaN or Inf"
    write_summary(run_dir, return_summary)
    if interrupted:
        raise KeyboardInterrupt
    return return_summary


def _finite(x):
    return x if x is not None and math.isfinite(x) else None
