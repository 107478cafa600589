import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import NEGATIVE, POSITIVE

from bert2lr.errors import UserError
from bert2lr.params import (
    EMBEDDED_TEACHER,
    Params,
    SplitParams,
    StudentParams,
    TeacherParams,
    check_teacher_length,
    load_params,
    parameters_table,
    parse_params,
    teacher_position_limit,
)

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
KEYS = [f"{group}.{name}" for group, values in RAW.items() for name in values]


def one_line_error(raw, source="params.yaml") -> str:
    with pytest.raises(UserError) as info:
        parse_params(raw, source)
    message = str(info.value)
    assert "\n" not in message and "pydantic" not in message.lower() and "http" not in message
    assert message.startswith(f"{source}: ")
    return message


def test_params_yaml_holds_exactly_the_declared_defaults():
    assert load_params(ROOT / "params.yaml") == Params()


def test_params_yaml_names_every_declared_key():
    # dvc reads params.yaml, not the declaration: a key missing there would not rerun its stages.
    declared = [f"{group}.{name}" for group, info in Params.model_fields.items()
                for name in info.annotation.model_fields]
    assert KEYS == declared


def test_readme_table_is_made_from_the_declaration():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    assert parameters_table() in section
    assert all(f"| `{key}` |" in parameters_table() for key in KEYS)


def test_missing_keys_and_empty_groups_take_defaults():
    assert parse_params({}) == parse_params(None) == parse_params({"student": None}) == Params()
    assert parse_params({"student": {"alpha": 2}}).student.alpha == 2.0  # an int is a number


def test_sources_are_entries_and_a_bare_string_has_no_hash():
    raw = {"fetch": {"sources": ["a.tar.gz", {"source": "b", "hash": "md5:" + "A" * 32}]}}
    sources = parse_params(raw).fetch.sources
    assert [(s.source, s.hash) for s in sources] == [("a.tar.gz", None), ("b", "md5:" + "a" * 32)]
    assert [s.hash.split(":")[0] for s in Params().fetch.sources] == ["sha256", "md5"]


def test_models_are_frozen():
    with pytest.raises(ValueError):
        Params().student.alpha = 2.0


