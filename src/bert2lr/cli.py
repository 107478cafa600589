"""The `bert2lr` command: one subcommand per pipeline stage, as dvc.yaml calls them."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bert2lr.errors import UserError
from bert2lr.params import check_teacher_length, load_params, parameters_table

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Distil a fine-tuned BERT teacher into a bag-of-n-grams linear student.")
log = logging.getLogger("bert2lr")

In = Annotated[Path, typer.Option(help="input path")]
Out = Annotated[Path, typer.Option(help="output path")]
ParamsFile = Annotated[Path, typer.Option("--params", help="parameters file")]
PARAMS = Path("params.yaml")
Classes = Annotated[Optional[Path], typer.Option(
    help="classes.json, the class names by label id, as prepare writes it [default: IMDB's neg, pos]")]


def _classes(path: Optional[Path]) -> tuple[str, ...]:
    from bert2lr.classes import CLASS_NAMES, read_classes

    return CLASS_NAMES if path is None else read_classes(path)


def _both_or_neither(sentences: Optional[Path], sentence_logits: Optional[Path]) -> None:
    if (sentences is None) != (sentence_logits is None):
        raise UserError("--sentences and --sentence-logits go together: the sentences and the teacher's logits on "
                        "them")


@app.command()
def fetch(out_dir: Out, params: ParamsFile = PARAMS) -> None:
    """Bring the IMDB archive into OUT_DIR from the first of fetch.sources that has it (when data.path
    is that archive); with data.source table or an archive elsewhere, OUT_DIR is left empty."""
    from bert2lr.params import IMDB_ARCHIVE
    from bert2lr.stages.fetch import fetch as run

    p = load_params(params)
    archive = out_dir / Path(IMDB_ARCHIVE).name
    out_dir.mkdir(parents=True, exist_ok=True)
    if p.data.source != "imdb" or Path(p.data.path) != archive:
        log.info("fetch: nothing to fetch: data.source is %s, data.path %s", p.data.source, p.data.path)
        return
    run([(s.source, s.hash) for s in p.fetch.sources], archive)


@app.command()
def prepare(data: Annotated[Path, typer.Option(help="the IMDB archive or your labeled table (data.path)")],
            unlabeled_data: Annotated[Path, typer.Option(
                help="data.unlabeled_path: the same as --data to sample the transfer set from it, else a table")],
            test_data: Annotated[Path, typer.Option(
                help="data.test_path: the same as --data to hold a test sample out of it, else a table")],
            out_dir: Out, params: ParamsFile = PARAMS) -> None:
    """Sample the labeled, unlabeled and test splits from the archive (or your table)."""
    from bert2lr.stages.prepare import prepare as run

    p = load_params(params)
    run(data, out_dir, p.split, p.data, unlabeled_path=None if unlabeled_data == data else unlabeled_data,
        test_path=None if test_data == data else test_data, shard_size=p.logits.shard_size)


@app.command()
def baseline(labeled: In, out: Out, params: ParamsFile = PARAMS, classes: Classes = None) -> None:
    """Train the n-gram logistic-regression baseline on the labeled split."""
    from bert2lr.files import read_reviews
    from bert2lr.stages.baseline import train_baseline

    names = _classes(classes)
    reviews = read_reviews(labeled, need_labels=True, n_classes=len(names))
    train_baseline([r["text"] for r in reviews], [r["label"] for r in reviews], out,
                   load_params(params).baseline, names)


@app.command()
def teacher(labeled: In, out: Out,
            training: Annotated[Path, typer.Option(help="folder for dvclive's record of the fine-tuning")],
            params: ParamsFile = PARAMS, classes: Classes = None) -> None:
    """Fine-tune the BERT teacher on the labeled split (teacher.source fine_tune); or check and record
    an already fine-tuned classifier (classifier) or a table of precomputed scores (scores)."""
    everything = load_params(params)
    p = everything.teacher
    if p.source != "scores":  # scores have no model to read the reviews
        check_teacher_length(p, source=str(params))
    from bert2lr.files import read_reviews
    from bert2lr.stages.teacher import check_classifier, record_scores, train_teacher

    names = _classes(classes)
    if p.source == "classifier":
        check_classifier(out, training, p, names)
    elif p.source == "scores":
        # null: the ids data.id_column gives, so that the scores may be columns of the data table itself
        record_scores(out, training, p, names, p.scores_id_column or everything.data.id_column)
    else:
        reviews = read_reviews(labeled, need_labels=True, n_classes=len(names))
        train_teacher([r["text"] for r in reviews], [r["label"] for r in reviews], out, training, p, names)


@app.command()
def export(teacher: In, out: Out, params: ParamsFile = PARAMS) -> None:
    """Export the teacher to ONNX for ONNX Runtime (logits.backend), int8 where logits.quantize says."""
    from bert2lr.stages.export import export_teacher

    export_teacher(teacher, out, load_params(params).logits)


@app.command()
def logits(teacher: In, onnx: In, reviews: In, out: Out,
           info: Annotated[Path, typer.Option(help="where to write the inference rate (JSON)")],
           against_torch: Annotated[bool, typer.Option(
               help="also score in torch and record the back end's label agreement with it")] = False,
           test_half: Annotated[bool, typer.Option(
               help="these are the whole test half: scored only where logits.test_half is true, else an "
                    "empty file")] = False,
           params: ParamsFile = PARAMS) -> None:
    """Cache the teacher's raw logits on one split of reviews (the test sample or a transfer-set shard).

    logits.processes > 1 starts that many processes (torch.distributed); under torchrun the
    launcher's processes share the work instead.
    """
    p = load_params(params)
    check_teacher_length(p.teacher, teacher, str(params))  # the fine-tuned folder is what runs
    from bert2lr.stages.logits import teacher_logits

    teacher_logits(teacher, onnx, reviews, out, info, p.teacher, p.logits, against_torch,
                   skip=test_half and not p.logits.test_half)


@app.command()
def sentences(test: In, unlabeled: In,
              test_out: Annotated[Path, typer.Option(help="where to write the test sample's sentences (JSON Lines)")],
              transfer_out: Annotated[Path, typer.Option(
                  help="where to write the transfer set's sentences (JSON Lines; empty for none)")],
              params: ParamsFile = PARAMS, classes: Classes = None) -> None:
    """Sample sentences (short_texts) from the test sample, labeled with their review's label, and from
    the transfer set, for the short-text measurement and the student's transfer set."""
    from bert2lr.stages.sentences import sentences_stage

    p = load_params(params)
    sentences_stage(test, unlabeled, test_out, transfer_out, p.short_texts, len(_classes(classes)),
                    scores_teacher=p.teacher.source == "scores")


