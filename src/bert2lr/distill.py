"""Fit a linear bag-of-n-grams student to a teacher's logits (and, weighted, to gold labels).

The student stage fits one on the whole transfer set; the learning curve fits one per size.
Two classes give one linear function, the margin; K > 2 classes (teacher logits of shape (n, K))
give K, one logit per class (see `_fit_classes`).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from bert2lr.errors import UserError
from bert2lr.linear import LinearTextModel, sigmoid, softmax
from bert2lr.params import StudentParams

log = logging.getLogger(__name__)


def make_vectorizer(p: StudentParams):
    common = {"ngram_range": (1, p.ngram_max), "min_df": p.min_df, "max_features": p.max_features}
    if p.features == "tfidf":
        return TfidfVectorizer(sublinear_tf=p.sublinear_tf, **common)
    return CountVectorizer(**common)


def fit_student(texts: list[str], teacher_logits: np.ndarray, p: StudentParams,
                gold_texts: list[str] = (), gold_labels: list[int] = (), classes=None) -> LinearTextModel:
    """Fit the student to the teacher's logits (and, weighted, the gold labels); return it exported.

    Two classes: whatever the target, the result is one linear function whose sign decides the
    class: fitting both logits by least squares or ridge and subtracting is the same as fitting
    the margin, since those solutions are linear in the targets. K > 2 classes: `_fit_classes`.
    classes: the names by label id, for the exported model (LinearTextModel.from_sklearn's default).
    """
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
    if teacher_logits.ndim != 2 or teacher_logits.shape[1] < 2 or teacher_logits.shape[0] != len(texts):
        raise UserError(f"student: teacher logits of shape {teacher_logits.shape} for {len(texts)} reviews; "
                        f"expected ({len(texts)}, classes) with 2 or more classes")
    n_classes = teacher_logits.shape[1]
    if n_classes > 2 and len(gold_labels) and p.gold_weight > 0 and len(gold_texts):
        labels = np.asarray(gold_labels)
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= n_classes:
            raise UserError(f"student: gold labels must be class indices 0..{n_classes - 1}, "
                            f"got values from {labels.min()} to {labels.max()}")
    margin = teacher_logits[:, 1] - teacher_logits[:, 0]
    use_gold = p.gold_weight > 0 and len(gold_texts) > 0
    all_texts = list(texts) + (list(gold_texts) if use_gold else [])
    vectorizer = make_vectorizer(p)
    try:
        X = vectorizer.fit_transform(all_texts)
    except ValueError as exc:  # scikit-learn: no n-gram is in min_df reviews (or none at all)
        raise UserError(f"student: no n-gram to learn from in the {len(all_texts)} training reviews with "
                        f"student.min_df={p.min_df} ({exc})") from None
    log.info("student: %d reviews x %d features (%s, 1-%d grams)", X.shape[0], X.shape[1], p.features, p.ngram_max)
    weight = np.ones(X.shape[0])
    gold = np.asarray(gold_labels) if use_gold else np.zeros(0, dtype=int)
    if use_gold:
        weight[len(texts):] = p.gold_weight

    if n_classes > 2:
        coef, intercept = _fit_classes(X, teacher_logits, weight, gold, len(texts), p)
        return LinearTextModel.from_sklearn(vectorizer, coef, intercept, classes=classes)
    if p.fit == "logistic":
        # Soft targets: each review appears once per class, weighted by the teacher's probability.
        prob = np.concatenate([sigmoid(margin / p.temperature), gold.astype(float)])
        X2 = sparse.vstack([X, X]).tocsr()
        y2 = np.concatenate([np.ones(X.shape[0]), np.zeros(X.shape[0])])
        w2 = np.concatenate([weight * prob, weight * (1 - prob)])
        estimator = LogisticRegression(C=1.0 / max(p.alpha, 1e-12), max_iter=1000)
        estimator.fit(X2, y2, sample_weight=w2)
        coef, intercept = estimator.coef_[0], estimator.intercept_[0]
    else:
        # Gold labels become logits as confident as the teacher's typical one.
        scale = float(np.mean(np.abs(margin))) if len(margin) else 1.0
        gold_margin = np.where(gold == 1, scale, -scale)
        if p.target == "logits":
            y = np.vstack([teacher_logits, np.column_stack([-gold_margin / 2, gold_margin / 2])])
        else:
            y = np.concatenate([margin, gold_margin])
        estimator = LinearRegression() if p.fit == "least_squares" else Ridge(alpha=p.alpha)
        estimator.fit(X, y, sample_weight=weight)
        coef, intercept = estimator.coef_, estimator.intercept_
        if p.target == "logits":
            coef, intercept = coef[1] - coef[0], intercept[1] - intercept[0]
    return LinearTextModel.from_sklearn(vectorizer, coef, float(intercept), classes=classes)


def _fit_classes(X, teacher_logits: np.ndarray, weight: np.ndarray, gold: np.ndarray, n_transfer: int,
                 p: StudentParams) -> tuple[np.ndarray, np.ndarray]:
    """coef (K, features) and K intercepts of a student for K > 2 classes; X holds the transfer
    reviews' rows, then the gold reviews' (weighted by `weight`, labels `gold`).

    fit least_squares/ridge (target logits or margin): regress the teacher's logits centred per
    review (logits - their mean), one linear function per class. The softmax of the centred logits
    is that of the logits, and since the solution is linear in the targets (whose rows sum to 0),
    the student's logits sum to 0 per review too. Gold labels become centred one-hot logits
    s (e_y - 1/K), s the teacher's typical gap between its top logit and the mean of the others
    (for K = 2 that is the mean |margin|, the binary fit's scale).

    fit logistic (target soft_label): multinomial logistic regression on the teacher's probabilities
    at the temperature: each review repeated once per class, weighted by its probability of it;
    gold reviews by their hard label (weight 1 for it, 0 for the others).
    """
    k = teacher_logits.shape[1]
    if p.fit == "logistic":
        prob = np.vstack([softmax(teacher_logits / p.temperature, axis=1), np.eye(k)[gold]])
        n = X.shape[0]
        Xk = sparse.vstack([X] * k).tocsr()
        yk = np.repeat(np.arange(k), n)
        wk = (weight[None, :] * prob.T).ravel()  # class after class, as Xk repeats X
        estimator = LogisticRegression(C=1.0 / max(p.alpha, 1e-12), max_iter=1000)
        estimator.fit(Xk, yk, sample_weight=wk)
        return estimator.coef_, estimator.intercept_
    centred = teacher_logits - teacher_logits.mean(axis=1, keepdims=True)
    if n_transfer:
        top = centred.max(axis=1)
        gap = top - (centred.sum(axis=1) - top) / (k - 1)  # top logit minus the mean of the others
        scale = float(np.mean(gap))
    else:
        scale = 1.0
    y = np.vstack([centred, scale * (np.eye(k)[gold] - 1.0 / k)])
    estimator = LinearRegression() if p.fit == "least_squares" else Ridge(alpha=p.alpha)
    estimator.fit(X, y, sample_weight=weight)
    return estimator.coef_, estimator.intercept_


def train_student(unlabeled: list[dict], teacher_logits: np.ndarray, labeled: list[dict],
                  p: StudentParams, classes=None) -> LinearTextModel:
    return fit_student([r["text"] for r in unlabeled], teacher_logits, p,
                       [r["text"] for r in labeled], [r["label"] for r in labeled], classes=classes)
