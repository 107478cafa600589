"""User mistakes end in one line on stderr and a non-zero exit, never a traceback."""

import json

import pytest
import yaml
from conftest import assert_one_line_error, bert2lr


def test_unknown_and_mistyped_parameters(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"student": {"alhpa": 1}}))
    assert_one_line_error(bert2lr("fetch", "--out-dir", "x", cwd=tmp_path), "params.yaml", "student.alhpa")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"split": {"n_test": "many"}}))
    assert_one_line_error(bert2lr("prepare", "--data", "a", "--unlabeled-data", "a", "--test-data", "a", "--out-dir", "s", cwd=tmp_path),
                          "'split.n_test' must be an integer, got 'many'")


@pytest.mark.parametrize("content, fragments", [
    (b"teacher:\n  warmup_ratio: 2.0\n", ["params.yaml: 'teacher.warmup_ratio' must be between 0 and 1, got 2.0"]),
    (b"split:\n  seed: -1\n", ["'split.seed' must be between 0 and 4294967295, got -1"]),
    (b"student:\n  gold_weight: .nan\n", ["'student.gold_weight' must be a finite number, got nan"]),
    (b"baseline:\n  ngram_max: 2147483647\n", ["'baseline.ngram_max' must be between 1 and 8"]),
    (b"logits:\n  batch_size: 0\n", ["'logits.batch_size' must be between 1 and 4096, got 0"]),
    (b"fetch:\n  sources: [{source: a, hash: 'md5:0'}]\n", ["'fetch.sources[0].hash' must be"]),
    (b"teacher:\n  model: caf\xe9\n", ["params.yaml: not UTF-8 text"]),
    (b"- a list\n", ["params.yaml: expected a mapping of stage groups, got list"]),
    (b"student: 3\n", ["'student' must be a mapping of keys, got 3"]),
])
def test_hostile_parameters_end_in_one_line(tmp_path, content, fragments):
    (tmp_path / "params.yaml").write_bytes(content)
    assert_one_line_error(bert2lr("fetch", "--out-dir", "x", "--params", "params.yaml", cwd=tmp_path), *fragments)
    assert not (tmp_path / "x").exists()


def test_max_length_beyond_the_teacher_is_refused_before_any_work(tmp_path, tiny_bert):
    # tiny_bert has 64 positions; the labeled split does not even exist: the check comes first
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"teacher": {"model": str(tiny_bert), "max_length": 128, "head_tokens": 12}}))
    assert_one_line_error(bert2lr("teacher", "--labeled", "missing.jsonl", "--out", "t", "--training", "tt", cwd=tmp_path),
                          "params.yaml: 'teacher.max_length' is 128, but the teacher", "at most 64 tokens")
    assert_one_line_error(bert2lr("logits", "--teacher", str(tiny_bert), "--onnx", "o", "--reviews", "u.jsonl",
                                  "--out", "l.npz", "--info", "i.json", cwd=tmp_path), "at most 64 tokens")


def test_params_command_prints_the_declared_table_and_the_values(tmp_path):
    from bert2lr.params import Params, parameters_table

    result = bert2lr("params", "--markdown", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == parameters_table()
    (tmp_path / "params.yaml").write_text("student:\n  alpha: 2\n")
    shown = json.loads(bert2lr("params", cwd=tmp_path).stdout)
    assert shown["student"]["alpha"] == 2.0 and shown["split"]["n_unlabeled"] == Params().split.n_unlabeled


def test_missing_archive(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"fetch": {"sources": ["nowhere/aclImdb_v1.tar.gz"]}}))
    assert_one_line_error(bert2lr("fetch", "--out-dir", "data/raw", cwd=tmp_path),
                          "tried: nowhere/aclImdb_v1.tar.gz")
    (tmp_path / "params.yaml").write_text("{}")
    assert_one_line_error(bert2lr("prepare", "--data", "data/raw/a.tar.gz", "--unlabeled-data", "data/raw/a.tar.gz", "--test-data", "data/raw/a.tar.gz", "--out-dir", "s", cwd=tmp_path),
                          "data/raw/a.tar.gz: archive not found")


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def test_teacher_that_is_not_a_model(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": {"model": "./not-a-model"}}))
    (tmp_path / "labeled.jsonl").write_text('{"id": "train/pos/1_9", "text": "good", "label": 1}\n')
    assert_one_line_error(bert2lr("teacher", "--labeled", "labeled.jsonl", "--out", "t", "--training", "tt", cwd=tmp_path),
                          "./not-a-model: not a transformers model folder")


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
@pytest.mark.parametrize("content, fragment", [
    ("", "labeled.jsonl: the split is empty"),
    ('{"id": "a", "text": "t"}\n', "labeled.jsonl:1: expected 'label' 0 or 1"),
    ("not json\n", "labeled.jsonl:1: not a JSON object"),
])
def test_bad_splits(tmp_path, content, fragment):
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "labeled.jsonl").write_text(content)
    assert_one_line_error(bert2lr("baseline", "--labeled", "labeled.jsonl", "--out", "b", cwd=tmp_path), fragment)


@pytest.mark.slow  # the CLI end to end, in subprocesses that import the heavy libraries
def test_report_needs_metrics(tmp_path):
    assert_one_line_error(bert2lr("report", "--metrics-dir", "metrics", cwd=tmp_path), "baseline metrics not found")


def test_a_labeled_split_without_words_is_one_line(tmp_path):
    from bert2lr.stages.baseline import train_baseline
    from bert2lr.errors import UserError
    from bert2lr.params import BaselineParams

    with pytest.raises(UserError, match="baseline: no n-gram to learn from in the 2 labeled reviews"):
        train_baseline(["", "!"], [0, 1], tmp_path / "baseline", BaselineParams())
    assert not (tmp_path / "baseline").exists()
