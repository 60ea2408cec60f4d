"""A small Delta Lake reader that is not delta-rs: it replays `_delta_log` itself (the last
checkpoint's Parquet parts, then the JSON commits after it) and reads the active files with
pyarrow. The exactly-once tests read pinpipe's tables with it beside the deltalake package
(delta-rs), so a bug that pinpipe's writer and delta-rs share cannot hide behind agreement.

It supports what pinpipe's tables use (single and multi-part checkpoints, JSON commits, no
partitions) and refuses what it does not read (deletion vectors, column mapping)."""

import json
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def _filesystem(table_uri, storage_options=None):
    """(filesystem, path of the table in it) for a local path or an s3:// URI (moto)."""
    if "://" not in str(table_uri):
        return pafs.LocalFileSystem(), str(table_uri)
    u = urlparse(str(table_uri))
    o = storage_options or {}
    endpoint = o.get("AWS_ENDPOINT_URL") or o.get("AWS_ENDPOINT_URL_S3")
    fs = pafs.S3FileSystem(
        access_key=o.get("AWS_ACCESS_KEY_ID"), secret_key=o.get("AWS_SECRET_ACCESS_KEY"),
        region=o.get("AWS_REGION", o.get("AWS_DEFAULT_REGION", "us-east-1")),
        endpoint_override=urlparse(endpoint).netloc if endpoint else None,
        scheme=urlparse(endpoint).scheme if endpoint else "https")
    return fs, u.netloc + u.path.rstrip("/")


def _read_text(fs, path):
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _exists(fs, path):
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def active_files(table_uri, storage_options=None):
    """The table's active data files (relative paths) and its txn versions, by log replay."""
    fs, root = _filesystem(table_uri, storage_options)
    log = f"{root}/_delta_log"
    files, txns, start = {}, {}, 0
    if _exists(fs, f"{log}/_last_checkpoint"):
        hint = json.loads(_read_text(fs, f"{log}/_last_checkpoint"))
        version, parts = hint["version"], hint.get("parts")
        if "v2Checkpoint" in hint or (parts is None and not _exists(fs, f"{log}/{version:020d}.checkpoint.parquet")):
            raise NotImplementedError(f"{table_uri}: a checkpoint this reader does not read: {hint}")
        paths = ([f"{log}/{version:020d}.checkpoint.parquet"] if not parts else
                 [f"{log}/{version:020d}.checkpoint.{i:010d}.{parts:010d}.parquet" for i in range(1, parts + 1)])
        for p in paths:
            with fs.open_input_file(p) as f:
                cp = pq.read_table(f).to_pylist()
            for row in cp:
                _apply(row, files, txns)
        start = version + 1
    v = start
    while _exists(fs, f"{log}/{v:020d}.json"):
        for line in _read_text(fs, f"{log}/{v:020d}.json").splitlines():
            if line.strip():
                _apply(json.loads(line), files, txns)
        v += 1
    if v == start and start == 0:
        raise FileNotFoundError(f"{table_uri}: no Delta log")
    return fs, root, sorted(files), txns


def _apply(action, files, txns):
    add, remove, txn, meta = (action.get(k) for k in ("add", "remove", "txn", "metaData"))
    if add:
        if add.get("deletionVector"):
            raise NotImplementedError("deletion vectors")
        files[unquote(add["path"])] = True
    if remove:
        files.pop(unquote(remove["path"]), None)
    if txn:
        txns[txn["appId"]] = txn["version"]
    if meta and (meta.get("configuration") or {}).get("delta.columnMapping.mode", "none") != "none":
        raise NotImplementedError("column mapping")


def read_rows(table_uri, storage_options=None):
    """Every row of the table's active files, as dicts."""
    fs, root, paths, _ = active_files(table_uri, storage_options)
    tables = []
    for p in paths:
        with fs.open_input_file(f"{root}/{p}") as f:
            tables.append(pq.read_table(f))
    if not tables:
        return []
    return pa.concat_tables(tables, promote_options="default").to_pylist()
