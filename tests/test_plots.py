"""The plots: DVC's custom templates as `dvc plots show` fills them, and the learning curve's PNG."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bert2lr import plots
from bert2lr.plots import write_learning_curve_png

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / ".dvc" / "plots"
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curve_rows(sizes=(20, 40, 60)) -> list[dict]:
    """Rows shaped like metrics/learning_curve.json (what bert2lr.curve writes)."""
    return [{"n_unlabeled": n, "student": 0.7 + i / 20, "student_full": 0.69 + i / 20, "agreement": 0.8 + i / 50,
             "teacher": 0.85, "baseline": 0.6, "baseline_full": 0.61} for i, n in enumerate(sizes)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def vega_plots() -> dict[str, dict]:
    """dvc.yaml's plots that name a template: {plot id: definition}."""
    return {plot_id: spec for entry in DVC_YAML["plots"] if isinstance(entry, dict)
            for plot_id, spec in entry.items() if "template" in spec}


@pytest.mark.parametrize("plot_id", sorted(vega_plots()))
def test_each_custom_template_is_json_with_dvcs_anchors(plot_id):
    name = vega_plots()[plot_id]["template"]
    path = TEMPLATES / f"{name}.json"
    assert path.is_file(), f"dvc.yaml: plot {plot_id!r} names template {name!r}, but {path} is missing"
    text = path.read_text(encoding="utf-8")
    content = json.loads(text)
    assert content["$schema"].startswith("https://vega.github.io/schema/vega-lite/v5")
    # DVC puts the data where <DVC_METRIC_DATA> is (it refuses a template without it), the fields
    # dvc.yaml names at <DVC_METRIC_X> and <DVC_METRIC_Y>, the axis titles at the labels.
    assert content["data"] == {"values": "<DVC_METRIC_DATA>"}
    for anchor in ("X", "Y", "TITLE", "X_LABEL", "Y_LABEL"):
        assert f'"<DVC_METRIC_{anchor}>"' in text, f"{path.name} lacks <DVC_METRIC_{anchor}>"


def test_png_is_a_real_png_of_the_curve(tmp_path):
    out = write_learning_curve_png(curve_rows(), tmp_path / "metrics" / "learning_curve.png")
    assert out == tmp_path / "metrics" / "learning_curve.png"
    width, height = png_size(out)
    assert width >= 600 and height >= 300
    assert 10_000 < out.stat().st_size < 1_000_000
    assert sorted(p.name for p in out.parent.iterdir()) == ["learning_curve.png"]  # no temporaries left


