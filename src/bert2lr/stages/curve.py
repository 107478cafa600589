"""Stage: the learning curve, student accuracy against the number of unlabeled reviews."""

from __future__ import annotations

import logging
from pathlib import Path

from bert2lr.classes import CLASS_NAMES
from bert2lr.distill import train_student
from bert2lr.files import read_logits, read_reviews, write_json
from bert2lr.linear import LinearTextModel
from bert2lr.params import CurveParams, StudentParams
from bert2lr.plots import write_learning_curve_png
from bert2lr.scoring import LabeledReviews, agreement

log = logging.getLogger(__name__)


def learning_curve(unlabeled: Path, teacher_logits: Path, labeled: Path, test: Path, test_full: Path,
                   teacher_test_logits: Path, baseline: Path, out: Path, p: StudentParams,
                   sizes: CurveParams, png: Path | None = None, classes: tuple[str, ...] = CLASS_NAMES) -> list[dict]:
    """Fit a student on each prefix size of the unlabeled split (they are nested samples) and score it."""
    k = len(classes)
    pool = read_reviews(unlabeled)
    logits = read_logits(teacher_logits, [r["id"] for r in pool], k)
    gold = read_reviews(labeled, need_labels=True, n_classes=k)
    sample, full = LabeledReviews.read(test, k), LabeledReviews.read(test_full, k)
    teacher = read_logits(teacher_test_logits, sample.ids, k).argmax(axis=1)
    base = LinearTextModel.load(baseline)
    flat = {"teacher": sample.accuracy(teacher), "baseline": sample.accuracy(base.predict(sample.texts)),
            "baseline_full": full.accuracy(base.predict(full.texts))}
    rows = []
    for n in sorted({min(n, len(pool)) for n in sizes.sizes} | {len(pool)}):
        student = train_student(pool[:n], logits[:n], gold, p, classes)
        predicted = student.predict(sample.texts)
        rows.append({"n_unlabeled": n, "student": sample.accuracy(predicted),
                     "student_full": full.accuracy(student.predict(full.texts)),
                     "agreement": agreement(predicted, teacher), **flat})
        log.info("curve: %d unlabeled -> %.4f (full test %.4f)", n, rows[-1]["student"], rows[-1]["student_full"])
    write_json(out, rows)
    if png is not None:
        write_learning_curve_png(rows, png)
    return rows
