"""docs/cli.md is what `pinpipe <command> --help` prints, for every command and subcommand."""
import importlib.util

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
    # the first test pass on a page without them, so the parse is checked against commands
    # known to exist. (render() already fails on a --help that exits non-zero.)
    gen = load_generator()
    top = gen.subcommands(gen.help_text(str(BIN), []))
    assert {"generate", "clean", "analyze", "demo", "bench", "forget", "replay", "gaps"} <= set(top)
    bench = gen.subcommands(gen.help_text(str(BIN), ["bench"]))
    assert "lambdas" in bench and "sink" in bench
    page = (REPO / "docs" / "cli.md").read_text()
    for name in top:
        assert f"## `pinpipe {name}`" in page
    for name in bench:
        assert f"## `pinpipe bench {name}`" in page
