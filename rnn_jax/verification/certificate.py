"""Certificates of correctness at every length, and their rigorous check.

A certificate is a finite abstraction of the network as a ripple-carry adder. Its nodes are sets
of states, each labelled with a carry, the last `history` input pairs and (when `runs` > 0) the
length of the current run of held carries (steps with a + b = 1, capped at `runs`): a network's
state drifts slowly along such a run, and one node per run length keeps each set a short piece of
that drift instead of a box around all of it. The labels form a finite automaton over the input
pairs (`next_run`, the history shifted), so the induction below holds for any such labelling.
Each set is a box in its own basis (a parallelotope):

    S = { center + basis @ u :  lo <= u <= hi }

`check(net, cert)` proves, with the rigorous affine arithmetic of `rnn_jax.verification.affine`:

1. from the initial (zero) state, for every word of `prefix` input pairs (at least
   `max(history, 1)`): every output bit is the sum bit, and the final state lies in the node of
   its carry and labels. The initial state is a point, so these words are run as points (no set
   to relax); a longer prefix lets the states leave the transient near the zero state, which is
   not where the network's states live afterwards, before the nodes must hold them;
2. from every node, for every word of `depth` input pairs: every output bit is the sum bit for the
   node's carry, and the final state lies in the node of the carry and labels it reaches.

By induction over blocks of `depth` steps, after `prefix + i * depth` steps of any input
sequence the state lies in the node of its true carry and labels, and every output bit of every
step is right: every sequence is a prefix of a longer one whose steps the words cover. A network
so certified adds operands of every length exactly (in real arithmetic on its float32 weights;
see `docs/verification.md` for what that leaves out).

Containment of an affine form Z in S uses an approximate inverse W of `basis` (rows) and
rho = ||I - W basis||_inf, bounded rigorously: basis^-1 = (I - R)^-1 W with ||R|| <= rho < 1,
so basis^-1 (z - center) lies within rho / (1 - rho) ||W (z - center)||_inf of W (z - center).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from rnn_jax.verification import affine
from rnn_jax.verification.network import PAIRS, Network, initial_state, step

A_BITS = np.array([0, 1, 0, 1])  # pair p = a + 2 b
B_BITS = np.array([0, 0, 1, 1])


class Node(NamedTuple):
    carry: int
    history: tuple  # the last steps as (carry before, input pair 0..3 = a + 2 b), oldest first
    center: np.ndarray  # [n]
    basis: np.ndarray  # [n, n]: the set is center + basis @ u
    lo: np.ndarray  # [n]
    hi: np.ndarray  # [n]
    run: int = 0  # how many of the last steps held the carry (a + b = 1), up to the certificate's `runs`


class Certificate(NamedTuple):
    nodes: tuple
    history: int  # how many past input pairs label a node
    depth: int  # steps of the words checked from each node
    runs: int = 0  # nodes are also labelled with the length of the current run of held carries, up to this
    prefix: int = 0  # steps run from the initial state before the nodes must hold it (at least max(history, 1))


class Images(NamedTuple):
    """Every word of `depth` pairs run from every start set: `[B * 4^depth]` rows, start-major."""

    form: affine.Form  # the final states
    carry: np.ndarray  # [R] the true carry after the word
    history: list  # [R] tuples: the history the final state has
    run: np.ndarray  # [R] the length of the run of held carries the word ends with (capped)
    margin: np.ndarray  # [R] smallest signed logit margin over the word's steps (> 0: every bit right)
    start: np.ndarray  # [R] index of the start set


def carry_and_bit(carry: np.ndarray, pair: np.ndarray):
    total = carry + A_BITS[pair] + B_BITS[pair]
    return total // 2, total % 2


def _tile(form: affine.Form, k: int) -> affine.Form:
    return affine.Form(*(np.repeat(a, k, axis=0) for a in form))


def next_run(run: np.ndarray, pair: np.ndarray, runs: int) -> np.ndarray:
    """The run of held carries after `pair`: one longer (up to `runs`) for a + b = 1, else 0."""
    return np.where((pair == 1) | (pair == 2), np.minimum(run + 1, runs), 0)


def images(net: Network, start: affine.Form, carries, histories, depth: int, keep: int, runs=0, run=None) -> Images:
    """Runs every word of `depth` input pairs from each start set; `keep` past pairs and the run of
    held carries (up to `runs`; `run` the start sets', None: 0) label the ends."""
    B = start.c.shape[0]
    form, carry = start, np.asarray(carries)
    run = np.zeros(B, np.int64) if run is None else np.asarray(run)
    hist = list(histories)
    index = np.arange(B)
    margin = np.full(B, np.inf)
    for _ in range(depth):
        R = form.c.shape[0]
        form, carry, index, margin = _tile(form, 4), np.repeat(carry, 4), np.repeat(index, 4), np.repeat(margin, 4)
        pair = np.tile(np.arange(4), R)
        run = next_run(np.repeat(run, 4), pair, runs)
        hist = [h for h in hist for _ in range(4)]
        hist = [(h + ((int(c), p),))[-keep:] if keep else () for h, c, p in zip(hist, carry, pair)]
        carry, bit = carry_and_bit(carry, pair)
        state, logit = step(affine.AFFINE, net, form, affine.point(PAIRS[pair]))
        lo, hi = affine.interval(logit)
        margin = np.minimum(margin, np.where(bit == 1, lo[:, 0], -hi[:, 0]))
        form = affine.absorb(state)
    return Images(form, carry, hist, run, margin, index)


def node_form(nodes) -> affine.Form:
    """The nodes' sets as affine forms (one row each, n generators): center + basis diag(rad) eps."""
    lo, hi = np.stack([n.lo for n in nodes]), np.stack([n.hi for n in nodes])
    basis, center = np.stack([n.basis for n in nodes]), np.stack([n.center for n in nodes])
    mid = 0.5 * (lo + hi)
    rad = np.maximum(affine._up(hi - mid), affine._up(mid - lo))
    base = affine.Form(mid, rad[:, :, None] * np.eye(lo.shape[1]), np.zeros_like(mid))  # u as a form (exact)
    return affine.shift(affine.linear(base, np.swapaxes(basis, -1, -2), None), center)  # center + basis @ u, per node


def inverse_bound(basis: np.ndarray):
    """`(W, rho)`: an approximate inverse of `basis` and a rigorous bound on ||I - W basis||_inf."""
    W = np.linalg.inv(basis)
    n = basis.shape[0]
    P = W @ basis
    err = affine._err(np.abs(W) @ np.abs(basis), n)
    rows = affine._bound((np.abs(np.eye(n) - P) + err).sum(axis=1), n)  # |I - P| rounded: 1 op, covered
    return W, float(affine._up(rows.max() * (1 + 4 * affine.U)))


def coordinates(form: affine.Form, node: Node, inverse=None):
    """Rigorous `(lo, hi)` of basis^-1 (z - center) over the rows of `form`, `[R, n]` each."""
    W, rho = inverse_bound(node.basis) if inverse is None else inverse
    R, n = form.c.shape
    return coordinates_rows(form, np.broadcast_to(node.center, (R, n)), np.broadcast_to(W, (R, n, n)), np.full(R, rho))


def coordinates_rows(form: affine.Form, center: np.ndarray, W: np.ndarray, rho: np.ndarray):
    """`coordinates` with a node per row: its `center` `[R, n]` and `inverse_bound` `(W [R, n, n],
    rho [R])`; rows whose rho is not below 1/2 get (-inf, inf)."""
    u = affine.linear(affine.shift(form, -center), np.swapaxes(W, -1, -2), None)
    lo, hi = affine.interval(u)
    rho = np.asarray(rho, np.float64)[:, None]
    ok = rho < 0.5
    safe = np.where(ok, rho, 0.0)
    gain = affine._up(safe / affine._down(1 - safe))
    slack = affine._up(gain * np.maximum(np.abs(lo), np.abs(hi)).max(axis=1, keepdims=True))
    lo, hi = affine._down(lo - slack), affine._up(hi + slack)
    return np.where(ok, lo, -np.inf), np.where(ok, hi, np.inf)


class Outcome(NamedTuple):
    ok: bool
    reason: str  # why not, or ""
    margin: float  # the smallest logit margin met (> 0 when every bit is right)


def words(length: int):
    return list(itertools.product(range(4), repeat=length))


def prefix_steps(history: int, prefix: int = 0) -> int:
    """How many steps are run from the initial state: `prefix`, and at least `max(history, 1)`."""
    return max(history, 1, prefix)


def initial_images(net: Network, history: int, runs: int = 0, prefix: int = 0) -> Images:
    """Every word of `prefix_steps(history, prefix)` pairs from the initial state (a point)."""
    steps = prefix_steps(history, prefix)
    return images(net, affine.point(initial_state(net)), [0], [()], steps, history, runs)


def node_images(net: Network, nodes, depth: int, history: int, runs: int) -> Images:
    """`images` of every word of `depth` pairs from each node's set."""
    carries, histories = [n.carry for n in nodes], [tuple(n.history) for n in nodes]
    return images(net, node_form(nodes), carries, histories, depth, history, runs, [n.run for n in nodes])


def check(net: Network, cert: Certificate) -> Outcome:
    """Proves (ok=True) or fails to prove that `cert` certifies `net` (see the module docstring)."""
    inverses = [inverse_bound(n.basis) for n in cert.nodes]
    parts = [initial_images(net, cert.history, cert.runs, cert.prefix)]
    if cert.nodes:
        parts.append(node_images(net, cert.nodes, cert.depth, cert.history, cert.runs))
    margin = min(float(p.margin.min()) for p in parts)
    if not margin > 0:
        return Outcome(False, "an output bit is not certain on some set", margin)
    for part in parts:
        targets = target_index(cert.nodes, part.carry, part.history, part.run)
        if (targets < 0).any():
            return Outcome(False, "a word reaches a carry and history that has no node", margin)
        for t in np.unique(targets):
            rows = targets == t
            lo, hi = coordinates(affine.Form(*(a[rows] for a in part.form)), cert.nodes[t], inverses[t])
            if not ((lo >= cert.nodes[t].lo).all() and (hi <= cert.nodes[t].hi).all()):
                return Outcome(False, f"an image leaves node {t}", margin)
    return Outcome(True, "", margin)


def target_index(cert_nodes, carries, histories, runs) -> np.ndarray:
    index = {(n.carry, tuple(n.history), n.run): i for i, n in enumerate(cert_nodes)}
    return np.array([index.get((int(c), tuple(h), int(r)), -1) for c, h, r in zip(carries, histories, runs)])


def describe(cert: Certificate | None, outcome: Outcome | None) -> dict:
    """A short JSON description of a certificate (what a reader wants to see, not the sets)."""
    if cert is None:
        return {}
    return {
        "nodes": len(cert.nodes),
        "history": cert.history,
        "depth": cert.depth,
        "runs": cert.runs,
        "prefix": prefix_steps(cert.history, cert.prefix),
        "margin": None if outcome is None else outcome.margin,
    }
