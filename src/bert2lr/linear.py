"""The deployable form of a linear text model: vocabulary and weights in one NPZ, no pickle.

Loading and scoring need numpy and the compiled `_featurize` extension only: no torch,
no transformers, no scikit-learn at serving time. Where the extension cannot be imported
(it was not built for this platform), `PythonScorer` gives the same logits, many times slower.

Two classes take one output, the margin (logit of the second class minus that of the first);
K > 2 classes take K outputs, a logit per class. The class names travel in the file.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import reprlib
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
    from bert2lr._featurize import LinearModel as CompiledScorer
except ImportError as exc:
    CompiledScorer = None
    print(f"bert2lr: warning: the compiled scorer cannot be imported ({exc}); scoring in Python, "
          "with the same results, many times slower", file=sys.stderr)

MODEL_FILE = "model.npz"
FORMAT = "bert2lr-linear-text/1"  # one output, the classes ("neg", "pos"): written whenever it fits
# What a format /1 file means, for good: not imported from bert2lr.classes (whose CLASS_NAMES a test
# checks it equals today), so that a file's meaning cannot move with that module, and so that the
# stages that load models do not come to depend on it.
FORMAT_1_CLASSES = ("neg", "pos")
FORMAT_CLASSES = "bert2lr-linear-text/2"  # the class names in config, coef (outputs, n), intercept (outputs,)
# CountVectorizer/TfidfVectorizer settings the compiled featurizer reproduces exactly.
_SUPPORTED = {
    "analyzer": "word", "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "tokenizer": None,
    "preprocessor": None, "stop_words": None, "strip_accents": None, "binary": False,
}


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


class PythonScorer:
    """The compiled scorer (`_featurize.LinearModel`) in Python and numpy: the same arguments,
    checks, analyzer and arithmetic, so the same logits; used where the extension is not built.

    intercept: a number (one output) or the bytes of K float64 (K outputs; coef then holds K rows
    of n coefficients, row after row)."""

    def __init__(self, vocabulary: bytes, offsets: bytes, coef: bytes, idf: bytes, intercept,
                 ngram_min: int, ngram_max: int, sublinear_tf: bool, l2: bool):
        intercepts = _intercepts(intercept)
        self.n_outputs = k = len(intercepts)
        if not 1 <= ngram_min <= ngram_max <= MAX_NGRAM:
            raise ValueError(f"ngram range ({ngram_min}, {ngram_max}) is not within 1..{MAX_NGRAM}")
        n = len(coef) // 8 // k
        if len(coef) % (8 * k) or len(offsets) % 8 or len(offsets) // 8 - 1 != n or len(idf) not in (0, 8 * n):
            raise ValueError("inconsistent model arrays: need n coefficients per output, n + 1 offsets and "
                             "0 or n idf weights, each 8 bytes")
        if not np.all(np.isfinite(intercepts)):
            raise ValueError("the intercept is not finite")
        ends = np.frombuffer(offsets, dtype=np.int64)
        coefs = np.frombuffer(coef, dtype=np.float64).reshape(k, n)
        self.coef = coefs[0]
        self.idf = np.frombuffer(idf, dtype=np.float64) if idf else np.ones(n)
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
            if not (finite[f] and math.isfinite(self.idf[f])):
                kind = "coefficient" if not finite[f] else "idf"
                raise ValueError(f"the {kind} of feature {f} is not finite")
            if self.index.setdefault(entry, f) != f:
                raise ValueError(f"vocabulary entry {f} repeats an earlier entry's key")
        self.coef_idf = self.coef * self.idf
        # K outputs: feature after feature, K weights each, as the compiled scorer keeps them.
        self.weights = (coefs * self.idf).T.copy() if k > 1 else None
        self.intercept = float(intercepts[0]) if k == 1 else intercepts
        self.ngram_range = (ngram_min, ngram_max)
        self.sublinear_tf, self.l2 = bool(sublinear_tf), bool(l2)

    def _score(self, text: str):
        """One output: a float; K outputs: an array of K."""
        # scikit-learn's _word_ngrams: every n-gram of the tokens, n in the range, joined by a space.
        tokens = _TOKEN.findall(text)
        low, high = self.ngram_range
        counts = Counter(f for n in range(low, high + 1) for i in range(len(tokens) - n + 1)
                         if (f := self.index.get(" ".join(tokens[i:i + n]))) is not None)
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


def scorer_class() -> type:
    """The compiled scorer, or PythonScorer where it is missing or BERT2LR_SCORER=python asks for it."""
    choice = os.environ.get("BERT2LR_SCORER") or "compiled"
    if choice not in ("compiled", "python"):
        raise UserError(f"BERT2LR_SCORER={choice!r}: expected 'compiled' or 'python'")
    return PythonScorer if choice == "python" or CompiledScorer is None else CompiledScorer


@dataclass
class LinearTextModel:
    """A linear function of a text's n-gram features per output, and the classes they decide between.

    Two classes: one output, the margin logit(classes[1]) - logit(classes[0]); the second class
    when it is positive. K > 2 classes: K outputs, a logit per class; the class of the largest.
    """

    vocabulary: np.ndarray  # uint8: the n-grams' UTF-8 bytes, back to back
    offsets: np.ndarray  # int64: n-gram i is vocabulary[offsets[i]:offsets[i + 1]]
    coef: np.ndarray  # float64 of shape (n_outputs, n_features); one of shape (n_features,) is one output
    idf: np.ndarray  # float64, one per n-gram, or empty for raw counts
    intercept: np.ndarray  # float64, one per output; a number is one output
    ngram_range: tuple[int, int]
    sublinear_tf: bool
    l2_norm: bool
    classes: tuple[str, ...] = FORMAT_1_CLASSES

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
        # Batches are split over the cores this process may use; BERT2LR_THREADS overrides.
        self.threads = default_threads()
        # The scorers read native-endian 8-byte items, whatever byte order the arrays were saved in.
        # One output passes its intercept as a number, exactly as before there were several.
        intercept = float(self.intercept[0]) if self.n_outputs == 1 else \
            np.ascontiguousarray(self.intercept, dtype=np.float64).tobytes()
        self._scorer = scorer_class()(
            np.ascontiguousarray(self.vocabulary, dtype=np.uint8).tobytes(),
            np.ascontiguousarray(self.offsets, dtype=np.int64).tobytes(),
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
        for key, value in _SUPPORTED.items():
            if settings.get(key) != value:
                raise ValueError(f"vectorizer.{key}={settings.get(key)!r} is not supported (need {value!r})")
        use_idf = bool(settings.get("use_idf", False))
        norm = settings.get("norm")
        if norm not in (None, "l2"):
            raise ValueError(f"vectorizer.norm={norm!r} is not supported (need 'l2' or None)")
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
        encoded = [t.encode("utf-8", "surrogatepass") for t in vectorizer.get_feature_names_out()]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in encoded], out=offsets[1:])
        return cls(
            vocabulary=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            offsets=offsets,
            coef=coef.reshape(n_outputs, -1),
            idf=np.asarray(vectorizer.idf_, dtype=np.float64) if use_idf else np.zeros(0),
            intercept=intercept.reshape(n_outputs),
            ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=bool(settings.get("sublinear_tf", False)),
            l2_norm=norm == "l2",
            classes=classes,
        )

    @property
    def n_features(self) -> int:
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
        """Format /1, byte for byte as before, for one output and the classes ("neg", "pos"); /2 otherwise."""
        config = {"format": FORMAT, "ngram_range": list(self.ngram_range),
                  "sublinear_tf": self.sublinear_tf, "l2_norm": self.l2_norm}
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
            return cls(**_checked_fields(_read_arrays(data)))
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, EOFError, OSError) as exc:
            raise UserError(f"{path}: not a valid bert2lr linear model ({exc})") from None


_MEMBERS = ("config", "vocabulary", "offsets", "coef", "idf", "intercept")
_NPY_HEADER = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The model's arrays, each checked against the zip directory and its npy header before its data
    is read: save() stores members uncompressed, so none can unpack to more than the whole file."""
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in _MEMBERS:
            try:
                info = archive.getinfo(f"{name}.npy")
            except KeyError:
                raise ValueError(f"no {name} array") from None
            if info.file_size > len(data):
                raise ValueError(f"{name} unpacks to {info.file_size:,} bytes, more than the file's {len(data):,}")
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
                arrays[name] = np.frombuffer(member.read(left), dtype=dtype).reshape(
                    shape, order="F" if fortran_order else "C")
    return arrays


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


