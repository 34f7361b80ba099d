"""Proves or refutes each seed of trained addition networks at every length.

    python -m rnn_jax.verify run=<addition run dir or sweep dir>
        [seconds=1.5] [max_bits=4096] [seed=0] [beam=1024] [workers=0]

For every run directory (the one given, or each numbered job of a sweep) and every seed in its
`checkpoints/last`, the verdict is one of:

- proved: a certificate (`rnn_jax.verification.certificate`) shows, with rigorous affine
  arithmetic, that the network adds operands of every length exactly (real arithmetic on its
  float32 weights);
- refuted: operands it adds wrongly, found in float64 and confirmed by running the trained model
  itself (rnn_jax's own cell, its training dtype) against Python integers;
- unknown: neither within `seconds` of certificate search per seed (never counted as proved).

Each run's verdicts go into `verification.json` beside its `summary.json`; the report
(`python -m rnn_jax.report`) reads them. The seeds are verified by `workers` processes at once
(0: one per CPU core; 1: in this process), each seed with its own time budget.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnn_jax import verification
from rnn_jax.apps import parse_key_values, run_cli
from rnn_jax.verification import refute
from rnn_jax.verification.search import Budget


@dataclass(frozen=True)
class VerifyConfig:
    run: str | None = None  # an addition run directory, or a sweep directory of them
    seconds: float = 1.5  # certificate search budget per seed
    max_bits: int = 4096  # widest operands of the counterexample search
    seed: int = 0  # of the simulated sums that place the sets and of the random operands
    beam: int = 1024  # states of the beam search for a counterexample when no proof is found; 0: none
    workers: int = 0  # processes verifying seeds at once; 0: one per CPU core, 1: this process


class VerifyArgError(ValueError):
    """A bad command-line argument or run directory; the message names it."""


def parse_args(argv) -> VerifyConfig:
    cfg = parse_key_values(argv, VerifyConfig, VerifyArgError)
    if cfg.run is None:
        raise VerifyArgError("run=<addition run dir or sweep dir> is required")
    if not cfg.seconds > 0:
        raise VerifyArgError(f"seconds={cfg.seconds}: must be > 0")
    if cfg.max_bits < 4:
        raise VerifyArgError(f"max_bits={cfg.max_bits}: must be >= 4")
    if cfg.beam < 0:
        raise VerifyArgError(f"beam={cfg.beam}: must be >= 0 (0: no beam search)")
    if cfg.workers < 0:
        raise VerifyArgError(f"workers={cfg.workers}: must be >= 0 (0: one per CPU core)")
    return cfg


def run_dirs(path) -> list[Path]:
    """The run directories under `path`: itself if it holds a summary, else its numbered jobs."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise VerifyArgError(f"run={path}: no such directory")
    if (path / "summary.json").is_file():
        return [path]
    jobs = sorted(
        (d for d in path.iterdir() if d.name.isdigit() and (d / "summary.json").is_file()), key=lambda d: int(d.name)
    )
    if not jobs:
        raise VerifyArgError(
            f"run={path}: neither a run directory (no summary.json) nor a sweep of them (no numbered job with one)"
        )
    return jobs


@functools.cache
def _sum_program(model_cfg, dtype_name: str):
    """The trained model's output bits for inputs `[T, B, 2]`, jitted once per model config."""

    import jax

    from rnn_jax.build import build_model, dtype_of, recorded_model_config

    model = build_model(
        recorded_model_config(dict(model_cfg)),
        1,
        output_activation="sigmoid",
        dtype=dtype_of(dtype_name),
    )
    return model, jax.jit(lambda params, xs: model.logits(params, xs)[1][..., 0] > 0)


def trained_sums(params_nested: dict, config: dict, seed_index: int):
    """`sums(a, b, bits)`: what the trained model itself (rnn_jax's cells, the training dtype) of
    seed index `seed_index` answers for the operand lists `a`, `b` (Python integers below 2^bits)."""
    import jax

    from rnn_jax.driver import checkpoint
    from rnn_jax.tasks.addition import data as addition

    model, program = _sum_program(tuple(sorted(config["model"].items())), config["train"]["dtype"])
    template = jax.eval_shape(lambda key: model.init(key, 2), jax.random.PRNGKey(0))
    one = jax.tree.map(lambda a: np.asarray(a)[seed_index], params_nested) if _batched(params_nested) else params_nested
    params = checkpoint.to_target("checkpoint", jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template), one)

    def sums(a: list, b: list, bits: int) -> list:
        batch = addition.encode(a, b, bits, full_range=True, dtype=np.dtype(config["train"]["dtype"]))
        return addition.bits_int(np.asarray(program(params, batch.inputs)))

    return sums


def confirm(params_nested: dict, config: dict, seed_index: int, found: list) -> list:
    """The counterexamples the trained model itself (rnn_jax's cells, the training dtype) gets
    wrong, checked against Python integers."""
    sums = trained_sums(params_nested, config, seed_index)
    confirmed = []
    for ce in found:
        got = sums([ce.a], [ce.b], ce.bits)[0]
        if got != ce.a + ce.b:
            confirmed.append(ce._replace(got=got))
    return confirmed


def _batched(params: dict) -> bool:
    return np.ndim(params["readout"]["w"]) == 3


class Run(NamedTuple):
    """One run directory's checkpoint, read for verification."""

    path: Path
    config: dict
    params: dict  # state["train"]["params"]
    seeds: list  # seed values
    networks: list  # per seed: a `verification.Network`, or the message why the verifier cannot read it


