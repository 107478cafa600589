"""teacher.source: an already fine-tuned classifier, or precomputed scores, in place of fine-tuning.

Unit tests run the stage functions on real files (the tiny random BERT made a three-class classifier,
scores tables in CSV and JSON Lines); the slow ones run the real `dvc repro` on the three-class table
of conftest.make_tables (string labels, two text columns, non-ASCII text).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CLASSIFIER_ORDER, assert_one_line_error, bert2lr
from dvc_project import changed, ran, run
from conftest import TABLE_CLASSES as CLASSES
from conftest import news_rows


def make_table(path: Path, n: int = 90) -> None:
    """A three-class CSV (label, title, body; non-ASCII), as conftest's tables."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["label", "title", "body"])
        writer.writeheader()
        writer.writerows(news_rows(n, 0))

from bert2lr.errors import UserError
from bert2lr.files import read_logits, write_reviews
from bert2lr.params import LogitsParams, TeacherParams, parse_params
from bert2lr.stages.logits import teacher_logits
from bert2lr.stages.teacher import PROBABILITY_FLOOR, check_classifier, record_scores, scores_logits

TEXTS = ["match équipe coupe", "北京 élection président", "logiciel puce réseau données", "le stade et la coupe"]
REVIEWS = [{"id": f"row-{i + 1}", "text": t} for i, t in enumerate(TEXTS)]
PROBABILITY_COLUMNS = {"monde": "p_monde", "sport": "p_sport", "tech": "p_tech"}


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def scores_params(path: Path, kind: str = "probabilities", columns=None, **more) -> TeacherParams:
    return TeacherParams(source="scores", scores_path=str(path), scores_kind=kind,
                         scores_columns=columns or PROBABILITY_COLUMNS, **more)


def one_line(fn, *args) -> str:
    with pytest.raises(UserError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- classifier ------------------------------------------------------------------------------------


def test_classifier_logits_are_a_direct_forward_pass_in_classes_order(tmp_path, tiny_classifier):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    p = TeacherParams(source="classifier", model=str(tiny_classifier), max_length=32, truncation="head")
    card = check_classifier(tmp_path / "teacher", tmp_path / "training", p, tuple(CLASSES))
    assert card["columns"] == [CLASSIFIER_ORDER.index(c) for c in CLASSES] == [1, 2, 0]
    assert json.loads((tmp_path / "training" / "metrics.json").read_text()) == \
        {"source": "classifier", "trained": False, "steps": 0}
    write_reviews(tmp_path / "test.jsonl", REVIEWS)
    teacher_logits(tmp_path / "teacher", tmp_path / "onnx", tmp_path / "test.jsonl", tmp_path / "test.npz",
                   tmp_path / "info.json", p, LogitsParams(batch_size=3, backend="torch"))
    got = read_logits(tmp_path / "test.npz", [r["id"] for r in REVIEWS], n_classes=3)

    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    with torch.no_grad():
        direct = np.concatenate([model(**tokenizer(t, truncation=True, max_length=32, return_tensors="pt")).logits
                                 .numpy() for t in TEXTS])
    np.testing.assert_allclose(got, direct[:, card["columns"]], atol=1e-5)
    assert not np.allclose(got, direct, atol=1e-5)  # the columns did move


def test_classifier_of_other_classes_is_one_line_naming_both_sets(tmp_path, tiny_classifier):
    p = TeacherParams(source="classifier", model=str(tiny_classifier))
    message = one_line(check_classifier, tmp_path / "t", tmp_path / "tr", p, ("monde", "sport", "culture"))
    assert "'tech', 'monde', 'sport'" in message and "'monde', 'sport', 'culture'" in message
    assert not (tmp_path / "t").exists() and not (tmp_path / "tr").exists()


def test_classifier_through_the_cli_exits_2(tmp_path, tiny_classifier):
    (tmp_path / "classes.json").write_text(json.dumps(["neg", "pos", "meh"]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": {"source": "classifier", "max_length": 32,
                                                                      "head_tokens": 12,
                                                                      "model": str(tiny_classifier)}}))
    result = bert2lr("teacher", "--labeled", "missing.jsonl", "--classes", "classes.json", "--out", "t",
                     "--training", "tr", cwd=tmp_path)
    assert_one_line_error(result, "its id2label names the classes 'tech', 'monde', 'sport'",
                          "'neg', 'pos', 'meh'")


