"""The `bert2lr` command: one subcommand per pipeline stage, as dvc.yaml calls them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from bert2lr.errors import UserError
from bert2lr.params import load_params

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Distil a fine-tuned BERT teacher into a bag-of-n-grams linear student.")
log = logging.getLogger("bert2lr")

In = Annotated[Path, typer.Option(help="input path")]
Out = Annotated[Path, typer.Option(help="output path")]
ParamsFile = Annotated[Path, typer.Option("--params", help="parameters file")]
PARAMS = Path("params.yaml")


@app.command()
def fetch(out: Out, params: ParamsFile = PARAMS) -> None:
    """Bring the IMDB archive to OUT from the first of fetch.sources that has it."""
    from bert2lr.fetch import fetch as run

    run(load_params(params).fetch.sources, out)


@app.command()
def prepare(archive: In, out_dir: Out, params: ParamsFile = PARAMS) -> None:
    """Sample the labeled, unlabeled and test splits from the archive."""
    from bert2lr.prepare import prepare as run

    run(archive, out_dir, load_params(params).split)


@app.command()
def baseline(labeled: In, out: Out, params: ParamsFile = PARAMS) -> None:
    """Train the n-gram logistic-regression baseline on the labeled split."""
    from bert2lr.baseline import train_baseline
    from bert2lr.files import read_reviews

    reviews = read_reviews(labeled, need_labels=True)
    train_baseline([r["text"] for r in reviews], [r["label"] for r in reviews], out,
                   load_params(params).baseline)


@app.command()
def teacher(labeled: In, out: Out, params: ParamsFile = PARAMS) -> None:
    """Fine-tune the BERT teacher on the labeled split."""
    p = load_params(params).teacher
    from bert2lr.files import read_reviews
    from bert2lr.teacher import train_teacher

    reviews = read_reviews(labeled, need_labels=True)
    train_teacher([r["text"] for r in reviews], [r["label"] for r in reviews], out, p)


@app.command()
def logits(teacher: In, unlabeled: In, test: In, out_dir: Out, params: ParamsFile = PARAMS) -> None:
    """Cache the teacher's raw logits on the unlabeled and test splits."""
    p = load_params(params)
    from bert2lr.logits import teacher_logits

    teacher_logits(teacher, {"unlabeled": unlabeled, "test": test}, out_dir, p.teacher, p.logits)


@app.command()
def student(unlabeled: In, teacher_logits: In, labeled: In, test: In, test_full: In, baseline: In,
            teacher: In, archive: In, out: Out, params: ParamsFile = PARAMS) -> None:
    """Fit the student to the teacher's logits and write it with its lineage record."""
    from bert2lr.student import student_stage

    student_stage(unlabeled, teacher_logits, labeled, test, test_full, baseline, teacher, archive, out,
                  load_params(params).student)


@app.command()
def evaluate(test: In, test_full: In, baseline: In, student: In, teacher_logits: In,
             metrics_dir: Out) -> None:
    """Score the three models on the same test reviews; print their reports."""
    from bert2lr.evaluate import evaluate as run
    from bert2lr.evaluate import render_side_by_side

    typer.echo(render_side_by_side(run(test, test_full, baseline, student, teacher_logits, metrics_dir)))


@app.command()
def report(metrics_dir: Annotated[Path, typer.Option(help="folder of the metrics files")] = Path("metrics")) -> None:
    """Print the baseline, teacher and student classification reports side by side."""
    from bert2lr.evaluate import MODELS, render_side_by_side
    from bert2lr.files import read_json

    typer.echo(render_side_by_side(
        {name: read_json(metrics_dir / f"{name}.json", f"{name} metrics") for name in MODELS}))


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        app()
    except UserError as exc:
        typer.echo(f"bert2lr: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("bert2lr: interrupted", err=True)
        sys.exit(130)
