"""The deployable form of a linear text model: vocabulary and weights in one NPZ, no pickle.

Loading and scoring need numpy and the compiled `_featurize` extension only: no torch,
no transformers, no scikit-learn at serving time. Where the extension cannot be imported
(it was not built for this platform), `PythonScorer` gives the same logits, many times slower.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert2lr.errors import UserError
from bert2lr.files import atomic_path
from bert2lr.limits import MAX_NGRAM

try:
    from bert2lr._featurize import LinearModel as CompiledScorer
except ImportError as exc:
    CompiledScorer = None
    print(f"bert2lr: warning: the compiled scorer cannot be imported ({exc}); scoring in Python, "
          "with the same results, many times slower", file=sys.stderr)

MODEL_FILE = "model.npz"
FORMAT = "bert2lr-linear-text/1"
# CountVectorizer/TfidfVectorizer settings the compiled featurizer reproduces exactly.
_SUPPORTED = {
    "analyzer": "word", "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "tokenizer": None,
    "preprocessor": None, "stop_words": None, "strip_accents": None, "binary": False,
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


_TOKEN = re.compile(_SUPPORTED["token_pattern"])


class PythonScorer:
    """The compiled scorer (`_featurize.LinearModel`) in Python and numpy: the same arguments,
    checks, analyzer and arithmetic, so the same logits; used where the extension is not built."""

    def __init__(self, vocabulary: bytes, offsets: bytes, coef: bytes, idf: bytes, intercept: float,
                 ngram_min: int, ngram_max: int, sublinear_tf: bool, l2: bool):
        if not 1 <= ngram_min <= ngram_max <= MAX_NGRAM:
            raise ValueError(f"ngram range ({ngram_min}, {ngram_max}) is not within 1..{MAX_NGRAM}")
        if len(coef) % 8 or len(offsets) % 8 or len(offsets) // 8 - 1 != len(coef) // 8 \
                or len(idf) not in (0, len(coef)):
            raise ValueError("inconsistent model arrays: need n coefficients, n + 1 offsets and "
                             "0 or n idf weights, each 8 bytes")
        ends = np.frombuffer(offsets, dtype=np.int64)
        self.coef = np.frombuffer(coef, dtype=np.float64)
        self.idf = np.frombuffer(idf, dtype=np.float64) if idf else np.ones(len(self.coef))
        if not math.isfinite(intercept):
            raise ValueError("the intercept is not finite")
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
            if not (math.isfinite(self.coef[f]) and math.isfinite(self.idf[f])):
                kind = "coefficient" if not math.isfinite(self.coef[f]) else "idf"
                raise ValueError(f"the {kind} of feature {f} is not finite")
            if self.index.setdefault(entry, f) != f:
                raise ValueError(f"vocabulary entry {f} repeats an earlier entry's key")
        self.coef_idf = self.coef * self.idf
        self.intercept, self.ngram_range = intercept, (ngram_min, ngram_max)
        self.sublinear_tf, self.l2 = bool(sublinear_tf), bool(l2)

    def _score(self, text: str) -> float:
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
        dot = float(tf @ self.coef_idf[features])
        value = tf * self.idf[features]
        norm2 = float(value @ value)
        if self.l2 and norm2 > 0.0:
            dot /= math.sqrt(norm2)
        return dot + self.intercept

    def decision_function(self, texts, threads: int = 1) -> bytes:
        """Float64 logits, one per text, as bytes (as the compiled scorer returns them); one thread."""
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
        return np.array([self._score(text) for text in lowered], dtype=np.float64).tobytes()


def default_threads() -> int:
    """BERT2LR_THREADS, else the cores this process may use (all of them where that cannot be told)."""
    setting = os.environ.get("BERT2LR_THREADS")
    if setting:
        try:
            threads = int(setting)
        except ValueError:
            threads = 0
        if threads < 1:
            raise UserError(f"BERT2LR_THREADS={setting!r}: expected a whole number of threads, 1 or more")
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def scorer_class() -> type:
    """The compiled scorer, or PythonScorer where it is missing or BERT2LR_SCORER=python asks for it."""
    choice = os.environ.get("BERT2LR_SCORER") or "compiled"
    if choice not in ("compiled", "python"):
        raise UserError(f"BERT2LR_SCORER={choice!r}: expected 'compiled' or 'python'")
    return PythonScorer if choice == "python" or CompiledScorer is None else CompiledScorer


@dataclass
class LinearTextModel:
    """logit(text) = intercept + coef . features(text); positive when sigmoid(logit) > 0.5."""

    vocabulary: np.ndarray  # uint8: the n-grams' UTF-8 bytes, back to back
    offsets: np.ndarray  # int64: n-gram i is vocabulary[offsets[i]:offsets[i + 1]]
    coef: np.ndarray  # float64, one per n-gram
    idf: np.ndarray  # float64, one per n-gram, or empty for raw counts
    intercept: float
    ngram_range: tuple[int, int]
    sublinear_tf: bool
    l2_norm: bool

    def __post_init__(self):
        # Batches are split over the cores this process may use; BERT2LR_THREADS overrides.
        self.threads = default_threads()
        # The scorers read native-endian 8-byte items, whatever byte order the arrays were saved in.
        self._scorer = scorer_class()(
            np.ascontiguousarray(self.vocabulary, dtype=np.uint8).tobytes(),
            np.ascontiguousarray(self.offsets, dtype=np.int64).tobytes(),
            np.ascontiguousarray(self.coef, dtype=np.float64).tobytes(),
            np.ascontiguousarray(self.idf, dtype=np.float64).tobytes(),
            float(self.intercept), int(self.ngram_range[0]), int(self.ngram_range[1]),
            bool(self.sublinear_tf), bool(self.l2_norm),
        )

    @classmethod
    def from_sklearn(cls, vectorizer, coef: np.ndarray, intercept: float) -> "LinearTextModel":
        """Export a fitted CountVectorizer/TfidfVectorizer and the linear weights on its features."""
        settings = vectorizer.get_params()
        for key, value in _SUPPORTED.items():
            if settings.get(key) != value:
                raise ValueError(f"vectorizer.{key}={settings.get(key)!r} is not supported (need {value!r})")
        use_idf = bool(settings.get("use_idf", False))
        norm = settings.get("norm")
        if norm not in (None, "l2"):
            raise ValueError(f"vectorizer.norm={norm!r} is not supported (need 'l2' or None)")
        encoded = [t.encode("utf-8", "surrogatepass") for t in vectorizer.get_feature_names_out()]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in encoded], out=offsets[1:])
        return cls(
            vocabulary=np.frombuffer(b"".join(encoded), dtype=np.uint8),
            offsets=offsets,
            coef=np.asarray(coef, dtype=np.float64).ravel(),
            idf=np.asarray(vectorizer.idf_, dtype=np.float64) if use_idf else np.zeros(0),
            intercept=float(intercept),
            ngram_range=tuple(settings["ngram_range"]),
            sublinear_tf=bool(settings.get("sublinear_tf", False)),
            l2_norm=norm == "l2",
        )

    @property
    def n_features(self) -> int:
        return len(self.coef)

    def decision_function(self, texts: list[str]) -> np.ndarray:
        return np.frombuffer(self._scorer.decision_function(texts, self.threads), dtype=np.float64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return sigmoid(self.decision_function(texts))

    def predict(self, texts: list[str]) -> np.ndarray:
        return (self.decision_function(texts) > 0).astype(np.int64)

    def save(self, path: Path | str) -> None:
        config = {"format": FORMAT, "ngram_range": list(self.ngram_range),
                  "sublinear_tf": self.sublinear_tf, "l2_norm": self.l2_norm}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, config=np.array(json.dumps(config)), vocabulary=self.vocabulary,
                     offsets=self.offsets, coef=self.coef, idf=self.idf,
                     intercept=np.array(self.intercept))

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


def _checked_fields(arrays: dict[str, np.ndarray]) -> dict:
    """LinearTextModel's fields from a model file's arrays, each checked for type, shape and range."""
    config = arrays["config"]
    if config.dtype.kind != "U" or config.shape != ():
        raise ValueError(f"config is {_kind(config)}, expected a JSON string")
    config = json.loads(str(config[()]))
    if not isinstance(config, dict):
        raise ValueError("config is not a JSON object")
    if config.get("format") != FORMAT:
        raise ValueError(f"format {config.get('format')!r}, expected {FORMAT!r}")
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
    if any(a.dtype.kind != "f" or a.dtype.itemsize != 8 for a in floats) or coef.ndim != 1:
        raise ValueError(f"coef, idf and intercept are {_kind(coef)}, {_kind(idf)}, {_kind(intercept)}; "
                         "expected float64 of shapes (n,), (0,) or (n,), and ()")
    n = len(coef)
    if idf.shape not in ((0,), (n,)) or intercept.shape != ():
        raise ValueError(f"idf is {_kind(idf)} and intercept {_kind(intercept)} for {n} coefficients; "
                         f"expected idf of shape (0,) or ({n},) and intercept of shape ()")
    if offsets.dtype.kind != "i" or offsets.dtype.itemsize != 8 or offsets.shape != (n + 1,):
        raise ValueError(f"offsets is {_kind(offsets)}, expected int64 of shape ({n + 1},)")
    # NaN or infinity would give NaN logits: a NaN prediction, a 500 from the service.
    for name, array in (("coef", coef), ("idf", idf)):
        bad = np.flatnonzero(~np.isfinite(array))
        if len(bad):
            raise ValueError(f"{name}[{bad[0]}] is {array[bad[0]]}")
    if not np.isfinite(intercept):
        raise ValueError(f"intercept is {intercept}")
    return dict(vocabulary=vocabulary, offsets=offsets, coef=coef, idf=idf, intercept=float(intercept),
                ngram_range=tuple(ngram_range), sublinear_tf=config["sublinear_tf"], l2_norm=config["l2_norm"])
