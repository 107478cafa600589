"""The deployable student: torch-free loading, tamper and gate checks, predict (the HTTP service: test_serve.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bert2lr.serving.deploy import load_student, predictions
from bert2lr.errors import UserError
from bert2lr.files import read_reviews


def with_gate(src, dst, passed: bool):
    shutil.copytree(src, dst)
    record = json.loads((dst / "lineage.json").read_text())
    record["gate"]["passed"] = passed
    (dst / "lineage.json").write_text(json.dumps(record))
    return dst


@pytest.fixture
def gated(student_dir, tmp_path):
    return with_gate(student_dir, tmp_path / "gated", True)


def test_loading_and_predicting_imports_neither_torch_nor_transformers(gated):
    code = (
        "import sys; from bert2lr.serving.deploy import load_student, predictions;"
        f"m, _ = load_student({str(gated)!r}); print(predictions(m, ['great film', ''])[0]['label']);"
        "bad = [x for x in ('torch', 'transformers', 'sklearn', 'scipy') if x in sys.modules];"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"pos", "neg"}


def test_predictions_match_the_evaluated_model(workspace, gated):
    root, _, _ = workspace
    model, lineage = load_student(gated)
    reviews = read_reviews(root / "splits" / "test_full.jsonl", need_labels=True)
    rows = predictions(model, [r["text"] for r in reviews])
    accuracy = np.mean([(row["label"] == "pos") == (r["label"] == 1) for row, r in zip(rows, reviews)])
    assert round(float(accuracy), 4) == lineage["metrics"]["test_full_accuracy"]
    assert all((row["probability"] > 0.5) == (row["logit"] > 0) for row in rows)


def test_changed_missing_or_truncated_students_are_refused(gated, tmp_path):
    changed = shutil.copytree(gated, tmp_path / "changed")
    data = bytearray((changed / "model.npz").read_bytes())
    data[-100] ^= 1
    (changed / "model.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match its lineage record"):
        load_student(changed)
    bare = shutil.copytree(gated, tmp_path / "bare")
    (bare / "lineage.json").unlink()
    with pytest.raises(UserError, match="no lineage.json beside it"):
        load_student(bare)
    with pytest.raises(UserError, match="student model not found"):
        load_student(tmp_path / "nowhere")


def test_a_student_that_failed_its_gate_needs_allow_ungated(student_dir, tmp_path):
    failed = with_gate(student_dir, tmp_path / "failed", False)
    with pytest.raises(UserError, match="failed its quality gate.*--allow-ungated"):
        load_student(failed)
    model, _ = load_student(failed, allow_ungated=True)
    assert model.n_features > 0
    cli = subprocess.run([sys.executable, "-m", "bert2lr", "predict", "good", "--model", str(failed)],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "failed its quality gate" in cli.stderr and "Traceback" not in cli.stderr


def test_a_gate_passed_as_the_string_false_is_refused(student_dir, tmp_path):
    quoted = with_gate(student_dir, tmp_path / "quoted", "false")
    with pytest.raises(UserError, match="lineage.json: gate.passed is 'false'; expected true or false$"):
        load_student(quoted, allow_ungated=True)
    cli = subprocess.run([sys.executable, "-m", "bert2lr", "predict", "good", "--model", str(quoted)],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert cli.stderr.splitlines() == [f"bert2lr: error: {quoted / 'lineage.json'}: gate.passed is 'false'; "
                                       "expected true or false"]


def set_field(record: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        record = record[key]
    if value is KeyError:
        del record[last]
    else:
        record[last] = value


@pytest.mark.parametrize("field, value, message", [
    ("model.sha256", "ABC", "model.sha256 is 'ABC'; expected 64 lowercase hex digits"),
    ("model.sha256", 12, "model.sha256 is 12; expected 64 lowercase hex digits"),
    ("gate.passed", 1, "gate.passed is 1; expected true or false"),
    ("gate.passed", None, "gate.passed is None; expected true or false"),
    ("gate.passed", KeyError, "gate.passed is missing; expected true or false"),
    ("gate", [True], "gate is [True]; expected an object"),
    ("gate.baseline_accuracy", "0.8", "gate.baseline_accuracy is '0.8'; expected a finite number"),
    ("metrics.accuracy", "0.9", "metrics.accuracy is '0.9'; expected a finite number"),
    ("metrics.accuracy", float("nan"), "metrics.accuracy is nan; expected a finite number"),
    ("metrics.accuracy", True, "metrics.accuracy is True; expected a finite number"),
    ("metrics.n_test", -1, "metrics.n_test is -1; expected a whole number >= 0"),
    ("metrics", KeyError, "metrics is missing; expected an object"),
    ("format", "something/1", "format is 'something/1'; expected 'bert2lr-lineage/1' or 'bert2lr-lineage/2'"),
    ("splits.test.sha256", None, "splits.test.sha256 is None; expected 64 lowercase hex digits"),
    ("versions", ["bert2lr"], "versions is ['bert2lr']; expected an object"),
    ("reviews.labeled", [1, 2], "reviews.labeled is [1, 2]; expected a list of strings"),
])
def test_a_malformed_lineage_record_is_refused_with_one_line_naming_the_field(gated, tmp_path, field, value,
                                                                             message):
    spoiled = shutil.copytree(gated, tmp_path / "spoiled")
    record = json.loads((spoiled / "lineage.json").read_text())
    set_field(record, field, value)
    (spoiled / "lineage.json").write_text(json.dumps(record))
    with pytest.raises(UserError) as error:
        load_student(spoiled)
    assert str(error.value) == f"{spoiled / 'lineage.json'}: {message}"


def test_a_lineage_record_that_is_no_object_is_refused(gated, tmp_path):
    spoiled = shutil.copytree(gated, tmp_path / "spoiled")
    (spoiled / "lineage.json").write_text("[]")
    with pytest.raises(UserError, match="lineage.json: not a bert2lr lineage record \\(expected a JSON object\\)$"):
        load_student(spoiled)


@pytest.mark.slow  # the CLI end to end, three subprocesses
def test_predict_cli_reads_arguments_files_and_stdin(gated, tmp_path):
    review = tmp_path / "review.txt"
    review.write_text("a wonderful, moving film\nwith two lines", encoding="utf-8")
    args = [sys.executable, "-m", "bert2lr", "predict", "--model", str(gated)]
    from_args = subprocess.run(args + ["great", "awful"], capture_output=True, text=True, check=True)
    from_file = subprocess.run(args + ["--file", str(review)], capture_output=True, text=True, check=True)
    from_stdin = subprocess.run(args, input="great\nawful\n", capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in from_args.stdout.splitlines()]
    assert len(rows) == 2 and set(rows[0]) == {"label", "probability", "logit", "probabilities"}
    assert [json.loads(line) for line in from_stdin.stdout.splitlines()] == rows
    assert len(from_file.stdout.splitlines()) == 1
