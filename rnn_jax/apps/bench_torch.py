"""The PyTorch baseline of the benchmark: `nn.LSTM`/`nn.GRU` timed in the same process as the JAX
rows, with its OpenMP threads told to sleep rather than spin between calls."""

from __future__ import annotations

import os
import sys
from typing import Optional

from rnn_jax.apps.bench_grid import LINEAR_CELL_NAMES, BenchConfig, Point, Runner


def torch_runner(p: Point, cfg: BenchConfig) -> Optional[Runner]:
    prepare_torch_threads()
    import torch

    if p.dtype != "float32" or p.cell in LINEAR_CELL_NAMES:
        return None
    torch.manual_seed(cfg.seed)
    embed = torch.nn.Embedding(cfg.vocab, p.input)
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[p.cell](p.input, p.hidden)  # time-major
    readout = torch.nn.Linear(p.hidden, cfg.vocab)
    params = [*embed.parameters(), *rnn.parameters(), *readout.parameters()]
    tokens = torch.randint(0, cfg.vocab, (p.seq_len + 1, p.batch))
    inputs, targets = tokens[:-1], tokens[1:].reshape(-1)
    xs = torch.randn(p.seq_len, p.batch, p.input)
    opt = torch.optim.Adam(params, lr=cfg.lr)

    def train_step():
        opt.zero_grad(set_to_none=True)
        ys, _ = rnn(embed(inputs))
        loss = torch.nn.functional.cross_entropy(readout(ys).reshape(-1, cfg.vocab), targets)
        loss.backward()
        opt.step()
        return loss.item()  # waits for the step

    def forward():
        with torch.no_grad():
            return rnn(xs)[0].sum().item()

    return Runner(train_step if p.mode == "train" else forward, None, None)


def prepare_torch_threads() -> None:
    """Makes PyTorch's OpenMP threads sleep, not spin, between parallel regions, so that they do not
    take the cores from XLA's thread pool (or the reverse) when both live in this process; must run
    before torch is first imported (OpenMP reads it when it loads). Measured on a 2-core CPU: a
    spinning PyTorch training step took 4.8-5.3 s in the benchmark process against 0.15-0.2 s with
    this, which is what it takes in a process of its own (docs/benchmarks.md)."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def torch_version() -> Optional[str]:
    prepare_torch_threads()
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def torch_threads() -> Optional[int]:
    return None if torch_version() is None else sys.modules["torch"].get_num_threads()
