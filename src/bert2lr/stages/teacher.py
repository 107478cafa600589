"""Stage: fine-tune a BERT-family teacher on the labeled split, charting the training with dvclive;
or, with teacher.source classifier or scores, check and record a teacher given (see the end).

The loop is ours, not transformers' Trainer: it reproduces the teacher the reference numbers came
from bit for bit (Trainer's sampler, optimizer set-up and scheduler differ in small ways that change
the weights). It runs in one process: several processes would each need a slice of every batch
and an all-reduce of the gradients (accelerate's prepare, or torch's DistributedDataParallel), which
changes the weights at float rounding and is not built yet; the teacher's inference, the cost that
grows with the transfer set, runs in several (bert2lr.inference). dvclive is called directly: the
DVCLive callback is for Trainer, and a loop logs the same metrics in three lines.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from bert2lr.bert import collate, device, encode, load_classifier, predict_logits, seed_everything
from bert2lr.classes import CLASS_NAMES
from bert2lr.errors import UserError
from bert2lr.files import TEACHER_CARD, atomic_path, file_digest, sha256_manifest, write_json, write_logits
from bert2lr.params import SOURCE_KEYS, TeacherParams
from bert2lr.tables import read_columns

log = logging.getLogger(__name__)
NO_DECAY = ("bias", "LayerNorm.weight", "layernorm", "layer_norm")


def hold_out(n: int, n_heldout: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: a seeded sample of n_heldout, drawn apart from the training RNGs
    so that n_heldout 0 trains exactly as before there was a held-out slice."""
    heldout = set(np.random.default_rng(seed).permutation(n)[:n_heldout].tolist())
    return [i for i in range(n) if i not in heldout], sorted(heldout)


