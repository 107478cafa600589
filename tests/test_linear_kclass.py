"""K classes in the deployable linear model, its scorers and the student fit (K = 2 stays the margin model)."""

import json
import random

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge

from bert2lr import _featurize
from bert2lr.distill import fit_student
from bert2lr.errors import UserError
from bert2lr.classes import CLASS_NAMES
from bert2lr.linear import FORMAT, FORMAT_1_CLASSES, FORMAT_CLASSES, LinearTextModel, PythonScorer, sigmoid, softmax
from bert2lr.params import StudentParams

WORDS = ["good", "bad", "Film", "the", "İstanbul", "naïve", "x", "ÉTÉ", "don't", "a_b", "١٢٣", "日本語",
         "straße", "Ω", "na\u0308ive", "ǅemal", "ﬁne", "😀", "<br />", "--", "3d", "I"]


def corpus(n=300, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 25))) for _ in range(n)] + ["", "a", "x y z", "😀😀 ok"]


def targets(texts, k, seed=0):
    return np.random.default_rng(seed).normal(size=(len(texts), k))


def fitted(vectorizer, k, texts=None):
    """A vectorizer and a ridge with k outputs fitted on it (random targets: any weights will do);
    coef_ of shape (k, n) and intercept_ of shape (k,), k = 1 too."""
    texts = corpus() if texts is None else texts
    ridge = Ridge(alpha=0.3).fit(vectorizer.fit_transform(texts), targets(texts, k))
    ridge.coef_, ridge.intercept_ = ridge.coef_.reshape(k, -1), np.reshape(ridge.intercept_, k)
    return vectorizer, ridge


VECTORIZERS = [
    lambda: CountVectorizer(ngram_range=(1, 3)),
    lambda: TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True, min_df=2),
    lambda: TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=False),
    lambda: TfidfVectorizer(ngram_range=(1, 8), norm=None, min_df=2, sublinear_tf=True),
]


@pytest.mark.parametrize("scorer", ["compiled", "python"])
@pytest.mark.parametrize("make", VECTORIZERS)
@pytest.mark.parametrize("k", [3, 4])
def test_k_logits_equal_scikit_learn(k, make, scorer, monkeypatch):
    monkeypatch.setenv("BERT2LR_SCORER", scorer)
    vectorizer, ridge = fitted(make(), k)
    assert ridge.coef_.shape[0] == k
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    assert isinstance(model._scorer, PythonScorer) == (scorer == "python")
    assert model.n_outputs == k and model.classes == tuple(str(c) for c in range(k))
    for batch in (corpus(), corpus(seed=1)):
        expected = vectorizer.transform(batch) @ ridge.coef_.T + ridge.intercept_
        logits = model.decision_function(batch)
        assert logits.shape == (len(batch), k)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(model.predict(batch), np.argmax(logits, axis=1))
        proba = model.predict_proba(batch)
        np.testing.assert_allclose(proba, softmax(expected, axis=1), rtol=0, atol=1e-9)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", VECTORIZERS)
def test_the_python_scorer_equals_the_compiled_one_with_k_outputs(make, monkeypatch):
    vectorizer, ridge = fitted(make(), 4)
    compiled = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    monkeypatch.setenv("BERT2LR_SCORER", "python")
    python = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    texts = corpus(seed=2)
    np.testing.assert_allclose(python.decision_function(texts), compiled.decision_function(texts), rtol=0, atol=1e-12)


def test_each_of_k_outputs_is_what_a_one_output_model_of_its_row_gives():
    """One pass, K dot products: output k is bit for bit the one-output scorer's on coef[k] (same summing order)."""
    vectorizer, ridge = fitted(TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True), 3)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    texts = corpus(seed=3)
    logits = model.decision_function(texts)
    for k in range(3):
        one = LinearTextModel.from_sklearn(vectorizer, ridge.coef_[k], ridge.intercept_[k])
        np.testing.assert_array_equal(logits[:, k], one.decision_function(texts))


def test_k_outputs_over_threads_are_the_same_and_in_order():
    texts = corpus(n=2000)
    vectorizer, ridge = fitted(TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True), 4, texts)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_)
    model.threads = 1
    one = model.decision_function(texts)
    model.threads = 4
    np.testing.assert_array_equal(model.decision_function(texts), one)
    np.testing.assert_array_equal(model.decision_function(texts[::-1]), one[::-1])


