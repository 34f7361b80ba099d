"""The benchmark's table (`bench.md`): every record, with its speed against the baselines measured
at the same point."""

from __future__ import annotations

from typing import Optional

from rnn_jax.apps.bench_grid import BASELINES


def _key(r: dict) -> tuple:
    return (r["cell"], r["mode"], r["batch"], r["seq_len"], r["hidden"], r["input"], r["dtype"])


def ratios(records: list[dict]) -> list[dict[str, Optional[float]]]:
    """For each record, `baseline median / this median` against each of `BASELINES` measured at the
    same point (the same requested unroll for Flax; torch has none). Above 1: faster than it."""
    base = {}
    for r in records:
        if r["implementation"] in BASELINES:
            unroll = None if r["implementation"] == "torch" else r["unroll_requested"]
            base[(r["implementation"], _key(r), unroll)] = r["median_ms"]
    out = []
    for r in records:
        row = {}
        for b in BASELINES:
            ms = base.get((b, _key(r), None if b == "torch" else r["unroll_requested"]))
            row[b] = None if ms is None else ms / r["median_ms"]
        out.append(row)
    return out


def markdown(result: dict) -> str:
    env = result["environment"]
    v = env["versions"]
    lines = [
        f"Device: {env['device_kind']} ({env['backend']}, {env['cpu_count']} CPUs); "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + (f"; XLA_FLAGS={env['xla_flags']}" if env["xla_flags"] else "")
        + (
            f"; torch threads {env['torch_threads']}, OMP_WAIT_POLICY={env['omp_wait_policy']}"
            if env["torch_threads"]
            else ""
        ),
        "",
        "| cell | mode | B | T | H | I | dtype | implementation | unroll "
        "| median ms | p10–p90 ms | tokens/s | compile s | × torch | × flax |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    for r, q in zip(result["records"], ratios(result["records"])):
        lines.append(
            f"| {r['cell']} | {r['mode']} | {r['batch']} | {r['seq_len']} | {r['hidden']} | {r['input']} "
            f"| {r['dtype']} | {r['implementation']} | {fmt(r['unroll'], 'd')} | {r['median_ms']:.1f} "
            f"| {r['p10_ms']:.1f}–{r['p90_ms']:.1f} | {r['tokens_per_s']:,.0f} | {fmt(r['compile_s'], '.2f')} "
            f"| {fmt(q['torch'], '.2f')} | {fmt(q['flax'], '.2f')} |"
        )
    for s in result["skipped"]:
        where = f" at {s['cell']} {s['mode']} {s['dtype']}" if "cell" in s else ""
        lines.append(f"\nSkipped {s['implementation']}{where}: {s['reason']}.")
    lines.append(
        "\n× torch, × flax: the baseline's median over this row's, at the same shape and dtype (above 1: faster)."
    )
    return "\n".join(lines) + "\n"
