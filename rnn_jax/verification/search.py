"""The search for a certificate: sets from simulated states, grown until they are closed.

1. Run the network (float64) on random input pairs, and as many sums with long runs of held
   carries, and label each visited state with its true carry, its last `history` steps (the carry
   each read and its input pair) and the length of its run of held carries (capped at `runs`).
2. One node per label seen: a box in the principal directions of the node's states (the
   eigenvectors of their scatter), around their mean, spanning them. A box in the directions the
   states spread along follows the network's contraction far better than an axis-aligned one,
   whose wrapping effect adds the absolute Jacobian products up.
3. Push every node through every word of `depth` steps (rigorous affine forms, the correlations
   kept across the word: the set is boxed once per word, not once per step). For `refits`
   rounds each node is re-placed on what lands in it (the principal axes of the incoming images);
   then each target's box grows to cover what lands in it, with a little to spare, until nothing
   grows: a fixed point, which `certificate.check` then proves from scratch. Each (history,
   depth, runs) of the schedule is tried in turn within the time budget.

The first `prefix` steps from the zero state are run as points, not held by the nodes: the states
of the first few steps are a transient that the trained network leaves (the simulated states are
taken after it), and a node stretched to hold them grows in its thin directions until the output
bits are lost.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Optional

import numpy as np

from rnn_jax.verification import affine
from rnn_jax.verification.certificate import (
    Certificate,
    Images,
    Node,
    Outcome,
    check,
    coordinates_rows,
    initial_images,
    inverse_bound,
    node_images,
    target_index,
)
from rnn_jax.verification.network import Network, run

# (history, depth, runs) tried in order; each costs about (nodes x 4^depth) forms per round.
SCHEDULE = ((0, 1, 0), (1, 1, 0), (0, 2, 0), (1, 2, 0), (1, 2, 12), (2, 2, 12), (2, 3, 0), (3, 2, 0), (3, 3, 0))


class Budget(NamedTuple):
    seconds: float = 4.0  # for one network, all (history, depth, runs) tried together
    rounds: int = 60  # growth rounds per (history, depth, runs)
    grow: float = 0.05  # a grown side moves past the image by this fraction of the box's width
    refits: int = 3  # rounds whose images re-place every node (basis and box), before growing
    sequences: int = 64  # random sums simulated to place the sets
    steps: int = 64  # steps of each
    schedule: tuple = SCHEDULE
    prefix: int = 4  # steps run from the initial state (as points) before the nodes must hold the state


class Samples(NamedTuple):
    states: np.ndarray  # [N, n]
    carry: np.ndarray  # [N]
    steps: np.ndarray  # [N, L, 2]: the last L steps as (carry before, input pair), oldest first
    run: np.ndarray  # [N]: how many of the last steps held the carry (a + b = 1), uncapped


def true_carries(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(carry after each step, sum bit of each step)` for `[T, B]` input pairs from carry 0."""
    carry = np.zeros(pairs.shape[1], dtype=np.int64)
    carries, bits = np.empty(pairs.shape, np.int64), np.empty(pairs.shape, np.int64)
    for t, p in enumerate(pairs):
        total = carry + (p & 1) + (p >> 1)
        carry, bits[t] = total // 2, total % 2
        carries[t] = carry
    return carries, bits


def simulate(net: Network, rng: np.random.Generator, sequences: int, steps: int, keep: int = 3) -> Samples:
    """States visited after `keep` steps of `sequences` random sums and as many with long runs of
    held carries, with their carries, last pairs and runs."""
    shape = (steps, sequences)
    uniform = rng.integers(0, 4, size=shape)
    # a + b = 1 with probability 0.9: random sums rarely hold a carry for long, and the sets must
    # cover the slow drift of the state along such runs
    held = np.where(rng.random(shape) < 0.9, rng.integers(1, 3, size=shape), 3 * rng.integers(0, 2, size=shape))
    pairs = np.concatenate([uniform, held], axis=1)
    states, _ = run(net, pairs)
    carries, _ = true_carries(pairs)
    before = np.concatenate([np.zeros_like(carries[:1]), carries[:-1]])  # the carry each step reads
    t = np.arange(keep, steps)
    length, runs = np.zeros(pairs.shape[1], np.int64), np.empty(pairs.shape, np.int64)
    for i, p in enumerate(pairs):
        length = np.where((p == 1) | (p == 2), length + 1, 0)
        runs[i] = length
    past = np.stack([np.stack([before[t - keep + 1 + i], pairs[t - keep + 1 + i]], -1) for i in range(keep)], axis=-2)
    states = states[t].reshape(-1, net.state_size)
    return Samples(states, carries[t].ravel(), past.reshape(-1, keep, 2), runs[t].ravel())