def load_run(run_dir: Path) -> Run:
    from rnn_jax.driver import checkpoint

    summary = json.loads((run_dir / "summary.json").read_text())
    config = summary.get("config") or {}
    task = (config.get("task") or {}).get("name", summary.get("task"))
    if task != "addition":
        raise VerifyArgError(f"{run_dir}: task {task!r}; the verifier checks addition runs")
    state, _ = checkpoint.load(run_dir / "checkpoints" / "last")
    params = state["train"]["params"]
    seeds = summary.get("seed_values") or list(range(verification.seed_count(params)))
    networks = []
    for i in range(len(seeds)):
        try:
            networks.append(verification.from_params(params, config["model"], i if _batched(params) else None))
        except verification.NetworkError as e:
            networks.append(f"unsupported: {e}")
    return Run(run_dir, config, params, seeds, networks)


def record(run: Run, verdicts: list, cfg: VerifyConfig) -> dict:
    """The run's `verification.json` from its seeds' verdicts (None for a network the verifier
    cannot read), refutations confirmed on the trained model; written and returned."""
    results = []
    for i, (seed_value, net, verdict) in enumerate(zip(run.seeds, run.networks, verdicts)):
        if verdict is None:
            results.append({"seed": seed_value, "verdict": "unknown", "reason": net})
            continue
        entry = {
            "seed": seed_value,
            "verdict": verdict.status,
            "seconds": round(verdict.seconds, 3),
            "parameters": net.parameter_count,
        }
        if verdict.status == "refuted":
            confirmed = confirm(run.params, run.config, i if _batched(run.params) else 0, verdict.counterexamples)
            if confirmed:
                entry["counterexamples"] = [_counterexample(ce) for ce in confirmed]
            else:
                entry.update(verdict="unknown", reason="float64 counterexamples that the trained model adds correctly")
        elif verdict.status == "proved":
            entry["certificate"] = verdict.detail
        else:
            entry["reason"] = verdict.reason
        results.append(entry)
    out = {
        "model": run.config["model"],
        "bits": run.config["task"]["bits"],
        "seconds_per_seed": cfg.seconds,
        "max_bits": cfg.max_bits,
        "seed": cfg.seed,
        "beam": cfg.beam,
        "workers": cfg.workers,  # processes that shared the machine (the budget is wall clock)
        "proved": sum(r["verdict"] == "proved" for r in results),
        "refuted": sum(r["verdict"] == "refuted" for r in results),
        "unknown": sum(r["verdict"] == "unknown" for r in results),
        "seeds": results,
    }
    tmp = run.path / "verification.json.tmp"  # written whole, then moved over the last one
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, run.path / "verification.json")
    return out


class InProcess:
    """The `submit` of an executor, run at once in this process (`workers=1`)."""

    def submit(self, fn, *args) -> Future:
        future = Future()
        future.set_result(fn(*args))
        return future


def _submit(run: Run, cfg: VerifyConfig, executor) -> tuple:
    budget = Budget(seconds=cfg.seconds)
    futures = [
        executor.submit(verification.verify, net, budget, cfg.max_bits, cfg.seed, cfg.beam)
        if isinstance(net, verification.Network)
        else None
        for net in run.networks
    ]
    return run, futures


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _counterexample(ce: refute.Counterexample) -> dict:
    """Operands as hexadecimal strings (exact at any width in any JSON reader)."""
    return {
        "family": ce.family,
        "bits": ce.bits,
        "a": hex(ce.a),
        "b": hex(ce.b),
        "sum": hex(ce.a + ce.b),
        "got": hex(ce.got),
    }


def _counts(c: dict) -> str:
    return f"proved {c['proved']}, refuted {c['refuted']}, unknown {c['unknown']}"


def verify_runs(argv: list) -> None:
    """Verifies every run the arguments name, printing each run's counts and the totals."""
    cfg = parse_args(argv)
    dirs = run_dirs(cfg.run)
    start = time.perf_counter()
    totals = {"proved": 0, "refuted": 0, "unknown": 0}
    cfg = dataclasses.replace(cfg, workers=cfg.workers or cpu_cores())  # 0 resolved once, recorded as such
    workers = cfg.workers
    # workers that compute with NumPy only, started fresh (spawned, not forked from a process that
    # has JAX's threads; they import JAX through the package but start no backend)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    pending = collections.deque()  # runs submitted, in order; one run per worker queued ahead

    def finish(run, futures):
        out = record(run, [f and f.result() for f in futures], cfg)
        for k in totals:
            totals[k] += out[k]
        m = out["model"]
        print(f"{run.path}: {m['cell']} hidden={m['hidden']} bits={out['bits']}: {_counts(out)}", flush=True)

    try:
        for d in dirs:
            try:
                run = load_run(d)
            except Exception:  # a run that cannot be read ends the sweep, after the runs under way are recorded
                while pending:
                    finish(*pending.popleft())
                raise
            pending.append(_submit(run, cfg, pool or InProcess()))
            while len(pending) > (workers if pool else 0):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    print(f"{len(dirs)} runs, {sum(totals.values())} seeds: {_counts(totals)} in {time.perf_counter() - start:.1f} s")


def main(argv=None) -> int:
    from rnn_jax.driver.checkpoint import CheckpointError

    return run_cli(verify_runs, argv, (VerifyArgError, CheckpointError), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
