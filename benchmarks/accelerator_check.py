"""The accelerator check: what to measure the first time rnn_jax gets a GPU, in one command.

    python -m benchmarks.accelerator_check --out experiments/accelerator_check   # one GPU, ~8 min
    python -m benchmarks.accelerator_check --quick --out /tmp/acc                # CPU, ~1 min (CI runs it)

Each step is a real command line in its own process with its own time limit; a step that fails or
runs out of time is a row of the table (status, seconds, the tail of its output), never the end of
the check. The steps: (a) the device tests (cells, fused backward, softmax, unroll) on the default
JAX backend, (b) the LSTM/GRU training step of `python -m rnn_jax.bench` (fused against autodiff
backward over unroll 1, 2, 4, 8, `preset=unroll`) at three shapes, (c) two capacity-sweep jobs with
`backend=gpu`, under the basic and the fused launcher (`hydra/launcher=fused`, one family),
(d) `python -m rnn_jax.bench_scaling` on one device. Writes `check.md` and
`check.json` under `--out`, the step outputs beside them, and prints the table and, from the bench
rows, the entry that would replace `rnn_jax.fused.BACKEND_DEFAULTS["gpu"]`.

What it cannot show: the bench's `torch` row runs on the CPU (rnn_jax/apps/bench_torch.py does not
place PyTorch on CUDA), so no cuDNN figure comes from here; `--torch` adds that CPU row anyway.
`--quick` checks the check itself (every step on the CPU, tiny shapes), not any figure.

Imported by pytest as a plugin (`-p benchmarks.accelerator_check`) in step (a): importing JAX
before tests/conftest.py sets `JAX_PLATFORMS=cpu` keeps the tests on the default backend (JAX
reads the variable once, at import), and the report header names that backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import jax  # before tests/conftest.py, see above

TEST_FILES = ["tests/test_cells.py", "tests/test_fused.py", "tests/test_softmax.py", "tests/test_unroll.py"]
SHAPES = [(64, 256, 512, 64), (256, 128, 1024, 256), (8, 1024, 256, 64)]  # B, T, H, I
QUICK_SHAPES = [(2, 4, 8, 3)]


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"jax backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")


class Step(NamedTuple):
    name: str
    argv: list  # run with sys.executable
    timeout_s: float
    summarise: Callable[[str, Path], str]  # (output, the step's directory) -> one line


class Result(NamedTuple):
    step: str
    status: str  # "ok", "failed" (exit status), "timeout", "error" (could not start or summarise)
    seconds: float
    summary: str
    command: str


def summarise_pytest(output: str, _: Path) -> str:
    backend = re.search(r"jax backend: .*", output)
    counts = re.findall(r"\d+ (?:passed|failed|error|errors|skipped)", output)
    return f"{', '.join(counts) or 'no result line'}; {backend.group(0) if backend else 'backend unknown'}"


def summarise_bench(_: str, run_dir: Path) -> str:
    records = json.loads((run_dir / "bench.json").read_text())["records"]
    best = {}
    for r in records:
        key = r["cell"]
        if key not in best or r["median_ms"] < best[key]["median_ms"]:
            best[key] = r
    return "; ".join(
        f"{c}: {r['implementation']} unroll {r['unroll']} {r['median_ms']:.2f} ms" for c, r in best.items()
    )


def summarise_sweep(_: str, sweep_dir: Path) -> str:
    summaries = sorted(sweep_dir.rglob("summary.json"))
    return f"{len(summaries)} jobs wrote summary.json"


def summarise_scaling(_: str, out: Path) -> str:
    rows = json.loads((out / "scaling.json").read_text())
    return "; ".join(f"{r['run']}: {r['seeds_per_second']:.0f} seed-steps/s" for r in rows)


def steps(out: Path, quick: bool, torch: bool = False) -> list[Step]:
    """The check's steps, writing under `out`; `quick` shrinks every one to seconds on the CPU."""
    tests = [*TEST_FILES[-2:], "-k", "reverse_equals_forward or large_logits"] if quick else TEST_FILES
    result = [
        Step(
            "tests",
            ["-m", "pytest", "-q", "-n", "0", "-p", "benchmarks.accelerator_check", *tests],
            60 if quick else 125,
            summarise_pytest,
        )
    ]
    implementations = ["rnn_jax", "rnn_jax_fused", "rnn_jax_autodiff"] + (["torch"] if torch else [])
    for b, t, h, i in QUICK_SHAPES if quick else SHAPES:
        name = f"bench B{b} T{t} H{h} I{i}"
        run_dir = out / name.replace(" ", "_")
        grid = [f"batch=[{b}]", f"seq_len=[{t}]", f"hidden=[{h}]", f"input=[{i}]"]
        timing = (
            ["cells=[lstm]", "unroll=[1]", "preset=tiny", "modes=[train]"]
            if quick
            else ["cells=[lstm,gru]", "warmup=2", "steps=10"]
        )
        argv = [
            "-m",
            "rnn_jax.bench",
            "preset=unroll",
            *timing,
            *grid,
            f"implementations=[{','.join(implementations)}]",
        ]
        result.append(
            Step(name, [*argv, "progress=false", f"hydra.run.dir={run_dir}"], 60 if quick else 75, summarise_bench)
        )
    size = ["train.steps=10", "train.log_every=5", "task.eval_samples=64", "task.seeds=2", "backend=cpu"]
    fused = ["hydra/launcher=fused", "hydra.launcher.max_padding=inf", "hydra.launcher.max_length_padding=inf"]
    # Quick mode runs the fused launcher only (the basic one runs in many tests), within the time CI has.
    for name, launcher in [("basic", []), ("fused", fused)][1 if quick else 0 :]:
        sweep_dir = out / f"sweep_{name}"
        result.append(
            Step(
                f"capacity sweep, 2 jobs, {name} launcher",
                ["-m", "rnn_jax.train", "-m", "sweep=capacity", "task.bits=8", "model.hidden=4,16", "model=lstm",
                 *launcher, *(size if quick else ["train.steps=300", "backend=gpu"]), f"hydra.sweep.dir={sweep_dir}"],
                60 if quick else 40,
                lambda output, _, sweep_dir=sweep_dir: summarise_sweep(output, sweep_dir),
            )
        )  # fmt: skip
    scaling = ["--seeds", "2", "--steps", "10"] if quick else ["--seeds", "8", "--steps", "300"]
    result.append(
        Step(
            "bench_scaling, 1 device",
            ["-m", "rnn_jax.bench_scaling", *scaling, "--devices", "1", "--out", str(out / "scaling.json")],
            90 if quick else 50,
            lambda output, _: summarise_scaling(output, out),
        )
    )
    return result


