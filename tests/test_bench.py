"""The benchmark app: composed through Hydra's compose API at tiny sizes into `tmp_path`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rnn_jax.apps import bench, bench_grid, bench_table, bench_timing, bench_torch

CONF = str(Path(__file__).resolve().parents[1] / "conf" / "bench")
RECORD_FIELDS = {
    "implementation", "cell", "mode", "batch", "seq_len", "hidden", "input", "dtype", "unroll", "unroll_requested",
    "median_ms", "p10_ms", "p90_ms", "steps", "tokens_per_s", "compile_s", "device_kind", "backend", "versions",
}  # fmt: skip


def compose_cfg(*overrides) -> bench_grid.BenchConfig:
    bench.register_configs()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return OmegaConf.to_object(compose(config_name="bench", overrides=list(overrides)))


@pytest.mark.slow
def test_bench_runs_end_to_end_and_writes_every_field(tmp_path):
    cfg = compose_cfg(
        "preset=tiny", "cells=[gru]", "dtype=[float32]", "implementations=[rnn_jax,flax,flax_optimized,torch]"
    )
    assert isinstance(cfg, bench_grid.BenchConfig)
    bench.run(cfg, tmp_path)
    result = json.loads((tmp_path / "bench.json").read_text())
    records = result["records"]
    measured = {(r["implementation"], r["mode"], r["dtype"]) for r in records}
    has_torch = bench_torch.torch_version() is not None
    for impl in cfg.implementations:
        for mode in cfg.modes:
            for dtype in cfg.dtype:
                expected = not (impl == "flax_optimized" or (impl == "torch" and (dtype != "float32" or not has_torch)))
                assert ((impl, mode, dtype) in measured) == expected, (impl, mode, dtype)
    for r in records:
        assert set(r) == RECORD_FIELDS
        assert r["steps"] == cfg.steps and r["median_ms"] > 0
        assert r["backend"] == "cpu" and r["versions"]["jax"]
        assert (r["compile_s"] is None) == (r["implementation"] == "torch")
    # The defaults resolve per backend: rnn_jax's row says which unroll it ran with.
    from rnn_jax import fused

    plan = fused.resolve("auto", None, backend="cpu")
    assert {r["unroll"] for r in records if r["implementation"] == "rnn_jax"} == {plan.unroll}
    table = (tmp_path / "bench.md").read_text()
    assert table.count("\n| gru |") == len(records)
    assert "Skipped flax_optimized" in table


def test_a_record_summarises_the_measured_times():
    """Ten calls of 1..10 ms: median 5.5 ms, 10th and 90th percentiles 1.9 and 9.1 ms (linear
    interpolation between order statistics), 32 x 128 tokens per 5.5 ms."""
    p = bench_grid.Point("lstm", "train", 32, 128, 8, 4, "float32", 0)
    env = {"device_kind": "cpu", "backend": "cpu", "versions": {"jax": "x"}}
    r = bench_timing.record(
        p, "rnn_jax", bench_grid.Runner(None, 0.5, 1), [k / 1000 for k in (3, 1, 2, 10, 4, 5, 9, 6, 8, 7)], env
    )
    assert (
        r["median_ms"] == pytest.approx(5.5) and r["p10_ms"] == pytest.approx(1.9) and r["p90_ms"] == pytest.approx(9.1)
    )
    assert r["tokens_per_s"] == pytest.approx(4096 / 0.0055) and r["steps"] == 10
    assert (r["unroll"], r["unroll_requested"], r["compile_s"]) == (1, 0, 0.5)


def test_ratios_compare_against_the_baselines_at_the_same_point():
    def rec(impl, ms, dtype="float32", unroll=0):
        return dict(
            implementation=impl,
            cell="lstm",
            mode="train",
            batch=1,
            seq_len=2,
            hidden=3,
            input=4,
            dtype=dtype,
            unroll_requested=unroll,
            median_ms=ms,
        )

    records = [
        rec("torch", 100.0),
        rec("flax", 150.0),
        rec("rnn_jax", 50.0),
        rec("rnn_jax", 40.0, "bfloat16"),
        rec("rnn_jax", 75.0, unroll=4),
    ]
    got = bench_table.ratios(records)
    assert got[2] == {"torch": 2.0, "flax": 3.0}
    assert got[3] == {"torch": None, "flax": None}  # no baseline measured in bf16
    assert got[4] == {"torch": 100.0 / 75.0, "flax": None}  # flax's ratio only at its own unroll


@pytest.mark.parametrize(
    "override, words",
    [
        ("implementations=[rnn_jax,cudnn]", "implementations: 'cudnn' is not allowed; allowed: rnn_jax"),
        ("cells=[elman]", "cells: 'elman' is not allowed; allowed: lstm, gru"),
        ("hidden=[0]", "hidden=[0] is not allowed"),
        ("dtype=[float16]", "dtype: 'float16' is not allowed; allowed: float32, bfloat16"),
        ("unroll=[-1]", "unroll=[-1] is not allowed"),
        ("rounds=-1", "rounds=-1 is not allowed; must be >= 0"),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(override, words):
    with pytest.raises(bench_grid.BenchError, match=words.replace("[", r"\[").replace("]", r"\]")):
        bench_grid.validate(compose_cfg(override))


def test_typos_and_wrong_types_fail_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("stepz=3")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("hidden=[big]")


def test_the_entry_point_prints_one_line_for_a_bad_value(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rnn_jax.apps.bench", "implementations=[nope]", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: implementations: 'nope' is not allowed; allowed: " + ", ".join(bench_grid.IMPLEMENTATIONS)
    ]


def test_pytorch_threads_sleep_instead_of_spinning_in_a_fresh_process():
    """OMP_WAIT_POLICY must be PASSIVE before torch loads, or its idle threads spin against XLA's."""
    pytest.importorskip("torch")
    code = "from rnn_jax.apps import bench_timing as b; import json; print(json.dumps(b.environment()))"
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=True
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["omp_wait_policy"] == "PASSIVE" and got["torch_threads"] >= 1


@pytest.mark.parametrize("rounds, order", [(0, "ababab"), (3, "ababab"), (1, "aaabbb")])
def test_rounds_interleave_the_implementations(rounds, order):
    calls = []
    runners = {name: bench_grid.Runner(lambda name=name: calls.append(name), None, None) for name in "ab"}
    times = bench_timing.time_interleaved(runners, bench_grid.BenchConfig(warmup=0, steps=3, rounds=rounds))
    assert "".join(calls) == order and {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
