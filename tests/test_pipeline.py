"""The real `dvc repro` in a temporary git repository, on tiny data and a tiny BERT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"fetch", "prepare", "baseline", "teacher", "logits", "student", "evaluate"}


def run(*args, cwd, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
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
    """A copy of this project's pipeline with tiny parameters, committed to a fresh git repo."""
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
    run("git", "add", "-A", cwd=path)
    run("git", "commit", "-qm", "tiny project", cwd=path)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, archive, tiny_bert):
    path = make_project(tmp_path_factory.mktemp("e2e") / "project", archive, tiny_bert)
    first = run("dvc", "repro", cwd=path)
    assert ran(first.stdout) == STAGES
    path.joinpath("first_run.log").write_text(first.stdout)
    return path


def test_full_repro_writes_every_metric(project):
    for name in ("baseline", "teacher", "student"):
        metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
        assert 0 <= metrics["accuracy"] <= 1 and metrics["n"] == 12
        assert {"neg", "pos", "macro avg", "weighted avg"} <= set(metrics["report"])
    student = json.loads((project / "metrics" / "student.json").read_text())
    assert "agreement_with_teacher" in student and "passed" in student["gate"]
    log = (project / "first_run.log").read_text()
    assert log.count("weighted avg") == 3  # evaluate prints the three reports
    shown = json.loads(run("dvc", "metrics", "show", "--json", cwd=project).stdout)
    files = next(iter(shown.values()))["data"]
    assert {Path(f).name for f in files} == {"baseline.json", "teacher.json", "student.json"}


def test_second_repro_does_nothing(project):
    assert changed(project) == set()
    assert ran(run("dvc", "repro", cwd=project).stdout) == set()


def test_student_key_reruns_only_student_and_evaluate(project):
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-qm", "first run", cwd=project)
    set_param(project, "student", "alpha", 2.0)
    assert changed(project) == {"student"}  # dvc status lists the stages whose own inputs changed
    assert ran(run("dvc", "repro", cwd=project).stdout) == {"student", "evaluate"}
    diff = json.loads(run("dvc", "metrics", "diff", "--json", cwd=project).stdout)
    assert all(Path(f).name in {"baseline.json", "teacher.json", "student.json"} for f in diff)


def test_teacher_key_reruns_teacher_and_what_follows(project):
    set_param(project, "teacher", "epochs", 2)
    assert changed(project) == {"teacher"}
    assert ran(run("dvc", "repro", cwd=project).stdout) == {"teacher", "logits", "student", "evaluate"}
    current = yaml.safe_load((project / "params.yaml").read_text())["teacher"]["truncation"]
    set_param(project, "teacher", "truncation", "head" if current == "head+tail" else "head+tail")
    assert changed(project) == {"teacher", "logits"}
