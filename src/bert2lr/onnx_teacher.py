"""The fine-tuned teacher in ONNX Runtime: export, optional int8 quantisation, and inference.

ONNX Runtime runs the teacher's forward pass faster on CPU than torch (issue 11, item 4). The
teacher folder (models/teacher, written by the teacher stage) is exported once with torch's own
exporter (torch.onnx.export, torch.export-based), with batch and sequence as dynamic axes, so
that one file takes every length-sorted batch; int8 dynamic quantisation comes from
onnxruntime.quantization. Inference encodes and batches exactly as bert.predict_logits does (the
same head+tail encoding, the same length-sorted batches, results in the input order), so the two
back ends see the same inputs and their logits can be compared review for review.

onnx, onnxscript and onnxruntime are dependencies of bert2lr (the default CPU back end); they are
imported only inside the functions that need them, so that serving the student never loads them.
"""

from __future__ import annotations

import ast
import logging
import re
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bert2lr.bert import encode, length_sorted_batches, load_classifier, one_line
from bert2lr.errors import UserError
from bert2lr.files import atomic_path, read_json
from bert2lr.params import TeacherParams

# The graph's only output: the classifier's logits, (batch, classes).
OUTPUT = "logits"
# ONNX opset 23 has an Attention operator: the exporter writes torch's scaled_dot_product_attention as
# one node that ONNX Runtime runs as one kernel, where opset 18 spells it out in MatMul, Softmax and
# masking nodes. Measured on the fine-tuned teacher, the same batches: 1.06x and 1.04x torch's rate
# against 0.95x and 0.89x with the exporter's default opset (two runs, busy machine).
OPSET = 23
# Linear layers that int8 quantisation can leave in fp32 (`quantize(keep_fp32=...)`), by the name of
# their torch module in a BERT-family classifier: the two projections back into the residual stream,
# whose inputs (GELU output, attention context) have the widest ranges, which int8 activations with
# one scale per batch clip or coarsen. The head (pooler, classifier) stays fp32 in any case: the
# export makes it a Gemm, which dynamic quantisation leaves alone.
SENSITIVE_LAYERS = {
    "ffn_output": r"\.layer\.\d+\.output\.dense$",
    "attention_output": r"\.layer\.\d+\.attention\.output\.dense$",
}


def _missing_extra(exc: ImportError) -> UserError:
    return UserError(f"the ONNX Runtime back end needs {exc.name}, which bert2lr depends on: reinstall bert2lr "
                     "(scripts/bootstrap), or set logits.backend: torch")


def _logits_module(model):
    """The classifier as a torch module whose one output is its logits (the graph's OUTPUT)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    return Logits(model).eval()


def export_onnx(teacher_dir: Path, out: Path) -> Path:
    """Export the fine-tuned classifier in teacher_dir to the ONNX file `out` (fp32), atomically.

    The inputs are those bert.collate feeds torch (input_ids, attention_mask), both (batch, sequence)
    with dynamic sizes; the output is OUTPUT, (batch, classes). Written as one file: the exporter's
    graph metadata keeps each node's torch module (quantize reads it), less the stack traces, which
    hold this machine's paths and would make the file differ from one checkout to the next.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export's translator; fail here with a clear message)
        import torch
    except ImportError as exc:
        raise _missing_extra(exc) from None
    from bert2lr.bert import collate

    teacher_dir = Path(teacher_dir)
    if not teacher_dir.is_dir():
        raise UserError(f"{teacher_dir}: teacher folder not found (run `dvc repro teacher`)")
    tokenizer, model = load_classifier(str(teacher_dir))
    if model.config.num_labels < 2:
        raise UserError(f"{teacher_dir}: a classifier with {model.config.num_labels} label; expected 2 or more")
    # Two examples of different lengths: torch.export specialises a dimension whose example size is 1.
    example = collate(tokenizer, [tokenizer("a b c d")["input_ids"], tokenizer("a")["input_ids"]], "cpu")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # The exporter's notices (torchvision absent, axis names shared by both inputs, its own
    # deprecations) say nothing about the user's teacher.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                _logits_module(model.cpu().eval()), (), kwargs=dict(example), dynamo=True, external_data=False,
                input_names=list(example), output_names=[OUTPUT], opset_version=OPSET,
                dynamic_shapes={name: {0: batch, 1: sequence} for name in example}, verbose=False)
    finally:
        registration_log.setLevel(level)
    proto = program.model_proto
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return Path(out)


