"""The teacher's logits on a list of texts: in torch or ONNX Runtime, in one process or several.

Every back end scores the same length-sorted batches (bert.length_sorted_batches), each padded to
its own longest text. Several processes split those batches round-robin: logits.processes starts
them here with torch's elastic launcher (the engine of torchrun), and a stage started by torchrun
itself (`torchrun --nproc-per-node 4 -m bert2lr logits ...`, WORLD_SIZE set) joins the launcher's
processes instead, on one machine or several. Rank 0 gathers the batches over torch.distributed
(gloo on CPU, NCCL on GPUs) and puts the rows back in input order. As a review is padded and scored
in the same batch whatever the process count, the logits equal one process's up to the order of
floating-point sums, which the threads per process change (1e-5 is the tolerance the tests hold).

Why torch.distributed and not accelerate or Ray: inference needs no wrapped model or optimizer,
only ranks and one gather, which torch itself has; torchrun is the launcher accelerate's own
`accelerate launch` calls, so a cluster set up for either runs this. Ray Data would bring a cluster
runtime of its own into a DVC stage, which is one command that must finish with its outputs
written: across machines, DVC's own shards (logits@k, pushed and pulled with the run cache) are
the unit of work (docs/design.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bert2lr.bert import collate, encode, length_sorted_batches, load_fine_tuned
from bert2lr.params import LogitsParams, TeacherParams

log = logging.getLogger(__name__)


def backend_in_use(p: LogitsParams) -> str:
    """ONNX Runtime is the CPU back end; on a GPU the teacher runs in torch (CUDA)."""
    return "torch" if torch.cuda.is_available() else p.backend


def launched_world() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) when a launcher (torchrun, accelerate launch) started this process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"])


def _threads(local_processes: int) -> int:
    from bert2lr.limits import default_threads

    return max(1, default_threads() // local_processes)


class _Scorer:
    """One back end's forward pass on a batch of token ids, on this process's device."""

    def __init__(self, model_dir: Path, onnx_model: Path | None, backend: str, quantize: bool,
                 threads: int, device: torch.device):
        self.device = device
        if backend == "onnxruntime":
            from transformers import AutoTokenizer

            from bert2lr import onnx_teacher

            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            self.session = onnx_teacher.load_session(onnx_model, threads)
            self.n_classes = onnx_teacher.n_classes(self.session)
            self._run = self._onnx
        else:
            torch.set_num_threads(threads)
            self.tokenizer, self.model = load_fine_tuned(model_dir, quantize=quantize)
            self.model.to(device)
            self.n_classes = self.model.config.num_labels
            self._run = self._torch

    @torch.inference_mode()
    def _torch(self, ids: list[list[int]]) -> np.ndarray:
        return self.model(**collate(self.tokenizer, ids, self.device)).logits.float().cpu().numpy()

    def _onnx(self, ids: list[list[int]]) -> np.ndarray:
        from bert2lr.onnx_teacher import OUTPUT

        batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="np")
        feed = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
        return self.session.run([OUTPUT], feed)[0]

    def __call__(self, ids: list[list[int]]) -> np.ndarray:
        return self._run(ids)


def _score(texts: list[str], model_dir: Path, onnx_model: Path | None, teacher: TeacherParams, p: LogitsParams,
           desc: str, rank: int, local_rank: int, world: int, local_world: int) -> np.ndarray | None:
    """This rank's share of the batches, gathered to rank 0, which returns all rows in input order."""
    backend = backend_in_use(p)
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    scorer = _Scorer(model_dir, onnx_model, backend, p.quantize, _threads(local_world), device)
    ids = encode(scorer.tokenizer, texts, teacher)
    mine = length_sorted_batches(ids, p.batch_size)[rank::world]
    rows = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    logits = np.zeros((len(rows), scorer.n_classes), dtype=np.float32)
    done = 0
    # One bar, rank 0's (its share of the texts): several bars on one stderr garble each other.
    with tqdm(total=len(rows), desc=desc, unit=" texts", disable=rank != 0) as bar:
        for index in mine:
            logits[done: done + len(index)] = scorer([ids[i] for i in index])
            done += len(index)
            bar.update(len(index))
    if world == 1:
        out = np.zeros_like(logits)
        out[rows] = logits
        return out
    import torch.distributed as dist

    parts = [None] * world if rank == 0 else None
    dist.gather_object((rows, logits), parts, dst=0)
    if rank != 0:
        return None
    out = np.zeros((len(ids), scorer.n_classes), dtype=np.float32)
    for part_rows, part_logits in parts:
        out[part_rows] = part_logits
    return out


def _worker(texts, model_dir, onnx_model, teacher, p, desc):
    """One process started by predict's elastic launch: the launcher's environment says its rank."""
    return _join_world(texts, model_dir, onnx_model, teacher, p, desc, launched_world())


def _leave_world():
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _join_world(texts, model_dir, onnx_model, teacher, p, desc, world_info):
    import torch.distributed as dist

    rank, local_rank, world = world_info
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    # Joined once per process and left at exit. A second init after destroy_process_group reuses the
    # first group's keys in the launcher's store (torch resets its group count), so a rank could read
    # another's stale address and fail with "connectFullMesh ... Connection refused" (seen in CI when
    # the logits stage predicted twice, for --against-torch).
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave_world)
    return _score(texts, model_dir, onnx_model, teacher, p, desc, rank, local_rank, world, local_world)


def predict(texts: list[str], model_dir: Path, onnx_model: Path | None, teacher: TeacherParams, p: LogitsParams,
            desc: str = "logits") -> np.ndarray | None:
    """The teacher's logits, (n, classes) in the order of `texts`; None on a rank other than 0 of a
    launcher's processes (rank 0 returns them all).

    onnx_model: the exported teacher, used where the back end in use is onnxruntime.
    """
    world_info = launched_world()
    if world_info is not None:
        return _join_world(texts, model_dir, onnx_model, teacher, p, desc, world_info)
    if p.processes == 1:
        return _score(texts, model_dir, onnx_model, teacher, p, desc, 0, 0, 1, 1)
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun --standalone: a rendezvous on a free local port, no restarts (a failed rank is a failed stage).
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=p.processes, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn")
    log.info("logits: %s: %d processes (torch.distributed, %s)", desc, p.processes,
             "nccl" if torch.cuda.is_available() else "gloo")
    results = elastic_launch(config, _worker)(texts, Path(model_dir), onnx_model, teacher, p, desc)
    return results[0]
