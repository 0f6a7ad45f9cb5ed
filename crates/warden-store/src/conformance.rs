//! The conformance suites every [`Backend`] and [`AuditLog`] implementation
//! must pass.
//!
//! Call [`run`] (or [`audit`]) from the implementation's tests with a
//! function that opens a *new connection to the same store* each time it
//! is called; the suite uses that to test that a watcher resumes after a
//! reconnect, and that several writers share one order. [`increment`] is
//! the work of one writer in a contention test across processes.

use crate::audit::AuditLog;
use crate::backend::{Backend, EventKind, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Runs every check. Panics with a description of the first failure.
pub async fn run<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    let b = open().await;
    crud(&*b).await;
    create_if_absent(&*b).await;
    compare_and_swap(&*b).await;
    compare_and_delete(&*b).await;
    range_by_prefix(&*b).await;
    revisions_increase(&*b).await;
    ttl(&*b).await;
    concurrent_cas(b.clone()).await;
    watch_in_order(&*b).await;
    drop(b);
    watch_resumes_after_reconnect(&open).await;
}

fn ns(test: &str) -> String {
    format!("/conformance/{test}-{}/", uuid::Uuid::new_v4())
}

async fn crud(b: &dyn Backend) {
    let p = ns("crud");
    let k = format!("{p}a");
    assert!(
        b.get(&k).await.unwrap().is_none(),
        "missing key must read as None"
    );
    let r1 = b.put(&k, b"one".to_vec(), None).await.unwrap();
    let item = b
        .get(&k)
        .await
        .unwrap()
        .expect("put value must be readable");
    assert_eq!(item.value, b"one");
    assert_eq!(item.revision, r1);
    let r2 = b.put(&k, b"two".to_vec(), None).await.unwrap();
    assert!(r2 > r1, "revisions must increase: {r1} then {r2}");
    assert_eq!(b.get(&k).await.unwrap().unwrap().value, b"two");
    assert!(
        b.delete(&k).await.unwrap(),
        "delete of a live key reports true"
    );
    assert!(
        !b.delete(&k).await.unwrap(),
        "delete of a missing key reports false"
    );
    assert!(b.get(&k).await.unwrap().is_none());
    // Binary values survive untouched.
    let blob: Vec<u8> = (0..=255u8).collect();
    b.put(&k, blob.clone(), None).await.unwrap();
    assert_eq!(b.get(&k).await.unwrap().unwrap().value, blob);
}

async fn create_if_absent(b: &dyn Backend) {
    let k = format!("{}k", ns("create"));
    b.create(&k, b"1".to_vec(), None).await.unwrap();
    match b.create(&k, b"2".to_vec(), None).await {
        Err(StoreError::AlreadyExists(key)) => assert_eq!(key, k),
        other => panic!("second create must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(b.get(&k).await.unwrap().unwrap().value, b"1");
    b.delete(&k).await.unwrap();
    b.create(&k, b"3".to_vec(), None).await.unwrap();
}

async fn compare_and_swap(b: &dyn Backend) {
    let k = format!("{}k", ns("cas"));
    match b.compare_and_swap(&k, 1, b"x".to_vec(), None).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("CAS on a missing key must be NotFound, got {other:?}"),
    }
    let r1 = b.put(&k, b"a".to_vec(), None).await.unwrap();
    let r2 = b
        .compare_and_swap(&k, r1, b"b".to_vec(), None)
        .await
        .unwrap();
    assert!(r2 > r1);
    match b.compare_and_swap(&k, r1, b"c".to_vec(), None).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (r1, r2)),
        other => panic!("stale CAS must conflict, got {other:?}"),
    }
    assert_eq!(b.get(&k).await.unwrap().unwrap().value, b"b");
}

