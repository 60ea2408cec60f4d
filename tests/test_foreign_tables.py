"""Tables another engine changed: pinpipe refuses, naming the feature, what it would misread or
lose; it never writes over them. The changes are made with the deltalake Python package (a
writer that is not pinpipe's)."""

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
