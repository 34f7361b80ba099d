"""The char-rnn task: corpus and batches, the model against step-by-step references, sampling,
and end-to-end runs (overfit, resume, interrupt, bad corpora, bad checkpoints)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rnn_jax.apps.sample import SampleArgError, load_model, parse_args, sample_text
from rnn_jax.apps.sample import main as sample_main
from rnn_jax.apps.train import to_config
from rnn_jax.build import model_config
from rnn_jax.driver import checkpoint, loop
from rnn_jax.driver.checkpoint import CheckpointError, steps_in
from rnn_jax.driver.loop import run as train_run
from rnn_jax.driver.rundir import read_jsonl
from rnn_jax.tasks.charlm import corpus
from rnn_jax.tasks.charlm import task as rc
from rnn_jax.tasks.charlm.corpus import CorpusError, VocabularyError
from rnn_jax.tasks.charlm.model import build_char_lm, cross_entropy, generate, make_evaluate
from rnn_jax.tasks.charlm.task import CharLMTask

CONF = str(Path(__file__).resolve().parents[1] / "conf")
CHINESE = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


def make_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return to_config(compose("config", overrides=list(overrides)))


def tiny(corpus_path, *overrides):
    """A run of seconds: 1 GRU layer of 16, sequences of 8, batches of 4, 12 steps."""
    return make_cfg(
        "experiment=charlm_tiny",
        "backend=cpu",
        f"task.corpus='{corpus_path}'",
        "task.seq_len=8",
        "task.embedding=8",
        "task.eval_every=6",
        "task.eval_batches=2",
        "task.sample_length=16",
        "model=gru",
        "model.hidden=16",
        "task.batch_size=4",
        "train.steps=12",
        "train.log_every=3",
        "train.progress=false",
        *overrides,
    )


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "月光", "故乡", "\n"]
    path.write_text(" ".join(rng.choice(words, 600)), encoding="utf-8")
    return path


def damage(step_dir: Path) -> None:
    """Overwrites the data files of a checkpoint step's arrays, as a crash or a bad disk might."""
    for p in (step_dir / "state").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(b"\0 damaged")


def params_of(run_dir, which="last"):
    state, meta = checkpoint.load(Path(run_dir) / "checkpoints" / which)
    return state["train"]["params"], meta


# --- corpus, vocabulary, batches -------------------------------------------------------------


@pytest.mark.parametrize("text", ["hello, world\n", CHINESE, "mixed 中文 and ascii ✓"])
def test_vocab_round_trip(text):
    vocab = corpus.make_vocab(text)
    assert vocab.chars == tuple(sorted(set(text)))
    ids = corpus.encode(vocab, text)
    assert ids.dtype == np.int32 and ids.max() < vocab.size
    assert corpus.decode(vocab, ids) == text
    assert corpus.make_vocab("".join(vocab.chars)) == vocab  # how a checkpoint stores it


def test_unknown_character_is_named():
    vocab = corpus.make_vocab("abc")
    with pytest.raises(VocabularyError, match=r"'月' \(U\+6708, position 2\)"):
        corpus.encode(vocab, "ab月")


@pytest.mark.parametrize("batch_size, seq_len", [(1, 5), (3, 4), (5, 7)])
def test_batches_cover_the_stream_in_order_without_overlap(batch_size, seq_len):
    ids = np.arange(200, dtype=np.int32)  # ids are positions, so batches show where they read
    streams = corpus.layout(ids, batch_size, seq_len)
    n = corpus.num_batches(streams, seq_len)
    assert n == 199 // (batch_size * seq_len)
    batches = [tuple(np.asarray(a) for a in corpus.batch_at(streams, k, seq_len)) for k in range(n)]
    inputs = np.concatenate([x.reshape(-1) for x, _ in batches])
    np.testing.assert_array_equal(np.sort(inputs), np.arange(n * batch_size * seq_len))  # all, once
    for x, y in batches:
        np.testing.assert_array_equal(y, x + 1)  # targets are the next character
    for (x0, _), (x1, _) in zip(batches, batches[1:]):
        np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)  # row b of batch k+1 continues row b of batch k


def test_split_and_unigram_baseline():
    ids = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3], np.int32)
    train, val = corpus.split(ids, 0.2)
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    assert len(val) == 2
    assert corpus.unigram_bpc(ids) == pytest.approx(-(3 * 0.2 * math.log2(0.2) + 0.4 * math.log2(0.4)))


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_sequence_apply_equals_one_character_at_a_time(cell):
    model = build_char_lm(model_config(cell, hidden=4, layers=2), 7, 3)
    params = jax.jit(model.init)(jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (8, 3), 0, 7)  # [T, B]
    carry, logits = jax.jit(model.apply)(params, ids)
    c, step = model.initial_carry((3,)), jax.jit(model.step)
    for t in range(8):
        c, lt = step(params, c, ids[t])
        np.testing.assert_allclose(lt, logits[t], rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), carry, c)


def test_cross_entropy_against_numpy():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 6))
    targets = jax.random.randint(jax.random.PRNGKey(1), (5, 2), 0, 6)
    z = np.asarray(logits, np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -np.mean(np.take_along_axis(logp, np.asarray(targets)[..., None], -1))
    assert float(cross_entropy(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_untrained_bpc_is_log2_vocab():
    vocab = corpus.make_vocab(CHINESE + "abcdefghij")
    ids = corpus.encode(vocab, (CHINESE * 20)[:401])
    streams = corpus.layout(ids, 4, 10)
    for readout_init, tol in [("zeros", 1e-5), ("pytorch", 0.15)]:  # zeros: uniform exactly
        model = build_char_lm(model_config("lstm", hidden=16, layers=2, readout_init=readout_init), vocab.size, 8)
        params = jax.jit(model.init)(jax.random.PRNGKey(0))
        bpc = corpus.bits(float(jax.jit(make_evaluate(model, 10))(params, streams)))
        assert bpc == pytest.approx(math.log2(vocab.size), abs=tol)


def test_dropout_only_with_a_key():
    model = build_char_lm(model_config("elman", hidden=64), 5, 4, dropout_rate=0.5)
    params = model.init(jax.random.PRNGKey(0))
    ids = jnp.zeros((3, 2), jnp.int32)
    apply = jax.jit(model.apply)
    _, a = apply(params, ids)
    _, b = apply(params, ids)
    _, c = apply(params, ids, dropout_key=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# --- sampling --------------------------------------------------------------------------------


sample = jax.jit(generate, static_argnums=(0, 5))


def _model_and_params(vocab_size=11):
    model = build_char_lm(model_config("lstm", hidden=8, layers=2), vocab_size, 4)
    return model, jax.jit(model.init)(jax.random.PRNGKey(3))


def test_argmax_sampling_is_deterministic_and_matches_a_python_loop():
    model, params = _model_and_params()
    prime = jnp.array([1, 2, 3], jnp.int32)
    a = sample(model, params, prime, jax.random.PRNGKey(0), 0.0, 12)
    b = sample(model, params, prime, jax.random.PRNGKey(99), 0.0, 12)
    np.testing.assert_array_equal(a, b)
    carry, logits = model.apply(params, prime)
    last, expected, step = logits[-1], [], jax.jit(model.step)
    for _ in range(12):
        c = int(np.argmax(last))
        expected.append(c)
        carry, last = step(params, carry, jnp.asarray(c, jnp.int32))
    np.testing.assert_array_equal(a, expected)


def test_temperature_sampling_depends_on_the_seed():
    model, params = _model_and_params()
    prime = jnp.array([0], jnp.int32)
    a = sample(model, params, prime, jax.random.PRNGKey(0), 1.0, 40)
    b = sample(model, params, prime, jax.random.PRNGKey(1), 1.0, 40)
    c = sample(model, params, prime, jax.random.PRNGKey(0), 1.0, 40)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_sample_arguments():
    cfg = parse_args(["run=r", "temperature=0", "prime=a=b(c): d", "length=7", "seed=3"])
    assert (cfg.run, cfg.temperature, cfg.prime, cfg.length, cfg.seed) == ("r", 0.0, "a=b(c): d", 7, 3)
    for bad in (["run=r", "temp=1"], ["run=r", "length=x"], ["temperature=1"], ["run=r", "temperature=-1"]):
        with pytest.raises(SampleArgError):
            parse_args(bad)


# --- bad corpora and configs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"abc\xff\xfedef", "not UTF-8"),
        ("short text".encode(), "too short"),  # fewer than one batch of 4 x 8 + 1
        (b"x" * 34 + b"y", "fewer than one sequence"),  # training fits, validation does not
        (b"x" * 400, "at least 2"),  # one distinct character: nothing to predict
    ],
)
def test_bad_corpus_gives_one_clear_error(tmp_path, content, problem):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    task = CharLMTask(corpus=str(path), seq_len=8, val_fraction=0.05 if content != b"x" * 34 + b"y" else 0.01)
    with pytest.raises(CorpusError, match=problem) as info:
        rc.load_data(task, batch_size=4)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_default_corpus_is_the_documented_modules():
    text = corpus.default_corpus()
    assert text.startswith(corpus.default_corpus(corpus.DEFAULT_MODULES[:1]))
    assert len(text) > 100_000 and text == corpus.read_corpus(None)


def test_presets_compose_to_char_rnn_defaults():
    cfg = make_cfg("experiment=charlm")
    assert isinstance(cfg.task, CharLMTask) and cfg.task.corpus is None
    assert (cfg.model.cell, cfg.model.layers, cfg.model.hidden) == ("lstm", 2, 128)
    assert (cfg.task.seq_len, cfg.task.batch_size, cfg.optim.name, cfg.optim.lr, cfg.optim.clip_norm) == (
        50,
        50,
        "rmsprop",
        0.002,
        5.0,
    )
    assert cfg.optim.schedule == "exponential"
    with pytest.raises(Exception, match="seeds"):  # a setting of another task is not a key here
        make_cfg("experiment=charlm", "task.seeds=2")


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, text_file):
    """12 steps uninterrupted, with dropout, so resume must also restore the dropout keys."""
    run_dir = tmp_path_factory.mktemp("straight")
    summary = train_run(tiny(text_file, "task.dropout=0.2"), run_dir)
    return run_dir, summary


@pytest.mark.slow
def test_run_writes_metrics_summary_samples_and_checkpoints(straight_run):
    run_dir, summary = straight_run
    records = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [r["step"] for r in records] == [3, 6, 9, 12]
    assert [("val_bpc" in r) for r in records] == [False, True, False, True]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000006.txt", "step_000012.txt"]
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    text = Path(summary["corpus"]).read_text(encoding="utf-8")
    assert summary["steps"] == 12 and summary["vocab_size"] == len(set(text))
    assert summary["unigram_bpc"] == pytest.approx(corpus.unigram_bpc(corpus.encode(corpus.make_vocab(text), text)))
    best = min(r["val_bpc"] for r in records if "val_bpc" in r)
    assert summary["best_val_bpc"] == pytest.approx(best)
    assert params_of(run_dir, "best")[1]["val_bpc"] == pytest.approx(best)
    assert params_of(run_dir)[1]["step"] == 12
    # rerunning into the same directory continues from its last checkpoint: nothing left to do,
    # and nothing in the directory changes
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(loop.NothingToTrain) as done:
        train_run(tiny(summary["corpus"], "task.dropout=0.2"), run_dir)
    assert done.value.summary == summary
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


@pytest.mark.slow
def test_interrupt_saves_and_resume_matches_an_uninterrupted_run(straight_run, text_file, tmp_path, monkeypatch):
    cfg = tiny(text_file, "task.dropout=0.2")
    write = loop.MetricsLog.write

    def interrupt_at_6(self, record):
        write(self, record)
        if record["step"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop.MetricsLog, "write", interrupt_at_6)
    first = tmp_path / "first"
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, first)
    assert params_of(first)[1]["step"] == 6
    interrupted = json.loads((first / "summary.json").read_text())
    assert interrupted["status"] == "interrupted" and interrupted["steps"] == 6
    monkeypatch.undo()

    second = tmp_path / "second"  # train.resume=<first run> continues into a new directory
    cfg = tiny(text_file, "task.dropout=0.2", f"train.resume='{first}'")
    summary = train_run(cfg, second)
    assert summary["steps_this_run"] == 6 and summary["steps"] == 12
    assert [r["step"] for r in read_jsonl(second / "metrics.jsonl")] == [3, 6, 9, 12]
    got, expected = params_of(second)[0], params_of(straight_run[0])[0]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, expected)


@pytest.mark.slow
def test_bad_checkpoints_give_checkpoint_error(straight_run, text_file, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run[0], run_dir)
    cfg = tiny(text_file, "task.dropout=0.2")

    # The newest step damaged: the run resumes from the one before and ends where it would have.
    damage(run_dir / "checkpoints" / "last" / "12")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(run_dir / "checkpoints" / "last" / "12")
    (run_dir / "summary.json").unlink()
    summary = train_run(cfg, run_dir)
    assert summary["resumed_from"].endswith("last/6") and summary["steps"] == 12
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        params_of(run_dir)[0],
        params_of(straight_run[0])[0],
    )
    for step in steps_in(run_dir / "checkpoints" / "last"):
        damage(run_dir / "checkpoints" / "last" / str(step))
    with pytest.raises(CheckpointError, match="no step reads back"):
        train_run(tiny(text_file, "task.dropout=0.2", "train.steps=18"), run_dir)

    addition_run = tmp_path / "addition_run"
    shutil.copytree(straight_run[0] / "checkpoints" / "best", addition_run / "checkpoints" / "last")
    step_dir = addition_run / "checkpoints" / "last" / str(steps_in(addition_run / "checkpoints" / "last")[0])
    meta_file = next(
        p for p in (step_dir / "meta").iterdir() if p.suffix in ("", ".json") and p.is_file() and "metadata" in p.name
    )
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "task": "addition"}))
    with pytest.raises(CheckpointError, match="sampling needs a charlm run"):
        load_model(addition_run / "checkpoints" / "last")
    with pytest.raises(CheckpointError, match="is of task 'addition'; this run is task=charlm"):
        train_run(tiny(text_file, f"train.resume='{addition_run}'"), tmp_path / "x3")

    hidden = json.loads((straight_run[0] / "summary.json").read_text())["config"]["model"]["hidden"]
    with pytest.raises(
        CheckpointError, match=rf"does not fit this run: it was trained with model\.hidden={hidden} \(now 8\)$"
    ):
        train_run(
            tiny(text_file, "model.hidden=8", "task.dropout=0.2", f"train.resume='{straight_run[0]}'"), tmp_path / "x"
        )
    with pytest.raises(CheckpointError, match=r"optim\.name=\w+ \(now sgd\), task\.batch_size=4 \(now 3\)"):
        train_run(
            tiny(text_file, "optim=sgd", "task.batch_size=3", "task.dropout=0.2", f"train.resume='{straight_run[0]}'"),
            tmp_path / "x2",
        )
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train_run(tiny(text_file, f"train.resume='{tmp_path / 'nowhere'}'"), tmp_path / "x4")
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text(encoding="utf-8") + "新", encoding="utf-8")
    with pytest.raises(CheckpointError, match="was made for another vocab"):
        train_run(tiny(other, f"train.resume='{straight_run[0]}'"), tmp_path / "y")


@pytest.mark.slow
def test_sample_cli(straight_run, capsys):
    run_dir = str(straight_run[0])
    assert sample_main([f"run={run_dir}", "temperature=0", "prime=alpha", "length=30", "seed=1"]) == 0
    a = capsys.readouterr().out
    assert sample_main([f"run={run_dir}", "temperature=0", "prime=alpha", "length=30", "seed=2"]) == 0
    assert capsys.readouterr().out == a and a.startswith("alpha") and len(a) == len("alpha") + 30 + 1
    assert sample_main([f"run={run_dir}", "prime=alpha 日"]) == 2
    assert capsys.readouterr().err.startswith("error: prime: character '日'")
    assert sample_main([f"run={run_dir}", "checkpoint=middle"]) == 2
    assert "checkpoint=middle: no such directory; allowed: best, last" in capsys.readouterr().err


@pytest.mark.slow
def test_overfits_a_200_character_text_and_reproduces_it(tmp_path):
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghijklmnop ."), 200))
    path = tmp_path / "loop.txt"
    path.write_text(text * 5, encoding="utf-8")  # the validation tail is the same text again
    cfg = tiny(
        path,
        "model=lstm",
        "model.hidden=64",
        "task.embedding=16",
        "task.seq_len=25",
        "task.eval_every=400",
        "task.eval_batches=1",
        "optim.lr=0.01",
        "train.steps=400",
        "train.log_every=200",
    )
    summary = train_run(cfg, tmp_path / "run")
    assert summary["final_train_bpc"] < 0.05  # nats would do too: near-zero loss
    model, params, vocab, _ = load_model(tmp_path / "run" / "checkpoints" / "last")
    assert sample_text(model, params, vocab, text[:10], 190, 0.0) == text


@pytest.mark.slow
def test_a_diverging_run_is_reported_failed(text_file, tmp_path):
    cfg = tiny(text_file, "optim=sgd", "optim.lr=1e30", "optim.clip_norm=null", "model=elman", "model.activation=relu")
    summary = train_run(cfg, tmp_path)
    assert summary["status"] == "failed" and "NaN" in summary["error"]
    assert summary["best_val_bpc"] is None
