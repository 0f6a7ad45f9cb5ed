//! Several auth servers on one PostgreSQL: shared state, one audit chain,
//! certificates from either accepted everywhere, and a proxy that fails
//! over when its auth server dies.

mod common;
#[path = "../../warden-store/tests/support/etcd.rs"]
mod etcd;
#[path = "../../warden-store/tests/support/pg.rs"]
mod pg;
#[path = "../../warden-store/tests/support/s3.rs"]
mod s3;
#[path = "../../warden-ca/tests/support/softhsm.rs"]
mod softhsm;

use common::*;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// A child process killed when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `warden start --roles auth` and returns it with its auth address.
fn start_auth(
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (Child, Result<String, String>) {
    start_auth_env(dir, name, extra, &[])
}

/// [`start_auth`] with environment variables of its own.
fn start_auth_env(
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
    env: &[(&str, &std::path::Path)],
) -> (Child, Result<String, String>) {
    let mut child = Command::new(WARDEN)
        .args(["start", "--roles", "auth", "--auth-addr", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("XDG_STATE_HOME", dir.join(format!("state-{name}")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(v) = line.trim().strip_prefix("auth:") {
            let addr = v.split_whitespace().next().unwrap().to_string();
            // Keep reading: a closed pipe would end the server at its next
            // line of output.
            std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
            return (child, Ok(addr));
        }
    }
    let _ = child.wait();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    (child, Err(err))
}

/// The `--recordings` URL of a new bucket on `s3`, under `prefix`. The
/// keys reach warden through its environment, inherited from this test's.
fn bucket(s3: &s3::S3Server, prefix: &str) -> String {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let url = s3.url("recordings", prefix);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            warden_store::S3RecordingStore::from_url(&url)
                .unwrap()
                .create_bucket()
                .await
        })
        .unwrap();
    url
}

/// The id of the recording of `command`, once listed.
fn wait_for_recording(c: &Cluster, home: &str, command: &str) -> String {
    for _ in 0..150 {
        let out = c
            .run_as(home, &["recordings", "ls", "--format", "json"], None)
            .expect_ok();
        let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        if let Some(r) = list.iter().find(|r| r["command"].as_str() == Some(command)) {
            return r["session_id"].as_str().unwrap().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("the recording never arrived");
}

#[test]
fn two_auth_servers_share_postgres_and_a_proxy_fails_over() {
    let pg = pg::PgServer::start();
    let url = pg.database("cluster");
    two_auth_servers_and_a_proxy(&["--backend", &url], &pg, "cluster", &mut || {});
}

/// The same on a 3-member etcd (the audit log on PostgreSQL), losing a
/// follower and then the leader along the way.
#[test]
fn two_auth_servers_on_etcd_survive_losing_members() {
    let pg = pg::PgServer::start();
    let audit = pg.database("audit");
    let mut etcd = etcd::EtcdCluster::start(3);
    let url = etcd.url();
    let mut step = 0;
    let mut chaos = || {
        step += 1;
        let leader = etcd.leader().expect("etcd has a leader");
        match step {
            // First a follower goes away,
            1 => etcd.stop((leader + 1) % 3),
            // then it comes back and the leader goes.
            2 => {
                etcd.resume((leader + 1) % 3);
                std::thread::sleep(std::time::Duration::from_secs(2));
                let leader = etcd.leader().expect("etcd has a leader");
                etcd.stop(leader);
            }
            _ => {}
        }
    };
    two_auth_servers_and_a_proxy(
        &["--backend", &url, "--audit-log", &audit],
        &pg,
        "audit",
        &mut chaos,
    );
}

/// Auth 1 (with a proxy and a node) and auth 2 on `stores`, a proxy that
/// prefers auth 2; auth 2 dies; `chaos` runs after the failover and again
/// before the last checks. `audit_db` is the database of the audit log.
fn two_auth_servers_and_a_proxy(
    stores: &[&str],
    pg: &pg::PgServer,
    audit_db: &str,
    chaos: &mut dyn FnMut(),
) {
    // Recordings on S3, shared.
    let s3 = s3::S3Server::start();
    let recordings = bucket(&s3, "ha");
    let dir = temp_dir("ha");
    // Auth 1, with a proxy and a node, on PostgreSQL.
    let mut args = vec!["--name", "box", "--recordings", &recordings];
    args.extend(stores);
    let c = Cluster::start_with(&dir, &args);
    let kek = dir.join("data/kek");
    let kek = kek.to_str().unwrap();

    // Auth 2 without the first one's key-encryption key is refused at start.
    let (mut wrong, started) = start_auth(&dir, "auth-wrong", stores);
    let err = started.expect_err("an auth server with another KEK must not start");
    assert!(
        err.contains("cannot unseal") && err.contains("--kek-file"),
        "{err}"
    );
    let _ = wrong.wait();

    // Auth 2 with it serves the same cluster.
    let mut args = vec!["--kek-file", kek, "--recordings", &recordings];
    args.extend(stores);
    let (auth2, started) = start_auth(&dir, "auth2", &args);
    let auth2 = Killed(auth2);
    let auth2_addr = started.unwrap_or_else(|e| panic!("auth 2 did not start: {e}"));

    // Proxy B prefers auth 2 and falls back to auth 1.
    let (proxy_b, b) = c.start_proxy("proxy-b", &format!("{auth2_addr},{}", c.auth));
    let _proxy_b = Killed(proxy_b);

    // A user created through auth 1 logs in through auth 2 (via proxy B),
    // and auth 1's node accepts the certificate auth 2 issued.
    let secret = c.add_user("alice", "access,auditor", "root");
    let login = |user: &str, otp: &str| c.login_through(user, otp, &b, &c.pin);
    login("alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "box");
    let out = c
        .run_as("alice", &["ssh", "root@box", "--", "echo", "one"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "one");
    // Its recording, uploaded by the node, plays through auth 2 from S3.
    let id = wait_for_recording(&c, "alice", "echo one");
    let out = c
        .run_as("alice", &["play", &id, "--format", "text"], None)
        .expect_ok();
    assert!(out.stdout.contains("one"), "{}", out.stdout);

    // Auth 2 dies mid-flight: proxy B moves to auth 1, and nothing the
    // user does through it fails.
    drop(auth2);
    let failover = std::time::Instant::now();
    let out = c.run_as("alice", &["ls"], None).expect_ok();
    eprintln!(
        "first call through the proxy answered {:?} after auth 2 died (CLI start included)",
        failover.elapsed()
    );
    assert!(out.stdout.contains("box"), "{}", out.stdout);
    chaos();
    let out = c.run_as("alice", &["ls"], None).expect_ok();
    assert!(out.stdout.contains("box"), "{}", out.stdout);
    let out = c
        .run_as("alice", &["ssh", "root@box", "--", "echo", "two"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "two");
    // A new user logs in through the same proxy, now served by auth 1.
    chaos();
    let bob = c.add_user("bob", "access", "root");
    login("bob", &totp(&bob, 30)).expect_ok();
    let out = c
        .run_as("bob", &["ssh", "root@box", "--", "echo", "three"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "three");
    // Recordings made before and after the failover are all there.
    let out = c
        .run_as("alice", &["play", &id, "--format", "text"], None)
        .expect_ok();
    assert!(out.stdout.contains("one"), "{}", out.stdout);

    // Proxy B dies: alice logged in through it, and her commands move to
    // the cluster's other proxy, which her profile learned at login.
    drop(_proxy_b);
    let out = c
        .run_as("alice", &["ssh", "root@box", "--", "echo", "four"], None)
        .expect_ok();
    assert_eq!(out.stdout.trim(), "four");
    let out = c.run_as("alice", &["ls"], None).expect_ok();
    assert!(out.stdout.contains("box"), "{}", out.stdout);

    // One audit chain, written by both auth servers, verifies.
    let out = c.admin(&["audit", "verify"]).expect_ok();
    assert!(out.stdout.contains("hash chain intact"), "{}", out.stdout);
    let logins: u64 = pg
        .sql(
            audit_db,
            "SELECT count(*) FROM warden_audit WHERE type = 'user.login' AND \"user\" IN ('alice', 'bob')",
        )
        .parse()
        .unwrap();
    assert!(
        logins >= 2,
        "logins through both auth servers audited in PostgreSQL: {logins}"
    );
}

/// The cluster's CA keys as `warden admin ca ls --format json` shows them.
fn ca_keys(c: &Cluster) -> Vec<serde_json::Value> {
    let out = c.admin(&["ca", "ls", "--format", "json"]).expect_ok();
    serde_json::from_str(&out.stdout).unwrap()
}

/// Each auth server keeps its CA keys in an HSM of its own (two SoftHSM2
/// tokens, one per process, on one PostgreSQL). The second auth server
/// cannot use the first one's keys, so it joins: its own keys are trusted
/// at once and sign after the switch, beside the first one's. Then each
/// signs with its own, and what either signed is accepted everywhere: a
/// user pinned to the first server's tls key logs in through a proxy whose
/// certificate the second issued (cross certificates), and certificates
/// from each key open nodes whose certificates came from the other.
#[test]
fn each_auth_server_signs_with_a_key_of_its_own_hsm() {
    use softhsm::{softhsm_token, MODULE};
    let pg = pg::PgServer::start();
    let url = pg.database("cluster");
    let dir = temp_dir("ha-hsm");
    let token = |name: &str, pin: &str| {
        let conf = softhsm_token(
            &dir.join(format!("hsm-{name}")),
            &format!("warden-{name}"),
            pin,
        );
        let file = dir.join(format!("hsm-{name}.pin"));
        warden_ca::keystore::write_private_file(&file, pin.as_bytes()).unwrap();
        (conf, file.display().to_string())
    };
    let (conf_a, pin_a) = token("a", "1111");
    let (conf_b, pin_b) = token("b", "2222");
    // Auth 1 (and whatever it starts) finds its token through this.
    std::env::set_var("SOFTHSM2_CONF", &conf_a);
    let mut args = vec![
        "--name",
        "box",
        "--heartbeat-interval",
        "1s",
        "--backend",
        &url,
    ];
    args.extend(["--hsm-module", MODULE, "--hsm-token", "warden-a"]);
    args.extend(["--hsm-pin-file", &pin_a]);
    let c = Cluster::start_with(&dir, &args);
    let first_user_key = ca_keys(&c).into_iter().find(|k| k["ca"] == "user").unwrap()
        ["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    // Alice logs in before the second auth server exists.
    let alice = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();

    // Auth 2, with its own token. It still needs auth 1's key-encryption
    // key (users' TOTP seeds are sealed with it): without, it stops before
    // touching the CAs.
    let kek = dir.join("data/kek").display().to_string();
    let mut args = vec!["--backend", &url, "--hsm-module", MODULE];
    args.extend(["--hsm-token", "warden-b", "--hsm-pin-file", &pin_b]);
    let env = [("SOFTHSM2_CONF", conf_b.as_path())];
    let (mut wrong, started) = start_auth_env(&dir, "auth-wrong", &args, &env);
    let err = started.expect_err("an auth server with another KEK must not start");
    assert!(err.contains("--kek-file") && err.contains("TOTP"), "{err}");
    let _ = wrong.wait();
    assert_eq!(ca_keys(&c).len(), 4, "it added no keys");
    args.extend(["--kek-file", &kek]);
    // Without --hsm-join it does not make keys of its own: a mistyped
    // token must not join.
    let (mut wrong, started) = start_auth_env(&dir, "auth-nojoin", &args, &env);
    let err = started.expect_err("an auth server whose HSM holds no key must not start");
    assert!(
        err.contains("--hsm-join") && err.contains("warden-b"),
        "{err}"
    );
    let _ = wrong.wait();
    assert_eq!(ca_keys(&c).len(), 4, "it added no keys");
    args.push("--hsm-join");
    let (auth2, started) = start_auth_env(&dir, "auth2", &args, &env);
    let _auth2 = Killed(auth2);
    let auth2 = started.unwrap_or_else(|e| panic!("auth 2 did not start: {e}"));
    let located = |k: &serde_json::Value, token: &str| {
        k["store"] == "pkcs11"
            && k["location"]
                .as_str()
                .unwrap()
                .starts_with(&format!("token={token};"))
    };
    let keys = ca_keys(&c);
    for ca in ["user", "host", "tls", "db"] {
        let keys: Vec<_> = keys.iter().filter(|k| k["ca"] == ca).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(
            keys.iter()
                .any(|k| k["state"] == "signing" && located(k, "warden-a")),
            "{keys:?}"
        );
        assert!(
            keys.iter()
                .any(|k| k["state"] == "pending" && located(k, "warden-b")),
            "{keys:?}"
        );
        assert_eq!(keys[0]["rotation"], "join init (auto)", "{keys:?}");
    }

    // A proxy that prefers auth 2. It joins through auth 1's proxy; from
    // the switch it renews through auth 2, with auth 2's key.
    let (proxy_b, b) = c.start_proxy("proxy-b", &format!("{auth2},{}", c.auth));
    let _proxy_b = Killed(proxy_b);
    // Until then auth 2 cannot sign: it answers a login with 503 before
    // using the one-time code, and the proxy takes it to auth 1.
    let gina = c.add_user("gina", "access", "root");
    c.login_through("gina", &totp(&gina, 30), &b, &c.pin)
        .expect_ok();
    let gina_cert = walk_for(&dir.join("gina"), "gina-cert.pub").expect("gina's certificate");
    assert_eq!(signed_by(&gina_cert), first_user_key, "auth 1 signed it");

    // The join moves on by hand here (automatically it waits the cluster's
    // default session TTL); a tls step waits for the node and proxy.
    for ca in ["user", "host", "tls", "db"] {
        let mut last = None;
        for _ in 0..100 {
            let out = c.admin(&["ca", "rotate", "--type", ca, "--phase", "switch"]);
            if out.ok {
                last = None;
                break;
            }
            last = Some(out.all());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(
            last.is_none(),
            "the {ca} join's switch was never accepted: {last:?}"
        );
    }
    let keys = ca_keys(&c);
    for ca in ["user", "host", "tls", "db"] {
        let keys: Vec<_> = keys.iter().filter(|k| k["ca"] == ca).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        for token in ["warden-a", "warden-b"] {
            assert!(
                keys.iter()
                    .any(|k| k["state"] == "signing" && located(k, token)),
                "{ca}: no signing key in {token}: {keys:?}"
            );
        }
        assert!(
            keys[0]["rotation"].as_str().unwrap_or("").is_empty(),
            "the join ended: {keys:?}"
        );
    }
    let second_user_key = keys
        .iter()
        .find(|k| k["ca"] == "user" && located(k, "warden-b"))
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let joins = c
        .events()
        .into_iter()
        .filter(|e| e["type"] == "ca.rotate" && e["fields"]["phase"] == "join")
        .count();
    assert_eq!(joins, 4, "each CA's join is audited");

    // Proxy B renews at the switch (through auth 2, which signs now): its
    // saved identity leads with the issuing key's CA certificate.
    let tls_b = keys
        .iter()
        .find(|k| k["ca"] == "tls" && located(k, "warden-b"))
        .unwrap()["pin"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(tls_b, c.pin);
    let issuer = || -> Option<String> {
        let saved = std::fs::read_to_string(dir.join("proxy-b/proxy/certs.json")).ok()?;
        let certs: serde_json::Value = serde_json::from_str(&saved).ok()?;
        warden_ca::tls::ca_pin(certs["tls_ca_pems"][0].as_str()?).ok()
    };
    let waited = std::time::Instant::now();
    while issuer().as_deref() != Some(tls_b.as_str()) {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(30),
            "proxy B never got a certificate from auth 2's key"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // It swaps the new certificate in right after saving it.
    std::thread::sleep(std::time::Duration::from_millis(500));

    // Bob pins auth 1's tls key (the pin 'warden start' printed) and logs
    // in through proxy B, whose certificate auth 2's key issued: its chain
    // carries auth 1's certificate for auth 2's key. Auth 2 signs his
    // certificates.
    let bob = c.add_user("bob", "access", "root");
    c.login_through("bob", &totp(&bob, 30), &b, &c.pin)
        .expect_ok();
    let bob_cert = walk_for(&dir.join("bob"), "bob-cert.pub").expect("bob's certificate");
    assert_eq!(signed_by(&bob_cert), second_user_key, "auth 2 signed it");
    let alice_cert = c.keys_dir("alice").join("alice-cert.pub");
    assert_eq!(signed_by(&alice_cert), first_user_key, "auth 1 signed it");

    // A node that joins through proxy B (so through auth 2), and the
    // all-in-one node (auth 1's): each accepts both users.
    let _node_b = TunnelNode::start_via(&c, &b, "box-b", "env=b", &["--heartbeat-interval", "1s"]);
    for (user, node) in [
        ("bob", "box"),
        ("bob", "box-b"),
        ("alice", "box-b"),
        ("alice", "box"),
    ] {
        c.wait_reachable(user, "root", node);
        let out = c
            .run_as(
                user,
                &["ssh", &format!("root@{node}"), "--", "echo", "in"],
                None,
            )
            .expect_ok();
        assert_eq!(out.stdout.trim(), "in", "{user} at {node}");
    }
}

/// The first file called `name` under `dir`.
fn walk_for(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if let Some(found) = p.is_dir().then(|| walk_for(&p, name)).flatten() {
            return Some(found);
        }
    }
    None
}

/// A free port for `--diag-addr`, and the address to pass.
fn diag_port() -> (u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (port, format!("127.0.0.1:{port}"))
}

/// The audit log's PostgreSQL goes down while events are written: auth
/// keeps serving, keeps its events on disk (metric and /readyz say so),
/// and delivers them in order once it is back, followed by an
/// `audit.outage` event; the chain verifies.
#[test]
fn audit_log_outage_on_postgres_loses_nothing() {
    let state_pg = pg::PgServer::start();
    let state = state_pg.database("state");
    let mut audit_pg = pg::PgServer::start();
    let audit = audit_pg.database("audit");
    let (diag, diag_addr) = diag_port();
    let dir = temp_dir("audit-pg-outage");
    let c = Cluster::start_with(
        &dir,
        &[
            "--name",
            "box",
            "--backend",
            &state,
            "--audit-log",
            &audit,
            "--diag-addr",
            &diag_addr,
        ],
    );
    let alice = c.add_user("alice", "access", "root");
    assert!(http_get(diag, "/metrics").contains("warden_audit_spooled_events 0"));

    audit_pg.stop();
    // Auth goes on: a user is created and signs up, alice logs in and
    // runs a command; their events wait on auth's disk.
    let _bob = c.add_user("bob", "access", "root");
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();
    c.wait_reachable("alice", "root", "box");
    let spooled = metric(diag, "warden_audit_spooled_events");
    assert!(
        spooled >= 3,
        "user.create, user.signup, user.login spooled: {spooled}"
    );
    let ready = http_get(diag, "/readyz");
    assert!(ready.contains("audit log unreachable"), "{ready}");
    let pending = std::fs::read_dir(dir.join("data/audit-spool"))
        .unwrap()
        .count();
    assert!(pending >= 3, "events on disk: {pending}");

    audit_pg.resume();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let events = loop {
        let out = c.admin(&["audit", "search", "--format", "json", "--limit", "10000"]);
        if out.ok {
            let ev: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
            if ev.iter().any(|e| e["type"] == "audit.outage") {
                break ev;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit.outage event within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    // user.create names its actor as the user and bob as the target.
    let about =
        |e: &serde_json::Value, user: &str| e["user"] == user || e["fields"]["target"] == user;
    let has = |t: &str, user: &str| events.iter().any(|e| e["type"] == t && about(e, user));
    assert!(has("user.create", "bob"), "bob's creation delivered");
    assert!(has("user.signup", "bob"), "bob's signup delivered");
    assert!(has("user.login", "alice"), "alice's login delivered");
    let outage = events.iter().find(|e| e["type"] == "audit.outage").unwrap();
    assert!(
        outage["fields"]["events"].as_u64().unwrap() >= 3,
        "{outage}"
    );
    // In order: bob's creation before his signup, the outage note after both.
    let index = |t: &str, user: &str| {
        events
            .iter()
            .find(|e| e["type"] == t && about(e, user))
            .and_then(|e| e["index"].as_u64())
            .unwrap()
    };
    assert!(index("user.create", "bob") < index("user.signup", "bob"));
    assert!(index("user.signup", "bob") < outage["index"].as_u64().unwrap());
    let out = c.admin(&["audit", "verify"]).expect_ok();
    assert!(out.stdout.contains("hash chain intact"), "{}", out.stdout);
    assert!(http_get(diag, "/metrics").contains("warden_audit_spooled_events 0"));
    assert_eq!(
        std::fs::read_dir(dir.join("data/audit-spool"))
            .unwrap()
            .count(),
        0
    );
}

/// A node decides logins from the users, roles and locks auth pushes to
/// it: with the only auth server it reaches dead, logins through another
/// proxy keep working from its copy; once the copy is older than
/// `--policy-max-stale`, it refuses logins (fails closed) and says why.
#[test]
fn a_node_decides_logins_from_its_pushed_policy_and_fails_closed() {
    let pg = pg::PgServer::start();
    let url = pg.database("cluster");
    let dir = temp_dir("push");
    let c = Cluster::start_with(&dir, &["--name", "box", "--backend", &url]);
    let kek = dir.join("data/kek");
    let (auth2, started) = start_auth(
        &dir,
        "auth2",
        &["--kek-file", kek.to_str().unwrap(), "--backend", &url],
    );
    let auth2 = Killed(auth2);
    let auth2_addr = started.unwrap_or_else(|e| panic!("auth 2 did not start: {e}"));
    // Proxy B knows only auth 2; the node reaches auth through proxy B
    // and keeps tunnels to both proxies.
    let (proxy_b, b) = c.start_proxy("proxy-b", &auth2_addr);
    let _proxy_b = Killed(proxy_b);
    let _edge = TunnelNode::start_via(&c, &b, "edge", "env=edge", &["--policy-max-stale", "30s"]);
    let secret = c.add_user("alice", "access", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "edge");

    // Auth 2 dies: the node can no longer ask auth anything, yet a login
    // through proxy A (served by auth 1) is decided from its copy.
    drop(auth2);
    let cut = std::time::Instant::now();
    let out = c
        .run_as(
            "alice",
            &["ssh", "root@edge", "--", "echo", "decided"],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "decided");

    // Past the bound, logins are refused with the reason.
    std::thread::sleep(std::time::Duration::from_secs(31).saturating_sub(cut.elapsed()));
    let mut refused = None;
    while cut.elapsed() < std::time::Duration::from_secs(70) {
        let out = c.run_as("alice", &["ssh", "root@edge", "--", "true"], None);
        if !out.ok {
            refused = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let out = refused.expect("logins still allowed long after the bound");
    assert!(
        out.stderr.contains("copy of the access policy is"),
        "{}",
        out.all()
    );
    eprintln!("logins refused {:?} after auth went away", cut.elapsed());
}

/// The value of the metric `name` on the diagnostics port.
fn metric(diag: u16, name: &str) -> u64 {
    let metrics = http_get(diag, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// The recording store (S3) hangs while sessions end: their recordings
/// wait on the node (a metric counts them), auth's metric and /readyz say
/// the store is failing, and once S3 answers again every recording
/// arrives, followed by a `recordings.outage` audit event.
/// The disaster-recovery drill: a cluster on etcd, with a node and
/// recordings on S3, loses etcd and its auth host entirely. A new, empty
/// etcd, `warden admin restore` of the backup and `roles apply` of the
/// roles kept in git bring it back: the node reconnects without joining
/// again, users log in again, the old recording plays, and the audit log
/// says where it was restored.
#[test]
fn disaster_recovery_from_a_backup_and_git() {
    let s3 = s3::S3Server::start();
    let recordings = bucket(&s3, "dr");
    let dir = temp_dir("dr");
    // The proxy comes back where the node left it.
    let listen = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let etcd = etcd::EtcdCluster::start(1);
    let backend = etcd.url();
    let args = |backend: &str| {
        vec![
            "--backend".to_string(),
            backend.to_string(),
            "--recordings".to_string(),
            recordings.clone(),
            "--listen-addr".to_string(),
            listen.clone(),
        ]
    };
    let start = |backend: &str| {
        let a = args(backend);
        Cluster::start_with(&dir, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let c = start(&backend);
    let git = dir.join("git-roles");
    std::fs::create_dir_all(&git).unwrap();
    std::fs::write(
        git.join("dba.yaml"),
        "kind: role\nversion: v1\nmetadata:\n  name: dba\nspec:\n  allow:\n    logins: [postgres]\n    node_labels:\n      env: [dr]\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", git.to_str().unwrap()])
        .expect_ok();
    let node = TunnelNode::start(&c, "dr-1", "env=dr");
    let node_pid = node.pid();
    let secret = c.add_user("alice", "access,auditor", "root");
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    let logged_in = std::time::Instant::now();
    c.wait_reachable("alice", "root", "dr-1");
    c.run_as(
        "alice",
        &["ssh", "root@dr-1", "--", "echo", "before-the-disaster"],
        None,
    )
    .expect_ok();
    let old = wait_for_recording(&c, "alice", "echo before-the-disaster");

    // As the README shows it.
    let readme = include_str!("../../../README.md");
    for shown in [
        "warden admin backup -o backup.yaml --passphrase-file",
        "warden admin --data-dir /var/lib/warden restore backup.yaml",
        "--backend etcd://etcd1:2379 --passphrase-file",
    ] {
        assert!(
            readme.contains(shown),
            "README.md no longer shows {shown:?}"
        );
    }
    let pass = dir.join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    c.admin(&[
        "backup",
        "-o",
        "/dev/null",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ])
    .expect_err("chmod 600");
    warden_ca::keystore::write_private_file(&pass, b"correct horse battery staple\n").unwrap();
    // A time-limited lock is part of the state to restore.
    c.admin(&[
        "lock", "--login", "nobody", "--reason", "dr drill", "--ttl", "1h",
    ])
    .expect_ok();
    let file = dir.join("backup.yaml");
    c.admin(&[
        "backup",
        "-o",
        file.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ])
    .expect_ok();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("/roles/dba") && text.contains("/users/alice"),
        "{text}"
    );
    assert!(
        !text.contains("$argon2id$"),
        "a password hash in the clear:\n{text}"
    );
    let pin = c.pin.clone();

    // The disaster: etcd and the auth host are gone; the node lives on.
    drop(c);
    drop(etcd);
    std::fs::remove_dir_all(dir.join("data")).unwrap();
    let etcd = etcd::EtcdCluster::start(1);
    let data = dir.join("data");
    let restore = |passphrase: &std::path::Path| {
        run_program(
            WARDEN,
            &[
                "admin".into(),
                "--data-dir".into(),
                data.to_str().unwrap().into(),
                "restore".into(),
                file.to_str().unwrap().into(),
                "--backend".into(),
                etcd.url(),
                "--passphrase-file".into(),
                passphrase.to_str().unwrap().into(),
            ],
            None,
        )
    };
    let wrong = dir.join("wrong");
    warden_ca::keystore::write_private_file(&wrong, b"not the passphrase at all").unwrap();
    restore(&wrong).expect_err("wrong passphrase");
    let out = restore(&pass).expect_ok();
    assert!(out.stdout.contains("starts a new chain"), "{}", out.all());
    restore(&pass).expect_err("already holds a cluster");

    let c = start(&etcd.url());
    assert_eq!(c.pin, pin, "the same CA");
    c.admin(&["roles", "apply", "-f", git.to_str().unwrap()])
        .expect_ok();
    // The node reconnects by itself, with its old identity.
    assert!(rss_kib(node_pid) > 0, "the node process lives on");
    // A TOTP code is good once: wait for a fresh one.
    std::thread::sleep(std::time::Duration::from_secs(31).saturating_sub(logged_in.elapsed()));
    c.login("alice", "alice", &totp(&secret, 30)).expect_ok();
    c.wait_reachable("alice", "root", "dr-1");
    let out = c
        .run_as(
            "alice",
            &["ssh", "root@dr-1", "--", "echo", "after-the-restore"],
            None,
        )
        .expect_ok();
    assert_eq!(out.stdout.trim(), "after-the-restore");
    let played = c
        .run_as("alice", &["play", &old, "--format", "text"], None)
        .expect_ok();
    assert!(
        played.stdout.contains("before-the-disaster"),
        "{}",
        played.all()
    );
    let locks = c.admin(&["locks", "ls"]).expect_ok();
    assert!(locks.stdout.contains("dr drill"), "{}", locks.all());
    let roles = c.admin(&["roles", "ls"]).expect_ok();
    assert!(roles.stdout.contains("dba"), "{}", roles.stdout);
    // The audit log starts at the restore, and says from what.
    let events = c.events();
    let first = &events
        .iter()
        .find(|e| e["type"] == "cluster.restore")
        .expect("a cluster.restore event");
    assert_eq!(first["index"], 1, "{first}");
    assert_eq!(first["fields"]["new_chain"], true, "{first}");
    // The old chain's head was signed before the backup (every 10 s).
    assert!(
        first["fields"]["previous_head_index"].as_u64().is_some(),
        "{first}"
    );
    assert_eq!(first["fields"]["previous_head_signed"], true, "{first}");
    c.admin(&["audit", "verify"]).expect_ok();
    drop(node);
}

/// A large recording streams node to auth to S3 in parts: no process on
/// the way holds it whole, and S3 has it byte for byte.
#[test]
fn a_large_recording_streams_into_s3() {
    let s3 = s3::S3Server::start();
    let url = bucket(&s3, "large");
    let dir = temp_dir("s3-large");
    let c = Cluster::start_with(&dir, &["--recordings", &url]);
    use warden_store::RecordingStore;
    let store = warden_store::S3RecordingStore::from_url(&url).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = "0193a5e0-0000-7000-8000-0000000002cd";
    // Twelve parts.
    let data = c.stream_large_recording(id, 96, || rt.block_on(store.info(id)).unwrap().is_some());
    let copy = rt
        .block_on(async { warden_store::read_all(store.get(id).await?.unwrap()).await })
        .unwrap();
    assert!(
        copy == data,
        "S3 holds {} bytes, spooled {}",
        copy.len(),
        data.len()
    );
}

#[test]
fn recording_store_outage_on_s3_loses_nothing() {
    let s3 = s3::S3Server::start();
    let recordings = bucket(&s3, "outage");
    let (diag, diag_addr) = diag_port();
    let dir = temp_dir("s3-outage");
    let c = Cluster::start_with(
        &dir,
        &[
            "--name",
            "box",
            "--recordings",
            &recordings,
            "--diag-addr",
            &diag_addr,
        ],
    );
    let alice = c.add_user("alice", "access,auditor", "root");
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();
    c.wait_reachable("alice", "root", "box");
    c.run_as("alice", &["ssh", "root@box", "--", "echo", "before"], None)
        .expect_ok();
    wait_for_recording(&c, "alice", "echo before");
    assert_eq!(metric(diag, "warden_recording_store_failing"), 0);
    // The node's copy of the policy is current, and says since when.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let current = metric(diag, "warden_node_policy_current_timestamp_seconds");
    assert!(now.abs_diff(current) < 60, "{current} vs {now}");

    s3.freeze();
    let frozen = std::time::Instant::now();
    for i in 0..3 {
        let out = c
            .run_as(
                "alice",
                &["ssh", "root@box", "--", "echo", &format!("during-{i}")],
                None,
            )
            .expect_ok();
        assert_eq!(out.stdout.trim(), format!("during-{i}"));
    }
    // Auth notices when its S3 calls time out (30 s).
    while metric(diag, "warden_recording_store_failing") == 0 {
        assert!(
            frozen.elapsed() < std::time::Duration::from_secs(90),
            "auth never noticed the store was failing"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The node counts them as its upload loop comes round: a moment on a
    // loaded machine.
    let counted = std::time::Instant::now();
    let mut waiting = metric(diag, "warden_node_spooled_recordings");
    while waiting < 3 && counted.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        waiting = metric(diag, "warden_node_spooled_recordings");
    }
    assert!(waiting >= 3, "recordings waiting on the node: {waiting}");
    let ready = http_get(diag, "/readyz");
    assert!(ready.contains("recording store unavailable"), "{ready}");

    s3.thaw();
    let thawed = std::time::Instant::now();
    for i in 0..3 {
        wait_for_recording(&c, "alice", &format!("echo during-{i}"));
    }
    let outage = loop {
        let events = c.events();
        if let Some(e) = events.iter().find(|e| e["type"] == "recordings.outage") {
            break e.clone();
        }
        assert!(
            thawed.elapsed() < std::time::Duration::from_secs(60),
            "no recordings.outage event within 60 s of the store coming back"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(outage["code"], "WA9004W", "{outage}");
    assert!(
        outage["fields"]["failures"].as_u64().unwrap() >= 1,
        "{outage}"
    );
    eprintln!(
        "store back to every recording listed and the outage audited: {:?}",
        thawed.elapsed()
    );
    assert_eq!(metric(diag, "warden_recording_store_failing"), 0);
    let out = c
        .run_as(
            "alice",
            &[
                "play",
                &wait_for_recording(&c, "alice", "echo during-2"),
                "--format",
                "text",
            ],
            None,
        )
        .expect_ok();
    assert!(out.stdout.contains("during-2"), "{}", out.stdout);
    for _ in 0..100 {
        if metric(diag, "warden_node_spooled_recordings") == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("recordings still waiting on the node after the outage");
}
