"""Benchmark: a capacity-sweep job on 1, 2 and 4 devices and on two processes, seeds per second.

    python -m rnn_jax.bench_scaling [--seeds 8] [--steps 300] [--devices 1 2 4] [--out scaling.json]

Each row is a real `python -m rnn_jax.train` run in its own process (XLA's host platform split
into N devices with `--xla_force_host_platform_device_count`; the two-process row runs
`jax.distributed` on 127.0.0.1), timed by the run's own `train_seconds`; the ratio is to the
one-device row of the same invocation. On a CPU the "devices" share the same cores, so the
table shows that the runs agree and what splitting costs, not a speed-up; on a machine with
several accelerators the same command measures the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

JOB = ["task.bits=8", "model.hidden=16", "model=lstm", "task.batch_size=64", "train.log_every=100",
       "task.stop_when_solved=false", "train.progress=false", "task.eval_samples=4096",
       "task.generalization_samples=512"]  # fmt: skip


def train(args: list[str], devices: int, env: dict | None = None, wait: bool = True):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
    cmd = [sys.executable, "-m", "rnn_jax.train", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def row(label: str, run_dir: Path, seeds: int, steps: int) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {"run": label, "devices": s["devices"], "processes": s["processes"], "device_kind": s["device_kind"],
            "train_seconds": s["train_seconds"], "seeds_per_second": seeds * steps / s["train_seconds"],
            "success_rate": s["success_rate"], "final_accuracy": s["final_accuracy"]}  # fmt: skip


def bench(seeds: int, steps: int, devices: list[int]) -> list[dict]:
    rows, root = [], Path(tempfile.mkdtemp(prefix="rnn_jax_scaling_"))
    job = [*JOB, f"task.seeds={seeds}", f"train.steps={steps}", "backend.compilation_cache=null"]
    for n in devices:
        train([*job, f"hydra.run.dir={root / f'd{n}'}"], n)
        rows.append(row(f"{n} device(s), 1 process", root / f"d{n}", seeds, steps))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [train([*job, f"hydra.run.dir={root / 'p2'}", f"backend.distributed.coordinator=127.0.0.1:{port}",
                    "backend.distributed.num_processes=2", f"backend.distributed.process_id={i}"], 1, wait=False)
             for i in range(2)]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=1200)
        if p.returncode:
            raise RuntimeError(f"the two-process run failed: {err[-2000:]}")
    rows.append(row("2 processes x 1 device", root / "p2", seeds, steps))
    base = rows[0]["seeds_per_second"]
    for r in rows:
        r["ratio_to_one_device"] = r["seeds_per_second"] / base
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = bench(args.seeds, args.steps, args.devices)
    print("| run | devices | processes | seed-steps/s | ratio to 1 device | success rate |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['devices']} | {r['processes']} | {r['seeds_per_second']:.0f} "
            f"| {r['ratio_to_one_device']:.2f} | {r['success_rate']:.3f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
