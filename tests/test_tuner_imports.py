"""`import tuner` is light: the package names that need torch load on first use, so that
`probekit manifest` (tuner.manifests) works where torch is not installed."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TUNER = Path(__file__).resolve().parents[1] / "src" / "tuner"

# sys.modules[name] = None makes `import name` raise ImportError: torch "not installed"
BLOCK_TORCH = "import sys\nsys.modules['torch'] = None\n"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_manifests_build_without_torch(tmp_path):
    root = tmp_path / "ESC-50-master"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for index in range(4):
        name = f"{index % 2 + 1}-{index}-A-0.wav"
        lines.append(f"{name},{index % 2 + 1},0,{'dog' if index % 2 else 'rain'},False,"
                     f"{index},A")
        (root / "audio" / name).write_bytes(b"RIFF")  # the builder checks existence only
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    code = BLOCK_TORCH + (
        "import tuner, tuner.manifests\n"
        "from tuner.manifests import build\n"
        f"counts = build('esc50', {str(root)!r}, {str(tmp_path / 'out')!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(sorted(counts.items()))\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted({
        "fold1_train.csv": 2, "fold1_test.csv": 2, "fold2_train.csv": 2,
        "fold2_test.csv": 2}.items()))
    assert (tmp_path / "out" / "fold1_test.csv").read_text().startswith("path,label\n")


def test_torch_free_modules_import_no_torch():
    code = BLOCK_TORCH + (
        "import tuner, tuner.manifests, tuner.audio, tuner.finite\n"
        "print(sorted(tuner.__all__))\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['TrainConfig', 'TrainResult', 'embed', 'fit']"


def imported_packages(nodes) -> set[str]:
    """Top-level package names of the absolute imports among ``nodes``."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add((node.module or "").split(".")[0])
    return names


def test_manifests_module_imports_no_torch_at_all():
    """Static check: tuner/manifests.py names torch nowhere (not even inside a function), and
    neither tuner/__init__.py nor the tuner modules on manifests' import path import it at
    module level (tuner.finite imports it inside the functions that take tensors)."""
    manifests = ast.parse((TUNER / "manifests.py").read_text())
    assert "torch" not in imported_packages(ast.walk(manifests))
    for name in ("__init__.py", "finite.py", "audio.py"):
        tree = ast.parse((TUNER / name).read_text())
        assert "torch" not in imported_packages(tree.body), name
    tuner_modules = {node.module for node in ast.walk(manifests)
                     if isinstance(node, ast.ImportFrom)
                     and (node.module or "").startswith("tuner")}
    assert tuner_modules <= {"tuner.finite", "tuner.audio"}


def test_lazy_names_load_on_first_use_and_embed_stays_the_function():
    pytest.importorskip("torch")
    code = (
        "import sys, tuner\n"
        "assert 'tuner.train' not in sys.modules and 'torch' not in sys.modules\n"
        "from tuner.embed import cache_sequences  # binds the submodule on the package\n"
        "import tuner.train\n"
        "assert tuner.embed is sys.modules['tuner.embed'].embed, tuner.embed\n"
        "assert tuner.fit is tuner.train.fit and tuner.TrainConfig is tuner.train.TrainConfig\n"
        "assert tuner.TrainResult is tuner.train.TrainResult\n"
        "from tuner import embed, fit\n"
        "assert callable(embed) and embed.__module__ == 'tuner.embed'\n"
        "try:\n"
        "    tuner.no_such_name\n"
        "except AttributeError as error:\n"
        "    print(error)\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'tuner' has no attribute 'no_such_name'"


def test_without_torch_the_lazy_names_say_so():
    result = run_python(BLOCK_TORCH + (
        "import tuner\n"
        "try:\n"
        "    tuner.fit\n"
        "except ImportError as error:\n"
        "    print('ImportError', 'torch' in str(error))\n"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ImportError True"
