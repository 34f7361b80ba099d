"""benchmarks/verify_obstacles.py on a network whose every step is the same linear map (ReLU units
that never switch off): its Jacobian, its contraction figures and the linear part of the sets'
images against NumPy's matrix powers, and a nonlinear part that is only rounding."""

import sys
from pathlib import Path

import numpy as np

from rnn_jax.verification.network import Layer, Network
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


def test_jacobian_and_contraction_are_the_matrix_powers():
    net, J = always_active()
    np.testing.assert_allclose(obstacles.jacobian(net, np.full(4, 0.3), 2), J, atol=1e-8)
    k = obstacles.contraction(net, steps=300, windows=(2, 4))
    np.testing.assert_allclose(k["lyapunov"], 0.6, rtol=0.02)
    for d in (2, 4):
        np.testing.assert_allclose(k[f"norm{d}"], np.linalg.norm(np.linalg.matrix_power(J, d), 2), rtol=1e-6)


def test_image_parts_linear_part_is_the_matrix_power_and_nonlinear_only_rounding():
    net, J = always_active()
    nodes = initial_nodes(simulate(net, np.random.default_rng(0), 16, 16, 4), history=1)
    p = obstacles.image_parts(net, nodes, history=1, depth=2)
    assert len(p["target"]) > 0
    want = [
        np.abs(np.linalg.inv(nodes[t].basis) @ J @ J @ nodes[s].basis) @ p["radius"][s]
        for s, t in zip(p["source"], p["target"])
    ]
    np.testing.assert_allclose(p["linear"], np.array(want), rtol=1e-9, atol=1e-15)
    assert p["nonlinear"].max() < 1e-12
