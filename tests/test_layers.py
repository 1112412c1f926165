"""Layer-wise probing: one protocol for every layer, the best layer, stacks on disk, the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import probekit
from probekit.cli import cli
from probekit.data import is_layer_stack, load_layers
from probekit.errors import InputError

SEPARATIONS = (0.2, 0.6, 2.0, 0.6, 0.2)  # information rises, peaks in the middle, falls


def layer_stack(n=240, dim=12, n_classes=4, seed=0):
    """(L, N, D) where layer l holds the classes at separation SEPARATIONS[l]: the same
    labels and noise in every layer, so only the class signal's strength changes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centres = rng.normal(size=(n_classes, dim))
    noise = rng.normal(size=(n, dim))
    stack = np.stack([separation * centres[y] + noise for separation in SEPARATIONS])
    return stack.astype(np.float32), y


def test_the_best_layer_is_the_one_built_to_be_best_and_every_layer_shares_the_split():
    stack, y = layer_stack()
    result = probekit.dual_probe_layers(stack, y, k=(1, 5, 10), n_bootstrap=100)
    assert result.best_layer("linear") == result.best_layer("knn") == "layer 2"
    frame = result.to_frame()
    assert list(frame["layer"]) == [f"layer {i}" for i in range(5)]
    linear = frame["linear"].to_numpy()
    assert linear[2] > linear[1] > linear[0] and linear[2] > linear[3] > linear[4]
    protocols = {json.dumps(r.protocol, sort_keys=True) for r in result.reports}
    hashes = {r.input["test_labels_sha256"] for r in result.reports}
    assert len(protocols) == 1 and len(hashes) == 1
    alone = probekit.dual_probe(stack[3], y, k=(1, 5, 10), n_bootstrap=100, geometry=False)
    assert result.reports[3].linear == alone.linear and result.reports[3].knn == alone.knn
    assert "Best layer: layer 2 by the linear probe, layer 2 by kNN." in result.to_markdown()
    document = json.loads(result.to_json())
    assert document["best_layer"] == {"linear": "layer 2", "knn": "layer 2"}
    assert len(document["reports"]) == 5 and document["summary"][2]["layer"] == "layer 2"


def test_a_stack_on_disk_is_read_one_layer_at_a_time(tmp_path):
    stack, y = layer_stack()
    np.save(tmp_path / "stack.npy", stack)
    layers, names = load_layers(tmp_path / "stack.npy")
    assert isinstance(layers[0], np.memmap) and names[0] == "layer 0"
    assert is_layer_stack(tmp_path / "stack.npy")
    np.save(tmp_path / "flat.npy", stack[0])
    assert not is_layer_stack(tmp_path / "flat.npy")
    for index in (10, 2, 1):
        np.save(tmp_path / f"block_{index}.npy", stack[min(index, 4)])
    layers, names = load_layers(str(tmp_path / "block_*.npy"))
    assert names == ["block_1", "block_2", "block_10"]  # natural order, not 1, 10, 2
    with pytest.raises(InputError, match="no embedding files match"):
        load_layers(str(tmp_path / "nothing_*.npy"))
    with pytest.raises(InputError, match="L x N x D"):
        load_layers(tmp_path / "flat.npy")


def test_given_test_layers_and_errors():
    stack, y = layer_stack(300)
    result = probekit.dual_probe_layers(stack[:, :200], y[:200], X_test=stack[:, 200:],
                                        y_test=y[200:], k=(1, 5), n_bootstrap=50,
                                        names=list("abcde"))
    assert result.names == tuple("abcde") and result.reports[0].protocol["split"] == "given"
    with pytest.raises(InputError, match="5 training layers but 4 test layers"):
        probekit.dual_probe_layers(stack[:, :200], y[:200], X_test=stack[:4, 200:],
                                   y_test=y[200:])
    broken = stack.copy()
    broken[3, 0, 0] = np.nan
    with pytest.raises(InputError, match="^layer 3: .*NaN"):
        probekit.dual_probe_layers(broken, y)


def test_cli_evaluates_a_layer_stack(tmp_path):
    stack, y = layer_stack()
    np.save(tmp_path / "stack.npy", stack)
    np.save(tmp_path / "y.npy", y)
    result = CliRunner().invoke(cli, [
        "evaluate", str(tmp_path / "stack.npy"), str(tmp_path / "y.npy"), "--k", "1,5",
        "--no-geometry", "--bootstrap", "50", "--out", str(tmp_path / "layers.json"),
        "--plots", str(tmp_path / "figs"), "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "| layer 2 |" in result.output and "Best layer: layer 2" in result.output
    assert json.loads((tmp_path / "layers.json").read_text())["best_layer"]["linear"] == "layer 2"
    figure = tmp_path / "figs" / "layers.png"
    assert figure.stat().st_size > 1000
    again = CliRunner().invoke(cli, [
        "evaluate", str(tmp_path / "stack.npy"), str(tmp_path / "y.npy"), "--k", "1,5",
        "--no-geometry", "--bootstrap", "50", "--plots", str(tmp_path / "figs2"), "-q"])
    assert again.exit_code == 0
    assert (tmp_path / "figs2" / "layers.png").read_bytes() == figure.read_bytes()
    bad = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "stack.npy"),
                                   str(tmp_path / "y.npy"), "--html", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:")


def test_cli_layer_stack_with_tags(tmp_path):
    stack, y = layer_stack()
    np.save(tmp_path / "stack.npy", stack)
    names = np.array(["a", "b", "c", "d"])
    (tmp_path / "tags.txt").write_text("\n".join(
        f"{names[label]};{names[(label + 1) % 4]}" if i % 3 == 0 else names[label]
        for i, label in enumerate(y)) + "\n")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "stack.npy"),
                                      str(tmp_path / "tags.txt"), "--multilabel", "--k", "1,5",
                                      "--no-geometry", "--bootstrap", "50", "-q"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "tags; split: holdout" in result.output and "Best layer: layer 2" in result.output
