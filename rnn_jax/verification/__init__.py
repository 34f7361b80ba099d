"""Proofs that a trained addition network adds correctly at every length, or operands it gets wrong.

    from rnn_jax.verification import from_params, verify
    verdict = verify(from_params(state["train"]["params"], config["model"], seed=0))
    verdict.status  # "proved" | "refuted" | "unknown"

`verify` first looks for a counterexample (`refute.search`: adversarial sums run in float64),
then for a certificate (`search.find_certificate`, checked by `certificate.check` with rigorous
affine arithmetic, `affine`), and when there is none, for a counterexample again with a beam
search over input pairs (`refute.beam`). NumPy only: no JAX, no Hydra.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Optional

from rnn_jax.verification import refute
from rnn_jax.verification.certificate import Certificate, check, describe
from rnn_jax.verification.network import Network, NetworkError, from_params, seed_count
from rnn_jax.verification.search import Budget, find_certificate

__all__ = [
    "Budget",
    "Certificate",
    "Network",
    "NetworkError",
    "Verdict",
    "check",
    "from_params",
    "seed_count",
    "verify",
]


class Verdict(NamedTuple):
    status: str  # "proved" | "refuted" | "unknown"
    reason: str  # for "unknown": why neither; else ""
    certificate: Certificate | None
    counterexamples: list  # refute.Counterexample, shortest width first
    seconds: float
    detail: dict  # a short description of the certificate (nodes, history, depth, runs, margin)


def verify(
    net: Network, budget: Optional[Budget] = None, max_bits: int = 4096, seed: int = 0, beam: int = 1024
) -> Verdict:
    """Refutes `net` (float64 counterexamples, to be confirmed by the caller on the real model),
    else proves it within `budget` (None: `Budget()`), else refutes it with a beam search of
    `beam` states (0: none; a proved network needs none), else "unknown"."""
    budget = Budget() if budget is None else budget
    start = time.perf_counter()
    found = refute.search(net, max_bits=max_bits, seed=seed)
    if not found:
        attempt = find_certificate(net, budget, seed)
        if attempt.certificate is not None and attempt.outcome.ok:
            detail = describe(attempt.certificate, attempt.outcome)
            return Verdict("proved", "", attempt.certificate, [], time.perf_counter() - start, detail)
        found = refute.beam(net, beam, seed=seed) if beam else []
    if found:
        return Verdict("refuted", "", None, found, time.perf_counter() - start, {})
    last = f"history {attempt.history}, depth {attempt.depth}, runs {attempt.runs}: {attempt.outcome.reason}"
    why = f"no certificate within the budget (last tried {last})"
    return Verdict("unknown", why, None, [], time.perf_counter() - start, {})