def test_two_classes_stay_the_margin_model():
    texts = corpus()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    X = vectorizer.fit_transform(texts)
    labels = (targets(texts, 1)[:, 0] > 0).astype(int)
    classifier = LogisticRegression().fit(X, labels)
    # scikit-learn's (1, n) and (1,) for two classes, or a row and a number: the same one output.
    model = LinearTextModel.from_sklearn(vectorizer, classifier.coef_, classifier.intercept_)
    flat = LinearTextModel.from_sklearn(vectorizer, classifier.coef_[0], float(classifier.intercept_[0]))
    assert model.n_outputs == flat.n_outputs == 1 and model.classes == ("neg", "pos")
    margin = model.decision_function(texts)
    assert margin.shape == (len(texts),)
    np.testing.assert_array_equal(margin, flat.decision_function(texts))
    np.testing.assert_allclose(margin, classifier.decision_function(X), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(model.predict(texts), classifier.predict(X))
    proba = model.predict_proba(texts)
    np.testing.assert_array_equal(proba, np.column_stack([sigmoid(-margin), sigmoid(margin)]))
    np.testing.assert_allclose(proba, classifier.predict_proba(X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scorer", [_featurize.LinearModel, PythonScorer])
def test_a_one_output_intercept_as_bytes_scores_as_the_number(scorer):
    vectorizer, ridge = fitted(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), 1)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_[0], ridge.intercept_[0])
    arrays = (model.vocabulary.tobytes(), model.offsets.tobytes(), model.coef.tobytes(), model.idf.tobytes())
    rest = (1, 2, True, True)
    texts = corpus(seed=4)
    as_number = scorer(*arrays, float(ridge.intercept_[0]), *rest).decision_function(texts)
    as_bytes = scorer(*arrays, np.array([ridge.intercept_[0]]).tobytes(), *rest).decision_function(texts)
    assert as_number == as_bytes


def test_format_1_means_the_pipelines_two_classes():
    assert FORMAT_1_CLASSES == CLASS_NAMES


def test_a_format_1_file_loads_and_scores_as_before(tmp_path):
    """A file written the way every model was before K classes: the same arrays, the same logits."""
    vectorizer, ridge = fitted(TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True), 1)
    coef, intercept = ridge.coef_[0], float(ridge.intercept_[0])
    model = LinearTextModel.from_sklearn(vectorizer, coef, intercept)
    config = {"format": "bert2lr-linear-text/1", "ngram_range": [1, 3], "sublinear_tf": True, "l2_norm": True}
    np.savez(tmp_path / "old.npz", config=np.array(json.dumps(config)), vocabulary=model.vocabulary,
             offsets=model.offsets, coef=coef, idf=vectorizer.idf_, intercept=np.array(intercept))
    old = LinearTextModel.load(tmp_path / "old.npz")
    assert old.classes == ("neg", "pos") and old.n_outputs == 1
    texts = corpus(seed=5)
    np.testing.assert_array_equal(old.decision_function(texts), model.decision_function(texts))
    # ... and save() still writes that format, array for array.
    old.save(tmp_path / "again.npz")
    with np.load(tmp_path / "old.npz") as before, np.load(tmp_path / "again.npz") as after:
        assert before.files == after.files
        assert json.loads(str(after["config"])) == config
        for name in before.files:
            assert before[name].dtype == after[name].dtype and before[name].shape == after[name].shape
            np.testing.assert_array_equal(before[name], after[name])


@pytest.mark.parametrize("k, classes", [(4, ("World", "Sports", "Business", "Sci/Tech")),
                                        (3, ("négatif", "neutre", "日本語")),
                                        (1, ("spam", "ham"))])
def test_class_names_travel_in_format_2(tmp_path, k, classes):
    vectorizer, ridge = fitted(CountVectorizer(ngram_range=(1, 2)), k)
    model = LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_, classes=classes)
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as npz:
        config = json.loads(str(npz["config"]))
        assert config["format"] == FORMAT_CLASSES and config["classes"] == list(classes)
        assert npz["coef"].shape == (k, model.n_features) and npz["intercept"].shape == (k,)
    loaded = LinearTextModel.load(tmp_path)
    assert loaded.classes == classes and loaded.n_outputs == k
    texts = corpus(seed=6)
    np.testing.assert_array_equal(loaded.decision_function(texts), model.decision_function(texts))
    np.testing.assert_array_equal(loaded.predict_proba(texts), model.predict_proba(texts))


