"""`pinpipe bench --dir` and `pinpipe demo --dir` never empty a directory they did not make."""
import pytest

from conftest import run


@pytest.mark.parametrize("args", [["bench", "maintenance", "--appends", "1", "--rows", "1"],
                                  ["bench", "sink", "--records", "3", "--batches", "1"],
                                  ["bench", "batch", "--posts", "10"],
                                  ["demo", "--rows", "10"]], ids=["maintenance", "sink", "batch", "demo"])
def test_a_directory_not_made_by_the_command_is_refused_and_kept(tmp_path, args):
    precious = tmp_path / "work" / "precious.txt"
    precious.parent.mkdir()
    precious.write_text("a user's file")
    p = run(*args, "--dir", precious.parent, check=False)
    command = args[0]
    assert p.returncode != 0 and f"was not made by `pinpipe {command}`" in p.stderr, p.stderr
    assert precious.read_text() == "a user's file"
    assert sorted(x.name for x in precious.parent.iterdir()) == ["precious.txt"]


def test_bench_reuses_its_own_directory(tmp_path):
    work = tmp_path / "work"
    run("bench", "maintenance", "--appends", "2", "--rows", "1", "--dir", work)
    assert (work / ".pinpipe-bench").exists()
    run("bench", "maintenance", "--appends", "2", "--rows", "1", "--dir", work)
