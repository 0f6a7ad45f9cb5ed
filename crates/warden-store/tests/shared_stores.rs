//! The stores several auth servers share, against real servers
//! (PostgreSQL, etcd): the same conformance suites as SQLite,
//! compare-and-swap under contention from several processes, watches that
//! resume after the server restarts, and tampering found by `verify`.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::etcd::EtcdCluster;
use support::pg::PgServer;
use warden_store::{
    conformance, AuditLog, Backend, EtcdBackend, PostgresAuditLog, PostgresBackend,
};

/// The backend at `url` (postgres:// or etcd://).
async fn open(url: &str) -> Arc<dyn Backend> {
    match url.starts_with("etcd://") {
        true => Arc::new(EtcdBackend::connect(url).await.unwrap()),
        false => Arc::new(PostgresBackend::connect(url).await.unwrap()),
    }
}

const URL_ENV: &str = "WARDEN_TEST_PG_URL";
const KEY_ENV: &str = "WARDEN_TEST_KEY";
const EACH: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_conformance() {
    let pg = PgServer::start();
    let url = pg.database("kv");
    conformance::run(move || {
        let url = url.clone();
        async move { open(&url).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_conformance() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url();
    conformance::run(move || {
        let url = url.clone();
        async move { open(&url).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_conformance_and_tampering() {
    let pg = PgServer::start();
    let url = pg.database("audit");
    let u = url.clone();
    conformance::audit(move || {
        let url = u.clone();
        async move { Arc::new(PostgresAuditLog::connect(&url).await.unwrap()) as Arc<dyn AuditLog> }
    })
    .await;
    let log = PostgresAuditLog::connect(&url).await.unwrap();
    assert_eq!(log.verify().await.unwrap().first_broken, None);
    // An edited message is found, at its index.
    pg.sql(
        "audit",
        "UPDATE warden_audit SET body = replace(body, '\"three\"', '\"forged\"') WHERE idx = 3",
    );
    assert_eq!(log.verify().await.unwrap().first_broken.unwrap().0, 3);
    // So is a deleted one.
    pg.sql("audit", "DELETE FROM warden_audit WHERE idx <= 3");
    assert_eq!(log.verify().await.unwrap().first_broken.unwrap().0, 4);
}

/// One writer of [`cas_across_processes`]; runs only when started by it.
#[tokio::test]
#[ignore = "started by cas_across_processes"]
async fn cas_child() {
    let url = std::env::var(URL_ENV).expect("started by cas_across_processes");
    let key = std::env::var(KEY_ENV).unwrap();
    let b = open(&url).await;
    let conflicts = conformance::increment(&*b, &key, EACH).await;
    println!("conflicts={conflicts}");
}

/// Two processes and this one increment one counter by compare-and-swap,
/// on PostgreSQL and on etcd: no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_across_processes() {
    let pg = PgServer::start();
    cas_contention(&pg.database("cas")).await;
    let etcd = EtcdCluster::start(1);
    cas_contention(&etcd.url()).await;
}

async fn cas_contention(url: &str) {
    let url = url.to_string();
    let b = open(&url).await;
    let key = "/contention/counter";
    b.put(key, b"0".to_vec(), None).await.unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "cas_child", "--ignored", "--nocapture"])
                .env(URL_ENV, &url)
                .env(KEY_ENV, key)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mine = conformance::increment(&*b, key, EACH).await;
    let mut conflicts = mine;
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {text}");
        conflicts += text
            .lines()
            .find_map(|l| l.strip_prefix("conflicts="))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or_else(|| panic!("child said {text}"));
    }
    let value = b.get(key).await.unwrap().unwrap().value;
    assert_eq!(String::from_utf8(value).unwrap(), (3 * EACH).to_string());
    println!("{url}: {conflicts} conflicts retried");
}

/// The server restarts under a live watcher: the watcher ends, the same
/// store reconnects, and watching again from the last revision seen
/// delivers what was written while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_the_server_restarts() {
    let mut pg = PgServer::start();
    let url = pg.database("resume");
    let b = PostgresBackend::connect(&url).await.unwrap();
    let start = b.revision().await.unwrap();
    let mut w = b.watch("/r/", start).await.unwrap();
    b.put("/r/1", b"1".to_vec(), None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let last = first.item.revision;
    pg.stop();
    // The watcher notices within its poll interval and ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        if let Some(Ok(ev)) = w.next().await {
            panic!("unexpected event {ev:?}");
        }
    })
    .await;
    assert!(ended.is_ok(), "a watcher must end when its server goes");
    pg.resume();
    let other = PostgresBackend::connect(&url).await.unwrap();
    other.put("/r/2", b"2".to_vec(), None).await.unwrap();
    // The first store recovers without being rebuilt.
    let mut w = loop {
        match b.watch("/r/", last).await {
            Ok(w) => break w,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("missed write delivered after the restart")
        .unwrap()
        .unwrap();
    assert_eq!(ev.item.value, b"2");
    // Live writes from another process arrive by NOTIFY, well before the
    // 1 s poll would find them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    other.put("/r/3", b"3".to_vec(), None).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.item.value, b"3");
    println!("cross-process watch latency: {:?}", t.elapsed());
}

/// The same on etcd: its only member restarts under a live watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_resumes_after_the_server_restarts() {
    let mut etcd = EtcdCluster::start(1);
    let b = open(&etcd.url()).await;
    let start = b.revision().await.unwrap();
    let mut w = b.watch("/r/", start).await.unwrap();
    b.put("/r/1", b"1".to_vec(), None).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let last = first.item.revision;
    etcd.stop(0);
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        if let Some(Ok(ev)) = w.next().await {
            panic!("unexpected event {ev:?}");
        }
    })
    .await;
    assert!(ended.is_ok(), "a watcher must end when its server goes");
    etcd.resume(0);
    let other = loop {
        match EtcdBackend::connect(&etcd.url()).await {
            Ok(b) => break b,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    other.put("/r/2", b"2".to_vec(), None).await.unwrap();
    let mut w = loop {
        match b.watch("/r/", last).await {
            Ok(w) => break w,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("missed write delivered after the restart")
        .unwrap()
        .unwrap();
    assert_eq!(ev.item.value, b"2");
}

/// TLS to etcd: members that require client certificates serve warden
/// over `etcds://` with the cluster CA and warden's client certificate;
/// without the client certificate, or trusting another CA, it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_verified_tls_with_client_certificates() {
    let dir = std::env::temp_dir().join(format!("warden-etcd-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(name), cert.pem()).unwrap();
        rcgen::Issuer::new(params, key)
    };
    let issuer = ca("ca.pem");
    let _other = ca("other-ca.pem");
    let leaf = |name: &str, sans: Vec<String>| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf("server", vec!["127.0.0.1".to_string()]);
    leaf("client", vec!["warden".to_string()]);
    let files = support::etcd::TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    let etcd = EtcdCluster::start_tls(1, files);
    let url = etcd.url();
    assert!(url.starts_with("etcds://"), "{url}");
    let b = EtcdBackend::connect(&url).await.unwrap();
    let rev = b.put("/tls/a", b"1".to_vec(), None).await.unwrap();
    assert_eq!(b.get("/tls/a").await.unwrap().unwrap().value, b"1");
    let mut w = b.watch("/tls/", rev).await.unwrap();
    b.put("/tls/b", b"2".to_vec(), None).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.item.key, "/tls/b");

    // Without a client certificate: the members refuse.
    let no_cert = url.split("&cert=").next().unwrap().to_string();
    assert!(EtcdBackend::connect(&no_cert).await.is_err());
    // Trusting another CA: warden refuses the members.
    let other = url.replace("ca.pem", "other-ca.pem");
    assert!(EtcdBackend::connect(&other).await.is_err());
    // TLS parameters without TLS, or TLS without a CA: a clear refusal.
    let e = EtcdBackend::connect(&url.replacen("etcds://", "etcd://", 1))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("write etcds://"), "{e}");
    let e = EtcdBackend::connect(url.split('?').next().unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs ca=FILE"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// TLS to PostgreSQL: with `sslmode=require` and the server's CA the
/// connection is encrypted (the server says so); without the CA it is
/// refused, never downgraded; a server without TLS is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pg = PgServer::start_with(
        &[
            ("server.crt", cert.pem().as_bytes()),
            ("server.key", key.serialize_pem().as_bytes()),
        ],
        &[
            "ssl=on",
            "ssl_cert_file={dir}/server.crt",
            "ssl_key_file={dir}/server.key",
        ],
    );
    pg.database("tls");
    let dir = std::env::temp_dir().join(format!("warden-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("tls"),
        ca_file.display()
    );
    let b = PostgresBackend::connect(&url).await.unwrap();
    b.put("/tls/a", b"1".to_vec(), None).await.unwrap();
    let log = PostgresAuditLog::connect(&url).await.unwrap();
    assert_eq!(log.head().await.unwrap(), None);
    // The server sees our sessions as TLS ones.
    let encrypted = pg.sql(
        "tls",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'warden' AND s.ssl",
    );
    assert_ne!(encrypted, "0", "warden's connections use TLS");
    let plain = pg.sql(
        "tls",
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'warden' AND NOT s.ssl",
    );
    assert_eq!(plain, "0", "no plain connection");

    // Without the CA (system roots only): refused, not downgraded.
    let untrusted = format!("{}?sslmode=require", pg.url("tls"));
    let e = PostgresBackend::connect(&untrusted)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // A server without TLS is refused when TLS is required.
    let plain_pg = PgServer::start();
    plain_pg.database("x");
    let e = PostgresBackend::connect(&format!("{}?sslmode=require", plain_pg.url("x")))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("PostgreSQL"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
