//! Auth goes away during a session: the node keeps the session's audit
//! events and its recording on disk and delivers both, in order and once,
//! when auth is back. Nothing acknowledged is lost.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn spooled_events(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("node-out-1/node/events"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn auth_outage_during_a_session_loses_nothing() {
    let dir = temp_dir("outage");
    let mut c = Cluster::start(&dir);
    let _node = TunnelNode::start(&c, "out-1", "env=out");
    let s = c.add_user("alice", "access,auditor", "root");
    c.login("alice", "alice", &totp(&s, 30)).expect_ok();
    c.wait_reachable("alice", "root", "out-1");

    let mut session = c.spawn_ssh("alice", "root@out-1", "echo before-the-outage; sleep 600");
    // Let the session start (and its start event reach auth).
    let t0 = Instant::now();
    let session_id = loop {
        let ev = c.events();
        // wait_reachable ran sessions of its own: follow the one whose
        // command is ours.
        if let Some(e) = ev.iter().find(|e| {
            e["type"] == "exec"
                && e["fields"]["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("before-the-outage"))
        }) {
            break e["session_id"].as_str().unwrap().to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no session.start");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Auth (and the proxy with it) goes away while the command runs: the
    // node sees its user's connection go, hangs the session up (the
    // command would run for ten minutes), and keeps the end event and the
    // recording until auth is back.
    let proxy = c.proxy.clone();
    c.kill();
    let _ = session.kill();
    let _ = session.wait();
    let t0 = Instant::now();
    while spooled_events(&dir) == 0 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        spooled_events(&dir) > 0,
        "the node should hold the events auth could not take"
    );
    std::thread::sleep(Duration::from_secs(3));

    // Auth is back (same data, same public address): the node delivers.
    let c = Cluster::start_with(&dir, &["--listen-addr", &proxy]);
    let t0 = Instant::now();
    let ev = loop {
        let ev = c.events();
        let ended = ev
            .iter()
            .any(|e| e["type"] == "session.end" && e["session_id"] == session_id.as_str());
        if ended && spooled_events(&dir) == 0 {
            break ev;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "spooled events never arrived ({} left)",
            spooled_events(&dir)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // Once each, and in the order they happened.
    let of_session: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["session_id"] == session_id.as_str())
        .collect();
    let starts = of_session
        .iter()
        .filter(|e| e["type"] == "session.start")
        .count();
    let ends: Vec<&&serde_json::Value> = of_session
        .iter()
        .filter(|e| e["type"] == "session.end")
        .collect();
    assert_eq!((starts, ends.len()), (1, 1), "{of_session:?}");
    let index = |t: &str| {
        of_session
            .iter()
            .find(|e| e["type"] == t)
            .and_then(|e| e["index"].as_u64())
            .unwrap()
    };
    assert!(index("session.start") < index("session.end"));
    // The recording arrives too, and plays up to the cut.
    let t0 = Instant::now();
    loop {
        let out = c.run_as("alice", &["play", &session_id, "--format", "text"], None);
        if out.ok && out.stdout.contains("before-the-outage") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "recording never arrived: {}",
            out.all()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The chain is intact across the outage.
    c.admin(&["audit", "verify"]).expect_ok();
}
