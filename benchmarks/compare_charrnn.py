"""Characters/second of char-rnn training: rnn_jax (each readout) against PyTorch, in one process.

    python benchmarks/compare_charrnn.py --corpus ../shared/corpora/songci.txt
    python benchmarks/compare_charrnn.py                       # rnn_jax's default corpus (99 characters)
    python benchmarks/compare_charrnn.py --impl plain --impl fused   # without PyTorch

The default char-LM recipe (`+experiment=charlm`: embedding 64, 2 x LSTM 128, batches of 50 x 50
carried from batch to batch, RMSprop 2e-3 x 0.97^(step/155), clip 5) on the same batches of the
same corpus: rnn_jax trains as its app does, `--steps-per-call` steps per compiled `lax.scan`
call with the state donated; PyTorch (benchmarks/charrnn_torch.py) a step at a time, as it
does. After a warm-up call each, the implementations take turns, `--rounds` times, each turn
`--steps-per-call` steps ended by `block_until_ready` (PyTorch: `loss.item()`), so a busy machine
slows all alike. Prints the median chars/s of each, its ratio to the first implementation (of
the medians, and the median of the ratios within each round), and
for a check that all learn alike, training bpc along the way and validation bpc at the end.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # PyTorch's idle threads sleep while JAX runs

import argparse
import math
import platform
import statistics
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import rnn_jax as rj
from rnn_jax.tasks.charlm.corpus import Streams, batch_at, num_batches
from rnn_jax.tasks.charlm.model import Batch, char_lm, make_evaluate, make_loss, reset_at_epoch_start
from rnn_jax.training import TrainState, init_state, make_step

T, B = 50, 50


class State(NamedTuple):
    train: TrainState
    carry: Any


class JaxTrainer:
    """rnn_jax's char-LM trained as `rnn_jax.tasks.charlm.task` does: steps in `lax.scan` chunks."""

    def __init__(self, data, readout: str, matmul_dtype=None, seed: int = 0, eps_in_sqrt: bool = True):
        self.model = char_lm([rj.lstm(128), rj.lstm(128)], data.vocab_size, 64)
        rmsprop = optax.rmsprop(optax.exponential_decay(2e-3, 155, 0.97), eps_in_sqrt=eps_in_sqrt)
        optimizer = optax.chain(optax.clip_by_global_norm(5.0), rmsprop)
        step = make_step(make_loss(self.model, readout=readout, matmul_dtype=matmul_dtype), optimizer)
        self.streams = jax.device_put(Streams(*data.train))
        self.val = jax.device_put(Streams(*data.val))
        n = num_batches(self.streams, T)
        zero = self.model.initial_carry((B,))

        def chunk(state: State, step_ids, streams):
            def body(s: State, i):
                k = i % n
                inputs, targets = batch_at(streams, k, T)
                train, (loss, carry) = step(
                    s.train, Batch(inputs, targets, reset_at_epoch_start(k, s.carry, zero), None)
                )
                return State(train, carry), loss

            return jax.lax.scan(body, state, step_ids)

        self.chunk = jax.jit(chunk, donate_argnums=0)
        self.evaluate_fn = jax.jit(make_evaluate(self.model, T, readout=readout, matmul_dtype=matmul_dtype))
        params = self.model.init(jax.random.PRNGKey(seed))
        self.state = State(init_state(params, optimizer), jax.tree.map(jnp.copy, zero))  # donated: buffers of its own
        self.step = 0

    def run(self, k: int) -> list:
        ids = jnp.arange(self.step, self.step + k, dtype=jnp.int32)
        self.state, losses = self.chunk(self.state, ids, self.streams)
        self.step += k
        return [float(x) for x in jax.block_until_ready(losses)]

    def evaluate(self) -> float:
        return float(self.evaluate_fn(self.state.train.params, self.val)) / math.log(2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=None, help="UTF-8 text; default: rnn_jax's default corpus")
    p.add_argument("--impl", action="append", help="plain, fused, fused_bf16, torch (default: all four, torch first)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps-per-call", type=int, default=10)
    p.add_argument(
        "--eps-outside-sqrt",
        action="store_true",
        help="rnn_jax's RMSprop as PyTorch's, g / (sqrt(v) + eps) (the app's: g / sqrt(v + eps))",
    )
    a = p.parse_args(argv)
    impls = a.impl or ["torch", "plain", "fused", "fused_bf16"]

    import charrnn_torch  # beside this file; imports torch

    data = charrnn_torch.load(a.corpus, B, T)
    trainers = {}
    for name in impls:
        if name == "torch":
            trainers[name] = charrnn_torch.Trainer(data)
        else:
            readout, _, dtype = name.partition("_")
            trainers[name] = JaxTrainer(
                data, readout, jnp.bfloat16 if dtype == "bf16" else None, eps_in_sqrt=not a.eps_outside_sqrt
            )
    import torch

    print(
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{platform.machine()}, {os.cpu_count()} CPUs; V={data.vocab_size}, B={B} T={T}, float32; "
        f"{a.rounds} rounds x {a.steps_per_call} steps after a warm-up call; rnn_jax's RMSprop eps "
        f"{'outside' if a.eps_outside_sqrt else 'inside'} the square root"
    )
    val0 = {name: tr.evaluate() for name, tr in trainers.items()}
    curves = {name: tr.run(a.steps_per_call) for name, tr in trainers.items()}  # warm-up (compiles)
    seconds = {name: [] for name in trainers}
    for _ in range(a.rounds):
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            curves[name] += tr.run(a.steps_per_call)
            seconds[name].append(time.perf_counter() - t0)
    chars = a.steps_per_call * B * T
    base = impls[0]
    cps = {name: chars / statistics.median(s) for name, s in seconds.items()}
    # The ratio within each round (calls seconds apart) is steadier than the ratio of medians.
    per_round = {name: statistics.median(b / t for b, t in zip(seconds[base], s)) for name, s in seconds.items()}
    print(f"\n{'implementation':<14} {'chars/s (median)':>17} {'min..max':>17} {'/ ' + base:>10} {'per round':>10}")
    for name, s in seconds.items():
        lo, hi = chars / max(s), chars / min(s)
        print(
            f"{name:<14} {cps[name]:17.0f} {lo:8.0f}..{hi:<8.0f} {cps[name] / cps[base]:10.2f} {per_round[name]:10.2f}"
        )
    total = len(next(iter(curves.values())))
    marks = sorted({0, 9, total // 2 - 1, total - 1})
    print(
        f"\ntraining bpc at steps {[m + 1 for m in marks]} (uniform: {math.log2(data.vocab_size):.3f}); "
        f"validation bpc at 0 and {total}:"
    )
    for name, c in curves.items():
        bpc = " ".join(f"{c[m] / math.log(2):7.3f}" for m in marks)
        print(f"{name:<14} {bpc}   val {val0[name]:.3f} -> {trainers[name].evaluate():.3f}")


if __name__ == "__main__":
    main()
