"""The deployable form of a linear text model: its features and weights in one NPZ, no pickle.

A model's features are the n-grams of scikit-learn's word analyzer (lower-cased, tokens
r"(?u)\\b\\w\\w+\\b", an n-gram's tokens joined by one space), weighted as TfidfTransformer weights them
(raw or 1 + log counts, times idf, rows L2-normalised or not). They are found one of two ways:

- a vocabulary (from CountVectorizer/TfidfVectorizer, `LinearTextModel.from_sklearn`): the
  n-grams' strings travel in the file, formats bert2lr-linear-text/1 and /2;
- hashing (from HashingVectorizer, `LinearTextModel.from_hashing`): no vocabulary; an n-gram's
  feature is its bucket, exactly as HashingVectorizer(alternate_sign=False) computes it:
  MurmurHash3_x86_32 of the n-gram's UTF-8 bytes with seed 0, read as a signed 32-bit integer h,
  bucket abs(h) % n_buckets (abs(-2**31) = 2**31, scikit-learn's special case), counts of n-grams
  that share a bucket added up. Format bert2lr-hashed-text/1: config names the hash, n_buckets,
  ngram_range, sublinear_tf, l2_norm (always true: hashed rows are always L2-normalised) and the
  classes; arrays coef (outputs, n_buckets), idf (n_buckets,) or (0,) for none, intercept (outputs,).

Loading and scoring need numpy and the compiled `_featurize` extension only: no torch,
no transformers, no scikit-learn at serving time. Where the extension cannot be imported
(it was not built for this platform), `PythonScorer` and `HashedPythonScorer` give the same
logits, many times slower.

Two classes take one output, the margin (logit of the second class minus that of the first);
K > 2 classes take K outputs, a logit per class. The class names travel in the file.
"""

from __future__ import annotations

import io
import json
import math
import operator
import os
import re
import reprlib
import struct
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert2lr.errors import UserError
from bert2lr.files import atomic_path
from bert2lr.limits import MAX_NGRAM, default_threads

try:
    from bert2lr._featurize import HashedLinearModel as CompiledHashedScorer
    from bert2lr._featurize import LinearModel as CompiledScorer
except ImportError as exc:
    CompiledScorer = CompiledHashedScorer = None
    print(f"bert2lr: warning: the compiled scorer cannot be imported ({exc}); scoring in Python, "
          "with the same results, many times slower", file=sys.stderr)

# The most buckets a hashed model may have: every bucket index (at most 2**31 - 1) fits an int32, as
# in scikit-learn's feature hashing; params.py's student.n_buckets and the compiled scorer's
# MAX_BUCKETS agree (a test checks params). Here, not in limits.py: every stage depends on that file.
MAX_BUCKETS = 2**31
MODEL_FILE = "model.npz"
FORMAT = "bert2lr-linear-text/1"  # one output, the classes ("neg", "pos"): written whenever it fits
# What a format /1 file means, for good: not imported from bert2lr.classes (whose CLASS_NAMES a test
# checks it equals today), so that a file's meaning cannot move with that module, and so that the
# stages that load models do not come to depend on it.
FORMAT_1_CLASSES = ("neg", "pos")
FORMAT_CLASSES = "bert2lr-linear-text/2"  # the class names in config, coef (outputs, n), intercept (outputs,)
FORMAT_HASHED = "bert2lr-hashed-text/1"  # as /2, with n_buckets and HASH in config instead of a vocabulary
FORMATS = (FORMAT, FORMAT_CLASSES, FORMAT_HASHED)
# How a hashed model's n-grams become buckets, in its file's config: loading refuses any other
# description, so that a file can never be scored with a hash other than the one it was fitted with.
HASH = {
    "function": "murmurhash3_x86_32",
    "seed": 0,
    "key": "the n-gram's UTF-8 bytes: its tokens joined by one space (lone surrogates as Python's surrogatepass)",
    "bucket": "abs(h) % n_buckets, h the hash as a signed 32-bit integer and abs(-2**31) = 2**31",
    "alternate_sign": False,
    "as": "scikit-learn's HashingVectorizer(alternate_sign=False)",
}
# CountVectorizer/TfidfVectorizer settings the compiled featurizer reproduces exactly.
_SUPPORTED = {
    "analyzer": "word", "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "tokenizer": None,
    "preprocessor": None, "stop_words": None, "strip_accents": None, "binary": False,
}
# HashingVectorizer settings on top of those: unsigned raw counts, which from_hashing weights itself.
_SUPPORTED_HASHING = {"alternate_sign": False, "norm": None}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))  # stable for large logits
    return z / np.sum(z, axis=axis, keepdims=True)


