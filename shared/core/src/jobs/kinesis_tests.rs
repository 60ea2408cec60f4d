//! The Kinesis path end to end on real tables and a real landing: landed before tabled,
//! replayed and rebuilt by position.

use aws_lambda_events::kinesis::KinesisEvent;
use object_store::ObjectStoreExt;

use crate::jobs::config::Config;
use crate::jobs::handlers::KinesisSink;
use crate::names::PipelineId;
use crate::storage::{kinesis_landing, Location};
use crate::writer::Tables;

const STREAM: &str = "streaming-k-user";
const SHARD: &str = "shardId-000000000000";

fn seq(n: u64) -> String {
    format!("4959{n:052}")
}

fn user(ind: i64) -> String {
    format!(r#"{{"ind":{ind},"first_name":"Ann","last_name":"Lee","age":30,"date_joined":"2016-01-01 00:00:00"}}"#)
}

/// A Kinesis event of one shard: (sequence number, data) pairs.
fn event(records: &[(u64, String)]) -> KinesisEvent {
    event_on(SHARD, records)
}

/// A Kinesis event of shard `shard`.
fn event_on(shard: &str, records: &[(u64, String)]) -> KinesisEvent {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(n, data)| {
            let v = serde_json::json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "p", "sequenceNumber": seq(*n),
                    "data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data),
                    "approximateArrivalTimestamp": 1705247984.638},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("{shard}:{}", seq(*n)), "eventName": "aws:kinesis:record",
                "awsRegion": "us-east-1",
                "eventSourceARN": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"),
            });
            v
        })
        .collect();
    serde_json::from_value(serde_json::json!({"Records": records})).expect("a Kinesis event")
}

struct Setup {
    dir: std::path::PathBuf,
    cfg: Config,
}

fn setup(tag: &str) -> Setup {
    let (dir, _) = crate::storage::test_root(tag);
    let at = |p: &str| Location::parse(dir.join(p).to_str().expect("utf-8")).expect("location");
    let mut cfg = Config::new(PipelineId::new("k").expect("id"), at("tables"));
    cfg.landing = Some(at("landing"));
    Setup { dir, cfg }
}

async fn inds(root: &Location) -> Vec<i64> {
    crate::delta::live_inds(root, "k_user_table").await
}

/// Writes a failed batch where `replay --from` reads them (Lambda's invocation record).
fn failure_folder(dir: &std::path::Path, events: &[&KinesisEvent]) -> Location {
    let folder = dir.join("failures");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for (i, e) in events.iter().enumerate() {
        let body = serde_json::json!({"requestContext": {"condition": "RetriesExhausted"}, "payload": e});
        std::fs::write(folder.join(format!("{i:03}.json")), body.to_string()).expect("write");
    }
    Location::parse(folder.to_str().expect("utf-8")).expect("location")
}

/// Deletes the landed object of the one-record run at `seq(n)` and its extent marker, as a
/// replay that stopped between its commit and its landing leaves it; returns the object's key.
async fn unland(store: &std::sync::Arc<dyn object_store::ObjectStore>, n: u64) -> object_store::path::Path {
    let at = crate::watermark::SequenceNumber::parse(&seq(n)).unwrap();
    let key = kinesis_landing::object_key(STREAM, SHARD, &at);
    store.delete(&key).await.unwrap();
    store.delete(&kinesis_landing::extent_key(STREAM, SHARD, &at, &at)).await.unwrap();
    key
}

