"""Choose on validation, never on test: k-fold cross-validation on the labeled split.

Why the labeled split. In this low-label setting (1,000 gold reviews) a separate validation split of
thousands of gold labels would be labels the method is not supposed to have. So every choice scored
against gold labels is scored out of fold: the labeled reviews are cut into `folds` stratified folds;
for each, the student is fitted on the whole transfer set plus the other folds' gold reviews and
predicts the held-out fold. Each labeled review is predicted once, by a student that did not see its
label, and the accuracy over all of them is the validation accuracy. The baseline, which learns from
the labeled split alone, is cross-validated on the same folds, so the quality gate compares the two on
the same reviews.

What it does not remove. The teacher was fine-tuned on all the labeled reviews, so the teacher logits
a fold's student learns from carry a little of the held-out fold's labels; the student's validation
accuracy may be slightly optimistic, by the same amount for every student setting compared (the
choice between settings is fair; the gate errs towards passing). The vectorizer (vocabulary, idf) is
fitted once on the transfer set and all the labeled texts: texts, not labels, and 1,000 of some 50,000.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import sparse
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from bert2lr.baseline_model import baseline_estimator
from bert2lr.distill import fit_features, fit_hashed_student, vectorize
from bert2lr.errors import UserError
from bert2lr.params import BaselineParams, StudentParams

log = logging.getLogger(__name__)


def stratified_folds(labels: Sequence[int], folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) of each fold, every class spread evenly over the folds."""
    labels = np.asarray(labels)
    smallest = int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0
    if smallest < folds:
        raise UserError(f"validation.folds={folds}: the labeled split holds only {smallest} review(s) of its "
                        f"rarest class; expected at least one per fold (lower validation.folds or raise "
                        f"split.n_labeled)")
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def _predict(X, coef, intercept) -> np.ndarray:
    scores = X @ np.asarray(coef).T + intercept
    return (scores > 0).astype(int) if np.ndim(coef) == 1 else np.asarray(scores).argmax(axis=1)


def settings_to_try(student: StudentParams, alphas: Sequence[float], gold_weights: Sequence[float]) -> list[StudentParams]:
    """The configured student first, then each alpha at its gold_weight and each gold_weight at its alpha."""
    tried = [student] + [student.model_copy(update={"alpha": a}) for a in alphas] \
        + [student.model_copy(update={"gold_weight": g}) for g in gold_weights]
    unique = {}
    for p in tried:
        unique.setdefault((p.alpha, p.gold_weight), p)
    return list(unique.values())


def cross_validate_student(transfer: Callable[[], Iterable[tuple[list[str], np.ndarray]]], gold_texts: list[str],
                           gold_labels: Sequence[int], settings: list[StudentParams],
                           folds: list[tuple[np.ndarray, np.ndarray]], classes=None) -> list[np.ndarray]:
    """Each setting's out-of-fold predictions of the gold labels, one per labeled review.

    transfer: called for a fresh pass over the transfer set, (texts, teacher logits) shard by shard.
    Vocabulary students (count, tfidf) that share features share one vectorized matrix, so settings
    that differ in alpha and gold_weight cost one vectorization and a ridge fit per setting and fold.
    Hashed students are fitted per fold, streaming the shards, so memory stays flat. A setting without
    gold labels (gold_weight 0) learns the same student in every fold: fitted once.
    """
    gold = np.asarray(gold_labels)
    everything = [(np.zeros(0, dtype=int), np.arange(len(gold)))]  # no gold to learn, all of it to predict
    matrix = None
    predictions = []
    for k, p in enumerate(settings):
        log.info("validation: setting %d of %d (alpha %g, gold_weight %g), %d folds", k + 1, len(settings), p.alpha,
                 p.gold_weight, len(folds))
        out = np.full(len(gold), -1)
        fold_list = folds if p.gold_weight > 0 else everything
        if p.features == "hashing":
            for train, held_out in fold_list:
                model = fit_hashed_student(transfer(), p, [gold_texts[i] for i in train], gold[train], classes)
                out[held_out] = model.predict([gold_texts[i] for i in held_out])
            predictions.append(out)
            continue
        key = (p.features, p.ngram_max, p.min_df, p.max_features, p.sublinear_tf)
        if matrix is None or matrix[0] != key:
            texts, logits = [], []
            for shard_texts, shard_logits in transfer():
                texts += shard_texts
                logits.append(np.asarray(shard_logits, dtype=np.float64))
            teacher_logits = np.concatenate(logits)
            _, X = vectorize(texts + list(gold_texts), p)
            matrix = (key, X[:len(texts)], X[len(texts):].tocsr(), teacher_logits)
            del X, texts
        _, X_transfer, X_gold, teacher_logits = matrix
        for train, held_out in fold_list:
            X = sparse.vstack([X_transfer, X_gold[train]]).tocsr() if len(train) else X_transfer
            out[held_out] = _predict(X_gold[held_out], *fit_features(X, teacher_logits, gold[train], p))
        predictions.append(out)
    return predictions


def cross_validate_baseline(texts: list[str], labels: Sequence[int], p: BaselineParams,
                            folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The baseline's out-of-fold predictions of the labeled split, on the student's folds."""
    return cross_val_predict(baseline_estimator(p), list(texts), np.asarray(labels), cv=folds)
