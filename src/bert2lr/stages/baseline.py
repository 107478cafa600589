"""Stage: the baseline, n-gram counts and logistic regression on the labeled split only."""

from __future__ import annotations

from pathlib import Path

from bert2lr.classes import CLASS_NAMES
from bert2lr.errors import UserError
from bert2lr.files import atomic_path
from bert2lr.linear import MODEL_FILE, LinearTextModel
from bert2lr.params import BaselineParams
from bert2lr.baseline_model import baseline_estimator


def train_baseline(texts: list[str], labels: list[int], out_dir: Path, p: BaselineParams,
                   classes: tuple[str, ...] = CLASS_NAMES) -> LinearTextModel:
    """Fit CountVectorizer(1, ngram_max) + LogisticRegression and save it in the deployable format.

    classes: the names by label id; K > 2 classes give a multinomial regression, a logit per class.
    """
    if len(set(labels)) < 2:
        raise UserError("the labeled split holds only one class; the baseline needs both")
    missing = [name for k, name in enumerate(classes) if k not in set(labels)]
    if missing:
        raise UserError(f"the labeled split holds no review of the class(es) {', '.join(missing)}; "
                        "the baseline needs every class (raise split.n_labeled)")
    estimator = baseline_estimator(p)
    vectorizer, classifier = estimator[0], estimator[-1]
    try:
        estimator.fit(texts, labels)
    except ValueError as exc:  # scikit-learn: the labeled texts hold no word of two letters or more
        raise UserError(f"baseline: no n-gram to learn from in the {len(texts)} labeled reviews ({exc})") from None
    if len(classes) == 2:
        model = LinearTextModel.from_sklearn(vectorizer, classifier.coef_[0], classifier.intercept_[0], classes=classes)
    else:
        model = LinearTextModel.from_sklearn(vectorizer, classifier.coef_, classifier.intercept_, classes=classes)
    with atomic_path(out_dir, directory=True) as tmp:
        model.save(tmp / MODEL_FILE)
    return model
