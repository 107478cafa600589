"""User mistakes end in one line on stderr and a non-zero exit, never a traceback."""

import subprocess
import sys

import pytest
import yaml


def bert2lr(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bert2lr", *args], cwd=cwd, capture_output=True, text=True)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bert2lr: error: ")
    for fragment in fragments:
        assert fragment in last
    assert result.stdout == ""


def test_unknown_and_mistyped_parameters(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"student": {"alhpa": 1}}))
    assert_one_line_error(bert2lr("fetch", "--out", "x.tar.gz", cwd=tmp_path), "params.yaml", "student.alhpa")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {"n_test": "many"}}))
    assert_one_line_error(bert2lr("prepare", "--archive", "a", "--out-dir", "s", cwd=tmp_path),
                          "'split.n_test' must be an integer, got 'many'")


def test_missing_archive(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fetch": {"sources": ["nowhere/aclImdb_v1.tar.gz"]}}))
    assert_one_line_error(bert2lr("fetch", "--out", "data/raw/a.tar.gz", cwd=tmp_path),
                          "tried: nowhere/aclImdb_v1.tar.gz")
    (tmp_path / "params.yaml").write_text("{}")
    assert_one_line_error(bert2lr("prepare", "--archive", "data/raw/a.tar.gz", "--out-dir", "s", cwd=tmp_path),
                          "data/raw/a.tar.gz: archive not found")


def test_teacher_that_is_not_a_model(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": {"model": "./not-a-model"}}))
    (tmp_path / "labeled.jsonl").write_text('{"id": "train/pos/1_9", "text": "good", "label": 1}\n')
    assert_one_line_error(bert2lr("teacher", "--labeled", "labeled.jsonl", "--out", "t", cwd=tmp_path),
                          "./not-a-model: not a transformers model folder")


@pytest.mark.parametrize("content, fragment", [
    ("", "labeled.jsonl: the split is empty"),
    ('{"id": "a", "text": "t"}\n', "labeled.jsonl:1: expected 'label' 0 or 1"),
    ("not json\n", "labeled.jsonl:1: not a JSON object"),
])
def test_bad_splits(tmp_path, content, fragment):
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "labeled.jsonl").write_text(content)
    assert_one_line_error(bert2lr("baseline", "--labeled", "labeled.jsonl", "--out", "b", cwd=tmp_path), fragment)


def test_report_needs_metrics(tmp_path):
    assert_one_line_error(bert2lr("report", "--metrics-dir", "metrics", cwd=tmp_path), "baseline metrics not found")
