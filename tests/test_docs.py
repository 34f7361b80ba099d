"""The docs run as written: README.md and every docs/*.md page.

Each page's Python blocks run in order in one namespace per page. Shell blocks are not run (many are
long trainings), but what they and the inline code spans name is checked: every `python -m rnn_jax.X`
module and `python FILE.py` script exists, every `group=NAME` choice is a file of `conf/<group>/`,
and every `section.key=value` is a field of that section's schema. Relative links point to files,
and docs/layout.md lists every module.
"""

import dataclasses
import importlib.util
import re
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
CHOICE = re.compile(r"(?<![\w./-])(experiment|sweep|model|optim|task|logger|backend|preset)=(\S+)")
SETTING = re.compile(r"(?<![\w./-])(train|model|task|optim|backend|logger)\.([\w.]+)=")
CONF_DIR = {"preset": "bench/preset"}


def blocks(page, language):
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def commands(page):
    """The lines of the page's shell blocks (continuation lines joined, comments dropped), and its
    inline code spans outside the blocks (`python -m ... task.bits=8` in the prose)."""
    text = "\n".join(blocks(page, "bash")).replace("\\\n", " ")
    lines = [line.split(" #")[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return lines + re.findall(r"`([^`\n]+)`", FENCE.sub("", page.read_text()))


PYTHON_PAGES = [page for page in PAGES if blocks(page, "python")]


def _check_readme(namespace, out):
    assert "(20, 4, 32)" in out  # the ten-line example's print


def _check_library(namespace, out):
    assert namespace["ys"].shape == (4, 50, 32) and namespace["yb"].shape == (4, 50, 48)
    assert callable(namespace["train_step"]) and issubclass(namespace["Tagger"], namespace["nn"].Module)


CHECKS = {"README.md": _check_readme, "library.md": _check_library}


def test_pages_with_examples_are_found():
    assert {"README.md", "library.md"} <= {page.name for page in PYTHON_PAGES}


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda page: page.name)
def test_python_blocks_run(page, capsys):
    namespace = {}
    for block in blocks(page, "python"):
        exec(compile(block, str(page.relative_to(ROOT)), "exec"), namespace)  # noqa: S102 (as a reader runs them)
    CHECKS.get(page.name, lambda *_: None)(namespace, capsys.readouterr().out)


def _schemas():
    from rnn_jax.build import MODEL_CONFIGS
    from rnn_jax.driver.config import BackendConfig, TrainConfig
    from rnn_jax.driver.loggers import LoggerConfig
    from rnn_jax.driver.optim import OPTIM_CONFIGS
    from rnn_jax.tasks.registry import TASKS

    return {
        "train": [TrainConfig],
        "backend": [BackendConfig],
        "logger": [LoggerConfig],
        "model": list(MODEL_CONFIGS.values()),
        "optim": list(OPTIM_CONFIGS.values()),
        "task": [spec.config for spec in TASKS.values()],
    }


def _has_key(schema, parts):
    """Whether the dotted key `parts` names a field of the dataclass `schema` (through nested ones)."""
    fields = {f.name for f in dataclasses.fields(schema)}
    if parts[0] not in fields:
        return False
    if len(parts) == 1:
        return True
    inner = typing.get_type_hints(schema)[parts[0]]
    inner = next((t for t in typing.get_args(inner) if dataclasses.is_dataclass(t)), inner)  # Optional[X]
    return not dataclasses.is_dataclass(inner) or _has_key(inner, parts[1:])


def test_commands_name_what_exists():
    schemas = _schemas()
    missing = []
    for page in PAGES:
        for line in commands(page):
            for module in re.findall(r"python -m (rnn_jax[\w.]*)", line):
                if module.islower() and importlib.util.find_spec(module) is None:  # not a placeholder (NAME)
                    missing.append(f"{page.name}: module {module}")
            for script in re.findall(r"python (\S+\.py)\b", line):
                if not (ROOT / script).is_file():
                    missing.append(f"{page.name}: script {script}")
            for group, value in CHOICE.findall(line):
                for name in re.split(r"[,|]", value.strip("[]")):
                    if not (ROOT / "conf" / CONF_DIR.get(group, group) / f"{name}.yaml").is_file():
                        missing.append(f"{page.name}: {group}={name}")
            for section, key in SETTING.findall(line):
                if (section, key) == ("model", "cell"):  # the cell is a choice: model=lstm
                    missing.append(f"{page.name}: model.cell (choose the cell with model=NAME)")
                elif not any(_has_key(schema, key.split(".")) for schema in schemas[section]):
                    missing.append(f"{page.name}: {section}.{key}")
    assert not missing, missing


def test_commands_are_found():
    lines = [line for page in PAGES for line in commands(page)]
    assert any("python -m rnn_jax.train -m sweep=capacity" in line for line in lines)
    assert any("model=lstm" in line for line in lines) and any("task.seeds=8" in line for line in lines)


def test_layout_lists_every_module():
    listed = (ROOT / "docs" / "layout.md").read_text()
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "rnn_jax").rglob("*.py"))
    assert len(modules) > 40
    assert [m for m in modules if f"`{m}`" not in listed] == []


def test_links_point_to_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", FENCE.sub("", page.read_text())):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []
