//! Database access against a real PostgreSQL server: certificate
//! authentication from the database CA, RBAC by db_labels/db_users/
//! db_names, per-statement audit, locks and access requests, with the
//! stock `psql` client through `warden db connect` and `warden proxy db`.

mod common;
#[path = "../../warden-store/tests/support/pg.rs"]
mod pg;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A database agent (`--roles db`) serving `dbs`, joined with a token.
struct DbAgent(Child);

impl DbAgent {
    fn start(c: &Cluster, dbs: &[String]) -> DbAgent {
        let out = c
            .admin(&["tokens", "add", "--type", "node", "--format", "json"])
            .expect_ok();
        let tok: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut cmd = Command::new(WARDEN);
        cmd.args(["start", "--roles", "db", "--proxy", &c.proxy])
            .args(["--ca-pin", &c.pin, "--name", "db-agent"])
            .args(["--token", tok["token"].as_str().unwrap()])
            .arg("--data-dir")
            .arg(c.dir.join("db-agent"));
        for db in dbs {
            cmd.args(["--db", db]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(c.dir.join("db-agent.log"))
                    .map(Stdio::from)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("no listening port"), "db agent: {line}");
        DbAgent(child)
    }
}

impl Drop for DbAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real MariaDB server for the test: its own data dir on a free
/// loopback port, TLS with the given certificate files, run as the `mysql`
/// user when we are root. Stopped and deleted on drop.
struct MariaDb {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl MariaDb {
    fn start(certs: &std::path::Path) -> MariaDb {
        let dir = std::env::temp_dir().join(format!("warden-maria-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["server.crt", "server.key", "ca.crt"] {
            std::fs::copy(certs.join(f), dir.join(f)).unwrap();
        }
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            assert!(Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(&dir)
                .status()
                .unwrap()
                .success());
        }
        let user = if root { "mysql" } else { "" };
        let out = Command::new("mariadb-install-db")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(if root {
                vec![format!("--user={user}")]
            } else {
                vec![]
            })
            .output()
            .expect("mariadb-install-db (apt-get install -y mariadb-server)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = |f: &str| dir.join(f).display().to_string();
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d("data")))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d("sock")))
            .arg(format!("--pid-file={}", d("pid")))
            .arg(format!("--log-error={}", d("err.log")))
            .arg(format!("--ssl-cert={}", d("server.crt")))
            .arg(format!("--ssl-key={}", d("server.key")))
            .arg(format!("--ssl-ca={}", d("ca.crt")))
            .arg("--skip-name-resolve");
        if root {
            cmd.arg("--user=mysql");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = MariaDb { child, dir, port };
        wait_for("MariaDB to start", || m.sql("select 1").is_ok());
        m
    }

    /// Runs SQL as the server's root, over its Unix socket.
    fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .unwrap();
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ROLES: &str = "\
kind: role
version: v1
metadata:
  name: dev-db
spec:
  allow:
    db_labels:
      env: dev
    db_users: [reader, '{{internal.db_user}}']
    db_names: [app, secret]
  deny:
    db_names: [secret]
---
kind: role
version: v1
metadata:
  name: db-requester
spec:
  allow:
    request:
      roles: [dev-db]
---
kind: role
version: v1
metadata:
  name: db-reviewer
spec:
  allow:
    review_requests:
      roles: [dev-db]
";

/// `warden proxy db NAME` for `home`'s user, on a free loopback port: the
/// process, its output (kept open: its printing must not meet a closed
/// pipe) and the port it serves.
fn local_tunnel(
    dir: &std::path::Path,
    home: &str,
    db: &str,
) -> (Child, BufReader<std::process::ChildStdout>, String) {
    let mut tunnel = Command::new(WARDEN)
        .args(["proxy", "db", db, "--port", "0"])
        .env("WARDEN_HOME", dir.join(home))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(tunnel.stdout.take().unwrap());
    let mut first = String::new();
    said.read_line(&mut first).unwrap();
    let port = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("no port in {first:?}"))
        .to_string();
    (tunnel, said, port)
}

/// psql with `sql` through a local tunnel on `port`, as `reader` on `app`.
fn through(port: &str, sql: &str) -> Out {
    run_program(
        "psql",
        &[
            format!("host=127.0.0.1 port={port} user=reader dbname=app sslmode=disable"),
            "-XAtc".into(),
            sql.into(),
        ],
        None,
    )
}

/// Runs `warden db connect` for `home` with psql arguments.
fn psql(c: &Cluster, home: &str, db: &str, flags: &[&str], sql: &str) -> Out {
    let mut args = vec!["db", "connect", db];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    c.run_as(home, &args, None)
}

