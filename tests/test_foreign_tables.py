"""Tables another engine changed: pinpipe refuses, naming the feature, what it would misread or
lose; it never writes over them. The changes are made with the deltalake Python package (a
writer that is not pinpipe's)."""

import json

import pytest
from deltalake import DeltaTable
from deltalake.table import TableFeatures

from conftest import run

ID = "121ca9f7ce2b"


@pytest.fixture
def tables(tmp_path):
    src, out = tmp_path / "src", tmp_path / "tables"
    run("generate", "--rows", 40, "--seed", 3, "--out", src)
    run("--id", ID, "clean", "--input", src, "--output", out)
    return src, out


def files_of(table):
    return sorted(DeltaTable(str(table)).file_uris())


def test_a_table_that_expires_txn_actions_is_refused_before_any_write(tables):
    src, out = tables
    user = out / f"{ID}_user_table"
    DeltaTable(str(user)).alter.set_table_properties({"delta.setTransactionRetentionDuration": "interval 1 days"})
    version, files = DeltaTable(str(user)).version(), files_of(user)
    p = run("--id", ID, "clean", "--input", src, "--output", out, check=False)
    assert p.returncode != 0
    assert "delta.setTransactionRetentionDuration" in p.stderr and "unset the property" in p.stderr, p.stderr
    assert DeltaTable(str(user)).version() == version and files_of(user) == files


@pytest.mark.parametrize("feature, name", [(TableFeatures.DeletionVectors, "deletionVectors"),
                                           (TableFeatures.ColumnMapping, "columnMapping")])
def test_reader_features_are_refused_by_name(tables, feature, name):
    src, out = tables
    pin = out / f"{ID}_pin_table"
    DeltaTable(str(pin)).alter.add_feature(feature, allow_protocol_versions_increase=True)
    for args in (["analyze", "--tables", out, "--out", out.parent / "results"],
                 ["clean", "--input", src, "--output", out]):
        p = run("--id", ID, *args, check=False)
        assert p.returncode != 0, args
        assert name in p.stderr and "not one pinpipe can use" in p.stderr, p.stderr


def rows_of(out):
    """Rows per table, from the files the Python reader's log replay lists (its pyarrow
    reader refuses V2-checkpoint tables; none of these tables has deletion vectors)."""
    import pyarrow.parquet as pq

    return {t.name: sum(pq.ParquetFile(u.removeprefix("file://")).metadata.num_rows for u in DeltaTable(str(t)).file_uris())
            for t in sorted(out.iterdir()) if t.is_dir()}


def recheckpoint(table, shape):
    """Checkpoints `table` as another engine would (`shape`: a V2 checkpoint under a UUID name,
    or a classic checkpoint in three parts), then deletes the commits before it, so the txn
    actions that hold pinpipe's exactly-once state are only in that checkpoint."""
    import uuid

    import pyarrow.parquet as pq

    dt = DeltaTable(str(table))
    if shape == "v2":
        dt.alter.add_feature(TableFeatures.V2Checkpoint, allow_protocol_versions_increase=True)
        dt = DeltaTable(str(table))
    dt.create_checkpoint()
    v, log = dt.version(), table / "_delta_log"
    single = log / f"{v:020}.checkpoint.parquet"
    actions = pq.read_table(single)
    if shape == "v2":
        single.rename(log / f"{v:020}.checkpoint.{uuid.uuid4()}.parquet")
        hint = {"version": v, "size": actions.num_rows}
    else:
        n = 3
        step = -(-actions.num_rows // n)
        for i in range(n):
            pq.write_table(actions.slice(i * step, step), log / f"{v:020}.checkpoint.{i + 1:010}.{n:010}.parquet")
        single.unlink()
        hint = {"version": v, "size": actions.num_rows, "parts": n}
    (log / "_last_checkpoint").write_text(json.dumps(hint))
    for old in range(v):
        (log / f"{old:020}.json").unlink()


@pytest.mark.parametrize("shape", ["v2", "multi-part"])
def test_checkpoints_other_engines_write_keep_exactly_once(tables, tmp_path, shape):
    """V2 (UUID-named) and multi-part checkpoints are read through the Delta kernel's log
    segment: with the commits before them gone, a rerun still finds every file's watermark
    (nothing tabled twice), and new input is still tabled and analysed."""
    src, out = tables
    for table in sorted(out.iterdir()):
        if table.is_dir():
            recheckpoint(table, shape)
    before = rows_of(out)
    run("--id", ID, "clean", "--input", src, "--output", out)
    assert rows_of(out) == before, "a rerun tabled files the checkpoint already held"
    more = tmp_path / "more"
    run("generate", "--rows", 20, "--seed", 4, "--out", more)
    appended = 0
    for f in more.glob("*.jsonl"):  # appended lines: positions past each file's watermark
        with open(src / f.name, "ab") as dest:
            dest.write(f.read_bytes())
        appended += len(f.read_bytes().splitlines())
    run("--id", ID, "clean", "--input", src, "--output", out)
    after = rows_of(out)
    assert appended and sum(after.values()) == sum(before.values()) + appended, (appended, before, after)
    run("--id", ID, "analyze", "--tables", out, "--out", tmp_path / "results")
