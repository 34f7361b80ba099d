"""Orbax checkpoints: round trip, the steps kept, a damaged or half-written step skipped for the
one before, a save killed at an arbitrary moment, and a clear error for what does not fit."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.driver import checkpoint
from rnn_jax.driver.checkpoint import CheckpointError, Checkpoints, restore_newest, steps_in


def params():
    model = rj.sequence_model(rj.stack([rj.lstm(4), rj.elman(3, use_bias=False)]), 2)
    return model.init(jax.random.PRNGKey(0), 5)


def damage(step_dir: Path) -> None:
    """Overwrites every data file of a step's arrays, as a crash or a bad disk might."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        p.write_bytes(b"\0 damaged")


def test_round_trip_with_and_without_target(tmp_path):
    p = params()
    Checkpoints(tmp_path).save("last", 7, p, {"step": 7, "loss": float("nan")})
    raw, meta = checkpoint.load(tmp_path)  # a run directory: its newest last step
    assert meta == {"step": 7, "loss": None}  # strict JSON: NaN is null
    np.testing.assert_array_equal(raw["cell"][0]["w_h"], p.cell[0].w_h)
    assert raw["cell"][1]["b"] is None
    restored, _ = checkpoint.load(tmp_path / "checkpoints" / "last", target=p)
    assert jax.tree.structure(restored) == jax.tree.structure(p)
    jax.tree.map(np.testing.assert_array_equal, restored, p)
    assert jax.tree.structure(checkpoint.to_target("x", p, raw)) == jax.tree.structure(p)


def test_last_keeps_the_newest_two_steps_and_best_one(tmp_path):
    p, ck = params(), Checkpoints(tmp_path)
    for step in (1, 2, 3):
        ck.save("last", step, p, {"step": step})
        ck.save("best", step, p, {"step": step})
    assert steps_in(tmp_path / "checkpoints" / "last") == [3, 2]
    assert steps_in(tmp_path / "checkpoints" / "best") == [3]


def test_a_damaged_or_half_written_step_is_skipped_for_the_one_before(tmp_path, caplog):
    p, ck = params(), Checkpoints(tmp_path)
    ck.save("last", 1, p, {"step": 1})
    later = jax.tree.map(lambda a: a + 1, p)
    ck.save("last", 2, later, {"step": 2})
    # A save killed before its commit leaves a temporary directory: it is not a step.
    (tmp_path / "checkpoints" / "last" / "3.orbax-checkpoint-tmp-123" / "state").mkdir(parents=True)
    assert steps_in(tmp_path / "checkpoints" / "last") == [2, 1]
    state, meta = ck.restore("last", p)
    assert meta["step"] == 2
    damage(tmp_path / "checkpoints" / "last" / "2")
    state, meta = ck.restore("last", p)
    assert meta["step"] == 1 and "skipped unreadable step 2" in caplog.text
    jax.tree.map(np.testing.assert_array_equal, state, p)
    damage(tmp_path / "checkpoints" / "last" / "1")
    with pytest.raises(CheckpointError, match="no step reads back"):
        ck.restore("last", p)


def test_what_does_not_fit_is_refused_naming_the_array_never_cast(tmp_path):
    Checkpoints(tmp_path).save("last", 1, params(), {"step": 1})
    other = rj.sequence_model(rj.stack([rj.lstm(6), rj.elman(3, use_bias=False)]), 2).init(jax.random.PRNGKey(0), 5)
    with pytest.raises(CheckpointError, match=r"cell\.0\.w_x is float32\[5, 16\], this run's is float32\[5, 24\]"):
        restore_newest(tmp_path / "checkpoints" / "last", other)
    as_f16 = jax.tree.map(lambda a: a.astype(jnp.float16), params())
    with pytest.raises(CheckpointError, match=r"is float32\[.*\], this run's is float16"):
        checkpoint.load(tmp_path, target=as_f16)
    with pytest.raises(CheckpointError, match="no committed step"):
        checkpoint.load(tmp_path / "missing")


SAVER = """
import sys, jax, jax.numpy as jnp
from rnn_jax.driver.checkpoint import Checkpoints
ck = Checkpoints(sys.argv[1])
tree = {"w": jnp.zeros((64, 64)), "b": jnp.zeros(64)}
for step in range(1, 100000):
    ck.save("last", step, jax.tree.map(lambda a: a + step, tree), {"step": step})
    print(step, flush=True)
"""


@pytest.mark.slow
def test_a_save_killed_at_any_moment_leaves_a_good_checkpoint(tmp_path):
    """A process saves step after step; it is frozen (SIGSTOP) at moments spread over its saves
    and the directory copied as it is then, which is what a SIGKILL at that moment would leave.
    Every copy restores its newest committed step whole, and the process is then killed."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    snapshots = []
    try:
        while int(proc.stdout.readline()) < 2:  # imports and the first saves are slow
            pass
        for i, delay in enumerate((0.0, 0.011, 0.023, 0.037, 0.052, 0.071, 0.089, 0.13)):
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGSTOP)
            while Path(f"/proc/{proc.pid}/stat").read_text().split(")")[-1].split()[0] != "T":  # stopped for certain
                time.sleep(0.001)
            snapshots.append(tmp_path / f"kill{i}")
            shutil.copytree(out, snapshots[-1])
            os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    template = {"b": jnp.zeros(64), "w": jnp.zeros((64, 64))}
    for run_dir in snapshots + [out]:
        steps = steps_in(run_dir / "checkpoints" / "last")
        state, meta = restore_newest(run_dir / "checkpoints" / "last", template)
        assert meta["step"] == steps[0] >= 2, run_dir
        np.testing.assert_array_equal(state["w"], meta["step"])  # whole: every value is that step's
