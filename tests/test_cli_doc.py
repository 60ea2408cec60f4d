"""docs/cli.md is what `pinpipe <command> --help` prints, for every command and subcommand."""
import importlib.util
import subprocess

from conftest import REPO, BIN


def load_generator():
    spec = importlib.util.spec_from_file_location("cli_doc", REPO / "scripts" / "cli_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_md_matches_help():
    gen = load_generator()
    want = gen.render(str(BIN))
    have = (REPO / "docs" / "cli.md").read_text()
    assert have == want, "docs/cli.md is stale: run `python3 scripts/cli_doc.py > docs/cli.md`"


def test_every_command_has_a_section():
    # The generator finds subcommands by parsing help; a parse that missed them would make
    # the first test pass on an empty page, so the list is checked against clap's own.
    gen = load_generator()
    top = gen.subcommands(gen.help_text(str(BIN), []))
    assert {"generate", "clean", "analyze", "demo", "bench", "forget", "replay", "gaps"} <= set(top)
    bench = gen.subcommands(gen.help_text(str(BIN), ["bench"]))
    assert "lambdas" in bench and "sink" in bench
    page = (REPO / "docs" / "cli.md").read_text()
    for name in top:
        assert f"## `pinpipe {name}`" in page
        p = subprocess.run([str(BIN), name, "--help"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0
    for name in bench:
        assert f"## `pinpipe bench {name}`" in page
