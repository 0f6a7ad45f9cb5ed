//! Session recording end to end: sessions through the proxy are recorded
//! at the node, uploaded, listed, played as text and exported to asciicast
//! for the stock `asciinema` player; a node killed mid-session uploads
//! the partial recording after its restart; a tampered audit log fails
//! verification naming the event.

mod common;

use common::*;
use std::time::Duration;

fn wait_for_recording(
    c: &Cluster,
    home: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..150 {
        let out = c
            .run_as(home, &["recordings", "ls", "--format", "json"], None)
            .expect_ok();
        let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        if let Some(r) = list.into_iter().find(|r| pred(r)) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the recording never arrived");
}

#[test]
fn sessions_are_recorded_listed_and_played() {
    let dir = temp_dir("rec");
    let c = Cluster::start(&dir);
    let node = TunnelNode::start(&c, "rec-1", "env=rec");
    let s = c.add_user("alice", "access,auditor", "root");
    c.login("alice", "alice", &totp(&s, 30)).expect_ok();
    let s = c.add_user("bob", "access", "root");
    c.login("bob", "bob", &totp(&s, 30)).expect_ok();
    c.wait_reachable("alice", "root", "rec-1");

    let out = c
        .run_as(
            "alice",
            &[
                "ssh",
                "root@rec-1",
                "--",
                "echo recorded-$((6*7)); printf '\\033[1mbold\\033[0m\\n'",
            ],
            None,
        )
        .expect_ok();
    assert!(out.stdout.contains("recorded-42"), "{}", out.all());
    let rec = wait_for_recording(&c, "alice", |r| {
        r["command"].as_str().unwrap_or("").contains("recorded-")
    });
    assert_eq!(rec["user"], "alice");
    assert_eq!(rec["login"], "root");
    assert_eq!(rec["node_name"], "rec-1");
    let id = rec["session_id"].as_str().unwrap().to_string();

    let text = c
        .run_as("alice", &["play", &id, "--format", "text"], None)
        .expect_ok();
    assert!(text.stdout.contains("recorded-42"), "{}", text.stdout);
    assert!(
        text.stdout.contains("bold\n") && !text.stdout.contains('\u{1b}'),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("# exec: echo recorded-"),
        "{}",
        text.stdout
    );

    // The asciicast export plays in Debian's asciinema.
    let cast = c
        .run_as("alice", &["play", &id, "--format", "asciicast"], None)
        .expect_ok();
    let path = dir.join("s.cast");
    std::fs::write(&path, &cast.stdout).unwrap();
    // `asciinema cat` wants a terminal: give it one with script(1).
    let played = run_program(
        "script",
        &[
            "-q".into(),
            "-e".into(),
            "-c".into(),
            format!("asciinema cat {}", path.display()),
            "/dev/null".into(),
        ],
        None,
    );
    assert!(played.ok, "{}", played.all());
    assert!(played.stdout.contains("recorded-42"), "{}", played.all());

    // Terminal playback with timing (not a terminal here: no keys).
    let term = c
        .run_as("alice", &["play", &id, "--speed", "4"], None)
        .expect_ok();
    assert!(term.stdout.contains("recorded-42"));
    // Something that is not a session id gets a plain answer.
    c.run_as("alice", &["play", "nonsense"], None)
        .expect_err("no recording with id \"nonsense\"");

    // Only auditors; and playing is audited.
    c.run_as("bob", &["recordings", "ls"], None).expect_err("");
    c.run_as("bob", &["play", &id, "--format", "text"], None)
        .expect_err("");
    let events = c.events();
    assert!(events.iter().any(|e| e["type"] == "recording.play"
        && e["user"] == "alice"
        && e["session_id"] == id.as_str()));

    // SIGKILL the node mid-session: after its restart the partial recording
    // is uploaded and plays up to the cut.
    let mut session = c.spawn_ssh("alice", "root@rec-1", "echo before-the-crash; sleep 600");
    // The spool is synced every 2 s.
    std::thread::sleep(Duration::from_secs(4));
    drop(node); // SIGKILL
    let _ = session.kill();
    let _ = session.wait();
    // A spool file damaged on disk is set aside, and does not hold up
    // the others.
    let spool = c.dir.join("node-rec-1/node/recordings");
    let damaged = spool.join("00000000-0000-7000-8000-000000000001.wrec");
    let mut junk = b"WRC2".to_vec();
    for word in [4u32, 4, 0xdead_beef] {
        junk.extend(word.to_be_bytes());
    }
    junk.extend(b"junk");
    std::fs::write(&damaged, junk).unwrap();
    let _node = TunnelNode::start(&c, "rec-1", "env=rec");
    let rec = wait_for_recording(&c, "alice", |r| {
        r["command"]
            .as_str()
            .unwrap_or("")
            .contains("before-the-crash")
    });
    let id = rec["session_id"].as_str().unwrap();
    let text = c
        .run_as("alice", &["play", id, "--format", "text"], None)
        .expect_ok();
    assert!(text.stdout.contains("before-the-crash"), "{}", text.stdout);
    let t0 = std::time::Instant::now();
    while !damaged.with_extension("bad").exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "not set aside");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!damaged.exists());
}

