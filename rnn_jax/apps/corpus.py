"""`python -m rnn_jax.corpus NAME [--from FILE] [--cache DIR]`: builds a poetry corpus, prints its path.

    python -m rnn_jax.corpus tang            # ~/.cache/rnn_jax/corpora/tang.txt, one poem per line
    python -m rnn_jax.train experiment=charlm_poetry task.corpus=$(python -m rnn_jax.corpus songci)

The first call downloads the chinese-poetry tarball (85 MB, MIT licence) from the npm registry into
the cache (`$RNN_JAX_CACHE/corpora`, else `~/.cache/rnn_jax/corpora`) and checks its sha512; later
calls reuse it, and a corpus already built is printed at once. Without the network, download the
tarball elsewhere and pass it with `--from FILE` (or put it into the cache directory).
"""

from __future__ import annotations

import argparse

from rnn_jax.apps import run_cli
from rnn_jax.tasks.charlm.corpus import CorpusError
from rnn_jax.tasks.charlm.poetry_data import CHINESE_POETRY, SOURCES, build_corpus, cache_dir


def parser() -> argparse.ArgumentParser:
    names = "\n".join(f"  {name:<11} {source.description}" for name, source in SOURCES.items())
    p = argparse.ArgumentParser(
        prog="python -m rnn_jax.corpus",
        description=f"Builds a one-poem-per-line UTF-8 corpus from {CHINESE_POETRY.url} and prints its path.",
        epilog=f"corpora:\n{names}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=tuple(SOURCES), metavar="NAME", help="the corpus (listed below)")
    p.add_argument(
        "--from",
        dest="tarball",
        metavar="FILE",
        help=f"a local copy of {CHINESE_POETRY.filename} instead of the download",
    )
    p.add_argument("--cache", metavar="DIR", help=f"where corpora are built (default: {cache_dir()})")
    return p


def build(argv: list[str]) -> None:
    """Builds the corpus the arguments name (or finds it built) and prints its path."""
    args = parser().parse_args(argv)
    print(build_corpus(args.name, cache=args.cache, tarball=args.tarball))


def main(argv=None) -> int:
    return run_cli(build, argv, (CorpusError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