def n_outputs_for(n_classes: int) -> int:
    """Two classes: one output (the margin); K > 2 classes: K outputs."""
    return 1 if n_classes == 2 else n_classes


def _intercepts(intercept) -> np.ndarray:
    """The scorers' intercept argument: a number (one output) or the bytes of K float64."""
    if isinstance(intercept, float) or not isinstance(intercept, (bytes, bytearray, memoryview)):
        return np.array([float(intercept)])
    data = memoryview(intercept).cast("B")
    if len(data) % 8 or not data:
        raise ValueError("the intercepts must be 1 or more float64, 8 bytes each")
    return np.frombuffer(data, dtype=np.float64)


_TOKEN = re.compile(_SUPPORTED["token_pattern"])
_MASK32 = 0xFFFFFFFF


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def murmurhash3_32(key: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32 of key as an unsigned 32-bit integer, its 4-byte blocks read little-endian:
    scikit-learn's murmurhash3_32(key, seed, positive=True), without scikit-learn."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _MASK32
    end = len(key) - len(key) % 4
    for k in struct.unpack_from(f"<{end // 4}I", key):
        h = _rotl32(h ^ (_rotl32(k * c1 & _MASK32, 15) * c2 & _MASK32), 13)
        h = (h * 5 + 0xE6546B64) & _MASK32
    if end < len(key):
        h ^= _rotl32(int.from_bytes(key[end:], "little") * c1 & _MASK32, 15) * c2 & _MASK32
    h ^= len(key) & _MASK32
    h = (h ^ (h >> 16)) * 0x85EBCA6B & _MASK32
    h = (h ^ (h >> 13)) * 0xC2B2AE35 & _MASK32
    return h ^ (h >> 16)


def ngram_bucket(ngram: str, n_buckets: int) -> int:
    """The bucket of an n-gram (its tokens joined by one space), as HashingVectorizer(alternate_sign=False)
    finds it: abs of the signed 32-bit hash (abs(-2**31) = 2**31, as scikit-learn defines it) % n_buckets."""
    h = murmurhash3_32(ngram.encode("utf-8", "surrogatepass"))
    return (h if h < 2**31 else 2**32 - h) % n_buckets


def _checked_intercepts(intercept, ngram_min: int, ngram_max: int) -> np.ndarray:
    """The scorers' first checks, in the compiled scorer's order: the intercepts, then the n-gram range."""
    intercepts = _intercepts(intercept)
    if not 1 <= ngram_min <= ngram_max <= MAX_NGRAM:
        raise ValueError(f"ngram range ({ngram_min}, {ngram_max}) is not within 1..{MAX_NGRAM}")
    return intercepts


def _non_finite(feature: int, coef_finite: bool, idf: float) -> str | None:
    """The compiled scorer's message for a feature whose weights are not all finite; None when they are."""
    if coef_finite and math.isfinite(idf):
        return None
    return f"the {'coefficient' if not coef_finite else 'idf'} of feature {feature} is not finite"


class PythonScorer:
    """The compiled scorer (`_featurize.LinearModel`) in Python and numpy: the same arguments,
    checks, analyzer and arithmetic, so the same logits; used where the extension is not built.

    intercept: a number (one output) or the bytes of K float64 (K outputs; coef then holds K rows
    of n coefficients, row after row)."""

    def __init__(self, vocabulary: bytes, offsets: bytes, coef: bytes, idf: bytes, intercept,
                 ngram_min: int, ngram_max: int, sublinear_tf: bool, l2: bool):
        intercepts = _checked_intercepts(intercept, ngram_min, ngram_max)
        k = len(intercepts)
        n = len(coef) // 8 // k
        if len(coef) % (8 * k) or len(offsets) % 8 or len(offsets) // 8 - 1 != n or len(idf) not in (0, 8 * n):
            raise ValueError("inconsistent model arrays: need n coefficients per output, n + 1 offsets and "
                             "0 or n idf weights, each 8 bytes")
        if not np.all(np.isfinite(intercepts)):
            raise ValueError("the intercept is not finite")
        ends = np.frombuffer(offsets, dtype=np.int64)
        coefs = np.frombuffer(coef, dtype=np.float64).reshape(k, n)
        weights = np.frombuffer(idf, dtype=np.float64) if idf else np.ones(n)
        finite = np.all(np.isfinite(coefs), axis=0)
        if ends[0] != 0 or ends[-1] != len(vocabulary):
            raise ValueError("vocabulary offsets do not cover the vocabulary")
        if np.any(np.diff(ends) < 0):
            raise ValueError("vocabulary offsets are not increasing")
        self.index: dict[str, int] = {}
        for f, (start, stop) in enumerate(zip(ends[:-1].tolist(), ends[1:].tolist())):
            try:
                entry = vocabulary[start:stop].decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                entry = ""  # refused just below, as the compiled scorer refuses it
            tokens = entry.split(" ")
            if not ngram_min <= len(tokens) <= ngram_max or not all(tokens):
                raise ValueError(f"vocabulary entry {f} is not a {ngram_min}..{ngram_max}-gram of word tokens")
            if (bad := _non_finite(f, bool(finite[f]), float(weights[f]))) is not None:
                raise ValueError(bad)
            if self.index.setdefault(entry, f) != f:
                raise ValueError(f"vocabulary entry {f} repeats an earlier entry's key")
        self._set_weights(coefs, weights, intercepts, ngram_min, ngram_max, sublinear_tf, l2)

    def _set_weights(self, coefs: np.ndarray, idf: np.ndarray, intercepts: np.ndarray, ngram_min: int,
                     ngram_max: int, sublinear_tf: bool, l2: bool) -> None:
        """What scoring reads, once the arguments are checked: coef (outputs, n), idf (n,), the intercepts."""
        self.n_outputs = k = len(intercepts)
        self.coef, self.idf = coefs[0], idf
        self.coef_idf = self.coef * self.idf
        # K outputs: feature after feature, K weights each, as the compiled scorer keeps them.
        self.weights = (coefs * self.idf).T.copy() if k > 1 else None
        self.intercept = float(intercepts[0]) if k == 1 else intercepts
        self.ngram_range = (ngram_min, ngram_max)
        self.sublinear_tf, self.l2 = bool(sublinear_tf), bool(l2)

    def _feature(self, ngram: str) -> int | None:
        """The feature of an n-gram (its tokens joined by one space); None for none."""
        return self.index.get(ngram)

    def _score(self, text: str):
        """One output: a float; K outputs: an array of K."""
        # scikit-learn's _word_ngrams: every n-gram of the tokens, n in the range, joined by a space.
        tokens = _TOKEN.findall(text)
        low, high = self.ngram_range
        counts = Counter(f for n in range(low, high + 1) for i in range(len(tokens) - n + 1)
                         if (f := self._feature(" ".join(tokens[i:i + n]))) is not None)
        if not counts:
            return self.intercept
        features = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear_tf:
            tf = 1.0 + np.log(tf)
        dot = float(tf @ self.coef_idf[features]) if self.weights is None else tf @ self.weights[features]
        value = tf * self.idf[features]
        norm2 = float(value @ value)
        if self.l2 and norm2 > 0.0:
            dot /= math.sqrt(norm2)
        return dot + self.intercept

    def decision_function(self, texts, threads: int = 1) -> bytes:
        """Float64 logits, n_outputs per text, as bytes (as the compiled scorer returns them); one thread."""
        try:
            texts = tuple(texts)
        except TypeError:
            raise TypeError("texts must be a sequence of str") from None
        lowered = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError("every text must be a str")
            low = text.lower()
            if not isinstance(low, str):  # a str subclass may override lower()
                raise TypeError(f"text {i}: lower() returned {type(low).__name__}, not a str")
            lowered.append(low)
        if self.weights is None:
            return np.array([self._score(text) for text in lowered], dtype=np.float64).tobytes()
        out = np.empty((len(lowered), self.n_outputs))
        for i, text in enumerate(lowered):
            out[i] = self._score(text)
        return out.tobytes()


class HashedPythonScorer(PythonScorer):
    """The compiled hashed scorer (`_featurize.HashedLinearModel`) in Python and numpy: n-grams hashed
    into n_buckets buckets (`ngram_bucket`) instead of looked up in a vocabulary; the rest is PythonScorer's."""

    def __init__(self, n_buckets: int, coef: bytes, idf: bytes, intercept, ngram_min: int, ngram_max: int,
                 sublinear_tf: bool, l2: bool):
        if not isinstance(n_buckets, int) or isinstance(n_buckets, bool):
            raise TypeError(f"n_buckets must be an int, not {type(n_buckets).__name__}")
        if not 1 <= n_buckets <= MAX_BUCKETS:
            raise ValueError("n_buckets is not within 1..2**31")
        intercepts = _checked_intercepts(intercept, ngram_min, ngram_max)
        k = len(intercepts)
        if len(coef) != 8 * k * n_buckets or len(idf) not in (0, 8 * n_buckets):
            raise ValueError("inconsistent model arrays: need n_buckets coefficients per output and 0 or "
                             "n_buckets idf weights, each 8 bytes")
        if not np.all(np.isfinite(intercepts)):
            raise ValueError("the intercept is not finite")
        coefs = np.frombuffer(coef, dtype=np.float64).reshape(k, n_buckets)
        weights = np.frombuffer(idf, dtype=np.float64) if idf else np.ones(n_buckets)
        finite = np.all(np.isfinite(coefs), axis=0)
        bad = np.flatnonzero(~(finite & np.isfinite(weights)))
        if len(bad):
            raise ValueError(_non_finite(int(bad[0]), bool(finite[bad[0]]), float(weights[bad[0]])))
        self.n_buckets = n_buckets
        self._set_weights(coefs, weights, intercepts, ngram_min, ngram_max, sublinear_tf, l2)

    def _feature(self, ngram: str) -> int:
        return ngram_bucket(ngram, self.n_buckets)


def scorer_class(hashed: bool = False) -> type:
    """The compiled scorer (of a vocabulary model, or of a hashed one), or its Python twin where the
    extension is missing or BERT2LR_SCORER=python asks for it."""
    choice = os.environ.get("BERT2LR_SCORER") or "compiled"
    if choice not in ("compiled", "python"):
        raise UserError(f"BERT2LR_SCORER={choice!r}: expected 'compiled' or 'python'")
    if choice == "python" or CompiledScorer is None:
        return HashedPythonScorer if hashed else PythonScorer
    return CompiledHashedScorer if hashed else CompiledScorer


@dataclass
class LinearTextModel:
    """A linear function of a text's n-gram features per output, and the classes they decide between.

    Two classes: one output, the margin logit(classes[1]) - logit(classes[0]); the second class
    when it is positive. K > 2 classes: K outputs, a logit per class; the class of the largest.

    The features are a vocabulary's n-grams (n_buckets 0), or n_buckets buckets that n-grams are
    hashed into (vocabulary and offsets None; always L2-normalised).
    """

    vocabulary: np.ndarray | None  # uint8: the n-grams' UTF-8 bytes, back to back; None when hashed
    offsets: np.ndarray | None  # int64: n-gram i is vocabulary[offsets[i]:offsets[i + 1]]; None when hashed
    coef: np.ndarray  # float64 of shape (n_outputs, n_features); one of shape (n_features,) is one output
    idf: np.ndarray  # float64, one per feature, or empty for raw counts
    intercept: np.ndarray  # float64, one per output; a number is one output
    ngram_range: tuple[int, int]
    sublinear_tf: bool
    l2_norm: bool
    classes: tuple[str, ...] = FORMAT_1_CLASSES
    n_buckets: int = 0  # 0: a vocabulary model; else a hashed one, n_features = n_buckets

    def __post_init__(self):
        self.classes = _checked_classes(self.classes)
        # Arrays keep their dtype (a loaded file's byte order too: save() writes them back as they were).
        self.coef, self.intercept = (a if a.dtype.kind == "f" else a.astype(np.float64)
                                     for a in (np.asarray(self.coef), np.asarray(self.intercept)))
        if self.coef.ndim == 1:
            self.coef = self.coef.reshape(1, -1)
        self.intercept = self.intercept.reshape(-1) if self.intercept.ndim <= 1 else self.intercept
        want = n_outputs_for(len(self.classes))
        if self.coef.ndim != 2 or self.intercept.shape != (self.coef.shape[0],) or self.coef.shape[0] != want:
            raise ValueError(f"{len(self.classes)} classes take {want} output(s): coef of shape ({want}, n) and "
                             f"{want} intercept(s), not coef of shape {self.coef.shape} and intercept of shape "
                             f"{self.intercept.shape}")
        self.n_buckets = operator.index(self.n_buckets)
        if self.n_buckets and (self.vocabulary is not None or self.offsets is not None):
            raise ValueError("a hashed model has no vocabulary: vocabulary and offsets must be None")
        if not self.n_buckets and (self.vocabulary is None or self.offsets is None):
            raise ValueError("a vocabulary model needs its vocabulary and offsets (or n_buckets, for a hashed one)")
        if self.n_buckets and not self.l2_norm:
            raise ValueError("a hashed model is always L2-normalised: l2_norm must be true")
        # Batches are split over the cores this process may use; BERT2LR_THREADS overrides.
        self.threads = default_threads()
        # The scorers read native-endian 8-byte items, whatever byte order the arrays were saved in.
        # One output passes its intercept as a number, exactly as before there were several.
        intercept = float(self.intercept[0]) if self.n_outputs == 1 else \
            np.ascontiguousarray(self.intercept, dtype=np.float64).tobytes()
        features = (self.n_buckets,) if self.n_buckets else (
            np.ascontiguousarray(self.vocabulary, dtype=np.uint8).tobytes(),
            np.ascontiguousarray(self.offsets, dtype=np.int64).tobytes())
        self._scorer = scorer_class(hashed=self.n_buckets > 0)(
            *features,
            np.ascontiguousarray(self.coef, dtype=np.float64).tobytes(),
            np.ascontiguousarray(self.idf, dtype=np.float64).tobytes(),
            intercept, int(self.ngram_range[0]), int(self.ngram_range[1]),
            bool(self.sublinear_tf), bool(self.l2_norm),
        )

    @classmethod
    def from_sklearn(cls, vectorizer, coef: np.ndarray, intercept, classes=None) -> "LinearTextModel":
        """Export a fitted CountVectorizer/TfidfVectorizer and the linear weights on its features.

        coef of shape (n,) or (1, n) and a scalar or one intercept: two classes (the margin);
        coef of shape (K, n) and K intercepts: K > 2 classes, a logit each (scikit-learn's coef_ and
        intercept_ either way). classes: the names, by label id; ("neg", "pos") for two classes and
        "0" .. "K-1" for K unless given.
        """
        settings = vectorizer.get_params()
        if "alternate_sign" in settings:
            raise ValueError("a HashingVectorizer has no vocabulary: use LinearTextModel.from_hashing")
        _check_settings(settings, _SUPPORTED)
        use_idf = bool(settings.get("use_idf", False))
        norm = settings.get("norm")
        if norm not in (None, "l2"):
            raise ValueError(f"vectorizer.norm={norm!r} is not supported (need 'l2' or None)")
        coef, intercept, classes = _outputs(coef, intercept, classes)
        encoded = [t.encode("utf-8", "surrogatepass") for t in vectorizer.get_feature_names_out()]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in encoded], out=offsets[1:])
        return cls(
            vocabulary=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            offsets=offsets,
            coef=coef,
            idf=np.asarray(vectorizer.idf_, dtype=np.float64) if use_idf else np.zeros(0),
            intercept=intercept,
            ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=bool(settings.get("sublinear_tf", False)),
            l2_norm=norm == "l2",
            classes=classes,
        )

    @classmethod
    def from_hashing(cls, vectorizer, idf, coef: np.ndarray, intercept, classes=None,
                     sublinear_tf: bool = True) -> "LinearTextModel":
        """Export a HashingVectorizer and the linear weights on its TF-IDF features.

        The features are what TfidfTransformer(sublinear_tf=sublinear_tf, norm="l2") with idf_ = idf
        makes of the vectorizer's counts: the vectorizer must give unsigned raw counts
        (alternate_sign=False, norm=None, dtype float64) of scikit-learn's word analyzer. Rows are
        always L2-normalised. idf: n_features weights (zeros allowed), or an empty array for none.
        coef and intercept: as from_sklearn takes them, n_features coefficients per output.
        """
        settings = vectorizer.get_params()
        if "alternate_sign" not in settings or "n_features" not in settings:
            raise ValueError(f"{type(vectorizer).__name__} is not a HashingVectorizer: use from_sklearn")
        _check_settings(settings, {**_SUPPORTED, **_SUPPORTED_HASHING})
        try:
            dtype_ok = settings.get("dtype") is not None and np.dtype(settings["dtype"]) == np.float64
        except TypeError:
            dtype_ok = False
        if not dtype_ok:
            raise ValueError(f"vectorizer.dtype={settings.get('dtype')!r} is not supported (need numpy.float64)")
        n_buckets = settings["n_features"]
        if isinstance(n_buckets, bool) or not isinstance(n_buckets, (int, np.integer)) \
                or not 1 <= n_buckets <= MAX_BUCKETS:
            raise ValueError(f"vectorizer.n_features={n_buckets!r} is not supported (need 1..2**31)")
        coef, intercept, classes = _outputs(coef, intercept, classes)
        idf = np.asarray(idf, dtype=np.float64)
        if idf.shape not in ((0,), (n_buckets,)):
            raise ValueError(f"idf of shape {idf.shape}: expected ({n_buckets},) (vectorizer.n_features) or (0,)")
        if coef.shape[1] != n_buckets:
            raise ValueError(f"coef has {coef.shape[1]} columns: expected {n_buckets} (vectorizer.n_features)")
        return cls(vocabulary=None, offsets=None, coef=coef, idf=idf, intercept=intercept,
                   ngram_range=tuple(settings["ngram_range"]), sublinear_tf=bool(sublinear_tf), l2_norm=True,
                   classes=classes, n_buckets=int(n_buckets))

    @property
    def n_features(self) -> int:
        """Coefficients per output: the vocabulary's n-grams, or n_buckets."""
        return self.coef.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.coef.shape[0]

    def decision_function(self, texts: list[str]) -> np.ndarray:
        """Shape (n,): the margin per text, with two classes; (n, K): a logit per class, with K."""
        scores = np.frombuffer(self._scorer.decision_function(texts, self.threads), dtype=np.float64)
        return scores if self.n_outputs == 1 else scores.reshape(-1, self.n_outputs)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Shape (n, classes): [1 - p, p] with p = sigmoid(margin), with two classes; the softmax with K."""
        scores = self.decision_function(texts)
        if self.n_outputs == 1:
            return np.column_stack([sigmoid(-scores), sigmoid(scores)])
        return softmax(scores, axis=1)

    def predict(self, texts: list[str]) -> np.ndarray:
        """The class index per text (the first of tied logits, with K classes)."""
        scores = self.decision_function(texts)
        if self.n_outputs == 1:
            return (scores > 0).astype(np.int64)
        return np.argmax(scores, axis=1).astype(np.int64)

    def save(self, path: Path | str) -> None:
        """Format /1, byte for byte as before, for one output and the classes ("neg", "pos"); /2 otherwise;
        bert2lr-hashed-text/1 for a hashed model."""
        config = {"format": FORMAT, "ngram_range": list(self.ngram_range),
                  "sublinear_tf": self.sublinear_tf, "l2_norm": self.l2_norm}
        if self.n_buckets:
            config = {"format": FORMAT_HASHED, "hash": HASH, "n_buckets": self.n_buckets,
                      "ngram_range": [int(n) for n in self.ngram_range], "sublinear_tf": bool(self.sublinear_tf),
                      "l2_norm": bool(self.l2_norm), "classes": list(self.classes)}
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, config=np.array(json.dumps(config)), coef=self.coef, idf=self.idf,
                         intercept=self.intercept)
            return
        if self.n_outputs == 1 and self.classes == FORMAT_1_CLASSES:
            coef, intercept = self.coef[0], np.array(self.intercept[0])
        else:
            config = {**config, "format": FORMAT_CLASSES, "classes": list(self.classes)}
            coef, intercept = self.coef, self.intercept
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, config=np.array(json.dumps(config)), vocabulary=self.vocabulary,
                     offsets=self.offsets, coef=coef, idf=self.idf, intercept=intercept)

    @classmethod
    def load(cls, path: Path | str) -> "LinearTextModel":
        """Load without unpickling; anything malformed is a UserError naming the file."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path}: model file not found") from None
        except OSError as exc:
            raise UserError(f"{path}: cannot read the model file ({exc.strerror})") from None
        try:
            return cls(**_checked_fields(*_read_arrays(data)))
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, EOFError, OSError) as exc:
            raise UserError(f"{path}: not a valid bert2lr linear model ({exc})") from None


