"""Many devices and processes on the CPU: seeds split over 4 host devices give the per-seed
results of one device, a char-LM's batch split over 4 devices gives its loss curve, and two
processes on 127.0.0.1 (jax.distributed, gloo) give the one-process run's validation bpc."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from rnn_testing import compose

from rnn_jax.driver import checkpoint
from rnn_jax.driver.loop import run

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ["task.bits=4", "model.hidden=4", "task.seeds=8", "train.steps=60", "train.log_every=20", "task.batch_size=8",
         "task.stop_when_solved=false", "train.progress=false", "task.generalization_bits=[6]",
         "task.generalization_samples=16", "task.carry_chain_lengths=[10]", "task.long_random_bits=[]"]  # fmt: skip


config = compose


def app(*args, devices=1, extra_env=None, wait=True):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags, **(extra_env or {})}
    cmd = [sys.executable, "-m", "rnn_jax.train", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def lines(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    rng = np.random.default_rng(0)
    path.write_text(" ".join(rng.choice(["alpha", "beta", "gamma", "delta", "\n"], 800)))
    return path


def charlm(corpus, *more):
    return ["experiment=charlm_tiny", f"task.corpus={corpus}", "task.seq_len=8", "task.embedding=8", "model.hidden=16",
            "task.batch_size=8", "train.steps=50", "train.log_every=10", "task.eval_every=50", "task.eval_batches=2",
            "task.sample_length=0", "train.progress=false", *more]  # fmt: skip


@pytest.mark.slow
def test_seeds_split_over_4_devices_give_the_one_device_results(tmp_path):
    out = app(*SEEDS, f"hydra.run.dir={tmp_path / 'four'}", devices=4)
    assert out.returncode == 0, out.stderr[-2000:]
    one = run(config(*SEEDS), tmp_path / "one")
    four = json.loads((tmp_path / "four" / "summary.json").read_text())
    assert four["devices"] == 4 and one["devices"] == 1
    keys = (
        "per_seed_accuracy",
        "steps_to_solve",
        "success_rate",
        "failed_seeds",
        "generalization_per_seed",
        "longest_exact_carry_chain",
    )
    for key in keys:
        assert four[key] == one[key], key
    a, b = (checkpoint.load(tmp_path / d)[0]["train"]["params"] for d in ("one", "four"))
    # Each device vmaps 2 replicas where one device vmaps 8: the same arithmetic, batched
    # otherwise, so float32 rounding differs a little and grows with the steps (as for
    # task.seeds=S against single runs; measured after 300 Adam steps: 7e-6 on weights of ~3).
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=2e-8 * 60), a, b)
    assert [r["loss"] for r in lines(tmp_path / "four")] == pytest.approx(
        [r["loss"] for r in lines(tmp_path / "one")], abs=1e-6
    )


@pytest.fixture(scope="module")
def one_device_charlm(tmp_path_factory, corpus):
    """The char-LM run on this process's one device, the reference of the split runs."""
    run_dir = tmp_path_factory.mktemp("one")
    return run(config(*charlm(corpus)), run_dir), run_dir


@pytest.mark.slow
def test_a_charlm_batch_split_over_4_devices_follows_the_one_device_loss(tmp_path, corpus, one_device_charlm):
    out = app(*charlm(corpus), f"hydra.run.dir={tmp_path / 'four'}", devices=4)
    assert out.returncode == 0, out.stderr[-2000:]
    one, one_dir = one_device_charlm
    four = json.loads((tmp_path / "four" / "summary.json").read_text())
    assert four["devices"] == 4
    np.testing.assert_allclose(
        [r["train_loss"] for r in lines(tmp_path / "four")],
        [r["train_loss"] for r in lines(one_dir)],
        rtol=0,
        atol=1e-5,
    )
    assert four["final_val_bpc"] == pytest.approx(one["final_val_bpc"], abs=1e-5)
    out = app(*charlm(corpus, "task.batch_size=6", "backend.devices=4"), f"hydra.run.dir={tmp_path / 'odd'}", devices=4)
    assert (
        out.returncode == 2 and "task.batch_size=6 is not allowed; must be a multiple of the 4 devices" in out.stderr
    )  # a count is strict


@pytest.mark.slow
def test_the_readme_set_up_command_runs_unchanged_on_4_devices(tmp_path):
    """The README's main job on a 4-device machine: backend.devices=auto takes the 1 device its
    one seed can use, says so, and adds every 8-bit pair (checked from the summary and against
    the one-device run's generalisation, which the same arithmetic must reproduce)."""
    out = app(f"hydra.run.dir={tmp_path}", devices=4)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "devices: 1 of 4 (task.seeds=1) cpu" in out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device_use"] == "1 of 4 (task.seeds=1)" and summary["devices"] == 1
    assert summary["final_accuracy"] == 1.0 and summary["eval_pairs"] == 2**14


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_give_the_one_process_run(tmp_path, corpus, one_device_charlm):
    """Two processes of one device each (jax.distributed on 127.0.0.1, CPU collectives), each
    feeding half of every batch, against the one-process, one-device run."""
    port = free_port()
    run_dir = tmp_path / "two"
    procs = [
        app(*charlm(corpus), f"hydra.run.dir={run_dir}", f"backend.distributed.coordinator=127.0.0.1:{port}",
            "backend.distributed.num_processes=2", f"backend.distributed.process_id={i}", wait=False)
        for i in range(2)
    ]  # fmt: skip
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    two, one = json.loads((run_dir / "summary.json").read_text()), one_device_charlm[0]
    assert (two["processes"], two["devices"], one["processes"], one["devices"]) == (2, 2, 1, 1)
    assert two["final_val_bpc"] == pytest.approx(one["final_val_bpc"], abs=1e-5)
    assert len(lines(run_dir)) == 5  # one set of metrics, written by process 0 alone
