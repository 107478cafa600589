"""Stage: the baseline, n-gram counts and logistic regression on the labeled split only."""

from __future__ import annotations

from pathlib import Path

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from bert2lr.errors import UserError
from bert2lr.files import atomic_path
from bert2lr.linear import MODEL_FILE, LinearTextModel
from bert2lr.params import BaselineParams


def train_baseline(texts: list[str], labels: list[int], out_dir: Path, p: BaselineParams) -> LinearTextModel:
    """Fit CountVectorizer(1, ngram_max) + LogisticRegression and save it in the deployable format."""
    if len(set(labels)) < 2:
        raise UserError("the labeled split holds only one class; the baseline needs both")
    vectorizer = CountVectorizer(ngram_range=(1, p.ngram_max))
    classifier = LogisticRegression(C=p.C, max_iter=p.max_iter)
    try:
        make_pipeline(vectorizer, classifier).fit(texts, labels)
    except ValueError as exc:  # scikit-learn: the labeled texts hold no word of two letters or more
        raise UserError(f"baseline: no n-gram to learn from in the {len(texts)} labeled reviews ({exc})") from None
    model = LinearTextModel.from_sklearn(vectorizer, classifier.coef_[0], classifier.intercept_[0])
    with atomic_path(out_dir, directory=True) as tmp:
        model.save(tmp / MODEL_FILE)
    return model
