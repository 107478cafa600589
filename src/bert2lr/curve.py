"""Stage: the learning curve, student accuracy against the number of unlabeled reviews."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bert2lr.files import read_logits, read_reviews, write_json
from bert2lr.linear import LinearTextModel
from bert2lr.params import CurveParams, StudentParams
from bert2lr.plots import write_learning_curve_png
from bert2lr.student import train_student

log = logging.getLogger(__name__)


def learning_curve(unlabeled: Path, teacher_logits: Path, labeled: Path, test: Path, test_full: Path,
                   teacher_test_logits: Path, baseline: Path, out: Path, p: StudentParams,
                   sizes: CurveParams, png: Path | None = None) -> list[dict]:
    """Fit a student on each prefix size of the unlabeled split (they are nested samples) and score it."""
    pool = read_reviews(unlabeled)
    logits = read_logits(teacher_logits, [r["id"] for r in pool])
    gold = read_reviews(labeled, need_labels=True)
    sample, full = read_reviews(test, need_labels=True), read_reviews(test_full, need_labels=True)
    texts, y = [r["text"] for r in sample], np.array([r["label"] for r in sample])
    full_texts, y_full = [r["text"] for r in full], np.array([r["label"] for r in full])
    teacher = read_logits(teacher_test_logits, [r["id"] for r in sample]).argmax(axis=1)
    base = LinearTextModel.load(baseline)
    flat = {"teacher": float(np.mean(teacher == y)), "baseline": float(np.mean(base.predict(texts) == y)),
            "baseline_full": float(np.mean(base.predict(full_texts) == y_full))}
    rows = []
    for n in sorted({min(n, len(pool)) for n in sizes.sizes} | {len(pool)}):
        student = train_student(pool[:n], logits[:n], gold, p)
        predicted = student.predict(texts)
        rows.append({"n_unlabeled": n, "student": float(np.mean(predicted == y)),
                     "student_full": float(np.mean(student.predict(full_texts) == y_full)),
                     "agreement": float(np.mean(predicted == teacher)), **flat})
        log.info("curve: %d unlabeled -> %.4f (full test %.4f)", n, rows[-1]["student"], rows[-1]["student_full"])
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    write_json(out, rows)
    if png is not None:
        write_learning_curve_png(rows, png)
    return rows
