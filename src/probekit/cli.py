"""The ``probekit`` command line: the only module that prints (with probekit.cli_tuning).

Errors become exit statuses in one place, the group (:class:`_OneLineErrors`): bad input
(:class:`InputError`, a click usage error) ends with one line on stderr (``error: ...``) and exit
status 2, never a traceback; a file-system failure (:class:`OSError`) with one line and exit
status 1; any other exception is a bug: one ``error: internal error: ...`` line and exit status 1
(and its traceback when ``PROBEKIT_DEBUG=1``). The commands raise; none catches to print.

The probe commands live here, the training commands (tune, finetune, embed, manifest) in
probekit.cli_tuning, the options several commands share in probekit.cli_options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

import click

from probekit import cli_options as opt
from probekit.cli_options import FILE, FOLDER, check_outputs, check_rows, number_list
from probekit.cli_tuning import embed_command, finetune, manifest, tune
from probekit.errors import InputError
from probekit.files import write_atomically
from probekit.probes.knn import DEFAULT_TEMPERATURE
from probekit.probes.linear import DEFAULT_C_GRID, DEFAULT_MAX_ITER, DEFAULT_TOL, DEFAULT_VAL_SIZE
from probekit.ranks import ShardFailure, launched_by_torchrun, this_rank
from probekit.version import __version__


class _Progress:
    """Progress lines on stderr, redrawn in place; silent when off or not a terminal. The open
    line is closed when the command's click context closes too, so that an error line printed
    after a failure starts on a line of its own."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.stage = None
        context = click.get_current_context(silent=True)
        if context is not None:
            context.call_on_close(self.close)

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
        self.stage = None


class _OneLineErrors(click.Group):
    """A click group that ends every error of its commands with one ``error: ...`` line on
    stderr: usage errors (bad option values, missing arguments) and :class:`InputError` with exit
    status 2; :class:`OSError`, an abort and any other exception (a bug) with exit status 1."""

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
        except ShardFailure as error:  # raised alike on every rank: rank 0 says it
            _fail(str(error), quiet=this_rank() != 0)
        except InputError as error:
            _fail(str(error))
        except OSError as error:
            _fail_os(error)
        except Exception as error:  # a bug: still one line, the traceback on request
            _fail_internal(error)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probekit")
@click.pass_context
def cli(context):
    """How good is an embedding space? Linear + kNN dual probe with confidence intervals."""
    if launched_by_torchrun() and context.invoked_subcommand not in SHARDED_COMMANDS:
        raise InputError(f"probekit {context.invoked_subcommand} runs in one process; under "
                         f"torchrun run {' or '.join(SHARDED_COMMANDS)}")


SHARDED_COMMANDS = ("evaluate", "finetune")  # the commands that run under torchrun


for _command in (tune, finetune, embed_command, manifest):
    cli.add_command(_command)


DEMO_GEOMETRY = ("alignment", "uniformity", "silhouette", "map_at_r", "nc1",
                 "knn_label_agreement")


@cli.command()
@opt.out_folder(default=Path("probekit-demo"), show_default=True, required=False,
                help="Folder for the reports, the comparison, the figures and the HTML pages.")
@click.option("--figures/--no-figures", default=True, show_default=True,
              help="Write the figures and the HTML pages (the 2-D map is the slow part).")
@opt.quiet()
def demo(out_dir, figures, quiet):
    """Run the whole job on real embeddings shipped with probekit: spoken English words
    embedded by the GE2E speech encoder before and after SupCon fine-tuning (held-out voices
    as the test set). Prints the tuned space's summary and the paired comparison of the two
    spaces, and writes reports, figures and HTML to --out. No download, no torch."""
    from probekit.demo import SPACES, TITLES, data_path, run_demo
    from probekit.render.text import comparison_markdown

    progress = _Progress(not quiet)
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
@click.argument("embeddings", type=FILE)
@click.argument("labels", type=FILE)
@click.option("--test-embeddings", type=FILE,
              help="Embeddings of a given test split (the paper's setting).")
@opt.test_labels(help="Labels of the given test split.")
@opt.k()
@opt.metric(help="Similarity of the kNN probe.")
@opt.temperature(default=DEFAULT_TEMPERATURE, help="T of the weighted kNN vote exp(sim / T).")
@click.option("--loo", is_flag=True,
              help="kNN leave-one-out over all samples (each classified by the others).")
