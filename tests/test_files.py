"""Atomic writes survive a writer killed with SIGKILL at every step: the target keeps the old output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bert2lr import files
from bert2lr.files import NO_EXCHANGE_ENV, PAUSE_ENV, atomic_path

# A writer that replaces a folder (or a file) with "new" content, in a process of its own; it says
# "writing" halfway through so that the test can kill it in the middle of the block.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bert2lr.files import atomic_path
    target, directory, stall = Path(sys.argv[1]), sys.argv[2] == "dir", sys.argv[3] == "stall"
    with atomic_path(target, directory=directory) as tmp:
        first = tmp / "a.txt" if directory else tmp
        first.write_text("new a")
        if stall:
            print("writing", file=sys.stderr, flush=True)
            time.sleep(600)
        if directory:
            (tmp / "b.txt").write_text("new b")
""")


def old_output(target: Path, directory: bool) -> None:
    if directory:
        target.mkdir()
        (target / "a.txt").write_text("old a")
        (target / "b.txt").write_text("old b")
    else:
        target.write_text("old a")


def content(target: Path) -> dict[str, str] | str:
    if target.is_dir():
        return {p.name: p.read_text() for p in sorted(target.iterdir())}
    return target.read_text()


OLD_DIR, NEW_DIR = {"a.txt": "old a", "b.txt": "old b"}, {"a.txt": "new a", "b.txt": "new b"}


def kill_writer(target: Path, directory: bool, pause: str | None, exchange: bool = True) -> None:
    """Start the writer, wait until it reaches `pause` (or the middle of its block), SIGKILL it."""
    env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, NO_EXCHANGE_ENV)}
    if pause:
        env[PAUSE_ENV] = pause
    if not exchange:
        env[NO_EXCHANGE_ENV] = "1"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "dir" if directory else "file",
                               "run" if pause else "stall"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = writer.stderr.readline()
        assert line.strip() in {"writing", f"bert2lr: paused at {pause}"}, line + writer.stderr.read()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


@pytest.mark.parametrize("directory, pause, exchange", [
    (False, None, True),            # killed while writing the temporary file
    (False, "written", True),       # killed after writing, before the rename
    (True, None, True),             # killed while filling the temporary folder
    (True, "written", True),        # killed before the swap
    (True, "exchanged", True),      # killed after the atomic swap, before the old folder is removed
    (True, "moved-aside", False),   # fallback without renameat2: killed between its two renames
])
def test_a_killed_writer_leaves_the_old_output_and_the_next_write_cleans_up(tmp_path, directory, pause, exchange):
    if pause == "exchanged" and files._exchange is None:
        pytest.skip("renameat2 is not in this libc")
    target = tmp_path / ("student" if directory else "model.npz")
    old_output(target, directory)
    kill_writer(target, directory, pause, exchange)
    assert leftovers(target), "the killed writer should have left its temporary behind"
    if pause == "exchanged":
        assert content(target) == NEW_DIR  # the swap happened in one step
    elif pause == "moved-aside":
        # The only window without renameat2: the next writer (or reader through clean_leftovers)
        # puts the complete old folder back before anything else.
        assert not target.exists()
        files.clean_leftovers(target)
        assert content(target) == OLD_DIR
    else:
        assert content(target) == (OLD_DIR if directory else "old a")
    with atomic_path(target, directory=directory) as tmp:
        if directory:
            (tmp / "a.txt").write_text("new a")
            (tmp / "b.txt").write_text("new b")
        else:
            tmp.write_text("new a")
    assert content(target) == (NEW_DIR if directory else "new a")
    assert leftovers(target) == []


def test_folders_are_swapped_in_one_step_where_linux_can(tmp_path):
    if files._exchange is None:
        pytest.skip("renameat2 is not in this libc")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "x").write_text("b")
    if not files._exchange(a, b):
        pytest.skip("this filesystem cannot exchange")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_a_live_writers_temporaries_are_left_alone(tmp_path):
    target = tmp_path / "out.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        theirs = tmp_path / f".out.json.tmp-{live.pid}-abc123"
        theirs.write_text("another writer's half file")
        with atomic_path(target) as tmp:
            tmp.write_text("{}")
        assert theirs.exists() and target.read_text() == "{}"
    finally:
        live.kill()
        live.wait()
    with atomic_path(target) as tmp:
        tmp.write_text("[]")
    assert not theirs.exists()


def test_a_failing_block_keeps_the_old_output_and_leaves_nothing(tmp_path):
    target = tmp_path / "student"
    old_output(target, True)
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("the stage failed")
    assert content(target) == OLD_DIR and leftovers(target) == []
