"""The command line's promises: exit codes (0 done, 1 failed, 2 wrong usage), `--json` results
that parse (progress and warnings on stderr), the old flag names still accepted, and a main help
that groups every command."""
import json
import re

from conftest import REPO, run, write_object


def usage_error(*args):
    p = run(*args, check=False)
    assert p.returncode == 2, (args, p.returncode, p.stderr)
    return p.stderr


def test_exit_codes():
    assert "unrecognized subcommand" in usage_error("nosuch")
    assert "--out" in usage_error("generate", "--posts", 3)  # a required flag missing
    assert "possible values: plaintext, msk-iam" in usage_error("serve", "--kafka-auth", "sasl")
    # A global flag the command would ignore is refused, not silently dropped.
    assert "--id is not used by `generate`" in usage_error("--id", "x", "generate", "--posts", 3, "--out", "/tmp/x")
    assert "`serve` has no JSON output" in usage_error("serve", "--json")
    # `consume --idle-exit` (seconds) is still accepted beside `--idle-exit-ms` (tests/test_ingest.py
    # runs a consumer with it), but not both at once.
    assert "cannot be used with" in usage_error("consume", "--kafka", "k:1", "--tables", "t", "--idle-exit", 1,
                                                "--idle-exit-ms", 5)
    failed = run("clean", "--landing", "/nonexistent/landing", "--tables", "/tmp/t", check=False)
    assert failed.returncode == 1 and failed.stderr.startswith("error: ") and "does not exist" in failed.stderr
    assert failed.stdout == ""


def one_json(p):
    """stdout holds exactly one JSON object."""
    return json.loads(p.stdout)


def test_json_results_of_each_command(tmp_path):
    src, tables, out = tmp_path / "src", tmp_path / "tables", tmp_path / "out"
    gen = one_json(run("--json", "generate", "--posts", 200, "--out", src))
    assert gen["posts"] == 200 and len(gen["files"]) == 3
    landing = tmp_path / "landing"
    lines = [{"ind": i, "first_name": "A", "last_name": "B", "age": 30, "date_joined": "2020-01-01 00:00:00"}
             for i in range(5)]
    write_object(landing, "cj.user", 0, 0, lines[:2])
    write_object(landing, "cj.user", 0, 4, lines[4:])  # offsets 2-3 never landed: a gap
    # --input/--output (the contract's names) and --landing/--tables are the same flags.
    cleaned = run("--id", "cj", "clean", "--input", landing, "--output", tables, "--json")
    report = one_json(cleaned)
    assert report["total"]["tabled"] == 3 and report["tables"].rstrip("/") == str(tables), report
    assert "gap(s) opened" in cleaned.stderr, "warnings go to stderr"
    again = one_json(run("--id", "cj", "--json", "clean", "--landing", landing, "--tables", tables))
    assert again["total"]["tabled"] == 0 and again["total"]["skipped"] == 3
    gaps = [json.loads(line) for line in run("--id", "cj", "gaps", "--tables", tables, "--json").stdout.splitlines()]
    assert gaps == [{"table": "cj_user_table", "source": "cj.user-0", "first": 2, "last": 3}]
    closed = one_json(run("--id", "cj", "gaps", "--tables", tables, "--close", "cj_user_table", "cj.user-0", 2, 3, "--json"))
    assert closed["closed"]["first"] == 2
    analyzed = one_json(run("--id", "cj", "analyze", "--tables", tables, "--out", out, "--json"))
    assert len(analyzed["outputs"]) == 9 and analyzed["results"].rstrip("/") == str(out)
    rendered = one_json(run("--id", "cj", "report", "--tables", tables, "--out", tmp_path / "again", "--json"))
    assert any(w.endswith("report.html") for w in rendered["written"]), rendered
    # Reports that were JSON before stay JSON, with or without --json.
    forget = one_json(run("--id", "cj", "forget", "--ind", 1, "--tables", tables, "--settle-ms", 0, "--json"))
    assert forget["inds"] == [1]
    # The old spelling in seconds still works.
    forget = one_json(run("--id", "cj", "forget", "--ind", 1, "--tables", tables, "--settle", 0, "--dry-run"))
    assert forget["dry_run"] is True
    replay = one_json(run("--id", "cj", "replay", "--quarantine", "--tables", tables, "--dry-run"))
    assert replay["entries"] == 0
    bench = one_json(run("bench", "maintenance", "--appends", 3, "--posts", 2, "--dir", tmp_path / "bench", "--json"))
    assert bench["bench"] == "maintenance" and bench["ratio_after_before"] > 0, bench
    schedules = one_json(run("--json", "fault-schedules", "--schedules", 2, "--root", tmp_path / "schedules"))
    assert schedules["ok"] == 2 and schedules["failed"] == []


def test_demo_json_keeps_its_steps_on_stderr(tmp_path):
    p = run("--id", "dj", "demo", "--rows", 300, "--dir", tmp_path / "demo", "--json")
    summary = one_json(p)
    assert summary["posts"] == 300 and summary["sink"]["received"] == summary["records_sent"], summary
    assert len(summary["outputs"]) == 9
    assert "1/4 ingest API" in p.stderr and "4/4 analysis done" in p.stderr


def test_main_help_groups_every_command():
    text = run("--help").stdout
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[:4] == ["Pipeline (the Lambdas' work, on one machine):", "Operations:", "Local stack:", "Development:"]
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", text, re.M)
    # Every variant of `enum Command`, in kebab case, is listed once, except the hidden harness.
    source = (REPO / "cli" / "src" / "main.rs").read_text()
    body = source[source.index("enum Command {"):]
    body = body[:body.index("\n}\n")]
    variants = re.findall(r"^    ([A-Z][A-Za-z]*)\(", body, re.M)
    commands = {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}
    assert set(listed) - {"help"} == commands - {"fault-schedules"}, (listed, commands)
    assert len(listed) == len(set(listed))
    assert "fault-schedules" not in text
    assert "Exit status: 0 done, 1 failed" in text
    assert len(run("-h").stdout.splitlines()) <= 45, "the short help no longer fits a screen"
