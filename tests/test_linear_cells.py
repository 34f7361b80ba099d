"""The linear-recurrence cells (minGRU, minLSTM, LRU, RG-LRU): each step against a NumPy loop of
its paper's equations, and the parallel path (`lax.associative_scan`) against the sequential one
(`lax.scan` of the step): outputs, final carries and gradients, with a nonzero initial carry,
lengths, a mask, resets, reverse, batch-major, a stack and a bidirectional layer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import assert_trees_close, init, jit, normal, x64

import rnn_jax as rj

T, B, I, H = 8, 3, 5, 4
NAMES = ["mingru", "minlstm", "lru", "rglru"]
CELLS = {
    "mingru": rj.mingru(H),
    "minlstm": rj.minlstm(H, positive_candidate=False),
    "lru": rj.lru(H, r_min=0.4, r_max=0.99, max_phase=3.0),
    "rglru": rj.rglru(H),
}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def g(z):
    return np.where(z >= 0, z + 0.5, sigmoid(z))


def np_mingru(p, h, x):
    """Feng et al. 2024, Sec. 3.1.3, with the Appendix's positive candidate g."""
    z = sigmoid(x @ p.w[:, :H] + p.b[:H])
    h = (1 - z) * h + z * g(x @ p.w[:, H:] + p.b[H:])
    return h, h


def np_minlstm(p, h, x):
    """Feng et al. 2024, Sec. 3.2.3, normalised gates, the candidate without g (Sec. 3.2.3 as
    written; `positive_candidate=False`)."""
    f = sigmoid(x @ p.w[:, :H] + p.b[:H])
    i = sigmoid(x @ p.w[:, H : 2 * H] + p.b[H : 2 * H])
    h = f / (f + i) * h + i / (f + i) * (x @ p.w[:, 2 * H :] + p.b[2 * H :])
    return h, h


def np_lru(p, h, x):
    """Orvieto et al. 2023: complex h, lambda = exp(-exp(nu) + i exp(theta)), gamma = sqrt(1 - |lambda|^2)."""
    lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
    gamma = np.sqrt(1 - np.abs(lam) ** 2)
    hc = lam * (h[0] + 1j * h[1]) + gamma * (x @ (p.b_re + 1j * p.b_im))
    y = np.real(hc @ (p.c_re + 1j * p.c_im)) + x @ p.d
    return (hc.real, hc.imag), y


def np_rglru(p, h, x, c=8.0):
    """De et al. 2024, Eqs. (1)-(6), on u = x @ w_in + b_in."""
    u = x @ p.w_in + p.b_in
    r = sigmoid(u @ p.w_g[:, :H] + p.b_g[:H])
    i = sigmoid(u @ p.w_g[:, H:] + p.b_g[H:])
    a_t = sigmoid(p.lam) ** (c * r)
    h = a_t * h + np.sqrt(1 - a_t**2) * (i * u)
    return h, h


REFERENCES = {
    "mingru": np_mingru,
    "minlstm": np_minlstm,
    "lru": np_lru,
    "rglru": np_rglru,
}


def to_np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def start_carry(cell, dtype):
    """A nonzero initial carry, [B, H] per leaf."""
    leaves = jax.tree.leaves(cell.initial_carry((B,), dtype))
    return jax.tree.unflatten(
        jax.tree.structure(cell.initial_carry((B,), dtype)), [normal(7 + k, (B, H), dtype) for k in range(len(leaves))]
    )


@functools.partial(jit, static_argnums=0)
def step_and_sequence(cell, params, xs, carry):
    return cell.apply(params, carry, xs[0]), rj.unroll(cell, params, xs, carry, scan="sequential")


@pytest.mark.parametrize("name", list(CELLS))
def test_step_and_sequence_match_the_papers_equations_in_numpy(name):
    """One `apply`, and `unroll` over T steps, from a nonzero carry, against a NumPy loop, float64."""
    with x64():
        cell, reference = CELLS[name], REFERENCES[name]
        params = init(cell, I)
        xs, carry = normal(1, (T, B, I)), start_carry(cell, jnp.float64)
        (step_carry, y), (final, ys) = step_and_sequence(cell, params, xs, carry)
        p, h = to_np(params), tuple(np.asarray(c) for c in jax.tree.leaves(carry))
        h = h if name == "lru" else h[0]
        ref_ys = []
        for t, x in enumerate(np.asarray(xs)):
            h, y_t = reference(p, h, x)
            if t == 0:
                assert_trees_close(tuple(jax.tree.leaves(step_carry)), tuple(jax.tree.leaves(h)), 1e-12)
                np.testing.assert_allclose(y, y_t, rtol=1e-12, atol=1e-12)
            ref_ys.append(y_t)
        np.testing.assert_allclose(ys, np.stack(ref_ys), rtol=1e-12, atol=1e-12)
        assert_trees_close(tuple(jax.tree.leaves(final)), tuple(jax.tree.leaves(h)), 1e-12)


LENGTHS = (T, 5, 0)
RESETS = np.zeros((T, B), bool)
RESETS[[0, 3, 6], 0] = RESETS[[2, 4], 1] = RESETS[[5], 2] = True  # row 2's mark is on padding


def options():
    """The ways `unroll` runs a sequence, each case combining several: name -> keyword arguments
    (inputs batch-major where `time_major` is False)."""
    mask = np.ones((T, B), bool)
    mask[[1, 4], 0] = mask[2, 2] = False
    lengths, resets = jnp.array(LENGTHS), jnp.asarray(RESETS)
    return {
        "resets-lengths-reverse": dict(resets=resets, lengths=lengths, reverse=True),
        "batch-major-resets-mask": dict(time_major=False, resets=resets.T, mask=jnp.asarray(mask).T),
    }


@functools.partial(jit, static_argnums=0)
def both_paths(cell, params, xs, carry, w):
    """Per option, outputs, final carry and gradients (parameters, inputs, initial carry) of
    `unroll` by the sequential and the parallel scan."""

    def loss(params, xs, carry, scan, kwargs):
        xs = jnp.moveaxis(xs, 0, 1) if kwargs.get("time_major") is False else xs  # [B, T, I]
        final, ys = rj.unroll(cell, params, xs, carry, scan=scan, **kwargs)
        ys = jnp.moveaxis(ys, 1, 0) if kwargs.get("time_major") is False else ys  # [T, B, H]
        return jnp.sum(w * jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(final)), (final, ys)

    run = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    return {
        (name, scan): run(params, xs, carry, scan, kwargs)
        for name, kwargs in options().items()
        for scan in ("sequential", "parallel")
    }


@pytest.mark.parametrize("name", NAMES)
def test_parallel_equals_sequential_with_gradients_in_float64(name):
    """Outputs, final carry, gradients: the parallel path against autodiff through the step path."""
    with x64():
        cell = CELLS[name]
        carry = start_carry(cell, jnp.float64)
        runs = both_paths(cell, init(cell, I), normal(1, (T, B, I)), carry, normal(2, (T, B, H)))
    for option in options():
        sequential, parallel = runs[option, "sequential"], runs[option, "parallel"]
        assert jax.tree.map(lambda a: a.dtype, parallel) == jax.tree.map(lambda a: a.dtype, sequential)
        assert_trees_close(parallel, sequential, 1e-12)
    (_, (final, ys)), _ = runs[
        "resets-lengths-reverse", "parallel"
    ]  # the options act: padding is zero, row 2 keeps its carry
    np.testing.assert_array_equal(ys[LENGTHS[1] :, 1], 0.0)
    assert_trees_close(jax.tree.map(lambda c: c[2], final), jax.tree.map(lambda c: c[2], carry), 0)


@jit
def stacked_and_bidirectional(params, bi_params, xs):
    stack = rj.stack([CELLS["lru"], CELLS["mingru"]])
    layer = rj.bidirectional(CELLS["rglru"], CELLS["minlstm"])
    lengths = jnp.array(LENGTHS)
    return [
        (
            rj.unroll(stack, params, xs, lengths=lengths, scan=s),
            layer.apply(bi_params, xs, lengths=lengths, resets=jnp.asarray(RESETS), scan=s),
        )
        for s in ("sequential", "parallel")
    ]