@opt.test_size(help="Test fraction of the stratified holdout split.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Stratified k-fold instead of a holdout.")
@opt.seed(help="Seed of the splits and the bootstrap.")
@click.option("--c-grid", default=None, callback=number_list(float),
              help="Comma-separated C values of the linear probe [default: 1e-4 ... 1e4, 9].")
@click.option("--val-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_VAL_SIZE, show_default=True,
              help="Validation fraction of train used to choose C.")
@click.option("--max-iter", type=click.IntRange(min=1), default=DEFAULT_MAX_ITER,
              show_default=True, help="L-BFGS iterations per logistic-regression fit.")
@click.option("--tol", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TOL,
              show_default=True, help="L-BFGS gradient tolerance (scikit-learn's default; "
              "lower it for few samples per dimension).")
@opt.backend(help="Neighbour-search backend.")
@opt.search_options
@opt.linear_backend()
@opt.memory()
@opt.bootstrap(help="Bootstrap resamples of each accuracy CI.")
@opt.geometry(help="Geometry diagnostics of the training rows.")
@click.option("--geometry-sample", type=click.IntRange(min=2), default=5000, show_default=True,
              help="Query sample of the pairwise geometry diagnostics.")
@opt.extra()
@opt.key()
@opt.label_key()
@opt.label_column()
@opt.out_file(help="Write the full report as JSON here (and the figure data beside it, .npz).")
@click.option("--plots", "plots_dir", type=FOLDER,
              default=None, help="Write the figures into this folder (adds the 2-D map).")
@opt.plot_format(help="File format of the figures.")
@opt.html(help="Write one self-contained HTML report here.")
@opt.multilabel(help="Several tags per sample: text labels hold them separated by "
                "--tag-separator (a 2-D 0/1 .npy/.npz label matrix is detected by itself).")
@opt.tag_separator(help="Separator of the tags in one text label (with --multilabel).")
@click.option("--save-predictions", is_flag=True,
              help="Keep per-sample correctness in the --out sidecar (.npz) for paired tests "
              "in probekit compare.")
