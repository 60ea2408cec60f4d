"""Commands that read (gaps without --close, replay --dry-run, analyze, forget --dry-run) leave a
root without this pipeline's tables exactly as it was, and say which id they looked for."""
import json

import pytest

from conftest import run

COMMANDS = {
    "gaps": ["gaps"],
    "replay-quarantine-dry-run": ["replay", "--quarantine", "--dry-run"],
    "replay-from-dry-run": ["replay", "--from", "FAILED", "--landing", "LANDING", "--dry-run"],
    "analyze": ["analyze", "--out", "OUT"],
    "forget-dry-run": ["forget", "--ind", "7", "--dry-run"],
}


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("root_kind", ["empty", "another-id"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_read_only_command_never_writes_to_the_root(tmp_path, name, root_kind):
    root = tmp_path / "root"
    root.mkdir()
    if root_kind == "another-id":
        src = tmp_path / "gen"
        run("generate", "--rows", 50, "--out", src)
        run("--id", "other", "clean", "--input", src, "--output", root)
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "batch.json").write_text(json.dumps({"requestContext": {}, "payload": {}}))
    args = [str({"FAILED": failed, "LANDING": tmp_path / "landing", "OUT": tmp_path / "out"}.get(a, a))
            for a in COMMANDS[name]]
    before = snapshot(root)
    p = run("--id", "mine", *args, "--tables", root, check=False)
    assert snapshot(root) == before, f"{name} changed {root}"
    assert p.returncode == 1 and f"no pinpipe tables for id 'mine' under {root}" in p.stderr, (p.returncode, p.stderr)


def test_a_real_forget_writes_no_ledger_under_another_pipelines_root(tmp_path):
    root = tmp_path / "root"
    src = tmp_path / "gen"
    run("generate", "--rows", 50, "--out", src)
    run("--id", "other", "clean", "--input", src, "--output", root)
    before = snapshot(root)
    p = run("--id", "mine", "forget", "--ind", "7", "--tables", root, check=False)
    assert p.returncode == 1 and snapshot(root) == before, p.stderr