@app.command()
def student(unlabeled: In, teacher_logits: In, labeled: In, out: Out, params: ParamsFile = PARAMS,
            classes: Classes = None,
            sentences: Annotated[Optional[Path], typer.Option(
                help="the transfer set's sentences, added to it (JSON Lines; an empty file adds none)")] = None,
            sentence_logits: Annotated[Optional[Path], typer.Option(
                help="the teacher's logits on --sentences")] = None) -> None:
    """Fit the student to the teacher's logits on the transfer set (and its sentences, and the labeled split)."""
    from bert2lr.stages.student import student_stage

    _both_or_neither(sentences, sentence_logits)
    student_stage(unlabeled, teacher_logits, labeled, out, load_params(params).student, _classes(classes),
                  sentences, sentence_logits)


@app.command()
def validate(unlabeled: In, teacher_logits: In, labeled: In, out: Out, params: ParamsFile = PARAMS,
             classes: Classes = None,
             sentences: Annotated[Optional[Path], typer.Option(
                 help="the transfer set's sentences, as the student stage has them")] = None,
             sentence_logits: Annotated[Optional[Path], typer.Option(
                 help="the teacher's logits on --sentences")] = None) -> None:
    """Cross-validate the student's settings and the baseline on the labeled split; decide the gate."""
    from bert2lr.stages.validate import validate_stage

    _both_or_neither(sentences, sentence_logits)
    p = load_params(params)
    validate_stage(unlabeled, teacher_logits, labeled, out, p.student, p.baseline, p.validation, _classes(classes),
                   sentences, sentence_logits)