@opt.quiet()
def evaluate(embeddings, labels, test_embeddings, test_labels, k, metric, temperature, loo,
             test_size, folds, seed, c_grid, val_size, max_iter, tol, backend, search, nlist,
             nprobe, ef_search, linear_backend, memory_budget, n_bootstrap, geometry,
             geometry_sample, extra, key, label_key, label_column, out, plots_dir, plot_format,
             html_path, multilabel, tag_separator, save_predictions, quiet):
    """Run the dual probe on EMBEDDINGS (N x D: .npy .npz .csv .tsv .parquet) and LABELS
    (N labels: .npy .npz .txt .csv .tsv .parquet) and print the summary."""
    from probekit.data import count_rows, is_layer_stack, load_embeddings
    from probekit.dual import dual_probe
    from probekit.ranks import start, stop

    ranks = start()  # one of several processes under torchrun, or the only one
    if ranks.rank != 0:  # rank 0 alone prints and writes
        quiet, out, plots_dir, html_path = True, None, None, None
    progress = _Progress(not quiet)
    probe_options = dict(
        k=k, metric=metric, temperature=temperature, loo=loo, C=c_grid or DEFAULT_C_GRID,
        val_size=val_size, test_size=test_size, folds=folds, seed=seed, backend=backend,
        search=opt.search_method(search, nlist, nprobe, ef_search),
        linear_backend=linear_backend, memory_budget=memory_budget, n_bootstrap=n_bootstrap,
        max_iter=max_iter, tol=tol, geometry=geometry, geometry_sample=geometry_sample,
        extra=[name.strip() for name in extra.split(",") if name.strip()], progress=progress,
        ranks=ranks)
    if (test_embeddings is None) != (test_labels is None):
        raise InputError("give --test-embeddings and --test-labels together")
    if save_predictions and out is None:
        raise InputError("--save-predictions keeps them beside the --out report: give --out")
    from probekit.render.plots import FIGURES

    check_outputs([embeddings, labels, test_embeddings, test_labels,
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
        check_rows(count_rows(embeddings, key=key), y, labels)  # before a large read
        X = load_embeddings(embeddings, key=key)
        check_rows(X.shape[0], y, labels)
        X_test = None
        if test_embeddings is not None:
            X_test = load_embeddings(test_embeddings, key=key)
        if probe_options["search"].name == "exact" and not quiet and not ranks.sharded:
            _suggest_approximate_search(X, X_test, probe_options)
        report = dual_probe(
            X, y, X_test=X_test, y_test=y_test, tags=tag_names,
            projection=(plots_dir is not None or html_path is not None) and not multilabel,
            save_predictions=save_predictions, **probe_options)
        if notes:
            report = dataclasses.replace(report, warnings=tuple(notes) + report.warnings)
        progress.close()
        files = {"embeddings": embeddings, "labels": labels,
                 "test_embeddings": test_embeddings, "test_labels": test_labels}
        if ranks.rank == 0:
            report = dataclasses.replace(report, input={**report.input, "files": {
                role: _describe_file(path) for role, path in files.items()
                if path is not None}})
        _write_outputs(report, out, plots_dir, plot_format, html_path, quiet=quiet)
    if ranks.rank == 0:
        click.echo(report.to_markdown(), nl=False)
    if out is not None and not quiet:
        click.echo(f"report written to {out}", err=True)
    stop(ranks)


EXACT_SEARCH_WARNING_S = 60.0  # an exact search expected to take longer is announced
EXACT_SEARCH_TIMED_WORK = 1e12  # queries x rows x dimensions below which it is not even timed


def _suggest_approximate_search(X, X_test, options: dict) -> None:
    """Say on stderr how long the exact kNN search will take when that is over a minute, and
    that ``--search ivf`` exists (the run stays exact: nothing is switched silently)."""
    from probekit.neighbours import exact_search_seconds

    n = X.shape[0]
    if X_test is not None:
        pairs = (X_test.shape[0], n)
    elif options["loo"]:
        pairs = (n, n - 1)
    elif options["folds"]:
        pairs = (n, n - n // options["folds"])
    else:
        n_test = int(round(options["test_size"] * n))
        pairs = (n_test, n - n_test)
    if pairs[0] * pairs[1] * X.shape[1] < EXACT_SEARCH_TIMED_WORK:  # surely quick: not timed
        return
    seconds = exact_search_seconds(*pairs, X.shape[1], backend=options["backend"],
                                   metric=options["metric"])
    if seconds > EXACT_SEARCH_WARNING_S:
        click.echo(f"the exact kNN search ({pairs[0]:,} queries against {pairs[1]:,} rows) "
                   f"will take about {_duration(seconds)} here; --search ivf approximates it "
                   "in a fraction of that and reports its measured recall", err=True)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
@click.argument("embeddings", type=FILE)
@click.argument("labels", type=FILE, required=False)
@opt.metric(help="Similarity of the neighbour graph.")
@click.option("--sample-size", type=click.IntRange(min=2), default=5000, show_default=True,
              help="Query sample of the sampled diagnostics (uniformity, MAP@R).")
@opt.seed()
@opt.extra()
@opt.backend()
@opt.search_options
@opt.key()
@opt.label_key()
@opt.label_column()
@opt.out_file(help="Write the diagnostics as JSON here.")
def diagnose(embeddings, labels, metric, sample_size, seed, extra, backend, search, nlist,
             nprobe, ef_search, key, label_key, label_column, out):
    """Geometry diagnostics of EMBEDDINGS, with LABELS when given (label-free keys only
    without them)."""
    from probekit.data import load_embeddings, load_labels
    from probekit.geometry import diagnose as run_diagnose
    from probekit.render.text import geometry_markdown

    check_outputs([embeddings, labels], {"--out file": out})
    X = load_embeddings(embeddings, key=key)
    y = None
    if labels is not None:
        y = load_labels(labels, key=label_key, column=label_column)
        check_rows(X.shape[0], y, labels)
    result = run_diagnose(X, y, metric=metric, sample_size=sample_size, seed=seed,
                          extra=[name.strip() for name in extra.split(",") if name.strip()],
                          backend=backend,
                          method=opt.search_method(search, nlist, nprobe, ef_search))
    if out is not None:
        write_atomically(out, json.dumps(result.to_dict(), indent=2) + "\n")
    click.echo(geometry_markdown(result, f"Geometry of {embeddings.name}"), nl=False)
    if out is not None:
        click.echo(f"diagnostics written to {out}", err=True)


@cli.command()
@click.argument("report_path", metavar="REPORT", type=FILE)
@opt.out_folder(name="plots_dir", help="Folder for the figures.")
@opt.plot_format()
@opt.html(help="Also write the self-contained HTML report here.")
def plot(report_path, plots_dir, plot_format, html_path):
    """Re-render the figures of a saved REPORT (.json with its .npz sidecar) without
    recomputing the probes."""
    from probekit.report import Report

    if not report_path.is_file():
        raise InputError(f"report file not found: {report_path}")
    from probekit.render.plots import FIGURES

    check_outputs([report_path, report_path.with_suffix(".npz")],
                  _report_outputs(None, plots_dir, plot_format, html_path, FIGURES))
    report = Report.load(report_path)
    if not report.arrays:
        raise InputError(f"{report_path.with_suffix('.npz').name} (the figure data saved "
                         "beside the report) is missing")
    _write_outputs(report, None, plots_dir, plot_format, html_path)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=FILE)
@click.option("--test-embeddings-a", type=FILE, default=None,
              help="Test embeddings of space A (with --test-labels).")
@click.option("--test-embeddings-b", type=FILE, default=None,
              help="Test embeddings of space B, same rows as A's.")
@opt.test_labels()
@opt.k()
@opt.metric()
@opt.test_size()
@opt.seed()
@opt.bootstrap()
@opt.geometry()
@opt.key()
@opt.label_key()
@opt.label_column()
@opt.multilabel(help="Tags separated by --tag-separator.")
@opt.tag_separator()
@opt.out_file(help="Write the comparison table as CSV.")
@opt.quiet()
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
    check_outputs([*inputs, *(Path(path).with_suffix(".npz") for path in inputs),
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


def _write_outputs(report, out, plots_dir, plot_format, html_path, quiet=False) -> None:
    """The JSON (+ sidecar), the figures and the HTML that were asked for."""
    if out is not None:
        report.save(out)
    figures = None
    if plots_dir is not None:
        from probekit.render.plots import write_figures

        paths = write_figures(report, plots_dir, fmt=plot_format)
        if plot_format == "png":  # the page embeds these very files: each figure drawn once
            figures = {path.stem: path.read_bytes() for path in paths}
        if not quiet:
            click.echo(f"{len(paths)} figures written to {plots_dir}", err=True)
    if html_path is not None:
        from probekit.render.html import write_html

        write_html(report, html_path, figures=figures)
        if not quiet:
            click.echo(f"HTML report written to {html_path}", err=True)


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


def _describe_file(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _fail_os(error: OSError) -> None:
    """A file-system failure (unwritable output, ...): one line, exit status 1."""
    _fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), status=1)


def _fail_internal(error: Exception) -> None:
    """Any other exception is a bug of probekit's: one line naming it, exit status 1, and the
    traceback before it when the environment variable PROBEKIT_DEBUG is set (not to 0)."""
    if os.environ.get("PROBEKIT_DEBUG", "") not in ("", "0"):
        click.echo("".join(traceback.format_exception(type(error), error,
                                                      error.__traceback__)),
                   err=True, nl=False)
    message = " ".join(str(error).split())
    what = f"{type(error).__name__}: {message}" if message else type(error).__name__
    _fail(f"internal error: {what} (a bug: please report it; set PROBEKIT_DEBUG=1 for the "
          "traceback)", status=1)


def _fail(message: str, status: int = 2, quiet: bool = False) -> None:
    """One ``error: ...`` line on stderr (naming this process's rank in a sharded run other
    than rank 0) and exit with ``status``."""
    rank = this_rank()
    if not quiet:
        where = f"(rank {rank}) " if rank else ""
        click.echo(f"error: {where}{' '.join(message.split())}", err=True)
    sys.exit(status)


def main() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files: never open a window
    cli(prog_name="probekit")


if __name__ == "__main__":
    main()
