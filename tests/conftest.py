"""Tests run on the CPU, with strict rank promotion so silent broadcasting bugs fail loudly, and
with XLA's cheapest compilation: the tests check what programs compute, not how fast they run,
and compiling is most of their time (these flags cut the suite's CPU time by about a third).
Subprocesses the tests start (the real command lines) inherit both, and Ctrl-C's default handling
even when the suite was started with SIGINT ignored."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


import logging  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# A shell that starts the suite in the background (`pytest &` without job control) has SIGINT
# ignored, and every process it starts inherits that; the interrupt tests need Ctrl-C's own
# behaviour, here and in the runs they start.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def app_in_process(capsys):
    """`python -m rnn_jax.train ARGS` run in this process (Hydra and all: the same `main`, less
    Hydra's logging setup), for what a command line must print and return without paying for a
    new Python and JAX each time; returns a CompletedProcess with its exit code and output."""

    def call(*args) -> subprocess.CompletedProcess:
        from rnn_jax.apps.train import main

        argv, sigterm = sys.argv, signal.getsignal(signal.SIGTERM)
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        # Hydra's logging setup would replace pytest's own handlers (and close its capture).
        sys.argv = ["rnn_jax.train", *map(str, args), "hydra/job_logging=none", "hydra/hydra_logging=none"]
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
            signal.signal(signal.SIGTERM, sigterm)
            for handler in root.handlers:  # Hydra's, writing to this test's captured streams and files
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


@pytest.fixture
def x64():
    """Float64 for the test (`jax_enable_x64`), float32 again after it."""
    from rnn_testing import x64 as float64

    with float64():
        yield


# The slowest files first (seconds of test time on the 2-core CPU, `--durations=0`, 2026-12-06):
# with `--no-loadscope-reorder` (pyproject.toml) pytest-xdist hands whole files to its two workers
# in collection order, so starting the long ones first lets the short ones even out the end. (By
# default it orders files by their number of tests, and one worker ran 47 s longer than the other.)
SLOWEST_FIRST = (
    "test_devices.py",  # 42
    "test_launchers.py",  # 38
    "test_faults.py",  # 37
    "test_train_app.py",  # 33
    "test_sweeps.py",  # 30
    "test_fused.py",  # 29
    "test_charlm.py",  # 23
    "test_fused_launcher.py",  # 22
    "test_loggers.py",  # 22
    "test_unroll_options.py",  # 20
    "test_unroll.py",  # 19
    "test_record.py",  # 17
    "test_softmax.py",  # 13
    "test_poetry.py",  # 11
    "test_linear_cells.py",  # 11
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
