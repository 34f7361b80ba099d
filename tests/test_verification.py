"""The adder verifier: its interval step against the cells themselves, its proofs on a hand-built
adder, its counterexamples on a network trained on 4-bit sums (checked against Python integers),
and the app and the report end to end."""

import itertools
import json

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from rnn_testing import x64

from rnn_jax.build import build_model, model_config
from rnn_jax.cells import ElmanParams, elman
from rnn_jax.model import DenseParams, ModelParams, sequence_model
from rnn_jax.tasks.addition import data as addition
from rnn_jax.verification import Budget, affine, certificate, from_params, refute, verify
from rnn_jax.verification.network import NUMPY, PAIRS, Layer, Network, sigmoid, step

CASES = [
    ("elman", 1, {}),
    ("elman", 1, {"activation": "sigmoid"}),
    ("elman", 1, {"activation": "relu"}),
    ("lstm", 1, {}),
    ("lstm", 1, {"output_tanh": False}),
    ("gru", 1, {}),
    ("gru", 2, {}),
]
H = 4


def nested(p) -> dict:
    """Model params as the nested dicts a checkpoint holds."""
    cell = p.cell._asdict() if hasattr(p.cell, "_asdict") else [c._asdict() for c in p.cell]
    return jax.tree.map(np.asarray, {"cell": cell, "readout": p.readout._asdict()})


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}{c[1]}{''.join(f'-{v}' for v in c[2].values())}")
def case(request):
    """A float64 model with random weights (scaled up so that units saturate) and its verifier twin."""
    cell, layers, extra = request.param
    with x64():
        model = build_model(model_config(cell, hidden=H, layers=layers, **extra), 1, dtype=jnp.float64)
        params = jax.tree.map(lambda a: 2.0 * np.asarray(a), model.init(jax.random.PRNGKey(3), 2))  # float64 NumPy
    net = from_params(nested(params), {"cell": cell, **extra})

    def apply(carry, x):  # the cell's own step, in float64
        with x64():
            return jax.tree.map(
                np.asarray, model.cell.apply(jax.tree.map(jnp.asarray, params.cell), carry, jnp.asarray(x))
            )

    return model, params, net, apply


def flat(carry) -> np.ndarray:
    """A cell's carry (a stack's tuple, an LSTM's (h, c)) as the verifier's flat state."""
    return np.concatenate([np.asarray(a) for a in jax.tree.leaves(carry)], axis=-1)


def unflat(model, state):
    leaves, tree = jax.tree.flatten(model.cell.initial_carry(state.shape[:1], jnp.float64))
    sizes = np.cumsum([a.shape[-1] for a in leaves])[:-1]
    return jax.tree.unflatten(tree, [jnp.asarray(a) for a in np.split(state, sizes, axis=-1)])


def test_interval_step_on_a_point_is_the_cells_apply(case):
    model, params, net, apply = case
    rng = np.random.default_rng(0)
    state = rng.uniform(-1, 1, (4, net.state_size))
    with x64():
        carry, h = apply(unflat(model, state), PAIRS)
    logit = h @ params.readout.w[:, 0] + params.readout.b[0]
    form, out = step(affine.AFFINE, net, affine.point(state), affine.point(PAIRS))
    np.testing.assert_allclose(form.c, flat(carry), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.c[:, 0], logit, rtol=0, atol=1e-12)
    assert affine.radius(form).max() < 1e-11  # only the rounding bounds


def test_interval_step_encloses_ten_thousand_points_of_a_random_set(case):
    """The points go through the verifier's float64 NumPy step, which the test above holds to the
    cell's `apply`; every one must land inside the interval step's result."""
    _, _, net, _ = case
    rng = np.random.default_rng(1)
    n, m = net.state_size, net.state_size + 2
    c, G, e = rng.uniform(-0.6, 0.6, (1, n)), rng.normal(0, 0.15, (1, n, m)), rng.uniform(0, 0.05, (1, n))
    eps, delta = rng.uniform(-1, 1, (10_000, m)), rng.uniform(-1, 1, (10_000, n))
    points = c + eps @ G[0].T + delta * e  # [N, n] inside the form
    for pair in range(4):
        form, out = step(affine.AFFINE, net, affine.Form(c, G, e), affine.point(PAIRS[pair : pair + 1]))
        lo, hi = affine.interval(form)
        state, logit = step(NUMPY, net, points, np.broadcast_to(PAIRS[pair], (len(points), 2)))
        assert np.all((lo <= state) & (state <= hi))
        l_lo, l_hi = affine.interval(out)
        assert np.all((l_lo[0, 0] <= logit) & (logit <= l_hi[0, 0]))