def initial_nodes(samples: Samples, history: int, runs: int = 0) -> list:
    """One node per (carry, last `history` steps, run up to `runs`) seen: a box in the principal
    axes of its states."""
    labels = samples.steps[:, samples.steps.shape[1] - history :].reshape(len(samples.carry), -1)  # [N, 2 history]
    run = np.minimum(samples.run, runs)
    # one row per label, in the order of (carry, history, run) tuples: np.unique sorts rows lexicographically
    keys, which = np.unique(np.column_stack([samples.carry, labels, run]), axis=0, return_inverse=True)
    nodes = []
    for k, key in enumerate(keys):
        carry, hist, r = int(key[0]), tuple(zip(key[1:-1:2].tolist(), key[2:-1:2].tolist())), int(key[-1])
        X = samples.states[which.reshape(-1) == k]
        center = X.mean(axis=0)
        _, vecs = np.linalg.eigh((X - center).T @ (X - center))
        basis = vecs[:, ::-1]  # columns: principal directions (orthonormal), widest first
        u = (X - center) @ basis
        pad = 1e-6 + 1e-3 * (u.max(axis=0) - u.min(axis=0))
        nodes.append(Node(carry, hist, center, basis, u.min(axis=0) - pad, u.max(axis=0) + pad, r))
    return nodes


class Attempt(NamedTuple):
    certificate: Certificate | None
    outcome: Outcome
    history: int
    depth: int
    rounds: int
    runs: int = 0


def close(net: Network, nodes: list, history: int, depth: int, runs: int, budget: Budget, deadline: float) -> Attempt:
    """Grows the nodes' boxes until every image lands inside (see the module docstring)."""
    nodes = list(nodes)
    inverses = [inverse_bound(n.basis) for n in nodes]
    start_images = initial_images(net, history, runs, budget.prefix)
    cached: dict[int, tuple] = {}  # source node -> (margin, {target: (lo, hi)})
    changed = set(range(len(nodes)))

    def failed(reason: str, margin: float, rnd: int) -> Attempt:
        return Attempt(None, Outcome(False, reason, margin), history, depth, rnd, runs)

    uncertain, unseen = "an output bit is not certain on some set", "a word reaches a carry and history never simulated"
    for rnd in range(budget.rounds):
        if time.perf_counter() > deadline:
            return failed("time budget spent", np.nan, rnd)
        if rnd < budget.refits:
            part = node_images(net, nodes, depth, history, runs)
            if not part.margin.min() > 0:
                return failed(uncertain, float(part.margin.min()), rnd)
            nodes, inverses = _refit(nodes, part, start_images, budget.grow)
            if inverses is None:
                return failed(unseen, np.nan, rnd)
            changed = set(range(len(nodes)))
            continue
        if changed:
            src = sorted(changed)
            sets = [nodes[i] for i in src]
            part = node_images(net, sets, depth, history, runs)
            for i, landing in zip(src, _land(part, len(src), nodes, inverses)):
                cached[i] = landing
        first = _land(start_images, 1, nodes, inverses)[0]
        landings = [first] + [cached[i] for i in range(len(nodes))]
        margin = min(m for m, _ in landings)
        if any(None in targets for _, targets in landings):
            return failed(unseen, margin, rnd)
        if not margin > 0:
            return failed(uncertain, margin, rnd)
        changed = set()
        for _, targets in landings:
            for t, (lo, hi) in targets.items():
                node = nodes[t]
                if (lo < node.lo).any() or (hi > node.hi).any():
                    new_lo, new_hi = np.minimum(node.lo, lo), np.maximum(node.hi, hi)
                    spare = budget.grow * (new_hi - new_lo) + 1e-12
                    new_lo = np.where(lo < node.lo, new_lo - spare, node.lo)
                    new_hi = np.where(hi > node.hi, new_hi + spare, node.hi)
                    nodes[t] = node._replace(lo=new_lo, hi=new_hi)
                    changed.add(t)
        if not changed:
            cert = Certificate(tuple(nodes), history, depth, runs, budget.prefix)
            return Attempt(cert, check(net, cert), history, depth, rnd + 1, runs)
        if max(float(np.max(n.hi - n.lo)) for n in nodes) > 1e6:
            return failed("the sets grow without bound", margin, rnd + 1)
    return failed(f"not closed after {budget.rounds} rounds", np.nan, budget.rounds)


