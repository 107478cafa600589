"""Tables of one's own as DVC tracks and `bert2lr audit` checks them, through the real `dvc repro`.

One project (conftest's table_project, also test_table_pipeline's): a labeled CSV, a separate unlabeled
JSON Lines table and a separate test CSV, inside the project and named relative to it in params.yaml,
with fetch.sources pointing nowhere. A test that edits a table works on its own copy.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import TABLE_CLASSES, TABLES
from bert2lr.files import read_reviews
from dvc_project import STAGES, changed, copy_project, ran, run

pytestmark = pytest.mark.slow

# What a table's data reach: prepare and assemble name the tables as dependencies.
NAME_THE_TABLES = {"prepare", "assemble"}
# What an edited row of the transfer set's first shard and of the test sample reruns: neither the
# baseline nor the teacher learns from them, and the transfer set's other shards are as they were.
AFTER_UNLABELED_AND_TEST = STAGES - {"fetch", "baseline", "teacher", "export", "logits@1", "logits@2"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(project: Path):
    return run("bert2lr", "audit", "--verify", cwd=project, check=False)


def statuses(result) -> dict[str, tuple[str, str]]:
    """{what: (status, detail)} per line of `audit --verify` (status 9 wide, what 17 wide)."""
    return {line[9:26].strip(): (line[:9].strip(), line[26:]) for line in result.stdout.splitlines()}


def split_ids(project: Path, split: str) -> list[str]:
    path = project / "data" / "splits" / (split if split == "unlabeled" else f"{split}.jsonl")  # shards: a folder
    return [review["id"] for review in read_reviews(path)]


def edit_row(table: Path, row_id: str) -> None:
    """Change the body of one row in place (ids are row-<n>, n counting data rows from 1)."""
    n = int(row_id.removeprefix("row-"))
    if table.suffix == ".csv":
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        rows[n][2] += " modifié"  # rows[0] is the header
        with open(table, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
    else:
        lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
        row = json.loads(lines[n - 1])
        row["body"] += " modifié"
        lines[n - 1] = json.dumps(row, ensure_ascii=False) + "\n"
        table.write_text("".join(lines), encoding="utf-8")


def test_a_table_project_needs_no_imdb(table_project):
    project, output = table_project
    assert ran(output) == STAGES
    sources = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))["fetch"]["sources"]
    assert [Path(s).exists() for s in sources] == [False]
    assert list((project / "data" / "raw").iterdir()) == []  # fetch ran, wrote its folder, fetched nothing
    assert changed(project) == set()
    full = [json.loads(line) for line in (project / "data/splits/test_full.jsonl").read_text("utf-8").splitlines()]
    assert len(full) == 24 and {TABLE_CLASSES[r["label"]] for r in full} == set(TABLE_CLASSES)  # the test table's
    assert len(split_ids(project, "unlabeled")) == 30


def test_audit_names_each_table_and_its_hash_and_passes(table_project):
    project, _ = table_project
    shown = run("bert2lr", "audit", cwd=project).stdout
    assert "data           source table" in shown
    for role, name in TABLES.items():
        assert f"{role:<10} {name}  sha256 {sha256(project / name)}" in shown, shown
    assert f"classes        {', '.join(TABLE_CLASSES)}" in shown
    result = verify(project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = statuses(result)
    assert {what: status for what, (status, _) in lines.items()} == {
        what: "ok" for what in ("model", "data labeled", "data unlabeled", "data test", "split labeled",
                                "split unlabeled", "split test", "split test_full", "teacher", "teacher logits",
                                "sentences", "sentence logits", "dvc.lock")}
    for role, name in TABLES.items():
        assert lines[f"data {role}"][1] == f"{project / name}  sha256 {sha256(project / name)[:16]}…"


def test_a_table_edited_in_place_is_seen_by_dvc_and_audit(table_project, tmp_path):
    project = copy_project(table_project[0], tmp_path / "project")
    # The separate unlabeled and test tables: one row of each sample edited.
    edit_row(project / TABLES["unlabeled"], split_ids(project, "unlabeled")[0])
    edit_row(project / TABLES["test"], split_ids(project, "test")[0])
    assert changed(project) == NAME_THE_TABLES
    result = verify(project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = statuses(result)
    for role in ("unlabeled", "test"):
        status, detail = lines[f"data {role}"]
        assert status == "MISMATCH" and f"{project / TABLES[role]}  sha256 {sha256(project / TABLES[role])[:16]}" \
            in detail and "changed since the student was made" in detail
    assert lines["data labeled"][0] == "ok" and lines["dvc.lock"][0] == "MISMATCH"
    assert f"{TABLES['test']} modified" in lines["dvc.lock"][1]
    assert "verification failed for: data unlabeled, data test, dvc.lock" in result.stderr
    assert ran(run("dvc", "repro", cwd=project).stdout) == AFTER_UNLABELED_AND_TEST

    # The labeled CSV: one row of the labeled sample edited in place reruns everything after fetch.
    edited = split_ids(project, "labeled")[0]
    edit_row(project / TABLES["labeled"], edited)
    assert changed(project) == NAME_THE_TABLES
    result = verify(project)
    assert result.returncode == 1 and statuses(result)["data labeled"][0] == "MISMATCH"
    # (the sentences are drawn from the transfer set and the test sample, which are as they were)
    assert ran(run("dvc", "repro", cwd=project).stdout) == STAGES - {"fetch", "sentences"}
    labeled = {r["id"]: r for r in map(json.loads, (project / "data/splits/labeled.jsonl").read_text("utf-8")
                                       .splitlines())}
    assert labeled[edited]["text"].endswith("modifié")
    assert changed(project) == set()
    result = verify(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result)["data labeled"][1].endswith(f"sha256 {sha256(project / TABLES['labeled'])[:16]}…")
