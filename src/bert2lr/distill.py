"""Fit a linear bag-of-n-grams student to a teacher's logits (and, weighted, to gold labels).

The student stage fits one on the whole transfer set; the learning curve fits one per size.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from bert2lr.errors import UserError
from bert2lr.linear import LinearTextModel, sigmoid
from bert2lr.params import StudentParams

log = logging.getLogger(__name__)


def make_vectorizer(p: StudentParams):
    common = {"ngram_range": (1, p.ngram_max), "min_df": p.min_df, "max_features": p.max_features}
    if p.features == "tfidf":
        return TfidfVectorizer(sublinear_tf=p.sublinear_tf, **common)
    return CountVectorizer(**common)


def fit_student(texts: list[str], teacher_logits: np.ndarray, p: StudentParams,
                gold_texts: list[str] = (), gold_labels: list[int] = ()) -> LinearTextModel:
    """Fit the student to the teacher's logits (and, weighted, the gold labels); return it exported.

    Whatever the target, the result is one linear function whose sign decides the class:
    fitting both logits by least squares or ridge and subtracting is the same as fitting the
    margin, since those solutions are linear in the targets.
    """
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
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
    return LinearTextModel.from_sklearn(vectorizer, coef, float(intercept))


def train_student(unlabeled: list[dict], teacher_logits: np.ndarray, labeled: list[dict],
                  p: StudentParams) -> LinearTextModel:
    return fit_student([r["text"] for r in unlabeled], teacher_logits, p,
                       [r["text"] for r in labeled], [r["label"] for r in labeled])