/// Item: a given-up batch holding a re-post (the same bytes as a row already tabled) is
/// tabled by a replay, because replay decides by position; a second replay adds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_repost_below_the_watermark_is_tabled_once() {
    let s = setup("kin-repost");
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    sink.handle(event(&[(100, user(1))])).await.unwrap();
    // Batch X (seq 200, the same post sent again) was given up before it could be landed.
    let x = event(&[(200, user(1)), (201, user(2))]);
    sink.handle(event(&[(300, user(3))])).await.unwrap();
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 3]);
    let from = failure_folder(&s.dir, &[&x]);
    let r = crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    assert_eq!((r.tabled, r.already_present), (2, 0), "{r:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 1, 2, 3]);
    let again = crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    assert_eq!((again.tabled, again.already_present), (0, 2), "{again:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 1, 2, 3]);
    // The redelivery of a batch the sink did table is found in the landing, not re-tabled.
    let dup = failure_folder(&s.dir, &[&event(&[(100, user(1))])]);
    let r = crate::jobs::replay::replay_from(&s.cfg, &dup, false).await.unwrap();
    assert_eq!((r.tabled, r.already_present), (0, 1), "{r:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 1, 2, 3]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: a replay that tabled a run below the watermark and stopped before landing it
/// (its marker is in the table) only lands it when run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_stopped_before_landing_is_finished_without_a_second_copy() {
    let s = setup("kin-replay-stop");
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    sink.handle(event(&[(100, user(1))])).await.unwrap();
    sink.handle(event(&[(300, user(3))])).await.unwrap();
    let x = event(&[(200, user(2))]);
    let from = failure_folder(&s.dir, &[&x]);
    crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    // Remove what the replay landed, as if it had stopped between its commit and its landing.
    let store = s.cfg.landing.as_ref().unwrap().store().unwrap();
    let key = unland(&store, 200).await;
    let r = crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    assert_eq!((r.tabled, r.already_present), (0, 1), "{r:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 2, 3]);
    assert!(kinesis_landing::read(&store, &key).await.is_ok(), "the second run lands the record");
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: Kinesis replays below the watermark leave one txn action per table however many runs
/// they table; the marked commit lists the runs not yet landed, so a run stopped before its
/// landing is finished without a second copy after other runs moved the marker on.
#[tokio::test(flavor = "multi_thread")]
async fn replayed_runs_share_one_marker_that_lists_the_unlanded_ones() {
    let s = setup("kin-replay-fold");
    let store = s.cfg.landing.as_ref().unwrap().store().unwrap();
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    sink.handle(event(&[(100, user(1))])).await.unwrap();
    sink.handle(event(&[(900, user(9))])).await.unwrap();
    let run = |n: u64| failure_folder(&s.dir.join(format!("f{n}")), &[&event(&[(n, user(n as i64))])]);
    // Run 200 is tabled and its landing lost, as if the replay stopped in between.
    crate::jobs::replay::replay_from(&s.cfg, &run(200), false).await.unwrap();
    unland(&store, 200).await;
    // Other runs move the marker on; their commits carry run 200 along.
    for n in 300..320 {
        let r = crate::jobs::replay::replay_from(&s.cfg, &run(n), false).await.unwrap();
        assert_eq!(r.tabled, 1, "{r:?}");
    }
    let r = crate::jobs::replay::replay_from(&s.cfg, &run(200), false).await.unwrap();
    assert_eq!((r.tabled, r.already_present), (0, 1), "{r:?}");
    let mut want: Vec<i64> = vec![1, 9, 200];
    want.extend(300..320);
    want.sort();
    assert_eq!(inds(&s.cfg.tables).await, want);
    // Landed now: the next replay drops it from the list.
    crate::jobs::replay::replay_from(&s.cfg, &run(400), false).await.unwrap();
    let table = crate::delta::open(&s.cfg.tables, "k_user_table").await.unwrap().unwrap();
    let txns = crate::delta::Txns::read(&table, "k_user_table").await.unwrap();
    let markers: Vec<&str> = txns.app_ids().filter(|a| a.starts_with("pinpipe-replay")).collect();
    assert_eq!(markers, vec!["pinpipe-replay"], "one txn action for 22 replayed runs");
    let at = txns.get("pinpipe-replay").unwrap();
    let listed = crate::delta::txn_commit_metadata(&table, "k_user_table", "pinpipe-replay", at, "pinpipe.replayed").await.unwrap();
    assert_eq!(listed, Some(serde_json::json!([[STREAM, SHARD, seq(400)]])));
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: a delivery landed but never tabled (given up after landing) is tabled by the next
/// batch of its shard, before the watermark passes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_landed_but_untabled_delivery_is_tabled_by_the_next_batch() {
    let s = setup("kin-landed");
    let store = s.cfg.landing.as_ref().unwrap().store().unwrap();
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    sink.handle(event(&[(100, user(1))])).await.unwrap();
    let two = user(2);
    let sq = crate::watermark::SequenceNumber::parse(&seq(200)).unwrap();
    kinesis_landing::write(&store, STREAM, SHARD, &[(sq, Some(two.as_bytes()))]).await.unwrap();
    let r = sink.handle(event(&[(300, user(3))])).await.unwrap();
    assert_eq!(r.tabled, 2, "{r:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 2, 3]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: the Kinesis landing rebuilds the tables by position: every landed record once
/// (a re-post twice), a forgotten one never, redeliveries and replays not doubled.
#[tokio::test(flavor = "multi_thread")]
async fn the_kinesis_landing_rebuilds_the_same_tables() {
    let s = setup("kin-rebuild");
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    sink.handle(event(&[(100, user(1)), (101, user(2)), (102, "{oops".into())])).await.unwrap();
    sink.handle(event(&[(100, user(1)), (101, user(2)), (102, "{oops".into()), (103, user(1))])).await.unwrap();
    sink.handle(event(&[(400, user(4))])).await.unwrap();
    let from = failure_folder(&s.dir, &[&event(&[(200, user(5)), (201, user(6))])]);
    crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    let target = crate::jobs::forget::Target::Inds(vec![6]);
    crate::jobs::forget::forget(&s.cfg.tables, &s.cfg.id, &target, s.cfg.landing.as_ref(), false).await.unwrap();
    let live = inds(&s.cfg.tables).await;
    assert_eq!(live, vec![1, 1, 2, 4, 5]);
    let fresh = Location::parse(s.dir.join("rebuilt").to_str().unwrap()).unwrap();
    let mut tables = Tables::open(&fresh, &s.cfg.id).await.unwrap();
    let r = crate::writer::clean_landing(s.cfg.landing.as_ref().unwrap(), &mut tables, &|_, _| {}).await.unwrap();
    assert!(r.skipped_files.is_empty(), "{:?}", r.skipped_files);
    assert_eq!(r.per_kind["user"].quarantined, 1, "{r:?}");
    assert_eq!(inds(&fresh).await, live);
    // Caught up again: nothing new.
    let again = crate::writer::clean_landing(s.cfg.landing.as_ref().unwrap(), &mut tables, &|_, _| {}).await.unwrap();
    assert_eq!(again.total().tabled + again.total().quarantined, 0, "{again:?}");
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: a retry split smaller than the delivery that landed first (bisection) tables the
/// whole landed object, so the watermark never stops inside it; a replay of the rest then
/// finds it in.
#[tokio::test(flavor = "multi_thread")]
async fn a_bisected_retry_tables_the_whole_landed_object() {
    let s = setup("kin-bisect");
    let store = s.cfg.landing.as_ref().unwrap().store().unwrap();
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    // [100..103] landed, then the invocation failed; the retry carries [100..101] only.
    let all: Vec<(u64, String)> = (100..104).map(|n| (n, user(n as i64))).collect();
    let lines: Vec<(crate::watermark::SequenceNumber, Option<&[u8]>)> = all
        .iter()
        .map(|(n, d)| (crate::watermark::SequenceNumber::parse(&seq(*n)).unwrap(), Some(d.as_bytes())))
        .collect();
    kinesis_landing::write(&store, STREAM, SHARD, &lines).await.unwrap();
    let r = sink.handle(event(&all[..2])).await.unwrap();
    assert_eq!(r.tabled, 4, "{r:?}");
    // The second half is given up later; a replay finds it landed and tabled.
    let from = failure_folder(&s.dir, &[&event(&all[2..])]);
    let again = crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    assert_eq!((again.tabled, again.already_present), (0, 2), "{again:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![100, 101, 102, 103]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: the landing's objects expire (lifecycle) but their markers stay, so a replay of an
/// old failure object whose records were tabled still finds them landed and adds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_the_landing_expired_still_decides_by_position() {
    let s = setup("kin-expired");
    let store = s.cfg.landing.as_ref().unwrap().store().unwrap();
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    let tabled = event(&[(100, user(1)), (101, user(2))]);
    sink.handle(tabled.clone()).await.unwrap();
    sink.handle(event(&[(300, user(3))])).await.unwrap();
    for o in kinesis_landing::shard_objects(&store, STREAM, SHARD).await.unwrap() {
        store.delete(&o.key).await.unwrap();
    }
    let from = failure_folder(&s.dir, &[&tabled, &event(&[(200, user(9))])]);
    let r = crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
    assert_eq!((r.tabled, r.already_present), (1, 2), "{r:?}");
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 2, 3, 9]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item: a shard whose last object has no marker (its writer stopped half way) still gets
/// the landed objects before it tabled by a rebuild; the half-written one is left out.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_tables_a_shard_whose_last_object_is_half_written() {
    let s = setup("kin-half");
    let store = s.cfg.landing.as_ref().unwrap().store().unwrap();
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    sink.handle(event(&[(100, user(1)), (101, user(2))])).await.unwrap();
    let half = kinesis_landing::object_key(STREAM, SHARD, &crate::watermark::SequenceNumber::parse(&seq(300)).unwrap());
    store.put(&half, format!("{} {}\n", seq(300), user(3)).into_bytes().into()).await.unwrap();
    let fresh = Location::parse(s.dir.join("rebuilt").to_str().unwrap()).unwrap();
    let mut tables = Tables::open(&fresh, &s.cfg.id).await.unwrap();
    crate::writer::clean_landing(s.cfg.landing.as_ref().unwrap(), &mut tables, &|_, _| {}).await.unwrap();
    assert_eq!(inds(&fresh).await, vec![1, 2]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

fn shard(i: u64) -> String {
    format!("shardId-{i:012}")
}

/// Every txn app id of a table.
async fn txn_ids(root: &Location, name: &str) -> Vec<String> {
    let table = crate::delta::open(root, name).await.unwrap().unwrap();
    let txns = crate::delta::Txns::read(&table, name).await.unwrap();
    let mut ids: Vec<String> = txns.app_ids().map(str::to_string).collect();
    ids.sort();
    ids
}

/// Item 8: closed shards give their watermark slots to new ones, so the txn actions stay as
/// many as the shards open at once, however many shards the stream ever had; a shard moved
/// out still decides by position (redelivered records skipped, new ones tabled once), also
/// after a vacuum with the clock moved past retention.
#[tokio::test(flavor = "multi_thread")]
async fn closed_shards_give_their_slots_to_new_ones_and_still_decide_by_position() {
    let mut s = setup("kin-slots");
    s.cfg.shard_idle_hours = 0.0;
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    // 30 shards, one after the other, as resharding closes each; every third has a bad record.
    let batch = |i: u64| {
        let mut r = vec![(100 + i, user(i as i64))];
        if i.is_multiple_of(3) {
            r.push((101 + i, "{oops".to_string()));
        }
        event_on(&shard(i), &r)
    };
    for i in 0..30 {
        let r = sink.handle(batch(i)).await.unwrap();
        assert_eq!((r.tabled, r.quarantined), (1, u64::from(i.is_multiple_of(3))), "{r:?}");
    }
    for name in ["k_user_table", "k_quarantine"] {
        let ids = txn_ids(&s.cfg.tables, name).await;
        assert!(ids.len() <= 8, "{name}: txn actions grow with closed shards: {ids:?}");
        assert!(ids.contains(&"pinpipe-shards".to_string()), "{name}: {ids:?}");
    }
    // Every shard's batch again (a late redelivery): all held, by the archive's watermarks.
    for i in 0..30 {
        let r = sink.handle(batch(i)).await.unwrap();
        assert_eq!((r.tabled, r.quarantined, r.at_or_below_watermark), (0, 0, 1 + u64::from(i.is_multiple_of(3))), "shard {i}: {r:?}");
    }
    let table = crate::delta::open(&s.cfg.tables, "k_user_table").await.unwrap().unwrap();
    crate::jobs::maintenance::vacuum_at(table, "k_user_table", 168, Some(chrono::Utc::now() + chrono::Duration::days(30)))
        .await
        .unwrap();
    // A fresh container (cold start) after the vacuum: shard 4 moved out, its next record
    // is tabled once, and a replay of a record below its watermark that the landing never
    // held is tabled once too.
    let mut cold = KinesisSink::open(&s.cfg).await.unwrap();
    let r = cold.handle(event_on(&shard(4), &[(104, user(4)), (500, user(500))])).await.unwrap();
    assert_eq!((r.tabled, r.at_or_below_watermark), (1, 1), "{r:?}");
    let from = failure_folder(&s.dir, &[&event_on(&shard(4), &[(50, user(50))])]);
    for want in [(1, 0), (0, 1)] {
        let r = crate::jobs::replay::replay_from(&s.cfg, &from, false).await.unwrap();
        assert_eq!((r.tabled, r.already_present), want, "{r:?}");
    }
    // One commit with a new shard and the shard in the slot it would take: the new one takes
    // another, and both watermarks stay (a redelivery of both tables nothing).
    let mut tables = Tables::open(&s.cfg.tables, &s.cfg.id).await.unwrap();
    tables.set_shard_idle_hours(0.0);
    let two = |a: u64, b: u64| {
        let rec = |i: u64, n: u64| {
            let text = seq(n);
            let at = crate::watermark::SequenceNumber::parse(&text).unwrap();
            let body = bytes::Bytes::from(user(n as i64));
            crate::storage::landing::SourceRecords::from_records(STREAM, &shard(i), [(at, crate::record::Position::Text(text.into()), body)])
        };
        vec![rec(99, a), rec(4, b)]
    };
    assert_eq!(tables.write(crate::Kind::User, two(600, 700)).await.unwrap().tabled, 2);
    let again = tables.write(crate::Kind::User, two(600, 700)).await.unwrap();
    assert_eq!((again.tabled, again.skipped), (0, 2), "{again:?}");
    let mut want: Vec<i64> = (0..30).chain([50, 500, 600, 700]).collect();
    want.sort();
    assert_eq!(inds(&s.cfg.tables).await, want);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item 8: a shard taking the slot of an idle one races that shard's own delivery (it was
/// idle, not closed): the delivery really commits between the taker's staging and its
/// commit. The taker's commit conflicts on the slot and is staged again, so the archive gets
/// the idle shard's new watermark and a redelivery of its batch is not tabled twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_shard_taking_a_slot_races_the_idle_shards_own_delivery() {
    let mut s = setup("kin-slot-race");
    s.cfg.shard_idle_hours = 0.0;
    let mut a = KinesisSink::open(&s.cfg).await.unwrap();
    a.handle(event_on(&shard(1), &[(100, user(1))])).await.unwrap();
    let mut b = KinesisSink::open(&s.cfg).await.unwrap();
    let (reached, resume) = (std::sync::Arc::new(tokio::sync::Notify::new()), std::sync::Arc::new(tokio::sync::Notify::new()));
    b.tables.pause_between_commits(reached.clone(), resume.clone());
    let taker = tokio::spawn(async move {
        let r = b.handle(event_on(&shard(2), &[(200, user(2))])).await;
        (b, r)
    });
    reached.notified().await;
    let late = event_on(&shard(1), &[(150, user(15))]);
    let r = a.handle(late.clone()).await.unwrap();
    assert_eq!(r.tabled, 1, "{r:?}");
    resume.notify_one();
    let (_b, r) = taker.await.unwrap();
    assert_eq!(r.unwrap().tabled, 1);
    let mut cold = KinesisSink::open(&s.cfg).await.unwrap();
    for (e, skipped) in [(late, 1), (event_on(&shard(1), &[(100, user(1))]), 1), (event_on(&shard(2), &[(200, user(2))]), 1)] {
        let r = cold.handle(e).await.unwrap();
        assert_eq!((r.tabled, r.at_or_below_watermark), (0, skipped), "{r:?}");
    }
    assert_eq!(inds(&s.cfg.tables).await, vec![1, 2, 15]);
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Item 8: a slot written within the idle time is not taken (its shard may be open): a new
/// shard gets a slot of its own, read back from the log by a fresh container, and nothing is
/// moved to the archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_written_within_the_idle_time_is_not_taken() {
    let s = setup("kin-slot-busy");
    KinesisSink::open(&s.cfg).await.unwrap().handle(event_on(&shard(1), &[(100, user(1))])).await.unwrap();
    KinesisSink::open(&s.cfg).await.unwrap().handle(event_on(&shard(2), &[(100, user(2))])).await.unwrap();
    let ids = txn_ids(&s.cfg.tables, "k_user_table").await;
    let slots: Vec<&String> = ids.iter().filter(|id| !id.contains('#')).collect();
    assert_eq!(slots, [&format!("{STREAM}~0"), &format!("{STREAM}~1"), &format!("{STREAM}~slots")], "{ids:?}");
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// The archive ids in a table's `_pinpipe/shards/` folder, sorted.
fn archive_ids(dir: &std::path::Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Item 7 for shard archives: vacuum deletes archive objects no writer can read any more (the
/// archives replaced long ago, and the object of an attempt that lost its race) and keeps the
/// current one and the one it replaced while that replacement is recent; a fresh object is
/// kept whatever it is (its attempt may still be committing). Afterwards every closed shard
/// still decides by position.
#[tokio::test(flavor = "multi_thread")]
async fn vacuum_deletes_shard_archives_no_writer_can_read() {
    let mut s = setup("kin-archive-vacuum");
    s.cfg.shard_idle_hours = 0.0;
    let mut sink = KinesisSink::open(&s.cfg).await.unwrap();
    // Five shards one after the other: each takes the last one's slot, so four archives, each
    // naming the one it replaced.
    let batch = |i: u64| event_on(&shard(i), &[(100 + i, user(i as i64))]);
    for i in 0..5 {
        sink.handle(batch(i)).await.unwrap();
    }
    let folder = s.dir.join("tables/k_user_table/_pinpipe/shards");
    let written = archive_ids(&folder);
    assert_eq!(written.len(), 4, "{written:?}");
    let table = crate::delta::open(&s.cfg.tables, "k_user_table").await.unwrap().unwrap();
    let txns = crate::delta::Txns::read(&table, "k_user_table").await.unwrap();
    let current = crate::writer::shard_slots::archive_path(txns.get("pinpipe-shards").unwrap()).filename().unwrap().to_string();
    let body = std::fs::read(folder.join(&current)).unwrap();
    let prev = crate::writer::shard_slots::parse_archive("current", &body).unwrap().prev.expect("the archive it replaced");
    let prev = crate::writer::shard_slots::archive_path(prev).filename().unwrap().to_string();
    // An attempt that lost its race left its object; everything was written ten days ago.
    let orphan = crate::writer::shard_slots::archive_path(42).filename().unwrap().to_string();
    std::fs::write(folder.join(&orphan), br#"{"prev":null,"shards":{}}"#).unwrap();
    let ten_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
    for id in archive_ids(&folder) {
        std::fs::File::options().write(true).open(folder.join(id)).unwrap().set_modified(ten_days_ago).unwrap();
    }
    // A fresh orphan: its attempt may still be running.
    let fresh = crate::writer::shard_slots::archive_path(43).filename().unwrap().to_string();
    std::fs::write(folder.join(&fresh), br#"{"prev":null,"shards":{}}"#).unwrap();
    // The pointer moved a moment ago, so the archive it replaced is kept; older ones go.
    let (table, _) = crate::jobs::maintenance::vacuum_at(table, "k_user_table", 168, None).await.unwrap();
    let mut want = vec![current.clone(), prev.clone(), fresh.clone()];
    want.sort();
    assert_eq!(archive_ids(&folder), want);
    // Past retention, only the current archive is left.
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    crate::jobs::maintenance::vacuum_at(table, "k_user_table", 168, Some(later)).await.unwrap();
    assert_eq!(archive_ids(&folder), vec![current]);
    // A fresh container: every shard's batch again is held, by slot or by the archive.
    let mut cold = KinesisSink::open(&s.cfg).await.unwrap();
    for i in 0..5 {
        let r = cold.handle(batch(i)).await.unwrap();
        assert_eq!((r.tabled, r.at_or_below_watermark), (0, 1), "shard {i}: {r:?}");
    }
    assert_eq!(inds(&s.cfg.tables).await, vec![0, 1, 2, 3, 4]);
    let _ = std::fs::remove_dir_all(&s.dir);
}
