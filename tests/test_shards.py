"""The transfer set in shards, one logits@k stage each: a larger transfer set scores only its new
shards, a killed run resumes from the shard in flight, and two clones sharing one DVC remote split
the shards and meet through the run cache. Real `dvc repro` on the tiny project (dvc_project)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from bert2lr.files import read_logits
from dvc_project import ENV, SHARDS, TOOLS, changed, commit, copy_project, ran, run, set_param

pytestmark = pytest.mark.slow  # real dvc repro


@pytest.fixture
def project(reproduced, tmp_path):
    return copy_project(reproduced[0], tmp_path / "project")


def shard_hashes(project) -> dict[str, str]:
    """{stage: md5 of its logits file} from dvc.lock, for the logits@k stages."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {name: stage["outs"][0]["md5"] for name, stage in lock.items() if name.startswith("logits@")}


def scoring(shard: str) -> bool:
    """Whether a `bert2lr logits` process is scoring this shard file now."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if shard.encode() in cmdline.read_bytes() and b"logits" in cmdline.read_bytes():
                return True
        except OSError:  # the process ended meanwhile
            continue
    return False


def test_first_repro_scores_the_transfer_set_in_shards(reproduced):
    project = reproduced[0]
    assert SHARDS <= ran(reproduced[1])
    sizes = [len((project / "data/splits/unlabeled" / f"{k}.jsonl").read_text().splitlines()) for k in range(3)]
    assert sizes == [8, 8, 4]
    for k, size in enumerate(sizes):
        with np.load(project / "data/teacher_logits/unlabeled" / f"{k}.npz") as npz:
            assert npz["logits"].shape == (size, 2)


def test_a_larger_transfer_set_scores_only_the_new_shards(project):
    """20 -> 32 reviews, 8 a shard: shards 0 and 1 are kept; 2 grows from 4 to 8 reviews; 3 is new."""
    before = shard_hashes(project)
    set_param(project, "split", "n_unlabeled", 32)
    set_param(project, "logits", "shards", [0, 1, 2, 3])
    assert changed(project) == {"prepare", "logits@3"}  # logits@3 is new: its shard does not exist yet
    reran = ran(run("dvc", "repro", cwd=project).stdout)
    assert {"logits@2", "logits@3", "student"} <= reran
    assert not reran & {"logits@0", "logits@1", "test_logits", "teacher", "export", "baseline"}
    after = shard_hashes(project)
    assert {k: after[k] for k in ("logits@0", "logits@1")} == {k: before[k] for k in ("logits@0", "logits@1")}
    assert json.loads((project / "models/student/lineage.json").read_text())["splits"]["unlabeled"]["n_reviews"] == 32
    assert changed(project) == set()


def test_a_shard_list_that_does_not_fit_the_transfer_set_is_refused(project):
    set_param(project, "split", "n_unlabeled", 32)  # needs shards [0, 1, 2, 3]
    result = run("dvc", "repro", cwd=project, check=False)
    assert result.returncode != 0
    assert "'logits.shards' must be [0, 1, 2, 3] for split.n_unlabeled 32 and logits.shard_size 8" in result.stderr


def test_a_killed_run_resumes_from_the_shard_it_was_scoring(project):
    """Kill `dvc repro` while it scores shard 1: the rerun keeps logits@0 and scores the rest."""
    set_param(project, "logits", "batch_size", 4)  # every shard's logits must be made again
    commit(project, "smaller batches")
    command = TOOLS["dvc"] + ["repro"]
    repro = subprocess.Popen(command, cwd=project, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    # Killed while logits@1's command runs, as a kill mostly finds DVC: waiting for a stage. (A kill
    # at the instant DVC rewrites its .dvc/tmp/rwlock leaves that file empty, and DVC refuses to run
    # until it is removed: treeverse/dvc#7615; the README says so.)
    while time.monotonic() < deadline and not scoring("data/splits/unlabeled/1.jsonl"):
        assert repro.poll() is None, repro.stdout.read()
        time.sleep(0.05)
    os.killpg(repro.pid, signal.SIGKILL)
    first = repro.communicate()[0]
    assert "Running stage 'logits@1'" in first and "Running stage 'student'" not in first
    for shard in (project / "data/teacher_logits/unlabeled").glob("*.npz"):
        read_logits(shard)  # whole: the old file or the new one, never half of one
    assert "logits@0" not in changed(project)
    reran = ran(run("dvc", "repro", cwd=project).stdout)
    # (the student reruns only if the new batches changed the logits' bytes; on the tiny BERT they do not)
    assert "logits@0" not in reran and "logits@2" in reran
    assert changed(project) == set()


def test_two_clones_split_the_shards_and_meet_through_the_remote(project, tmp_path):
    """Clones A and B each score some shards and push them with the run cache; A then pulls the run
    cache, and its `dvc repro --pull` takes B's shards from the remote instead of scoring them."""
    remote = tmp_path / "remote"
    run("dvc", "remote", "add", "-d", "shared", str(remote), cwd=project)
    run("dvc", "push", cwd=project)
    set_param(project, "logits", "batch_size", 4)  # new logits for every shard, nothing else upstream
    commit(project, "remote, and smaller batches")
    a, b = tmp_path / "a", tmp_path / "b"
    for clone in (a, b):
        run("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    assert ran(run("dvc", "repro", "--pull", "logits@0", cwd=a).stdout) == {"logits@0"}
    run("dvc", "push", "--run-cache", cwd=a)
    assert ran(run("dvc", "repro", "--pull", "logits@1", "logits@2", cwd=b).stdout) == {"logits@1", "logits@2"}
    run("dvc", "push", "--run-cache", cwd=b)
    # The run cache's records come with `pull --run-cache` (repro --pull fetches only the outputs they name).
    run("dvc", "pull", "--run-cache", cwd=a)
    meet = run("dvc", "repro", "--pull", cwd=a).stdout
    assert not ran(meet) & SHARDS, meet
    assert "Stage 'logits@1' is cached - skipping run, checking out outputs" in meet
    for k in (1, 2):
        shard = f"data/teacher_logits/unlabeled/{k}.npz"
        assert (a / shard).read_bytes() == (b / shard).read_bytes()
    assert changed(a) == set()