def _module_of(node) -> str | None:
    """The torch module a node of an exported graph came from ("model.bert.encoder.layer.0.output.dense")."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)  # the exporter writes the list as Python's repr
            # the last scope is the call (linear_3), the one before it the module that made it
            return scopes[-2] if len(scopes) >= 2 else None
    return None


def linear_nodes(model_path: Path, layers: tuple[str, ...]) -> list[str]:
    """Names of the MatMul nodes of an exported graph that belong to the SENSITIVE_LAYERS named."""
    import onnx

    unknown = [name for name in layers if name not in SENSITIVE_LAYERS]
    if unknown:
        raise UserError(f"keep_fp32: unknown layer group {unknown[0]!r}; expected some of "
                        f"{', '.join(SENSITIVE_LAYERS)}")
    patterns = [re.compile(SENSITIVE_LAYERS[name]) for name in layers]
    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    names = []
    for node in graph.node:
        # MatMul nodes that multiply two activations (attention scores) have no weight to quantise
        if node.op_type != "MatMul" or not any(i in weights for i in node.input):
            continue
        module = _module_of(node)
        if module and any(p.search(module) for p in patterns):
            names.append(node.name)
    return names


def quantize(fp32: Path, out: Path, per_channel: bool = False, keep_fp32: tuple[str, ...] = ()) -> Path:
    """Int8 dynamic quantisation of an exported teacher's linear layers (weights int8, activations
    quantised per batch at run time), written atomically to `out`.

    per_channel: one scale per output column of each weight instead of one per matrix. keep_fp32:
    groups of SENSITIVE_LAYERS left in fp32. Both trade some of int8's speed for agreement with fp32.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise _missing_extra(exc) from None
    load_session(fp32)  # a damaged or foreign file is a UserError here, not a protobuf traceback
    excluded = linear_nodes(fp32, keep_fp32) if keep_fp32 else []
    if keep_fp32 and not excluded:
        raise UserError(f"{fp32}: no linear layers of {', '.join(keep_fp32)} found; expected a graph exported by "
                        "bert2lr.onnx_teacher.export_onnx from a BERT-family classifier")
    with atomic_path(out) as tmp:
        quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded)
    return Path(out)


# The export stage's folder: the model ONNX Runtime runs, and a record of what it is (or why there is none).
MODEL_FILE = "model.onnx"
EXPORT_RECORD = "export.json"


def exported_model(onnx_dir: Path) -> Path:
    """The model file of the export stage's folder; a folder that holds none is a UserError saying why."""
    record_path = Path(onnx_dir) / EXPORT_RECORD
    if not record_path.is_file():
        raise UserError(f"{record_path}: not found; expected the export stage's record (run `dvc repro export`)")
    record = read_json(record_path, "export record")
    if not record.get("exported"):
        raise UserError(f"{onnx_dir}: holds no ONNX teacher ({record.get('why', 'not exported')}); expected one "
                        "for logits.backend onnxruntime (run `dvc repro export`)")
    return Path(onnx_dir) / MODEL_FILE


def load_session(path: Path, threads: int | None = None):
    """An ONNX Runtime session on CPU for an exported teacher; a missing, damaged or foreign file is a UserError.

    threads: intra-op threads, by default the cores this process may use (BERT2LR_THREADS overrides,
    as for the student's scorer).
    """
    try:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError as exc:
        raise _missing_extra(exc) from None
    from bert2lr.limits import default_threads

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX teacher not found (export it with bert2lr.onnx_teacher.export_onnx)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT's warnings about unused initialisers etc. are not the user's concern
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NoSuchFile,
            ort_errors.InvalidArgument, ort_errors.NotImplemented, ort_errors.RuntimeException) as exc:
        raise UserError(f"{path}: not a readable ONNX model ({one_line(exc)[:200]}); "
                        "expected a teacher exported by bert2lr.onnx_teacher.export_onnx") from None
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if not {"input_ids", "attention_mask"} <= inputs or OUTPUT not in outputs:
        raise UserError(f"{path}: an ONNX model with inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                        f"expected inputs input_ids and attention_mask and the output {OUTPUT!r}")
    return session


def n_classes(session) -> int:
    """The number of logits per review, from the output's shape (fixed by the classifier's head)."""
    shape = next(o.shape for o in session.get_outputs() if o.name == OUTPUT)
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 2:
        raise UserError(f"ONNX teacher: output {OUTPUT!r} has shape {shape}; expected (batch, classes >= 2)")
    return shape[1]


def predict_logits(tokenizer, session, texts: list[str], p: TeacherParams, batch_size: int,
                   desc: str = "logits") -> np.ndarray:
    """Logits of shape (n, classes) in the order of `texts`, as bert.predict_logits gives them for torch:
    the same encoding and the same length-sorted batches, each padded to its own longest text."""
    ids = encode(tokenizer, texts, p)
    out = np.zeros((len(ids), n_classes(session)), dtype=np.float32)
    with tqdm(total=len(ids), desc=desc, unit=" texts") as bar:
        for index in length_sorted_batches(ids, batch_size):
            batch = tokenizer.pad({"input_ids": [ids[i] for i in index]}, return_tensors="np")
            feed = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
            out[index] = session.run([OUTPUT], feed)[0]
            bar.update(len(index))
    return out


def agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """How closely a back end's logits follow the reference's (torch's) on the same reviews."""
    return {"n": int(len(reference)),
            "label_agreement": round(float(np.mean(reference.argmax(1) == candidate.argmax(1))), 4),
            "max_abs_logit_diff": float(np.max(np.abs(reference - candidate))) if len(reference) else 0.0}
