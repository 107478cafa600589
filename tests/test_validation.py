"""Choices on validation: out-of-fold predictions of the labeled split (bert2lr.validation) and the
validate stage that records them and decides the quality gate."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bert2lr.distill import fit_student
from bert2lr.errors import UserError
from bert2lr.files import write_logits, write_reviews
from bert2lr.params import BaselineParams, StudentParams, ValidationParams
from bert2lr.stages.validate import validate_stage
from bert2lr.validation import (cross_validate_baseline, cross_validate_student, settings_to_try,
                                stratified_folds)

GOOD, BAD = ["great", "superb", "moving", "loved"], ["awful", "dull", "boring", "hated"]


def corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    labels = np.array([i % 2 for i in range(n)])
    texts = [" ".join(rng.choices(GOOD if y else BAD, k=3) + rng.choices(["the", "film", "plot", "it"], k=4))
             for y in labels]
    return texts, labels


def shards(texts, logits, size=7):
    return lambda: ((texts[i:i + size], logits[i:i + size]) for i in range(0, len(texts), size))


def test_each_review_is_predicted_by_a_student_that_never_saw_its_label():
    """Labels that the texts cannot explain (each gold review has a word of its own, and a random
    label): a student that saw a review's label would recall it; out of fold it is a coin toss."""
    transfer, _ = corpus(60, 0)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, 2))  # a teacher whose opinions the texts do not explain
    gold_labels = rng.integers(0, 2, 40)
    gold_texts = [f"film uniq{i}x" for i in range(40)]
    p = StudentParams(features="count", min_df=1, alpha=1e-3, gold_weight=100.0)
    folds = stratified_folds(gold_labels, 5, 0)
    (out_of_fold,) = cross_validate_student(shards(transfer, logits), gold_texts, gold_labels, [p], folds)
    in_sample = fit_student(transfer, logits, p, gold_texts, gold_labels).predict(gold_texts)
    assert np.mean(in_sample == gold_labels) == 1.0
    assert np.mean(out_of_fold == gold_labels) < 0.75


def test_a_fold_predicts_what_the_student_fitted_without_it_predicts():
    """With count features the shared vocabulary only adds columns that are zero in a fold's
    training rows, so each held-out prediction is the student's fitted on the other folds alone."""
    transfer, transfer_labels = corpus(50, 1)
    logits = np.column_stack([-(transfer_labels * 2.0 - 1), transfer_labels * 2.0 - 1]) + 0.1
    gold_texts, gold_labels = corpus(20, 2)
    p = StudentParams(features="count", min_df=1, gold_weight=3.0)
    folds = stratified_folds(gold_labels, 4, 0)
    (out_of_fold,) = cross_validate_student(shards(transfer, logits), gold_texts, gold_labels, [p], folds)
    for train, held_out in folds:
        model = fit_student(transfer, logits, p, [gold_texts[i] for i in train], gold_labels[train])
        assert out_of_fold[held_out].tolist() == model.predict([gold_texts[i] for i in held_out]).tolist()


@pytest.mark.parametrize("features", ["tfidf", "hashing"])
def test_settings_share_the_folds_and_learn(features):
    transfer, transfer_labels = corpus(80, 3)
    logits = np.column_stack([1 - 2.0 * transfer_labels, 2.0 * transfer_labels - 1])
    gold_texts, gold_labels = corpus(30, 4)
    student = StudentParams(features=features, min_df=1, n_buckets=2**10)
    settings = settings_to_try(student, [0.5, 1.0], [0.0, 2.0])
    assert [(p.alpha, p.gold_weight) for p in settings] == [(1.0, 1.0), (0.5, 1.0), (1.0, 0.0), (1.0, 2.0)]
    predictions = cross_validate_student(shards(transfer, logits), gold_texts, gold_labels, settings,
                                         stratified_folds(gold_labels, 3, 0))
    assert all(np.mean(pred == gold_labels) > 0.9 for pred in predictions)


def test_more_folds_than_reviews_of_a_class_is_one_line():
    with pytest.raises(UserError, match=r"validation.folds=5: the labeled split holds only 3 review\(s\) of its "
                                        r"rarest class; expected at least one per fold"):
        stratified_folds([0, 0, 0, 1, 1, 1, 1, 1, 1], 5, 0)


def test_folds_are_stratified_and_seeded():
    labels = [0] * 30 + [1] * 10
    folds = stratified_folds(labels, 5, 7)
    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(40))
    assert all(np.sum(np.asarray(labels)[held]) == 2 for _, held in folds)
    assert [h.tolist() for _, h in folds] == [h.tolist() for _, h in stratified_folds(labels, 5, 7)]
    assert [h.tolist() for _, h in folds] != [h.tolist() for _, h in stratified_folds(labels, 5, 8)]


def test_the_baseline_is_cross_validated_on_the_same_folds():
    texts, labels = corpus(30, 5)
    predictions = cross_validate_baseline(texts, labels, BaselineParams(ngram_max=1), stratified_folds(labels, 3, 0))
    assert predictions.shape == (30,) and np.mean(predictions == labels) > 0.9


