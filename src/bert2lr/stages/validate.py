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
    right = {_name(p): pred == labels for p, pred in zip(settings, predictions)}
    accuracy = {name: round(float(np.mean(r)), 4) for name, r in right.items()}
    baseline_accuracy = round(float(np.mean(cross_validate_baseline(texts, labels, baseline, folds) == labels)), 4)
    configured = _name(student)
    best = max(accuracy, key=lambda name: (accuracy[name], name == configured))  # a tie keeps the configured
    # A paired comparison on the same reviews: the standard error of a difference in accuracy is
    # sqrt(reviews where exactly one of the two is right) / n. Within two of them it is noise, and
    # the configured student stays the choice (a 0.1-point difference is not a result).
    standard_error = {name: round(float(np.sqrt(np.sum(r != right[configured])) / len(labels)), 4)
                      for name, r in right.items()}
    beyond_noise = sorted(name for name in accuracy
                          if accuracy[name] - accuracy[configured] > 2 * standard_error[name])
    for name in beyond_noise:
        log.warning("validation: %s scores %.4f, above the configured student's %.4f (%s) by more than twice the "
                    "standard error of the difference (%.4f); consider `dvc exp run -S student.alpha=... "
                    "-S student.gold_weight=...`", name, accuracy[name], accuracy[configured], configured,
                    standard_error[name])
    result = {"folds": v.folds, "n_labeled": len(labels), "student": {"setting": configured,
                                                                        "accuracy": accuracy[configured]},
              "baseline": {"accuracy": baseline_accuracy}, "settings": accuracy,
              "difference_standard_error": standard_error,
              "best": {"setting": best, "accuracy": accuracy[best]}, "configured_is_best": best == configured,
              "better_beyond_noise": beyond_noise,
              "gate": quality_gate(accuracy[configured], baseline_accuracy)}
    log.info("validation: student %.4f, baseline %.4f (%d-fold cross-validation on %d labeled reviews): gate %s",
             accuracy[configured], baseline_accuracy, v.folds, len(labels),
             "passed" if result["gate"]["passed"] else "FAILED")
    write_json(out, result)
    return result
