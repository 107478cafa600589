"""The hashed student: the vocabulary student's ridge on hashed TF-IDF features, solved out of core shard
by shard; checked against scikit-learn's in-memory Ridge on the same features."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import review
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import Ridge

from bert2lr.distill import fit_hashed_student, fit_student, hashing_vectorizer
from bert2lr.errors import UserError
from bert2lr.params import StudentParams


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [review(rng, rng.random() < 0.5) + (" über naïve 東京 ёлка" if i % 7 == 0 else "") for i in range(n)]


def shards_of(texts: list[str], logits: np.ndarray, size: int) -> list[tuple[list[str], np.ndarray]]:
    return [(texts[i:i + size], logits[i:i + size]) for i in range(0, len(texts), size)]


def in_memory_ridge(texts, targets, weights, p: StudentParams):
    """scikit-learn's TfidfTransformer and Ridge (solved to 1e-12) on the hashed counts, all in memory."""
    counts = hashing_vectorizer(p).transform(texts)
    tfidf = TfidfTransformer(sublinear_tf=p.sublinear_tf).fit(counts)
    ridge = Ridge(alpha=p.alpha, tol=1e-12, max_iter=100_000).fit(tfidf.transform(counts), targets,
                                                                sample_weight=weights)
    return tfidf, ridge


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("gold_weight", [0.0, 2.5])
def test_the_streamed_ridge_is_scikit_learns_ridge_on_the_same_features(n_classes, gold_weight):
    p = StudentParams(features="hashing", n_buckets=4096, alpha=0.5, gold_weight=gold_weight)
    texts, gold_texts = corpus(60, seed=1), corpus(12, seed=2)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, n_classes)) * 3
    gold = rng.integers(0, n_classes, size=12)
    model = fit_hashed_student(shards_of(texts, logits, 25), p, gold_texts, gold.tolist())

    # The same targets as the vocabulary student: the margin (two classes) or the centred logits,
    # gold labels as logits as confident as the teacher's typical one.
    if n_classes == 2:
        margin = logits[:, 1] - logits[:, 0]
        targets = np.concatenate([margin, np.where(gold == 1, 1.0, -1.0) * np.abs(margin).mean()])
    else:
        centred = logits - logits.mean(axis=1, keepdims=True)
        top = centred.max(axis=1)
        scale = np.mean(top - (centred.sum(axis=1) - top) / (n_classes - 1))
        targets = np.vstack([centred, scale * (np.eye(n_classes)[gold] - 1.0 / n_classes)])
    use_gold = gold_weight > 0
    all_texts = texts + (gold_texts if use_gold else [])
    targets = targets if use_gold else targets[:60]
    weights = np.concatenate([np.ones(60), np.full(12 if use_gold else 0, gold_weight)])
    tfidf, ridge = in_memory_ridge(all_texts, targets, weights, p)

    new_texts = corpus(30, seed=3) + ["", "!!", "ÜBER NAÏVE 東京"]
    expected = ridge.predict(tfidf.transform(hashing_vectorizer(p).transform(new_texts)))
    np.testing.assert_allclose(model.decision_function(new_texts), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.idf, tfidf.idf_, rtol=1e-12)
    assert model.n_features == 4096


def test_the_shards_a_transfer_set_comes_in_do_not_change_the_student():
    p = StudentParams(features="hashing", n_buckets=2048)
    texts = corpus(50, seed=4)
    logits = np.random.default_rng(1).normal(size=(50, 2))
    whole = fit_hashed_student([(texts, logits)], p, corpus(5, seed=5), [0, 1, 1, 0, 1])
    sharded = fit_hashed_student(shards_of(texts, logits, 7), p, corpus(5, seed=5), [0, 1, 1, 0, 1])
    probe = corpus(20, seed=6)
    np.testing.assert_allclose(sharded.decision_function(probe), whole.decision_function(probe), rtol=1e-7, atol=1e-7)


def test_the_stored_rows_go_where_they_are_told_and_are_removed(tmp_path):
    p = StudentParams(features="hashing", n_buckets=256)
    seen = []

    def shards():
        for k in range(3):
            seen.append(sorted(path.name for path in tmp_path.rglob("*")))  # what the fit has stored so far
            yield corpus(5, seed=20 + k), np.ones((5, 2))

    fit_hashed_student(shards(), p, workdir=tmp_path)
    assert seen[2] and any(name.endswith(".X.npz") for name in seen[2])  # rows of the first shards, on disk
    assert list(tmp_path.iterdir()) == []


def test_fit_student_with_hashing_is_the_streamed_fit_on_one_shard():
    p = StudentParams(features="hashing", n_buckets=1024)
    texts = corpus(30, seed=7)
    logits = np.random.default_rng(2).normal(size=(30, 2))
    probe = corpus(10, seed=8)
    np.testing.assert_array_equal(fit_student(texts, logits, p).decision_function(probe),
                                  fit_hashed_student([(texts, logits)], p).decision_function(probe))


def test_the_hashed_student_learns_the_teachers_labels():
    """Fitted to a teacher that reads one word, the student agrees with it on new reviews."""
    p = StudentParams(features="hashing", n_buckets=2**16, gold_weight=0)
    texts = corpus(300, seed=9)
    margin = np.array([2.0 if "great" in t or "wonderful" in t or "loved" in t else -2.0 for t in texts])
    model = fit_hashed_student(shards_of(texts, np.column_stack([-margin / 2, margin / 2]), 100), p)
    probe = corpus(100, seed=10)
    teacher = np.array([int("great" in t or "wonderful" in t or "loved" in t) for t in probe])
    assert np.mean(model.predict(probe) == teacher) > 0.9


def test_bad_shards_are_one_error():
    p = StudentParams(features="hashing", n_buckets=64)
    with pytest.raises(UserError, match="the transfer set is empty"):
        fit_hashed_student([], p)
    with pytest.raises(UserError, match=r"teacher logits of shape \(2, 3\) for a shard of 2 reviews; expected \(2, 2\)"):
        fit_hashed_student([(["a b", "c d"], np.zeros((2, 2))), (["e f", "g h"], np.zeros((2, 3)))], p)
    with pytest.raises(UserError, match=r"gold labels must be class indices 0..2"):
        fit_hashed_student([(["a b", "c d"], np.zeros((2, 3)))], p, ["x y"], [5])
    with pytest.raises(UserError, match=r"'student.n_buckets' \(2147483648\) must be at most 2147483647"):
        fit_hashed_student([(["a b"], np.zeros((1, 2)))], StudentParams(features="hashing", n_buckets=2**31))
