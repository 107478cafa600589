"""Stage: score baseline, teacher and student on the same test reviews for the report; attach the
student's quality gate, decided on validation (the validate stage), never on these reviews."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from bert2lr.errors import UserError
from bert2lr.files import atomic_path, file_digest, read_json, read_logits, write_json
from bert2lr.linear import MODEL_FILE, LinearTextModel
from bert2lr.scoring import MODELS, LabeledReviews, agreement

log = logging.getLogger(__name__)


def _write_predictions(path: Path, ids, y_true, y_pred, classes: tuple[str, ...]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "actual", "predicted"])
        for row in zip(ids, y_true, y_pred):
            writer.writerow([row[0], classes[row[1]], classes[row[2]]])


def evaluate(test: Path, test_full: Path, baseline: Path, student: Path, teacher_logits: Path, metrics_dir: Path,
             validation: Path, teacher_half_logits: Path | None = None) -> dict[str, dict]:
    """Write metrics/<model>.json and metrics/predictions/<model>.csv; return the metrics.

    The student's metrics carry its quality gate from `validation` (metrics/validation.json), which
    `assemble` copies into its lineage record. teacher_half_logits: the teacher's logits on the whole
    test half, or an empty file (logits.test_half off): then the teacher is scored on the sample only.
    The class names are the student's (it carries those of classes.json); the baseline and the
    teacher's logits must have the same classes.
    """
    models = {name: LinearTextModel.load(path) for name, path in (("baseline", baseline), ("student", student))}
    classes = models["student"].classes
    if models["baseline"].classes != classes:
        raise UserError(f"{baseline}: a baseline for the classes {', '.join(models['baseline'].classes)}, the student "
                        f"{student} for {', '.join(classes)}; rerun `dvc repro` so that both learn the same data")
    sample, full = LabeledReviews.read(test, len(classes)), LabeledReviews.read(test_full, len(classes))
    predictions = {"teacher": read_logits(teacher_logits, sample.ids, len(classes)).argmax(axis=1)}
    results = {}
    full_predictions = {}
    for name, model in models.items():
        predictions[name] = model.predict(sample.texts)
        full_predictions[name] = model.predict(full.texts)
        results[name] = {**sample.metrics(predictions[name], classes),
                         "test_full": full.metrics(full_predictions[name], classes)}
    results["teacher"] = sample.metrics(predictions["teacher"], classes)
    results["student"]["agreement_with_teacher"] = agreement(predictions["student"], predictions["teacher"])
    if teacher_half_logits is not None and len(read_logits(teacher_half_logits)):
        teacher_half = read_logits(teacher_half_logits, full.ids, len(classes)).argmax(axis=1)
        results["teacher"]["test_full"] = full.metrics(teacher_half, classes)
        results["student"]["test_full"]["agreement_with_teacher"] = agreement(full_predictions["student"],
                                                                              teacher_half)
    checked = read_json(validation, "validation record")
    if not isinstance(checked, dict) or not isinstance(checked.get("gate"), dict) \
            or not isinstance(checked.get("student"), dict) or "accuracy" not in checked["student"]:
        raise UserError(f"{validation}: not a validation record (expected 'student' and 'gate' from the "
                        "validate stage); rerun `dvc repro`")
    results["student"]["validation_accuracy"] = checked["student"]["accuracy"]
    results["student"]["gate"] = checked["gate"]
    # Which file these numbers and this gate belong to: assemble packs only that file with them.
    student_file = Path(student) if Path(student).suffix == ".npz" else Path(student) / MODEL_FILE
    results["student"]["model_sha256"] = file_digest(student_file)
    log.info("evaluate: student %.4f, baseline %.4f on the test sample; gate (on validation) %s",
             results["student"]["accuracy"], results["baseline"]["accuracy"],
             "passed" if results["student"]["gate"]["passed"] else "FAILED")
    for name in MODELS:
        write_json(metrics_dir / f"{name}.json", results[name])
        _write_predictions(metrics_dir / "predictions" / f"{name}.csv", sample.ids, sample.labels, predictions[name],
                           classes)
    return {name: results[name] for name in MODELS}