def test_coordinates_with_a_node_per_row_are_the_exact_hull_of_each_set():
    # Zonotopes (4 generators and an independent error per entry, in 3-D) each in its own node's
    # basis: a linear map's extremes over a zonotope lie at its corners, so the rigorous bounds
    # must hold every corner and be within rounding of the outermost.
    rng = np.random.default_rng(0)
    R, n, m = 6, 3, 4
    form = affine.Form(rng.standard_normal((R, n)), rng.standard_normal((R, n, m)), 0.1 * rng.random((R, n)))
    nodes = [
        certificate.Node(0, (), rng.standard_normal(n), rng.standard_normal((n, n)), -np.ones(n), np.ones(n))
        for _ in range(3)
    ]
    which = np.array([0, 1, 2, 2, 1, 0])
    inverses = [certificate.inverse_bound(nodes[k].basis) for k in which]
    lo, hi = certificate.coordinates_rows(
        form,
        np.stack([nodes[k].center for k in which]),
        np.stack([w for w, _ in inverses]),
        np.array([r for _, r in inverses]),
    )
    corners = np.array(list(itertools.product([-1.0, 1.0], repeat=m + n)))  # (eps, delta)
    for r, k in enumerate(which):
        z = form.c[r] + corners[:, :m] @ form.G[r].T + corners[:, m:] * form.e[r]
        u = np.linalg.solve(nodes[k].basis, (z - nodes[k].center).T).T
        assert (lo[r] <= u.min(axis=0)).all() and (u.max(axis=0) <= hi[r]).all()
        np.testing.assert_allclose([lo[r], hi[r]], [u.min(axis=0), u.max(axis=0)], atol=1e-9 * (1 + np.abs(u).max()))


def test_transcendental_margin_covers_libm_against_mpmath():
    """`affine.FUNC_MARGIN` holds for NumPy's tanh and the verifier's sigmoid: 10^4 points, many
    saturated, against 50-digit mpmath."""
    t = np.random.default_rng(2).normal(0, 8, 10_000)
    mpmath.mp.dps = 50
    exact_tanh = np.array([float(mpmath.tanh(mpmath.mpf(x))) for x in t])
    exact_sig = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(x)))) for x in t])
    for got, exact in ((np.tanh(t), exact_tanh), (sigmoid(t), exact_sig)):
        assert np.all(np.abs(got - exact) <= affine.FUNC_MARGIN * np.abs(got) + affine.TINY)
    deep = -np.geomspace(30.0, 760.0, 2000)  # the sigmoid's tail down to subnormal results and underflow
    exact_deep = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(x)))) for x in deep])
    assert np.all(np.abs(sigmoid(deep) - exact_deep) <= affine.FUNC_MARGIN * np.abs(exact_deep) + affine.TINY)


def hinton_adder(k: float = 20.0) -> Network:
    """3 sigmoid units with large hand-set weights: unit i fires when a + b + carry >= i + 1 (the
    carry is unit 2, fed back); the sum bit is u1 - u2 + u3."""
    w_h = np.zeros((3, 3))
    w_h[1] = k  # the carry feeds every unit
    layer = Layer("elman", k * np.ones((2, 3)), w_h, -k * np.array([0.5, 1.5, 2.5]), activation="sigmoid")
    return Network((layer,), 10.0 * np.array([1.0, -1.0, 1.0]), -5.0)


def as_model(net: Network):
    """The rnn_jax model (float32, as trained) with `net`'s weights."""
    layer = net.layers[0]
    model = sequence_model(elman(layer.hidden, "sigmoid"), 1)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    params = ModelParams(
        ElmanParams(f32(layer.w_x), f32(layer.w_h), f32(layer.b)),
        DenseParams(f32(net.w_out[:, None]), f32([net.b_out])),
    )
    return model, params


