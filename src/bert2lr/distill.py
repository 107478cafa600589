"""Fit a linear bag-of-n-grams student to a teacher's logits (and, weighted, to gold labels).

The student stage fits one on the whole transfer set; the learning curve fits one per size.
Two classes give one linear function, the margin; K > 2 classes (teacher logits of shape (n, K))
give K, one logit per class (see `_fit_classes`).

Two kinds of features. A vocabulary (`count`, `tfidf`: scikit-learn's vectorizers, fitted in
memory) keeps only n-grams seen in min_df reviews, but the vocabulary and the design matrix grow
with every review. Hashing (`hashing`, `fit_hashed_student`) maps every n-gram to one of n_buckets
(scikit-learn's HashingVectorizer: nothing to fit, so a shard can be featurised alone) and solves
the same ridge out of core, shard by shard: memory is set by n_buckets and one shard, at the price
of collisions and of rare n-grams that a vocabulary's min_df would drop.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import LinearOperator, cg
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import normalize

from bert2lr.errors import UserError
from bert2lr.linear import LinearTextModel, sigmoid, softmax
from bert2lr.params import StudentParams

log = logging.getLogger(__name__)


def make_vectorizer(p: StudentParams):
    common = {"ngram_range": (1, p.ngram_max), "min_df": p.min_df, "max_features": p.max_features}
    if p.features == "tfidf":
        return TfidfVectorizer(sublinear_tf=p.sublinear_tf, **common)
    return CountVectorizer(**common)


def fit_student(texts: list[str], teacher_logits: np.ndarray, p: StudentParams,
                gold_texts: list[str] = (), gold_labels: list[int] = (), classes=None) -> LinearTextModel:
    """Fit the student to the teacher's logits (and, weighted, the gold labels); return it exported.

    Two classes: whatever the target, the result is one linear function whose sign decides the
    class: fitting both logits by least squares or ridge and subtracting is the same as fitting
    the margin, since those solutions are linear in the targets. K > 2 classes: `_fit_classes`.
    classes: the names by label id, for the exported model (LinearTextModel.from_sklearn's default).
    """
    teacher_logits = np.asarray(teacher_logits, dtype=np.float64)
    if teacher_logits.ndim != 2 or teacher_logits.shape[1] < 2 or teacher_logits.shape[0] != len(texts):
        raise UserError(f"student: teacher logits of shape {teacher_logits.shape} for {len(texts)} reviews; "
                        f"expected ({len(texts)}, classes) with 2 or more classes")
    n_classes = teacher_logits.shape[1]
    _check_gold(gold_texts, gold_labels, n_classes, p)
    if p.features == "hashing":
        return fit_hashed_student([(list(texts), teacher_logits)], p, gold_texts, gold_labels, classes)
    use_gold = p.gold_weight > 0 and len(gold_texts) > 0
    all_texts = list(texts) + (list(gold_texts) if use_gold else [])
    vectorizer, X = vectorize(all_texts, p)
    coef, intercept = fit_features(X, teacher_logits, np.asarray(gold_labels) if use_gold else np.zeros(0, int), p)
    return LinearTextModel.from_sklearn(vectorizer, coef, intercept, classes=classes)


def vectorize(texts: list[str], p: StudentParams):
    """The fitted vectorizer of student.features (count or tfidf) and its rows for `texts`."""
    vectorizer = make_vectorizer(p)
    try:
        X = vectorizer.fit_transform(texts)
    except ValueError as exc:  # scikit-learn: no n-gram is in min_df reviews (or none at all)
        raise UserError(f"student: no n-gram to learn from in the {len(texts)} training reviews with "
                        f"student.min_df={p.min_df} ({exc})") from None
    log.info("student: %d reviews x %d features (%s, 1-%d grams)", X.shape[0], X.shape[1], p.features, p.ngram_max)
    return vectorizer, X


def fit_features(X, teacher_logits: np.ndarray, gold: np.ndarray, p: StudentParams):
    """coef and intercept of the student on feature rows X: the transfer reviews' rows (one per row of
    teacher_logits), then those of the gold reviews labeled `gold` (weighted by student.gold_weight).

    Two classes give one linear function (coef a vector, intercept a float), K > 2 give K.
    Cross-validation (validation.py) calls it on row subsets of one vectorized matrix.
    """
    n_transfer, n_classes = teacher_logits.shape
    margin = teacher_logits[:, 1] - teacher_logits[:, 0]
    weight = np.ones(X.shape[0])
    weight[n_transfer:] = p.gold_weight
    if p.nb_weighting:
        if n_classes > 2:
            raise UserError(f"student.nb_weighting: the naive-Bayes ratio is of two classes; these logits have "
                            f"{n_classes} (set student.nb_weighting: false)")
        # Fitting on X r and returning coef r is the model on X: the deployed format does not change.
        r = nb_ratio(X, np.concatenate([margin > 0, gold == 1]))
        coef, intercept = fit_features(X @ sparse.diags(r), teacher_logits, gold, p.model_copy(
            update={"nb_weighting": False}))
        return coef * r, intercept
    if n_classes > 2:
        return _fit_classes(X, teacher_logits, weight, gold, n_transfer, p)
    if p.fit == "logistic":
        # Soft targets: each review appears once per class, weighted by the teacher's probability.
        prob = np.concatenate([sigmoid(margin / p.temperature), gold.astype(float)])
        X2 = sparse.vstack([X, X]).tocsr()
        y2 = np.concatenate([np.ones(X.shape[0]), np.zeros(X.shape[0])])
        w2 = np.concatenate([weight * prob, weight * (1 - prob)])
        estimator = LogisticRegression(C=1.0 / max(p.alpha, 1e-12), max_iter=1000)
        estimator.fit(X2, y2, sample_weight=w2)
        return estimator.coef_[0], float(estimator.intercept_[0])
    # Gold labels become logits as confident as the teacher's typical one.
    scale = float(np.mean(np.abs(margin))) if len(margin) else 1.0
    gold_margin = np.where(gold == 1, scale, -scale)
    if p.target == "logits":
        y = np.vstack([teacher_logits, np.column_stack([-gold_margin / 2, gold_margin / 2])])
    else:
        y = np.concatenate([margin, gold_margin])
    estimator = LinearRegression() if p.fit == "least_squares" else Ridge(alpha=p.alpha)
    estimator.fit(X, y, sample_weight=weight)
    coef, intercept = estimator.coef_, estimator.intercept_
    if p.target == "logits":
        coef, intercept = coef[1] - coef[0], intercept[1] - intercept[0]
    return coef, float(intercept)


def nb_ratio(X, positive: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """|log-count ratio| of each feature (Wang & Manning 2012): log of its share of the positive
    reviews' binarized features over its share of the negative reviews', smoothed, in absolute value
    (the sign is the fit's to find; the size is how much it may say)."""
    present = (X != 0).astype(np.float64).tocsr()
    pos = smoothing + np.asarray(present[positive].sum(axis=0)).ravel()
    neg = smoothing + np.asarray(present[~positive].sum(axis=0)).ravel()
    return np.abs(np.log((pos / pos.sum()) / (neg / neg.sum())))


def _fit_classes(X, teacher_logits: np.ndarray, weight: np.ndarray, gold: np.ndarray, n_transfer: int,
                 p: StudentParams) -> tuple[np.ndarray, np.ndarray]:
    """coef (K, features) and K intercepts of a student for K > 2 classes; X holds the transfer
    reviews' rows, then the gold reviews' (weighted by `weight`, labels `gold`).

    fit least_squares/ridge (target logits or margin): regress the teacher's logits centred per
    review (logits - their mean), one linear function per class. The softmax of the centred logits
    is that of the logits, and since the solution is linear in the targets (whose rows sum to 0),
    the student's logits sum to 0 per review too. Gold labels become centred one-hot logits
    s (e_y - 1/K), s the teacher's typical gap between its top logit and the mean of the others
    (for K = 2 that is the mean |margin|, the binary fit's scale).

    fit logistic (target soft_label): multinomial logistic regression on the teacher's probabilities
    at the temperature: each review repeated once per class, weighted by its probability of it;
    gold reviews by their hard label (weight 1 for it, 0 for the others).
    """
    k = teacher_logits.shape[1]
    if p.fit == "logistic":
        prob = np.vstack([softmax(teacher_logits / p.temperature, axis=1), np.eye(k)[gold]])
        n = X.shape[0]
        Xk = sparse.vstack([X] * k).tocsr()
        yk = np.repeat(np.arange(k), n)
        wk = (weight[None, :] * prob.T).ravel()  # class after class, as Xk repeats X
        estimator = LogisticRegression(C=1.0 / max(p.alpha, 1e-12), max_iter=1000)
        estimator.fit(Xk, yk, sample_weight=wk)
        return estimator.coef_, estimator.intercept_
    centred, gap = _targets(teacher_logits)
    scale = float(np.mean(gap)) if n_transfer else 1.0
    y = np.vstack([centred, scale * (np.eye(k)[gold] - 1.0 / k)])
    estimator = LinearRegression() if p.fit == "least_squares" else Ridge(alpha=p.alpha)
    estimator.fit(X, y, sample_weight=weight)
    return estimator.coef_, estimator.intercept_


def _check_gold(gold_texts, gold_labels, n_classes: int, p: StudentParams) -> None:
    if n_classes > 2 and len(gold_labels) and p.gold_weight > 0 and len(gold_texts):
        labels = np.asarray(gold_labels)
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= n_classes:
            raise UserError(f"student: gold labels must be class indices 0..{n_classes - 1}, "
                            f"got values from {labels.min()} to {labels.max()}")


def hashing_vectorizer(p: StudentParams) -> HashingVectorizer:
    """Raw n-gram counts per bucket: unsigned, so that sublinear tf and idf apply as to a vocabulary's counts."""
    return HashingVectorizer(n_features=p.n_buckets, ngram_range=(1, p.ngram_max), alternate_sign=False,
                             norm=None, dtype=np.float64)


SKLEARN_MAX_BUCKETS = 2**31 - 1  # FeatureHasher's n_features: a positive int32
# The ridge below stops when its residual is this small relative to the right-hand side: well past
# where the student's predictions stop moving (a test compares it with scikit-learn's Ridge).
CG_RTOL = 1e-6
CG_MAXITER = 2000


def fit_hashed_student(shards: Iterable[tuple[list[str], np.ndarray]], p: StudentParams,
                       gold_texts: list[str] = (), gold_labels: list[int] = (), classes=None,
                       workdir: Path | None = None) -> LinearTextModel:
    """The hashed student: ridge on the TF-IDF of hashed n-grams, fitted to the teacher's logits (and,
    weighted, the gold labels) shard by shard, with one shard and a few n_buckets vectors in memory.

    The same estimator as the vocabulary student (sublinear tf, smoothed idf, l2 rows, ridge with an
    unpenalised intercept, the same targets and gold weighting), with the features hashed: one pass
    hashes each shard to a temporary folder and counts document frequencies; a second turns the
    counts into TF-IDF rows; then scipy's conjugate gradients solve the centred normal equations
    (X'WX - sw x̄x̄' + alpha I) w = X'W(y - ȳ), each product a pass over the stored shards.
    Passes over shards are sums, so the same solve runs across machines as an all-reduce per
    iteration (README, "Scale").

    workdir: where the stored rows go (the system's temporary folder by default); they are removed
    when the fit ends, and a fit killed on its way leaves them there.
    """
    if p.n_buckets > SKLEARN_MAX_BUCKETS:  # params.py allows the scorer's 2**31; HashingVectorizer stops one short
        raise UserError(f"params.yaml: 'student.n_buckets' ({p.n_buckets}) must be at most {SKLEARN_MAX_BUCKETS} "
                        "for scikit-learn's HashingVectorizer")
    _free_shards_to_the_os()
    use_gold = p.gold_weight > 0 and len(gold_texts) > 0
    vectorizer = hashing_vectorizer(p)
    with tempfile.TemporaryDirectory(prefix="bert2lr-hashed-", dir=workdir) as folder:
        store = _ShardStore(Path(folder))
        df = np.zeros(p.n_buckets, dtype=np.int64)
        n_classes, scale_sum, n_transfer = None, 0.0, 0
        for texts, logits in shards:
            logits = np.asarray(logits, dtype=np.float64)
            if logits.ndim != 2 or logits.shape[1] < 2 or logits.shape[0] != len(texts) \
                    or n_classes not in (None, logits.shape[1]):
                raise UserError(f"student: teacher logits of shape {logits.shape} for a shard of {len(texts)} "
                                f"reviews; expected ({len(texts)}, {n_classes or 'classes'})")
            n_classes = logits.shape[1]
            targets, scales = _targets(logits)
            counts = vectorizer.transform(texts)
            df += np.bincount(counts.indices, minlength=p.n_buckets)
            store.add(counts, targets, np.ones(len(texts)))
            scale_sum += float(scales.sum())
            n_transfer += len(texts)
            log.info("student: hashed %d reviews (shard %d)", n_transfer, len(store) - 1)
        if n_classes is None:
            raise UserError("student: the transfer set is empty")
        _check_gold(gold_texts, gold_labels, n_classes, p)
        if use_gold:
            scale = scale_sum / n_transfer if n_transfer else 1.0
            gold = np.asarray(gold_labels)
            gold_targets = np.where(gold == 1, scale, -scale)[:, None] if n_classes == 2 else \
                scale * (np.eye(n_classes)[gold] - 1.0 / n_classes)
            counts = vectorizer.transform(list(gold_texts))
            df += np.bincount(counts.indices, minlength=p.n_buckets)
            store.add(counts, gold_targets, np.full(len(gold_texts), float(p.gold_weight)))
        n_docs = n_transfer + (len(gold_texts) if use_gold else 0)
        # TfidfTransformer's smoothed idf, as the vocabulary student's TfidfVectorizer computes it.
        idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
        sw, x_sum, y_sum = store.to_tfidf(idf, p.sublinear_tf)
        x_mean, y_mean = x_sum / sw, y_sum / sw
        log.info("student: %d reviews x %d buckets (hashed 1-%d grams); solving ridge, alpha %g",
                 n_docs, p.n_buckets, p.ngram_max, p.alpha)
        coef = np.vstack([store.ridge(k, x_mean, y_mean[k], sw, p.alpha) for k in range(len(y_mean))])
    intercept = y_mean - coef @ x_mean
    if n_classes == 2:
        coef, intercept = coef[0], float(intercept[0])
    return LinearTextModel.from_hashing(vectorizer, idf, coef, intercept, classes=classes,
                                        sublinear_tf=p.sublinear_tf)


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _free_shards_to_the_os() -> None:
    """Keep every large array in a mapping of its own, unmapped when it is freed (glibc only).

    glibc raises its mmap threshold to the size of each large block freed, after which shard-sized
    arrays come from the heap, which fragments and is not given back: the fit's peak memory then grows
    with the number of shards (IMDB, scripts/student_scale.py: 420 MB at 2 shards, 459 MB at 13).
    Fixing the threshold, as MALLOC_MMAP_THRESHOLD_ would, keeps it flat (416 and 420 MB).
    Process-wide, which suits a stage's process; elsewhere than glibc nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def _targets(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the student regresses, (n, outputs), and each review's confidence for the gold labels'
    scale: the margin and |margin| for two classes; for K, the centred logits and the gap between the
    top logit and the mean of the others (as `fit_student` and `_fit_classes`)."""
    if logits.shape[1] == 2:
        margin = logits[:, 1] - logits[:, 0]
        return margin[:, None], np.abs(margin)
    k = logits.shape[1]
    centred = logits - logits.mean(axis=1, keepdims=True)
    top = centred.max(axis=1)
    return centred, top - (centred.sum(axis=1) - top) / (k - 1)  # top logit minus the mean of the others


class _ShardStore:
    """The hashed shards on disk, one at a time in memory: rows, targets and weights per shard."""

    def __init__(self, folder: Path):
        self.folder, self.n = folder, 0

    def __len__(self) -> int:
        return self.n

    def add(self, X: sparse.csr_matrix, targets: np.ndarray, weights: np.ndarray) -> None:
        sparse.save_npz(self.folder / f"{self.n}.X.npz", X.tocsr(), compressed=False)
        np.savez(self.folder / f"{self.n}.y.npz", targets=targets, weights=weights)
        self.n += 1

    def shard(self, k: int) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray]:
        with np.load(self.folder / f"{k}.y.npz") as yw:
            return sparse.load_npz(self.folder / f"{k}.X.npz"), yw["targets"], yw["weights"]

    def to_tfidf(self, idf: np.ndarray, sublinear_tf: bool) -> tuple[float, np.ndarray, np.ndarray]:
        """Turn every shard's counts into l2-normalised TF-IDF rows; the weighted sums of weights, rows
        and targets, for the means that centre them."""
        sw, x_sum, y_sum = 0.0, np.zeros(len(idf)), None
        for k in range(self.n):
            X, targets, weights = self.shard(k)
            if sublinear_tf:
                np.log(X.data, out=X.data)
                X.data += 1.0
            X = normalize(X @ sparse.diags(idf), norm="l2", copy=False).tocsr()
            sparse.save_npz(self.folder / f"{k}.X.npz", X, compressed=False)
            sw += float(weights.sum())
            x_sum += X.T @ weights
            y_sum = (0.0 if y_sum is None else y_sum) + weights @ targets
        return sw, x_sum, y_sum

    def ridge(self, output: int, x_mean: np.ndarray, y_mean: float, sw: float, alpha: float) -> np.ndarray:
        """The coefficients of one output: conjugate gradients on the centred normal equations."""
        n = len(x_mean)
        rhs = np.zeros(n)
        for k in range(self.n):
            X, targets, weights = self.shard(k)
            rhs += X.T @ (weights * (targets[:, output] - y_mean))

        def normal_product(v: np.ndarray) -> np.ndarray:
            out = alpha * v - sw * x_mean * (x_mean @ v)
            for k in range(self.n):
                X, _, weights = self.shard(k)
                out += X.T @ (weights * (X @ v))
            return out

        passes = 0

        def count(_):
            nonlocal passes
            passes += 1
            if passes % 10 == 0:
                log.info("student: ridge, output %d: %d passes over the shards", output, passes)

        coef, info = cg(LinearOperator((n, n), matvec=normal_product, dtype=np.float64), rhs,
                        rtol=CG_RTOL, atol=0.0, maxiter=CG_MAXITER, callback=count)
        if info > 0:
            raise UserError(f"student: ridge did not converge in {CG_MAXITER} passes (student.alpha={alpha}); "
                            "expected a larger student.alpha")
        log.info("student: ridge, output %d: converged after %d passes", output, passes)
        return coef


def train_student(unlabeled: list[dict], teacher_logits: np.ndarray, labeled: list[dict],
                  p: StudentParams, classes=None) -> LinearTextModel:
    return fit_student([r["text"] for r in unlabeled], teacher_logits, p,
                       [r["text"] for r in labeled], [r["label"] for r in labeled], classes=classes)
