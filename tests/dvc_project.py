"""A copy of this project's pipeline in a fresh git + DVC repository, on tiny data and a tiny BERT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARDS = {"logits@0", "logits@1", "logits@2"}  # the transfer set's shards (TINY_PARAMS: 20 reviews, 8 a shard)
# the teacher's logits: the transfer set's shards, the test sample and half, and the sentences of each
LOGITS = {*SHARDS, "test_logits", "test_full_logits", "test_sentence_logits", "transfer_sentence_logits"}
STAGES = {"fetch", "prepare", "baseline", "teacher", "export", "sentences", *LOGITS, "student", "validate", "evaluate",
          "short_texts", "assemble", "curve", "speed"}
# `dvc` and `bert2lr` run as modules of this interpreter, not from PATH. The stages' commands call
# `bert2lr` through the shell, as dvc.yaml says, so PATH holds this interpreter's folder: that is what
# `. .venv/bin/activate` in the README's main command does. It hides nothing: CI runs that command
# verbatim in a fresh clone with no venv on PATH (.ci/newcomer).
TOOLS = {"dvc": [sys.executable, "-m", "dvc"], "bert2lr": [sys.executable, "-m", "bert2lr"]}
ENV = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(*args, cwd, check=True):
    command = TOOLS.get(args[0], [args[0]]) + list(args[1:])
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **ENV}, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def changed(project: Path) -> set[str]:
    return set(json.loads(run("dvc", "status", "--json", cwd=project).stdout))


def set_param(project: Path, group: str, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[group][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def make_project(path: Path, archive: Path, tiny_bert: Path) -> Path:
    """This project's dvc.yaml and code with tiny parameters, committed to a fresh git repo."""
    from conftest import TINY_PARAMS

    path.mkdir(parents=True)
    shutil.copy(ROOT / "dvc.yaml", path / "dvc.yaml")
    shutil.copytree(ROOT / "src", path / "src", ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())  # dvc needs every declared key
    for group, values in TINY_PARAMS.items():
        params[group].update(values)
    params["fetch"]["sources"] = [str(archive)]
    params["teacher"]["model"] = str(tiny_bert)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    run("git", "init", "-q", cwd=path)
    run("dvc", "init", "-q", cwd=path)
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")  # the custom plot templates
    run("git", "add", "-A", cwd=path)
    run("git", "commit", "-qm", "tiny project", cwd=path)
    return path


def commit(project: Path, message: str) -> None:
    """Everything in the workspace, committed to git (what dvc.yaml's stages wrote: dvc.lock, .gitignore)."""
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-qm", message, cwd=project)


def reproduce(path: Path, archive: Path, tiny_bert: Path) -> tuple[Path, str]:
    """make_project, then a full `dvc repro`, committed; returns the project and the repro's output."""
    make_project(path, archive, tiny_bert)
    first = run("dvc", "repro", cwd=path)
    commit(path, "first run")
    return path, first.stdout


def copy_project(project: Path, dest: Path) -> Path:
    """An independent copy (workspace, git history, DVC cache) for a test that changes it."""
    shutil.copytree(project, dest, symlinks=True)
    return dest
