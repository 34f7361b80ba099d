"""Chinese poetry corpora, one poem per line, built from the chinese-poetry collection.

The collection (github.com/chinese-poetry/chinese-poetry, MIT licence) is published on the npm
registry as the package `chinese-poetry`; `build_corpus(name)` downloads its tarball once into
the cache (`cache_dir()`), checks its sha512 against the registry's integrity string, and writes
`<cache>/<name>.txt`: every poem of the chosen source, its `paragraphs` joined, one poem per line
(UTF-8). A corpus already built is reused as it is. The 全唐詩 keeps the collection's traditional
characters; its songci (全宋詞) is in simplified ones.

A small corpus ships with rnn_jax (`SHIPPED`: the five-character quatrains of the 全唐詩, built by
`build_corpus("tang_wujue")`), so the poetry presets need no network: `task.corpus=builtin:tang_wujue`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from rnn_jax.tasks.charlm.corpus import CorpusError


class Dataset(NamedTuple):
    """A tarball to download: where from, its file name in the cache, its npm integrity string."""

    url: str
    filename: str
    sha512: str  # base64, as npm's `dist.integrity` without the "sha512-" prefix


CHINESE_POETRY = Dataset(
    url="https://registry.npmjs.org/chinese-poetry/-/chinese-poetry-2.0.1.tgz",
    filename="chinese-poetry-2.0.1.tgz",
    sha512="KtYARvV7CWNtax0na9+Jn6PlhGgSoid7PWyDzXI4KsCEm2odZcqEQyval5koaLygZnM/EQ3lfJ//25K8p3uHNg==",
)

# Editorial marks of the 全唐詩 text: variant readings "（一作「…」）" and note numbers "〖1〗" are
# removed, emendations "[爽]" keep their character; a poem with a lost character (□) or a
# character described by its parts ("{艹/尔}") is left out, as its text is not all there.
_NOTES = re.compile(r"（[^）]*）|〖[^〗]*〗")
_EMENDATION = re.compile(r"\[([^\]]*)\]")
_UNREADABLE = re.compile(r"[□{}]")


def clean_tang(text: str) -> Optional[str]:
    """A 全唐詩 poem without its editorial notes; None when some of its text is lost."""
    text = _EMENDATION.sub(r"\1", _NOTES.sub("", text)).strip()
    return None if not text or _UNREADABLE.search(text) else text


def joined(text: str) -> Optional[str]:
    return text.strip() or None


_IDEOGRAPH = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"


def regulated(chars: int, lines: int) -> Callable[[str], Optional[str]]:
    """Keeps a cleaned 全唐詩 poem only when it is `lines` lines of `chars` ideographs, ending in
    ，and 。 by turns (a quatrain for 4 lines, a regulated verse for 8)."""
    couplet = f"{_IDEOGRAPH}{{{chars}}}，{_IDEOGRAPH}{{{chars}}}。"
    form = re.compile(f"(?:{couplet}){{{lines // 2}}}")

    def keep(text: str) -> Optional[str]:
        text = clean_tang(text)
        return text if text is not None and form.fullmatch(text) else None

    return keep


class Source(NamedTuple):
    """A corpus: the tarball members it reads (a regex on their names), how each poem's joined
    `paragraphs` become its line (None: left out), and whether a poem the collection holds twice
    (under two poets) is kept once, so that no validation poem is also a training poem."""

    description: str
    members: str
    poem: Callable[[str], Optional[str]]
    unique: bool = True


_TANG = r"package/dist/quantangshi/poet\.tang\.\d+\.json"
SOURCES: dict[str, Source] = {
    "tang": Source("全唐詩, every Tang poem (traditional characters)", _TANG, clean_tang),
    "tang_wujue": Source("五言絕句 of the 全唐詩: 4 lines of 5 characters", _TANG, regulated(5, 4)),
    "tang_qijue": Source("七言絕句 of the 全唐詩: 4 lines of 7 characters", _TANG, regulated(7, 4)),
    "tang_wulv": Source("五言律詩 of the 全唐詩: 8 lines of 5 characters", _TANG, regulated(5, 8)),
    "tang_qilv": Source("七言律詩 of the 全唐詩: 8 lines of 7 characters", _TANG, regulated(7, 8)),
    "tang300": Source("唐詩三百首 (traditional characters)", r"package/dist/quantangshi/唐诗三百首\.json", clean_tang),
    "song": Source(
        "全宋詩, every Song shi poem (traditional characters)",
        r"package/dist/quantangshi/poet\.song\.\d+\.json",
        clean_tang,
    ),
    "songci": Source(
        "全宋詞, every Song ci poem (simplified characters)",
        r"package/dist/songci/ci\.song\.\d+\.json",
        joined,
        unique=False,
    ),
}

SHIPPED = {"tang_wujue": Path(__file__).resolve().parent / "data" / "tang_wujue.txt"}
BUILTIN = "builtin:"  # task.corpus=builtin:NAME reads SHIPPED[NAME]


def builtin_path(corpus: str) -> Path:
    """The file of `builtin:NAME`; `CorpusError` naming the shipped corpora for another name."""
    name = corpus[len(BUILTIN) :]
    if name not in SHIPPED:
        shipped = ", ".join(BUILTIN + n for n in SHIPPED)
        raise CorpusError(f"corpus {corpus}: no such shipped corpus; shipped: {shipped}")
    return SHIPPED[name]


def cache_dir() -> Path:
    """Where corpora are built: `$RNN_JAX_CACHE/corpora`, else `~/.cache/rnn_jax/corpora`."""
    root = os.environ.get("RNN_JAX_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "rnn_jax") / "corpora"


def sha512_b64(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def check_tarball(path: Path, dataset: Dataset) -> None:
    got = sha512_b64(path)
    if got != dataset.sha512:
        raise CorpusError(f"{path}: sha512 {got} is not {dataset.filename}'s {dataset.sha512}; a wrong or damaged file")


def _progress(total: Optional[int], desc: str, unit: str = "B"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr, leave=False, disable=None)


def download(dataset: Dataset, dest: Path, timeout: float = 30.0) -> Path:
    """`dataset`'s tarball at `dest`, fetched with a progress bar and checked; `CorpusError` in
    one line (what to download and where to put it) when the network cannot give it."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(dataset.url, timeout=timeout) as response, open(part, "wb") as out:
            size = response.headers.get("Content-Length")
            with _progress(int(size) if size else None, dataset.filename) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CorpusError(
            f"cannot download {dataset.url} ({reason}); download it and put it at {dest}, or pass --from FILE"
        ) from None
    try:
        check_tarball(part, dataset)
    except CorpusError:
        part.unlink()
        raise CorpusError(
            f"{dataset.url}: the download's sha512 is not {dataset.sha512}; nothing was kept, try again"
        ) from None
    part.replace(dest)
    return dest