def _check_settings(settings: dict, supported: dict) -> None:
    for key, value in supported.items():
        if settings.get(key) != value:
            raise ValueError(f"vectorizer.{key}={settings.get(key)!r} is not supported (need {value!r})")


def _outputs(coef, intercept, classes) -> tuple[np.ndarray, np.ndarray, tuple]:
    """coef (outputs, n), intercept (outputs,) and the class names, from scikit-learn's coef_ and intercept_:
    (n,) or (1, n) and a scalar or one intercept for two classes; (K, n) and (K,) for K > 2."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] == 2:
        raise ValueError("coef has 2 rows: two classes take one output, the margin coef[1] - coef[0]")
    if coef.ndim not in (1, 2) or intercept.size != (1 if coef.ndim == 1 else coef.shape[0]) \
            or intercept.ndim > 1:
        raise ValueError(f"coef of shape {coef.shape} and intercept of shape {intercept.shape}: expected "
                         "(n,) or (1, n) and a scalar, or (K, n) and (K,)")
    n_outputs = 1 if coef.ndim == 1 else coef.shape[0]
    if classes is None:
        classes = FORMAT_1_CLASSES if n_outputs == 1 else tuple(str(k) for k in range(n_outputs))
    return coef.reshape(n_outputs, -1), intercept.reshape(n_outputs), classes


_MEMBERS = ("config", "vocabulary", "offsets", "coef", "idf", "intercept")
_HASHED_MEMBERS = ("config", "coef", "idf", "intercept")
_NPY_HEADER = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_arrays(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """The model's config (checked as far as it says which arrays the file holds) and its arrays, each
    checked against the zip directory and its npy header before its data is read: save() stores
    members uncompressed, so none can unpack to more than the whole file."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        config = _checked_config(_read_member(archive, "config", len(data)))
        hashed = config["format"] == FORMAT_HASHED
        if hashed:
            for name in ("vocabulary", "offsets"):
                if f"{name}.npy" in archive.namelist():
                    raise ValueError(f"a {name} array in a hashed model, which has none")
        return config, {name: _read_member(archive, name, len(data))
                        for name in (_HASHED_MEMBERS if hashed else _MEMBERS)}