def test_png_is_the_same_bytes_for_the_same_rows(tmp_path):
    """dvc.lock records its hash: a rerun on the same rows must not churn it."""
    a = write_learning_curve_png(curve_rows(), tmp_path / "a.png")
    b = write_learning_curve_png(list(reversed(curve_rows())), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_png_of_a_single_point_and_of_a_row_without_some_series(tmp_path):
    rows = [{k: v for k, v in curve_rows((60,))[0].items() if k != "agreement"}]
    png_size(write_learning_curve_png(rows, tmp_path / "one.png"))


def test_png_is_written_atomically(tmp_path, monkeypatch):
    """A drawing that fails halfway leaves the previous PNG whole and no temporary beside it."""
    from matplotlib.figure import Figure

    target = tmp_path / "learning_curve.png"
    write_learning_curve_png(curve_rows(), target)
    before = target.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(PNG_MAGIC + b"cut short")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        write_learning_curve_png(curve_rows((10, 20)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["learning_curve.png"]


def test_png_refuses_rows_without_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_unlabeled"):
        write_learning_curve_png([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="n_unlabeled"):
        write_learning_curve_png([{"student": 0.5}], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_png_names_the_series_dvc_yaml_plots():
    """The PNG and the vega plot draw the same fields of metrics/learning_curve.json."""
    curve = next(spec for spec in vega_plots().values() if spec["template"] == "learning_curve")
    assert {field for field, _, _ in plots.SERIES} == set(curve["y"]["metrics/learning_curve.json"])
    assert plots.X_FIELD == curve["x"] and plots.X_LABEL == curve["x_label"] and plots.Y_LABEL == curve["y_label"]


def test_matplotlib_is_imported_only_when_drawing():
    code = "import sys, bert2lr.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.fixture(scope="module")
def shown(tmp_path_factory) -> dict:
    """`dvc plots show --json` on a DVC project holding this project's plots and tiny metrics."""
    project = tmp_path_factory.mktemp("plots_project")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    shutil.copytree(TEMPLATES, project / ".dvc" / "plots")
    (project / "dvc.yaml").write_text(yaml.safe_dump({"plots": DVC_YAML["plots"]}))
    metrics = project / "metrics"
    (metrics / "predictions").mkdir(parents=True)
    # a dvclive record of the teacher's fine-tuning, as the teacher stage writes it
    training = metrics / "teacher_training" / "plots" / "metrics" / "train"
    training.mkdir(parents=True)
    (training / "loss.tsv").write_text("step\tloss\n0\t0.69\n1\t0.41\n")
    rows = curve_rows()
    (metrics / "learning_curve.json").write_text(json.dumps(rows))
    write_learning_curve_png(rows, metrics / "learning_curve.png")
    pairs = [("neg", "neg"), ("neg", "pos"), ("pos", "pos"), ("pos", "pos")]
    for model in ("baseline", "teacher", "student"):
        lines = ["id,actual,predicted"] + [f"r{i},{a},{p}" for i, (a, p) in enumerate(pairs)]
        (metrics / "predictions" / f"{model}.csv").write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=project,
                            capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "errors" not in shown, shown["errors"]
    return shown["data"]


def only(shown: dict, template: str) -> dict:
    plot_id = next(i for i, spec in vega_plots().items() if spec["template"] == template)
    (plot,) = shown[plot_id]
    assert plot["type"] == "vega"
    assert "<DVC_METRIC_" not in json.dumps(plot["content"]), "an anchor was left unfilled"
    return plot["content"]


def test_dvc_draws_the_learning_curve_on_a_log_axis_one_colour_per_series(shown):
    spec = only(shown, "learning_curve")
    x, y, colour = spec["encoding"]["x"], spec["encoding"]["y"], spec["encoding"]["color"]
    assert x["field"] == "n_unlabeled" and x["scale"]["type"] == "log"
    assert x["axis"]["title"] == "unlabeled reviews the student learned from (log scale)"
    assert y["axis"]["title"] == "accuracy"
    # DVC stacks the y fields into one column and names each row's field; the template colours by it.
    assert y["field"] == "dvc_inferred_y_value" and colour["field"] == "series"
    values = spec["data"]["values"]
    assert {v["field"] for v in values} == {field for field, _, _ in plots.SERIES}
    assert len(values) == len(plots.SERIES) * len(curve_rows())
    lookup = next(t for t in spec["transform"] if "lookup" in t)["from"]["data"]["values"]
    names = {entry["field"]: entry["series"] for entry in lookup}
    assert all(names[field] == name for field, name, _ in plots.SERIES)  # the PNG's legend reads the same
    assert len(set(colour["scale"]["range"])) >= len(plots.SERIES)


def test_dvc_draws_one_labeled_confusion_matrix_per_model(shown):
    spec = only(shown, "confusion_by_model")
    assert spec["facet"]["column"]["field"] == "model"
    encoding = spec["spec"]["encoding"]
    assert (encoding["x"]["field"], encoding["x"]["axis"]["title"]) == ("predicted", "predicted class")
    assert (encoding["y"]["field"], encoding["y"]["axis"]["title"]) == ("actual", "actual class")
    assert {v["filename"] for v in spec["data"]["values"]} == {"baseline.csv", "teacher.csv", "student.csv"}


def test_dvc_shows_the_png_as_an_image_plot(shown):
    (plot,) = shown["metrics/learning_curve.png"]
    assert plot["type"] == "image" and png_size(Path(plot["url"]))[0] > 0
