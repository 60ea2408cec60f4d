//! The ingest API against librdkafka's mock cluster (a real Kafka-protocol broker on
//! 127.0.0.1, in this process): records posted through the handler are consumed back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::json::compact;
use crate::{Ingest, IngestConfig};

const ID: &str = "121ca9f7ce2b";

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    for kind in ["pin", "geo", "user"] {
        mock.create_topic(&format!("{ID}.{kind}"), 1, 1).expect("topic");
    }
    mock
}

async fn ingest(brokers: &str, timeout_ms: u64) -> Ingest {
    let cfg = IngestConfig::from_lookup(|k| match k {
        "PINPIPE_ID" => Some(ID.into()),
        "PINPIPE_KAFKA_BROKERS" => Some(brokers.into()),
        "PINPIPE_KINESIS" => Some("off".into()),
        "PINPIPE_PRODUCE_TIMEOUT_MS" => Some(timeout_ms.to_string()),
        _ => None,
    })
    .unwrap();
    Ingest::new(cfg).await.unwrap()
}

/// Every message of partition 0, read from the beginning until `want` arrived or 10 s passed.
fn consume(brokers: &str, topic: &str, want: usize) -> Vec<(i64, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "pinpipe-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && out.len() < want + 1 {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        } else if out.len() == want && Instant::now() + Duration::from_secs(9) > deadline {
            break; // nothing more after a quiet second
        }
    }
    out
}