/// A large recording goes from the node's spool through auth into the
/// store as it streams: auth's memory does not grow by the recording's
/// size (it used to hold every upload whole), nor does the node's, and the
/// stored file is the spooled one byte for byte.
#[test]
fn a_large_recording_streams_through_auth() {
    const MIB: usize = 160;
    let dir = temp_dir("rec-large");
    let c = Cluster::start(&dir);
    let id = "0193a5e0-0000-7000-8000-0000000001ab";
    let stored = dir.join("data/recordings").join(format!("{id}.json"));
    let data = c.stream_large_recording(id, MIB, || stored.exists());
    let copy = std::fs::read(dir.join("data/recordings").join(format!("{id}.wrec"))).unwrap();
    assert!(
        copy == data,
        "stored {} bytes, spooled {}",
        copy.len(),
        data.len()
    );
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&stored).unwrap()).unwrap();
    assert_eq!(info["size"], data.len() as u64);
    assert_eq!(info["truncated"], false);

    // Played back, it streams out of auth too.
    let s = c.add_user("alice", "auditor", "root");
    c.login("alice", "alice", &totp(&s, 30)).expect_ok();
    let before = peak_rss_kib(c.pid());
    // Into a file, not this test's memory (it is several times the size).
    let cast = dir.join("large.cast");
    let t0 = std::time::Instant::now();
    let status = std::process::Command::new(WARDEN)
        .args(["play", id, "--format", "asciicast"])
        .env("WARDEN_HOME", dir.join("alice"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .stdout(std::fs::File::create(&cast).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let played = std::fs::metadata(&cast).unwrap().len();
    eprintln!(
        "played {} MiB as asciicast in {:?}; auth peak RSS {} MiB before, {} MiB after",
        played >> 20,
        t0.elapsed(),
        before >> 10,
        peak_rss_kib(c.pid()) >> 10
    );
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut std::fs::File::open(&cast).unwrap(), &mut head).unwrap();
    assert_eq!(&head, b"{\"version\":2");
    assert!(played > (MIB as u64) << 20);
    let _ = std::fs::remove_file(&cast);
    let grew = peak_rss_kib(c.pid()).saturating_sub(before) >> 10;
    assert!(
        grew < (MIB / 2) as u64,
        "auth's peak memory grew by {grew} MiB playing {MIB} MiB"
    );
}

fn sql(db: &std::path::Path, script: &str) {
    let out = run_program(
        "python3",
        &[
            "-c".into(),
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()".into(),
            db.display().to_string(),
            script.into(),
        ],
        None,
    );
    assert!(out.ok, "{}", out.all());
}

/// Altering, reordering or deleting an event row in the SQLite file, or
/// cutting events off the end, makes `audit verify` fail and name it.
#[test]
fn audit_verify_detects_tampering() {
    let dir = temp_dir("tamper");
    let c = Cluster::start(&dir);
    for u in ["u1", "u2", "u3", "u4"] {
        c.admin(&["users", "add", u, "--roles", "access"])
            .expect_ok();
    }
    let db = dir.join("data").join("audit.db");
    let ok = c.admin(&["audit", "verify"]).expect_ok();
    assert!(ok.stdout.starts_with("OK: "), "{}", ok.all());

    sql(&db, "UPDATE events SET body = replace(body, '\"message\":\"', '\"message\":\"forged ') WHERE idx = 3");
    c.admin(&["audit", "verify"]).expect_err("event 3");
    sql(&db, "UPDATE events SET body = replace(body, '\"message\":\"forged ', '\"message\":\"') WHERE idx = 3");
    c.admin(&["audit", "verify"]).expect_ok();

    let swap = "CREATE TABLE sw AS SELECT idx, body, hash FROM events WHERE idx IN (4, 5); UPDATE events SET body = (SELECT body FROM sw WHERE sw.idx = 9 - events.idx), hash = (SELECT hash FROM sw WHERE sw.idx = 9 - events.idx) WHERE idx IN (4, 5); DROP TABLE sw";
    sql(&db, swap);
    c.admin(&["audit", "verify"]).expect_err("event 4");
    sql(&db, swap);
    c.admin(&["audit", "verify"]).expect_ok();

    // A search column edited to hide an event from searches (the body,
    // which the hash covers, still names the real user).
    sql(&db, "UPDATE events SET user = 'nobody' WHERE idx = 3");
    c.admin(&["audit", "verify"]).expect_err("search columns");
    sql(
        &db,
        "UPDATE events SET user = json_extract(body, '$.user') WHERE idx = 3",
    );
    c.admin(&["audit", "verify"]).expect_ok();

    sql(&db, "CREATE TABLE saved AS SELECT * FROM events WHERE idx = 2; DELETE FROM events WHERE idx = 2");
    c.admin(&["audit", "verify"]).expect_err("event 2");
    sql(
        &db,
        "INSERT INTO events SELECT * FROM saved; DROP TABLE saved",
    );
    c.admin(&["audit", "verify"]).expect_ok();

    // Cutting the newest events off: caught by the signed chain head.
    let mut signed = false;
    for _ in 0..150 {
        let out = c.admin(&["audit", "verify"]).expect_ok();
        let idx = c
            .events()
            .iter()
            .filter_map(|e| e["index"].as_u64())
            .max()
            .unwrap();
        if out.stdout.contains(&format!("signed at event {idx} ")) {
            sql(&db, &format!("DELETE FROM events WHERE idx >= {idx}"));
            signed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(signed, "the chain head is signed within seconds");
    c.admin(&["audit", "verify"])
        .expect_err("removed from the end");
    // The signer never signs the shorter chain, nor a new one grown over
    // the cut: after new events and more than a signing round, verify
    // still reports it.
    c.admin(&["users", "add", "u5", "--roles", "access"])
        .expect_ok();
    c.admin(&["users", "add", "u6", "--roles", "access"])
        .expect_ok();
    std::thread::sleep(Duration::from_secs(12));
    c.admin(&["audit", "verify"])
        .expect_err("signed chain head");

    // Export: JSON lines, oldest first.
    let out = c
        .admin(&["audit", "export", "--format", "jsonl"])
        .expect_ok();
    let first: serde_json::Value =
        serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["index"], 1);
    assert!(out.stdout.lines().count() >= 4);
}
