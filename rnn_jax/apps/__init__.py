"""The apps at the edge: train, sample, report, bench, bench_addition, verify, corpus (each
`python -m rnn_jax.NAME`)."""

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Optional

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


def run_cli(body: Callable[[list], None], argv, errors: tuple, doc: Optional[str] = None) -> int:
    """The frame of the small apps without Hydra (sample, corpus, verify): `body(argv)`, `argv` the command
    line's arguments unless given; `-h`/`--help` prints `doc` instead when there is one. An error of
    `errors` is one line `error: ...` on stderr and exit code 2; else the exit code is 0."""
    argv = sys.argv[1:] if argv is None else argv
    if doc is not None and any(a in ("-h", "--help") for a in argv):
        print(doc)
        return 0
    try:
        body(argv)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
