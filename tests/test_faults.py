"""Runs that never lose work: two runs at once, a second process in a used directory, signals in
a long chunk, memory known before it is spent, a full disk, a diverged resume, strict JSON, and
filesystem problems reported in one line."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rnn_testing import TINY, compose

from rnn_jax.driver import checkpoint as checkpoint_module
from rnn_jax.driver.checkpoint import steps_in
from rnn_jax.driver.config import ConfigError
from rnn_jax.driver.loop import run
from rnn_jax.driver.memory import check_memory, estimate
from rnn_jax.driver.rundir import RunDirectoryError, run_lock
from rnn_jax.tasks.registry import TASKS

ROOT = Path(__file__).resolve().parents[1]
config = compose


def app(*args, cwd=ROOT, timeout=120, wait=True):
    cmd = [sys.executable, "-m", "rnn_jax.train", *args]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))


def test_two_runs_started_together_get_a_directory_each(tmp_path):
    first, second = app(*TINY, cwd=tmp_path, wait=False), app(*TINY, cwd=tmp_path, wait=False)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == second.returncode == 0, outs
    dirs = [Path(out.strip().splitlines()[-1].removeprefix("results in ")) for out, _ in outs]
    assert dirs[0] != dirs[1] and all(d.is_relative_to(tmp_path / "experiments" / "runs") for d in dirs)
    for d in dirs:
        assert strict_json((d / "summary.json").read_text())["steps"] == 40
        assert [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()] == [20, 40]


def test_a_second_live_process_in_a_run_directory_is_refused(tmp_path):
    with run_lock(tmp_path):  # as another process holding it would
        with pytest.raises(RunDirectoryError, match=f"{tmp_path} is in use by process {os.getpid()}"):
            run(config(*TINY), tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_sigterm_in_a_long_chunk_is_acted_on_within_seconds(tmp_path):
    """A chunk of 100,000 steps would take minutes; SIGTERM must not wait for its end."""
    corpus = tmp_path / "text.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    run_dir = tmp_path / "run"
    proc = app("experiment=charlm_tiny", f"task.corpus={corpus}", "train.steps=100000", "train.log_every=100000",
               "task.eval_every=100000", "train.progress=false", f"hydra.run.dir={run_dir}", wait=False)  # fmt: skip
    deadline = time.time() + 90
    while (
        time.time() < deadline
        and not steps_in(run_dir / "checkpoints" / "last")
        and not (run_dir / "train.log").exists()
    ):
        time.sleep(0.2)
    time.sleep(4)  # compiled and well into the long chunk
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert time.time() - sent < 10 and proc.returncode == 143
    summary = strict_json((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 0
    assert steps_in(run_dir / "checkpoints" / "last") == [0]  # the state it had, saved


def test_a_run_too_large_for_memory_is_refused_at_once():
    cfg = config("task.bits=100000")
    t0 = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=r"task\.eval_samples=65536 is not allowed; this run would need about [\d.]+ GB "
        r"\(the evaluation set: [\d.]+ GB\)",
    ) as info:
        run(cfg, "/nonexistent/never-made")
    assert time.perf_counter() - t0 < 10 and "lower task.eval_samples" in str(info.value)
    with pytest.raises(ConfigError, match="model.hidden"):  # the largest part of a small run is its parameters
        check_memory(
            config("model.hidden=4096"),
            {("parameters and optimizer state", "model.hidden"): 10 * 2**30},
            available=2**30,
        )


class FakeAccelerator:
    """A GPU as `check_memory` sees it: 3 GB in its limit, 1 GB of it in use."""

    platform, id, device_kind = "gpu", 0, "Fake H100"

    def memory_stats(self):
        return {"bytes_limit": 3 * 2**30, "bytes_in_use": 2**30}


def test_on_an_accelerator_the_estimate_is_checked_against_the_devices_memory(monkeypatch):
    """5 GB of parameters: the host (monkeypatched to 1 TB free) would take it; the device's
    3 GB limit less 1 GB in use refuses it, and the message names that 2.0 GB and the device."""
    monkeypatch.setattr("rnn_jax.driver.memory.available_bytes", lambda: 2**40)
    parts = {("parameters and optimizer state", "model.hidden"): 5 * 2**30}
    cfg = config("model.hidden=4096")
    assert check_memory(cfg, parts) == estimate(parts)  # the host alone: accepted
    with pytest.raises(ConfigError, match=r"model\.hidden.* and 2\.0 GB is free on gpu:0 \(Fake H100\); lower"):
        check_memory(cfg, parts, device=FakeAccelerator())
    cpu = type("Cpu", (), {"platform": "cpu"})()
    assert check_memory(cfg, parts, device=cpu) == estimate(parts)  # a CPU device: the host's figure


MEASURE = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "rnn_jax.train", *sys.argv[1:]], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


@pytest.mark.slow
def test_the_memory_estimate_is_within_a_factor_of_2_of_the_peak(tmp_path):
    """Where the evaluation set dominates (600-bit sums): the estimate against the peak resident
    memory of the run's process, compiled as a user's run is (not with the tests' cheap flags)."""
    overrides = [
        "task.bits=600",
        "train.steps=10",
        "train.log_every=10",
        "train.progress=false",
        "task.generalization_bits=[16]",
        "task.carry_chain_lengths=[]",
        "task.long_random_bits=[]",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *overrides, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    peak = int(out.stdout.split()[-1])
    cfg = config(*overrides)
    estimated = estimate(TASKS["addition"].memory(cfg))
    assert peak / 2 <= estimated <= 2 * peak, (estimated, peak)


def test_a_full_disk_during_a_save_keeps_the_checkpoint_before(tmp_path, monkeypatch):
    run(config(*TINY), tmp_path)  # checkpoints/last/40
    import orbax.checkpoint as ocp

    def no_space(self, step, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", no_space)
    (tmp_path / "summary.json").unlink()
    with pytest.raises(
        OSError,
        match=r"saving checkpoint step 80 failed \(No space left on device\); the steps saved before are intact: 40",
    ):
        run(config(*TINY, "train.steps=80"), tmp_path)
    monkeypatch.undo()
    assert steps_in(tmp_path / "checkpoints" / "last") == [40]
    state, meta = checkpoint_module.load(tmp_path)
    assert meta["step"] == 40


def test_a_diverging_resume_never_replaces_the_good_checkpoint(tmp_path):
    """Resumed with a learning rate that blows up, a run stops at the first non-finite loss,
    failed, and its checkpoint stays the good one it resumed from; everything it wrote is strict
    JSON; resumed again with the old rate, it goes on from that good state."""
    diverges = ["model.activation=relu", "optim=sgd"]  # plain steps of 1e30 on unbounded units overflow
    run(config(*TINY, *diverges), tmp_path)
    before = steps_in(tmp_path / "checkpoints" / "last")
    (tmp_path / "summary.json").unlink()
    summary = run(
        config(*TINY, *diverges, "train.steps=80", "optim.lr=1e30", "train.resume_changes=allow"),
        tmp_path,
    )
    assert (
        summary["status"] == "failed"
        and summary["steps"] == 60
        and summary["error"] == "loss became NaN or Inf at step 60"
    )
    assert summary["last_finite"]["step"] == 40 and summary["final_accuracy"] == 0.0
    assert steps_in(tmp_path / "checkpoints" / "last") == before  # the diverged state was never saved
    for path in [tmp_path / "summary.json", *tmp_path.glob("checkpoints/*/*/meta/metadata")]:
        strict_json(path.read_text())
    lines = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [20, 40, 60] and lines[-1]["loss"] is None
    (tmp_path / "summary.json").unlink()
    again = run(config(*TINY, *diverges, "train.steps=80"), tmp_path)
    assert again["status"] == "ok" and again["resumed_from"].endswith("last/40") and again["steps_this_run"] == 40


@pytest.mark.parametrize("case", ["run dir under /proc", "a file where a directory goes", "train.log is a directory"])
def test_filesystem_problems_are_one_line_with_exit_2(tmp_path, case, app_in_process):
    if case == "run dir under /proc":
        args, path = ["hydra.run.dir=/proc/rnn_jax_run"], "/proc/rnn_jax_run"
    elif case == "a file where a directory goes":
        (tmp_path / "file").write_text("x")
        args, path = [f"hydra.run.dir={tmp_path / 'file' / 'run'}"], str(tmp_path / "file")
    else:
        (tmp_path / "run" / "train.log").mkdir(parents=True)
        args, path = [f"hydra.run.dir={tmp_path / 'run'}"], str(tmp_path / "run" / "train.log")
    out = (app if case == "train.log is a directory" else app_in_process)(
        *TINY, *args
    )  # Hydra's logging setup: a real command line
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and "Traceback" not in out.stderr


def test_an_unwritable_compilation_cache_is_a_warning(tmp_path, app_in_process):
    (tmp_path / "cache").write_text("a file, not a directory")
    out = app_in_process(*TINY, f"backend.compilation_cache={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr
    assert (
        f"warning: backend.compilation_cache={tmp_path / 'cache'}:" in out.stderr and "running without it" in out.stderr
    )


def test_report_errors_on_the_filesystem_are_one_line(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / "summary.json").write_text(
        json.dumps(
            {
                "status": "failed",
                "task": "addition",
                "error": "x",
                "config": {"task": {"name": "addition", "bits": 4}, "model": {"cell": "lstm", "hidden": 2}},
            }
        )
    )
    (sweep / "report.md").mkdir()  # cannot be written as a file
    from rnn_jax.apps.report import main

    assert main([str(sweep)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {sweep / 'report.md'}: Is a directory"]
