"""Load a student for serving: check its lineage record, its hash and its quality gate.

Imports numpy and the compiled featurizer only: neither torch nor transformers.
"""

from __future__ import annotations

import math
import re
import reprlib
from pathlib import Path

import numpy as np

from bert2lr.errors import UserError
from bert2lr.files import file_digest, read_json
from bert2lr.lineage import FORMATS as LINEAGE_FORMATS
from bert2lr.lineage import LINEAGE_FILE
from bert2lr.linear import MODEL_FILE, LinearTextModel, sigmoid

DEFAULT_STUDENT = Path("models/student")


def student_files(path: Path | str) -> tuple[Path, Path]:
    """The model file and lineage record of a student folder (or of its model file)."""
    path = Path(path)
    folder = path if path.is_dir() or path.suffix != ".npz" else path.parent
    model = path if path.suffix == ".npz" else folder / MODEL_FILE
    if not model.is_file():
        raise UserError(f"{model}: student model not found (run `dvc repro assemble` or `dvc pull`)")
    return model, folder / LINEAGE_FILE


def _number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # bool is not a number here


def _sha256(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


_TEXT = (lambda v: isinstance(v, str), "a string")
_SHA256 = (_sha256, "64 lowercase hex digits")
_NUMBER = (_number, "a finite number")
_COUNT = (lambda v: type(v) is int and v >= 0, "a whole number >= 0")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_BUCKETS = (lambda v: type(v) is int and v >= 1, "a whole number >= 1")
# Every field that serving, predict and audit read, so that none of them meets a wrong type later;
# "*" stands for each key of an object.
_LINEAGE_FIELDS = {
    "format": (lambda v: v in LINEAGE_FORMATS, " or ".join(map(repr, LINEAGE_FORMATS))),
    "created": _TEXT,
    "model.file": _TEXT, "model.sha256": _SHA256, "model.n_features": _COUNT,
    "gate.passed": (lambda v: type(v) is bool, "true or false"),
    "gate.baseline_accuracy": _NUMBER, "gate.margin": _NUMBER,
    "metrics.accuracy": _NUMBER, "metrics.test_full_accuracy": _NUMBER,
    "metrics.n_test": _COUNT, "metrics.n_test_full": _COUNT, "metrics.*": _NUMBER,
    "splits": _OBJECT, "splits.*.path": _TEXT, "splits.*.sha256": _SHA256, "splits.*.n_reviews": _COUNT,
    "teacher.params": _OBJECT,
    "teacher_logits.path": _TEXT, "teacher_logits.sha256": _SHA256,
    "student.params": _OBJECT,
    "git.commit": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "git.dirty": (lambda v: v is None or type(v) is bool, "true, false or null"),
    "versions": _OBJECT, "versions.*": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "reviews": _OBJECT, "reviews.*": (_strings, "a list of strings"),
}
# Where the data came from: /1 (IMDB only) named the archive; /2 names the source and its files by role.
_DATA_FIELDS = {
    "bert2lr-lineage/1": {"archive.path": _TEXT, "archive.sha256": _SHA256},
    "bert2lr-lineage/2": {"data.source": _TEXT, "data.files": _OBJECT, "data.files.*.path": _TEXT,
                          "data.files.*.sha256": _SHA256},
}
# Which teacher it was: a model (fine-tuned here, or a classifier given, with its source's files) has
# weights; precomputed scores have their file. Records without teacher.source (/1, early /2): fine_tune.
_MODEL_TEACHER = {"teacher.base_model": _TEXT, "teacher.weights.path": _TEXT, "teacher.weights.sha256": _SHA256}
_TEACHER_FIELDS = {
    "fine_tune": _MODEL_TEACHER,
    "classifier": {**_MODEL_TEACHER, "teacher.source_files": _OBJECT, "teacher.source_files.*": _SHA256},
    "scores": {"teacher.scores.path": _TEXT, "teacher.scores.sha256": _SHA256,
               "teacher.files": _OBJECT, "teacher.files.*": _SHA256},
}
_TEACHER_SOURCE = (lambda v: isinstance(v, str) and v in _TEACHER_FIELDS, " or ".join(map(repr, _TEACHER_FIELDS)))
_SENTENCES_FIELDS = {"transfer_sentences.path": _TEXT, "transfer_sentences.sha256": _SHA256,
                     "transfer_sentences.n_sentences": _COUNT, "transfer_sentences.logits.path": _TEXT,
                     "transfer_sentences.logits.sha256": _SHA256}
_MISSING = object()


def _fields(record, path: list[str], name: str = ""):
    """(dotted name, value, expected) per field that a pattern such as "splits.*.path" names: expected is
    None where the value is the field itself, "an object" where it is a container of the wrong type."""
    if not path:
        yield name, record, None
    elif not isinstance(record, dict):
        yield name, record, "an object"
    else:
        for key in list(record) if path[0] == "*" else [path[0]]:
            yield from _fields(record.get(key, _MISSING), path[1:], f"{name}.{key}" if name else key)


def check_lineage(record: Path, lineage) -> dict:
    """The record, once each field bert2lr reads has the expected type; else a UserError naming the field."""
    if not isinstance(lineage, dict):
        raise UserError(f"{record}: not a bert2lr lineage record (expected a JSON object)")
    teacher = lineage.get("teacher")
    source = teacher.get("source", "fine_tune") if isinstance(teacher, dict) else "fine_tune"
    model = lineage.get("model")
    fields = {**_LINEAGE_FIELDS, **_DATA_FIELDS.get(lineage.get("format"), {}),
              # a hashed student's record says so; a vocabulary student's has no such field
              **({"model.n_buckets": _BUCKETS} if isinstance(model, dict) and "n_buckets" in model else {}),
              # a student that learned from the transfer set's sentences too names them
              **(_SENTENCES_FIELDS if "transfer_sentences" in lineage else {}),
              **({"teacher.source": _TEACHER_SOURCE} if isinstance(teacher, dict) and "source" in teacher else {}),
              **(_TEACHER_FIELDS.get(source, {}) if isinstance(source, str) else {})}
    for pattern, (valid, expected) in fields.items():
        for name, value, container in _fields(lineage, pattern.split(".")):
            if value is _MISSING:
                raise UserError(f"{record}: {name} is missing; expected {container or expected}")
            if container or not valid(value):
                raise UserError(f"{record}: {name} is {reprlib.repr(value)}; expected {container or expected}")
    return lineage


def read_lineage(path: Path | str) -> dict:
    """The lineage record of a student, checked; a student without one is refused."""
    model, record = student_files(path)
    if not record.is_file():
        raise UserError(f"{model}: no {LINEAGE_FILE} beside it, so its origin cannot be told; "
                        "bert2lr only serves and audits students the pipeline wrote")
    return check_lineage(record, read_json(record, "lineage record"))


def load_student(path: Path | str = DEFAULT_STUDENT, allow_ungated: bool = False) -> tuple[LinearTextModel, dict]:
    """Load a student whose file matches its lineage record and which passed its quality gate."""
    model_file, _ = student_files(path)
    lineage = read_lineage(path)
    actual = file_digest(model_file)
    if actual != lineage["model"]["sha256"]:
        raise UserError(f"{model_file}: sha256 {actual[:12]}… does not match its lineage record "
                        f"({lineage['model']['sha256'][:12]}…); the file was changed after the pipeline wrote it")
    gate = lineage["gate"]
    if not gate.get("passed") and not allow_ungated:
        raise UserError(
            f"{model_file}: the student failed its quality gate (accuracy {lineage['metrics']['accuracy']:.4f} "
            f"vs baseline {gate['baseline_accuracy']:.4f}); pass --allow-ungated to use it anyway")
    return LinearTextModel.load(model_file), lineage


def predictions(model: LinearTextModel, texts: list[str]) -> list[dict]:
    """Per text: the label and every class's probability ("probabilities", by class name, in label order).

    Two classes also keep the fields clients read before there were K: the probability of the second
    class and the raw logit (the margin), in that order after the label.
    """
    classes = model.classes
    if model.n_outputs == 1:
        logits = model.decision_function(texts)
        rows = []
        for z in logits:
            p = round(float(sigmoid(z)), 6)
            rows.append({"label": classes[int(z > 0)], "probability": p, "logit": round(float(z), 6),
                         "probabilities": {classes[0]: round(1.0 - p, 6), classes[1]: p}})
        return rows
    probabilities = model.predict_proba(texts)
    return [{"label": classes[int(np.argmax(row))],
             "probabilities": {name: round(float(p), 6) for name, p in zip(classes, row)}}
            for row in probabilities]