@pytest.mark.parametrize(
    "raw, message",
    [
        # the holes a probe found
        ({"split": {"seed": -1}}, "'split.seed' must be between 0 and 4294967295, got -1"),
        ({"teacher": {"seed": -1}}, "'teacher.seed' must be between 0 and 4294967295, got -1"),
        ({"teacher": {"warmup_ratio": -3}}, "'teacher.warmup_ratio' must be between 0 and 1, got -3"),
        ({"teacher": {"warmup_ratio": 2.0}}, "'teacher.warmup_ratio' must be between 0 and 1, got 2.0"),
        ({"teacher": {"learning_rate": math.nan}}, "'teacher.learning_rate' must be a finite number, got nan"),
        ({"student": {"alpha": math.inf}}, "'student.alpha' must be a finite number, got inf"),
        ({"student": {"temperature": math.nan}}, "'student.temperature' must be a finite number, got nan"),
        ({"student": {"gold_weight": math.nan}}, "'student.gold_weight' must be a finite number, got nan"),
        ({"baseline": {"C": -math.inf}}, "'baseline.C' must be a finite number, got -inf"),
        ({"teacher": {"max_length": 100000}}, "'teacher.max_length' must be between 8 and 8192, got 100000"),
        ({"baseline": {"ngram_max": 2147483647}}, "'baseline.ngram_max' must be between 1 and 8, got 2147483647"),
        ({"logits": {"batch_size": 0}}, "'logits.batch_size' must be between 1 and 4096, got 0"),
        ({"student": {"max_features": 0}}, "'student.max_features' must be at least 1, got 0"),
        # types: no silent coercion
        ({"split": {"n_labeled": "1000"}}, "'split.n_labeled' must be an integer, got '1000'"),
        ({"split": {"n_labeled": 10.0}}, "'split.n_labeled' must be an integer, got 10.0"),
        ({"split": {"n_labeled": True}}, "'split.n_labeled' must be an integer, got True"),
        ({"student": {"alpha": False}}, "'student.alpha' must be a finite number, got False"),
        ({"logits": {"quantize": "yes"}}, "'logits.quantize' must be true or false, got 'yes'"),
        ({"teacher": {"model": 5}}, "'teacher.model' must be a string, got 5"),
        ({"teacher": {"model": ""}}, "'teacher.model' must not be empty"),
        ({"teacher": {"truncation": "middle"}}, "'teacher.truncation' must be 'head' or 'head+tail', got 'middle'"),
        ({"curve": {"sizes": [100, 0]}}, "'curve.sizes[1]' must be at least 1, got 0"),
        ({"curve": {"sizes": 1000}}, "'curve.sizes' must be a list, got 1000"),
        ({"fetch": {"sources": []}}, "'fetch.sources' must hold at least 1 entry, got []"),
        ({"fetch": {"sources": [3]}}, "'fetch.sources[0]' must be a path or URL, or a mapping with 'source'"),
        ({"fetch": {"sources": [{"hash": None}]}}, "'fetch.sources[0].source' is required"),
        ({"fetch": {"sources": [{"source": "a", "hash": "md5:abc"}]}},
         "'fetch.sources[0].hash' must be 'sha256:' and 64 hex digits, or 'md5:' and 32 hex digits, got 'md5:abc'"),
        ({"fetch": {"sources": [{"source": "a", "sha": "x"}]}}, "unknown key 'fetch.sources[0].sha'"),
        # keys and groups
        ({"student": {"alhpa": 1.0}}, "unknown key 'student.alhpa' (expected one of: features,"),
        ({"studnet": {}}, "unknown group 'studnet' (expected one of: data, fetch, split,"),
        ({"student": {1: 2}}, "unknown key 1 in 'student'"),
        ({"split": [1, 2]}, "'split' must be a mapping of keys, got [1, 2]"),
        ({"split": "seed"}, "'split' must be a mapping of keys, got 'seed'"),
        # across keys
        ({"teacher": {"truncation": "head+tail", "head_tokens": 300}}, "'teacher.head_tokens' (300) must leave room"),
        ({"student": {"fit": "logistic"}}, "'student.fit: logistic' needs 'student.target: soft_label'"),
        ({"student": {"target": "soft_label"}}, "'student.target: soft_label' needs 'student.fit: logistic'"),
        ({"student": {"features": "hashing", "fit": "least_squares"}},
         "'student.features: hashing' needs 'student.fit: ridge'"),
        ({"student": {"features": "hashing", "max_features": 1000}},
         "'student.max_features' keeps a vocabulary's most frequent n-grams; with 'student.features: hashing' set"),
        ({"student": {"n_buckets": 2**31 + 1}}, "'student.n_buckets' must be between 2 and 2147483648"),
        ({"short_texts": {"n_test_sentences": -1}}, "'short_texts.n_test_sentences' must be at least 1, got -1"),
        ({"short_texts": {"n_transfer_sentences": -5}},
         "'short_texts.n_transfer_sentences' must be at least 0, got -5"),
        ({"short_texts": {"min_words": 0}}, "'short_texts.min_words' must be between 1 and 1000, got 0"),
        ({"short_texts": {"n_test_sentences": "5000"}}, "'short_texts.n_test_sentences' must be an integer, got '5000'"),
        # several mistakes: all of them, still on one line
        ({"teacher": {"seed": -1, "epochs": 0}}, "'teacher.epochs' must be between 1 and 1000, got 0; 'teacher.seed'"),
    ],
)
def test_bad_parameters_name_the_key(raw, message):
    assert message in one_line_error(raw)


def test_held_out_slice_must_leave_reviews_to_learn_from():
    message = one_line_error({"split": {"n_labeled": 100}, "teacher": {"n_heldout": 100}})
    assert message.startswith("params.yaml: 'teacher.n_heldout' (100) must leave the teacher some of")
    assert parse_params({"split": {"n_labeled": 100}, "teacher": {"n_heldout": 99}}).teacher.n_heldout == 99


def test_head_tokens_matter_only_with_head_tail():
    assert parse_params({"teacher": {"truncation": "head", "head_tokens": 300}}).teacher.head_tokens == 300


# --- every key of params.yaml against hostile values ----------------------------------------------

