"""Counterexamples: operands a network adds wrongly, found by running it (float64) on adversarial sums.

Families, each at widths 4, 8, ..., `max_bits` (a, b < 2^n, read over n + 1 steps, the last
reading out the carry):

- `all ones + 0`, `all ones + 1`, `all ones + all ones`: (2^n - 1) + 0 holds carry 0 through n
  steps of (1, 0); + 1 holds carry 1 through them; + itself holds carry 1 through (1, 1);
- `held carry 0` / `held carry 1`: random a with b = (2^n - 1) - a (every step reads one 1, the
  carry stays 0), or b = 2^n - a (the carry stays 1 after the first 1);
- `random`: uniform operands.

Candidates are checked against Python integers; the app confirms them by running the trained
model itself (`rnn_jax.apps.verify`), so a float64 artefact never stands as a counterexample.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnn_jax.verification.network import Network, run


class Counterexample(NamedTuple):
    a: int
    b: int
    bits: int  # operand width n: a, b < 2^n, n + 1 output bits
    got: int  # the network's sum (its n + 1 output bits)
    family: str


def operand_pairs(bits: int, rng: np.random.Generator, count: int) -> list:
    """`(family, a, b)` for one width: the structured sums and `count` of each random family."""
    top = (1 << bits) - 1
    out = [("all ones + 0", top, 0), ("all ones + 1", top, 1), ("all ones + all ones", top, top)]
    for _ in range(count):
        a = int.from_bytes(rng.bytes((bits + 7) // 8), "little") & top
        c = int.from_bytes(rng.bytes((bits + 7) // 8), "little") & top
        out += [("held carry 0", a, top - a), ("held carry 1", a, (top + 1 - a) & top), ("random", a, c)]
    return out


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
    out = (logits > 0).astype(np.uint8)
    return [int.from_bytes(np.packbits(column, bitorder="little").tobytes(), "little") for column in out.T]


def search(net: Network, max_bits: int = 4096, count: int = 32, seed: int = 0) -> list:
    """Counterexamples, shortest width first (one per family and width that fails)."""
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