def _refit(nodes, part, start, grow):
    """Each node re-placed on what lands in it: center and principal axes of the incoming image
    forms (their generators' spread and their centers'), box spanning them. Returns the new nodes
    and their `inverse_bound`s (None when an image reaches a label with no node)."""
    forms = [part.form, start.form]
    targets = [target_index(nodes, p.carry, p.history, p.run) for p in (part, start)]
    if any((t < 0).any() for t in targets):
        return nodes, None
    new = list(nodes)
    for i, node in enumerate(nodes):
        sel = [(f, t == i) for f, t in zip(forms, targets) if (t == i).any()]
        if not sel:
            continue
        c = np.concatenate([f.c[r] for f, r in sel])
        center = c.mean(axis=0)
        spread = (c - center).T @ (c - center)
        for f, r in sel:  # each image's own extent: its generators and its independent errors
            spread = spread + np.einsum("rim,rjm->ij", f.G[r], f.G[r]) + np.diag((f.e[r] ** 2).sum(axis=0))
        _, vecs = np.linalg.eigh(spread / len(c))
        new[i] = node._replace(center=center, basis=vecs[:, ::-1])
    inverses = [inverse_bound(n.basis) for n in new]
    boxes = _hulls([(f, t, np.zeros_like(t)) for f, t in zip(forms, targets)], new, inverses)
    for (_, t), (lo, hi) in boxes.items():
        spare = grow * (hi - lo) + 1e-12
        new[t] = new[t]._replace(lo=lo - spare, hi=hi + spare)
    return new, inverses


def _hulls(parts, nodes, inverses) -> dict:
    """`{(source, target): (lo, hi)}`: the hull, in the target node's coordinates, of the rows of
    each `(form, target per row, source per row)` in `parts` (rows with target -1 left out); one
    rigorous change of coordinates for all rows, each in its own target's basis (`inverses`: the
    nodes' `inverse_bound`s)."""
    Ws, rhos = np.stack([w for w, _ in inverses]), np.array([r for _, r in inverses])
    centers = np.stack([n.center for n in nodes])
    out = {}
    for form, targets, starts in parts:
        rows = np.flatnonzero(targets >= 0)
        if not rows.size:
            continue
        t = targets[rows]
        lo, hi = coordinates_rows(affine.Form(*(a[rows] for a in form)), centers[t], Ws[t], rhos[t])
        key = starts[rows] * len(nodes) + t
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        los, his = np.minimum.reduceat(lo[order], first, axis=0), np.maximum.reduceat(hi[order], first, axis=0)
        for k, l, h in zip(key[first].tolist(), los, his):
            pair = (k // len(nodes), k % len(nodes))
            if pair in out:
                l, h = np.minimum(out[pair][0], l), np.maximum(out[pair][1], h)
            out[pair] = (l, h)
    return out


def _land(part: Images, sources: int, nodes, inverses) -> list:
    """Per start set of `part`: `(smallest margin, {target node: (lo, hi)})`, its images in their
    targets' coordinates; the key None marks images whose (carry, history) has no node."""
    targets = target_index(nodes, part.carry, part.history, part.run)
    margins = np.full(sources, np.inf)
    np.minimum.at(margins, part.start, part.margin)
    out = [(float(m), {}) for m in margins]
    for s in np.unique(part.start[targets < 0]):
        out[s][1][None] = None
    for (s, t), bounds in _hulls([(part.form, targets, part.start)], nodes, inverses).items():
        out[s][1][t] = bounds
    return out


def find_certificate(net: Network, budget: Optional[Budget] = None, seed: int = 0) -> Attempt:
    """The first (history, depth, runs) of the schedule whose sets close and pass `check`, or the last
    failed attempt (`budget` None: `Budget()`)."""
    budget = Budget() if budget is None else budget
    deadline = time.perf_counter() + budget.seconds
    longest = max(h for h, _, _ in budget.schedule)
    keep = max(longest, 1, budget.prefix)  # the nodes hold the states after the prefix only
    samples = simulate(net, np.random.default_rng(seed), budget.sequences, budget.steps, keep)
    attempt = Attempt(None, Outcome(False, "no (history, depth, runs) tried", np.nan), 0, 0, 0)
    for history, depth, runs in budget.schedule:
        if time.perf_counter() > deadline:
            break
        attempt = close(net, initial_nodes(samples, history, runs), history, depth, runs, budget, deadline)
        if attempt.certificate is not None and attempt.outcome.ok:
            return attempt
    return attempt