# Everything a probe below gets past the declaration, and why it is sensible; any other probe
# must be refused with the key named. A new key is probed automatically (KEYS comes from params.yaml).
ACCEPTED = {
    "data.text_columns": [["1"]],  # a column may be named "1"
    "fetch.sources": [["1"]],  # a relative path '1': fetch says it is missing
    "split.seed": [0],
    # sizes beyond the archive: prepare refuses them (test_absurd_sizes_are_refused_by_prepare)
    "split.n_labeled": [10**12], "split.n_test": [10**12],
    "baseline.C": [10**12, 1e300],  # no regularisation to speak of; still a finite model
    "teacher.head_tokens": [0],  # head+tail with no head: the tail only
    "teacher.warmup_ratio": [0], "teacher.weight_decay": [0], "teacher.seed": [0],
    "teacher.n_heldout": [0],  # no held-out slice: the teacher learns from every labeled review
    "logits.quantize": [True],
    "student.min_df": [10**12],  # the student stage: "no n-gram to learn from"
    "student.max_features": [10**12],  # keep all n-grams
    "student.sublinear_tf": [True],
    "student.nb_weighting": [True],
    "student.alpha": [0, 10**12, 1e300],  # 0: least squares; huge: a near-constant finite model
    "student.temperature": [10**12, 1e300],  # soft labels of 0.5: a near-constant finite model
    "student.gold_weight": [0],
    "curve.sizes": [[10**12]],  # capped at the transfer set's size
    # beyond the sentences there are: all of them (the metrics say how many)
    "short_texts.n_test_sentences": [10**12],
    "short_texts.n_transfer_sentences": [0, 10**12],  # 0: no sentences in the student's transfer set
    "short_texts.seed": [0],
    "logits.test_half": [True],
    "validation.seed": [0],
    "validation.alpha": [[0], [10**12], [1e300]],  # as student.alpha
    "validation.gold_weight": [[0]],  # as student.gold_weight
}


# A transfer-set size or shard size that the default shard list does not fit is refused by naming
# the list, logits.shards, which must follow them (one logits@k stage per shard).
SHARDS_FOLLOW = {("split.n_unlabeled", "1"): "logits.shards", ("logits.shard_size", repr(10**12)): "logits.shards"}


def probes(key: str) -> list:
    group, name = key.split(".")
    declared = type(getattr(Params(), group)).model_fields[name].annotation
    wrong_type = 1 if declared is str else "1"
    values = [wrong_type, True, -1, 0, math.nan, math.inf, 10**12, 1e300]
    return values + [[v] for v in values] if isinstance(RAW[group][name], list) else values


@pytest.mark.parametrize("key", KEYS)
def test_every_key_refuses_or_accepts_hostile_values_knowingly(key):
    group, name = key.split(".")
    accepted = []
    for value in probes(key):
        try:
            params = parse_params({group: {name: value}})
        except UserError as exc:
            message = str(exc)
            named = SHARDS_FOLLOW.get((key, repr(value)), key)
            assert "\n" not in message and message.startswith(f"params.yaml: '{named}"), message
            continue
        got = getattr(getattr(params, group), name)
        if key != "fetch.sources":
            assert got == value and type(got) is (float if isinstance(got, float) else type(value))
        accepted.append(value)
    assert accepted == ACCEPTED.get(key, [])


def test_absurd_sizes_are_refused_by_prepare(tmp_path, archive):
    from bert2lr.stages.prepare import prepare

    for name in ("n_labeled", "n_unlabeled", "n_test"):
        # one shard of them all, so that the shard list fits
        p = parse_params({"split": {"n_labeled": 10, "n_unlabeled": 5, "n_test": 4, name: 10**12},
                          "logits": {"shard_size": 10**12, "shards": [0]}}).split
        with pytest.raises(UserError, match=f"split.{name}=1000000000000 is larger than"):
            prepare(archive, tmp_path / "s", p)


def test_accepted_student_and_baseline_extremes_give_finite_models(tmp_path):
    from bert2lr.stages.baseline import train_baseline
    from bert2lr.distill import fit_student

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(POSITIVE + NEGATIVE + ["the", "film"], size=8)) for _ in range(40)]
    margin = np.array([sum((w in POSITIVE) - (w in NEGATIVE) for w in t.split()) for t in texts], float)
    logits = np.column_stack([-margin / 2, margin / 2])
    gold = (["great superb", "awful dull"], [1, 0])
    soft = {"fit": "logistic", "target": "soft_label"}
    extremes = [{"alpha": a} for a in ACCEPTED["student.alpha"]] + [{**soft, "alpha": 1e300}]
    extremes += [{**soft, "temperature": t} for t in ACCEPTED["student.temperature"]]
    extremes += [{"gold_weight": 1e6}, {"fit": "least_squares", "gold_weight": 1e6}, {**soft, "gold_weight": 1e6},
                 {"max_features": 10**12}, {"ngram_max": 8}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at absurd settings are expected
        for overrides in extremes:
            model = fit_student(texts, logits, parse_params({"student": overrides}).student, *gold)
            assert np.all(np.isfinite(model.decision_function(texts))), overrides
        for c in ACCEPTED["baseline.C"]:
            model = train_baseline(texts, (margin > 0).astype(int).tolist(), tmp_path / "b",
                                   parse_params({"baseline": {"C": c}}).baseline)
            assert np.all(np.isfinite(model.decision_function(texts)))
    with pytest.raises(UserError, match=r"no n-gram to learn from in the 42 training reviews with student.min_df"):
        fit_student(texts, logits, StudentParams(min_df=10**12), *gold)


def test_head_tail_without_head_keeps_the_tail(tiny_bert):
    from bert2lr.bert import encode, load_classifier

    tokenizer, _ = load_classifier(str(tiny_bert), new_head=True)
    text = " ".join(POSITIVE + ["the"] * 40 + NEGATIVE)
    ids = encode(tokenizer, [text], parse_params({"teacher": {"max_length": 12, "head_tokens": 0}}).teacher)[0]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) <= 12 and tokens[-2] == NEGATIVE[-1] and POSITIVE[0] not in tokens


