"""student.nb_weighting: n-grams scaled by their naive-Bayes log-count ratio (Wang & Manning 2012)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import Ridge

from bert2lr.distill import fit_student, make_vectorizer, nb_ratio
from bert2lr.errors import UserError
from bert2lr.params import StudentParams, parse_params

TEXTS = ["great film", "great plot", "dull film", "dull plot", "film plot", "great great"]
MARGIN = np.array([2.0, 1.5, -2.0, -1.0, 0.2, 3.0])
LOGITS = np.column_stack([-MARGIN / 2, MARGIN / 2])


def test_the_ratio_is_the_smoothed_log_share_in_absolute_value():
    X = sparse.csr_matrix(np.array([[2, 0, 1], [1, 0, 0], [0, 3, 1]], dtype=float))
    positive = np.array([True, True, False])
    # binarized: positive reviews hold feature 0 twice, 1 never, 2 once; the negative one holds 1 and 2
    pos, neg = np.array([1 + 2, 1 + 0, 1 + 1]), np.array([1 + 0, 1 + 1, 1 + 1])
    expected = np.abs(np.log((pos / pos.sum()) / (neg / neg.sum())))
    np.testing.assert_allclose(nb_ratio(X, positive), expected)


def test_the_nb_student_is_ridge_on_scaled_features_exported_as_one_linear_model():
    p = StudentParams(features="count", min_df=1, nb_weighting=True, alpha=0.5, gold_weight=0.0)
    model = fit_student(TEXTS, LOGITS, p)
    X = make_vectorizer(p).fit_transform(TEXTS)
    r = nb_ratio(X, MARGIN > 0)
    ridge = Ridge(alpha=0.5).fit(X @ sparse.diags(r), MARGIN)
    expected = X @ (ridge.coef_ * r) + ridge.intercept_
    np.testing.assert_allclose(model.decision_function(TEXTS), expected, atol=1e-6)
    plain = fit_student(TEXTS, LOGITS, p.model_copy(update={"nb_weighting": False}))
    assert not np.allclose(plain.decision_function(TEXTS), expected)


def test_more_than_two_classes_is_one_line():
    logits = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 2.0
    with pytest.raises(UserError, match="student.nb_weighting: the naive-Bayes ratio is of two classes; these "
                                        "logits have 3"):
        fit_student(TEXTS, logits, StudentParams(min_df=1, nb_weighting=True))


def test_hashing_refuses_it_in_params():
    with pytest.raises(UserError, match="'student.nb_weighting' works with a vocabulary"):
        parse_params({"student": {"features": "hashing", "nb_weighting": True}})