def _checked_fields(arrays: dict[str, np.ndarray]) -> dict:
    """LinearTextModel's fields from a model file's arrays, each checked for type, shape and range."""
    config = arrays["config"]
    if config.dtype.kind != "U" or config.shape != ():
        raise ValueError(f"config is {_kind(config)}, expected a JSON string")
    config = json.loads(str(config[()]))
    if not isinstance(config, dict):
        raise ValueError("config is not a JSON object")
    if config.get("format") not in (FORMAT, FORMAT_CLASSES):
        raise ValueError(f"format {config.get('format')!r}, expected {FORMAT!r} or {FORMAT_CLASSES!r}")
    several = config["format"] == FORMAT_CLASSES  # class names in config; coef and intercept per output
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

    vocabulary, offsets, coef = arrays["vocabulary"], arrays["offsets"], arrays["coef"]
    idf, intercept = arrays["idf"], arrays["intercept"]
    floats = (coef, idf, intercept)
    if vocabulary.dtype != np.uint8 or vocabulary.ndim != 1:
        raise ValueError(f"vocabulary is {_kind(vocabulary)}, expected uint8 of one dimension")
    coef_shape, intercept_shape = ("(n,)", "()") if not several else (f"({k}, n)", f"({k},)")
    if any(a.dtype.kind != "f" or a.dtype.itemsize != 8 for a in floats) or coef.ndim != 1 + several \
            or several and coef.shape[0] != k:
        raise ValueError(f"coef, idf and intercept are {_kind(coef)}, {_kind(idf)}, {_kind(intercept)}; "
                         f"expected float64 of shapes {coef_shape}, (0,) or (n,), and {intercept_shape}"
                         + (f" for {len(classes)} classes" if several else ""))
    n = coef.shape[-1]
    if idf.shape not in ((0,), (n,)) or intercept.shape != ((k,) if several else ()):
        raise ValueError(f"idf is {_kind(idf)} and intercept {_kind(intercept)} for {n} coefficients; "
                         f"expected idf of shape (0,) or ({n},) and intercept of shape {intercept_shape}")
    if offsets.dtype.kind != "i" or offsets.dtype.itemsize != 8 or offsets.shape != (n + 1,):
        raise ValueError(f"offsets is {_kind(offsets)}, expected int64 of shape ({n + 1},)")
    # NaN or infinity would give NaN logits: a NaN prediction, a 500 from the service.
    for name, array in (("coef", coef), ("idf", idf), ("intercept", intercept)):
        if (bad := _first_bad(name, array)) is not None:
            raise ValueError(bad)
    return dict(vocabulary=vocabulary, offsets=offsets, coef=coef, idf=idf, intercept=intercept,
                ngram_range=tuple(ngram_range), sublinear_tf=config["sublinear_tf"], l2_norm=config["l2_norm"],
                classes=classes)