# --- the file -------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"split: [unclosed\n", "not valid YAML at line"),
    (b"teacher:\n  model: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 21)"),
    (b"- split\n- teacher\n", "expected a mapping of stage groups, got list"),
    (b"just words\n", "expected a mapping of stage groups, got str"),
    (b"studnet:\n  alpha: 1\n", "unknown group 'studnet'"),
    (b"student: 3\n", "'student' must be a mapping of keys, got 3"),
    (b"student:\n  gold_weight: .nan\n", "'student.gold_weight' must be a finite number, got nan"),
    (b"teacher:\n  learning_rate: 1e400\n", "'teacher.learning_rate' must be a finite number, got inf"),
])
def test_unreadable_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="parameters file not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="cannot read the parameters file"):
        load_params(tmp_path)


def test_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("teacher:\n  learning_rate: 5e-05\nstudent:\n  alpha: 1E2\n")
    params = load_params(path)
    assert params.teacher.learning_rate == 5e-5 and params.student.alpha == 100.0


def test_stage_records_are_plain_dicts():
    # teacher card and lineage keep model_dump(): JSON as before, no NaN possible any more
    dumped = Params().model_dump()
    assert json.loads(json.dumps(dumped, allow_nan=False)) == dumped
    assert list(dumped["teacher"]) == list(TeacherParams.model_fields)
    assert SplitParams(seed=3).model_copy(update={"n_test": 5}).n_test == 5


# --- the teacher's position limit -----------------------------------------------------------------

def test_max_length_beyond_the_teachers_positions(tiny_bert, tmp_path):
    assert teacher_position_limit(tiny_bert)[0] == 64
    check_teacher_length(TeacherParams(model=str(tiny_bert), max_length=64, head_tokens=12))
    with pytest.raises(UserError) as info:
        check_teacher_length(TeacherParams(model=str(tiny_bert), max_length=128, head_tokens=12), source="p.yaml")
    assert str(info.value) == (f"p.yaml: 'teacher.max_length' is 128, but the teacher {tiny_bert} reads at most "
                               "64 tokens (max_position_embeddings in its config.json)")
    # a RoBERTa numbers positions from pad_token_id + 1: 514 positions read 512 tokens
    (tmp_path / "roberta").mkdir()
    (tmp_path / "roberta" / "config.json").write_text(
        json.dumps({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}))
    assert teacher_position_limit(tmp_path / "roberta")[0] == 512
    # what it cannot tell, the stage reports itself
    assert teacher_position_limit(tmp_path / "missing") is None
    assert teacher_position_limit("no-such-org/no-such-model") is None


def test_embedded_teacher_limit_is_read_without_torch():
    code = ("import sys\nfrom bert2lr.params import TeacherParams, check_teacher_length, teacher_position_limit\n"
            "check_teacher_length(TeacherParams(max_length=512))\n"
            f"print(teacher_position_limit({EMBEDDED_TEACHER!r})[0])\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "512"


def test_the_bucket_count_allowed_is_what_a_hashed_model_file_may_hold():
    from bert2lr.linear import MAX_BUCKETS

    assert parse_params({"student": {"n_buckets": MAX_BUCKETS}}).student.n_buckets == MAX_BUCKETS
    assert "'student.n_buckets' must be between 2 and" in one_line_error({"student": {"n_buckets": MAX_BUCKETS + 1}})
