//! Audit ingestion and search. Ingestion: the SQLite `AuditLog` (hash
//! chain, five indexes, WAL, synchronous=FULL) one event per durable write
//! and 100 per write, vs a bare SQLite INSERT of the same JSON body with the
//! same durability (one per write, and 100 per transaction). Search: the
//! latency of typical auditor queries over 1,000,000 events through
//! `AuditLog::search`, vs the same SQL run directly on the same file (the
//! cost of the layer: a blocking-pool hop and JSON decoding).

use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use warden_bench::{rate, temp_dir};
use warden_store::{AuditLog, SqliteAuditLog};
use warden_types::api::AuditQuery;
use warden_types::audit::{codes, AuditEvent};

const TOTAL: usize = 1_000_000;
const USERS: u64 = 1_000;
const NODES: u64 = 100;
const DAYS: u64 = 30;
const CODES: [(&str, &str); 6] = [
    codes::SESSION_START,
    codes::SESSION_END,
    codes::LOGIN_SUCCESS,
    codes::LOGIN_FAILURE,
    codes::EXEC,
    codes::MFA_SESSION,
];

/// A tiny deterministic generator (the figures must not depend on luck).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// An event at `time` (a live log receives events in time order) of
/// session `s<session>`; ids are Warden's own (time-ordered UUIDs).
fn event(r: &mut Lcg, time: i64, session: u64) -> AuditEvent {
    let user = format!("user{}", r.next() % USERS);
    let mut e = AuditEvent::new(
        CODES[(r.next() % CODES.len() as u64) as usize],
        "bench",
        &user,
        "a benchmark event with a message of typical length",
    );
    e.node = Some(format!("node-{}", r.next() % NODES));
    e.session_id = Some(format!("s{session}"));
    e.login = Some("root".into());
    e.time = OffsetDateTime::from_unix_timestamp(time).unwrap_or(e.time);
    e
}

/// An event happening now, in one of 1,000 sessions.
fn live(r: &mut Lcg, now: i64) -> AuditEvent {
    let session = r.next() % 1000;
    event(r, now, session)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = temp_dir("audit");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut r = Lcg(7);

    // Ingestion.
    let log: Arc<dyn AuditLog> =
        Arc::new(SqliteAuditLog::open(&dir.join("ingest.db")).expect("open"));
    let single = rate(Duration::from_secs(3), 200, || {
        rt.block_on(log.append(live(&mut r, now))).expect("append");
    });
    let batched = 100.0
        * rate(Duration::from_secs(3), 20, || {
            let batch = (0..100).map(|_| live(&mut r, now)).collect();
            rt.block_on(log.append_batch(batch)).expect("append_batch");
        });
    let conn = rusqlite::Connection::open(dir.join("raw.db")).expect("open raw");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE events (idx INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("schema");
    let raw_single = rate(Duration::from_secs(3), 200, || {
        let body = serde_json::to_string(&live(&mut r, now)).expect("json");
        conn.execute("INSERT INTO events (body) VALUES (?1)", [body])
            .expect("insert");
    });
    let mut conn = conn;
    let raw_batched = 100.0
        * rate(Duration::from_secs(3), 20, || {
            let tx = conn.transaction().expect("tx");
            for _ in 0..100 {
                let body = serde_json::to_string(&live(&mut r, now)).expect("json");
                tx.execute("INSERT INTO events (body) VALUES (?1)", [body])
                    .expect("insert");
            }
            tx.commit().expect("commit");
        });
    println!("audit_ingest.single.warden {single:.0} events/s");
    println!("audit_ingest.single.raw_sqlite {raw_single:.0} events/s");
    println!("audit_ingest.single.ratio {:.2} x", single / raw_single);
    println!("audit_ingest.batch100.warden {batched:.0} events/s");
    println!("audit_ingest.batch100.raw_sqlite {raw_batched:.0} events/s");
    println!("audit_ingest.batch100.ratio {:.2} x", batched / raw_batched);

    // Search over 1,000,000 events.
    let path = dir.join("search.db");
    let log: Arc<dyn AuditLog> = Arc::new(SqliteAuditLog::open(&path).expect("open"));
    let fill = Instant::now();
    let span = (DAYS * 86_400) as usize;
    for b in 0..TOTAL / 1000 {
        // 30 days of events in order; about 10 per session, sessions
        // interleaved.
        let batch = (b * 1000..(b + 1) * 1000)
            .map(|i| {
                let time = now - (span - i * span / TOTAL) as i64;
                let session = (i + (r.next() % 50) as usize) / 10;
                event(&mut r, time, session as u64)
            })
            .collect();
        rt.block_on(log.append_batch(batch)).expect("fill");
    }
    println!(
        "audit_search.fill {:.0} events/s (1000 per write, in time order)",
        TOTAL as f64 / fill.elapsed().as_secs_f64()
    );
    let raw = rusqlite::Connection::open(&path).expect("open");
    let week = now - 7 * 86_400;
    let day = now - 86_400;
    type Case = (&'static str, fn(&mut Lcg, i64, i64) -> AuditQuery);
    let cases: [Case; 4] = [
        ("user", |r, _, _| AuditQuery {
            user: Some(format!("user{}", r.next() % USERS)),
            limit: Some(100),
            ..Default::default()
        }),
        ("type_since_7d", |r, week, _| AuditQuery {
            event_type: Some(
                CODES[(r.next() % CODES.len() as u64) as usize]
                    .0
                    .to_string(),
            ),
            since: Some(week),
            limit: Some(100),
            ..Default::default()
        }),
        ("node_since_24h", |r, _, day| AuditQuery {
            node: Some(format!("node-{}", r.next() % NODES)),
            since: Some(day),
            limit: Some(100),
            ..Default::default()
        }),
        ("session", |r, _, _| AuditQuery {
            session_id: Some(format!("s{}", r.next() % (TOTAL as u64 / 10))),
            limit: Some(100),
            ..Default::default()
        }),
    ];
    for (name, make) in cases {
        let (mut ours, mut direct) = (Vec::new(), Vec::new());
        let mut found = 0usize;
        for _ in 0..100 {
            let q = make(&mut r, week, day);
            let t = Instant::now();
            found += rt.block_on(log.search(&q)).expect("search").len();
            ours.push(t.elapsed());
            let t = Instant::now();
            let (sql, values) = warden_store::search_sql(&q);
            let mut st = raw.prepare_cached(&sql).expect("prepare");
            let rows: Vec<String> = st
                .query_map(rusqlite::params_from_iter(values), |row| row.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            direct.push(t.elapsed());
            assert!(rows.len() <= 100);
        }
        let (a, b) = (median(ours), median(direct));
        println!(
            "audit_search.{name}.warden {:.2} ms median ({} events returned per query on average)",
            a.as_secs_f64() * 1000.0,
            found / 100
        );
        println!(
            "audit_search.{name}.direct_sql {:.2} ms median",
            b.as_secs_f64() * 1000.0
        );
        println!(
            "audit_search.{name}.ratio {:.2} x the time",
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
