"""Repository-level contracts: stage boundaries, the CLI app, README ↔ CI, the `kernels` name."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The house rules (ARCHITECTURE.md): package -> the fastsae packages it must never import.
# Arrows point down only: floor 3 (the CLI app) > stages (harvest, train) > floor 1 > ground.
# interp (eval, features, judge, dashboard, steer) may import chats, lm, saes, store and kernels.
FORBIDDEN = {
    "harvest": {"train", "saes", "kernels", "interp", "cli"},
    "train": {"harvest", "interp", "chats", "cli"},  # lm for its devices and rank policy only
    "lm": {"harvest", "train", "saes", "kernels", "interp", "cli"},
    "saes": {"harvest", "train", "lm", "store", "interp", "chats", "cli"},
    "store": {"harvest", "train", "lm", "saes", "kernels", "interp", "chats", "cli"},
    "kernels": {"harvest", "train", "lm", "saes", "store", "interp", "chats", "cli"},
    "interp": {"harvest", "train", "cli"},
    # conversations in every format harvest reads (floor 1): harvest, eval and steer read them
    "chats": {"harvest", "train", "lm", "saes", "store", "kernels", "interp", "cli"},
}
# top-level names that must only ever be imported under the fastsae namespace
OURS = {"harvest", "train", "store", "kernels", "lm", "saes", "interp", "chats"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(fastsae sub-packages imported, bare top-level names imported) by one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "fastsae":
                modules += [f"fastsae.{alias.name}" for alias in node.names]
            else:
                modules.append(node.module)
    ours = {m.split(".")[1] for m in modules if m.startswith("fastsae.")}
    return ours, {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_house_rules(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        ours, top = _imports(path)
        bad = ours & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "; ".join(offenders)


def test_nothing_imports_a_stage_outside_the_namespace():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if ".git" in path.parts or "demo" in path.parts:
            continue
        bare = _imports(path)[1] & OURS
        if bare:
            offenders.append(f"{path.relative_to(ROOT)} imports bare {sorted(bare)}")
    assert not offenders, "; ".join(offenders)


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"```(?:bash|sh)?\n# tests\n(.+?)\n```", readme, re.S)
    assert match, "README.md must show the test command in a block starting with '# tests'"
    test_cmd = match.group(1).strip().split("&&")[-1].strip()
    assert test_cmd in ci, f"README's test command {test_cmd!r} is not what .ci/run runs"


def test_installed_names_are_namespaced_and_transformers_cannot_take_our_kernels(tmp_path):
    # Outside the repo (no cwd shadowing): only `fastsae` is ours; `kernels`, `train`, `store` and
    # `harvest` are not importable from us, so transformers' probe for Hugging Face's kernel hub
    # (an importable `kernels` with a viable version) cannot find our code whatever our version.
    code = (
        "import importlib.util, fastsae.kernels, fastsae.train, fastsae.store, fastsae.harvest\n"
        "from transformers.utils.import_utils import is_kernels_available\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "assert spec is None or 'fastsae' not in str(spec.origin), spec\n"
        "for name in ('train', 'store', 'harvest'):\n"
        "    s = importlib.util.find_spec(name)\n"
        "    assert s is None or 'fastsae' not in str(s.origin) and str(ROOT) not in str(s.origin), s\n"
        "print(is_kernels_available())"
    ).replace("ROOT", repr(str(ROOT)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
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