fn event(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/apigw").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The values of a REST-proxy body, compacted as they should be stored.
fn posted_values(body: &str) -> Vec<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct B<'a> {
        #[serde(borrow)]
        records: Vec<R<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct R<'a> {
        #[serde(borrow)]
        value: &'a serde_json::value::RawValue,
    }
    let b: B<'_> = serde_json::from_str(body).unwrap();
    b.records.iter().map(|r| compact(r.value.get())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_events_rest_http_and_function_url_reach_kafka_byte_for_byte_once() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let api = ingest(&brokers, 10_000).await;
    for kind in ["pin", "geo", "user"] {
        let mut expected = Vec::new();
        // REST API (v1), HTTP API (v2, stage prefix in rawPath) and Function URL (v2 payload).
        for version in ["v1", "v2", "url"] {
            let ev = event(&format!("{version}-produce-{kind}.json"));
            let resp = api.handle_lambda_event(&ev).await.unwrap();
            assert_eq!(resp["statusCode"], 200, "{version} {kind}: {resp}");
            let body: Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["offsets"][0]["error_code"], Value::Null);
            assert_eq!(body["offsets"][0]["offset"], expected.len() as i64);
            expected.extend(posted_values(ev["body"].as_str().unwrap()));
        }
        let got = consume(&brokers, &format!("{ID}.{kind}"), expected.len());
        let payloads: Vec<Vec<u8>> = got.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(payloads, expected, "{kind}");
    }
    let first = String::from_utf8(consume(&brokers, &format!("{ID}.geo"), 2)[0].1.clone()).unwrap();
    assert_eq!(first, r#"{"ind":7528,"latitude":-89.9787,"longitude":-173.293,"country":"Albania","timestamp":"2020-08-28 03:52:47"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_requests_say_why_and_store_nothing() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let api = ingest(&brokers, 10_000).await;
    let kafka = "application/vnd.kafka.json.v2+json";
    let pin = |extra: Value| {
        let mut v = json!({"index": 1, "unique_id": "u", "title": "t", "follower_count": "26k", "downloaded": 1});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let body = |values: Vec<Value>| json!({"records": values.into_iter().map(|v| json!({"value": v})).collect::<Vec<_>>()}).to_string();
    let big = "x".repeat(crate::api::MAX_RECORD_BYTES + 10);
    // (what, content type, body, status, error_code, text the message holds)
    type Case<'a> = (&'a str, Option<&'a str>, String, u16, u32, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("malformed JSON", Some(kafka), "{\"records\": [{\"value\": {\"index\": 1,".into(), 422, 42201, "body must be"),
        ("wrong type", Some(kafka), body(vec![pin(json!({})), pin(json!({"title": {"a": 1}}))]), 422, 42201, "record 1"),
        ("array field", Some(kafka), body(vec![pin(json!({"tag_list": ["a"]}))]), 422, 42201, "tag_list"),
        ("missing key", Some(kafka), body(vec![json!({"title": "no key"})]), 422, 42201, "record 0"),
        ("float key", Some(kafka), body(vec![pin(json!({"index": 7528.5}))]), 422, 42201, "record 0"),
        ("not an object", Some(kafka), body(vec![json!([1, 2])]), 422, 42201, "record 0"),
        ("no value", Some(kafka), r#"{"records":[{"key":"k"}]}"#.into(), 422, 42201, "no value"),
        ("record too large", Some(kafka), body(vec![pin(json!({"description": big}))]), 413, 41301, "limit"),
        ("too many records", Some(kafka), body(vec![pin(json!({})); 501]), 413, 41301, "501 records"),
        ("body too large", Some(kafka), format!("{{\"records\":[],\"pad\":\"{}\"}}", "y".repeat(crate::api::MAX_BODY_BYTES)), 413, 41301, "limit"),
        ("wrong media type", Some("text/plain"), body(vec![pin(json!({}))]), 415, 41501, "Content-Type"),
        ("no media type", None, body(vec![pin(json!({}))]), 415, 41501, "Content-Type"),
    ];
    for (what, ctype, b, status, code, needle) in cases {
        let r = api.handle("POST", &format!("/topics/{ID}.pin"), ctype, b.as_bytes()).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error_code"], code, "{what}: {}", r.body);
        assert!(v["message"].as_str().unwrap().contains(needle), "{what}: {}", r.body);
    }
    let r = api.handle("POST", "/topics/other.pin", Some(kafka), body(vec![pin(json!({}))]).as_bytes()).await;
    assert_eq!((r.status, r.body.contains("40401")), (404, true), "{}", r.body);
    // The invalid sample event names the record and the field.
    let resp = api.handle_lambda_event(&event("v2-produce-invalid.json")).await.unwrap();
    assert_eq!(resp["statusCode"], 422);
    assert!(resp["body"].as_str().unwrap().contains("record 1 is not a valid pin record: field `title`"), "{resp}");
    // A datetime with an offset, numbers as strings, a null field: valid, stored as posted.
    let ok = r#"{"records":[{"value":{"ind":5,"timestamp":"2020-08-28T03:52:47.5+02:00","latitude":"1.5","longitude":null,"country":""}}]}"#;
    let r = api.handle("POST", &format!("/topics/{ID}.geo"), Some("application/json; charset=utf-8"), ok.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(consume(&brokers, &format!("{ID}.pin"), 0).is_empty(), "a refused request stored something");
    assert_eq!(consume(&brokers, &format!("{ID}.geo"), 1).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_is_503_and_nothing_is_stored() {
    let mock = cluster();
    let brokers = mock.bootstrap_servers();
    let api = ingest(&brokers, 1500).await;
    let body = r#"{"records":[{"value":{"ind":1,"age":20}},{"value":{"ind":2,"age":30}}]}"#;
    let path = format!("/topics/{ID}.user");
    let ctype = Some("application/vnd.kafka.json.v2+json");
    assert_eq!(api.handle("POST", &path, ctype, body.as_bytes()).await.status, 200);
    mock.broker_down(1).unwrap();
    let started = Instant::now();
    let r = api.handle("POST", &path, ctype, br#"{"records":[{"value":{"ind":3,"age":40}}]}"#).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("50301") && r.body.contains("nothing stored"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(30), "a 503 must come within a bounded time");
    mock.broker_up(1).unwrap();
    // A client retries a 503 until the broker is back; each 503 stored nothing.
    let mut statuses = Vec::new();
    while statuses.last() != Some(&200) && statuses.len() < 20 {
        statuses.push(api.handle("POST", &path, ctype, br#"{"records":[{"value":{"ind":4,"age":50}}]}"#).await.status);
    }
    assert!(statuses.iter().all(|s| *s == 503 || *s == 200) && statuses.last() == Some(&200), "{statuses:?}");
    let stored: Vec<String> = consume(&brokers, &format!("{ID}.user"), 3)
        .into_iter()
        .map(|(_, p)| String::from_utf8(p).unwrap())
        .collect();
    assert_eq!(stored, [r#"{"ind":1,"age":20}"#, r#"{"ind":2,"age":30}"#, r#"{"ind":4,"age":50}"#]);
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_and_describing_topics_and_streams() {
    let mock = cluster();
    let api = ingest(&mock.bootstrap_servers(), 5000).await;
    for version in ["v1", "v2"] {
        let r = api.handle_lambda_event(&event(&format!("{version}-list-topics.json"))).await.unwrap();
        let topics: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(topics, json!([format!("{ID}.pin"), format!("{ID}.geo"), format!("{ID}.user")]));
        let r = api.handle_lambda_event(&event(&format!("{version}-describe-topic.json"))).await.unwrap();
        assert_eq!(r["statusCode"], 200, "{r}");
        assert!(r["body"].as_str().unwrap().contains(r#""partitions":[{"partition":0}]"#), "{r}");
        let r = api.handle_lambda_event(&event(&format!("{version}-list-streams.json"))).await.unwrap();
        assert!(r["body"].as_str().unwrap().contains(&format!("streaming-{ID}-geo")), "{r}");
    }
    assert_eq!(api.handle("GET", "/nothing/here", None, b"").await.status, 404);
    assert_eq!(api.handle("DELETE", &format!("/topics/{ID}.pin"), None, b"").await.status, 405);
    assert_eq!(api.handle("PUT", "/streams/streaming-other-pin/record", None, b"{}").await.status, 404);
}

#[test]
fn produce_reply_gives_each_record_its_outcome_in_order() {
    use crate::kafka::Outcome;
    let body = crate::api::produce_reply(&[
        Outcome::Stored { partition: 2, offset: 41 },
        Outcome::Failed { retriable: true, message: "Local: Message timed out \"x\"".into() },
        Outcome::Failed { retriable: false, message: "Broker: Message size too large".into() },
    ]);
    let v: Value = serde_json::from_str(&body).expect("reply is JSON");
    assert_eq!(v["key_schema_id"], Value::Null);
    assert_eq!(v["value_schema_id"], Value::Null);
    let offsets = v["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 3);
    assert_eq!(offsets[0], serde_json::json!({"partition": 2, "offset": 41, "error_code": null, "error": null}));
    assert_eq!(offsets[1]["error_code"], 50003);
    assert_eq!(offsets[1]["error"], "Local: Message timed out \"x\"");
    assert_eq!(offsets[1]["offset"], Value::Null);
    assert_eq!(offsets[2]["error_code"], 50002);
}

#[test]
fn unstored_records_are_read_from_each_reply_shape() {
    use crate::api::unstored_records;
    let kafka = br#"{"offsets":[{"partition":0,"offset":5,"error_code":null,"error":null},
        {"partition":null,"offset":null,"error_code":50003,"error":"timed out"},{"partition":0,"offset":6}],
        "key_schema_id":null,"value_schema_id":null}"#;
    assert_eq!(unstored_records(false, 3, kafka), vec![1]);
    // A reply shorter than the request: the missing records count as not stored.
    assert_eq!(unstored_records(false, 4, kafka), vec![1, 3]);
    let put_records = br#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"4963","ShardId":"shardId-0"},
        {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"slow down"}]}"#;
    assert_eq!(unstored_records(true, 2, put_records), vec![1]);
    let one = br#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"4963","ShardId":"shardId-0"}]}"#;
    assert_eq!(unstored_records(true, 1, one), Vec::<usize>::new());
    assert_eq!(unstored_records(true, 1, br#"{"SequenceNumber":"4963","ShardId":"shardId-0"}"#), Vec::<usize>::new());
    assert_eq!(unstored_records(true, 1, br#"{"__type":"InternalFailure"}"#), vec![0]);
    assert_eq!(unstored_records(false, 2, b"not json"), vec![0, 1]);
}

/// The `Custom::KafkaTopics` resource against the mock cluster. The mock cluster answers
/// Metadata but not CreateTopics, so creating a topic is covered on tansu by
/// tests/test_infra.py; here: topics that exist, the answer a request gets when creation
/// fails, and that the answer always reaches the ResponseURL.
mod topics {
    use super::*;
    use crate::topics::{ensure_topics, handle_custom_resource, TopicOutcome, TopicsSpec};

    fn config(brokers: &str) -> IngestConfig {
        IngestConfig::from_lookup(|k| match k {
            "PINPIPE_ID" => Some(ID.into()),
            "PINPIPE_KAFKA_BROKERS" => Some(brokers.into()),
            "PINPIPE_KINESIS" => Some("off".into()),
            "PINPIPE_PRODUCE_TIMEOUT_MS" => Some("3000".into()),
            _ => None,
        })
        .unwrap()
    }

    fn spec(partitions: i32) -> TopicsSpec {
        TopicsSpec {
            topics: ["pin", "geo", "user"].iter().map(|k| format!("{ID}.{k}")).collect(),
            partitions,
            replication_factor: None,
        }
    }

    #[test]
    fn replication_defaults_to_the_broker_count_up_to_three() {
        assert_eq!([1, 2, 3, 5].map(crate::topics::auto_replication), [1, 2, 3, 3]);
        let props = |rf: Value| TopicsSpec::from_properties(&json!({"Topics": ["a.pin"], "ReplicationFactor": rf}));
        assert_eq!(props(json!("0")).unwrap().replication_factor, None);
        assert_eq!(props(json!("2")).unwrap().replication_factor, Some(2));
        assert!(props(json!("-1")).is_err());
        let absent = TopicsSpec::from_properties(&json!({"Topics": ["a.pin"]})).unwrap();
        assert_eq!(absent.replication_factor, None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_replication_factor_above_the_broker_count_is_refused_with_what_to_set() {
        let mock = MockCluster::new(2).unwrap();
        let brokers = mock.bootstrap_servers();
        let cfg = config(&brokers);
        let too_many = TopicsSpec { replication_factor: Some(3), ..spec(1) };
        let err = ensure_topics(&cfg, &brokers, &too_many).await.unwrap_err().to_string();
        assert!(err.contains("more than the cluster's 2 brokers") && err.contains("TopicReplicationFactor"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn existing_topics_are_kept_and_reported() {
        let mock = MockCluster::new(1).unwrap();
        for kind in ["pin", "geo", "user"] {
            mock.create_topic(&format!("{ID}.{kind}"), 2, 1).unwrap();
        }
        let brokers = mock.bootstrap_servers();
        let cfg = config(&brokers);
        let same = ensure_topics(&cfg, &brokers, &spec(2)).await.unwrap();
        assert!(same.values().all(|o| *o == TopicOutcome::Existed { partitions: 2 }), "{same:?}");
        assert_eq!(same.len(), 3);
        let fewer = ensure_topics(&cfg, &brokers, &spec(1)).await.unwrap();
        assert!(fewer.values().all(|o| *o == TopicOutcome::KeptMore { partitions: 2 }), "{fewer:?}");
    }

    /// A one-request HTTP server standing in for CloudFormation's pre-signed ResponseURL:
    /// returns the URL and a receiver of (content-type, body) of the PUT it gets.
    async fn response_url() -> (String, tokio::sync::oneshot::Receiver<(String, Value)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cfn-response?X-Amz-Signature=abc", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        assert!(head.starts_with("put "), "{head}");
                        let ct = head.lines().find_map(|l| l.strip_prefix("content-type:")).unwrap_or("absent").trim();
                        let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                        let _ = tx.send((ct.to_string(), body));
                        return;
                    }
                }
            }
        });
        (url, rx)
    }

    fn event(request_type: &str, url: &str, topics: &[&str], partitions: &str) -> Value {
        let mut e: Value = serde_json::from_str(include_str!("../../../events/cloudformation/topics-create.json")).unwrap();
        e["RequestType"] = request_type.into();
        e["ResponseURL"] = url.into();
        e["ResourceProperties"]["Topics"] = json!(topics);
        e["ResourceProperties"]["Partitions"] = partitions.into();
        if request_type != "Create" {
            e["PhysicalResourceId"] = "kafka-topics:old".into();
        }
        e
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn every_request_is_answered_at_its_response_url() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(&format!("{ID}.pin"), 1, 1).unwrap();
        let brokers = mock.bootstrap_servers();
        let cfg = config(&brokers);
        let pin = format!("{ID}.pin");

        // Existing topic, same partitions: SUCCESS, answered with an empty content type.
        let (url, rx) = response_url().await;
        let answer = handle_custom_resource(&cfg, &event("Create", &url, &[&pin], "1")).await.unwrap();
        let (ct, sent) = rx.await.unwrap();
        assert_eq!(sent, answer);
        assert_eq!(ct, "", "the pre-signed URL's signature covers an empty content type");
        assert_eq!(sent["Status"], "SUCCESS", "{sent}");
        assert_eq!(sent["PhysicalResourceId"], format!("kafka-topics:{pin}"));
        assert_eq!(sent["LogicalResourceId"], "PipelineTopics");
        assert!(sent["Data"]["Outcome"].as_str().unwrap().contains("existed with 1 partitions"), "{sent}");

        // A topic the cluster cannot create (the mock has no CreateTopics): FAILED with the reason.
        let (url, rx) = response_url().await;
        handle_custom_resource(&cfg, &event("Create", &url, &[&pin, "missing.topic"], "1")).await.unwrap();
        let (_, sent) = rx.await.unwrap();
        assert_eq!(sent["Status"], "FAILED", "{sent}");
        assert!(sent["Reason"].as_str().unwrap().contains("CreateTopics"), "{sent}");

        // The same request through the Lambda's entry (lambda_http passes it through).
        let api = Ingest::new(cfg.clone()).await.unwrap();
        let (url, rx) = response_url().await;
        let answer = api.handle_lambda_event(&event("Create", &url, &[&pin], "1")).await.unwrap();
        let (_, sent) = rx.await.unwrap();
        assert_eq!((sent["Status"].as_str(), &answer), (Some("SUCCESS"), &sent), "{sent}");
        // Neither an HTTP request nor a custom-resource request: an error that says so.
        let err = api.handle_lambda_event(&serde_json::json!({"hello": 1})).await.unwrap_err().to_string();
        assert!(err.contains("not an API Gateway, Function URL or custom-resource event"), "{err}");

        // Bad properties: FAILED without touching Kafka.
        let (url, rx) = response_url().await;
        handle_custom_resource(&cfg, &event("Update", &url, &[&pin], "lots")).await.unwrap();
        let (_, sent) = rx.await.unwrap();
        assert_eq!(sent["Status"], "FAILED");
        assert!(sent["Reason"].as_str().unwrap().contains("Partitions"), "{sent}");

        // Delete keeps the topics (and needs no broker): SUCCESS under the old physical id.
        let no_broker = IngestConfig::from_lookup(|k| match k {
            "PINPIPE_ID" => Some(ID.into()),
            "PINPIPE_KINESIS" => Some("off".into()),
            _ => None,
        })
        .unwrap();
        let (url, rx) = response_url().await;
        handle_custom_resource(&no_broker, &event("Delete", &url, &[&pin], "1")).await.unwrap();
        let (_, sent) = rx.await.unwrap();
        assert_eq!(sent["Status"], "SUCCESS");
        assert_eq!(sent["PhysicalResourceId"], "kafka-topics:old");
        let still = ensure_topics(&cfg, &brokers, &TopicsSpec { topics: vec![pin.clone()], partitions: 1, replication_factor: Some(1) })
            .await
            .unwrap();
        assert_eq!(still[&pin], TopicOutcome::Existed { partitions: 1 });
    }

    #[test]
    fn custom_resource_events_are_told_from_api_requests() {
        let cr: Value = serde_json::from_str(include_str!("../../../events/cloudformation/topics-delete.json")).unwrap();
        assert!(crate::topics::is_custom_resource_event(&cr));
        for f in std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/apigw")).unwrap() {
            let e: Value = serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
            assert!(!crate::topics::is_custom_resource_event(&e));
        }
    }
}

/// PINPIPE_KINESIS (and so `serve --kinesis`) takes on, off or an endpoint, and says so
/// when given anything else.
#[test]
fn kinesis_setting_is_on_off_or_an_endpoint() {
    let cfg = |v: &str| {
        let v = v.to_string();
        IngestConfig::from_lookup(move |k| match k {
            "PINPIPE_ID" => Some(ID.into()),
            "PINPIPE_KINESIS" => Some(v.clone()),
            _ => None,
        })
    };
    let got = |v: &str| cfg(v).map(|c| (c.kinesis, c.kinesis_endpoint)).unwrap();
    assert_eq!(got("on"), (true, None));
    assert_eq!(got("off"), (false, None));
    assert_eq!(got("http://127.0.0.1:4568"), (true, Some("http://127.0.0.1:4568".into())));
    let err = cfg("kinesis-local").unwrap_err().to_string();
    assert!(err.contains("use on, off or an endpoint URL"), "{err}");
}
