"""Scoring on labeled reviews: the predictions of a model, accuracy, the classification report, the
quality gate, and the side-by-side report the CLI prints. Shared by `evaluate` and `curve`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from bert2lr.classes import CLASS_NAMES
from bert2lr.files import read_reviews

MODELS = ("baseline", "teacher", "student")
GATE_RULE = ("the student's accuracy exceeds the baseline's in cross-validation on the labeled split "
             "(validation, never test)")


@dataclass(frozen=True)
class LabeledReviews:
    """A split's ids, texts and gold labels, read once and scored against any number of models."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray

    @classmethod
    def read(cls, path: Path | str, n_classes: int = len(CLASS_NAMES)) -> "LabeledReviews":
        reviews = read_reviews(path, need_labels=True, n_classes=n_classes)
        return cls([r["id"] for r in reviews], [r["text"] for r in reviews],
                   np.array([r["label"] for r in reviews], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def accuracy(self, predicted) -> float:
        return round(float(accuracy_score(self.labels, predicted)), 4)

    def metrics(self, predicted, classes: tuple[str, ...] = CLASS_NAMES) -> dict:
        return classification_metrics(self.labels, predicted, classes)


def classification_metrics(y_true, y_pred, classes: tuple[str, ...] = CLASS_NAMES) -> dict:
    """Accuracy, the classification report (one row per class of `classes`, names by label id, and
    the averages) and the K x K confusion matrix (rows actual, columns predicted, in label order)."""
    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                                   output_dict=True, zero_division=0)
    report.pop("accuracy", None)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "n": int(len(y_true)),
        "report": {k: {m: (int(v) if m == "support" else round(float(v), 4)) for m, v in row.items()}
                   for k, row in report.items()},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def agreement(a, b) -> float:
    """Share of reviews on which two models predict the same class."""
    return round(float(np.mean(np.asarray(a) == np.asarray(b))), 4)


def quality_gate(student_accuracy: float, baseline_accuracy: float) -> dict:
    """May this student be deployed? It must beat the baseline on validation (the validate stage)."""
    margin = student_accuracy - baseline_accuracy
    return {"passed": bool(margin > 0), "baseline_accuracy": baseline_accuracy, "margin": round(margin, 4),
            "rule": GATE_RULE}


def render_report(metrics: dict) -> list[str]:
    """One model's report in the layout of sklearn's classification_report."""
    report, n = metrics["report"], metrics["n"]
    lines = [f"{'':>12}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}", ""]
    for name in (k for k in report if k not in ("macro avg", "weighted avg", "micro avg")):
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
