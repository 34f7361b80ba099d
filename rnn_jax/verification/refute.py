"""Counterexamples: operands a network adds wrongly, found by running it (float64) on adversarial sums.

Families, each at widths 4, 8, ..., `max_bits` (a, b < 2^n, read over n + 1 steps, the last
reading out the carry):

- `all ones + 0`, `all ones + 1`, `all ones + all ones`: (2^n - 1) + 0 holds carry 0 through n
  steps of (1, 0); + 1 holds carry 1 through them; + itself holds carry 1 through (1, 1);
  `0 + all ones`, `1 + all ones`: the same with the operands swapped, through (0, 1) (a network
  need not treat a and b alike);
- `held carry 0` / `held carry 1`: random a with b = (2^n - 1) - a (every step reads one 1, the
  carry stays 0), or b = 2^n - a (the carry stays 1 after the first 1);
- `random`: uniform operands;

and `smallest margins` (`beam`, which `verify` runs when no certificate is found): a beam search
over the input pairs themselves, which keeps the reachable states whose output bit was least
certain and extends them. It finds the short, rare words that break a network (an LSTM may add
every random 4096-bit sum and fail on a particular 30-pair word) which random operands almost
never contain.

Candidates are checked against Python integers; the app confirms them by running the trained
model itself (`rnn_jax.apps.verify`), so a float64 artefact never stands as a counterexample.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnn_jax.verification.network import NUMPY, PAIRS, Network, initial_state, run, step


class Counterexample(NamedTuple):
    a: int
    b: int
    bits: int  # operand width n: a, b < 2^n, n + 1 output bits
    got: int  # the network's sum (its n + 1 output bits)
    family: str


def operand_pairs(bits: int, rng: np.random.Generator, count: int) -> list:
    """`(family, a, b)` for one width: the structured sums and `count` of each random family."""
    top = (1 << bits) - 1
    out = [("all ones + 0", top, 0), ("0 + all ones", 0, top), ("all ones + 1", top, 1), ("1 + all ones", 1, top)]
    out.append(("all ones + all ones", top, top))
    for _ in range(count):
        a = int.from_bytes(rng.bytes((bits + 7) // 8), "little") & top
        c = int.from_bytes(rng.bytes((bits + 7) // 8), "little") & top
        out += [("held carry 0", a, top - a), ("held carry 1", a, (top + 1 - a) & top), ("random", a, c)]
    return out


def _int_of(bits) -> int:
    """The integer whose bits, least significant first, are `bits` (0 or 1 each): `_bit_array`'s inverse."""
    return int.from_bytes(np.packbits(np.asarray(bits, np.uint8), bitorder="little").tobytes(), "little")


def _bit_array(value: int, steps: int) -> np.ndarray:
    """The low `steps` bits of `value`, least significant first."""
    raw = np.frombuffer((value & ((1 << steps) - 1)).to_bytes((steps + 7) // 8, "little"), np.uint8)
    return np.unpackbits(raw, bitorder="little")[:steps].astype(np.int64)


def pairs_of(a: int, b: int, bits: int) -> np.ndarray:
    """The input pairs (a + 2 b per step, LSB first) of `a + b` over `bits + 1` steps."""
    return _bit_array(a, bits + 1) + 2 * _bit_array(b, bits + 1)


def network_sum(net: Network, a: list, b: list, bits: int) -> list:
    """What the network outputs for each `a[i] + b[i]` (operands < 2^bits), as integers."""
    pairs = np.stack([pairs_of(x, y, bits) for x, y in zip(a, b)], axis=1)  # [bits + 1, B]
    _, logits = run(net, pairs, keep_states=False)
    return [_int_of(column) for column in (logits > 0).T]


def operands_of(pairs) -> tuple[int, int]:
    """`(a, b)` whose bits, least significant first, are the input pairs `pairs` (0..3, a + 2 b)."""
    pairs = np.asarray(pairs)
    return _int_of(pairs & 1), _int_of(pairs >> 1)


def beam(net: Network, width: int = 1024, steps: int = 512, explore: float = 0.25, seed: int = 0) -> list:
    """A counterexample found by a beam search over input pairs, or [] when none is found within
    `steps` pairs.

    Each step extends every kept state by the 4 input pairs, and keeps the `width` extensions
    whose output bit had the smallest signed logit margin (the distance to a wrong bit), a share
    `explore` of them drawn at random from the rest so that the beam does not settle on one
    trajectory; states that coincide (the network forgets, so many words reach one state) count
    once, with their smallest margin. The first extension with a wrong bit at step t that a run of
    the whole word confirms gives operands of t + 1 bits whose (t + 1)-th sum bit the network gets
    wrong."""
    if width < 1 or not 0 <= explore <= 1:
        raise ValueError(f"beam: width={width} must be >= 1 and explore={explore} within [0, 1]")
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(net.state_size)  # states that coincide have one projection
    state, carry = initial_state(net), np.zeros(1, np.int64)
    parents, chosen = [], []  # per step: the kept extensions' parent and input pair

    def word_of(k: int, t: int) -> list:  # the pairs read up to extension k of step t, oldest first
        word, k = [int(pair[k])], int(parent[k])
        for s in range(t - 1, -1, -1):
            word.append(int(chosen[s][k]))
            k = int(parents[s][k])
        return word[::-1]

    for t in range(steps):
        pair, parent = np.tile(np.arange(4), len(carry)), np.repeat(np.arange(len(carry)), 4)
        new, logit = step(NUMPY, net, state[parent], PAIRS[pair])
        total = carry[parent] + (pair & 1) + (pair >> 1)
        margin = np.where(total & 1, logit[:, 0], -logit[:, 0])
        wrong = np.flatnonzero(np.where(total & 1, logit[:, 0] <= 0, logit[:, 0] > 0))  # as `network_sum` reads it
        for k in wrong[np.argsort(margin[wrong], kind="stable")][:4]:
            a, b = operands_of(word_of(int(k), t))
            got = network_sum(net, [a], [b], t + 1)[0]  # the whole word run again, one sum
            if got != a + b:
                return [Counterexample(a, b, t + 1, got, "smallest margins")]
        order = np.argsort(margin, kind="stable")
        key = np.clip(np.round(new[order] @ direction * 1e7), -(2.0**60), 2.0**60).astype(np.int64)
        _, first = np.unique(2 * key + (total[order] >> 1), return_index=True)
        keep = order[np.sort(first)]  # distinct (state, carry), smallest margin first
        if len(keep) > width:
            drawn = int(width * explore)
            keep = np.concatenate([keep[: width - drawn], rng.choice(keep[width - drawn :], drawn, replace=False)])
        state, carry = new[keep], total[keep] >> 1
        parents.append(parent[keep])
        chosen.append(pair[keep])
    return []


def search(net: Network, max_bits: int = 4096, count: int = 32, seed: int = 0) -> list:
    """Counterexamples of the families, shortest width first (one per family and width that fails)."""
    rng = np.random.default_rng(seed)
    found = []
    bits = 4
    while bits <= max_bits:
        triples = operand_pairs(bits, rng, count)
        got = network_sum(net, [a for _, a, _ in triples], [b for _, _, b in triples], bits)
        seen = set()
        for (family, a, b), s in zip(triples, got):
            if s != a + b and family not in seen:
                seen.add(family)
                found.append(Counterexample(a, b, bits, s, family))
        if found:
            return found
        bits *= 2
    return found