def _project(tmp_path, n_transfer=60, n_gold=30, teacher_right=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    transfer, transfer_labels = corpus(n_transfer, 6)
    transfer_labels = transfer_labels if teacher_right else 1 - transfer_labels
    gold_texts, gold_labels = corpus(n_gold, 7)
    write_reviews(tmp_path / "unlabeled.jsonl", [{"id": f"u{i}", "text": t} for i, t in enumerate(transfer)])
    write_logits(tmp_path / "logits.npz", [f"u{i}" for i in range(n_transfer)],
                 np.column_stack([1 - 2.0 * transfer_labels, 2.0 * transfer_labels - 1]))
    write_reviews(tmp_path / "labeled.jsonl", [{"id": f"g{i}", "text": t, "label": int(y)}
                                               for i, (t, y) in enumerate(zip(gold_texts, gold_labels))])
    return tmp_path / "unlabeled.jsonl", tmp_path / "logits.npz", tmp_path / "labeled.jsonl"


def test_the_stage_records_every_setting_the_best_and_the_gate(tmp_path, caplog):
    unlabeled, logits, labeled = _project(tmp_path)
    v = ValidationParams(folds=3, alpha=[1000.0], gold_weight=[0.0])
    result = validate_stage(unlabeled, logits, labeled, tmp_path / "m" / "validation.json",
                            StudentParams(min_df=1, alpha=0.5), BaselineParams(ngram_max=1), v)
    assert json.loads((tmp_path / "m" / "validation.json").read_text()) == result
    assert set(result["settings"]) == {"alpha=0.5,gold_weight=1", "alpha=1000,gold_weight=1", "alpha=0.5,gold_weight=0"}
    assert result["student"] == {"setting": "alpha=0.5,gold_weight=1",
                                 "accuracy": result["settings"]["alpha=0.5,gold_weight=1"]}
    assert result["best"]["accuracy"] == max(result["settings"].values())
    assert result["configured_is_best"] == (result["best"]["setting"] == result["student"]["setting"])
    gate = result["gate"]
    assert gate["passed"] == (result["student"]["accuracy"] > result["baseline"]["accuracy"])
    assert "cross-validation" in gate["rule"] and result["folds"] == 3 and result["n_labeled"] == 30


def test_a_tie_keeps_the_configured_student_and_a_better_one_is_named(tmp_path, caplog):
    unlabeled, logits, labeled = _project(tmp_path)
    # every setting separates these texts perfectly: a tie, which the configured student wins
    tie = validate_stage(unlabeled, logits, labeled, tmp_path / "tie.json", StudentParams(min_df=1, alpha=1.0),
                         BaselineParams(ngram_max=1), ValidationParams(folds=3, alpha=[0.5], gold_weight=[]))
    assert set(tie["settings"].values()) == {1.0} and tie["configured_is_best"] is True
    # a teacher that is always wrong: the configured student, which only imitates it, is worse than
    # one that weighs the gold labels heavily, and the log names that one
    unlabeled, logits, labeled = _project(tmp_path / "wrong", teacher_right=False)
    worse = validate_stage(unlabeled, logits, labeled, tmp_path / "worse.json",
                           StudentParams(min_df=1, gold_weight=0.0), BaselineParams(ngram_max=1),
                           ValidationParams(folds=3, alpha=[], gold_weight=[1000.0]))
    assert worse["settings"]["alpha=1,gold_weight=0"] < worse["settings"]["alpha=1,gold_weight=1000"]
    assert worse["configured_is_best"] is False and worse["best"]["setting"] == "alpha=1,gold_weight=1000"
    assert worse["better_beyond_noise"] == ["alpha=1,gold_weight=1000"]
    assert "alpha=1,gold_weight=1000 scores" in caplog.text and "above the configured student's" in caplog.text
    assert tie["better_beyond_noise"] == [] and tie["difference_standard_error"]["alpha=0.5,gold_weight=1"] == 0


def test_a_difference_within_noise_is_recorded_but_not_called_better(tmp_path, caplog):
    """Two settings that differ on a few reviews: the better one is the best, but not beyond noise."""
    unlabeled, logits, labeled = _project(tmp_path, n_gold=40)
    result = validate_stage(unlabeled, logits, labeled, tmp_path / "v.json", StudentParams(min_df=1, alpha=1.0),
                            BaselineParams(ngram_max=1),
                            ValidationParams(folds=4, alpha=[30.0, 1e9], gold_weight=[0.0, 1000.0]))
    configured = result["settings"][result["student"]["setting"]]
    for name, accuracy in result["settings"].items():
        margin, se = accuracy - configured, result["difference_standard_error"][name]
        assert (name in result["better_beyond_noise"]) == (margin > 2 * se)
        assert (name in result["better_beyond_noise"]) == (f"{name} scores" in caplog.text)
