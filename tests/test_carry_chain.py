"""The carry-chain evaluation of the addition task: its operands against Python's big integers,
and its verdicts on two hand-built adders, one exact at any length and one that loses its carry
after a few steps, evaluated in pieces far shorter than the sums."""

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax as rj
from rnn_jax.tasks.addition import carry_chain
from rnn_jax.tasks.addition.data import bits_int

LENGTHS, RANDOM_BITS = [5, 40], [300]


def test_operands_and_sums_are_what_they_claim():
    groups = carry_chain.groups(LENGTHS, 3, RANDOM_BITS, 2)
    assert [(g.kind, g.length) for g in groups] == [
        ("adversarial", 5),
        ("adversarial", 40),
        ("run", 5),
        ("run", 40),
        ("random", 300),
    ]
    for g in groups:
        a, b, s = bits_int(g.inputs[..., 0]), bits_int(g.inputs[..., 1]), bits_int(g.targets)
        assert [x + y for x, y in zip(a, b)] == s  # Python's big-int sums, bit for bit
        assert g.inputs[-1].max() == 0  # the last step reads out the final carry
        if g.kind == "adversarial":
            ones = 2**g.length - 1
            assert list(zip(a, b)) == [(ones, 1), (ones, 0), (ones, ones)]
        if g.kind == "run":  # ripple carry in Python: a carry is held through exactly the run
            for x, y in zip(a, b):
                carries, c = [], 0
                for k in range(g.targets.shape[0]):
                    c = ((x >> k & 1) + (y >> k & 1) + c) >> 1
                    carries.append(c)
                run = carries[carry_chain.PAD : carry_chain.PAD + g.length + 2]
                assert run == [1] * (g.length + 1) + [0]


def adder(keep: float, K: float = 20.0) -> rj.ModelParams:
    """An Elman adder with 3 sigmoid units h_k = [a + b + carry >= k] (carry = h_2, fed back with
    weight `keep * K`) and the readout h_1 - h_2 + h_3; exact for keep=1, forgetful for 0.6."""
    w_h = jnp.zeros((3, 3)).at[1].set(keep * K)
    cell = rj.ElmanParams(jnp.full((2, 3), K), w_h, K * jnp.array([-0.5, -1.5, -2.5]))
    return rj.ModelParams(cell, rj.DenseParams(K * jnp.array([[1.0], [-1.0], [1.0]]), jnp.array([-0.5 * K])))


def test_an_exact_adder_holds_every_chain_and_a_forgetful_one_none():
    model = rj.sequence_model(rj.elman(3, "sigmoid"), 1, output_activation="sigmoid")
    params = jax.tree.map(lambda *p: jnp.stack(p), adder(1.0), adder(0.6))  # two "seeds"
    groups = carry_chain.groups(LENGTHS, 3, RANDOM_BITS, 2)
    per_group = carry_chain.exact(model, params, groups, piece_steps=16, compile_options={})  # chains cross pieces
    fields = carry_chain.summary(groups, per_group, np.array([True, True]))
    assert fields["longest_exact_carry_chain"] == [40, 0]
    assert fields["accuracy_at_bits"] == {"300": 0.5}  # the exact seed 1.0, the forgetful one 0.0
    assert fields["carry_chain_per_seed"]["adversarial_40"] == [
        1.0,
        2 / 3,
    ]  # + 0 carries nothing, + (2^n - 1) renews it each step
    failed = carry_chain.summary(groups, per_group, np.array([True, False]))  # a non-finite seed counts as wrong
    assert failed["longest_exact_carry_chain"] == [40, 0] and failed["accuracy_at_bits"] == {"300": 0.5}


def test_an_addition_run_of_a_linear_cell_reports_its_carry_chains(tmp_path):
    """The task's summary carries the evaluation's fields, at the configured lengths, for an
    RG-LRU (a new cell through build_cell, the task and its memory estimate)."""
    from rnn_testing import TINY, compose

    from rnn_jax.driver.loop import run

    chains = ["task.carry_chain_lengths=[3,20]", "task.long_random_bits=[50]", "task.chain_piece_steps=16"]
    tiny = [o for o in TINY if not o.startswith(("task.carry_chain_lengths", "task.long_random_bits"))]
    summary = run(compose(*tiny, *chains, "model=rglru"), tmp_path)
    assert summary["status"] == "ok" and summary["config"]["model"]["cell"] == "rglru"
    (longest,) = summary["longest_exact_carry_chain"]
    per_seed = summary["carry_chain_per_seed"]
    assert set(per_seed) == {"adversarial_3", "adversarial_20", "run_3", "run_20", "random_50"}
    held = [n for n in (3, 20) if per_seed[f"adversarial_{n}"] == [1.0] and per_seed[f"run_{n}"] == [1.0]]
    assert longest == (20 if held == [3, 20] else 3 if 3 in held else 0)
    assert summary["accuracy_at_bits"] == {"50": per_seed["random_50"][0]}
