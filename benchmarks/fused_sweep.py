"""A sweep under the basic and the fused launcher, cold and warm, in one command.

    python -m benchmarks.fused_sweep [--out DIR] [--sweep capacity] [--skip-warm] [override ...]

Each run is `python -m rnn_jax.train -m sweep=<sweep> [hydra/launcher=fused] [overrides]` in its
own process and its own sweep directory under `--out`. Cold: an empty persistent compilation
cache (`backend.compilation_cache`) of its own; warm: the same sweep again into a new directory
with the cache the cold run filled. Prints, and writes to `<out>/fused_sweep.json`: the wall
seconds of each run, the programs each cold run compiled (the entries it added to its cache),
the fused/basic ratios, and per (cell, bits, hidden) each launcher's success rate over its
seeds with the difference (float32 runs differ by rounding, so seeds may differ).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LAUNCHERS = {"basic": [], "fused": ["hydra/launcher=fused"]}


def run_sweep(out: Path, name: str, sweep: str, launcher: str, cache: Path, overrides: list[str]) -> dict:
    """One sweep in a subprocess; its wall seconds and how it ended."""
    sweep_dir = out / name
    command = [
        sys.executable,
        "-m",
        "rnn_jax.train",
        "-m",
        f"sweep={sweep}",
        *LAUNCHERS[launcher],
        f"hydra.sweep.dir={sweep_dir}",
        f"backend.compilation_cache={cache}",
        *overrides,
    ]
    before = len(list(cache.glob("*"))) if cache.exists() else 0
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    programs = len(list(cache.glob("*"))) - before
    print(f"{name}: {seconds:.1f} s, exit {done.returncode}, {programs} programs compiled", flush=True)
    return {"seconds": seconds, "returncode": done.returncode, "programs_compiled": programs, "dir": str(sweep_dir)}


def success_rates(sweep_dir: Path) -> dict[str, float]:
    """`cell/bits/hidden` -> the job's success rate, from each job's summary.json."""
    rates = {}
    for summary in Path(sweep_dir).glob("*/summary.json"):
        s = json.loads(summary.read_text())
        c = s["config"]
        rates[f"{c['model']['cell']}/{c['task']['bits']}/{c['model']['hidden']}"] = s.get("success_rate")
    return rates


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/fused_sweep"))
    parser.add_argument("--sweep", default="capacity")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty: each run needs fresh sweep directories and an empty cache")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for launcher in LAUNCHERS:
        cache = args.out / f"cache_{launcher}"
        runs[f"{launcher}_cold"] = run_sweep(args.out, f"{launcher}_cold", args.sweep, launcher, cache, args.overrides)
    if not args.skip_warm:
        for launcher in LAUNCHERS:
            cache = args.out / f"cache_{launcher}"
            name = f"{launcher}_warm"
            runs[name] = run_sweep(args.out, name, args.sweep, launcher, cache, args.overrides)
    basic, fused = success_rates(runs["basic_cold"]["dir"]), success_rates(runs["fused_cold"]["dir"])
    cells = sorted(set(basic) | set(fused), key=lambda k: (k.split("/")[0], *map(int, k.split("/")[1:])))
    table = {k: {"basic": basic.get(k), "fused": fused.get(k)} for k in cells}
    differ = {k: v for k, v in table.items() if v["basic"] != v["fused"]}
    result = {
        "command": " ".join([sys.executable, "-m", "benchmarks.fused_sweep", *(argv or sys.argv[1:])]),
        "runs": runs,
        "cold_speedup": runs["basic_cold"]["seconds"] / runs["fused_cold"]["seconds"],
        "success_rates": table,
        "jobs_whose_success_rate_differs": len(differ),
        "max_success_rate_difference": max(
            (abs(v["basic"] - v["fused"]) for v in differ.values() if None not in v.values()), default=0.0
        ),
    }
    if not args.skip_warm:
        result["warm_speedup"] = runs["basic_warm"]["seconds"] / runs["fused_warm"]["seconds"]
    print(
        f"cold: basic {runs['basic_cold']['seconds']:.1f} s, fused {runs['fused_cold']['seconds']:.1f} s: "
        f"{result['cold_speedup']:.2f}x"
    )
    if not args.skip_warm:
        print(
            f"warm: basic {runs['basic_warm']['seconds']:.1f} s, fused {runs['fused_warm']['seconds']:.1f} s: "
            f"{result['warm_speedup']:.2f}x"
        )
    print(
        f"success rate per (cell, bits, hidden): {len(cells) - len(differ)} of {len(cells)} equal; "
        f"largest difference {result['max_success_rate_difference']:.3f}"
    )
    for k, v in differ.items():
        print(f"  {k}: basic {v['basic']}, fused {v['fused']}")
    (args.out / "fused_sweep.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
