"""Checkpoints: round trip, atomic replacement, and a clear error for every kind of bad directory."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax.driver import checkpoint
from rnn_jax.driver.checkpoint import CheckpointError


def params():
    model = rj.sequence_model(rj.stack([rj.lstm(4), rj.elman(3, use_bias=False)]), 2)
    return model.init(jax.random.PRNGKey(0), 5)


def test_round_trip_with_and_without_target(tmp_path):
    p = params()
    checkpoint.save(tmp_path / "ck", p, {"step": 7})
    raw, meta = checkpoint.load(tmp_path / "ck")
    assert meta["step"] == 7
    np.testing.assert_array_equal(raw["cell"]["0"]["w_h"], p.cell[0].w_h)
    assert raw["cell"]["1"]["b"] is None
    restored, _ = checkpoint.load(tmp_path / "ck", target=p)
    assert jax.tree.structure(restored) == jax.tree.structure(p)
    jax.tree.map(np.testing.assert_array_equal, restored, p)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    p = params()
    checkpoint.save(tmp_path / "ck", p, {"step": 1})
    with pytest.raises(Exception):
        checkpoint.save(tmp_path / "ck", {"w": object()}, {"step": 2})
    restored, meta = checkpoint.load(tmp_path / "ck", target=p)
    assert meta["step"] == 1
    assert sorted(f.name for f in (tmp_path / "ck").iterdir()) == ["meta.json", "state.msgpack"]  # no temporary left


def corrupt_bytes(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: corrupt_bytes(d / "state.msgpack"), "SHA-256"),
        (lambda d: (d / "state.msgpack").write_bytes((d / "state.msgpack").read_bytes()[:40]), "corrupt"),
        (lambda d: (d / "state.msgpack").unlink(), "state.msgpack is missing"),
        (lambda d: (d / "meta.json").unlink(), "meta.json is missing"),
        (lambda d: (d / "meta.json").write_text("{not json"), "meta.json is corrupt"),
        (lambda d: (d / "meta.json").write_text(json.dumps({"format": "other"})), "not an rnn_jax checkpoint"),
    ],
)
def test_bad_checkpoints_raise_one_clear_error(tmp_path, damage, words):
    checkpoint.save(tmp_path / "ck", params(), {})
    damage(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=words):
        checkpoint.load(tmp_path / "ck")


def test_structure_and_shape_mismatch(tmp_path):
    checkpoint.save(tmp_path / "ck", params(), {})
    other = rj.sequence_model(rj.stack([rj.lstm(6), rj.elman(3, use_bias=False)]), 2).init(jax.random.PRNGKey(0), 5)
    with pytest.raises(CheckpointError, match=r"w_x is float32\[5, 16\], expected float32\[5, 24\]"):
        checkpoint.load(tmp_path / "ck", target=other)
    as_f16 = jax.tree.map(lambda a: a.astype(jnp.float16), params())
    with pytest.raises(CheckpointError, match=r"is float32\[.*\], expected float16"):
        checkpoint.load(tmp_path / "ck", target=as_f16)
    with pytest.raises(CheckpointError, match="no such directory"):
        checkpoint.load(tmp_path / "missing")
