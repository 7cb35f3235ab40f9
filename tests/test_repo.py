"""Repository-level contracts: stage boundaries, the CLI app, README ↔ CI, the `kernels` name."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# stage -> top-level packages it must never import
FORBIDDEN = {
    "harvest": {"train", "kernels", "fastsae"},
    "train": {"harvest", "fastsae"},
    "store": {"harvest", "train", "kernels", "fastsae"},
    "kernels": {"harvest", "train", "store", "fastsae"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_boundaries(stage):
    offenders = []
    for path in sorted((ROOT / stage).rglob("*.py")):
        bad = _imported_top_levels(path) & FORBIDDEN[stage]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "; ".join(offenders)


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"```(?:bash|sh)?\n# tests\n(.+?)\n```", readme, re.S)
    assert match, "README.md must show the test command in a block starting with '# tests'"
    test_cmd = match.group(1).strip().split("&&")[-1].strip()
    assert test_cmd in ci, f"README's test command {test_cmd!r} is not what .ci/run runs"


def test_transformers_does_not_take_our_kernels_for_the_hub_package():
    # transformers probes for a package importable as `kernels` (Hugging Face's kernel hub) and
    # imports it when the version looks viable; ours must never pass for it.
    code = "from transformers.utils.import_utils import is_kernels_available;print(is_kernels_available())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_cli_lists_every_stage_command():
    out = subprocess.run(
        [sys.executable, "-m", "fastsae", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    for command in ("harvest", "inspect", "verify", "train"):
        assert command in out.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_benchmark_script_starts(script):
    # benchmarks are run by hand, not by CI: at least their imports and argument parsing must not rot
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