def test_the_default_two_classes_are_saved_in_format_1(tmp_path):
    vectorizer, ridge = fitted(CountVectorizer(), 1)
    LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_).save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as npz:
        assert json.loads(str(npz["config"]))["format"] == FORMAT
        assert npz["coef"].ndim == 1 and npz["intercept"].shape == ()


@pytest.mark.parametrize("coef_shape, intercept_shape, classes, what", [
    ((2, 5), (2,), None, "coef has 2 rows: two classes take one output"),
    ((3, 5), (2,), None, "coef of shape (3, 5) and intercept of shape (2,)"),
    ((5,), (2,), None, "coef of shape (5,) and intercept of shape (2,)"),
    ((3, 5), (3,), ("a", "b"), "2 classes take 1 output(s)"),
    ((3, 5), (3,), ("a", "b", "c", "d"), "4 classes take 4 output(s)"),
    ((3, 5), (3,), ("a", "b", "a"), "expected 2 or more distinct, non-empty names"),
    ((3, 5), (3,), ("a", "", "c"), "expected 2 or more distinct, non-empty names"),
    ((5,), (), ("a",), "expected 2 or more distinct, non-empty names"),
    ((5,), (), "ab", "expected 2 or more distinct, non-empty names"),
])
def test_from_sklearn_refuses_shapes_and_classes_that_do_not_fit(coef_shape, intercept_shape, classes, what):
    vectorizer = CountVectorizer().fit(["aa bb cc dd ee"])
    with pytest.raises(ValueError) as error:
        LinearTextModel.from_sklearn(vectorizer, np.ones(coef_shape), np.zeros(intercept_shape), classes=classes)
    assert what in str(error.value)


@pytest.mark.parametrize("scorer", [_featurize.LinearModel, PythonScorer])
@pytest.mark.parametrize("coef, intercept, what", [
    (np.ones(3), np.zeros(2).tobytes(), "inconsistent model arrays"),
    (np.ones(6), np.zeros(2).tobytes()[:-1], "the intercepts must be 1 or more float64"),
    (np.ones(6), b"", "the intercepts must be 1 or more float64"),
    (np.ones(6), np.array([0.0, np.nan, 0.0]).tobytes(), "the intercept is not finite"),
    (np.array([1, 1, 1, 1, np.inf, 1.0]), np.zeros(3).tobytes(), "the coefficient of feature 0 is not finite"),
    (np.array([1, 1, 1, 1, 1, -np.inf]), np.zeros(3).tobytes(), "the coefficient of feature 1 is not finite"),
])
def test_the_scorers_check_k_outputs(scorer, coef, intercept, what):
    with pytest.raises(ValueError, match=what):
        scorer(b"abcd", np.array([0, 2, 4]).tobytes(), coef.tobytes(), b"", intercept, 1, 1, False, False)


@pytest.mark.parametrize("scorer", [_featurize.LinearModel, PythonScorer])
def test_k_outputs_without_features_or_texts(scorer):
    intercepts = np.array([0.5, -1.0, 2.0])
    model = scorer(b"", np.array([0]).tobytes(), b"", b"", intercepts.tobytes(), 1, 2, True, True)
    assert np.frombuffer(model.decision_function(["", "any text"])).tolist() == [0.5, -1.0, 2.0] * 2
    assert model.decision_function([]) == b""


