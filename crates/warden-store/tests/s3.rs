//! The S3 recording store against a real S3-compatible server: small and
//! multipart uploads read back byte for byte, metadata, listing, and clear
//! errors for a missing bucket.

mod support;

use hyper::body::Bytes;
use support::s3::S3Server;
use warden_store::{read_all, RecordingStore, S3RecordingStore};

/// A stored recording, read whole.
async fn got(store: &S3RecordingStore, id: &str) -> Option<Vec<u8>> {
    Some(read_all(store.get(id).await.unwrap()?).await.unwrap())
}
use warden_types::api::RecordingInfo;

/// Multipart uploads begun and neither completed nor aborted (moto does
/// not check signatures, so a plain request lists them).
async fn pending_uploads(s3: &S3Server) -> usize {
    let resp = warden_http::send(
        &warden_http::tls_config(),
        hyper::Method::GET,
        &format!("http://127.0.0.1:{}/recordings?uploads", s3.port),
        &[],
        Bytes::new(),
        1 << 20,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    String::from_utf8_lossy(&resp.body)
        .matches("<Upload>")
        .count()
}

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

    assert_eq!(got(&store, small_id).await.unwrap(), b"tiny");
    assert!(
        got(&store, large_id).await.unwrap() == large,
        "multipart read back"
    );
    assert_eq!(store.info(large_id).await.unwrap().unwrap().user, "alice");

    // Streamed in pieces that straddle parts: invisible until committed.
    let streamed_id = "0193a5e0-0000-7000-8000-000000000003";
    let mut up = store.begin(streamed_id).await.unwrap();
    for piece in large.chunks(3 << 20) {
        up.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    assert!(store.get(streamed_id).await.unwrap().is_none());
    assert_eq!(pending_uploads(&s3).await, 1, "parts went up as they came");
    up.commit(&info(streamed_id, 50)).await.unwrap();
    assert!(got(&store, streamed_id).await.unwrap() == large);
    assert_eq!(pending_uploads(&s3).await, 0);
    // Abandoned after a part: the parts are aborted, nothing is listed.
    let abandoned = "0193a5e0-0000-7000-8000-000000000004";
    let mut up = store.begin(abandoned).await.unwrap();
    up.write(Bytes::copy_from_slice(
        &large[..warden_store::s3::PART_SIZE + 1],
    ))
    .await
    .unwrap();
    assert_eq!(pending_uploads(&s3).await, 1);
    drop(up);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pending_uploads(&s3).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned upload not aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(store.info(abandoned).await.unwrap().is_none());
    let listed: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.session_id)
        .collect();
    assert_eq!(listed, [large_id, small_id, streamed_id], "newest first");
    let unknown = "0193a5e0-0000-7000-8000-0000000000ff";
    assert!(store.get(unknown).await.unwrap().is_none());
    assert!(store.info(unknown).await.unwrap().is_none());
    assert!(store.get("../etc/passwd").await.is_err());

    // Another prefix in the same bucket is another store.
    let other = S3RecordingStore::from_url(&s3.url("recordings", "cluster-b")).unwrap();
    assert!(other.list().await.unwrap().is_empty());
}
