"""Stage: the student, a linear model on n-grams fitted to the teacher's logits on the transfer set.

It fits and nothing else: `evaluate` scores it and decides its quality gate, `assemble` packs it
with its lineage record. So a change of the test split does not refit it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bert2lr.classes import CLASS_NAMES
from bert2lr.distill import fit_hashed_student, train_student
from bert2lr.files import atomic_path, read_logits, read_reviews, read_transfer_sentences, transfer_texts
from bert2lr.linear import MODEL_FILE, LinearTextModel
from bert2lr.params import StudentParams


def student_stage(unlabeled: Path, teacher_logits: Path, labeled: Path, out_dir: Path,
                  p: StudentParams, classes: tuple[str, ...] = CLASS_NAMES,
                  sentences: Path | None = None, sentence_logits: Path | None = None) -> LinearTextModel:
    """Fit the student on the transfer set, its teacher logits and the labeled split; write out_dir/model.npz.

    classes: the names by label id (classes.json); the model file carries them, and the teacher's
    logits must hold one column per class. A hashed student (student.features hashing) reads the
    transfer set one shard at a time, so that its memory does not grow with it.
    sentences, sentence_logits: the transfer set's sentences and their teacher logits (the sentences
    and transfer_sentence_logits stages), added after the transfer set; none in them (an empty file)
    fits the student the transfer set alone gives, byte for byte.
    """
    labeled_reviews = read_reviews(labeled, need_labels=True, n_classes=len(classes))
    with atomic_path(out_dir, directory=True) as tmp:
        if p.features == "hashing":
            shards = transfer_texts(unlabeled, teacher_logits, len(classes), sentences, sentence_logits)
            # The stored rows (about 7 KB a review) go in the output's temporary folder: a killed fit
            # leaves them where the next run's clean-up of that folder removes them, not in /tmp.
            model = fit_hashed_student(shards, p, [r["text"] for r in labeled_reviews],
                                       [r["label"] for r in labeled_reviews], classes, workdir=tmp)
        else:
            unlabeled_reviews = read_reviews(unlabeled)
            logits = read_logits(teacher_logits, [r["id"] for r in unlabeled_reviews], len(classes))
            extra, extra_logits = read_transfer_sentences(sentences, sentence_logits, len(classes))
            if extra:
                unlabeled_reviews, logits = unlabeled_reviews + extra, np.concatenate([logits, extra_logits])
            model = train_student(unlabeled_reviews, logits, labeled_reviews, p, classes)
        model.save(tmp / MODEL_FILE)
    return model
