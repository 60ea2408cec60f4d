"""The architecture check (scripts/check_layers.py) passes on the tree and catches what it is for."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_layers.py"


def load():
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tree_keeps_its_layers_and_crate_boundaries():
    p = subprocess.run([sys.executable, str(SCRIPT), str(REPO)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "layers: ok" in p.stdout


def problems_with(tmp_path, file, line):
    """The core's problems once `line` is added at the top of `file` (in a copy)."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "shared" / "core" / "src", src)
    f = src / file
    f.write_text(line + "\n" + f.read_text())
    return load().core_problems(src)


def test_an_upward_import_and_a_cycle_are_reported(tmp_path):
    problems = problems_with(tmp_path, "delta/open.rs", "use crate::jobs::handlers::KafkaSink;")
    assert any("delta/open.rs imports jobs/handlers.rs" in p and "higher layer" in p for p in problems), problems
    assert any(p.startswith("import cycle among:") and "delta/open.rs" in p for p in problems), problems


def test_grouped_imports_count(tmp_path):
    problems = problems_with(tmp_path, "storage/landing.rs", "use crate::{error::Error, writer::{Tables, coverage}};")
    assert any("storage/landing.rs imports writer/mod.rs" in p for p in problems), problems
    assert any("storage/landing.rs imports writer/coverage.rs" in p for p in problems), problems


def test_a_lambda_linking_the_core_is_reported(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("target", ".git", "tests", "docs"))
    toml = repo / "functions" / "ingest-api" / "Cargo.toml"
    toml.write_text(toml.read_text().replace("[dependencies]\n", "[dependencies]\npinpipe-core.workspace = true\n"))
    # Resolved offline: the added edge needs no crate the lock file does not have.
    problems = load().crate_problems(repo, locked=False)
    assert any("crate ingest-api links pinpipe-core" in p for p in problems), problems
    assert any("crate ingest-api links polars" in p for p in problems), problems
