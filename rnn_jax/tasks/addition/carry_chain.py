"""Carry-chain evaluation of a trained adder: how long a carry it holds, on sums far longer than
it was trained on.

Three families of operand pairs, each sum read out over `n + 1` steps (the last step's inputs are
0 and 0, as the top step of every `full_range=False` training sum, and its target is the final
carry):

  * adversarial, for each n: `(2^n - 1) + 1`, `(2^n - 1) + 0` and `(2^n - 1) + (2^n - 1)`: the
    carry (or its absence) must be held across all n steps;
  * carry runs, for each L: random operands in which a carry is generated (1 + 1) and then
    propagated through L positions (one operand bit 1, the other 0, at random) before it is
    killed (0 + 0), with random bits before and after;
  * random operands of several widths.

Targets come from Python's big integers. Sequences are run in pieces of `piece_steps` time steps
(the carry passed from piece to piece), so memory stays bounded at any length, and every piece
has one shape, so one program is compiled for the whole evaluation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CHAIN_SEED = 2024  # fixed, so every run is evaluated on the same operands
PAD = 8  # random bits before and after a carry run


class Group(NamedTuple):
    """Operand pairs of one family and length, as bits: `[T, R, 2]` inputs, `[T, R]` targets."""

    kind: str  # "adversarial", "run" or "random"
    length: int  # n, L or the number of bits
    inputs: np.ndarray  # [T, R, 2] uint8, least significant bit first
    targets: np.ndarray  # [T, R] uint8, the bits of the sum


def to_bits(value: int, steps: int) -> np.ndarray:
    """`[steps]` uint8, least significant first (Python int -> bits, exact at any width)."""
    raw = np.frombuffer(value.to_bytes(-(-steps // 8) + 1, "little"), np.uint8)
    return np.unpackbits(raw, bitorder="little")[:steps]


def to_int(bits: np.ndarray) -> int:
    """The Python int of `[steps]` 0/1 bits, least significant first."""
    return int.from_bytes(np.packbits(np.asarray(bits, np.uint8), bitorder="little").tobytes(), "little")


def group(kind: str, length: int, pairs: list[tuple[int, int]], width: int) -> Group:
    """`pairs` of `width`-bit operands, read out over `width + 1` steps."""
    steps = width + 1
    a = np.stack([to_bits(x, steps) for x, _ in pairs], axis=1)
    b = np.stack([to_bits(y, steps) for _, y in pairs], axis=1)
    s = np.stack([to_bits(x + y, steps) for x, y in pairs], axis=1)
    return Group(kind, length, np.stack([a, b], axis=-1), s)


def adversarial(n: int) -> Group:
    ones = (1 << n) - 1
    return group("adversarial", n, [(ones, 1), (ones, 0), (ones, ones)], n)


def carry_runs(length: int, samples: int, rng: np.random.Generator) -> Group:
    """`samples` pairs with a carry generated at bit PAD and propagated through bits PAD+1 ...
    PAD+length, killed at PAD+length+1; the other bits random."""
    width = 2 * PAD + length + 2
    pairs = []
    for _ in range(samples):
        a, b = rng.integers(0, 2, width), rng.integers(0, 2, width)
        a[PAD] = b[PAD] = 1  # generate
        which = rng.integers(0, 2, length).astype(bool)  # propagate: exactly one operand has a 1
        a[PAD + 1 : PAD + 1 + length], b[PAD + 1 : PAD + 1 + length] = which, ~which
        a[PAD + 1 + length] = b[PAD + 1 + length] = 0  # kill
        pairs.append((to_int(a), to_int(b)))
    return group("run", length, pairs, width)


def random_operands(bits: int, samples: int, rng: np.random.Generator) -> Group:
    pairs = [(to_int(rng.integers(0, 2, bits)), to_int(rng.integers(0, 2, bits))) for _ in range(samples)]
    return group("random", bits, pairs, bits)


def groups(lengths, samples: int, random_bits, random_samples: int) -> list[Group]:
    """Every family at every configured length, from the fixed `CHAIN_SEED`."""
    rng = np.random.default_rng(CHAIN_SEED)
    out = [adversarial(n) for n in sorted(set(lengths))]
    out += [carry_runs(n, samples, rng) for n in sorted(set(lengths))]
    return out + [random_operands(n, random_samples, rng) for n in sorted(set(random_bits))]


def piece_program(model, dtype, compile_options: dict, shapes):
    """The compiled piece: `(params [S, ...], carry, wrong [S, R], inputs [C, R, 2], targets
    [C, R], valid [C, R]) -> (carry, wrong)`, every seed at once; `wrong` gathers a wrong bit."""

    def one(params, carry, wrong, inputs, targets, valid):
        carry, logits = model.logits(params, inputs.astype(dtype), carry)  # [C, R, 1]
        bad = ((logits[..., 0] > 0) != (targets > 0)) & valid
        return carry, wrong | jnp.any(bad, axis=0)

    program = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None, None)), donate_argnums=(1, 2))
    return program.lower(*shapes).compile(compiler_options=compile_options)


def exact(model, params, all_groups: list[Group], piece_steps: int, compile_options: dict) -> list[np.ndarray]:
    """Per group, `[S, R]` booleans: the pair's every sum bit right, for each seed of `params`
    (leaves `[S, ...]`). Groups are run one after another, each in pieces of at most
    `piece_steps` steps, padded in time and rows to one shape."""
    dtype = jax.tree.leaves(params.cell)[0].dtype
    S = jax.tree.leaves(params)[0].shape[0]
    R = max(g.inputs.shape[1] for g in all_groups)
    C = min(piece_steps, max(g.inputs.shape[0] for g in all_groups))
    initial = model.cell.initial_carry((R,), dtype)

    def start():  # the initial carry and no wrong bit, for every seed
        return jax.tree.map(lambda c: jnp.broadcast_to(c, (S, *c.shape)), initial), jnp.zeros((S, R), bool)

    carry, wrong = start()
    shapes = (params, carry, wrong, np.zeros((C, R, 2), np.uint8), np.zeros((C, R), np.uint8), np.zeros((C, R), bool))
    program = piece_program(model, dtype, compile_options, jax.tree.map(_spec, shapes))
    results = []
    for g in all_groups:
        T, rows = g.targets.shape
        steps = -(-T // C) * C
        inputs = np.zeros((steps, R, 2), np.uint8)
        targets, valid = np.zeros((steps, R), np.uint8), np.zeros((steps, R), bool)
        inputs[:T, :rows], targets[:T, :rows], valid[:T, :rows] = g.inputs, g.targets, True
        carry, wrong = start()
        for t in range(0, steps, C):
            carry, wrong = program(params, carry, wrong, inputs[t : t + C], targets[t : t + C], valid[t : t + C])
        results.append(~np.asarray(wrong)[:, :rows])
    return results


def _spec(x: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype)


def longest_chain(all_groups: list[Group], per_group: list[np.ndarray]) -> np.ndarray:
    """`[S]`: per seed, the largest n such that the adversarial sums and carry runs of every
    configured length up to n are all exact (0 when the shortest fails)."""
    chains = [(g.length, ok.all(axis=1)) for g, ok in zip(all_groups, per_group) if g.kind != "random"]
    S = per_group[0].shape[0]
    longest, holding = np.zeros(S, np.int64), np.ones(S, bool)
    for n in sorted({n for n, _ in chains}):
        for m, ok in chains:
            if m == n:
                holding &= ok
        longest = np.where(holding, n, longest)
    return longest


def summary(all_groups: list[Group], per_group: list[np.ndarray], finite: np.ndarray) -> dict:
    """The summary fields: `longest_exact_carry_chain` (per seed), `accuracy_at_bits` (mean over
    seeds of the exact fraction of random sums, per width), and every group's per-seed figures."""
    per_group = [ok & finite[:, None] for ok in per_group]
    random = {str(g.length): ok.mean(axis=1) for g, ok in zip(all_groups, per_group) if g.kind == "random"}
    fields: dict = {"longest_exact_carry_chain": [int(n) for n in longest_chain(all_groups, per_group)]}
    fields["accuracy_at_bits"] = {n: float(a.mean()) for n, a in random.items()}
    fields["carry_chain_per_seed"] = {
        f"{g.kind}_{g.length}": [float(x) for x in ok.mean(axis=1)] for g, ok in zip(all_groups, per_group)
    }
    return fields
