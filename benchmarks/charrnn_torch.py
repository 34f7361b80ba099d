"""char-rnn in PyTorch, the baseline for rnn_jax's char-LM: the same recipe and the same batches.

    python benchmarks/charrnn_torch.py --corpus ../shared/corpora/songci.txt --steps 50 --eval-at 0 --eval-at 50

The recipe of `python -m rnn_jax.train +experiment=charlm`: embedding 64 (N(0, 1), as
`nn.Embedding`), 2-layer `nn.LSTM` of 128 units, linear readout, softmax cross-entropy; a 95/5
train/validation split of the corpus's ids; batches of 50 contiguous rows x 50 characters laid
out by `rnn_jax.tasks.charlm.corpus.layout` (so batch k here is batch k there), the recurrent
state carried from batch to batch and reset at each epoch start; RMSprop (alpha 0.9, eps 1e-8,
which PyTorch adds outside the square root and optax inside it), learning rate
2e-3 x 0.97^(step / 155), gradients clipped to global norm 5. Validation bpc is the mean loss over
the same (at most 20) fixed validation batches as rnn_jax's, the state carried, starting at zero.

Prints training bpc and characters/second (timed training steps only) and validation bpc at the
`--eval-at` steps. Only a benchmark: `torch` is never imported by `rnn_jax`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: fair beside JAX in one process

import argparse
import math
import time
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from rnn_jax.tasks.charlm import corpus


class Data(NamedTuple):
    vocab_size: int
    train: corpus.Streams  # numpy [B, n * T]
    val: corpus.Streams  # numpy [B_val, n_val * T]


def load(path, batch_size: int = 50, seq_len: int = 50, val_fraction: float = 0.05, eval_batches: int = 20) -> Data:
    """The corpus at `path` split and laid out exactly as `rnn_jax.tasks.charlm.task.load_data` does."""
    text = corpus.read_corpus(path)
    vocab = corpus.make_vocab(text)
    ids = corpus.encode(vocab, text)
    train_ids, val_ids = corpus.split(ids, val_fraction)
    val_rows = min(batch_size, (len(val_ids) - 1) // seq_len)
    train = corpus.layout(train_ids, batch_size, seq_len)
    val = corpus.layout(val_ids, val_rows, seq_len, eval_batches)
    as_np = lambda s: corpus.Streams(np.asarray(s.inputs), np.asarray(s.targets))
    return Data(vocab.size, as_np(train), as_np(val))


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, embedding: int = 64, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)  # N(0, 1) rows
        self.lstm = nn.LSTM(embedding, hidden, layers)  # time-major [T, B, *]
        self.readout = nn.Linear(hidden, vocab_size)

    def forward(self, ids, state=None):  # ids [T, B] -> logits [T, B, V]
        h, state = self.lstm(self.embed(ids), state)
        return self.readout(h), state


class Trainer:
    """The training loop, a step at a time: `run(k)` takes `k` steps, `evaluate()` gives val bpc."""

    def __init__(
        self,
        data: Data,
        seq_len: int = 50,
        lr: float = 2e-3,
        decay_rate: float = 0.97,
        decay_steps: int = 155,
        clip: float = 5.0,
        seed: int = 0,
    ):
        torch.manual_seed(seed)
        self.data, self.T, self.clip = data, seq_len, clip
        self.model = CharRNN(data.vocab_size)
        self.opt = torch.optim.RMSprop(self.model.parameters(), lr=lr, alpha=0.9, eps=1e-8)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: decay_rate ** (s / decay_steps))
        self.train_in = torch.from_numpy(data.train.inputs.astype(np.int64))
        self.train_tg = torch.from_numpy(data.train.targets.astype(np.int64))
        self.n_batches = data.train.inputs.shape[1] // seq_len
        self.step, self.state = 0, None

    def batch(self, streams_in, streams_tg, k):
        s = slice(k * self.T, (k + 1) * self.T)
        return streams_in[:, s].T.contiguous(), streams_tg[:, s].T.contiguous()  # [T, B]

    def run(self, k: int) -> list:
        """`k` training steps; returns their losses in nats."""
        losses = []
        for _ in range(k):
            b = self.step % self.n_batches
            if b == 0:
                self.state = None  # each row of the stream restarts at the epoch start
            inputs, targets = self.batch(self.train_in, self.train_tg, b)
            logits, state = self.model(inputs, self.state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.opt.step()
            self.sched.step()
            self.state = tuple(s.detach() for s in state)
            self.step += 1
            losses.append(loss.item())
        return losses

    @torch.no_grad()
    def evaluate(self) -> float:
        """Validation bpc over the fixed validation batches, the state carried from zero."""
        vi = torch.from_numpy(self.data.val.inputs.astype(np.int64))
        vt = torch.from_numpy(self.data.val.targets.astype(np.int64))
        state, total, n = None, 0.0, vi.shape[1] // self.T
        for k in range(n):
            inputs, targets = self.batch(vi, vt, k)
            logits, state = self.model(inputs, state)
            total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).item()
        return total / n / math.log(2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=None, help="UTF-8 text; default: rnn_jax's default corpus")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument(
        "--eval-at", type=int, action="append", default=None, help="steps after which to print validation bpc"
    )
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0: PyTorch's default")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    data = load(a.corpus)
    tr = Trainer(data, seed=a.seed)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; V={data.vocab_size}, "
        f"{tr.n_batches} training batches of 50 x 50; uniform: {math.log2(data.vocab_size):.3f} bpc"
    )
    eval_at = set(a.eval_at or [a.steps])
    if 0 in eval_at:
        print(f"step 0: val bpc {tr.evaluate():.4f}")
    seconds, done = 0.0, 0
    while done < a.steps:
        k = min(a.log_every, a.steps - done)
        t0 = time.perf_counter()
        losses = tr.run(k)
        seconds += time.perf_counter() - t0
        done += k
        line = (
            f"step {done}: train bpc {losses[-1] / math.log(2):.4f} "
            f"(first of chunk {losses[0] / math.log(2):.4f}), {done * 2500 / seconds:.0f} chars/s"
        )
        if done in eval_at:
            line += f", val bpc {tr.evaluate():.4f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