@app.command()
def evaluate(test: In, test_full: In, baseline: In, student: In, teacher_logits: In,
             validation: Annotated[Path, typer.Option(help="the validate stage's record, with the gate")],
             metrics_dir: Out,
             teacher_half_logits: Annotated[Optional[Path], typer.Option(
                 help="the teacher's logits on the whole test half (an empty file: not scored)")] = None) -> None:
    """Score the three models on the same test reviews for the report; print them."""
    from bert2lr.scoring import render_side_by_side
    from bert2lr.stages.evaluate import evaluate as run

    typer.echo(render_side_by_side(run(test, test_full, baseline, student, teacher_logits, metrics_dir,
                                       validation, teacher_half_logits)))


@app.command("short-texts")
def short_texts(sentences: In, sentence_logits: In, test: In, teacher_logits: In, student: In, out: Out) -> None:
    """Teacher and student on the test sample's sentences (labeled with their review's label) and on its
    whole reviews: accuracies, their ratio and agreement; print them as JSON."""
    from bert2lr.stages.short_texts import short_texts as run

    typer.echo(json.dumps(run(sentences, sentence_logits, test, teacher_logits, student, out), indent=2))


@app.command()
def assemble(student: In, metrics: In,
             data: Annotated[Path, typer.Option(help="data.path: the IMDB archive or the labeled table")],
             unlabeled_data: Annotated[Path, typer.Option(help="data.unlabeled_path")],
             test_data: Annotated[Path, typer.Option(help="data.test_path")],
             labeled: In, unlabeled: In, test: In, test_full: In,
             teacher: In, teacher_logits: In, out: Out, params: ParamsFile = PARAMS,
             sentences: Annotated[Optional[Path], typer.Option(
                 help="the transfer set's sentences the student learned from too (JSON Lines)")] = None,
             sentence_logits: Annotated[Optional[Path], typer.Option(
                 help="the teacher's logits on --sentences")] = None) -> None:
    """Pack the evaluated student with its lineage record (data, teacher, settings, metrics, gate)."""
    from bert2lr.stages.assemble import assemble as run

    _both_or_neither(sentences, sentence_logits)
    p = load_params(params)
    run(student, metrics, p.data.source, {"labeled": data, "unlabeled": unlabeled_data, "test": test_data},
        {"labeled": labeled, "unlabeled": unlabeled, "test": test, "test_full": test_full},
        teacher, teacher_logits, out, p.student, sentences, sentence_logits)


@app.command()
def report(metrics_dir: Annotated[Path, typer.Option(help="folder of the metrics files")] = Path("metrics")) -> None:
    """Print the baseline, teacher and student classification reports side by side."""
    from bert2lr.files import read_json
    from bert2lr.scoring import MODELS, render_side_by_side

    typer.echo(render_side_by_side(
        {name: read_json(metrics_dir / f"{name}.json", f"{name} metrics") for name in MODELS}))


@app.command()
def curve(unlabeled: In, teacher_logits: In, labeled: In, test: In, test_full: In, teacher_test_logits: In,
          baseline: In, out: Out,
          png: Annotated[Optional[Path], typer.Option(help="where to draw the curve as a PNG (optional)")] = None,
          params: ParamsFile = PARAMS, classes: Classes = None) -> None:
    """Student accuracy against the number of unlabeled reviews (curve.sizes)."""
    from bert2lr.stages.curve import learning_curve

    p = load_params(params)
    learning_curve(unlabeled, teacher_logits, labeled, test, test_full, teacher_test_logits, baseline, out,
                   p.student, p.curve, png, _classes(classes))


@app.command()
def benchmark(teacher: In, student: In, test: In, out: Out, params: ParamsFile = PARAMS) -> None:
    """Teacher against student: throughput, latency, size and peak memory on the test reviews."""
    p = load_params(params)
    check_teacher_length(p.teacher, teacher, str(params))
    from bert2lr.stages.speed import benchmark as run

    typer.echo(json.dumps(run(teacher, student, test, out, p.teacher, p.logits.batch_size), indent=2))


