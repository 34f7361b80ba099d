"""Binary addition's host report: the typed tally, its status, and the end-of-run evaluation
(generalisation to longer sums and the carry-chain evaluation) with the summary's fields.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.tasks.addition import carry_chain
from rnn_jax.tasks.addition import data as addition
from rnn_jax.tasks.addition.evaluate import generalization_pairs, packed_exact
from rnn_jax.tasks.addition.program import AdditionState, Setup, compile_options
from rnn_jax.tasks.base import DIVERGED, SOLVED, TRAINING, to_host

if TYPE_CHECKING:  # the config dataclass's module imports this one
    from rnn_jax.tasks.addition.task import AdditionTask


class AdditionTally(NamedTuple):
    """Per seed, after the latest chunk."""

    finite: list  # [S] bool: every loss so far finite
    accuracy: list  # [S] exact-sum accuracy on the evaluation set (0 for a non-finite seed)
    steps_to_solve: list  # [S] the first logged step at which the seed was exact, or None


def fresh_tally(seeds: int) -> AdditionTally:
    return AdditionTally([True] * seeds, [0.0] * seeds, [None] * seeds)


def observe(tally: AdditionTally, outputs, step: int) -> tuple[AdditionTally, dict]:
    """Folds a chunk's `(losses [S, k], accuracy [S])` into the tally: a seed whose loss was ever
    non-finite stays so, with accuracy 0; a seed exact at `step` for the first time is solved
    there. Fields: the mean finite loss and the mean accuracy (and each seed's, for several)."""
    losses, accuracy = (np.asarray(x) for x in outputs)
    finite = np.asarray(tally.finite) & np.isfinite(losses).all(axis=1)
    accuracy = np.where(finite, accuracy, 0.0)
    solved = [
        s if s is not None else (step if ok and a == 1.0 else None)
        for s, ok, a in zip(tally.steps_to_solve, finite, accuracy)
    ]
    mean_loss = losses.mean(axis=1)
    fields = {"loss": _mean_finite(mean_loss), "accuracy": float(accuracy.mean())}
    if len(finite) > 1:
        fields["per_seed"] = {"loss": [float(x) for x in mean_loss], "accuracy": [float(a) for a in accuracy]}
    return AdditionTally(finite.tolist(), accuracy.tolist(), solved), fields


def status(stop_when_solved: bool, tally: AdditionTally) -> str:
    """DIVERGED when no seed is finite; SOLVED, with `stop_when_solved`, when every seed was exact
    at the latest evaluation; else TRAINING."""
    if not any(tally.finite):
        return DIVERGED
    if stop_when_solved and all(a == 1.0 for a in tally.accuracy):
        return SOLVED
    return TRAINING


def seed_figures(tally: AdditionTally, seeds: list[int], params_finite, widths: list[int], per_width) -> dict:
    """The summary's per-seed figures from the tally and the generalisation accuracies
    (`per_width [S, len(widths)]`): a seed whose losses or final weights are not finite counts
    as accuracy 0 everywhere and is listed in `failed_seeds`."""
    finite = np.asarray(tally.finite) & np.asarray(params_finite)
    accuracy = np.where(finite, tally.accuracy, 0.0)
    per_width = np.where(finite[:, None], np.asarray(per_width), 0.0)
    figures = {
        "status": "ok" if finite.any() else "failed",
        "seed_values": list(seeds),
        "final_accuracy": float(accuracy.mean()),
        "per_seed_accuracy": [float(a) for a in accuracy],
        "success_rate": float(np.mean(accuracy == 1.0)),
        "steps_to_solve": list(tally.steps_to_solve),
        "failed_seeds": [s for s, ok in zip(seeds, finite) if not ok],
        "generalization": {str(n): float(a) for n, a in zip(widths, per_width.mean(axis=0))},
        "generalization_per_seed": {str(n): [float(a) for a in per_width[:, j]] for j, n in enumerate(widths)},
    }
    if not finite.any():
        figures["error"] = "loss became NaN or Inf in every seed"
    return figures


class Evaluation(NamedTuple):
    """The end-of-training evaluation of replicas (leading axis R), on the host."""

    widths: list  # the generalisation widths, in the order of per_width's columns
    per_width: np.ndarray  # [R, widths]: exact fraction of random sums per generalisation width
    params_finite: np.ndarray  # [R]: every final weight finite
    chains: Optional[list]  # per carry-chain group, [R, pairs] exact sums; None: none configured
    compile_seconds: float
    chain_seconds: float

    def rows(self, rows: slice) -> "Evaluation":
        """The evaluation of replicas `rows` alone (the seconds stay those of the whole)."""
        chains = None if self.chains is None else [c[rows] for c in self.chains]
        return self._replace(per_width=self.per_width[rows], params_finite=self.params_finite[rows], chains=chains)


def evaluate(setup: Setup, task: AdditionTask, platform: str, params) -> Evaluation:
    """Generalisation to `task.generalization_bits` and the carry-chain evaluation of every
    replica of `params` (leaves `[R, ...]`), each program compiled once for all of them."""
    replicas = jax.tree.leaves(params)[0].shape[0]
    width = setup.state_size * replicas  # hidden values per evaluated step
    widths, packed = generalization_pairs(task.generalization_bits, task.generalization_samples, task.full_range, width)
    pairs = len(widths) * task.generalization_samples

    def exact_and_finite(params, packed):  # a last update can leave NaN weights behind a finite loss
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(w)) for w in jax.tree.leaves(params)]))
        return packed_exact(setup.model, params, packed, pairs), finite

    t0 = time.perf_counter()
    program = (
        jax.jit(jax.vmap(exact_and_finite, in_axes=(0, None)))
        .lower(params, packed)
        .compile(compiler_options=compile_options(platform))
    )
    compile_seconds = time.perf_counter() - t0
    per_pair, params_finite = to_host(program(params, packed))
    per_width = np.asarray(per_pair).reshape(replicas, len(widths), task.generalization_samples).mean(axis=2)
    chains, t0 = chain_groups(task), time.perf_counter()
    if chains:
        # On the host first: the chain program is compiled for one device, the state may be split.
        on_host = jax.device_put(to_host(params))
        chains = carry_chain.exact(setup.model, on_host, chains, task.chain_piece_steps, compile_options(platform))
    return Evaluation(
        widths, per_width, np.asarray(params_finite), chains or None, compile_seconds, time.perf_counter() - t0
    )


def chain_groups(task: AdditionTask) -> list:
    return carry_chain.groups(
        task.carry_chain_lengths, task.carry_chain_samples, task.long_random_bits, task.long_random_samples
    )


def summary_fields(task: AdditionTask, seeds: list[int], tally: AdditionTally, e: Evaluation) -> dict:
    """The task's part of `summary.json` from the tally and the evaluation of these seeds."""
    fields = seed_figures(tally, seeds, e.params_finite, e.widths, e.per_width)
    fields["eval_pairs"] = min(addition.operand_count(task.bits, task.full_range), task.eval_samples)
    fields["compile_seconds"] = e.compile_seconds
    if e.chains is not None:
        finite = np.asarray(tally.finite) & e.params_finite
        fields.update(carry_chain.summary(chain_groups(task), e.chains, finite), carry_chain_seconds=e.chain_seconds)
    return fields


def summarize(
    setup: Setup, task: AdditionTask, seeds: list[int], platform: str, state: AdditionState, tally: AdditionTally
) -> dict:
    return summary_fields(task, seeds, tally, evaluate(setup, task, platform, state.train.params))


def _mean_finite(x) -> float:
    x = np.asarray(x)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan
