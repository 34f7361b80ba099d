"""Poetry: corpora fetched, checked and cached (against a tarball served from 127.0.0.1), poems
packed as sequences (against each poem run alone), constrained writing (every poem of its form,
greedy writing against a Python loop), and the shipped preset trained and sampled end to end."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rnn_testing import compose, jit

from rnn_jax.apps.corpus import main as corpus_main
from rnn_jax.apps.sample import main as sample_main
from rnn_jax.cells import lstm
from rnn_jax.driver.config import ConfigError
from rnn_jax.driver.loop import run as train_run
from rnn_jax.tasks.charlm.corpus import CorpusError, encode, make_vocab, read_corpus
from rnn_jax.tasks.charlm.model import Batch, char_lm, generate, make_evaluate_packed, make_loss
from rnn_jax.tasks.charlm.packing import pack, split_poems
from rnn_jax.tasks.charlm.poem import (
    PoemError,
    PoemSpec,
    context_ids,
    is_ideograph,
    poem_constraints,
    write_poem,
    write_poems,
)
from rnn_jax.tasks.charlm.poetry_data import SHIPPED, Dataset, build_corpus

# --- the corpus: download, checksum, cache, offline --------------------------------------------

QUATRAIN = ["床前明月光，", "疑是地上霜。", "舉頭望明月，", "低頭思故鄉。"]
TANG_0 = [  # poet.tang.0.json
    {"paragraphs": QUATRAIN},
    {
        "paragraphs": [
            "白日依山盡，黃河入海流。",
            "欲窮千里目（一作「眼」），更上一層樓。〖1〗",
        ]
    },
    {"paragraphs": ["春眠不覺曉，處處聞啼□。"]},  # a lost character: left out
]
TANG_200 = [
    {"paragraphs": ["千山鳥飛絕，萬徑人蹤滅。", "孤舟蓑笠翁，獨釣寒[江]雪。"]},
    {"paragraphs": QUATRAIN},
]  # the second is a repeat
TANG_1000 = [
    {
        "paragraphs": [
            "朝辭白帝彩雲間，千里江陵一日還。",
            "兩岸猿聲啼不住，輕舟已過萬重山。",
        ]
    }
]
SONGCI = [
    {"paragraphs": ["明月几时有？", "把酒问青天。"]},
    {"paragraphs": ["明月几时有？", "把酒问青天。"]},
]


def tarball_bytes() -> bytes:
    files = {
        "package/dist/quantangshi/poet.tang.0.json": TANG_0,
        "package/dist/quantangshi/poet.tang.1000.json": TANG_1000,  # numerically after 200
        "package/dist/quantangshi/poet.tang.200.json": TANG_200,
        "package/dist/songci/ci.song.0.json": SONGCI,
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, poems in files.items():
            data = json.dumps(poems, ensure_ascii=False).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def server():
    """The tarball served from 127.0.0.1 (a thread); `requests` counts what was fetched."""
    body = tarball_bytes()
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    sha512 = base64.b64encode(hashlib.sha512(body).digest()).decode()
    yield Dataset(f"http://127.0.0.1:{httpd.server_port}/cp.tgz", "cp.tgz", sha512), requests, body
    httpd.shutdown()


def test_fetch_build_and_cache(server, tmp_path):
    dataset, requests, _ = server
    n = len(requests)
    path = build_corpus("tang", cache=tmp_path, dataset=dataset)
    assert len(requests) == n + 1 and (tmp_path / "cp.tgz").read_bytes() == tarball_bytes()
    assert path.read_text(encoding="utf-8").split("\n") == [
        "".join(QUATRAIN),
        "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",  # notes removed
        # the emendation's character kept; the repeat left out
        "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
        # file 1000 after file 200
        "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
        "",
    ]
    # the quatrains come from the cached tarball, and a built corpus is reused: no new request
    wujue = build_corpus("tang_wujue", cache=tmp_path, dataset=dataset)
    assert wujue.read_text(encoding="utf-8").splitlines() == [
        "".join(QUATRAIN),
        "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
        "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    ]
    assert build_corpus("tang", cache=tmp_path, dataset=dataset) == path
    assert (
        build_corpus("songci", cache=tmp_path, dataset=dataset).read_text(encoding="utf-8")
        == "明月几时有？把酒问青天。\n" * 2
    )
    assert len(requests) == n + 1


def test_bad_checksum_and_no_network_are_one_line(server, tmp_path):
    dataset, requests, body = server
    with pytest.raises(CorpusError, match="sha512") as bad:
        build_corpus("tang", cache=tmp_path, dataset=dataset._replace(sha512="x" * 88))
    assert "\n" not in str(bad.value) and not list(tmp_path.rglob("*.tgz*")) and not list(tmp_path.rglob("*.txt"))
    with pytest.raises(CorpusError) as offline:
        build_corpus("tang", cache=tmp_path / "c", dataset=dataset._replace(url="http://127.0.0.1:9/cp.tgz"))
    message = str(offline.value)
    assert "\n" not in message and "http://127.0.0.1:9/cp.tgz" in message and str(tmp_path / "c" / "cp.tgz") in message
    assert "--from FILE" in message
    with pytest.raises(CorpusError, match="unknown; allowed: tang, "):
        build_corpus("tangg", cache=tmp_path, dataset=dataset)


def test_a_local_tarball_and_the_cli(server, tmp_path, capsys):
    dataset, requests, body = server
    local = tmp_path / "copy.tgz"
    local.write_bytes(body)
    n = len(requests)
    path = build_corpus("tang_wujue", cache=tmp_path / "c", tarball=local, dataset=dataset)
    assert len(requests) == n and not (tmp_path / "c" / "cp.tgz").exists()  # read where it is, not fetched
    assert path.read_text(encoding="utf-8").startswith("".join(QUATRAIN) + "\n")
    assert corpus_main(["tang_wujue", "--cache", str(tmp_path / "c")]) == 0  # built: printed at once
    assert capsys.readouterr().out == f"{path}\n"
    assert corpus_main(["tang", "--from", str(local), "--cache", str(tmp_path / "d")]) == 2  # not the real tarball
    assert capsys.readouterr().err.startswith(f"error: {local}: sha512 ")


def test_sample_help_prints_its_usage_and_loads_nothing(tmp_path, capsys):
    assert sample_main(["--help", f"run={tmp_path / 'absent'}"]) == 0  # an absent run: nothing was read
    out = capsys.readouterr().out
    assert "python -m rnn_jax.sample run=<run dir>" in out and "top_k" in out


def test_the_shipped_quatrains():
    path = SHIPPED["tang_wujue"]
    assert path.stat().st_size < 300_000 and "MIT License" in (path.parent / "LICENSE-chinese-poetry.txt").read_text()
    poems = read_corpus("builtin:tang_wujue").splitlines()
    form = re.compile(r"(?:(\w{5})，(\w{5})。){2}")
    assert len(poems) > 3000 and len(set(poems)) == len(poems)
    assert all(form.fullmatch(p) and all(is_ideograph(c) for c in p if c not in "，。") for p in poems)
    with pytest.raises(CorpusError, match="no such shipped corpus; shipped: builtin:tang_wujue"):
        read_corpus("builtin:tang")


# --- poems as sequences --------------------------------------------------------------------------

VOCAB = make_vocab("\n，。春夏秋冬明月山水花abc□")
END = VOCAB.index["\n"]


@pytest.fixture(scope="module")
def model():
    m = char_lm([lstm(4), lstm(4)], VOCAB.size, 3)
    return m, jit(m.init)(jax.random.PRNGKey(0))


def test_packing_places_each_poem_once_and_says_what_is_padding():
    rng = np.random.default_rng(0)
    poems = [rng.integers(1, VOCAB.size, n).astype(np.int32) for n in (3, 7, 1, 5, 2, 9, 4)]
    rows, left_out = pack(poems, 8, END, rows_multiple=2)
    assert left_out == 1 and rows.inputs.shape[0] % 2 == 0  # the poem of 9 needs 10 steps
    found = []
    for r in range(rows.inputs.shape[0]):
        starts = list(np.flatnonzero(rows.resets[r])) + [int(rows.valid[r].sum())]
        assert not rows.valid[r, starts[-1] :].any()  # the valid steps come first
        for a, b in zip(starts, starts[1:]):
            assert rows.inputs[r, a] == END and rows.targets[r, b - 1] == END
            np.testing.assert_array_equal(rows.inputs[r, a + 1 : b], rows.targets[r, a : b - 1])
            found.append(tuple(rows.targets[r, a : b - 1]))
    assert sorted(found) == sorted(tuple(p) for p in poems if len(p) < 8)
    assert rows.padding == pytest.approx(1 - sum(len(p) + 1 for p in poems if len(p) < 8) / rows.valid.size)


def test_validation_poems_are_those_in_the_streams_validation_text():
    text = "春夏\n秋冬明月\n山水\n花花花\n"
    train, val = split_poems(text, 0.4)  # the last round(0.4 * 15) = 6 characters: "\n花花花\n"
    assert train == ["春夏", "秋冬明月", "山水"] and val == ["花花花"]


def alone_nll(model, params, poems):
    """The reference: each poem (the end mark, its characters, the end mark) run alone from the
    initial state, its log-probabilities summed by NumPy-style indexing."""
    total, count = 0.0, 0
    for p in poems:
        seq = jnp.asarray(np.concatenate([[END], p, [END]]), jnp.int32)
        _, logits = model.apply(params, seq[:-1, None])  # [n + 1, 1, V]
        logp = jax.nn.log_softmax(logits[:, 0], axis=-1)
        total = total - jnp.sum(logp[jnp.arange(len(p) + 1), seq[1:]])
        count += len(p) + 1
    return total / count


def test_packed_loss_and_gradients_equal_each_poem_run_alone(model):
    m, params = model
    rng = np.random.default_rng(1)
    poems = [rng.integers(1, VOCAB.size, n).astype(np.int32) for n in (3, 6, 1, 5, 2, 4)]
    rows, _ = pack(poems, 8, END, rows_multiple=2)
    assert 0 < rows.padding
    rows = jax.tree.map(jnp.asarray, rows)
    batch = Batch(rows.inputs, rows.targets, m.initial_carry((rows.inputs.shape[0],)), None, rows.resets, rows.valid)

    def packed(params):  # both readouts and the evaluation, in one compiled program
        out = {}
        for readout in ("plain", "fused"):
            loss_fn = make_loss(m, readout=readout, chunk_size=5)
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
            out[readout] = (loss, grads, make_evaluate_packed(m, readout=readout)(params, rows, 2))
        return out, jax.value_and_grad(lambda p: alone_nll(m, p, poems))(params)

    out, (ref, ref_grads) = jit(packed)(params)
    for loss, grads, evaluated in out.values():
        np.testing.assert_allclose(loss, ref, rtol=1e-5)
        np.testing.assert_allclose(evaluated, ref, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, ref_grads)


# --- writing poems -------------------------------------------------------------------------------


def check_poem(text: str, spec: PoemSpec):
    lines = text.split("\n")
    assert len(lines) == spec.lines, text
    for i, line in enumerate(lines):
        assert len(line) == spec.form + 1 and line[-1] == "，。"[i % 2], text
        assert all(is_ideograph(c) and c in VOCAB.index for c in line[:-1]), text
        if spec.head:
            assert line[0] == spec.head[i], text


def test_every_poem_has_its_form_and_acrostic(model):
    m, params = model
    # the readout prefers what a poem must not hold: marks, letters, the end mark, the wrong stop
    forbidden = jnp.asarray(encode(VOCAB, "\n，。abc□"))
    biased = params._replace(readout=params.readout._replace(b=params.readout.b.at[forbidden].add(6.0)))
    spec = PoemSpec(7, 8, "春夏秋冬明月山水")
    poems = write_poems(m, biased, VOCAB, 64, spec, prefix="明月", temperature=1.5, top_k=3, seed=3)
    for text in poems:
        check_poem(text, spec)
    assert len(set(poems)) > 32  # drawn, not one poem repeated


def test_greedy_poem_equals_a_python_loop(model):
    m, params = model
    spec = PoemSpec(5, 4, "明山水花")
    allowed = poem_constraints(VOCAB, spec)
    context = jnp.asarray(context_ids(VOCAB, "春"))
    write = jit(write_poem, static_argnums=(0, 6))
    greedy = write(m, params, context, jnp.asarray(allowed), jax.random.PRNGKey(0), 0.0, 0)
    top_1 = write(m, params, context, jnp.asarray(allowed), jax.random.PRNGKey(0), 5.0, 1)  # hot, but one candidate
    step = jit(m.step)
    carry = m.initial_carry(())
    for c in encode(VOCAB, "\n春"):  # the end mark, then the prefix
        carry, logits = step(params, carry, jnp.int32(c))
    expected = []
    for a in allowed:
        c = int(np.argmax(np.where(a, np.asarray(logits), -np.inf)))
        expected.append(c)
        carry, logits = step(params, carry, jnp.int32(c))
    assert greedy.tolist() == expected and top_1.tolist() == expected


def test_samples_of_a_line_run_restart_at_each_end_mark(model):
    m, params = model
    params = jax.tree.map(lambda x: 2 * x, params)  # a state that matters more to the draws
    params = params._replace(readout=params.readout._replace(b=params.readout.b.at[END].add(4.0)))  # short poems
    key = jax.random.PRNGKey(0)
    ids = jit(generate, static_argnums=(0, 5, 6, 7))(m, params, jnp.asarray([END]), key, 1.0, 16, None, END)
    step, zero = jit(m.step), m.initial_carry(())
    draw = jit(lambda k, logits: jax.random.categorical(k, logits))

    def loop(restart: bool):  # the same draws; with restart, the state restarts before each end mark is read
        carry, logits = step(params, zero, jnp.int32(END))
        out = []
        for i in range(16):
            c = int(draw(jax.random.fold_in(key, i), logits))
            out.append(c)
            carry, logits = step(params, zero if restart and c == END else carry, jnp.int32(c))
        return out

    expected = loop(True)
    assert ids.tolist() == expected and expected != loop(False) and 2 <= expected.count(END) <= 12


@pytest.mark.parametrize(
    "spec, prefix, message",
    [
        (
            PoemSpec(5, 4, "春夏秋雪"),
            "",
            f"head=春夏秋雪: character '雪' (U+96EA) is not in the model's vocabulary of {VOCAB.size}",
        ),
        (PoemSpec(5, 4, "春夏秋a"), "", "head=春夏秋a: character 'a' (U+0061) is not a CJK ideograph"),
        (PoemSpec(5, 4, "春夏"), "", "head=春夏: 2 characters; an acrostic has one per line: 4 or 8"),
        (PoemSpec(5, 8, "春夏秋冬"), "", "head=春夏秋冬: 4 characters for 8 lines"),
        (PoemSpec(6, 4), "", "form=6 is not allowed; allowed: 5, 7"),
        (PoemSpec(5, 4), "明月夜", "prefix=明月夜: character '夜' (U+591C) is not in the model's vocabulary"),
    ],
)
def test_unmeetable_poems_are_one_clear_error(model, spec, prefix, message):
    m, params = model
    with pytest.raises(PoemError) as e:
        write_poems(m, params, VOCAB, 1, spec, prefix=prefix)
    assert str(e.value).startswith(message)


# --- the preset, end to end ------------------------------------------------------------------------


@pytest.mark.slow
def test_tang_preset_trains_on_the_shipped_poems_and_writes_an_acrostic(tmp_path, capsys):
    shrink = [
        "model.hidden=8",
        "task.embedding=4",
        "task.seq_len=50",
        "task.eval_every=4",
        "task.eval_batches=2",
        "task.sample_length=0",
        "task.batch_size=4",
        "train.steps=4",
        "train.log_every=4",
        "train.progress=false",
    ]
    with pytest.raises(ConfigError, match=r"^task.unit='poem' is not allowed; allowed: stream, line$"):
        compose("experiment=tang", "task.unit=poem")
    cfg = compose("experiment=tang", "backend=cpu", *shrink)
    summary = train_run(cfg, tmp_path)
    assert summary["unit"] == "line" and summary["poems"]["left_out"] == 0 and summary["padding_fraction"] < 0.01
    assert np.isfinite(summary["best_val_bpc"]) and summary["vocab_size"] > 3000
    capsys.readouterr()
    assert sample_main([f"run={tmp_path}", "head=春夏秋冬", "form=5", "poems=2"]) == 0
    for poem in capsys.readouterr().out.strip().split("\n\n"):
        lines = poem.split("\n")
        assert [line[0] for line in lines] == list("春夏秋冬") and [len(line) for line in lines] == [6] * 4
        assert [line[-1] for line in lines] == list("，。，。")
    assert sample_main([f"run={tmp_path}", "head=明月别枝"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: head=明月别枝: character '别' (U+522B) is not in the model's vocabulary")
