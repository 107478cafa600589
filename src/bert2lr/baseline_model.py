"""The baseline's estimator, in one place: the baseline stage fits it on the labeled split, and
validation cross-validates it on the same folds as the student (its own module, so that a change to
the student's code does not rerun the baseline)."""

from __future__ import annotations

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from bert2lr.params import BaselineParams


def baseline_estimator(p: BaselineParams) -> Pipeline:
    """n-gram counts (1 to ngram_max) and logistic regression."""
    return make_pipeline(CountVectorizer(ngram_range=(1, p.ngram_max)), LogisticRegression(C=p.C, max_iter=p.max_iter))
