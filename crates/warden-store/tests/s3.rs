//! The S3 recording store against a real S3-compatible server: small and
//! multipart uploads read back byte for byte, metadata, listing, and clear
//! errors for a missing bucket.

mod support;

use support::s3::S3Server;
use warden_store::{RecordingStore, S3RecordingStore};
use warden_types::api::RecordingInfo;

fn info(id: &str, start: i64) -> RecordingInfo {
    RecordingInfo {
        session_id: id.into(),
        user: "alice".into(),
        login: "root".into(),
        node: "n1".into(),
        node_name: "db-1".into(),
        command: String::new(),
        start,
        duration_ms: 1,
        size: 0,
        events: 1,
        truncated: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_on_s3() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let s3 = S3Server::start();
    let store = S3RecordingStore::from_url(&s3.url("recordings", "cluster-a")).unwrap();
    let missing = store.probe().await.unwrap_err().to_string();
    assert!(
        missing.contains("NoSuchBucket") && missing.contains("create the bucket"),
        "{missing}"
    );
    store.create_bucket().await.unwrap();
    store.probe().await.unwrap();

    let small_id = "0193a5e0-0000-7000-8000-000000000001";
    let large_id = "0193a5e0-0000-7000-8000-000000000002";
    store
        .put(&info(small_id, 100), b"tiny".to_vec())
        .await
        .unwrap();
    // Three parts: two full, one short.
    let large: Vec<u8> = (0..(2 * warden_store::s3::PART_SIZE + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    store
        .put(&info(large_id, 200), large.clone())
        .await
        .unwrap();

    assert_eq!(store.get(small_id).await.unwrap().unwrap(), b"tiny");
    assert!(
        store.get(large_id).await.unwrap().unwrap() == large,
        "multipart read back"
    );
    assert_eq!(store.info(large_id).await.unwrap().unwrap().user, "alice");
    let listed: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.session_id)
        .collect();
    assert_eq!(listed, [large_id, small_id], "newest first");
    let unknown = "0193a5e0-0000-7000-8000-0000000000ff";
    assert!(store.get(unknown).await.unwrap().is_none());
    assert!(store.info(unknown).await.unwrap().is_none());
    assert!(store.get("../etc/passwd").await.is_err());

    // Another prefix in the same bucket is another store.
    let other = S3RecordingStore::from_url(&s3.url("recordings", "cluster-b")).unwrap();
    assert!(other.list().await.unwrap().is_empty());
}