def adds_exactly(model, params, bits: int, count: int, seed: int = 0) -> bool:
    """`count` random sums of `bits`-bit operands through the model, against Python integers."""
    rng = np.random.default_rng(seed)
    a = [int.from_bytes(rng.bytes(bits // 8), "little") for _ in range(count)]
    b = [int.from_bytes(rng.bytes(bits // 8), "little") for _ in range(count)]
    batch = addition.encode(a, b, bits, full_range=True)
    _, logits = jax.jit(model.logits)(params, jnp.asarray(batch.inputs))
    got = addition.bits_int(np.asarray(logits[..., 0] > 0))
    return got == [x + y for x, y in zip(a, b)]


def test_hand_built_adder_is_proved_and_adds_long_sums():
    net = hinton_adder()
    verdict = verify(net, Budget(seconds=30))
    assert verdict.status == "proved", verdict.reason
    assert certificate.check(net, verdict.certificate).ok
    # The check can fail: a node's box shrunk to a point no longer holds what lands in it.
    node = verdict.certificate.nodes[0]
    shrunk = node._replace(lo=(node.lo + node.hi) / 2, hi=(node.lo + node.hi) / 2)
    assert not certificate.check(net, verdict.certificate._replace(nodes=(shrunk,) + verdict.certificate.nodes[1:])).ok
    # 10^4 random 64-bit sums (65 steps; 64 bits keeps this under a second) through rnn_jax's own cell.
    assert adds_exactly(*as_model(net), bits=64, count=10_000)


def test_run_labels_follow_a_python_loop_and_a_certificate_with_them_is_checked():
    # The run of held carries (a + b = 1) after each step, capped at 3, as a plain loop.
    pairs = np.random.default_rng(0).integers(0, 4, size=(6, 50))
    run, want = np.zeros(50, np.int64), []
    for p in pairs:
        run = np.array([min(r + 1, 3) if q in (1, 2) else 0 for r, q in zip(run, p)])
        want.append(run)
    got, run = [], np.zeros(50, np.int64)
    for p in pairs:
        run = certificate.next_run(run, p, 3)
        got.append(run)
    np.testing.assert_array_equal(got, want)
    # A certificate whose nodes carry run labels proves the hand-built adder; relabelling one
    # node's run leaves a run that words reach with no node, and the check refuses it.
    net = hinton_adder()
    verdict = verify(net, Budget(seconds=30, schedule=((1, 2, 3),)))
    assert verdict.status == "proved", verdict.reason
    cert = verdict.certificate
    assert cert.runs == 3 and {n.run for n in cert.nodes} == {0, 1, 2, 3}
    assert certificate.check(net, cert).ok
    moved = cert.nodes[0]._replace(run=7)
    assert not certificate.check(net, cert._replace(nodes=(moved,) + cert.nodes[1:])).ok  # same net as above: adds


def test_an_adder_with_a_wrong_last_carry_is_refuted_not_proved():
    net = hinton_adder()
    broken = net._replace(
        layers=(net.layers[0]._replace(b=net.layers[0].b + np.array([0.0, 0.0, -15.0])),)
    )  # 1 + 1 + 1 now reads as 2
    verdict = verify(broken, Budget(seconds=5))
    assert verdict.status == "refuted"
    ce = verdict.counterexamples[0]
    assert ce.got != ce.a + ce.b
    model, params = as_model(broken)
    batch = addition.encode([ce.a], [ce.b], ce.bits, full_range=True)
    _, logits = model.logits(params, jnp.asarray(batch.inputs))
    assert addition.bits_int(np.asarray(logits[..., 0] > 0)) == [ce.got]


def alternation_trap(length: int, last: float = 8.0, k: float = 20.0) -> Network:
    """`hinton_adder` and a chain of `length` sigmoid units: unit j fires after the pairs (1, 0),
    (0, 1), (1, 0), ... up to the j-th, and lowers the logit by j / 100 (all of them together by
    less than 1.5), the last by `last`. With `last` = 8 its only wrong bits end `length`
    alternating pairs read with carry 0 (sum bits 1, logit about 5 - 8); with `last` below 3.5
    every bit is right. One more unit, read by nothing, keeps a graded trace of every pair read, so
    that the states of different words differ and a beam must choose among them."""
    adder = hinton_adder(k).layers[0]
    n = 3 + length + 1
    w_x, w_h, b = np.zeros((2, n)), np.zeros((n, n)), np.full(n, -1.5 * k)
    w_x[:, -1], w_h[-1, -1], b[-1] = [0.7, -0.4], 0.5, 0.1
    w_x[:, :3], w_h[:3, :3], b[:3] = adder.w_x, adder.w_h, adder.b
    for j in range(length):
        sign = 1.0 if j % 2 == 0 else -1.0  # (1, 0) at even positions of the word, (0, 1) at odd
        w_x[:, 3 + j] = k * sign * np.array([1.0, -1.0])
        if j == 0:
            b[3] = -0.5 * k
        else:
            w_h[3 + j - 1, 3 + j] = k
    w_out = np.r_[10.0, -10.0, 10.0, -np.arange(1, length) / 100, -last, 0.0]
    return Network((Layer("elman", w_x, w_h, b, activation="sigmoid"),), w_out, -5.0)


def test_beam_search_finds_the_rare_word_that_random_and_structured_sums_miss():
    rng = np.random.default_rng(0)
    for bits in (1, 7, 62):  # operands to input pairs and back
        a, b = (int(v) for v in rng.integers(0, 2**bits, 2))
        assert refute.operands_of(refute.pairs_of(a, b, bits)) == (a, b)
    net = alternation_trap(24)  # the word is 2^-23 of held-carry sums' 24-step stretches, 4^-24 of random ones'
    assert refute.search(net, max_bits=256) == []
    found = refute.beam(net)
    assert [ce.family for ce in found] == ["smallest margins"]
    ce = found[0]
    assert ce.got != ce.a + ce.b
    word = refute.pairs_of(ce.a, ce.b, ce.bits)[ce.bits - 24 : ce.bits]  # the last 24 pairs read
    assert word.tolist() == [1, 2] * 12
    model, params = as_model(net)  # rnn_jax's own cell, float32, gets the same operands wrong
    _, logits = model.logits(params, jnp.asarray(addition.encode([ce.a], [ce.b], ce.bits, full_range=True).inputs))
    assert addition.bits_int(np.asarray(logits[..., 0] > 0)) == [ce.got]
    assert refute.beam(alternation_trap(24, last=3.0), steps=64) == []  # no wrong bit reported where none is
    verdict = verify(net, Budget(seconds=0.2), max_bits=16)  # no certificate: the beam runs
    assert verdict.status == "refuted" and verdict.counterexamples == found
    # a logit of exactly 0 reads as bit 0 (`logit > 0`): a network that always outputs 0 is wrong
    # first on 1 + 0, not on a sum whose bit is 0
    zero = net._replace(w_out=np.zeros_like(net.w_out), b_out=0.0)
    assert [(ce.a, ce.b, ce.bits, ce.got) for ce in refute.beam(zero, width=8, steps=4)] == [(1, 0, 1, 0)]


@pytest.fixture(scope="module")
def trained_4bit(tmp_path_factory):
    """A run that learned every 4-bit sum (operands below 2^3) with 4 Elman units, in-process."""
    from rnn_testing import compose

    from rnn_jax.driver.loop import run

    run_dir = tmp_path_factory.mktemp("run4")
    cfg = compose(
        *("task.bits=4", "model.hidden=4", "train.steps=800", "train.log_every=200", "task.seeds=2"),
        *(
            "task.eval_samples=64",
            "train.progress=false",
            "task.generalization_bits=[8]",
            "task.generalization_samples=16",
        ),
    )
    summary = run(cfg, run_dir)
    assert summary["per_seed_accuracy"] == [1.0, 1.0], summary["per_seed_accuracy"]  # exact on every 4-bit pair
    return run_dir


def test_network_exact_on_4_bits_is_refuted_with_operands_it_really_gets_wrong(trained_4bit, capsys):
    from rnn_jax.apps import verify as app
    from rnn_jax.driver import checkpoint

    before = (trained_4bit / "summary.json").read_text()
    assert app.main([f"run={trained_4bit}", "seconds=1"]) == 0  # one worker process per core
    assert (trained_4bit / "summary.json").read_text() == before  # the summary is not rewritten
    out = json.loads((trained_4bit / "verification.json").read_text())
    assert [r["seed"] for r in out["seeds"]] == [0, 1]
    state, meta = checkpoint.load(trained_4bit)
    model = build_model(model_config(**meta["config"]["model"]), 1)
    for i, r in enumerate(out["seeds"]):
        assert r["verdict"] in ("proved", "refuted", "unknown")
        params = jax.tree.map(lambda a, i=i: a[i], state["train"]["params"])
        params = ModelParams(ElmanParams(**params["cell"]), DenseParams(**params["readout"]))
        if r["verdict"] == "refuted":
            for ce in r["counterexamples"]:
                a, b, bits = int(ce["a"], 16), int(ce["b"], 16), ce["bits"]
                assert max(a, b) >= 8  # exact on every operand below 2^3: it fails on wider ones only
                _, logits = model.logits(params, jnp.asarray(addition.encode([a], [b], bits, full_range=True).inputs))
                got = addition.bits_int(np.asarray(logits[..., 0] > 0))[0]
                assert got == int(ce["got"], 16) != a + b
        if r["verdict"] == "proved":  # a proof must agree with 10^4 random 64-bit sums
            assert adds_exactly(model, params, bits=64, count=10_000)
    assert any(r["verdict"] == "refuted" for r in out["seeds"])
    assert "proved" in capsys.readouterr().out


def test_a_run_that_cannot_be_read_ends_the_sweep_after_the_runs_under_way_are_recorded(trained_4bit, tmp_path, capsys):
    import shutil

    from rnn_jax.apps import verify as app

    shutil.copytree(trained_4bit, tmp_path / "0", ignore=shutil.ignore_patterns("verification.json"))
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "summary.json").write_text(json.dumps({"config": {"task": {"name": "copy"}}}))
    # two workers: run 0 is still being verified when run 1 turns out not to be an addition run
    assert app.main([f"run={tmp_path}", "seconds=0.2", "beam=0", "workers=2"]) == 2
    assert "task 'copy'" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "0" / "verification.json").read_text())["seeds"]) == 2


def test_report_reads_the_fraction_proved_from_verification_json(trained_4bit):
    """The report's table gets a "proved" column from each job's verification.json (the figure,
    proved.png, is drawn by the same `heatmap` as success.png; tests/test_report.py covers it)."""
    from rnn_jax.apps import report

    verdicts = [r["verdict"] for r in json.loads((trained_4bit / "verification.json").read_text())["seeds"]]
    jobs = report.load_jobs(trained_4bit)
    header, rows = report.group_table(report.group_jobs(jobs))
    assert header[-1] == "proved" and rows[0][-1] == verdicts.count("proved") / len(verdicts)
    line = report.smallest_proved(jobs)
    assert (line is None) == ("proved" not in verdicts)
    if line:
        assert "elman, 4 hidden units, 41 parameters" in line  # 2*4 + 16 + 4 weights and biases, readout 4 + 1


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    from rnn_jax.apps import verify as app

    assert app.main([f"run={tmp_path / 'nowhere'}"]) == 2
    assert "run=" in capsys.readouterr().err
    assert app.main(["seconds=0", f"run={tmp_path}"]) == 2
    assert "seconds=0" in capsys.readouterr().err
    assert app.main(["budget=3"]) == 2
    assert "budget=3" in capsys.readouterr().err


def test_prefix_words_from_the_initial_state_match_a_python_loop_and_are_checked():
    """The first `prefix` steps are run from the zero state as points: every word's final state is
    the float64 run of that word, its carry and history those of integer addition; a certificate
    whose nodes need not hold the transient proves the adder, and one with a node shrunk fails."""
    net = hinton_adder()
    got = certificate.initial_images(net, history=2, runs=3, prefix=4)
    words = certificate.words(4)
    assert len(got.carry) == len(words)
    for i, word in enumerate(words):
        state, carry, past, run = np.zeros((1, 3)), 0, [], 0
        for p in word:
            state, _ = step(NUMPY, net, state, PAIRS[p : p + 1])
            a, b = p & 1, p >> 1
            past.append((carry, p))
            run = min(run + 1, 3) if a + b == 1 else 0
            carry = (carry + a + b) // 2
        assert (int(got.carry[i]), tuple(got.history[i]), int(got.run[i])) == (carry, tuple(past[-2:]), run)
        np.testing.assert_allclose(got.form.c[i], state[0], rtol=0, atol=1e-12)
    assert affine.radius(got.form).max() < 1e-12 and got.margin.min() > 0
    verdict = verify(net, Budget(seconds=30, schedule=((1, 1, 0),), prefix=5))
    assert verdict.status == "proved", verdict.reason
    cert = verdict.certificate
    assert cert.prefix == 5 and verdict.detail["prefix"] == 5 and certificate.check(net, cert).ok
    node = cert.nodes[-1]
    mid = (node.lo + node.hi) / 2
    assert not certificate.check(net, cert._replace(nodes=cert.nodes[:-1] + (node._replace(lo=mid, hi=mid),))).ok