fn events_of(c: &Cluster, kind: &str) -> Vec<serde_json::Value> {
    c.events()
        .into_iter()
        .filter(|e| e["type"] == kind)
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The README's Databases section shows what this test does.
#[test]
fn the_readme_shows_the_database_setup() {
    let readme = include_str!("../../../README.md");
    for line in [
        "warden admin db cert --host 127.0.0.1 --out-dir",
        "hostssl all all 127.0.0.1/32 cert",
        "ssl_ca_file = '/etc/postgresql/warden/ca.crt'",
        "--db 'pg1=postgres://127.0.0.1:5432?label.env=dev",
        "warden db connect pg1 -- -c 'select 1'",
        "warden proxy db pg1 --port 15432",
        "db_users: [reader, '{{internal.db_user}}']",
        "CREATE USER reader@'%' REQUIRE SUBJECT '/CN=reader';",
        "--db 'my1=mysql://127.0.0.1:3306?label.env=dev'",
    ] {
        assert!(readme.contains(line), "README.md no longer shows {line:?}");
    }
}

#[test]
fn postgres_and_mariadb_through_the_proxy_with_certificates_rbac_audit_and_locks() {
    let dir = temp_dir("db");
    let c = Cluster::start(&dir);

    // The database side: a server certificate from the database CA, the
    // CA as what client certificates must chain to, cert auth for all but
    // the local superuser.
    let certs = dir.join("pg-certs");
    let out = c
        .admin(&[
            "db",
            "cert",
            "--host",
            "127.0.0.1",
            "--out-dir",
            certs.to_str().unwrap(),
        ])
        .expect_ok();
    assert!(out.stdout.contains("hostssl"), "{}", out.stdout);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(certs.join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    let ca = c.admin(&["db", "ca", "export"]).expect_ok().stdout;
    assert_eq!(ca, std::fs::read_to_string(certs.join("ca.crt")).unwrap());
    let also = c
        .admin(&["ca", "export", "--type", "db"])
        .expect_ok()
        .stdout;
    assert_eq!(also, ca);
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let (crt, key, cacrt) = (read("server.crt"), read("server.key"), read("ca.crt"));
    let hba = b"local all all trust\nhost all warden 127.0.0.1/32 trust\nhostssl all all 127.0.0.1/32 cert\n";
    let server = pg::PgServer::start_with(
        &[
            ("server.crt", &crt),
            ("server.key", &key),
            ("ca.crt", &cacrt),
            ("pg_hba.conf", hba),
        ],
        &[
            "ssl=on",
            "ssl_cert_file={dir}/server.crt",
            "ssl_key_file={dir}/server.key",
            "ssl_ca_file={dir}/ca.crt",
            "hba_file={dir}/pg_hba.conf",
        ],
    );
    server.sql("postgres", "CREATE ROLE reader LOGIN");
    server.sql("postgres", "CREATE ROLE alice LOGIN");
    server.database("app");
    server.database("secret");
    server.sql(
        "app",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (42); GRANT SELECT ON t TO reader",
    );

    // MariaDB, with the same server certificate; its users must show a
    // certificate naming them.
    let maria = MariaDb::start(&certs);
    maria
        .sql(
            "CREATE DATABASE app; CREATE TABLE app.t (x int); INSERT INTO app.t VALUES (42); \
             CREATE USER reader@'%' REQUIRE SUBJECT '/CN=reader'; GRANT SELECT ON app.* TO reader@'%'",
        )
        .unwrap();

    let dev = format!("pg1=postgres://127.0.0.1:{}?label.env=dev", server.port);
    let prod = format!("pg2=postgres://127.0.0.1:{}?label.env=prod", server.port);
    let my = format!("my1=mysql://127.0.0.1:{}?label.env=dev", maria.port);
    let _agent = DbAgent::start(&c, &[dev, prod, my]);

    let roles = dir.join("roles.yaml");
    std::fs::write(&roles, ROLES).unwrap();
    c.admin(&["roles", "apply", "-f", roles.to_str().unwrap()])
        .expect_ok();
    let alice = c.add_user_with("alice", "dev-db", "", &["--traits", "db_user=alice"]);
    c.login("alice", "alice", &totp(&alice, 30)).expect_ok();

    // Alice's roles reach pg1 (env=dev), not pg2.
    let mut listed = Vec::new();
    wait_for("the agent's databases in the inventory", || {
        let out = c
            .run_as("alice", &["db", "ls", "--format", "json"], None)
            .expect_ok();
        let dbs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        listed = dbs.iter().map(|d| d["name"].to_string()).collect();
        dbs.len() >= 2
    });
    listed.sort();
    assert_eq!(listed, vec!["\"my1\"", "\"pg1\""], "only the dev databases");
    let table = c.run_as("alice", &["db", "ls"], None).expect_ok();
    assert!(table.stdout.contains("env=dev"), "{}", table.stdout);

    // Allowed: the database user and name the role gives.
    let out = psql(
        &c,
        "alice",
        "pg1",
        &["--db-user", "reader", "--db-name", "app"],
        "select x from t",
    );
    assert_eq!(out.stdout.trim(), "42", "{}", out.all());
    assert!(out.ok, "{}", out.all());
    // A trait template: alice's own database user; saved by `db login`.
    c.run_as(
        "alice",
        &[
            "db",
            "login",
            "pg1",
            "--db-user",
            "alice",
            "--db-name",
            "app",
        ],
        None,
    )
    .expect_ok();
    let out = psql(&c, "alice", "pg1", &[], "select current_user");
    assert_eq!(out.stdout.trim(), "alice", "{}", out.all());

    // Refused, each with what was wrong: a database user the role does
    // not give, a name a deny rule takes away, a database outside the
    // role's labels.
    let out = psql(
        &c,
        "alice",
        "pg1",
        &["--db-user", "postgres", "--db-name", "app"],
        "select 1",
    );
    assert!(!out.ok, "{}", out.all());
    assert!(
        out.stderr.contains("denied")
            && out
                .stderr
                .contains("database user \"postgres\" not in allowed db_users"),
        "{}",
        out.all()
    );
    let out = psql(
        &c,
        "alice",
        "pg1",
        &["--db-user", "reader", "--db-name", "secret"],
        "select 1",
    );
    assert!(!out.ok && out.stderr.contains("deny rule"), "{}", out.all());
    let out = psql(&c, "alice", "pg2", &["--db-user", "reader"], "select 1");
    assert!(
        !out.ok && out.stderr.contains("no database pg2"),
        "{}",
        out.all()
    );
    // Auth decides too, not only the listing: an editor lists every
    // database (it may list nodes) but no role of hers has db_labels.
    let erin = c.add_user("erin", "editor", "");
    c.login("erin", "erin", &totp(&erin, 30)).expect_ok();
    let out = psql(&c, "erin", "pg2", &["--db-user", "reader"], "select 1");
    assert!(
        !out.ok
            && out.stderr.contains("denied")
            && out.stderr.contains("no role allows this database access"),
        "{}",
        out.all()
    );

    // The audit log: the session, its statement, its end; the refusals.
    wait_for("the query in the audit log", || {
        events_of(&c, "db.query")
            .iter()
            .any(|e| e["fields"]["query"] == "select x from t")
    });
    let q = events_of(&c, "db.query")
        .into_iter()
        .find(|e| e["fields"]["query"] == "select x from t")
        .unwrap();
    assert_eq!(q["user"], "alice", "{q}");
    assert_eq!(q["fields"]["db_user"], "reader", "{q}");
    assert_eq!(q["fields"]["db_name"], "app", "{q}");
    assert_eq!(q["fields"]["database"], "pg1", "{q}");
    let started: Vec<_> = events_of(&c, "db.session.start")
        .into_iter()
        .filter(|e| e["success"] == true)
        .collect();
    assert!(
        started
            .iter()
            .any(|e| e["session_id"] == q["session_id"] && e["fields"]["roles"][0] == "dev-db"),
        "{started:?}"
    );
    wait_for("the session's end", || {
        events_of(&c, "db.session.end")
            .iter()
            .any(|e| e["session_id"] == q["session_id"])
    });
    // MariaDB with the stock client: allowed, then a database user the
    // role does not give.
    let out = c.run_as(
        "alice",
        &[
            "db",
            "connect",
            "my1",
            "--db-user",
            "reader",
            "--db-name",
            "app",
            "--",
            "-N",
            "-B",
            "-e",
            "select x from t",
        ],
        None,
    );
    assert_eq!(out.stdout.trim(), "42", "{}", out.all());
    let out = c.run_as(
        "alice",
        &[
            "db",
            "connect",
            "my1",
            "--db-user",
            "root",
            "--db-name",
            "app",
            "--",
            "-e",
            "select 1",
        ],
        None,
    );
    assert!(
        !out.ok
            && out
                .stderr
                .contains("database user \"root\" not in allowed db_users"),
        "{}",
        out.all()
    );
    wait_for("the MariaDB query in the audit log", || {
        events_of(&c, "db.query")
            .iter()
            .any(|e| e["fields"]["database"] == "my1" && e["fields"]["query"] == "select x from t")
    });

    // `warden play` shows a database session as its statements.
    let dave = c.add_user("dave", "auditor", "");
    c.login("dave", "dave", &totp(&dave, 30)).expect_ok();
    let played = c
        .run_as("dave", &["play", q["session_id"].as_str().unwrap()], None)
        .expect_ok();
    assert!(
        played.stdout.contains("select x from t")
            && played.stdout.contains("as reader (database app)"),
        "{}",
        played.stdout
    );
    let refused: Vec<_> = events_of(&c, "db.session.start")
        .into_iter()
        .filter(|e| e["success"] == false)
        .collect();
    assert!(
        refused.iter().any(|e| e["fields"]["db_name"] == "secret"),
        "{refused:?}"
    );

    // `warden proxy db`: a loopback port for other tools.
    let (mut tunnel, said, port) = local_tunnel(&dir, "alice", "pg1");
    let out = through(&port, "select x + 1 from t");
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    drop(said);
    assert_eq!(out.stdout.trim(), "43", "{}", out.all());

    // A lock ends live sessions within seconds: one on PostgreSQL, one on
    // MariaDB.
    let live = |db: &str, sql: &str| {
        Command::new(WARDEN)
            .args([
                "db",
                "connect",
                db,
                "--db-user",
                "reader",
                "--db-name",
                "app",
                "--",
            ])
            .args(if db == "pg1" {
                ["-X", "-c", sql]
            } else {
                ["-N", "-e", sql]
            })
            .env("WARDEN_HOME", dir.join("alice"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let before = events_of(&c, "db.session.start").len();
    let mut sessions = [
        live("pg1", "select pg_sleep(120)"),
        live("my1", "select sleep(120)"),
    ];
    wait_for("the live sessions to start", || {
        events_of(&c, "db.session.start").len() >= before + 2
    });
    c.admin(&["lock", "--user", "alice", "--reason", "INC-7"])
        .expect_ok();
    let locked_at = Instant::now();
    for s in &mut sessions {
        let ended = loop {
            if let Some(status) = s.try_wait().unwrap() {
                break status;
            }
            assert!(
                locked_at.elapsed() < Duration::from_secs(5),
                "a session outlived the lock"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(!ended.success());
    }
    let [pg, my] = sessions;
    let out = finish(pg, None);
    assert!(out.stderr.contains("INC-7"), "{}", out.all());
    let out = finish(my, None);
    assert!(out.stderr.contains("Lost connection"), "{}", out.all());
    wait_for("both terminations in the audit log", || {
        let ended = events_of(&c, "db.session.terminated");
        ["pg1", "my1"].iter().all(|db| {
            ended
                .iter()
                .any(|e| e["user"] == "alice" && e["fields"]["database"] == *db)
        })
    });
    let out = psql(
        &c,
        "alice",
        "pg1",
        &["--db-user", "reader", "--db-name", "app"],
        "select 1",
    );
    assert!(!out.ok && out.stderr.contains("INC-7"), "{}", out.all());

    // An access request grants the database while it is in force.
    let bob = c.add_user("bob", "db-requester", "");
    let carol = c.add_user("carol", "db-reviewer", "");
    c.login("bob", "bob", &totp(&bob, 30)).expect_ok();
    c.login("carol", "carol", &totp(&carol, 30)).expect_ok();
    let out = psql(
        &c,
        "bob",
        "pg1",
        &["--db-user", "reader", "--db-name", "app"],
        "select 1",
    );
    assert!(
        !out.ok && out.stderr.contains("no database pg1"),
        "no role of bob's reaches pg1: {}",
        out.all()
    );
    let id = c
        .run_as(
            "bob",
            &[
                "request",
                "create",
                "--roles",
                "dev-db",
                "--reason",
                "INC-8",
                "--no-wait",
            ],
            None,
        )
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    c.run_as(
        "carol",
        &["request", "review", &id, "--approve", "--reason", "ok"],
        None,
    )
    .expect_ok();
    // Through a local tunnel that stays up: each connection is decided by
    // auth when it is made.
    let (mut tunnel, said, port) = local_tunnel(&dir, "bob", "pg1");
    let out = through(&port, "select x from t");
    assert_eq!(out.stdout.trim(), "42", "{}", out.all());
    c.run_as("bob", &["request", "drop", &id], None).expect_ok();
    // Auth's caches follow the store's watch: a moment, not a session.
    let mut out = through(&port, "select 1");
    for _ in 0..25 {
        if !out.ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = through(&port, "select 1");
    }
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    drop(said);
    assert!(
        !out.ok && out.stderr.contains("denied"),
        "a dropped request grants nothing: {}",
        out.all()
    );
}