def saved_k_arrays(tmp_path) -> dict:
    """The arrays of a valid saved 4-class model, to spoil one at a time."""
    vectorizer, ridge = fitted(TfidfVectorizer(ngram_range=(1, 2)), 4)
    LinearTextModel.from_sklearn(vectorizer, ridge.coef_, ridge.intercept_, classes=("a", "b", "c", "d")).save(
        tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as npz:
        return {k: npz[k] for k in npz.files}


def config_with(**changes):
    def spoil(arrays):
        arrays["config"] = np.array(json.dumps(json.loads(str(arrays["config"])) | changes))
    return spoil


def config_without(key):
    def spoil(arrays):
        config = json.loads(str(arrays["config"]))
        del config[key]
        arrays["config"] = np.array(json.dumps(config))
    return spoil


def array(name, value):
    def spoil(arrays):
        arrays[name] = value(arrays[name].copy())
    return spoil


def item(index, value):
    def change(a):
        a[index] = value
        return a
    return change


@pytest.mark.parametrize("spoil, what", [
    (config_with(format="bert2lr-linear-text/3"), "format 'bert2lr-linear-text/3', expected "
                                                  "'bert2lr-linear-text/1', 'bert2lr-linear-text/2' or "
                                                  "'bert2lr-hashed-text/1'"),
    (config_without("classes"), "config.classes is None, expected a list of 2 or more distinct, non-empty names"),
    (config_with(classes="abcd"), "config.classes is 'abcd'"),
    (config_with(classes=["a"]), "config.classes is ['a']"),
    (config_with(classes=["a", "b", "a", "d"]), "config.classes is ['a', 'b', 'a', 'd']"),
    (config_with(classes=["a", "", "c", "d"]), "config.classes is ['a', '', 'c', 'd']"),
    (config_with(classes=["a", 2, "c", "d"]), "config.classes is ['a', 2, 'c', 'd']"),
    (config_with(classes=["a", "b", "c"]), "expected float64 of shapes (3, n), (0,) or (n,), and (3,) for 3 classes"),
    (config_with(classes=["a", "b"]), "expected float64 of shapes (1, n), (0,) or (n,), and (1,) for 2 classes"),
    (config_with(format=FORMAT), "expected float64 of shapes (n,), (0,) or (n,), and ()"),
    (array("coef", lambda a: a[:3]), "coef, idf and intercept are float64 of shape (3, 309)"),
    (array("coef", lambda a: a[0]), "coef, idf and intercept are float64 of shape (309,)"),
    (array("coef", lambda a: a.astype(np.float32)), "coef, idf and intercept are float32 of shape (4, 309)"),
    (array("intercept", lambda a: a[:3]), "intercept float64 of shape (3,) for 309 coefficients; expected idf of "
                                          "shape (0,) or (309,) and intercept of shape (4,)"),
    (array("intercept", lambda a: a[0]), "intercept of shape (4,)"),
    (array("idf", lambda a: a[:-1]), "idf is float64 of shape (308,)"),
    (array("offsets", lambda a: a[:-1]), "offsets is int64 of shape (309,), expected int64 of shape (310,)"),
    (array("coef", item((2, 7), np.nan)), "coef[2, 7] is nan"),
    (array("coef", item((3, 308), -np.inf)), "coef[3, 308] is -inf"),
    (array("intercept", item(1, np.inf)), "intercept[1] is inf"),
    (array("idf", item(5, np.nan)), "idf[5] is nan"),
    (array("vocabulary", item(0, 0xC0)), "vocabulary entry 0 is not a 1..2-gram of word tokens"),
])
def test_malformed_k_class_files_are_refused_with_one_line(tmp_path, spoil, what):
    arrays = saved_k_arrays(tmp_path)
    assert arrays["coef"].shape == (4, 309)  # the counts in the expected messages
    spoil(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError) as error:
        LinearTextModel.load(tmp_path / "bad.npz")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'bad.npz'}: not a valid bert2lr linear model (")
    assert what in message and "\n" not in message


# The student fit with K classes.

TOPICS = [["goal", "match", "coach", "league"], ["market", "shares", "profit", "bank"],
          ["galaxy", "software", "chip", "genome"], ["election", "minister", "treaty", "army"]]
FILLER = ["the", "a", "of", "said", "on", "new", "après", "über"]


def topic_reviews(n, k, seed):
    """Texts mostly about one of k topics, the teacher's logits for them (noisy topic counts) and the topic."""
    rng = random.Random(seed)
    texts, logits, labels = [], [], []
    for _ in range(n):
        topic = rng.randrange(k)
        words = rng.choices(TOPICS[topic], k=rng.randint(1, 4)) + rng.choices(sum(TOPICS[:k], []), k=1) \
            + rng.choices(FILLER, k=rng.randint(2, 8))
        rng.shuffle(words)
        texts.append(" ".join(words))
        counts = np.array([sum(w in TOPICS[t] for w in words) for t in range(k)], dtype=float)
        logits.append(2.0 * counts + rng.gauss(0, 0.3) + np.array([rng.gauss(0, 0.3) for _ in range(k)]))
        labels.append(topic)
    return texts, np.array(logits), labels


@pytest.mark.parametrize("options", [
    {"fit": "ridge", "target": "margin"},
    {"fit": "ridge", "target": "logits", "alpha": 0.1},
    {"fit": "least_squares", "target": "logits", "features": "count", "ngram_max": 1},
    {"fit": "logistic", "target": "soft_label"},
    {"fit": "logistic", "target": "soft_label", "temperature": 2.0, "gold_weight": 0.0},
])
@pytest.mark.parametrize("k", [3, 4])
def test_a_k_class_student_follows_its_teacher(k, options):
    texts, logits, _ = topic_reviews(400, k, seed=k)
    gold_texts, _, gold = topic_reviews(60, k, seed=10 + k)
    names = tuple(f"topic {t}" for t in range(k))
    student = fit_student(texts, logits, StudentParams(min_df=1, **options), gold_texts, gold, classes=names)
    assert student.classes == names and student.n_outputs == k
    test_texts, test_logits, _ = topic_reviews(200, k, seed=20 + k)
    scores = student.decision_function(test_texts)
    assert scores.shape == (200, k)
    agreement = np.mean(student.predict(test_texts) == test_logits.argmax(axis=1))
    assert agreement > 0.85, agreement
    if options["fit"] != "logistic":
        # Centred targets, a solution linear in them: the student's logits sum to 0 per text
        # (to the tolerance of scikit-learn's iterative solvers for sparse features).
        np.testing.assert_allclose(scores.sum(axis=1), 0, rtol=0, atol=1e-3)
        assert np.abs(scores).mean() > 1


def test_the_k_class_regression_fits_the_centred_logits():
    """Option (a): the teacher's logits shifted by any per-review constant give the same student,
    whose logits are a ridge regression of the centred logits (gold labels at the teacher's typical gap)."""
    texts, logits, _ = topic_reviews(300, 3, seed=0)
    gold_texts, _, gold = topic_reviews(40, 3, seed=1)
    p = StudentParams(min_df=1, fit="ridge", target="logits", alpha=0.5, gold_weight=2.0)
    student = fit_student(texts, logits, p, gold_texts, gold)
    shift = np.random.default_rng(0).normal(scale=5, size=(len(texts), 1))
    shifted = fit_student(texts, logits + shift, p, gold_texts, gold)
    probe = texts[:50] + gold_texts
    np.testing.assert_allclose(shifted.decision_function(probe), student.decision_function(probe), rtol=0, atol=1e-9)
    vectorizer = TfidfVectorizer(ngram_range=(1, 3), min_df=1, sublinear_tf=True)
    X = vectorizer.fit_transform(texts + gold_texts)
    centred = logits - logits.mean(axis=1, keepdims=True)
    gap = np.mean(centred.max(axis=1) - (centred.sum(axis=1) - centred.max(axis=1)) / 2)
    y = np.vstack([centred, gap * (np.eye(3)[gold] - 1 / 3)])
    ridge = Ridge(alpha=0.5).fit(X, y, sample_weight=np.r_[np.ones(len(texts)), np.full(len(gold), 2.0)])
    np.testing.assert_allclose(student.decision_function(probe), ridge.predict(vectorizer.transform(probe)),
                               rtol=0, atol=1e-9)


def test_the_k_class_logistic_fit_weights_each_class_by_the_teachers_probability():
    """Option (b): the same as scikit-learn's multinomial fit on the repeated, probability-weighted reviews."""
    texts, logits, _ = topic_reviews(200, 3, seed=2)
    p = StudentParams(min_df=1, fit="logistic", target="soft_label", temperature=1.5, alpha=0.5, gold_weight=0.0)
    student = fit_student(texts, logits, p)
    vectorizer = TfidfVectorizer(ngram_range=(1, 3), min_df=1, sublinear_tf=True)
    X = vectorizer.fit_transform(texts)
    prob = softmax(logits / 1.5, axis=1)
    from scipy import sparse
    reference = LogisticRegression(C=2.0, max_iter=1000).fit(
        sparse.vstack([X] * 3), np.repeat(np.arange(3), len(texts)), sample_weight=prob.T.ravel())
    np.testing.assert_allclose(student.decision_function(texts), reference.decision_function(X), rtol=0, atol=1e-6)


def test_k_class_gold_labels_must_be_class_indices():
    texts, logits, _ = topic_reviews(50, 3, seed=3)
    with pytest.raises(UserError, match="gold labels must be class indices 0..2, got values from 0 to 3"):
        fit_student(texts, logits, StudentParams(min_df=1), ["goal coach"] * 2, [0, 3])


def test_teacher_logits_must_have_a_column_per_class():
    with pytest.raises(UserError, match=r"teacher logits of shape \(2,\) for 2 reviews"):
        fit_student(["goal coach", "bank profit"], np.zeros(2), StudentParams(min_df=1))