def run_step(step: Step, out: Path, env: dict) -> Result:
    """Runs one step in its own process; any failure becomes the row's status, never an exception."""
    run_dir = out / step.name.replace(" ", "_").replace(",", "")
    command = " ".join(["python", *step.argv])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, *step.argv], capture_output=True, text=True, timeout=step.timeout_s, env=env
        )
    except subprocess.TimeoutExpired:
        return Result(step.name, "timeout", time.perf_counter() - t0, f"over {step.timeout_s:g} s", command)
    except OSError as e:
        return Result(step.name, "error", time.perf_counter() - t0, str(e), command)
    seconds = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "output.txt").write_text(output)
    for arg in step.argv:  # the bench writes into hydra.run.dir
        if arg.startswith("hydra.run.dir="):
            run_dir = Path(arg.split("=", 1)[1])
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-1:] or [""]
        return Result(step.name, "failed", seconds, f"exit {proc.returncode}: {tail[0][:200]}", command)
    try:
        return Result(step.name, "ok", seconds, step.summarise(output, run_dir), command)
    except Exception as e:  # the command ran but left no readable result
        return Result(step.name, "error", seconds, f"{type(e).__name__}: {e}", command)


def markdown(results: list[Result], header: str) -> str:
    lines = [header, "", "| step | status | seconds | summary |", "|---|---|---|---|"]
    lines += [f"| {r.step} | {r.status} | {r.seconds:.1f} | {r.summary} |" for r in results]
    return "\n".join(lines) + "\n"