# --- scores ----------------------------------------------------------------------------------------


def test_probabilities_become_log_probabilities_in_classes_order(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["p_tech", "p_sport", "p_monde"],
                     [[0.5, 0.3, 0.2], [0, 0, 1], [0.333, 0.333, 0.333]])
    ids, logits = scores_logits(scores_params(path), tuple(CLASSES), None)
    assert ids == ["row-1", "row-2", "row-3"]
    np.testing.assert_allclose(logits[0], np.log([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(logits[1], np.log([1, PROBABILITY_FLOOR, PROBABILITY_FLOOR]))
    np.testing.assert_allclose(logits[2], np.log([1 / 3] * 3))  # divided by its sum, 0.999


def test_logits_are_taken_as_they_are_and_ids_from_a_column(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps({"doc": d, "monde": a, "sport": b, "tech": c}) for d, a, b, c in
                              [("x", 1.5, -2, 0), (7, 0, 0, 3)]) + "\n", encoding="utf-8")
    p = scores_params(path, "logits", {c: c for c in CLASSES}, scores_id_column="doc")
    ids, logits = scores_logits(p, tuple(CLASSES), "doc")
    assert ids == ["x", "7"] and logits.tolist() == [[1.5, -2, 0], [0, 0, 3]]


def test_label_and_confidence_share_the_rest_equally(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["llm", "conf"], [["sport", 0.8], ["tech", 1]])
    p = scores_params(path, "label_confidence", {"label": "llm", "confidence": "conf"})
    _, logits = scores_logits(p, tuple(CLASSES), None)
    np.testing.assert_allclose(np.exp(logits[0]), [0.1, 0.8, 0.1])
    np.testing.assert_allclose(np.exp(logits[1]), [PROBABILITY_FLOOR, PROBABILITY_FLOOR, 1])


@pytest.mark.parametrize("kind, header, rows, columns, fragments", [
    ("probabilities", ["p_monde", "p_sport", "p_tech"], [[0.2, 0.3, 0.5], ["nan", 0.5, 0.5]], None,
     ["s.csv: row 2 (line 3): column 'p_monde' holds 'nan'; expected a finite number"]),
    ("logits", ["p_monde", "p_sport", "p_tech"], [[1, 2, "inf"]], None,
     ["row 1 (line 2): column 'p_tech' holds 'inf'; expected a finite number"]),
    ("probabilities", ["p_monde", "p_sport", "p_tech"], [[1.2, -0.1, -0.1]], None,
     ["id 'row-1': probabilities [1.2, -0.1, -0.1]", "expected each from 0 to 1"]),
    ("probabilities", ["p_monde", "p_sport", "p_tech"], [[0.5, 0.5, 0.5]], None,
     ["id 'row-1': probabilities in columns 'p_monde', 'p_sport', 'p_tech' sum to 1.5; expected 1 (within 0.011)"]),
    ("label_confidence", ["llm", "conf"], [["sport", 0.9], ["culture", 0.9]], {"label": "llm", "confidence": "conf"},
     ["id 'row-2': label 'culture' in column 'llm' is not one of the classes of classes.json, 'monde', 'sport', "
      "'tech'"]),
    ("label_confidence", ["llm", "conf"], [["sport", 1.5]], {"label": "llm", "confidence": "conf"},
     ["id 'row-1': confidence 1.5 in column 'conf'; expected a probability from 0 to 1"]),
    ("probabilities", ["p_monde", "p_sport"], [[0.5, 0.5]], None,
     ["s.csv: no column 'p_tech'; the file has 'p_monde', 'p_sport'"]),
    ("probabilities", ["p_monde", "p_sport", "p_tech"], [[0.5, "", 0.5]], None,
     ["row 1 (line 2): column 'p_sport' is empty; expected a number"]),
    ("probabilities", ["p_monde", "p_sport", "p_tech"], [[0.5, 0.5, 0]], {"monde": "p_monde", "sport": "p_sport"},
     ["'teacher.scores_columns' maps 'monde', 'sport'; expected exactly the classes of classes.json",
      "(no column for 'tech')"]),
    ("probabilities", ["p_monde", "p_sport", "p_tech"], [[0.5, 0.5, 0]], {**PROBABILITY_COLUMNS, "culture": "x"},
     ["('culture' is none)"]),
])
def test_bad_scores_are_one_line_each(tmp_path, kind, header, rows, columns, fragments):
    path = write_csv(tmp_path / "s.csv", header, rows)
    message = one_line(record_scores, tmp_path / "t", tmp_path / "tr", scores_params(path, kind, columns),
                       tuple(CLASSES), None)
    for fragment in fragments:
        assert fragment in message, message
    assert not (tmp_path / "t").exists()


def test_an_id_without_a_score_names_the_id_and_the_file(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["p_monde", "p_sport", "p_tech"], [[0.2, 0.3, 0.5]] * 3)
    p = scores_params(path)
    card = record_scores(tmp_path / "teacher", tmp_path / "training", p, tuple(CLASSES), None)
    assert card["scores"]["n"] == 3 and len(card["scores"]["sha256"]) == 64
    write_reviews(tmp_path / "test.jsonl", REVIEWS)  # row-4 has no score
    message = one_line(teacher_logits, tmp_path / "teacher", tmp_path / "onnx", tmp_path / "test.jsonl", tmp_path / "o.npz",
                       tmp_path / "i.json", p, LogitsParams())
    assert message == f"{path}: no score for review id 'row-4'; expected a row for every review of the splits " \
                      "(teacher.scores_id_column names the id column)"
    write_reviews(tmp_path / "test.jsonl", REVIEWS[:3])
    info = teacher_logits(tmp_path / "teacher", tmp_path / "onnx", tmp_path / "test.jsonl", tmp_path / "o.npz",
                          tmp_path / "i.json", p, LogitsParams())
    assert info["source"] == "scores" and info["reviews_per_s"] is None
    np.testing.assert_allclose(read_logits(tmp_path / "o.npz", ["row-1", "row-2", "row-3"]),
                               np.log([[0.2, 0.3, 0.5]] * 3), rtol=1e-6)


@pytest.mark.parametrize("teacher, message", [
    ({"source": "scores", "scores_columns": PROBABILITY_COLUMNS},
     "params.yaml: 'teacher.scores_path' is still data/splits/classes.json, its stand-in; with "
     "'teacher.source: scores' name your table of teacher scores"),
    ({"source": "scores", "scores_path": "s.csv"},
     "params.yaml: 'teacher.scores_columns' is empty; with 'teacher.source: scores' map each class name to its column"),
    ({"source": "scores", "scores_path": "s.csv", "scores_kind": "label_confidence", "scores_columns": {"label": "a"}},
     "params.yaml: 'teacher.scores_columns' names 'label'; with 'teacher.scores_kind: label_confidence' expected "
     "exactly 'label' and 'confidence'"),
    ({"scores_id_column": "id"}, "params.yaml: 'teacher.scores_id_column' is for 'teacher.source: scores'"),
    ({"scores_columns": ["a"]}, "params.yaml: 'teacher.scores_columns' must be a mapping of names to columns"),
    ({"source": "llm"}, "params.yaml: 'teacher.source' must be 'fine_tune', 'classifier' or 'scores', got 'llm'"),
])
def test_bad_teacher_source_parameters_are_one_line(teacher, message):
    with pytest.raises(UserError) as info:
        parse_params(teacher if "data" in teacher else {"teacher": teacher})
    assert str(info.value).startswith(message), str(info.value)


# --- the real pipeline -----------------------------------------------------------------------------


def scores_or_classifier_project(root: Path, archive, tiny_bert, teacher: dict) -> Path:
    from dvc_project import make_project

    make_table(root / "news.csv")
    project = make_project(root / "project", archive, tiny_bert)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update({"source": "table", "path": str(root / "news.csv"), "unlabeled_path": str(root / "news.csv"),
                           "test_path": str(root / "news.csv"), "text_columns": ["title", "body"],
                           "label_column": "label"})
    params["split"].update({"n_labeled": 36, "n_unlabeled": 30, "n_test": 18})
    params["logits"].update({"shard_size": 10, "shards": [0, 1, 2]})
    params["curve"]["sizes"] = [10, 20]
    params["teacher"].update(teacher)
    if teacher.get("source") == "scores":  # precomputed scores hold none for a sentence
        params["short_texts"]["n_transfer_sentences"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-qm", "the teacher given", cwd=project)
    return project


def check_end_to_end(project: Path, output: str) -> dict:
    """Every stage ran, predict gives the three probabilities, a second status is clean; the lineage."""
    assert {"teacher", "logits@0", "test_logits", "student", "assemble", "speed"} <= ran(output)
    with np.load(project / "data/teacher_logits/test.npz") as npz:
        assert npz["logits"].shape == (18, 3) and np.isfinite(npz["logits"]).all()
    gate = json.loads((project / "metrics/student.json").read_text())["gate"]
    args = [sys.executable, "-m", "bert2lr", "predict", "--model", "models/student"]
    result = subprocess.run(args + ([] if gate["passed"] else ["--allow-ungated"]) + ["match équipe", "北京"],
                            cwd=project, capture_output=True, text=True, check=True)
    for row in map(json.loads, result.stdout.splitlines()):
        assert list(row["probabilities"]) == CLASSES and abs(sum(row["probabilities"].values()) - 1) < 1e-5
    assert changed(project) == set()
    shown = run("dvc", "metrics", "show", "--json", cwd=project)
    assert "teacher_training" in shown.stdout
    from bert2lr.serving.audit import _teacher_check, _teacher_line
    from bert2lr.serving.deploy import read_lineage

    # audit's teacher part (its whole --verify also reads the data section, another change's business)
    lineage = read_lineage(project / "models/student")
    ok, _, detail = _teacher_check(project, lineage["teacher"])
    assert ok, detail
    assert _teacher_line(lineage["teacher"]).startswith("teacher ")
    return lineage


@pytest.mark.slow
def test_a_classifier_folder_runs_end_to_end(tmp_path, archive, tiny_bert, tiny_classifier):
    project = scores_or_classifier_project(tmp_path, archive, tiny_bert, {"source": "classifier", "model": str(tiny_classifier),
                                                           "truncation": "head"})
    lineage = check_end_to_end(project, run("dvc", "repro", cwd=project).stdout)
    teacher = lineage["teacher"]
    assert teacher["source"] == "classifier" and teacher["base_model"] == str(tiny_classifier)
    assert len(teacher["weights"]["sha256"]) == 64 and "model.safetensors" in teacher["source_files"]
    card = json.loads((project / "models/teacher/training.json").read_text())
    assert card["columns"] == [1, 2, 0]
    speed = json.loads((project / "metrics/speed.json").read_text())
    assert speed["teacher"]["reviews_per_s"] > 0 and 0 <= speed["agreement"] <= 1


@pytest.mark.slow
def test_a_scores_file_runs_end_to_end_and_its_change_reruns_the_teacher(tmp_path, archive, tiny_bert):
    rows = list(csv.DictReader(open(_table(tmp_path), encoding="utf-8")))
    rng = np.random.default_rng(0)
    probabilities = []
    for row in rows:  # a noisy teacher that mostly knows the label, its rows of the table in order (row-1, ...)
        p = rng.dirichlet([1, 1, 1]) * 0.4
        p[CLASSES.index(row["label"])] += 0.6
        probabilities.append([f"{x:.4f}" for x in p])
    scores = write_csv(tmp_path / "scores.csv", ["p_monde", "p_sport", "p_tech"], probabilities)
    project = scores_or_classifier_project(tmp_path, archive, tiny_bert, {
        "source": "scores", "scores_path": str(scores), "scores_columns": PROBABILITY_COLUMNS,
        "scores_kind": "probabilities"})
    lineage = check_end_to_end(project, run("dvc", "repro", cwd=project).stdout)
    teacher = lineage["teacher"]
    assert teacher["source"] == "scores" and "weights" not in teacher
    assert teacher["scores"] == {"path": str(scores), "sha256": __import__("hashlib").sha256(
        scores.read_bytes()).hexdigest()}
    speed = json.loads((project / "metrics/speed.json").read_text())
    assert speed["teacher"] is None and speed["throughput_ratio"] is None and speed["student"]["reviews_per_s"] > 0
    assert json.loads((project / "metrics/teacher_training/metrics.json").read_text())["source"] == "scores"

    probabilities[0] = ["0.1000", "0.1000", "0.8000"]
    write_csv(scores, ["p_monde", "p_sport", "p_tech"], probabilities)
    assert "teacher" in changed(project)


def _table(root: Path) -> Path:
    make_table(root / "news.csv")
    return root / "news.csv"