def _read_member(archive: zipfile.ZipFile, name: str, most: int) -> np.ndarray:
    """One array of the archive, of at most `most` bytes unpacked."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise ValueError(f"no {name} array") from None
    if info.file_size > most:
        raise ValueError(f"{name} unpacks to {info.file_size:,} bytes, more than the file's {most:,}")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADER:
            raise ValueError(f"{name} is in npy format {version}, not 1.0 or 2.0")
        shape, fortran_order, dtype = _NPY_HEADER[version](member)
        if dtype.hasobject:
            raise ValueError(f"{name} holds Python objects")
        size, left = math.prod(shape) * dtype.itemsize, info.file_size - member.tell()
        if size != left:
            raise ValueError(f"{name}'s header announces {size:,} bytes of data, but it holds {left:,}")
        return np.frombuffer(member.read(left), dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _checked_config(config: np.ndarray) -> dict:
    """The config array as a dict whose format is one of FORMATS."""
    if config.dtype.kind != "U" or config.shape != ():
        raise ValueError(f"config is {_kind(config)}, expected a JSON string")
    config = json.loads(str(config[()]))
    if not isinstance(config, dict):
        raise ValueError("config is not a JSON object")
    if config.get("format") not in FORMATS:
        raise ValueError(f"format {config.get('format')!r}, expected " + ", ".join(map(repr, FORMATS[:-1]))
                         + f" or {FORMATS[-1]!r}")
    return config


def _kind(array: np.ndarray) -> str:
    return f"{array.dtype} of shape {array.shape}"


def _checked_classes(classes) -> tuple[str, ...]:
    """The class names as a tuple: 2 or more, distinct, each a non-empty str."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or len(classes) < 2 \
            or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes {reprlib.repr(classes)}: expected 2 or more distinct, non-empty names")
    return tuple(classes)


