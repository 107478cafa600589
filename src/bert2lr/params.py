"""Read and validate params.yaml: the one place parameters are checked."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import yaml

from bert2lr.errors import UserError

EMBEDDED_TEACHER = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class FetchParams:
    sources: list[str] = field(
        default_factory=lambda: [
            "../shared/data/aclImdb_v1.tar.gz",
            "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        ]
    )


@dataclass(frozen=True)
class SplitParams:
    seed: int = 0
    n_labeled: int = 1000
    n_unlabeled: int = 5000
    n_test: int = 1000
    # "train": the rest of the labeled train half; "train+unsup": also train/unsup.
    unlabeled_pool: Literal["train", "train+unsup"] = "train"


@dataclass(frozen=True)
class BaselineParams:
    ngram_max: int = 3
    C: float = 1.0
    max_iter: int = 1000


@dataclass(frozen=True)
class TeacherParams:
    model: str = EMBEDDED_TEACHER
    max_length: int = 256
    # "head" keeps the first tokens; "head+tail" keeps head_tokens from the start and the
    # rest from the end, where reviews often state their verdict.
    truncation: Literal["head", "head+tail"] = "head"
    head_tokens: int = 128
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class LogitsParams:
    batch_size: int = 64
    # int8 dynamic quantisation of the teacher's linear layers (CPU only).
    quantize: bool = False


@dataclass(frozen=True)
class StudentParams:
    features: Literal["count", "tfidf"] = "count"
    ngram_max: int = 3
    min_df: int = 1
    max_features: Optional[int] = None
    sublinear_tf: bool = False
    # "logits": regress both raw logits (the reference); "margin": regress logit1 - logit0;
    # "soft_label": logistic regression on the teacher's tempered probabilities.
    target: Literal["logits", "margin", "soft_label"] = "logits"
    fit: Literal["least_squares", "ridge", "logistic"] = "least_squares"
    alpha: float = 1.0
    temperature: float = 1.0
    # Weight of the labeled set's gold labels, mixed into the teacher's targets (0: off).
    gold_weight: float = 0.0


@dataclass(frozen=True)
class CurveParams:
    # Numbers of unlabeled reviews to fit students on; the whole unlabeled split is always one.
    sizes: list[int] = field(default_factory=lambda: [1000, 2000, 5000, 12000])


@dataclass(frozen=True)
class Params:
    fetch: FetchParams = field(default_factory=FetchParams)
    split: SplitParams = field(default_factory=SplitParams)
    baseline: BaselineParams = field(default_factory=BaselineParams)
    teacher: TeacherParams = field(default_factory=TeacherParams)
    logits: LogitsParams = field(default_factory=LogitsParams)
    student: StudentParams = field(default_factory=StudentParams)
    curve: CurveParams = field(default_factory=CurveParams)


_NON_NEGATIVE = {
    "split.n_labeled", "split.n_unlabeled", "split.n_test", "teacher.epochs",
    "teacher.head_tokens", "student.min_df", "student.alpha", "student.gold_weight",
    "teacher.weight_decay",
}
_POSITIVE = {
    "baseline.ngram_max", "baseline.C", "baseline.max_iter", "teacher.max_length",
    "teacher.batch_size", "teacher.learning_rate", "logits.batch_size", "student.ngram_max",
    "student.max_features", "student.temperature",
}


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, str(tp))


def _check(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_check(value, a) for a in typing.get_args(tp))
    if origin is list:
        return isinstance(value, list) and all(_check(v, typing.get_args(tp)[0]) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls, raw, prefix: str, source: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{prefix}' must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in known:
            raise UserError(
                f"{source}: unknown key '{prefix}.{key}' (expected one of: {', '.join(known)})"
            )
    values = {}
    for name in known:
        if name not in raw:
            continue
        value, tp, dotted = raw[name], hints[name], f"{prefix}.{name}"
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, dotted, source)
            continue
        if not _check(value, tp):
            raise UserError(f"{source}: '{dotted}' must be {_type_name(tp)}, got {value!r}")
        if tp is float and isinstance(value, int):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if dotted in _NON_NEGATIVE and value < 0:
                raise UserError(f"{source}: '{dotted}' must not be negative, got {value!r}")
            if dotted in _POSITIVE and value <= 0:
                raise UserError(f"{source}: '{dotted}' must be positive, got {value!r}")
        if dotted == "curve.sizes" and any(v <= 0 for v in value):
            raise UserError(f"{source}: '{dotted}' must hold positive sizes, got {value!r}")
        values[name] = value
    return cls(**values)


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; a user mistake raises one UserError naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of stage groups, got {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(Params)]
    for key in raw:
        if key not in known:
            raise UserError(f"{source}: unknown group '{key}' (expected one of: {', '.join(known)})")
    hints = typing.get_type_hints(Params)
    params = Params(**{k: _build(hints[k], v, k, source) for k, v in raw.items()})
    t = params.teacher
    if t.truncation == "head+tail" and t.head_tokens > t.max_length - 2:
        raise UserError(
            f"{source}: 'teacher.head_tokens' ({t.head_tokens}) must leave room in "
            f"'teacher.max_length' ({t.max_length}) for the tail and two special tokens"
        )
    s = params.student
    if s.fit == "logistic" and s.target != "soft_label":
        raise UserError(f"{source}: 'student.fit: logistic' needs 'student.target: soft_label'")
    if s.target == "soft_label" and s.fit != "logistic":
        raise UserError(f"{source}: 'student.target: soft_label' needs 'student.fit: logistic'")
    return params


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML reads `5e-5` (no dot) as a string; DVC and users write it so."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read params.yaml; missing keys take their defaults."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: parameters file not found") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))
