"""The library's layers: the core imports nothing from the driver, tasks or apps, nor Hydra; the
cells and the plain scan know nothing of the fused fast path; the backend is an explicit argument."""

import ast
import pathlib
import re

import jax
import jax.numpy as jnp

import rnn_jax as rj

PACKAGE = pathlib.Path(rj.__file__).parent
CORE = [
    "__init__",
    "_checks",
    "initializers",
    "scan",
    "cells",
    "fused",
    "unroll",
    "model",
    "bidirectional",
    "flax_adapter",
]


def imported_modules(name):
    path = PACKAGE / f"{name}.py"
    if not path.exists():
        return set()
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_core_imports_no_driver_task_app_or_hydra():
    banned = ("rnn_jax.driver", "rnn_jax.tasks", "rnn_jax.apps", "hydra", "omegaconf")
    for name in CORE:
        bad = sorted(m for m in imported_modules(name) if m.startswith(banned))
        assert not bad, (name, bad)


def test_cells_and_scan_do_not_depend_on_the_fast_path():
    for name in ["cells", "scan"]:
        bad = sorted(m for m in imported_modules(name) if m.startswith(("rnn_jax.fused", "rnn_jax.unroll")))
        assert not bad, (name, bad)
    assert "rnn_jax.cells" in imported_modules("fused")  # the fast path builds on the cells


def scan_unrolls(cell, xs):
    """The `unroll` of every `lax.scan` in the jaxpr of `unroll(cell, ...)`, nested ones included."""
    params = jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), xs.shape[-1]))  # traced only, never run
    jaxpr = jax.make_jaxpr(lambda p, xs: rj.unroll(cell, p, xs))(params, xs)
    return [int(n) for n in re.findall(r"\bunroll=(\d+)", str(jaxpr))]


def test_the_platform_is_an_argument_read_once_by_the_factory():
    assert rj.lstm(4).options.platform == jax.default_backend()
    xs = jax.ShapeDtypeStruct((8, 3, 5), jnp.float32)
    for make in (rj.elman, rj.lstm, rj.gru):
        for platform, defaults in rj.BACKEND_DEFAULTS.items():
            cell = make(4, platform=platform)
            assert cell.options.platform == platform
            assert scan_unrolls(cell, xs) == [defaults.fused_unroll]  # the fused forward scan


def test_registry_factories_take_the_platform():
    for name, make in rj.CELLS.items():
        assert make(4, platform="gpu").options == rj.SpeedOptions("gpu"), name
