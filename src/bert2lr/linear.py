"""The deployable form of a linear text model: vocabulary and weights in one NPZ, no pickle.

Loading and scoring need numpy and the compiled `_featurize` extension only: no torch,
no transformers, no scikit-learn at serving time.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bert2lr._featurize import LinearModel
from bert2lr.errors import UserError
from bert2lr.files import atomic_path

MODEL_FILE = "model.npz"
FORMAT = "bert2lr-linear-text/1"
# CountVectorizer/TfidfVectorizer settings the compiled featurizer reproduces exactly.
_SUPPORTED = {
    "analyzer": "word", "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "tokenizer": None,
    "preprocessor": None, "stop_words": None, "strip_accents": None, "binary": False,
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


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
        self.threads = int(os.environ.get("BERT2LR_THREADS") or len(os.sched_getaffinity(0)))
        self._scorer = LinearModel(
            self.vocabulary.tobytes(), self.offsets.astype("<i8").tobytes(),
            self.coef.astype("<f8").tobytes(), self.idf.astype("<f8").tobytes(),
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
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            config = json.loads(str(arrays.pop("config")))
            if config.get("format") != FORMAT:
                raise ValueError(f"format {config.get('format')!r}, expected {FORMAT!r}")
            return cls(
                vocabulary=arrays["vocabulary"], offsets=arrays["offsets"], coef=arrays["coef"],
                idf=arrays["idf"], intercept=float(arrays["intercept"]),
                ngram_range=tuple(config["ngram_range"]), sublinear_tf=bool(config["sublinear_tf"]),
                l2_norm=bool(config["l2_norm"]),
            )
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, EOFError, OSError) as exc:
            raise UserError(f"{path}: not a valid bert2lr linear model ({exc})") from None