@app.command("params")
def show_params(
    params: ParamsFile = PARAMS,
    markdown: Annotated[bool, typer.Option("--markdown", help="print the table of every parameter instead")] = False,
) -> None:
    """Print the parameters a stage would use (the file's, defaults filled in) as JSON."""
    if markdown:
        typer.echo(parameters_table(), nl=False)
    else:
        typer.echo(json.dumps(load_params(params).model_dump(), indent=2))


Student = Annotated[Path, typer.Option("--model", help="student folder or model.npz")]
Ungated = Annotated[bool, typer.Option("--allow-ungated", help="use a student that failed its quality gate")]
STUDENT = Path("models/student")


@app.command()
def audit(
    path: Annotated[Path, typer.Argument(help="student folder or model.npz")] = STUDENT,
    as_json: Annotated[bool, typer.Option("--json", help="print the lineage record as JSON")] = False,
    reviews: Annotated[Optional[str], typer.Option(help="list the ids of the 'labeled' or 'unlabeled' reviews")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="recompute the workspace's hashes and compare")] = False,
) -> None:
    """Tell which data, teacher and settings produced a student."""
    from bert2lr.serving import audit as auditing
    from bert2lr.serving.deploy import read_lineage

    lineage = read_lineage(path)
    if reviews is not None:
        if reviews not in lineage["reviews"]:
            raise UserError(f"--reviews must be one of {', '.join(lineage['reviews'])}, got {reviews!r}")
        typer.echo("\n".join(lineage["reviews"][reviews]))
    elif verify:
        results = auditing.verify(path)
        for ok, what, detail in results:
            typer.echo(f"{'ok' if ok else 'MISMATCH':<9}{what:<17}{detail}")
        failed = [what for ok, what, _ in results if not ok]
        if failed:
            typer.echo(f"bert2lr: verification failed for: {', '.join(failed)}", err=True)
            raise typer.Exit(1)
    elif as_json:
        typer.echo(json.dumps({k: v for k, v in lineage.items() if k != "reviews"}, indent=2))
    else:
        typer.echo(auditing.describe(lineage))


@app.command()
def predict(
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts (default: one per line on stdin)")] = None,
    file: Annotated[Optional[list[Path]], typer.Option("--file", "-f", help="a file holding one text")] = None,
    model: Student = STUDENT,
    allow_ungated: Ungated = False,
) -> None:
    """Classify texts with the student; JSON Lines with the label and every class's probability
    (two classes: also the label's probability and the logit)."""
    from bert2lr.serving.deploy import load_student, predictions

    student, _ = load_student(model, allow_ungated)
    batch = list(texts or [])
    for path in file or []:
        try:
            batch.append(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    if not texts and not file:
        batch = [line.rstrip("\n") for line in sys.stdin]
    for row in predictions(student, batch):
        typer.echo(json.dumps(row))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    model: Student = STUDENT,
    allow_ungated: Ungated = False,
    max_batch: Annotated[int, typer.Option(min=1, help="most texts per request")] = 256,
    max_chars: Annotated[int, typer.Option(min=1, help="most characters per text")] = 100_000,
    max_body_bytes: Annotated[Optional[int], typer.Option(
        min=1, help="largest request body, refused with 413 before it is read "
                    "[default: a full batch of the longest ASCII texts, max-batch x (max-chars + 16) + 4096]")] = None,
) -> None:
    """Serve the student over HTTP: POST /predict, GET /health, GET /model."""
    try:
        import uvicorn

        from bert2lr.serving.serve import create_app
    except ImportError:
        raise UserError("serving needs FastAPI and uvicorn: pip install 'bert2lr[serve]'") from None
    uvicorn.run(create_app(model, allow_ungated, max_batch, max_chars, max_body_bytes), host=host, port=port,
                log_level="warning", access_log=False)


def main() -> None:
    # Nothing downloads weights at run time: every load passes local_files_only, and the Hugging Face
    # libraries are told so too, here at the entry, before a command imports them (they read it once).
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
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
