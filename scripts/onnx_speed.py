#!/usr/bin/env python3
"""The teacher's inference in torch against ONNX Runtime (fp32 and int8 variants), in one run.

Every back end scores the same reviews in the same length-sorted batches that bert.predict_logits
makes, through the library's own inference functions (bert.predict_logits and
onnx_teacher.predict_logits, called on one batch at a time). The back ends take turns batch by
batch, in an order that rotates, so that on a busy machine a slow spell slows them alike and the
ratios hold even where the absolute rates do not. Agreement is measured against torch's logits.
Prints JSON:

    .venv/bin/python scripts/onnx_speed.py --teacher models/teacher --reviews data/splits/test.jsonl --n 600

The exported and quantised models go to --work (a temporary folder unless given).

Measured on the fine-tuned MiniLM teacher (export at opset 23), 600 test reviews, batches of 64, on
a 2-core machine busy with two other pipelines (load 4.6-5.7), so the rates are low and the ratios
are what counts: torch 13.4 reviews/s; ONNX Runtime fp32 0.99x with identical labels (max |logit
diff| 7.5e-6); int8 per-tensor 2.06x at 98.17% label agreement; per-channel 2.08x at 99.33%;
per-channel with the FFN output projections in fp32 1.62x at 99.50% (597 of 600); with the
attention output projections in fp32 too 1.49x at 99.33%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # a bar per batch and back end would bury the result

import numpy as np  # noqa: E402

from bert2lr import onnx_teacher  # noqa: E402
from bert2lr.bert import encode, length_sorted_batches, load_fine_tuned, predict_logits  # noqa: E402
from bert2lr.files import read_reviews  # noqa: E402
from bert2lr.params import load_params  # noqa: E402

# name: quantize()'s arguments; None is the fp32 export itself
VARIANTS = {
    "ort_fp32": None,
    "ort_int8": {},
    "ort_int8_per_channel": {"per_channel": True},
    "ort_int8_per_channel_fp32_ffn_output": {"per_channel": True, "keep_fp32": ("ffn_output",)},
    "ort_int8_per_channel_fp32_residual": {"per_channel": True, "keep_fp32": ("ffn_output", "attention_output")},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--reviews", type=Path, default=Path("data/splits/test.jsonl"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--n", type=int, default=600, help="the first N reviews of --reviews")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the reviews")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=None, help="folder for the ONNX files (default: temporary)")
    args = parser.parse_args()
    p = load_params(args.params)
    texts = [r["text"] for r in read_reviews(args.reviews)][: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        print(json.dumps(measure(args.teacher, texts, p, work, args.rounds, args.variants), indent=2))


def measure(teacher: Path, texts: list[str], p, work: Path, rounds: int, variants: list[str]) -> dict:
    import torch

    result = {"n_reviews": len(texts), "batch_size": p.logits.batch_size, "rounds": rounds,
              "cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "torch_threads": torch.get_num_threads()}
    started = time.perf_counter()
    fp32 = onnx_teacher.export_onnx(teacher, work / "fp32.onnx")
    result["export_s"] = round(time.perf_counter() - started, 1)
    files, result["quantize_s"] = {}, {}
    for name in variants:
        if VARIANTS[name] is None:
            files[name] = fp32
        else:
            started = time.perf_counter()
            files[name] = onnx_teacher.quantize(fp32, work / f"{name}.onnx", **VARIANTS[name])
            result["quantize_s"][name] = round(time.perf_counter() - started, 1)
    tokenizer, model = load_fine_tuned(teacher)
    sessions = {name: onnx_teacher.load_session(path) for name, path in files.items()}
    result["ort_threads"] = next(iter(sessions.values())).get_session_options().intra_op_num_threads

    def run(name, batch):
        if name == "torch":
            return predict_logits(tokenizer, model, batch, p.teacher, len(batch), name)
        return onnx_teacher.predict_logits(tokenizer, sessions[name], batch, p.teacher, len(batch), name)

    # The batches predict_logits makes: a whole batch given to it at once is that same batch.
    batches = length_sorted_batches(encode(tokenizer, texts, p.teacher), p.logits.batch_size)
    names = ["torch", *variants]
    for name in names:  # warm-up: first-call allocations and thread pools
        run(name, [texts[i] for i in batches[-1]])
    seconds = {name: 0.0 for name in names}
    logits = {name: np.zeros((len(texts), model.config.num_labels), np.float32) for name in names}
    turn = 0
    for _ in range(rounds):
        for index in batches:
            batch = [texts[i] for i in index]
            for name in names[turn % len(names):] + names[: turn % len(names)]:
                t0 = time.perf_counter()
                logits[name][index] = run(name, batch)
                seconds[name] += time.perf_counter() - t0
            turn += 1
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["backends"] = {}
    for name in names:
        entry = {"reviews_per_s": round(rounds * len(texts) / seconds[name], 1),
                 "speedup_vs_torch": round(seconds["torch"] / seconds[name], 2)}
        if name != "torch":
            entry |= onnx_teacher.agreement(logits["torch"], logits[name])
            entry["size_mb"] = round(files[name].stat().st_size / 1e6, 1)
        result["backends"][name] = entry
    return result


if __name__ == "__main__":
    main()
