"""benchmarks/accelerator_check.py without an accelerator: the table gets a row with a status per
step whatever each step does (succeeds, fails, runs out of time), and the BACKEND_DEFAULTS
replacement is the backward and unroll with the least geometric-mean time, worked out by hand."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is a folder of scripts, not installed
from benchmarks import accelerator_check as check  # noqa: E402

REAL_STEPS = check.steps
PRINT_AND_EXIT = "import sys; print('done 3 rows'); sys.exit(int(sys.argv[1]))"


def cheap_steps(out, quick, torch=False):
    """Real processes that cost no JAX: one succeeds, one fails, one runs past its limit; and the
    check's own first bench step with a limit too short for it."""
    bench = [s for s in REAL_STEPS(out, quick=True) if s.name.startswith("bench")][0]
    return [
        check.Step("passes", ["-c", PRINT_AND_EXIT, "0"], 30, lambda output, _: output.split()[1] + " rows"),
        check.Step("fails", ["-c", PRINT_AND_EXIT, "3"], 30, lambda output, _: "unused"),
        check.Step("sleeps", ["-c", "import time; time.sleep(30)"], 0.3, lambda output, _: "unused"),
        check.Step("summary raises", ["-c", "pass"], 30, lambda output, _: {}["missing"]),
        bench._replace(timeout_s=0.3),
    ]


def test_every_step_is_a_row_with_its_status_in_the_table_and_the_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "steps", cheap_steps)
    check.main(["--quick", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "check.json").read_text())
    rows = {r["step"]: r for r in record["steps"]}
    assert [(name, r["status"]) for name, r in rows.items()] == [
        ("passes", "ok"),
        ("fails", "failed"),
        ("sleeps", "timeout"),
        ("summary raises", "error"),
        ("bench B2 T4 H8 I3", "timeout"),
    ]
    assert rows["passes"]["summary"] == "3 rows" and rows["fails"]["summary"] == "exit 3: done 3 rows"
    assert rows["sleeps"]["seconds"] < 10 and "KeyError" in rows["summary raises"]["summary"]
    assert "rnn_jax.bench" in rows["bench B2 T4 H8 I3"]["command"]
    table = (tmp_path / "check.md").read_text()
    assert "| fails | failed |" in table and "| sleeps | timeout |" in table
    assert "No replacement for BACKEND_DEFAULTS" in table and record["defaults"] is None
    assert table in capsys.readouterr().out
    monkeypatch.setattr(check, "steps", lambda out, quick, torch=False: cheap_steps(out, quick)[:2])
    with pytest.raises(SystemExit) as exit_:  # CI's --strict: a step that is not ok fails the check
        check.main(["--quick", "--strict", "--out", str(tmp_path / "strict")])
    assert exit_.value.code == 1


def bench_row(implementation, unroll, cell, batch, ms):
    return dict(implementation=implementation, unroll=unroll, cell=cell, mode="train", batch=batch,
                seq_len=4, hidden=8, input=3, dtype="float32", median_ms=ms)  # fmt: skip


def test_the_defaults_are_the_least_geometric_mean_over_the_points_measured_at_every_unroll():
    # fused: unroll 1 wins at one point (2 ms), unroll 8 over both: sqrt(4*3) < sqrt(2*8)
    rows = [
        bench_row("rnn_jax_fused", 1, "lstm", 64, 2.0),
        bench_row("rnn_jax_fused", 1, "gru", 64, 8.0),
        bench_row("rnn_jax_fused", 8, "lstm", 64, 4.0),
        bench_row("rnn_jax_fused", 8, "gru", 64, 3.0),
        bench_row("rnn_jax_autodiff", 1, "lstm", 64, 5.0),
        bench_row("rnn_jax_autodiff", 1, "gru", 64, 5.0),
        bench_row("rnn_jax_autodiff", 2, "lstm", 64, 6.0),
        bench_row("rnn_jax_autodiff", 2, "gru", 64, 6.0),
        bench_row("rnn_jax_autodiff", 2, "gru", 256, 0.1),  # measured at one unroll only: left out
        bench_row("torch", 0, "lstm", 64, 0.01),  # not a backward of rnn_jax
        {**bench_row("rnn_jax_fused", 1, "lstm", 64, 0.01), "mode": "forward"},
    ]
    found = check.defaults_from_bench(rows)
    assert (found["backward"], found["fused_unroll"], found["autodiff_unroll"], found["points"]) == ("fused", 8, 1, 2)
    assert found["geomean_ms"]["fused unroll 8"] == pytest.approx(math.sqrt(12), abs=1e-3)
    assert 'Defaults("fused", 8, 1, <hoist>)' in check.defaults_markdown(found, "gpu")
    slower_fused = [{**r, "median_ms": 10 * r["median_ms"]} if "fused" in r["implementation"] else r for r in rows]
    assert check.defaults_from_bench(slower_fused)["backward"] == "autodiff"  # sqrt(12)*10 > 5
    assert check.defaults_from_bench([r for r in rows if "fused" in r["implementation"]]) is None


def test_the_full_check_runs_the_device_tests_and_the_three_bench_shapes_on_the_default_backend(tmp_path):
    full = check.steps(tmp_path, quick=False)
    assert [s.name for s in full][:4] == ["tests", "bench B64 T256 H512 I64", "bench B256 T128 H1024 I256",
                                          "bench B8 T1024 H256 I64"]  # fmt: skip
    assert all(f in full[0].argv for f in check.TEST_FILES) and "backend=gpu" in full[4].argv
    assert sum(s.timeout_s for s in full) <= 8 * 60  # the check fits in 8 minutes
