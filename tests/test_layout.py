"""The package layout rules, checked by the scripts `make test` runs: no import cycle between
mmsearch modules, nothing imports the CLI, no function over 50 lines. Each rule is also shown
to fail on a copy of the package with a planted violation."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("core", "model_repository", "export", "indexer", "client", "ui")


def run(script: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path) -> Path:
    """The package sources and pyproject.toml, to plant violations in."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for folder in PACKAGE_DIRS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\n{line}\n")


def test_the_package_has_no_import_cycle_and_nothing_imports_the_cli():
    result = run("check_imports.py")
    assert result.returncode == 0, result.stdout
    assert "no cycle, nothing imports the CLI" in result.stdout


def test_a_planted_cycle_fails(copy):
    assert run("check_imports.py", copy).returncode == 0
    plant(
        copy / "core" / "stores.py",
        "def later():\n    from mmsearch.indexer.run import run_index  # a lazy import counts",
    )
    result = run("check_imports.py", copy)
    assert result.returncode == 1
    assert "import cycle between" in result.stdout and "mmsearch.stores -> mmsearch.indexer.run" in result.stdout


def test_an_import_of_the_cli_fails(copy):
    plant(copy / "client" / "demo.py", "from mmsearch.client import cli")
    result = run("check_imports.py", copy)
    assert result.returncode == 1
    assert "client/demo.py: imports mmsearch.client.cli" in result.stdout


def test_no_function_is_over_50_lines():
    result = run("function_lengths.py")
    assert result.returncode == 0, result.stdout
    assert len(result.stdout.splitlines()) == 5  # the five longest, each at most 50 lines


def test_a_planted_long_function_fails(copy):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    plant(copy / "indexer" / "run.py", f"def too_long():\n{body}")
    result = run("function_lengths.py", copy)
    assert result.returncode == 1
    assert "61  indexer/run.py:" in result.stdout and "too_long" in result.stdout