def _first_bad(name: str, array: np.ndarray) -> str | None:
    """"coef[1, 3] is nan" for the first value that is not finite; None when all are."""
    bad = np.flatnonzero(~np.isfinite(array))
    if not len(bad):
        return None
    index = np.unravel_index(bad[0], array.shape)
    return f"{name}[{', '.join(map(str, index))}] is {array[index]}" if index else f"{name} is {array[()]}"


def _checked_fields(config: dict, arrays: dict[str, np.ndarray]) -> dict:
    """LinearTextModel's fields from a model file's config and arrays, each checked for type, shape and range."""
    hashed = config["format"] == FORMAT_HASHED
    several = config["format"] != FORMAT  # class names in config; coef and intercept per output
    if several:
        try:
            classes = _checked_classes(config.get("classes"))
        except ValueError:
            raise ValueError(f"config.classes is {reprlib.repr(config.get('classes'))}, expected a list of 2 or "
                             "more distinct, non-empty names") from None
    else:
        classes = FORMAT_1_CLASSES
    k = n_outputs_for(len(classes))
    ngram_range = config.get("ngram_range")
    if not (isinstance(ngram_range, list) and len(ngram_range) == 2 and all(type(n) is int for n in ngram_range)
            and 1 <= ngram_range[0] <= ngram_range[1] <= MAX_NGRAM):
        raise ValueError(f"config.ngram_range is {ngram_range!r}, expected [min, max] with "
                         f"1 <= min <= max <= {MAX_NGRAM}")
    for key in ("sublinear_tf", "l2_norm"):
        if type(config.get(key)) is not bool:
            raise ValueError(f"config.{key} is {config.get(key)!r}, expected true or false")
    n_buckets = 0
    if hashed:
        # Compared as JSON text: 0, 0.0 and false are equal in Python but not the same description.
        if json.dumps(config.get("hash"), sort_keys=True) != json.dumps(HASH, sort_keys=True):
            raise ValueError(f"config.hash is {reprlib.repr(config.get('hash'))}, expected {HASH!r}")
        n_buckets = config.get("n_buckets")
        if type(n_buckets) is not int or not 1 <= n_buckets <= MAX_BUCKETS:
            raise ValueError(f"config.n_buckets is {n_buckets!r}, expected a whole number from 1 to 2**31")
        if not config["l2_norm"]:
            raise ValueError("config.l2_norm is false, expected true: hashed models are always L2-normalised")

    coef, idf, intercept = arrays["coef"], arrays["idf"], arrays["intercept"]
    floats = (coef, idf, intercept)
    coef_shape, intercept_shape = ("(n,)", "()") if not several else (f"({k}, n)", f"({k},)")
    if any(a.dtype.kind != "f" or a.dtype.itemsize != 8 for a in floats) or coef.ndim != 1 + several \
            or several and coef.shape[0] != k:
        raise ValueError(f"coef, idf and intercept are {_kind(coef)}, {_kind(idf)}, {_kind(intercept)}; "
                         f"expected float64 of shapes {coef_shape}, (0,) or (n,), and {intercept_shape}"
                         + (f" for {len(classes)} classes" if several else ""))
    n = coef.shape[-1]
    if hashed and n != n_buckets:
        raise ValueError(f"coef is {_kind(coef)} for config.n_buckets {n_buckets}, expected ({k}, {n_buckets})")
    if idf.shape not in ((0,), (n,)) or intercept.shape != ((k,) if several else ()):
        raise ValueError(f"idf is {_kind(idf)} and intercept {_kind(intercept)} for {n} coefficients; "
                         f"expected idf of shape (0,) or ({n},) and intercept of shape {intercept_shape}")
    vocabulary = offsets = None
    if not hashed:
        vocabulary, offsets = arrays["vocabulary"], arrays["offsets"]
        if vocabulary.dtype != np.uint8 or vocabulary.ndim != 1:
            raise ValueError(f"vocabulary is {_kind(vocabulary)}, expected uint8 of one dimension")
        if offsets.dtype.kind != "i" or offsets.dtype.itemsize != 8 or offsets.shape != (n + 1,):
            raise ValueError(f"offsets is {_kind(offsets)}, expected int64 of shape ({n + 1},)")
    # NaN or infinity would give NaN logits: a NaN prediction, a 500 from the service.
    for name, array in (("coef", coef), ("idf", idf), ("intercept", intercept)):
        if (bad := _first_bad(name, array)) is not None:
            raise ValueError(bad)
    return dict(vocabulary=vocabulary, offsets=offsets, coef=coef, idf=idf, intercept=intercept,
                ngram_range=tuple(ngram_range), sublinear_tf=config["sublinear_tf"], l2_norm=config["l2_norm"],
                classes=classes, n_buckets=n_buckets)
