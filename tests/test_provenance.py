"""Which code a run ran: the commit and dirtiness of a git checkout, read from git's own files as the
reference; nothing from a folder that is not a checkout's top; and a git that hangs costs at most its
timeout."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from rnn_jax.driver.provenance import code_version, package_version


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A git repository with one commit of `a.txt` on branch `main`."""
    root = tmp_path_factory.mktemp("checkout")
    git(root, "init", "-q", "-b", "main")
    (root / "a.txt").write_text("one\n")
    git(root, "add", "a.txt")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return root


def test_a_clean_checkout_gives_its_head_commit(checkout):
    head = (checkout / ".git" / "refs" / "heads" / "main").read_text().strip()  # git's own record of the branch
    assert code_version(checkout) == {"version": package_version(), "commit": head, "dirty": False}


def test_a_changed_tracked_file_is_dirty_and_an_untracked_one_is_not(checkout):
    (checkout / "b.txt").write_text("untracked\n")
    assert code_version(checkout)["dirty"] is False
    (checkout / "a.txt").write_text("two\n")
    try:
        assert code_version(checkout)["dirty"] is True
    finally:
        (checkout / "a.txt").write_text("one\n")


def test_a_folder_inside_a_checkout_or_outside_any_has_no_commit(checkout, tmp_path):
    (checkout / "sub").mkdir(exist_ok=True)  # an installed package inside someone else's repository
    for folder in (checkout / "sub", tmp_path):
        assert code_version(folder) == {"version": package_version(), "commit": None, "dirty": None}


def test_a_hanging_git_costs_at_most_its_timeout(checkout, tmp_path, monkeypatch):
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")  # a child that holds the output open too
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    assert code_version(checkout, timeout=0.3) == {"version": package_version(), "commit": None, "dirty": None}
    assert time.perf_counter() - t0 < 2


def test_no_git_at_all_gives_the_version_alone(checkout, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert code_version(checkout) == {"version": package_version(), "commit": None, "dirty": None}