def test_stack_and_bidirectional_parallel_equals_sequential_in_float32():
    """Every cell in float32, in a stack and a bidirectional layer: 1e-5 at T = 8 (the float32
    difference at T = 8,192 is measured in docs/parallel_cells.md)."""
    stack = rj.stack([CELLS["lru"], CELLS["mingru"]])
    layer = rj.bidirectional(CELLS["rglru"], CELLS["minlstm"])
    sequential, parallel = stacked_and_bidirectional(init(stack, I), init(layer, I), normal(1, (T, B, I)))
    assert jax.tree.leaves(parallel)[0].dtype == jnp.float32
    assert_trees_close(parallel, sequential, 1e-5)


def test_scan_argument_is_checked():
    params = init(rj.lstm(H), I)
    with pytest.raises(ValueError, match="scan='parallel' needs a linear-recurrence cell"):
        rj.unroll(rj.lstm(H), params, jnp.zeros((T, B, I)), scan="parallel")
    with pytest.raises(ValueError, match="scan='fast' is not allowed; allowed: auto, sequential, parallel"):
        rj.unroll(rj.lstm(H), params, jnp.zeros((T, B, I)), scan="fast")


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: rj.mingru(0), ValueError, "hidden_size"),
        (lambda: rj.minlstm(4, positive_candidate="yes"), TypeError, "positive_candidate"),
        (lambda: rj.lru(4, r_min=0.9, r_max=0.5), ValueError, "r_min and r_max"),
        (lambda: rj.lru(4, max_phase=0.0), ValueError, "max_phase"),
        (lambda: rj.rglru(4, c=0.0), ValueError, "c must be positive"),
        (lambda: rj.rglru(4, init="he"), ValueError, "init"),
    ],
)
def test_bad_arguments_name_the_argument(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_initial_eigenvalues_lie_where_the_papers_put_them():
    """LRU: |lambda| on the ring [r_min, r_max], phase in [0, max_phase]; RG-LRU: a^c in [0.9, 0.999]."""
    p = init(rj.lru(256, r_min=0.5, r_max=0.9, max_phase=1.0), 3)
    modulus, phase = np.exp(-np.exp(np.float64(p.nu_log))), np.exp(np.float64(p.theta_log))
    assert modulus.min() >= 0.5 - 1e-6 and modulus.max() <= 0.9 + 1e-6 and phase.max() <= 1.0 + 1e-6
    assert modulus.max() > 0.85 and modulus.min() < 0.55  # spread over the ring, not a point
    a_c = (1 / (1 + np.exp(-np.float64(init(rj.rglru(256), 3).lam)))) ** 8
    assert a_c.min() >= 0.9 - 1e-6 and a_c.max() <= 0.999 + 1e-6 and a_c.max() - a_c.min() > 0.09


def runs_a_scan_loop(cell, steps, **kwargs):
    """Whether `unroll` of `cell` over `steps` steps traces to a `lax.scan` (the sequential path;
    the parallel one has none)."""
    params = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), I))  # traced only, never run
    xs = jax.ShapeDtypeStruct((steps, B, I), jnp.float32)
    return "scan[" in str(jax.make_jaxpr(lambda p, xs: rj.unroll(cell, p, xs, **kwargs))(params, xs))


def test_auto_takes_the_measured_threshold_and_the_cells_own_choice(monkeypatch):
    from rnn_jax import linear_scan

    monkeypatch.setitem(linear_scan.AUTO_MIN_STEPS, "cpu", 6)
    cell = rj.mingru(H, platform="cpu")
    assert runs_a_scan_loop(cell, 5) and not runs_a_scan_loop(cell, 6)
    assert runs_a_scan_loop(rj.mingru(H, platform="tpu"), 6)  # not measured: sequential
    assert not runs_a_scan_loop(rj.lru(H, scan="parallel"), 2)  # the cell's own choice
    assert runs_a_scan_loop(rj.lru(H, scan="parallel"), 2, scan="sequential")  # unroll's overrides it


def test_the_flax_sequence_module_passes_scan_through():
    from flax import linen as nn  # noqa: F401 - the adapter needs Flax

    xs = jnp.zeros((B, T, I))
    for scan, loop in [("parallel", False), ("sequential", True)]:
        module = rj.RNNModule(rj.lru(H), scan=scan)
        variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), xs))
        assert ("scan[" in str(jax.make_jaxpr(module.apply)(variables, xs))) == loop