def train_teacher(texts: list[str], labels: list[int], out_dir: Path, training_dir: Path,
                  p: TeacherParams, classes: tuple[str, ...] = CLASS_NAMES) -> dict:
    """Fine-tune `p.model` with AdamW, warm-up then linear decay; save_pretrained to out_dir.

    The classifier head has one output per class of `classes` (names by label id, its id2label).

    training_dir gets dvclive's record: loss and learning rate per step, mean loss and accuracy per
    epoch on the training batches (and accuracy on the held-out slice when teacher.n_heldout > 0).
    """
    started = time.perf_counter()
    seed_everything(p.seed)
    tokenizer, model = load_classifier(p.model, new_head=True, classes=classes)
    dev = device()
    model.to(dev).train()
    train_index, heldout_index = hold_out(len(texts), p.n_heldout, p.seed)
    ids = encode(tokenizer, [texts[i] for i in train_index], p)
    y = torch.tensor([labels[i] for i in train_index])
    heldout_texts = [texts[i] for i in heldout_index]
    heldout_labels = np.array([labels[i] for i in heldout_index])
    groups = [
        {"params": [w for n, w in model.named_parameters() if not any(k in n for k in NO_DECAY)],
         "weight_decay": p.weight_decay},
        {"params": [w for n, w in model.named_parameters() if any(k in n for k in NO_DECAY)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=p.learning_rate)
    steps_per_epoch = math.ceil(len(ids) / p.batch_size)
    total = max(1, p.epochs * steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(p.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(p.seed)
    losses = []
    log.info("teacher: fine-tuning %s on %d reviews (%d held out), %d epochs, on %s",
             p.model, len(ids), len(heldout_index), p.epochs, dev)
    # The training record is committed with the weights, after them: both or neither.
    with atomic_path(training_dir, directory=True) as live_dir:
        with Live(str(live_dir), save_dvc_exp=False, dvcyaml=False, report=None) as live, \
                tqdm(total=p.epochs * len(ids), desc="fine-tune", unit=" reviews") as bar:
            for epoch in range(p.epochs):
                order = torch.randperm(len(ids), generator=generator).tolist()
                correct = 0
                for start in range(0, len(ids), p.batch_size):
                    index = order[start: start + p.batch_size]
                    batch = collate(tokenizer, [ids[i] for i in index], dev)
                    output = model(**batch, labels=y[index].to(dev))
                    output.loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    # the rate this step was taken with, before the scheduler moves it on
                    live.log_metric("train/learning_rate", scheduler.get_last_lr()[0])
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                    losses.append(output.loss.item())
                    correct += int((output.logits.argmax(-1).cpu() == y[index]).sum())
                    live.log_metric("train/loss", losses[-1])
                    bar.update(len(index))
                    bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.4f}")
                    if start + p.batch_size < len(ids):
                        live.next_step()
                # Epoch metrics share the step of the epoch's last batch, so every curve has one x axis.
                # The epoch's mean loss too: the last step's loss, all `dvc exp show` would list
                # otherwise, is that of one small batch.
                live.log_metric("epoch", epoch + 1, plot=False)
                live.log_metric("train/epoch_loss", round(float(np.mean(losses[-steps_per_epoch:])), 4))
                live.log_metric("train/accuracy", round(correct / len(ids), 4))
                if heldout_index:
                    model.eval()
                    predicted = predict_logits(tokenizer, model, heldout_texts, p, p.batch_size, "held-out").argmax(1)
                    model.train()
                    live.log_metric("heldout/accuracy", round(float(np.mean(predicted == heldout_labels)), 4))
                live.next_step()
        # The card is part of the DVC output models/teacher, so it holds only what determines the
        # weights: a wall-clock time here changed the folder's hash (and reran `logits`) on every
        # rerun. The keys of the other teacher sources are left out (the card is as it was before
        # they existed). The intra-op thread count is recorded because the CPU gradients depend on it (how
        # reductions are split over threads); the same count gives the same bytes.
        card = {"base_model": p.model, "params": p.model_dump(exclude=set(SOURCE_KEYS)), "n_reviews": len(ids),
                "steps": len(losses),
                "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
                "device": str(dev), "threads": torch.get_num_threads()}
        log.info("teacher: fine-tuned in %.1f s on %d threads", time.perf_counter() - started, card["threads"])
        with atomic_path(out_dir, directory=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / TEACHER_CARD, card)
    return card


# --- teacher.source: classifier and scores: no training, a record of the teacher given ---------

# Probabilities are clipped to this before their log: a probability of 0 (a hard or rounded-off one)
# has the logit -inf, which no linear student can fit and the logits reader refuses; 1e-6 is below
# anything a table rounded to 6 decimals states, so only zeros move (to log 1e-6, about -13.8).
PROBABILITY_FLOOR = 1e-6
# A row of probabilities must sum to 1 within this: tables round their probabilities (three classes
# at two decimals can sum to 0.99 or 1.01); each row is then divided by its sum.
SUM_TOLERANCE = 0.011
SCORES_FILE = "scores.npz"  # in the teacher folder: ids and (n, K) logits, classes.json's order


def _record_source(training_dir: Path, source: str) -> None:
    """metrics/teacher_training without training: no curves, only what the teacher was (dvc.yaml
    declares the folder and its metrics.json)."""
    with atomic_path(training_dir, directory=True) as tmp:
        write_json(tmp / "metrics.json", {"source": source, "trained": False, "steps": 0})


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


def check_classifier(out_dir: Path, training_dir: Path, p: TeacherParams, classes: tuple[str, ...]) -> dict:
    """Check that teacher.model is a complete classifier for exactly the classes of classes.json, and
    save it to out_dir unchanged, with a card naming its source and its output column per class.

    The head is not permuted: its layout differs by architecture (classifier, classifier.out_proj,
    score, ...) and the saved weights stay the ones the user gave. The card's "columns" is the model's
    output index of each class in classes.json's order; logits and speed apply it (bert.class_columns).
    """
    from bert2lr.bert import model_folder

    tokenizer, model = load_classifier(p.model)
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(model.config.num_labels)]
    if sorted(names) != sorted(classes):
        raise UserError(f"teacher.model {p.model}: its id2label names the classes {_names(names)}; expected "
                        f"those of classes.json, {_names(classes)} (the same names, in any order)")
    card = {"source": "classifier", "base_model": p.model,
            "params": {k: v for k, v in p.model_dump().items()
                       if k in ("source", "model", "max_length", "truncation", "head_tokens")},
            "classes": list(classes), "columns": [names.index(c) for c in classes],
            # The source's own files, so that lineage names the model given, not only the copy saved here.
            "source_files": sha256_manifest(model_folder(p.model))}
    log.info("teacher: %s is a classifier of %s; output columns %s in classes.json's order",
             p.model, _names(names), card["columns"])
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / TEACHER_CARD, card)
    _record_source(training_dir, "classifier")
    return card


def scores_logits(p: TeacherParams, classes: tuple[str, ...], id_column: str | None) -> tuple[list[str], np.ndarray]:
    """(ids, (n, K) logits in classes.json's order) from the table of precomputed scores."""
    path, columns, kind = Path(p.scores_path), p.scores_columns, p.scores_kind
    if kind == "label_confidence":
        label_column, confidence_column = columns["label"], columns["confidence"]
        ids, values = read_columns(path, [label_column, confidence_column], id_column, numeric=[confidence_column])
        index = {name: i for i, name in enumerate(classes)}
        probabilities = np.empty((len(ids), len(classes)))
        for row, (record_id, label, confidence) in enumerate(zip(ids, values[label_column],
                                                                 values[confidence_column])):
            if label not in index:
                raise UserError(f"{path}: id {record_id!r}: label {label!r} in column {label_column!r} is not one "
                                f"of the classes of classes.json, {_names(classes)}")
            if not 0 <= confidence <= 1:
                raise UserError(f"{path}: id {record_id!r}: confidence {confidence:g} in column "
                                f"{confidence_column!r}; expected a probability from 0 to 1")
            probabilities[row] = (1 - confidence) / (len(classes) - 1)
            probabilities[row, index[label]] = confidence
    else:
        missing = [c for c in classes if c not in columns]
        unknown = [c for c in columns if c not in classes]
        if missing or unknown:
            raise UserError(f"'teacher.scores_columns' maps {_names(columns) or 'no class'}; expected exactly the "
                            f"classes of classes.json, {_names(classes)}" +
                            (f" (no column for {_names(missing)})" if missing else f" ({_names(unknown)} is none)"))
        ids, values = read_columns(path, [columns[c] for c in classes], id_column, numeric=list(columns.values()))
        scores = np.column_stack([values[columns[c]] for c in classes])
        if kind == "logits":
            return ids, scores
        outside = np.flatnonzero(((scores < 0) | (scores > 1)).any(axis=1))
        if len(outside):
            row = outside[0]
            raise UserError(f"{path}: id {ids[row]!r}: probabilities {scores[row].tolist()} in columns "
                            f"{_names(columns[c] for c in classes)}; expected each from 0 to 1")
        sums = scores.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
        if len(off):
            row = off[0]
            raise UserError(f"{path}: id {ids[row]!r}: probabilities in columns {_names(columns[c] for c in classes)} "
                            f"sum to {sums[row]:g}; expected 1 (within {SUM_TOLERANCE:g})")
        probabilities = scores / sums[:, None]
    return ids, np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0))


def record_scores(out_dir: Path, training_dir: Path, p: TeacherParams, classes: tuple[str, ...],
                  id_column: str | None) -> dict:
    """Validate the precomputed scores and write them, as logits in classes.json's order, with a card."""
    ids, logits = scores_logits(p, classes, id_column)
    card = {"source": "scores",
            "params": {"source": p.source, "scores_path": p.scores_path, "scores_id_column": id_column,
                       "scores_columns": dict(p.scores_columns), "scores_kind": p.scores_kind},
            "classes": list(classes),
            "scores": {"path": p.scores_path, "sha256": file_digest(p.scores_path), "file": SCORES_FILE,
                       "n": len(ids)}}
    log.info("teacher: %d precomputed %s scores from %s", len(ids), p.scores_kind, p.scores_path)
    with atomic_path(out_dir, directory=True) as tmp:
        write_logits(tmp / SCORES_FILE, ids, logits)
        write_json(tmp / TEACHER_CARD, card)
    _record_source(training_dir, "scores")
    return card
