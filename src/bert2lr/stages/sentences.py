"""Stage: sentences sampled from the test sample (labeled with their review's gold label), on which
the `short_texts` stage measures teacher and student, and from the transfer set (unlabeled), which
the teacher scores for the student's transfer set when short_texts.n_transfer_sentences > 0.

The two samples are drawn from independent streams of short_texts.seed, so that a new test sample
or n_test_sentences leaves the transfer set's sentences (and the student) as they were.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bert2lr.errors import UserError
from bert2lr.files import read_reviews, write_reviews
from bert2lr.params import ShortTextsParams
from bert2lr.sentences import sample_sentences

log = logging.getLogger(__name__)

TEST_STREAM, TRANSFER_STREAM = 0, 1  # numpy default_rng([seed, stream])


def _sample(reviews: list[dict], n: int, p: ShortTextsParams, stream: int, source: Path) -> list[dict]:
    sampled = sample_sentences(reviews, n, (p.seed, stream), p.min_words)
    if not sampled:
        raise UserError(f"{source}: no sentence of at least {p.min_words} words in its {len(reviews)} reviews; "
                        "expected a smaller short_texts.min_words")
    if len(sampled) < n:
        log.info("sentences: %s holds %d sentences of at least %d words, fewer than the %d asked: all of them",
                 source, len(sampled), p.min_words, n)
    return sampled


def sentences_stage(test: Path, unlabeled: Path, test_out: Path, transfer_out: Path, p: ShortTextsParams,
                    n_classes: int = 2, scores_teacher: bool = False) -> dict[str, int]:
    """Write test_out (n_test_sentences, labeled) and transfer_out (n_transfer_sentences, unlabeled;
    an empty file for 0) as JSON Lines of {"id": "<review id>/s<k>", "text"[, "label"]}; return the counts.

    scores_teacher: the teacher is a table of precomputed scores (teacher.source scores), which has no
    score for a sentence: both files are empty, and short_texts measures the whole reviews only
    (params.py refuses n_transfer_sentences > 0 with it).
    """
    test_reviews = read_reviews(test, need_labels=True, n_classes=n_classes)
    if scores_teacher:
        log.info("sentences: none: the teacher is a table of precomputed scores, which holds no score for a sentence")
        return {"test": write_reviews(test_out, []), "transfer": write_reviews(transfer_out, [])}
    test_sentences = _sample(test_reviews, p.n_test_sentences, p, TEST_STREAM, test)
    # The transfer set is read only when sentences are drawn from it: 48,000 reviews take seconds.
    transfer_sentences = [] if p.n_transfer_sentences == 0 else [
        {"id": s["id"], "text": s["text"]}  # unlabeled, whatever the split holds
        for s in _sample(read_reviews(unlabeled), p.n_transfer_sentences, p, TRANSFER_STREAM, unlabeled)]
    counts = {"test": write_reviews(test_out, test_sentences),
              "transfer": write_reviews(transfer_out, transfer_sentences)}
    log.info("sentences: %d from %d test reviews, %d from the transfer set (at least %d words each)",
             counts["test"], len(test_reviews), counts["transfer"], p.min_words)
    return counts
