"""The apps at the edge: train, sample, report, bench, bench_addition, verify, corpus (each `python -m rnn_jax.NAME`)."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/, composed by the apps