async fn compare_and_delete(b: &dyn Backend) {
    let k = format!("{}k", ns("cad"));
    let r1 = b.put(&k, b"a".to_vec(), None).await.unwrap();
    let r2 = b.put(&k, b"b".to_vec(), None).await.unwrap();
    assert!(matches!(
        b.compare_and_delete(&k, r1).await,
        Err(StoreError::Conflict { .. })
    ));
    b.compare_and_delete(&k, r2).await.unwrap();
    assert!(matches!(
        b.compare_and_delete(&k, r2).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn range_by_prefix(b: &dyn Backend) {
    let p = ns("range");
    for k in ["b", "a", "c/d", "%", "_x"] {
        b.put(&format!("{p}{k}"), k.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    // A sibling whose name extends the prefix without the separator.
    b.put(
        &format!("{}x", p.trim_end_matches('/')),
        b"no".to_vec(),
        None,
    )
    .await
    .unwrap();
    let keys: Vec<String> = b
        .range(&p)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key[p.len()..].to_string())
        .collect();
    assert_eq!(
        keys,
        vec!["%", "_x", "a", "b", "c/d"],
        "sorted, prefix only"
    );
    let sub = b.range(&format!("{p}c/")).await.unwrap();
    assert_eq!(sub.len(), 1);
    // Non-ASCII keys and prefixes.
    b.put(&format!("{p}é/1"), b"e".to_vec(), None)
        .await
        .unwrap();
    b.put(&format!("{p}ü/1"), b"u".to_vec(), None)
        .await
        .unwrap();
    let e = b.range(&format!("{p}é/")).await.unwrap();
    assert_eq!(e.len(), 1, "a non-ASCII prefix matches exactly");
    assert_eq!(e[0].value, b"e");
    // Wildcard characters in a prefix are literal.
    assert_eq!(b.range(&format!("{p}%")).await.unwrap().len(), 1);
    assert_eq!(b.range(&format!("{p}_")).await.unwrap().len(), 1);
}

async fn revisions_increase(b: &dyn Backend) {
    let p = ns("rev");
    let mut last = b.revision().await.unwrap();
    for i in 0..5 {
        let r = b.put(&format!("{p}{i}"), vec![i], None).await.unwrap();
        assert!(r > last, "revision {r} after {last}");
        last = r;
        assert_eq!(b.revision().await.unwrap(), r);
    }
}

async fn ttl(b: &dyn Backend) {
    let p = ns("ttl");
    let k = format!("{p}short");
    let expires = SystemTime::now() + Duration::from_millis(700);
    b.put(&k, b"v".to_vec(), Some(expires)).await.unwrap();
    b.put(&format!("{p}long"), b"v".to_vec(), None)
        .await
        .unwrap();
    let item = b.get(&k).await.unwrap().expect("unexpired item is visible");
    let got = item.expires.expect("expiry is kept");
    let skew = got.duration_since(expires).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_millis(5), "expiry kept to the ms");
    let start = b.revision().await.unwrap();
    let mut w = b.watch(&p, start).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(b.get(&k).await.unwrap().is_none(), "expired item is gone");
    assert_eq!(b.range(&p).await.unwrap().len(), 1);
    // Expiry is observable by watchers as a delete.
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("expiry must produce a delete event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind, ev.item.key.as_str()),
        (EventKind::Delete, k.as_str())
    );
    // An expired key behaves as absent for every operation.
    assert!(matches!(
        b.compare_and_swap(&k, item.revision, b"x".to_vec(), None)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(!b.delete(&k).await.unwrap());
    b.create(&k, b"again".to_vec(), None).await.unwrap();
}

/// Adds 1 to the decimal counter at `key` `times` times by
/// read-then-compare-and-swap, retrying conflicts; returns how many
/// conflicts it met. Several of these at once, in tasks or processes,
/// must lose no increment.
pub async fn increment(b: &dyn Backend, key: &str, times: usize) -> usize {
    let mut conflicts = 0;
    for _ in 0..times {
        loop {
            let cur = b.get(key).await.unwrap().expect("the counter exists");
            let n: u64 = String::from_utf8(cur.value).unwrap().parse().unwrap();
            match b
                .compare_and_swap(key, cur.revision, (n + 1).to_string().into_bytes(), None)
                .await
            {
                Ok(_) => break,
                Err(StoreError::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("unexpected CAS error: {e}"),
            }
        }
    }
    conflicts
}

async fn concurrent_cas(b: Arc<dyn Backend>) {
    const TASKS: usize = 8;
    const EACH: usize = 20;
    let k = format!("{}counter", ns("concurrent"));
    b.put(&k, b"0".to_vec(), None).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let b = b.clone();
        let k = k.clone();
        handles.push(tokio::spawn(async move { increment(&*b, &k, EACH).await }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let v = b.get(&k).await.unwrap().unwrap().value;
    assert_eq!(
        String::from_utf8(v).unwrap(),
        (TASKS * EACH).to_string(),
        "no increment may be lost"
    );
}

async fn watch_in_order(b: &dyn Backend) {
    let p = ns("watch");
    let start = b.revision().await.unwrap();
    let mut w = b.watch(&p, start).await.unwrap();
    let r1 = b.put(&format!("{p}a"), b"1".to_vec(), None).await.unwrap();
    b.put(&format!("{}other/a", ns("elsewhere")), b"x".to_vec(), None)
        .await
        .unwrap();
    let r2 = b.put(&format!("{p}b"), b"2".to_vec(), None).await.unwrap();
    b.delete(&format!("{p}a")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("watch event must arrive")
            .unwrap()
            .unwrap();
        seen.push((
            ev.kind,
            ev.item.key[p.len()..].to_string(),
            ev.item.revision,
        ));
    }
    assert_eq!(seen[0], (EventKind::Put, "a".into(), r1));
    assert_eq!(seen[1], (EventKind::Put, "b".into(), r2));
    assert_eq!((seen[2].0, seen[2].1.as_str()), (EventKind::Delete, "a"));
    assert!(seen[2].2 > r2);
    // Nothing outside the prefix.
    assert!(tokio::time::timeout(Duration::from_millis(300), w.next())
        .await
        .is_err());
}

async fn watch_resumes_after_reconnect<F, Fut>(open: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    let p = ns("resume");
    let b = open().await;
    let start = b.revision().await.unwrap();
    let mut w = b.watch(&p, start).await.unwrap();
    b.put(&format!("{p}1"), b"1".to_vec(), None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event must arrive")
        .unwrap()
        .unwrap();
    let last_seen = first.item.revision;
    // The watcher's connection goes away; writes continue elsewhere.
    drop(w);
    drop(b);
    let writer = open().await;
    writer
        .put(&format!("{p}2"), b"2".to_vec(), None)
        .await
        .unwrap();
    writer
        .put(&format!("{p}3"), b"3".to_vec(), None)
        .await
        .unwrap();
    drop(writer);
    // A new connection resumes from the last revision seen and misses nothing.
    let b = open().await;
    let mut w = b.watch(&p, last_seen).await.unwrap();
    for want in ["2", "3"] {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("missed events must be delivered after reconnect")
            .unwrap()
            .unwrap();
        assert_eq!(ev.item.value, want.as_bytes());
    }
    // And keeps delivering live writes.
    b.put(&format!("{p}4"), b"4".to_vec(), None).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("live event after resume")
        .unwrap()
        .unwrap();
    assert_eq!(ev.item.value, b"4");
}

/// Runs the audit log checks: resends stored once, batches in order,
/// filters, counts, and one verifiable chain when two connections append
/// at once. `open` must give a new connection to the same, empty log.
pub async fn audit<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn AuditLog>>,
{
    use warden_types::api::AuditQuery;
    use warden_types::audit::{codes, AuditEvent};
    let log = open().await;
    assert_eq!(log.head().await.unwrap(), None, "a new log is empty");
    let first = AuditEvent::new(codes::LOGIN_SUCCESS, "c1", "alice", "one");
    let stored = log.append(first.clone()).await.unwrap();
    assert_eq!((stored.index, stored.prev_hash.as_str()), (1, ""));
    assert!(
        matches!(
            log.append(first.clone()).await,
            Err(StoreError::AlreadyExists(_))
        ),
        "a resent event is refused"
    );
    let second = AuditEvent::new(codes::USER_CREATE, "c1", "bob", "two");
    let third = AuditEvent::new(codes::LOGIN_SUCCESS, "c1", "bob", "three");
    let batch = log.append_batch(vec![first, second, third]).await.unwrap();
    let messages: Vec<&str> = batch.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["two", "three"], "known ids skipped, order kept");
    assert_eq!((batch[0].index, batch[1].index), (2, 3));
    assert_eq!(batch[1].prev_hash, batch[0].hash);
    assert_eq!(log.head().await.unwrap(), Some((3, batch[1].hash.clone())));

    let by_user = AuditQuery {
        user: Some("bob".into()),
        ..Default::default()
    };
    let found = log.search(&by_user).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].index, 3, "newest first");
    assert_eq!(log.count(&by_user).await.unwrap(), 2);
    let by_type = AuditQuery {
        event_type: Some(codes::USER_CREATE.0.into()),
        ..Default::default()
    };
    assert_eq!(log.search(&by_type).await.unwrap()[0].message, "two");
    let stream = AuditQuery {
        after: Some(1),
        limit: Some(1),
        ..Default::default()
    };
    let next = log.search(&stream).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].index, 2, "a stream goes along the chain");
    assert_eq!(log.at(3).await.unwrap().unwrap().message, "three");

    // Two writers at once (two connections, as two auth servers): one chain.
    const EACH: usize = 40;
    let other = open().await;
    let mut handles = Vec::new();
    for (w, l) in [log.clone(), other].into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                let e =
                    AuditEvent::new(codes::LOGIN_SUCCESS, "c1", &format!("w{w}"), format!("{i}"));
                if i % 4 == 0 {
                    let e2 = AuditEvent::new(codes::LOGIN_SUCCESS, "c1", &format!("w{w}"), "pair");
                    assert_eq!(l.append_batch(vec![e, e2]).await.unwrap().len(), 2);
                } else {
                    l.append(e).await.unwrap();
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let report = log.verify().await.unwrap();
    assert_eq!(report.first_broken, None, "one chain whoever appends");
    assert_eq!(report.events, 3 + 2 * (EACH + EACH / 4) as u64);
}
