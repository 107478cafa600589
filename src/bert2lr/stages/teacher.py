"""Stage: fine-tune a BERT-family teacher on the labeled split, charting the training with dvclive.

The loop is ours, not transformers' Trainer: it reproduces the teacher the reference numbers came
from bit for bit (Trainer's sampler, optimizer set-up and scheduler differ in small ways that change
the weights), and a hand loop scales the same way Trainer does, by handing model, optimizer and
batches to accelerate (which Trainer itself runs on). dvclive is called directly: the DVCLive
callback is for Trainer, and a loop logs the same metrics in three lines.
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
from bert2lr.files import TEACHER_CARD, atomic_path, write_json
from bert2lr.params import TeacherParams

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
        # rerun. The intra-op thread count is recorded because the CPU gradients depend on it (how
        # reductions are split over threads); the same count gives the same bytes.
        card = {"base_model": p.model, "params": p.model_dump(), "n_reviews": len(ids), "steps": len(losses),
                "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
                "device": str(dev), "threads": torch.get_num_threads()}
        log.info("teacher: fine-tuned in %.1f s on %d threads", time.perf_counter() - started, card["threads"])
        with atomic_path(out_dir, directory=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / TEACHER_CARD, card)
    return card