def defaults_from_bench(records: list[dict]) -> Optional[dict]:
    """The `Defaults` fields the bench rows favour: for each backward ("fused", "autodiff") the
    unroll with the least geometric mean of the training step's median time over every (cell,
    shape) measured at all its unrolls, and the backward whose best unroll is the faster. `hoist`
    is not measured by these rows and is left out. None without both backwards' rows."""
    times = {}  # (backward, unroll) -> {(cell, shape): ms}
    for r in records:
        backward = {"rnn_jax_fused": "fused", "rnn_jax_autodiff": "autodiff"}.get(r["implementation"])
        if backward is not None and r["mode"] == "train":
            key = (r["cell"], r["batch"], r["seq_len"], r["hidden"], r["input"], r["dtype"])
            times.setdefault((backward, r["unroll"]), {})[key] = r["median_ms"]
    common = set.intersection(*(set(v) for v in times.values())) if times else set()
    if not common:
        return None
    score = {k: math.exp(sum(math.log(v[c]) for c in common) / len(common)) for k, v in times.items()}
    best = {}
    for (backward, unroll), ms in score.items():
        if backward not in best or ms < best[backward][1]:
            best[backward] = (unroll, ms)
    if set(best) != {"fused", "autodiff"}:
        return None
    return {
        "backward": min(best, key=lambda b: best[b][1]),
        "fused_unroll": best["fused"][0],
        "autodiff_unroll": best["autodiff"][0],
        "geomean_ms": {f"{b} unroll {u}": round(ms, 3) for (b, u), ms in sorted(score.items())},
        "points": len(common),
    }


def defaults_markdown(found: Optional[dict], platform: str) -> str:
    if found is None:
        return "No replacement for BACKEND_DEFAULTS: the bench rows lack both backwards at a common point.\n"
    lines = [f"Replacement for rnn_jax.fused.BACKEND_DEFAULTS[{platform!r}] (hoist: keep; not measured here):", ""]
    lines.append(
        f'    "{platform}": Defaults("{found["backward"]}", '
        f"{found['fused_unroll']}, {found['autodiff_unroll']}, <hoist>),"
    )
    lines += ["", f"| backward, unroll | geometric mean ms over {found['points']} points |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in found["geomean_ms"].items()]
    return "\n".join(lines) + "\n"


def bench_records(out: Path) -> list[dict]:
    return [r for path in sorted(out.glob("bench_*/bench.json")) for r in json.loads(path.read_text())["records"]]


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for check.md, check.json, step outputs")
    parser.add_argument("--quick", action="store_true", help="every step tiny, on the CPU (checks the check)")
    parser.add_argument("--torch", action="store_true", help="add the bench's torch row (PyTorch on the CPU)")
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every step is ok (CI: .ci/run)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    if args.quick:
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.pop("JAX_PLATFORMS", None)
    results = []
    for step in steps(out, args.quick, args.torch):
        print(f"{step.name} ...", file=sys.stderr, flush=True)
        results.append(run_step(step, out, env))
    platform = "cpu" if args.quick else "gpu"
    header = (
        f"Accelerator check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"command: python -m benchmarks.accelerator_check {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    table = markdown(results, header)
    found = defaults_from_bench(bench_records(out))
    table += "\n" + defaults_markdown(found, platform)
    (out / "check.md").write_text(table)
    record = {"header": header, "steps": [r._asdict() for r in results], "defaults": found, "platform": platform}
    (out / "check.json").write_text(json.dumps(record, indent=1))
    print(table)
    if args.strict and any(r.status != "ok" for r in results):
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
