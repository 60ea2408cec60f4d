"""The scheduled analysis Lambda's handler on the sample EventBridge event, against moto's S3."""
import json

import boto3

from conftest import REPO, read_table, run

EVENT = REPO / "events" / "eventbridge-schedule.json"
ID = "121ca9f7ce2b"


def s3_client(env):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def objects(s3, bucket, prefix):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def test_scheduled_analysis_catches_up_analyzes_and_reruns_identically(tmp_path, moto_s3):
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket="sched")
    src = tmp_path / "gen"
    run("generate", "--rows", 500, "--duplicates", 0.1, "--out", src)
    for kind in ("pin", "geo", "user"):
        s3.upload_file(str(src / f"{kind}.jsonl"), "sched", f"landing/{kind}.jsonl")
    env = dict(moto_s3, PINPIPE_ID=ID, PINPIPE_TABLES="s3://sched/tables", PINPIPE_LANDING="s3://sched/landing",
               PINPIPE_REPORTS="s3://sched", PINPIPE_COMPACT_MIN_FILES="2", PINPIPE_VACUUM_RETENTION_HOURS="0")

    first = json.loads(run("invoke", "batch-analysis", "--event", EVENT, env=env).stdout)
    event_time = json.loads(EVENT.read_text())["time"]
    assert first["run_time"].startswith(event_time[:19])
    assert first["catch_up"]["tabled"] == 1650 and first["catch_up"]["skipped"] == 0
    assert set(first["outputs"]) == {
        "category_by_country", "category_by_year", "top_user_by_country", "top_country",
        "category_by_age_group", "median_followers_by_age_group", "users_joined_by_year",
        "median_followers_by_join_year", "median_followers_by_age_group_and_join_year"}
    dated = objects(s3, "sched", "reports/2026-11-27/")
    latest = objects(s3, "sched", "reports/latest/")
    assert set(dated) == set(latest) == {f"{n}.csv" for n in first["outputs"]} | {"results.json", "report.html"}
    assert json.loads(dated["results.json"])["run_time"].startswith(event_time[:19])

    # The handler's results equal `pinpipe analyze` on the same tables.
    run("--id", ID, "analyze", "--tables", "s3://sched/tables", "--out", tmp_path / "cli", env=moto_s3)
    for name in first["outputs"]:
        assert (tmp_path / "cli" / f"{name}.csv").read_bytes() == dated[f"{name}.csv"], name

    # A rerun for the same schedule adds nothing and writes the same results.
    second = json.loads(run("invoke", "batch-analysis", "--event", EVENT, env=env).stdout)
    assert second["catch_up"]["tabled"] == 0 and second["catch_up"]["skipped"] == 1650
    again = objects(s3, "sched", "reports/2026-11-27/")
    for f in [f"{n}.csv" for n in first["outputs"]] + ["results.json"]:
        assert again[f] == dated[f], f
    opts = {k: v for k, v in moto_s3.items() if k.startswith("AWS_")}
    pins = read_table("s3://sched/tables", f"{ID}_pin_table", storage_options=opts)
    assert len(pins) == 550
    out_rows = read_table("s3://sched/tables", f"{ID}_top_country", storage_options=opts)
    assert len(out_rows) == 1 and out_rows[0]["run_time"].isoformat().startswith(event_time[:19])


def test_invoke_reports_missing_configuration(tmp_path):
    p = run("invoke", "batch-analysis", "--event", EVENT, check=False)
    assert p.returncode != 0 and "PINPIPE_ID is not set" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "an event"}')
    p = run("invoke", "batch-analysis", "--event", bad, env={"PINPIPE_ID": ID, "PINPIPE_TABLES": str(tmp_path)},
            check=False)
    assert p.returncode != 0 and "not an EventBridge event" in p.stderr
