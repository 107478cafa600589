"""Hashed students: n-grams hashed into buckets as HashingVectorizer(alternate_sign=False) hashes them,
scored without scikit-learn by the compiled scorer and its Python twin, saved as bert2lr-hashed-text/1,
and deployed, served and audited as vocabulary students are."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import httpx
import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.utils import murmurhash3_32 as sklearn_murmurhash3_32

from bert2lr import _featurize
from bert2lr.errors import UserError
from bert2lr.linear import FORMAT_HASHED, HASH, HashedPythonScorer, LinearTextModel, murmurhash3_32, ngram_bucket
from test_linear import assert_refused_with_one_line
from test_linear_kclass import array, config_with, config_without, item

# Accents (composed and combining), CJK, Cyrillic, Arabic digits, emoji, digits and underscores,
# 'İ' (lower-cases to 'i' and a combining dot, which is no word character), ligatures, title case.
WORDS = ["good", "bad", "Film", "the", "İstanbul", "İİ", "naïve", "na\u0308ive", "ÉTÉ", "don't", "a_b", "__",
         "١٢٣", "日本語", "東京タワー", "Привет", "МИР", "straße", "ẞig", "Ω", "ǅemal", "ﬁne", "😀", "😀👍🏽", "x",
         "3d", "2024", "I", "é\u0301\u0301", "q\u0327", "𝔘𝔫𝔦"]
SEPARATORS = [" ", "  ", ", ", "\n", "-", "—", "!", " <br /> ", "\u00a0", "\u3000"]


def texts(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(0, 30))
        out.append("".join(w + rng.choice(SEPARATORS) for w in words))
    long = " ".join(rng.choices(WORDS, k=5000))
    return out + ["", "   ", "a b c ! ? é ü", "😀 😀", "good good good good good good", "İ", long,
                  " ".join(["bad film"] * 300)]


def sklearn_scores(batch, n_buckets, ngram_range, sublinear_tf, idf, coef, intercept) -> np.ndarray:
    """The fitting side's computation: TfidfTransformer with the given idf_ on HashingVectorizer's counts."""
    counts = HashingVectorizer(n_features=n_buckets, ngram_range=ngram_range, alternate_sign=False, norm=None,
                               dtype=np.float64).transform(batch)
    transformer = TfidfTransformer(sublinear_tf=sublinear_tf, norm="l2", use_idf=idf.size > 0).fit(counts)
    if idf.size:
        transformer.idf_ = idf
    return transformer.transform(counts) @ coef.T + intercept


def weights(k: int, n_buckets: int, with_idf: bool, seed: int = 0):
    """coef (k, n), intercept (k,) and idf (n,) with a third of it zeros, or (0,)."""
    rng = np.random.default_rng(seed)
    coef, intercept = rng.normal(size=(k, n_buckets)), rng.normal(size=k)
    idf = rng.uniform(1, 5, size=n_buckets) * (rng.uniform(size=n_buckets) > 1 / 3) if with_idf else np.zeros(0)
    return coef, intercept, idf


def hashed_model(k, n_buckets, ngram_range, sublinear_tf, with_idf, seed=0):
    coef, intercept, idf = weights(k, n_buckets, with_idf, seed)
    vectorizer = HashingVectorizer(n_features=n_buckets, ngram_range=ngram_range, alternate_sign=False, norm=None)
    if k == 1:
        coef, intercept = coef[0], float(intercept[0])
    return LinearTextModel.from_hashing(vectorizer, idf, coef, intercept, sublinear_tf=sublinear_tf), \
        (coef.reshape(k, -1), np.reshape(intercept, k), idf)


@pytest.mark.parametrize("scorer", ["compiled", "python"])
@pytest.mark.parametrize("with_idf", [True, False], ids=["idf", "no-idf"])
@pytest.mark.parametrize("sublinear_tf", [True, False], ids=["sublinear", "raw-tf"])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("n_buckets, ngram_range", [(7, (1, 3)), (1000, (2, 3)), (2**18, (1, 2))])
def test_hashed_logits_equal_scikit_learn(n_buckets, ngram_range, k, sublinear_tf, with_idf, scorer, monkeypatch):
    monkeypatch.setenv("BERT2LR_SCORER", scorer)
    model, (coef, intercept, idf) = hashed_model(k, n_buckets, ngram_range, sublinear_tf, with_idf)
    assert isinstance(model._scorer, HashedPythonScorer) == (scorer == "python")
    assert model.n_buckets == model.n_features == n_buckets and model.n_outputs == k
    batch = texts()
    expected = sklearn_scores(batch, n_buckets, ngram_range, sublinear_tf, idf, coef, intercept)
    logits = model.decision_function(batch)
    assert logits.shape == ((len(batch),) if k == 1 else (len(batch), k))
    np.testing.assert_allclose(logits.reshape(len(batch), k), expected, rtol=1e-9, atol=1e-9)
    # A text without tokens scores the intercept.
    assert np.array_equal(model.decision_function(["", "a b !"]).reshape(2, k), np.tile(intercept, (2, 1)))


@pytest.mark.parametrize("k", [1, 3])
def test_the_python_hashed_scorer_equals_the_compiled_one(k, monkeypatch):
    compiled, _ = hashed_model(k, 7, (1, 3), True, True)
    monkeypatch.setenv("BERT2LR_SCORER", "python")
    python, _ = hashed_model(k, 7, (1, 3), True, True)
    batch = texts(seed=1)
    np.testing.assert_allclose(python.decision_function(batch), compiled.decision_function(batch), rtol=0,
                               atol=1e-12)


def test_hashed_logits_over_threads_are_the_same_and_in_order():
    model, _ = hashed_model(4, 1000, (1, 3), True, True)
    batch = texts(n=2000, seed=2)
    model.threads = 1
    one = model.decision_function(batch)
    model.threads = 4
    np.testing.assert_array_equal(model.decision_function(batch), one)
    np.testing.assert_array_equal(model.decision_function(batch[::-1]), one[::-1])


def random_string(rng: random.Random) -> str:
    """Up to 40 code points from ASCII, Latin-1, BMP scripts and the astral planes (no lone surrogates:
    scikit-learn cannot encode them)."""
    ranges = [(0x20, 0x7E), (0xA0, 0xFF), (0x400, 0x4FF), (0x4E00, 0x9FFF), (0xE000, 0xFFFD), (0x1F300, 0x1FAFF),
              (0x10000, 0x10FFFF)]
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(0, 40)))


def test_murmurhash3_equals_scikit_learns():
    rng = random.Random(0)
    keys = [random_string(rng) for _ in range(5000)] + ["", "a", "ab", "abc", "abcd", "abcde"]
    for key in keys:
        data = key.encode("utf-8")
        assert murmurhash3_32(data) == sklearn_murmurhash3_32(data, seed=0, positive=True), key
        signed = sklearn_murmurhash3_32(data, seed=0)
        for n_buckets in (1, 7, 1000, 2**20, 2**31 - 2):
            assert ngram_bucket(key, n_buckets) == abs(signed) % n_buckets
    for seed in (1, 42, 2**32 - 1):  # the seed is always 0 here, but the function takes any
        assert murmurhash3_32(b"seeded", seed) == sklearn_murmurhash3_32(b"seeded", seed=seed, positive=True)


def key_hashing_to_int32_min() -> str:
    """An 8-letter word whose MurmurHash3 is -2**31 as a signed 32-bit integer: a random first block, and
    the second solved backwards from the hash (the function is invertible over one 4-byte block), until
    that block is 4 lower-case letters or digits."""
    mask, c1, c2 = 0xFFFFFFFF, 0xCC9E2D51, 0x1B873593

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & mask

    def block(h, k):
        k = rotl(k * c1 & mask, 15) * c2 & mask
        return (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask

    h = 0x80000000  # undo the finaliser ...
    h ^= h >> 16
    h = h * pow(0xC2B2AE35, -1, 2**32) & mask
    h ^= (h >> 13) ^ (h >> 26)
    h = h * pow(0x85EBCA6B, -1, 2**32) & mask
    h ^= h >> 16
    h ^= 8  # ... and the length
    before_last = rotl((h - 0xE6546B64) * pow(5, -1, 2**32) & mask, 32 - 13)
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    while True:
        first = "".join(rng.choices(alphabet, k=4))
        k = before_last ^ block(0, int.from_bytes(first.encode(), "little"))
        k = rotl(k * pow(c2, -1, 2**32) & mask, 32 - 15) * pow(c1, -1, 2**32) & mask
        last = k.to_bytes(4, "little")
        if all(chr(b) in alphabet for b in last):
            return first + last.decode()


@pytest.mark.parametrize("scorer", ["compiled", "python"])
def test_a_hash_of_minus_2_to_the_31_takes_scikit_learns_bucket(scorer, monkeypatch):
    monkeypatch.setenv("BERT2LR_SCORER", scorer)
    word = key_hashing_to_int32_min()
    assert sklearn_murmurhash3_32(word, seed=0) == -2**31
    for n_buckets in (7, 1000, 12345):
        bucket = 2**31 % n_buckets  # not (2**31 - 1) % n_buckets, nor 0
        assert ngram_bucket(word, n_buckets) == bucket
        coef = np.zeros(n_buckets)
        coef[bucket] = 1.0
        model = LinearTextModel.from_hashing(
            HashingVectorizer(n_features=n_buckets, alternate_sign=False, norm=None), np.zeros(0), coef, 0.0)
        assert model.decision_function([word.upper(), ""]).tolist() == [1.0, 0.0]
        np.testing.assert_allclose(model.decision_function([word, f"{word} aa"]),
                                   sklearn_scores([word, f"{word} aa"], n_buckets, (1, 1), True, np.zeros(0),
                                                  coef.reshape(1, -1), 0.0)[:, 0], rtol=0, atol=1e-12)


def test_lone_surrogates_are_no_word_characters():
    """The one text scikit-learn cannot hash (its UTF-8 encoding fails) is one the tokenizer never hashes a
    surrogate of: it is not alphanumeric, so it splits tokens and the n-grams are plain UTF-8."""
    model, (coef, intercept, idf) = hashed_model(1, 1000, (1, 2), True, True)
    surrogates, spaces = ["good\ud800film bad\udfff", "\udc00"], ["good film bad ", " "]
    np.testing.assert_array_equal(model.decision_function(surrogates), model.decision_function(spaces))


# Save and load.

@pytest.mark.parametrize("k, classes", [(1, None), (1, ("spam", "ham")), (4, ("a", "b", "c", "d"))])
def test_a_hashed_model_round_trips_through_its_file(tmp_path, k, classes):
    coef, intercept, idf = weights(k, 1000, True)
    vectorizer = HashingVectorizer(n_features=1000, ngram_range=(1, 3), alternate_sign=False, norm=None)
    model = LinearTextModel.from_hashing(vectorizer, idf, coef, intercept, classes=classes, sublinear_tf=False)
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as npz:
        assert sorted(npz.files) == ["coef", "config", "idf", "intercept"]  # no vocabulary travels
        config = json.loads(str(npz["config"]))
        assert npz["coef"].shape == (k, 1000) and npz["intercept"].shape == (k,)
    assert config == {"format": FORMAT_HASHED, "hash": HASH, "n_buckets": 1000, "ngram_range": [1, 3],
                      "sublinear_tf": False, "l2_norm": True, "classes": list(model.classes)}
    loaded = LinearTextModel.load(tmp_path)
    assert (loaded.n_buckets, loaded.ngram_range, loaded.sublinear_tf, loaded.l2_norm, loaded.classes) == \
           (1000, (1, 3), False, True, model.classes)
    assert loaded.vocabulary is None and loaded.offsets is None
    batch = texts(seed=3)
    np.testing.assert_array_equal(loaded.decision_function(batch), model.decision_function(batch))
    np.testing.assert_array_equal(loaded.predict_proba(batch), model.predict_proba(batch))
    loaded.save(tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "model.npz").read_bytes()


def test_a_hashed_file_is_much_smaller_than_a_vocabulary_file_of_as_many_features(tmp_path):
    """The same corpus, the same number of coefficients: the hashed file carries no n-gram strings."""
    corpus = texts(n=2000, seed=4)
    y = np.random.default_rng(0).normal(size=len(corpus))
    vocabulary = TfidfVectorizer(ngram_range=(1, 3), sublinear_tf=True)
    ridge = Ridge().fit(vocabulary.fit_transform(corpus), y)
    LinearTextModel.from_sklearn(vocabulary, ridge.coef_, ridge.intercept_).save(tmp_path / "vocabulary.npz")
    n = len(vocabulary.vocabulary_)
    hashing = HashingVectorizer(n_features=n, ngram_range=(1, 3), alternate_sign=False, norm=None)
    transformer = TfidfTransformer(sublinear_tf=True).fit(hashing.transform(corpus))
    ridge = Ridge().fit(transformer.transform(hashing.transform(corpus)), y)
    LinearTextModel.from_hashing(hashing, transformer.idf_, ridge.coef_, ridge.intercept_).save(
        tmp_path / "hashed.npz")
    hashed, full = (tmp_path / "hashed.npz").stat().st_size, (tmp_path / "vocabulary.npz").stat().st_size
    assert hashed < 0.6 * full, (hashed, full, n)


# Refusals: the constructors, the scorers, malformed files.

def hashing(**settings) -> HashingVectorizer:
    return HashingVectorizer(**{"n_features": 16, "alternate_sign": False, "norm": None, **settings})


@pytest.mark.parametrize("vectorizer, coef, idf, what", [
    (hashing(alternate_sign=True), np.ones(16), np.zeros(0), "vectorizer.alternate_sign=True is not supported"),
    (hashing(norm="l2"), np.ones(16), np.zeros(0), "vectorizer.norm='l2' is not supported (need None)"),
    (hashing(binary=True), np.ones(16), np.zeros(0), "vectorizer.binary=True"),
    (hashing(lowercase=False), np.ones(16), np.zeros(0), "vectorizer.lowercase=False"),
    (hashing(analyzer="char"), np.ones(16), np.zeros(0), "vectorizer.analyzer='char'"),
    (hashing(token_pattern=r"\w+"), np.ones(16), np.zeros(0), "vectorizer.token_pattern="),
    (hashing(stop_words="english"), np.ones(16), np.zeros(0), "vectorizer.stop_words='english'"),
    (hashing(strip_accents="unicode"), np.ones(16), np.zeros(0), "vectorizer.strip_accents='unicode'"),
    (hashing(dtype=np.float32), np.ones(16), np.zeros(0), "vectorizer.dtype=<class 'numpy.float32'>"),
    (hashing(), np.ones(15), np.zeros(0), "coef has 15 columns: expected 16 (vectorizer.n_features)"),
    (hashing(), np.ones(16), np.ones(15), "idf of shape (15,): expected (16,) (vectorizer.n_features) or (0,)"),
    (hashing(), np.ones((2, 16)), np.zeros(0), "coef has 2 rows: two classes take one output"),
    (hashing(ngram_range=(1, 9)), np.ones(16), np.zeros(0), "ngram range (1, 9) is not within 1..8"),
    (CountVectorizer(), np.ones(16), np.zeros(0), "CountVectorizer is not a HashingVectorizer: use from_sklearn"),
])
def test_from_hashing_refuses_what_it_cannot_reproduce(vectorizer, coef, idf, what):
    with pytest.raises(ValueError) as error:
        LinearTextModel.from_hashing(vectorizer, idf, coef, 0.0)
    assert what in str(error.value)


def test_from_sklearn_points_a_hashing_vectorizer_to_from_hashing():
    with pytest.raises(ValueError, match="a HashingVectorizer has no vocabulary: use LinearTextModel.from_hashing"):
        LinearTextModel.from_sklearn(hashing(), np.ones(16), 0.0)


def test_a_hashed_model_is_always_l2_normalised():
    with pytest.raises(ValueError, match="always L2-normalised"):
        LinearTextModel(vocabulary=None, offsets=None, coef=np.ones(4), idf=np.zeros(0), intercept=0.0,
                        ngram_range=(1, 1), sublinear_tf=True, l2_norm=False, n_buckets=4)


@pytest.mark.parametrize("scorer", [_featurize.HashedLinearModel, HashedPythonScorer])
@pytest.mark.parametrize("n_buckets, coef, idf, intercept, what", [
    (0, b"", b"", 0.0, "n_buckets is not within 1..2\\*\\*31"),
    (-1, b"", b"", 0.0, "n_buckets is not within 1..2\\*\\*31"),
    (2**31 + 1, b"", b"", 0.0, "n_buckets is not within 1..2\\*\\*31"),
    (2**70, b"", b"", 0.0, "n_buckets is not within 1..2\\*\\*31"),
    (4, np.ones(3).tobytes(), b"", 0.0, "inconsistent model arrays: need n_buckets coefficients per output"),
    (4, np.ones(8).tobytes(), b"", 0.0, "inconsistent model arrays"),
    (4, np.ones(8).tobytes(), b"", np.zeros(3).tobytes(), "inconsistent model arrays"),
    (4, np.ones(4).tobytes(), np.ones(3).tobytes(), 0.0, "inconsistent model arrays"),
    (4, np.ones(4).tobytes()[:-1], b"", 0.0, "inconsistent model arrays"),
    (4, np.ones(4).tobytes(), b"", float("nan"), "the intercept is not finite"),
    (4, np.array([1, 1, 1, np.nan]).tobytes(), b"", 0.0, "the coefficient of feature 3 is not finite"),
    (4, np.ones(4).tobytes(), np.array([1, np.inf, 1, 1]).tobytes(), 0.0, "the idf of feature 1 is not finite"),
    (2, np.array([1, 1, 1, -np.inf]).tobytes(), b"", np.zeros(2).tobytes(),
     "the coefficient of feature 1 is not finite"),
])
def test_the_hashed_scorers_check_their_arguments_alike(scorer, n_buckets, coef, idf, intercept, what):
    with pytest.raises(ValueError, match=what):
        scorer(n_buckets, coef, idf, intercept, 1, 2, True, True)


@pytest.mark.parametrize("scorer", [_featurize.HashedLinearModel, HashedPythonScorer])
def test_the_hashed_scorers_take_an_int_number_of_buckets_and_a_valid_ngram_range(scorer):
    for n_buckets in (True, 4.0, "4", None):
        with pytest.raises(TypeError, match="n_buckets must be an int"):
            scorer(n_buckets, np.ones(4).tobytes(), b"", 0.0, 1, 1, False, True)
    with pytest.raises(ValueError, match="ngram range \\(0, 2\\) is not within 1..8"):
        scorer(4, np.ones(4).tobytes(), b"", 0.0, 0, 2, False, True)
    one = scorer(1, np.array([2.0]).tobytes(), b"", 0.5, 1, 1, False, False)  # every n-gram in bucket 0
    assert np.frombuffer(one.decision_function(["aa bb aa", "", "x"])).tolist() == [6.5, 0.5, 0.5]


def saved_hashed_arrays(tmp_path, k=4) -> dict:
    """The arrays of a valid saved hashed model (1000 buckets), to spoil one at a time."""
    coef, intercept, idf = weights(k, 1000, True)
    LinearTextModel.from_hashing(hashing(n_features=1000, ngram_range=(1, 2)), idf, coef, intercept).save(
        tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as npz:
        return {name: npz[name] for name in npz.files}


def without(name):
    def spoil(arrays):
        del arrays[name]
    return spoil


@pytest.mark.parametrize("spoil, what", [
    (config_with(format="bert2lr-hashed-text/2"), "format 'bert2lr-hashed-text/2', expected "
                                                  "'bert2lr-linear-text/1', 'bert2lr-linear-text/2' or "
                                                  "'bert2lr-hashed-text/1'"),
    (config_with(n_buckets=0), "config.n_buckets is 0, expected a whole number from 1 to 2**31"),
    (config_with(n_buckets=2**31 + 1), "config.n_buckets is 2147483649"),
    (config_with(n_buckets=1000.0), "config.n_buckets is 1000.0"),
    (config_with(n_buckets=True), "config.n_buckets is True"),
    (config_with(n_buckets="1000"), "config.n_buckets is '1000'"),
    (config_without("n_buckets"), "config.n_buckets is None"),
    (config_with(n_buckets=999), "coef is float64 of shape (4, 1000) for config.n_buckets 999, expected (4, 999)"),
    (config_with(n_buckets=2**31), "for config.n_buckets 2147483648"),
    (config_with(hash={**HASH, "seed": 1}), "config.hash is {"),
    (config_with(hash={**HASH, "seed": False}), "config.hash is {"),
    (config_with(hash={**HASH, "function": "md5"}), "config.hash is {"),
    (config_with(hash={**HASH, "alternate_sign": True}), "config.hash is {"),
    (config_without("hash"), "config.hash is None, expected {'function': 'murmurhash3_x86_32'"),
    (config_with(l2_norm=False), "config.l2_norm is false, expected true: hashed models are always L2-normalised"),
    (config_with(l2_norm="true"), "config.l2_norm is 'true', expected true or false"),
    (config_with(sublinear_tf=None), "config.sublinear_tf is None, expected true or false"),
    (config_with(ngram_range=[1, 9]), "config.ngram_range is [1, 9]"),
    (config_without("classes"), "config.classes is None, expected a list of 2 or more distinct, non-empty names"),
    (config_with(classes=["a", "b", "c"]), "expected float64 of shapes (3, n), (0,) or (n,), and (3,) for 3 classes"),
    (array("coef", lambda a: a[:, :-1]), "coef is float64 of shape (4, 999) for config.n_buckets 1000"),
    (array("coef", lambda a: a[0]), "coef, idf and intercept are float64 of shape (1000,)"),
    (array("coef", lambda a: a.astype(np.float32)), "coef, idf and intercept are float32 of shape (4, 1000)"),
    (array("idf", lambda a: a[:-1]), "idf is float64 of shape (999,)"),
    (array("intercept", lambda a: a[:3]), "intercept float64 of shape (3,) for 1000 coefficients"),
    (array("coef", item((2, 7), np.nan)), "coef[2, 7] is nan"),
    (array("idf", item(5, -np.inf)), "idf[5] is -inf"),
    (array("intercept", item(1, np.nan)), "intercept[1] is nan"),
    (without("coef"), "no coef array"),
    (without("idf"), "no idf array"),
    (without("intercept"), "no intercept array"),
    (without("config"), "no config array"),
    (lambda arrays: arrays.update(vocabulary=np.zeros(3, dtype=np.uint8)),
     "a vocabulary array in a hashed model, which has none"),
])
def test_malformed_hashed_files_are_refused_with_one_line(tmp_path, spoil, what):
    arrays = saved_hashed_arrays(tmp_path)
    spoil(arrays)
    assert_refused_with_one_line(tmp_path / "bad.npz", arrays, what)


def test_a_truncated_hashed_file_is_refused(tmp_path):
    saved_hashed_arrays(tmp_path)
    data = (tmp_path / "good.npz").read_bytes()
    for size in (len(data) // 2, len(data) - 30, 100):
        (tmp_path / "cut.npz").write_bytes(data[:size])
        with pytest.raises(UserError, match="cut.npz: not a valid bert2lr linear model"):
            LinearTextModel.load(tmp_path / "cut.npz")


# A hashed student through the pipeline's evaluate and assemble, then deploy, predict, serve and audit.

@pytest.fixture(scope="module")
def hashed_student(workspace, archive, student_dir, tmp_path_factory):
    """A hashed student of the teacher's margin, evaluated and assembled as the stages do it (gate forced
    open: a student of 20 reviews need not beat the baseline)."""
    from bert2lr.files import read_logits, read_reviews
    from bert2lr.params import StudentParams
    from bert2lr.stages.assemble import assemble
    from bert2lr.stages.evaluate import evaluate
    from test_deploy import with_gate

    root, _, _ = workspace
    s = root / "splits"
    work = tmp_path_factory.mktemp("hashed")
    reviews = read_reviews(s / "unlabeled.jsonl")
    logits = read_logits(root / "logits" / "unlabeled.npz", [r["id"] for r in reviews], 2)
    vectorizer = HashingVectorizer(n_features=2**12, ngram_range=(1, 2), alternate_sign=False, norm=None)
    counts = vectorizer.transform([r["text"] for r in reviews])
    transformer = TfidfTransformer(sublinear_tf=True).fit(counts)
    ridge = Ridge(alpha=0.1).fit(transformer.transform(counts), logits[:, 1] - logits[:, 0])
    LinearTextModel.from_hashing(vectorizer, transformer.idf_, ridge.coef_, ridge.intercept_).save(
        work / "candidate" / "model.npz")
    evaluate(s / "test.jsonl", s / "test_full.jsonl", root / "baseline", work / "candidate",
             root / "logits" / "test.npz", work / "metrics", student_dir.parent / "metrics" / "validation.json")
    assemble(work / "candidate", work / "metrics" / "student.json", "imdb",
             {role: archive for role in ("labeled", "unlabeled", "test")},
             {name: s / f"{name}.jsonl" for name in ("labeled", "unlabeled", "test", "test_full")},
             root / "teacher", root / "logits" / "unlabeled.npz", work / "student", StudentParams())
    return with_gate(work / "student", work / "gated", True), vectorizer, transformer, ridge


def test_a_hashed_student_deploys_and_predicts_as_scikit_learn_scores(hashed_student):
    from bert2lr.serving.deploy import load_student, predictions

    student, vectorizer, transformer, ridge = hashed_student
    model, lineage = load_student(student)
    assert lineage["model"]["n_features"] == lineage["model"]["n_buckets"] == model.n_buckets == 2**12
    batch = texts(n=50, seed=5)
    expected = ridge.predict(transformer.transform(vectorizer.transform(batch)))
    np.testing.assert_allclose(model.decision_function(batch), expected, rtol=0, atol=1e-9)
    rows = predictions(model, batch)
    np.testing.assert_allclose([row["logit"] for row in rows], expected, rtol=0, atol=1e-6)  # rounded to 6 places
    assert [row["label"] for row in rows] == ["pos" if e > 0 else "neg" for e in expected]
    cli = subprocess.run([sys.executable, "-m", "bert2lr", "predict", *batch[:3], "--model", str(student)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert [json.loads(line) for line in cli.stdout.splitlines()] == json.loads(json.dumps(rows[:3]))


def test_a_hashed_student_loads_without_scikit_learn(hashed_student):
    student = hashed_student[0]
    code = ("import sys; from bert2lr.serving.deploy import load_student, predictions;"
            f"m, _ = load_student({str(student)!r}); print(predictions(m, ['great film', ''])[0]['label']);"
            "bad = [x for x in ('torch', 'transformers', 'sklearn', 'scipy') if x in sys.modules];"
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"pos", "neg"}


def test_a_hashed_student_is_served(hashed_student):
    from bert2lr.serving.deploy import load_student, predictions
    from test_serve import start_server

    student = hashed_student[0]
    process, url = start_server(student)
    try:
        batch = ["great film", "awful film", "日本語 İstanbul"]
        response = httpx.post(url + "/predict", json={"texts": batch})
        assert response.status_code == 200
        assert response.json()["predictions"] == predictions(load_student(student)[0], batch)
        assert httpx.get(url + "/model").json()["model"]["n_buckets"] == 2**12
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_audit_says_a_student_is_hashed(hashed_student, student_dir):
    student = hashed_student[0]
    result = subprocess.run([sys.executable, "-m", "bert2lr", "audit", str(student)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "n-grams hashed into 4,096 buckets" in result.stdout
    vocabulary = subprocess.run([sys.executable, "-m", "bert2lr", "audit", str(student_dir)], capture_output=True,
                                text=True, timeout=120)
    assert "n-gram features" in vocabulary.stdout and "hashed" not in vocabulary.stdout


@pytest.mark.parametrize("value", [0, -1, 4096.0, "4096", True, None])
def test_a_lineage_record_with_a_bad_n_buckets_is_refused(hashed_student, tmp_path, value):
    import shutil

    from bert2lr.serving.deploy import read_lineage

    student = shutil.copytree(hashed_student[0], tmp_path / "student")
    record = json.loads((student / "lineage.json").read_text())
    record["model"]["n_buckets"] = value
    (student / "lineage.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=f"model.n_buckets is .*; expected a whole number >= 1"):
        read_lineage(student)


def test_a_model_is_either_hashed_or_has_a_vocabulary():
    arrays = dict(coef=np.ones(4), idf=np.zeros(0), intercept=0.0, ngram_range=(1, 1), sublinear_tf=True, l2_norm=True)
    with pytest.raises(ValueError, match="a hashed model has no vocabulary"):
        LinearTextModel(vocabulary=np.zeros(0, dtype=np.uint8), offsets=None, n_buckets=4, **arrays)
    with pytest.raises(ValueError, match="a vocabulary model needs its vocabulary and offsets"):
        LinearTextModel(vocabulary=None, offsets=None, **arrays)
