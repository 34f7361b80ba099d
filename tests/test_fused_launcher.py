"""`hydra/launcher=fused`: jobs of one shape family (hidden sizes and bit widths padded) trained
as one program equal the jobs trained alone (float64, parameters to 1e-9, the same verdicts and
stopping steps), and every job's directory is what the basic launcher writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from rnn_testing import compose

from rnn_jax.apps.fused_launcher import split_by_padding
from rnn_jax.driver import checkpoint, job_groups
from rnn_jax.driver.backend import select_backend
from rnn_jax.driver.job_groups import family, pad, unpad
from rnn_jax.driver.loop import train_and_evaluate

SWEEP = [
    "task.bits=3,4",
    "model.hidden=2,8,0",
    "task.seeds=2",
    "train.steps=240",
    "train.log_every=40",
    "train.dtype=float64",
    "optim.lr=0.05",
    "task.batch_size=32",
    "train.progress=false",
    "task.eval_samples=64",
    "task.generalization_bits=[8]",
    "task.generalization_samples=16",
    "task.carry_chain_lengths=[12]",
    "task.carry_chain_samples=2",
    "task.long_random_bits=[]",
]


def test_pad_puts_each_gate_block_beside_zero_units_and_unpad_inverts_it():
    h, H = 2, 3
    w = np.arange(1, 1 + 2 * 3 * h).reshape(1, 2, 3 * h)  # one replica, 2 inputs, 3 gates of h units
    padded = pad(w, (1, 2, 3 * H), h, H)
    expected = np.zeros((1, 2, 3, H))
    expected[..., :h] = w.reshape(1, 2, 3, h)  # by hand: gate g's unit u sits at g * H + u
    np.testing.assert_array_equal(padded, expected.reshape(1, 2, 3 * H))
    np.testing.assert_array_equal(unpad(padded, w.shape, h, H), w)
    square = np.arange(1, 1 + h * h).reshape(1, h, h)
    np.testing.assert_array_equal(pad(square, (1, H, H), h, H)[0], np.pad(square[0], ((0, 1), (0, 1))))
    with pytest.raises(ValueError, match="not 9 / 3 blocks"):
        pad(np.zeros((1, 5)), (1, 9), h, H)


def test_a_family_is_the_jobs_alike_but_in_hidden_size_bit_width_and_seed():
    from rnn_jax.build import model_config
    from rnn_jax.driver.config import Config
    from rnn_jax.driver.loggers import LoggerConfig
    from rnn_jax.driver.loggers.tensorboard import TensorBoardConfig
    from rnn_jax.driver.optim import AdamConfig
    from rnn_jax.tasks.addition.task import AdditionTask
    from rnn_jax.tasks.charlm.task import CharLMTask

    def job(**kw):
        base = {"task": AdditionTask(bits=4), "model": model_config("gru", hidden=4), "seed": 0}
        return Config(**{**base, **kw})

    assert family(job()) == family(job(model=model_config("gru", hidden=16), seed=3, task=AdditionTask(bits=8)))
    assert family(job()) != family(job(optim=AdamConfig(lr=0.05)))
    assert family(job()) != family(job(model=model_config("lstm", hidden=4)))
    assert family(job()) != family(job(task=AdditionTask(bits=4, full_range=True)))
    assert family(job(task=AdditionTask(data="numpy2015"))) is None  # the 2015 replay runs alone
    assert family(job(task=CharLMTask())) is None
    assert family(job(logger=LoggerConfig(tensorboard=TensorBoardConfig()))) is None  # a tracker: alone


def test_a_family_is_split_where_padding_would_exceed_max_padding():
    hidden = {0: 16, 1: 1, 2: 2, 3: 3, 4: 8, 5: 4}
    assert split_by_padding(list(hidden), hidden, 2) == [[1, 2], [3, 5], [4, 0]]
    assert split_by_padding(list(hidden), hidden, float("inf")) == [[1, 2, 3, 5, 4, 0]]
    steps = {0: 33, 1: 5, 2: 9, 3: 17}  # sequence lengths of 32, 4, 8 and 16 bits with full_range
    assert split_by_padding(list(steps), steps, 2) == [[1, 2], [3, 0]]


@pytest.mark.parametrize("setting", ["max_padding=0.5", "max_length_padding=abc"])
def test_a_padding_limit_below_1_or_not_a_number_is_one_line(setting, tmp_path, app_in_process):
    done = app_in_process("-m", "task.bits=3,4", "hydra/launcher=fused", f"hydra.launcher.{setting}",
                          f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert done.returncode == 1 and not list(tmp_path.glob("*/summary.json"))
    expected = f"error: hydra.launcher.{setting} is not allowed; must be a number >= 1 (inf: no limit)"
    assert done.stderr.strip().splitlines()[-1] == expected


@pytest.fixture(scope="module")
def fused_sweep(tmp_path_factory):
    """The sweep trained with hydra/launcher=fused: hidden 2 and 8 at 3 and 4 bits one family
    (padded to 8 units and 4 bits), and hidden 0 refused: those jobs fail alone and the sweep ends
    with exit 1, as under the basic launcher."""
    from rnn_jax.apps.train import main

    sweep = tmp_path_factory.mktemp("fused")
    argv = sys.argv
    launcher = ["hydra/launcher=fused", "hydra.launcher.max_padding=4", "hydra.launcher.max_length_padding=2"]
    sys.argv = ["rnn_jax.train", "-m", *SWEEP, *launcher, f"hydra.sweep.dir={sweep}"]
    try:
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_:
            # Steps this short never pay for a smaller program: regroup whenever a job stops.
            patch.setattr(job_groups, "regroup_pays", lambda *_: True)
            main()
    finally:
        sys.argv = argv
    assert exit_.value.code == 1
    return sweep


def test_each_fused_job_equals_the_job_trained_alone(fused_sweep, tmp_path, x64):
    summaries = {i: json.loads((fused_sweep / str(i) / "summary.json").read_text()) for i in (0, 1, 3, 4)}
    assert min(s["steps"] for s in summaries.values()) < 240, "a job should stop early while its family trains on"
    assert summaries[0]["fused"]["regroups"], "the jobs left should train at their own shape after a job stops"
    for job in (fused_sweep / "0", fused_sweep / "3"):  # 3 bits, 2 units; 4 bits, 2 units
        cfg = compose(*yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        assert family(cfg) is not None
        devices, record = select_backend("cpu", None, "1")
        alone = train_and_evaluate(cfg, tmp_path / job.name, devices, record)
        fused = json.loads((job / "summary.json").read_text())
        assert {k: fused["fused"][k] for k in ("jobs", "hidden", "bits")} == {"jobs": 4, "hidden": 8, "bits": 4}
        for key in ("status", "steps", "steps_to_solve", "per_seed_accuracy", "generalization_per_seed"):
            assert fused[key] == alone[key], (job.name, key)
        assert fused["longest_exact_carry_chain"] == alone["longest_exact_carry_chain"]
        a, meta_a = checkpoint.load(tmp_path / job.name / "checkpoints" / "last")
        f, meta_f = checkpoint.load(job / "checkpoints" / "last")
        assert meta_f["step"] == meta_a["step"] and meta_f["tally"] == meta_a["tally"]
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(f)):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-9, atol=1e-9)
        logged = [json.loads(line)["accuracy"] for line in (job / "metrics.jsonl").read_text().splitlines()]
        expected = [
            json.loads(line)["accuracy"] for line in (tmp_path / job.name / "metrics.jsonl").read_text().splitlines()
        ]
        assert logged == expected


def test_the_report_reads_a_fused_sweep_as_a_basic_one(fused_sweep):
    from rnn_jax.apps.report import main

    main([str(fused_sweep)])
    rows = (fused_sweep / "report.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and "model.hidden=0 is not allowed" in rows[-1]  # one row per job, failed too
    outcomes = {int(p.stem): json.loads(p.read_text()) for p in (fused_sweep / "job_outcomes").glob("*.json")}
    assert [outcomes[i]["status"] for i in range(6)] == ["ok", "ok", "failed"] * 2
    assert "model.hidden=0" in outcomes[2]["error"] and "model.hidden=0" in outcomes[5]["error"]
    assert all((Path(fused_sweep) / str(i) / ".hydra" / "overrides.yaml").exists() for i in range(6))


@pytest.mark.slow
def test_a_family_split_over_2_devices_equals_it_on_one(fused_sweep, tmp_path):
    """The same family (mixed widths and hidden sizes, regrouped as a job stops, as in the fixture)
    with its replicas split over 2 CPU devices, in a process of its own: each job as on one device."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    sweep = [a if a != "model.hidden=2,8,0" else "model.hidden=2,8" for a in SWEEP]
    launcher = ["hydra/launcher=fused", "hydra.launcher.max_padding=4", "hydra.launcher.max_length_padding=2"]
    regrouping = (
        "import sys; from rnn_jax.driver import job_groups; job_groups.regroup_pays = lambda *_: True; "
        "from rnn_jax.apps.train import main; sys.argv[0] = 'rnn_jax.train'; main()"
    )
    cmd = [sys.executable, "-c", regrouping, "-m", *sweep, *launcher, "backend.devices=2"]
    done = subprocess.run([*cmd, f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    for split, one in [(0, 0), (1, 1), (2, 3), (3, 4)]:  # jobs by (bits, hidden): the fixture's also has hidden 0
        two = json.loads((tmp_path / str(split) / "summary.json").read_text())
        alone = json.loads((fused_sweep / str(one) / "summary.json").read_text())
        assert two["devices"] == 2 and two["fused"]["jobs"] == 4 and alone["devices"] == 1
        assert two["fused"]["regroups"] == alone["fused"]["regroups"] != []
        for key in ("steps", "steps_to_solve", "per_seed_accuracy", "generalization_per_seed"):
            assert two[key] == alone[key], (split, key)
        a, _ = checkpoint.load(tmp_path / str(split) / "checkpoints" / "last")
        b, _ = checkpoint.load(fused_sweep / str(one) / "checkpoints" / "last")
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=1e-12)
