"""Stage: choose on validation. Cross-validate the student's settings and the baseline on the labeled
split (bert2lr.validation) and decide the student's quality gate there, so that the test split is
read once, by `evaluate`, for the report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bert2lr.classes import CLASS_NAMES
from bert2lr.files import read_reviews, transfer_texts, write_json
from bert2lr.params import BaselineParams, StudentParams, ValidationParams
from bert2lr.scoring import quality_gate
from bert2lr.validation import (cross_validate_baseline, cross_validate_student, settings_to_try,
                                stratified_folds)

log = logging.getLogger(__name__)


def _name(p: StudentParams) -> str:
    return f"alpha={p.alpha:g},gold_weight={p.gold_weight:g}"


def validate_stage(unlabeled: Path, teacher_logits: Path, labeled: Path, out: Path, student: StudentParams,
                   baseline: BaselineParams, v: ValidationParams, classes: tuple[str, ...] = CLASS_NAMES,
                   sentences: Path | None = None, sentence_logits: Path | None = None) -> dict:
    """Write out (metrics/validation.json): each setting's cross-validated accuracy, the best, and the gate.

    The students learn what the student stage's does: the transfer set, its sentences if any, and
    (out of fold) the labeled split.
    """
    reviews = read_reviews(labeled, need_labels=True, n_classes=len(classes))
    texts, labels = [r["text"] for r in reviews], np.array([r["label"] for r in reviews])
    folds = stratified_folds(labels, v.folds, v.seed)

    def transfer():
        return transfer_texts(unlabeled, teacher_logits, len(classes), sentences, sentence_logits)

    settings = settings_to_try(student, v.alpha, v.gold_weight)
    predictions = cross_validate_student(transfer, texts, labels, settings, folds, classes)
    accuracy = {_name(p): round(float(np.mean(pred == labels)), 4) for p, pred in zip(settings, predictions)}
    baseline_accuracy = round(float(np.mean(cross_validate_baseline(texts, labels, baseline, folds) == labels)), 4)
    configured = _name(student)
    best = max(accuracy, key=lambda name: (accuracy[name], name == configured))  # a tie keeps the configured
    if best != configured:
        log.warning("validation: %s scores %.4f, above the configured student's %.4f (%s); consider "
                    "`dvc exp run -S student.alpha=... -S student.gold_weight=...`", best, accuracy[best],
                    accuracy[configured], configured)
    result = {"folds": v.folds, "n_labeled": len(labels), "student": {"setting": configured,
                                                                        "accuracy": accuracy[configured]},
              "baseline": {"accuracy": baseline_accuracy}, "settings": accuracy,
              "best": {"setting": best, "accuracy": accuracy[best]}, "configured_is_best": best == configured,
              "gate": quality_gate(accuracy[configured], baseline_accuracy)}
    log.info("validation: student %.4f, baseline %.4f (%d-fold cross-validation on %d labeled reviews): gate %s",
             accuracy[configured], baseline_accuracy, v.folds, len(labels),
             "passed" if result["gate"]["passed"] else "FAILED")
    write_json(out, result)
    return result
