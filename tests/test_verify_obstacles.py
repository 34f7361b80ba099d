"""benchmarks/verify_obstacles.py against references it does not share code with: the Jacobians
and their products from perturbed runs of the network (`network.run`), matrix powers for a network
whose every step is the same linear map, the affine forms' bounds from `certificate.coordinates`,
and the growth rate of a max-plus system from its Perron root."""

import sys
from pathlib import Path

import numpy as np

from rnn_jax.verification import certificate
from rnn_jax.verification.network import Layer, Network, run
from rnn_jax.verification.search import initial_nodes, simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of scripts, not installed
from benchmarks import verify_obstacles as obstacles  # noqa: E402


def always_active() -> tuple[Network, np.ndarray]:
    """4 ReLU units with nonnegative weights and bias 1: every pre-activation is positive, so each
    step is h' = x w_x + h w_h + 1 and its Jacobian is w_h transposed."""
    rng = np.random.default_rng(0)
    w_h = rng.random((4, 4))
    w_h *= 0.6 / max(abs(np.linalg.eigvals(w_h)))  # spectral radius 0.6
    layer = Layer("elman", rng.random((2, 4)), w_h, np.ones(4), activation="relu")
    return Network((layer,), rng.standard_normal(4), 0.1), w_h.T


def tanh_network() -> Network:
    rng = np.random.default_rng(3)
    layer = Layer(
        "elman", 2 * rng.standard_normal((2, 4)), 0.8 * rng.standard_normal((4, 4)), 0.3 * rng.standard_normal(4)
    )
    return Network((layer,), rng.standard_normal(4), 0.1)


def test_linear_network_contraction_is_the_matrix_powers():
    net, J = always_active()
    np.testing.assert_allclose(obstacles.jacobian(net, np.full(4, 0.3), 2), J, atol=1e-8)
    k = obstacles.contraction(net, steps=300, windows=(2, 4))
    np.testing.assert_allclose(k["lyapunov"], 0.6, rtol=0.02)
    for d in (2, 4):
        np.testing.assert_allclose(k[f"norm{d}"], np.linalg.norm(np.linalg.matrix_power(J, d), 2), rtol=1e-6)


def test_tanh_network_window_norms_match_perturbed_runs():
    net, steps = tanh_network(), 30
    pairs = np.random.default_rng(1).integers(0, 4, size=(steps, 1))  # the sum contraction() runs
    states, _ = run(net, pairs)
    h, n = 1e-6, 4
    for d in (2, 4):
        worst = 0.0
        for t in range(steps - d):  # the map of steps t+1 .. t+d from the state after step t
            start = states[t, 0] + h * np.concatenate([np.eye(n), -np.eye(n)])
            ends, _ = run(net, np.repeat(pairs[t + 1 : t + d + 1], 2 * n, axis=1), state=start)
            worst = max(worst, np.linalg.norm((ends[-1, :n] - ends[-1, n:]).T / (2 * h), 2))
        assert np.isclose(obstacles.contraction(net, steps=steps, windows=(d,))[f"norm{d}"], worst, rtol=1e-5)


def test_image_parts_add_up_to_the_rigorous_coordinates():
    net = tanh_network()
    nodes = initial_nodes(simulate(net, np.random.default_rng(0), 16, 16, 4), history=1)
    p = obstacles.image_parts(net, nodes, history=1, depth=2)
    assert len(p["target"]) > 0 and p["nonlinear"].min() > 0
    part = certificate.node_images(net, nodes, 2, 1, 0)
    rows = np.flatnonzero(certificate.target_index(nodes, part.carry, part.history, part.run) >= 0)
    parts = p["offset"] + p["linear"] + p["nonlinear"]  # one row per labelled image, in order
    for i, (row, t) in enumerate(zip(rows, p["target"])):
        node = nodes[t]
        lo, hi = certificate.coordinates(certificate.affine.Form(*(a[[row]] for a in part.form)), node)
        middle = (node.lo + node.hi) / 2
        reach = np.maximum(middle - lo[0], hi[0] - middle)  # how far the image reaches from the middle
        np.testing.assert_allclose(parts[i], reach, rtol=1e-7, atol=1e-12)


def test_linear_part_of_the_linear_network_is_the_matrix_power_and_nothing_is_nonlinear():
    net, J = always_active()
    nodes = initial_nodes(simulate(net, np.random.default_rng(0), 16, 16, 4), history=1)
    p = obstacles.image_parts(net, nodes, history=1, depth=2)
    want = [
        np.abs(np.linalg.inv(nodes[t].basis) @ J @ J @ nodes[s].basis) @ p["radius"][s]
        for s, t in zip(p["source"], p["target"])
    ]
    np.testing.assert_allclose(p["linear"], np.array(want), rtol=1e-9, atol=1e-15)
    assert p["nonlinear"].max() < 1e-12


def test_max_growth_is_the_perron_root_of_a_loop_and_the_mean_rate_of_a_cycle():
    A, B = np.array([[0.5, 0.2], [0.1, 0.3]]), np.array([[0.9, 0.0], [0.4, 0.2]])
    loop = obstacles.max_growth(A[None], np.array([0]), np.array([0]), 1)
    assert np.isclose(loop, max(abs(np.linalg.eigvals(A))), rtol=1e-9)
    cycle = obstacles.max_growth(np.stack([A, B]), np.array([0, 1]), np.array([1, 0]), 2)
    assert np.isclose(cycle, np.sqrt(max(abs(np.linalg.eigvals(B @ A)))), rtol=1e-6)
