"""The ``probekit`` command line: the only module that prints.

Bad input ends with one line on stderr (``error: ...``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from probekit import __version__
from probekit.errors import InputError
from probekit.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from probekit.linear import DEFAULT_C_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL, DEFAULT_VAL_SIZE
from probekit.neighbors import BACKENDS, METRICS
from probekit.report import write_atomically


def _number_list(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            numbers = tuple(kind(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got '{value}'") from None
        if not numbers:
            raise click.BadParameter("expected at least one number")
        return numbers

    return parse


class _Progress:
    """Progress lines on stderr, redrawn in place; silent when off or not a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.stage = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.stage not in (None, stage):
            click.echo("", err=True)
        self.stage = stage
        click.echo(f"\r{stage}: {done}/{total}", err=True, nl=False)

    def close(self) -> None:
        if self.enabled and self.stage is not None:
            click.echo("", err=True)


class _OneLineErrors(click.Group):
    """A click group whose usage errors (bad option values, missing arguments) end like every
    other error: one ``error: ...`` line on stderr and exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `probekit`: show the help
                click.echo(error.format_message(), err=True)
                sys.exit(error.exit_code)
            _fail(error.format_message(), status=error.exit_code)
        except click.Abort:
            _fail("aborted", status=1)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probekit")
def cli():
    """How good is an embedding space? Linear + kNN dual probe with confidence intervals."""


@cli.command()
@click.argument("embeddings", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--test-embeddings", type=click.Path(dir_okay=False, path_type=Path),
              help="Embeddings of a given test split (the paper's setting).")
@click.option("--test-labels", type=click.Path(dir_okay=False, path_type=Path),
              help="Labels of the given test split.")
@click.option("--k", "k", default=",".join(map(str, DEFAULT_K)), show_default=True,
              callback=_number_list(int), help="Comma-separated k values of the kNN probe.")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True,
              help="Similarity of the kNN probe.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_TEMPERATURE, show_default=True,
              help="T of the weighted kNN vote exp(sim / T).")
@click.option("--loo", is_flag=True,
              help="kNN leave-one-out over all samples (each classified by the others).")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="Test fraction of the stratified holdout split.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Stratified k-fold instead of a holdout.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the splits and the bootstrap.")
@click.option("--c-grid", default=None, callback=_number_list(float),
              help="Comma-separated C values of the linear probe [default: 1e-4 ... 1e4, 9].")
@click.option("--val-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_VAL_SIZE, show_default=True,
              help="Validation fraction of train used to choose C.")
@click.option("--max-iter", type=click.IntRange(min=1), default=DEFAULT_MAX_ITER,
              show_default=True, help="L-BFGS iterations per logistic-regression fit.")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TOL,
              show_default=True, help="L-BFGS gradient tolerance (scikit-learn's default; "
              "lower it for few samples per dimension).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="Neighbour-search backend.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=1), default=1000,
              show_default=True,
              help="Bootstrap resamples of each accuracy CI.")
@click.option("--geometry/--no-geometry", default=True, show_default=True,
              help="Geometry diagnostics of the training rows.")
@click.option("--geometry-sample", type=click.IntRange(min=2), default=5000, show_default=True,
              help="Query sample of the pairwise geometry diagnostics.")
@click.option("--extra", default="", help="Comma-separated opt-in diagnostics: "
              "mle_intrinsic_dim, kmeans, trustworthiness, isoscore.")
@click.option("--key", default=None, help="Array name inside .npz embedding files.")
@click.option("--label-key", default=None, help="Array name inside .npz label files.")
@click.option("--label-column", default=None, help="Label column of .csv/.tsv/.parquet labels.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full report as JSON here (and the figure data beside it, .npz).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write the figures into this folder (adds the 2-D map).")
@click.option("--plot-format", type=click.Choice(["png", "svg", "pdf"]), default="png",
              show_default=True, help="File format of the figures.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write one self-contained HTML report here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def evaluate(embeddings, labels, test_embeddings, test_labels, k, metric, temperature, loo,
             test_size, folds, seed, c_grid, val_size, max_iter, tol, backend, n_bootstrap,
             geometry, geometry_sample, extra, key, label_key, label_column, out, plots_dir,
             plot_format, html_path, quiet):
    """Run the dual probe on EMBEDDINGS (N x D: .npy .npz .csv .tsv .parquet) and LABELS
    (N labels: .npy .npz .txt .csv .tsv .parquet) and print the summary."""
    from probekit.data import load_embeddings, load_labels
    from probekit.dual import dual_probe

    progress = _Progress(not quiet)
    try:
        if (test_embeddings is None) != (test_labels is None):
            raise InputError("give --test-embeddings and --test-labels together")
        X = load_embeddings(embeddings, key=key)
        y = load_labels(labels, key=label_key, column=label_column)
        _check_header_row(X, y, labels)
        X_test = y_test = None
        if test_embeddings is not None:
            X_test = load_embeddings(test_embeddings, key=key)
            y_test = load_labels(test_labels, key=label_key, column=label_column)
        report = dual_probe(
            X, y, X_test=X_test, y_test=y_test, k=k, metric=metric, temperature=temperature,
            loo=loo, C=c_grid or DEFAULT_C_GRID, val_size=val_size, test_size=test_size,
            folds=folds, seed=seed, backend=backend, n_bootstrap=n_bootstrap,
            max_iter=max_iter, tol=tol, geometry=geometry, geometry_sample=geometry_sample,
            extra=[name.strip() for name in extra.split(",") if name.strip()],
            projection=plots_dir is not None or html_path is not None, progress=progress,
        )
        progress.close()
        files = {"embeddings": embeddings, "labels": labels, "test_embeddings": test_embeddings,
                 "test_labels": test_labels}
        report = dataclasses.replace(report, input={**report.input, "files": {
            role: _describe_file(path) for role, path in files.items() if path is not None}})
        _write_outputs(report, out, plots_dir, plot_format, html_path, quiet=quiet)
    except InputError as error:
        progress.close()
        _fail(str(error))
    except OSError as error:
        progress.close()
        _fail_os(error)
    click.echo(report.to_markdown(), nl=False)
    if out is not None and not quiet:
        click.echo(f"report written to {out}", err=True)


@cli.command()
@click.argument("embeddings", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True,
              help="Similarity of the neighbour graph.")
@click.option("--sample-size", type=click.IntRange(min=2), default=5000, show_default=True,
              help="Query sample of the sampled diagnostics (uniformity, MAP@R).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--extra", default="", help="Comma-separated opt-in diagnostics: "
              "mle_intrinsic_dim, kmeans, trustworthiness, isoscore.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--key", default=None, help="Array name inside .npz embedding files.")
@click.option("--label-key", default=None, help="Array name inside .npz label files.")
@click.option("--label-column", default=None, help="Label column of .csv/.tsv/.parquet labels.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the diagnostics as JSON here.")
def diagnose(embeddings, labels, metric, sample_size, seed, extra, backend, key, label_key,
             label_column, out):
    """Geometry diagnostics of EMBEDDINGS, with LABELS when given (label-free keys only
    without them)."""
    from probekit.data import load_embeddings, load_labels
    from probekit.geometry import diagnose as run_diagnose

    try:
        X = load_embeddings(embeddings, key=key)
        y = None
        if labels is not None:
            y = load_labels(labels, key=label_key, column=label_column)
            _check_header_row(X, y, labels)
        result = run_diagnose(X, y, metric=metric, sample_size=sample_size, seed=seed,
                              extra=[name.strip() for name in extra.split(",") if name.strip()],
                              backend=backend)
        if out is not None:
            write_atomically(out, json.dumps(result.to_dict(), indent=2) + "\n")
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)
    click.echo(result.to_markdown(f"Geometry of {embeddings.name}"), nl=False)


@cli.command()
@click.argument("report_path", metavar="REPORT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the figures.")
@click.option("--plot-format", type=click.Choice(["png", "svg", "pdf"]), default="png",
              show_default=True)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the self-contained HTML report here.")
def plot(report_path, plots_dir, plot_format, html_path):
    """Re-render the figures of a saved REPORT (.json with its .npz sidecar) without
    recomputing the probes."""
    from probekit.report import Report

    try:
        if not report_path.is_file():
            raise InputError(f"report file not found: {report_path}")
        report = Report.load(report_path)
        if not report.arrays:
            raise InputError(f"{report_path.with_suffix('.npz').name} (the figure data saved "
                             "beside the report) is missing")
        _write_outputs(report, None, plots_dir, plot_format, html_path)
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)


@cli.command()
@click.argument("embeddings", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--apply", "apply_paths", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Embeddings to pass through the tuned adapter too (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the tuned embeddings and the adapter.")
@click.option("--objective", type=click.Choice(["supcon", "ce"]), default="supcon",
              show_default=True, help="Supervised contrastive, or the cross-entropy baseline.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--m", "m", type=click.IntRange(min=2), default=4, show_default=True,
              help="Samples per class in a batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3,
              show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.07,
              show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--key", default=None, help="Array name inside .npz embedding files.")
@click.option("--label-column", default=None, help="Label column of .csv/.tsv/.parquet labels.")
@click.option("--quiet", "-q", is_flag=True, help="No per-epoch loss on stderr.")
def tune(embeddings, labels, apply_paths, out_dir, objective, epochs, batch_size, m, lr,
         temperature, seed, key, label_column, quiet):
    """Tune a small residual adapter on frozen EMBEDDINGS with LABELS (supervised contrastive
    by default) and write the tuned embeddings to --out, ready for probekit evaluate."""
    from probekit.data import check_lengths, load_embeddings, load_labels, to_float32

    try:
        try:
            import torch

            from tuner.adapter import AdapterConfig, apply_adapter, train_adapter
        except ImportError:
            raise InputError("probekit tune needs torch: pip install 'probekit[tuner]'") from None
        X = load_embeddings(embeddings, key=key)
        y = load_labels(labels, column=label_column)
        _check_header_row(X, y, labels)
        check_lengths(X, y)
        applied = [(path, load_embeddings(path, key=key)) for path in apply_paths]
        for path, other in applied:
            if other.shape[1] != X.shape[1]:
                raise InputError(f"{path.name} has {other.shape[1]} dimensions, the training "
                                 f"embeddings {X.shape[1]}")
        config = AdapterConfig(objective=objective, epochs=epochs, batch_size=batch_size, m=m,
                               lr=lr, temperature=temperature, seed=seed)
        try:
            adapter, history = train_adapter(
                to_float32(X), y, config,
                log=None if quiet else lambda epoch, loss: click.echo(
                    f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}", err=True))
        except ValueError as error:
            raise InputError(str(error)) from None
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs = [(embeddings, X)] + applied
        for path, rows in outputs:
            target = out_dir / f"{path.stem}.tuned.npy"
            np.save(target, apply_adapter(adapter, to_float32(rows)))
            click.echo(f"tuned embeddings written to {target}", err=True)
        torch.save(adapter.state_dict(), out_dir / "adapter.pt")
        write_atomically(out_dir / "adapter.json", json.dumps(
            {"config": dataclasses.asdict(config), "loss_per_epoch": history,
             "dim": int(X.shape[1]), "trained_on": embeddings.name}, indent=2) + "\n")
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)


def _write_outputs(report, out, plots_dir, plot_format, html_path, quiet=False) -> None:
    """The JSON (+ sidecar), the figures and the HTML that were asked for."""
    if out is not None:
        report.save(out)
    if plots_dir is not None:
        from probekit.plots import write_figures

        paths = write_figures(report, plots_dir, fmt=plot_format)
        if not quiet:
            click.echo(f"{len(paths)} figures written to {plots_dir}", err=True)
    if html_path is not None:
        from probekit.html import write_html

        write_html(report, html_path)
        if not quiet:
            click.echo(f"HTML report written to {html_path}", err=True)


def _check_header_row(X, y, labels: Path) -> None:
    """A headerless .csv of labels loses its first label to the header: say so."""
    if labels.suffix.lower() in (".csv", ".tsv") and len(y) == X.shape[0] - 1:
        raise InputError(f"{labels.name} has one label fewer than the embeddings have rows: "
                         ".csv/.tsv labels need a header row (or use .txt, one label per line)")


def _describe_file(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _fail_os(error: OSError) -> None:
    """A file-system failure (unwritable output, ...): one line, exit status 1."""
    _fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), status=1)


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(status)


def main() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files: never open a window
    cli(prog_name="probekit")


if __name__ == "__main__":
    main()
