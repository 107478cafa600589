"""`bert2lr audit --verify` on a real DVC project: every file the record stands on, and the record itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dvc_project import copy_project, run

pytestmark = pytest.mark.slow


@pytest.fixture
def built(reproduced) -> Path:
    """The session's reproduced tiny project (conftest), read only."""
    return reproduced[0]


@pytest.fixture
def project(built, tmp_path) -> Path:
    return copy_project(built, tmp_path / "project")


def verify(project: Path, cwd: Path | None = None, path: str | None = None):
    args = ["bert2lr", "audit", "--verify"] + ([path] if path else [])
    return run(*args, cwd=cwd or project, check=False)


def edit_record(project: Path, change) -> None:
    record_file = project / "models" / "student" / "lineage.json"
    record = json.loads(record_file.read_text())
    change(record)
    record_file.chmod(0o644)
    record_file.write_text(json.dumps(record, indent=2))


def lines(result) -> dict[str, str]:
    """{what: status} per line of the verification."""
    return {line[9:26].strip(): line[:9].strip() for line in result.stdout.splitlines()}


def assert_fails_for(result, *what: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    failed = {w for w, status in lines(result).items() if status == "MISMATCH"}
    assert set(what) <= failed, result.stdout
    assert "verification failed for: " in result.stderr


def test_the_untouched_project_verifies(built):
    result = verify(built)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = lines(result)
    assert set(statuses.values()) == {"ok"} and "teacher" in statuses and "dvc.lock" in statuses
    record = json.loads((built / "models" / "student" / "lineage.json").read_text())
    teacher_files = set(record["teacher"]["files"])
    assert {"config.json", "tokenizer.json", "model.safetensors", "training.json"} <= teacher_files


@pytest.mark.parametrize("field", ["accuracy", "gate", "teacher hash"])
def test_an_edited_record_fails(project, field):
    def change(record):
        if field == "accuracy":
            record["metrics"]["accuracy"] = 0.999
        elif field == "gate":
            record["gate"]["passed"] = not record["gate"]["passed"]
        else:
            record["teacher"]["weights"]["sha256"] = "0" * 64
            record["teacher"]["files"]["model.safetensors"] = "0" * 64

    edit_record(project, change)
    result = verify(project)
    assert_fails_for(result, "dvc.lock", *(["teacher"] if field == "teacher hash" else []))
    assert "models/student/lineage.json modified" in result.stdout


def test_a_swapped_teacher_with_its_hash_rewritten_fails(project, tiny_bert):
    from bert2lr.files import file_digest, sha256_tree

    weights = project / "models" / "teacher" / "model.safetensors"
    weights.chmod(0o644)
    shutil.copyfile(tiny_bert / "model.safetensors", weights)  # the untrained model instead of the fine-tuned one

    def change(record):
        record["teacher"]["weights"]["sha256"] = sha256_tree(weights)
        record["teacher"]["files"]["model.safetensors"] = file_digest(weights)

    edit_record(project, change)
    result = verify(project)
    assert_fails_for(result, "dvc.lock")
    assert lines(result)["teacher"] == "ok"  # the record was made to agree; dvc.lock was not
    assert "models/teacher/model.safetensors modified" in result.stdout
    assert "models/student/lineage.json modified" in result.stdout


@pytest.mark.parametrize("name", ["tokenizer.json", "config.json"])
def test_an_edited_teacher_file_fails(project, name):
    file = project / "models" / "teacher" / name
    data = json.loads(file.read_text())
    data["bert2lr_test_edit"] = True
    file.chmod(0o644)
    file.write_text(json.dumps(data))
    result = verify(project)
    assert_fails_for(result, "teacher", "dvc.lock")
    assert f"changed: {name}" in result.stdout and f"models/teacher/{name} modified" in result.stdout


def test_verification_works_from_another_folder(built, project):
    result = verify(built, cwd=Path("/"), path=str(built / "models" / "student"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(lines(result).values()) == {"ok"}
    edit_record(project, lambda record: record["metrics"].update(accuracy=0.5))
    result = verify(project, cwd=Path("/"), path=str(project / "models" / "student"))
    assert_fails_for(result, "dvc.lock")
    assert "models/student/lineage.json modified" in result.stdout


def test_a_student_outside_any_dvc_project_is_said_so_and_fails(built, tmp_path):
    loose = shutil.copytree(built / "models" / "student", tmp_path / "elsewhere" / "student")
    result = verify(built, cwd=tmp_path, path=str(loose))
    assert_fails_for(result, "dvc project")
    assert "none above" in result.stdout
