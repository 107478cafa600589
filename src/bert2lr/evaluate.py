"""Stage 7: score baseline, teacher and student on the same test reviews; print the reports."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from bert2lr.files import atomic_path, read_json, read_logits, read_reviews, write_json
from bert2lr.linear import LinearTextModel

log = logging.getLogger(__name__)
CLASS_NAMES = ["neg", "pos"]
MODELS = ("baseline", "teacher", "student")


def classification_metrics(y_true, y_pred) -> dict:
    """Accuracy, the full classification report and the confusion matrix."""
    report = classification_report(y_true, y_pred, labels=[0, 1], target_names=CLASS_NAMES,
                                   output_dict=True, zero_division=0)
    report.pop("accuracy", None)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "n": int(len(y_true)),
        "report": {k: {m: (int(v) if m == "support" else round(float(v), 4)) for m, v in row.items()}
                   for k, row in report.items()},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
    }


def render_report(metrics: dict) -> list[str]:
    """One model's report in the layout of sklearn's classification_report."""
    report, n = metrics["report"], metrics["n"]
    lines = [f"{'':>12}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}", ""]
    for name in CLASS_NAMES:
        r = report[name]
        lines.append(f"{name:>12}{r['precision']:>10.2f}{r['recall']:>10.2f}{r['f1-score']:>10.2f}{r['support']:>10}")
    lines += ["", f"{'accuracy':>12}{'':>10}{'':>10}{metrics['accuracy']:>10.2f}{n:>10}"]
    for name in ("macro avg", "weighted avg"):
        r = report[name]
        lines.append(f"{name:>12}{r['precision']:>10.2f}{r['recall']:>10.2f}{r['f1-score']:>10.2f}{r['support']:>10}")
    return lines


def render_side_by_side(named: dict[str, dict]) -> str:
    blocks = [[f"{name} (accuracy {m['accuracy']:.4f})", ""] + render_report(m)
              + ([f"{'':>4}all {m['test_full']['n']} test reviews: accuracy {m['test_full']['accuracy']:.4f}"]
                 if "test_full" in m else []) for name, m in named.items()]
    width = max(len(line) for block in blocks for line in block) + 4
    rows = max(len(b) for b in blocks)
    return "\n".join("".join(b[i].ljust(width) if i < len(b) else " " * width for b in blocks).rstrip()
                     for i in range(rows))


def _write_predictions(path: Path, ids, y_true, y_pred) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "actual", "predicted"])
        for row in zip(ids, y_true, y_pred):
            writer.writerow([row[0], CLASS_NAMES[row[1]], CLASS_NAMES[row[2]]])


def evaluate(test: Path, test_full: Path, baseline: Path, student: Path, teacher_logits: Path,
             metrics_dir: Path) -> dict[str, dict]:
    """Write metrics/<model>.json and metrics/predictions/<model>.csv; return the metrics."""
    sample = read_reviews(test, need_labels=True)
    full = read_reviews(test_full, need_labels=True)
    ids = [r["id"] for r in sample]
    texts = [r["text"] for r in sample]
    y = np.array([r["label"] for r in sample])
    y_full = np.array([r["label"] for r in full])
    full_texts = [r["text"] for r in full]

    predictions = {"teacher": read_logits(teacher_logits, ids).argmax(axis=1)}
    results = {}
    for name, path in (("baseline", baseline), ("student", student)):
        model = LinearTextModel.load(path)
        predictions[name] = model.predict(texts)
        results[name] = {**classification_metrics(y, predictions[name]),
                         "test_full": classification_metrics(y_full, model.predict(full_texts))}
    results["teacher"] = classification_metrics(y, predictions["teacher"])
    results["student"]["agreement_with_teacher"] = round(
        float(np.mean(predictions["student"] == predictions["teacher"])), 4)
    lineage = read_json(Path(student) / "lineage.json", "student lineage record")
    results["student"]["gate"] = lineage["gate"]
    for name in MODELS:
        write_json(metrics_dir / f"{name}.json", results[name])
        _write_predictions(metrics_dir / "predictions" / f"{name}.csv", ids, y, predictions[name])
    return {name: results[name] for name in MODELS}
