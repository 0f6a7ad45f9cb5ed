//! Mutation fuzzing of audit search queries, the way they reach auth: a
//! URL query string (`GET /v1/audit/events?type=..&since=..`) decoded as
//! the HTTP layer decodes it (serde_urlencoded), then the SQL built from it
//! run by the real SQLite audit log. Nothing may panic; a query either is
//! refused with an error or returns at most its limit of events, every one
//! matching every filter, in the promised order. The CLI's `--since`
//! durations are fuzzed too. Deterministic; WARDEN_FUZZ_CASES for more.

use std::collections::HashMap;
use warden_store::{AuditLog, SqliteAuditLog};
use warden_types::api::AuditQuery;
use warden_types::audit::{codes, AuditEvent};
use warden_types::duration::HumanDuration;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const KEYS: [&str; 9] = [
    "type",
    "user",
    "since",
    "limit",
    "node",
    "session_id",
    "after",
    "bogus",
    "type[]",
];
const VALUES: [&str; 16] = [
    "session.start",
    "user.login",
    "alice",
    "bob",
    "n1",
    "s1",
    "0",
    "-1",
    "1700000000",
    "99999999999999999999",
    "5",
    "%27%20OR%201%3D1%20--",
    "a%00b",
    "%E2%82%AC",
    "%ZZ",
    "",
];
const NOISE: [&str; 10] = ["&", "=", "%", "+", "'", "\"", ";", "\u{0}", "é", "&&=="];

fn query(rng: &mut Rng) -> String {
    let mut parts = Vec::new();
    for _ in 0..rng.below(6) {
        parts.push(format!("{}={}", rng.pick(&KEYS), rng.pick(&VALUES)));
    }
    let mut q = parts.join("&");
    for _ in 0..rng.below(3) {
        let at = rng.below(q.len() + 1);
        if q.is_char_boundary(at) {
            q.insert_str(at, rng.pick(&NOISE));
        }
    }
    q
}

fn check(q: &AuditQuery, found: &[AuditEvent]) {
    let limit = q.limit.unwrap_or(1000).min(10_000) as usize;
    assert!(found.len() <= limit, "{} > {limit} for {q:?}", found.len());
    for e in found {
        let ok = q.event_type.as_ref().is_none_or(|t| &e.event_type == t)
            && q.user.as_ref().is_none_or(|u| &e.user == u)
            && q.node.as_ref().is_none_or(|n| e.node.as_ref() == Some(n))
            && q.session_id
                .as_ref()
                .is_none_or(|s| e.session_id.as_ref() == Some(s))
            && q.since.is_none_or(|t| e.time.unix_timestamp() >= t)
            && q.after.is_none_or(|a| e.index > a);
        assert!(ok, "{e:?} does not match {q:?}");
    }
    for w in found.windows(2) {
        let in_order = match q.after {
            Some(_) => w[0].index < w[1].index,
            None => {
                (w[0].time.unix_timestamp(), w[0].index) > (w[1].time.unix_timestamp(), w[1].index)
            }
        };
        assert!(in_order, "out of order for {q:?}");
    }
}

#[tokio::test]
async fn search_queries_never_panic_and_results_match() {
    let cases: usize = std::env::var("WARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let dir = std::env::temp_dir().join(format!("warden-qfuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = SqliteAuditLog::open(&dir.join("audit.db")).unwrap();
    let mut rng = Rng(0x0a0d_17f0_0123_4567);
    let kinds = [codes::SESSION_START, codes::LOGIN_SUCCESS, codes::EXEC];
    let batch: Vec<AuditEvent> = (0..600)
        .map(|i| {
            let mut e = AuditEvent::new(
                kinds[rng.below(3)],
                "c",
                ["alice", "bob", "carol"][rng.below(3)],
                "m",
            );
            e.node = (i % 4 != 0).then(|| format!("n{}", rng.below(3)));
            e.session_id = (i % 3 != 0).then(|| format!("s{}", rng.below(5)));
            // Out of order in time, as spooled node events arrive.
            let t = 1_700_000_000 + rng.below(100_000) as i64;
            e.time = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
            e
        })
        .collect();
    log.append_batch(batch).await.unwrap();

    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for _ in 0..cases {
        let text = query(&mut rng);
        let outcome = match serde_urlencoded::from_str::<AuditQuery>(&text) {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                "refused"
            }
            Ok(q) => {
                let found = log.search(&q).await.expect("a decoded query runs");
                check(&q, &found);
                if found.is_empty() {
                    "empty"
                } else {
                    "found"
                }
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert!(outcomes.len() == 3, "every outcome seen: {outcomes:?}");

    // `--since` durations: parse or refuse, and never overflow the clock.
    for _ in 0..cases {
        let digits = "9".repeat(1 + rng.below(25));
        let text = format!(
            "{digits}{}",
            rng.pick(&["s", "m", "h", "d", "y", "", "x", "ms"])
        );
        if let Ok(d) = text.parse::<HumanDuration>() {
            let t = d.before(1_700_000_000);
            assert!(t <= 1_700_000_000);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
