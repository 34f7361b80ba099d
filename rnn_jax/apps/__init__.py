"""The apps at the edge: train, sample, report, bench, bench_addition, verify, corpus (each `python -m rnn_jax.NAME`)."""

import dataclasses
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/, composed by the apps

_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}


def parse_key_values(argv, schema, error: type[Exception]):
    """`schema` (a dataclass) from `key=value` strings, each typed by its field's default (None: a
    string), for the small apps that take no Hydra config; `error` names a bad argument in one line."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    values = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in fields:
            raise error(f"{arg!r}: expected key=value with key one of {', '.join(fields)}")
        kind = type(fields[key].default) if fields[key].default is not None else str
        try:
            values[key] = kind(value)
        except ValueError:
            raise error(f"{key}={value!r}: expected {_KIND_NAMES.get(kind, kind.__name__)}") from None
    return schema(**values)
