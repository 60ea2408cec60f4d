"""The landing and the Delta tables on S3 (moto on 127.0.0.1): same results as local disk."""
import boto3

from conftest import read_table, run


def test_clean_and_analyze_on_s3_match_local(tmp_path, moto_s3):
    src = tmp_path / "gen"
    run("generate", "--rows", 400, "--duplicates", 0.1, "--seed", 11, "--out", src)
    s3 = boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket="pinpipe-test")
    for kind in ("pin", "geo", "user"):
        s3.upload_file(str(src / f"{kind}.jsonl"), "pinpipe-test", f"landing/{kind}.jsonl")

    run("clean", "--input", "s3://pinpipe-test/landing", "--output", "s3://pinpipe-test/tables", env=moto_s3)
    again = run("clean", "--input", "s3://pinpipe-test/landing", "--output", "s3://pinpipe-test/tables",
                env=moto_s3).stdout
    assert "0 tabled" in again and "1320 already present" in again
    # Read from S3 in parts (about 100 posts each, spilled to local disk): the same outputs.
    run("analyze", "--tables", "s3://pinpipe-test/tables", "--out", "s3://pinpipe-test/out",
        env=dict(moto_s3, PINPIPE_ANALYSIS_PART_ROWS="100"))

    run("clean", "--input", src, "--output", tmp_path / "tables")
    run("analyze", "--tables", tmp_path / "tables", "--out", tmp_path / "out")

    opts = {"AWS_ENDPOINT_URL": moto_s3["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    remote = read_table("s3://pinpipe-test/tables", "demo_pin_table", storage_options=opts)
    local = read_table(tmp_path / "tables", "demo_pin_table")
    key = lambda r: (r["ind"], r["unique_id"])
    assert len(remote) == 440
    assert sorted(remote, key=key) == sorted(local, key=key)
    for name in ("category_by_country", "top_user_by_country", "median_followers_by_age_group",
                 "users_joined_by_year", "median_followers_by_age_group_and_join_year"):
        body = s3.get_object(Bucket="pinpipe-test", Key=f"out/{name}.csv")["Body"].read()
        assert body == (tmp_path / "out" / f"{name}.csv").read_bytes(), name


def test_unreachable_s3_is_a_clear_error(tmp_path):
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_REGION": "us-east-1"}
    p = run("clean", "--input", "s3://nowhere/landing", "--output", tmp_path / "t", env=env, check=False)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].startswith("error:")
