"""The lineage record's git fields: which commit made a student, and whether its code was committed."""

import subprocess

from bert2lr.lineage import _git


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_only_code_pipeline_and_parameters_make_the_tree_dirty(tmp_path):
    for name in ("src/bert2lr/x.py", "dvc.yaml", "params.yaml", "metrics/student.json", "dvc.lock", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("init", "-q", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first", cwd=tmp_path)
    record = _git(tmp_path)
    assert len(record["commit"]) == 40 and record["dirty"] is False
    # What the run itself writes (dvc.lock, tracked metrics) and prose leave it clean.
    for name in ("metrics/student.json", "dvc.lock", "README.md"):
        (tmp_path / name).write_text("1\n")
    assert _git(tmp_path)["dirty"] is False
    # Changed code or parameters, or a new module that is not committed, make it dirty.
    for name in ("params.yaml", "src/bert2lr/x.py", "src/bert2lr/new.py"):
        (tmp_path / name).write_text("1\n")
        assert _git(tmp_path)["dirty"] is True, name
        git("checkout", "-q", "--", "params.yaml", "src", cwd=tmp_path)
        (tmp_path / "src/bert2lr/new.py").unlink(missing_ok=True)
        assert _git(tmp_path)["dirty"] is False


def test_outside_git_the_fields_are_null(tmp_path):
    assert _git(tmp_path) == {"commit": None, "dirty": None}
