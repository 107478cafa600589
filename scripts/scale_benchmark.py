#!/usr/bin/env python3
"""The logits stage's cost against the transfer set's size: torch and ONNX Runtime, 1 and 2 processes.

For each size (the first N reviews of the transfer pool, in the order prepare samples them) every
configuration scores the same reviews the way a logits@k stage does: bert2lr.inference.predict,
processes started by the elastic launcher, model loading included. The configurations take turns
at each size, so that a busy spell of this (noisy, shared) machine slows them alike; compare the
ratios to torch with one process, measured in the same run. Prints JSON; progress goes to stderr.

    .venv/bin/python scripts/scale_benchmark.py                       # 5k, 24k, 48k, all 74k (hours)
    .venv/bin/python scripts/scale_benchmark.py --sizes 500 2000      # a few minutes

It needs the fine-tuned teacher (`dvc repro teacher`) and the IMDB archive (`dvc repro fetch`); the
ONNX model is exported to a temporary folder (or --onnx-dir, e.g. models/teacher_onnx). The whole
pipeline's wall time is `time dvc repro` on the defaults (README, "Scale").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # a bar per configuration would bury the result

from bert2lr.inference import predict  # noqa: E402
from bert2lr.onnx_teacher import exported_model  # noqa: E402
from bert2lr.params import LogitsParams, load_params  # noqa: E402
from bert2lr.stages.export import export_teacher  # noqa: E402
from bert2lr.stages.prepare import read_archive, sample_splits  # noqa: E402

CONFIGS = ("torch:1", "torch:2", "onnxruntime:1", "onnxruntime:2")


def transfer_pool(archive: Path, params, n: int) -> list[str]:
    """The first n reviews of the transfer pool, as prepare samples them (the whole pool if n is larger)."""
    folders = read_archive(archive, with_unsup=True)
    pool_size = sum(len(folders.get(f"train/{name}", [])) for name in ("pos", "neg", "unsup")) - params.split.n_labeled
    split = params.split.model_copy(update={"unlabeled_pool": "train+unsup", "n_unlabeled": min(n, pool_size)})
    return [r["text"] for r in sample_splits(folders, split)["unlabeled"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher"))
    parser.add_argument("--archive", type=Path, default=Path("data/raw/aclImdb_v1.tar.gz"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 24000, 48000, 74000],
                        help="transfer-set sizes (capped at the pool: 74,000 reviews)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS,
                        help="back end:processes")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="an exported teacher (default: export one)")
    args = parser.parse_args()

    params = load_params(args.params)
    texts = transfer_pool(args.archive, params, max(args.sizes))
    onnx_dir = args.onnx_dir
    if onnx_dir is None:
        onnx_dir = Path(tempfile.mkdtemp(prefix="scale-benchmark-")) / "teacher_onnx"
        export_teacher(args.teacher, onnx_dir, LogitsParams(backend="onnxruntime"))
    onnx_model = exported_model(onnx_dir)
    load = os.getloadavg()
    runs = []
    for size in sorted(set(min(s, len(texts)) for s in args.sizes)):
        row = {"n_reviews": size}
        for config in args.configs:
            backend, processes = config.split(":")
            p = params.logits.model_copy(update={"backend": backend, "processes": int(processes), "quantize": False})
            print(f"scale_benchmark: {size} reviews, {config} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            predict(texts[:size], args.teacher, onnx_model, params.teacher, p, f"{config} {size}")
            seconds = time.perf_counter() - started
            row[config] = {"seconds": round(seconds, 1), "reviews_per_s": round(size / seconds, 2)}
            print(f"scale_benchmark: {size} reviews, {config}: {seconds:.1f} s ({size / seconds:.1f}/s)",
                  file=sys.stderr, flush=True)
        base = row.get("torch:1")
        if base:
            for config in args.configs:
                row[config]["speedup_vs_torch_1"] = round(base["seconds"] / row[config]["seconds"], 2)
        runs.append(row)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                      "load_average_at_start": [round(x, 2) for x in load],
                      "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                      "batch_size": params.logits.batch_size, "max_length": params.teacher.max_length,
                      "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