class _Reading:
    """A binary file whose reads move a progress bar (the tarball is read as one stream)."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def read(self, n=-1):
        block = self.f.read(n)
        self.bar.update(len(block))
        return block


def poems(tarball: Path, source: Source) -> list[str]:
    """The lines of `source` from the tarball: its members in numeric order (as the collection
    numbers them: poet.tang.0, 1000, 2000, ...), each member's poems in their order."""
    members = re.compile(source.members)
    found = {}
    with open(tarball, "rb") as raw, _progress(tarball.stat().st_size, tarball.name) as bar:
        with tarfile.open(fileobj=_Reading(raw, bar), mode="r|gz") as tar:
            for member in tar:
                if member.isfile() and members.fullmatch(member.name):
                    lines = (source.poem("".join(p.get("paragraphs", []))) for p in json.load(tar.extractfile(member)))
                    found[member.name] = [line for line in lines if line is not None]
    if not found:
        raise CorpusError(f"{tarball}: no member matches {source.members}; not the chinese-poetry tarball?")

    def order(name: str):
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]

    lines = [line for name in sorted(found, key=order) for line in found[name]]
    return list(dict.fromkeys(lines)) if source.unique else lines


def build_corpus(
    name: str, *, cache: Optional[Path] = None, tarball: Optional[Path] = None, dataset: Dataset = CHINESE_POETRY
) -> Path:
    """The path of corpus `name` (a key of `SOURCES`), built into `cache` (default `cache_dir()`)
    unless already there. The tarball is `tarball` when given (checked, not copied), else the one
    in the cache, else downloaded into the cache. Raises `CorpusError` in one line."""
    if name not in SOURCES:
        raise CorpusError(f"corpus {name!r}: unknown; allowed: {', '.join(SOURCES)}")
    cache = Path(cache) if cache is not None else cache_dir()
    out = cache / f"{name}.txt"
    if out.is_file():
        return out
    if tarball is not None:
        tarball = Path(tarball).expanduser()
        if not tarball.is_file():
            raise CorpusError(f"--from {tarball}: no such file")
        check_tarball(tarball, dataset)
    else:
        tarball = cache / dataset.filename
        if tarball.is_file():
            try:
                check_tarball(tarball, dataset)
            except CorpusError as e:
                raise CorpusError(f"{e}; delete it to download it again") from None
        else:
            download(dataset, tarball)
    lines = poems(tarball, SOURCES[name])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(out)
    return out
