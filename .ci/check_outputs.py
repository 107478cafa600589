"""After the README's main command on tiny parameters: every metrics and plots file was written by
this run (newer than the clone, and of the tiny sizes), and DVC says the pipeline is up to date."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

project, started = Path(sys.argv[1]), float(sys.argv[2])
params = yaml.safe_load((project / "params.yaml").read_text())
dvc_yaml = yaml.safe_load((project / "dvc.yaml").read_text())
n_test, n_unlabeled = params["split"]["n_test"], params["split"]["n_unlabeled"]

files = {Path(m) for m in dvc_yaml["metrics"]}
for stage in dvc_yaml["stages"].values():  # a stage's own metrics (test_logits': rate and agreement)
    files |= {Path(next(iter(m)) if isinstance(m, dict) else m) for m in stage.get("metrics", [])}
# every shard of the transfer set scored, by this run
files |= {Path(f"data/teacher_logits/unlabeled/{k}.npz") for k in params["logits"]["shards"]}
for plot in dvc_yaml["plots"]:
    if isinstance(plot, str):  # an image plot: the entry is its path
        files.add(Path(plot))
        continue
    for name, spec in plot.items():
        if "y" in spec:
            files |= {Path(y) for y in spec["y"]}
        else:  # the plot's name is its file or folder (dvclive's record: a folder of one file per metric)
            folder = project / name
            found = sorted(p.relative_to(project) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
            files |= set(found) if found else {Path(name)}
problems = []
for file in sorted(files):
    path = project / file
    if not path.is_file():
        problems.append(f"{file}: missing")
    elif path.stat().st_mtime < started:
        problems.append(f"{file}: not written by this run")
for name in ("baseline", "teacher", "student"):
    metrics = json.loads((project / "metrics" / f"{name}.json").read_text())
    if metrics["n"] != n_test:
        problems.append(f"metrics/{name}.json: n={metrics['n']}, expected {n_test}")
    rows = (project / "metrics" / "predictions" / f"{name}.csv").read_text().splitlines()
    if len(rows) != n_test + 1:
        problems.append(f"metrics/predictions/{name}.csv: {len(rows) - 1} rows, expected {n_test}")
training = project / "metrics" / "teacher_training"
if params["teacher"].get("n_heldout") and not (training / "plots" / "metrics" / "heldout" / "accuracy.tsv").is_file():
    problems.append("metrics/teacher_training: no held-out accuracy, though teacher.n_heldout > 0")
curve = json.loads((project / "metrics" / "learning_curve.json").read_text())
if curve[-1]["n_unlabeled"] != n_unlabeled:
    problems.append(f"metrics/learning_curve.json: last point {curve[-1]['n_unlabeled']}, expected {n_unlabeled}")
inference = json.loads((project / "metrics" / "teacher_inference" / "test.json").read_text())
if params["logits"]["backend"] == "onnxruntime" and inference["agreement_with_torch"]["label_agreement"] < 0.999:
    problems.append(f"metrics/teacher_inference/test.json: ONNX Runtime agrees with torch on "
                    f"{inference['agreement_with_torch']['label_agreement']:.2%} of labels, expected 99.9% or more")
speed = json.loads((project / "metrics" / "speed.json").read_text())
if speed["n_reviews"] != n_test:
    problems.append(f"metrics/speed.json: n_reviews={speed['n_reviews']}, expected {n_test}")
status = subprocess.run([str(project / ".venv" / "bin" / "dvc"), "status", "--json"], cwd=project,
                        capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
if status.returncode != 0 or json.loads(status.stdout or "null") != {}:
    problems.append(f"dvc status is not clean: {status.stdout.strip()} {status.stderr.strip()}")
if problems:
    sys.exit("newcomer check failed:\n  " + "\n  ".join(problems))
print(f"newcomer check: {len(files)} metrics and plots files written by this run, dvc status clean", file=sys.stderr)
