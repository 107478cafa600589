from pathlib import Path

import pytest

from bert2lr.errors import UserError
from bert2lr.params import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    assert params.split.n_labeled == 1000 and params.split.n_test == 1000
    assert params.teacher.max_length == 256


def test_missing_keys_take_defaults():
    assert parse_params({}) == Params()
    assert parse_params({"student": {"alpha": 2}}).student.alpha == 2.0


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"student": {"alhpa": 1.0}}, "unknown key 'student.alhpa'"),
        ({"studnet": {}}, "unknown group 'studnet'"),
        ({"split": {"n_labeled": "1000"}}, "'split.n_labeled' must be an integer, got '1000'"),
        ({"split": {"n_labeled": 10.5}}, "'split.n_labeled' must be an integer"),
        ({"split": {"n_test": -1}}, "'split.n_test' must not be negative"),
        ({"teacher": {"learning_rate": 0}}, "'teacher.learning_rate' must be positive"),
        ({"teacher": {"truncation": "middle"}}, "'teacher.truncation' must be one of 'head', 'head+tail'"),
        ({"logits": {"quantize": "yes"}}, "'logits.quantize' must be true or false"),
        ({"teacher": {"truncation": "head+tail", "head_tokens": 300}}, "'teacher.head_tokens' (300)"),
        ({"student": {"fit": "logistic"}}, "needs 'student.target: soft_label'"),
        ({"split": [1, 2]}, "'split' must be a mapping"),
        ({"curve": {"sizes": [100, 0]}}, "'curve.sizes' must hold positive sizes"),
    ],
)
def test_bad_parameters_name_the_key(raw, message):
    with pytest.raises(UserError) as info:
        parse_params(raw, "params.yaml")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(UserError, match="parameters file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("split: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_params(bad)


def test_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("teacher:\n  learning_rate: 5e-05\nstudent:\n  alpha: 1E2\n")
    params = load_params(path)
    assert params.teacher.learning_rate == 5e-5 and params.student.alpha == 100.0
