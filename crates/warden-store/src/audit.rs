//! The audit log: append-only, hash-chained, searchable.

use crate::backend::StoreError;
use crate::Result;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_types::api::AuditQuery;
use warden_types::audit::AuditEvent;

/// Outcome of checking the hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    /// The first event whose hash or link does not check out.
    pub first_broken: Option<(u64, String)>,
}

/// Where audit events go. `append` returns only once the event is durable.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Chains and stores `event`; returns it with index and hashes set.
    /// An event whose id is already stored is refused with
    /// `AlreadyExists`, so a resend after a lost acknowledgement is harmless.
    async fn append(&self, event: AuditEvent) -> Result<AuditEvent>;
    /// Appends several events in one durable write, in order; events whose
    /// id is already stored are skipped. Returns the events stored.
    async fn append_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            match self.append(e).await {
                Ok(e) => out.push(e),
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// Newest first by event time (or, with `after`, oldest first by index).
    async fn search(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>>;
    /// How many events match `query`'s filters (its limit aside).
    async fn count(&self, query: &AuditQuery) -> Result<u64>;
    /// Recomputes the chain.
    async fn verify(&self) -> Result<VerifyReport>;
    /// The event at `index`, if stored.
    async fn at(&self, index: u64) -> Result<Option<AuditEvent>> {
        let q = AuditQuery {
            after: Some(index.saturating_sub(1)),
            limit: Some(1),
            ..Default::default()
        };
        Ok(self
            .search(&q)
            .await?
            .into_iter()
            .find(|e| e.index == index))
    }
    /// The last event's index and hash (the end of the chain, whatever
    /// the events' times).
    async fn head(&self) -> Result<Option<(u64, String)>>;
}

/// SQLite [`AuditLog`] in its own file, so audit I/O never blocks the state
/// store.
#[derive(Clone)]
pub struct SqliteAuditLog {
    conn: Arc<Mutex<Connection>>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Hex SHA-256 of an event's canonical form.
pub fn event_hash(event: &AuditEvent) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, &event.hash_input());
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

impl SqliteAuditLog {
    pub fn open(path: &Path) -> Result<Self> {
        crate::sqlite::create_private_db(path)?;
        let conn = Connection::open(path).map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS events (
                 idx INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, time INTEGER NOT NULL,
                 type TEXT NOT NULL, user TEXT NOT NULL, node TEXT, session_id TEXT,
                 body TEXT NOT NULL, hash TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_time ON events(time);
             CREATE INDEX IF NOT EXISTS events_type ON events(type, time);
             CREATE INDEX IF NOT EXISTS events_user ON events(user, time);
             CREATE INDEX IF NOT EXISTS events_node ON events(node, time);
             DROP INDEX IF EXISTS events_session;
             CREATE INDEX IF NOT EXISTS events_session_time ON events(session_id, time);",
        )
        .map_err(db_err)?;
        Ok(SqliteAuditLog {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("audit task failed: {e}")))?
    }
}

fn parse(body: String) -> rusqlite::Result<AuditEvent> {
    serde_json::from_str(&body).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The SQL of a search and its parameters. Only the filters given appear
/// in the statement, so SQLite can use the index of each (a generic
/// `?x IS NULL OR col = ?x` form makes it scan the table newest first).
pub fn search_sql(q: &AuditQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let (filter, mut values) = filter_sql(q);
    // Newest first by time: each filter's (column, time) index, which
    // SQLite extends with idx, yields rows already in this order, so the
    // scan stops at the limit instead of sorting every match. A stream
    // (`after`) follows the chain instead.
    values.push(Value::Integer(search_limit(q)));
    (
        format!(
            "SELECT body FROM events {filter} ORDER BY {} LIMIT ?",
            search_order(q)
        ),
        values,
    )
}

/// Newest first by time, or along the chain for a stream (`after`).
pub(crate) fn search_order(q: &AuditQuery) -> &'static str {
    if q.after.is_some() {
        "idx ASC"
    } else {
        "time DESC, idx DESC"
    }
}

/// A value a search filter compares with.
#[derive(Clone, Debug)]
pub(crate) enum FilterValue {
    Text(String),
    Int(i64),
}

/// A query's filters as `column op` and value, in one order for every SQL
/// dialect. `"user"` is quoted: PostgreSQL reserves the word.
pub(crate) fn filters(q: &AuditQuery) -> Vec<(&'static str, FilterValue)> {
    use FilterValue::{Int, Text};
    let mut out = Vec::new();
    let mut add = |cond: &'static str, v: Option<FilterValue>| {
        if let Some(v) = v {
            out.push((cond, v));
        }
    };
    add("type =", q.event_type.clone().map(Text));
    add("\"user\" =", q.user.clone().map(Text));
    add("time >=", q.since.map(Int));
    add("node =", q.node.clone().map(Text));
    add("session_id =", q.session_id.clone().map(Text));
    add("idx >", q.after.map(|a| Int(a.min(i64::MAX as u64) as i64)));
    out
}

/// The most events one search returns.
pub(crate) fn search_limit(q: &AuditQuery) -> i64 {
    i64::from(q.limit.unwrap_or(1000).min(10_000))
}

/// The `WHERE` clause of a query's filters (empty without any), with
/// `placeholder(n)` (from 1) for each value, and the values in order.
pub(crate) fn filter_clause(
    q: &AuditQuery,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<FilterValue>) {
    let (conds, values): (Vec<String>, Vec<FilterValue>) = filters(q)
        .into_iter()
        .enumerate()
        .map(|(i, (cond, v))| (format!("{cond} {}", placeholder(i + 1)), v))
        .unzip();
    let clause = match conds.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conds.join(" AND ")),
    };
    (clause, values)
}

/// SQLite's form of [`filter_clause`].
fn filter_sql(q: &AuditQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let (clause, values) = filter_clause(q, |_| "?".to_string());
    let values = values
        .into_iter()
        .map(|v| match v {
            FilterValue::Text(t) => Value::Text(t),
            FilterValue::Int(i) => Value::Integer(i),
        })
        .collect();
    (clause, values)
}

/// What is wrong with the stored event at `idx`, if anything: its place in
/// the chain, its link, its hash, and that the columns searches use say
/// what the hashed body says (or an edited column could hide an event).
pub(crate) fn check_stored(
    expected_idx: u64,
    prev_hash: &str,
    idx: i64,
    stored_hash: &str,
    columns: &StoredColumns,
    event: &AuditEvent,
) -> Option<String> {
    let body_says = (
        event.id.clone(),
        event.time.unix_timestamp(),
        event.event_type.clone(),
        event.user.clone(),
        event.node.clone(),
        event.session_id.clone(),
    );
    if idx as u64 != expected_idx || event.index != idx as u64 {
        Some(format!("event {expected_idx} is missing or out of order"))
    } else if event.prev_hash != prev_hash {
        Some("link to the previous event does not match".to_string())
    } else if event_hash(event) != event.hash || event.hash != stored_hash {
        Some("content does not match its hash".to_string())
    } else if *columns != body_says {
        Some(
            "search columns (id, time, type, user, node, session) differ from the hashed event"
                .to_string(),
        )
    } else {
        None
    }
}

/// The searchable columns of a stored event: id, time, type, user, node,
/// session id.
pub(crate) type StoredColumns = (String, i64, String, String, Option<String>, Option<String>);

/// IMMEDIATE: the chain head is read and extended under one write lock,
/// even with several processes appending.
fn begin(c: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err)
}

/// The last event's index and hash (0 and "" for an empty log).
fn chain_head(tx: &rusqlite::Transaction<'_>) -> Result<(i64, String)> {
    Ok(tx
        .prepare_cached("SELECT idx, hash FROM events ORDER BY idx DESC LIMIT 1")
        .map_err(db_err)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err)?
        .unwrap_or((0, String::new())))
}

/// Chains one event onto `head` and inserts it; `None` (and `head` as it
/// was) when its id is already stored. The head is read once per
/// transaction, which holds the write lock, and carried from event to
/// event.
fn insert(
    tx: &rusqlite::Transaction<'_>,
    head: &mut (i64, String),
    mut event: AuditEvent,
) -> Result<Option<AuditEvent>> {
    event.index = head.0 as u64 + 1;
    event.prev_hash = head.1.clone();
    event.hash = event_hash(&event);
    let body = serde_json::to_string(&event).map_err(|e| StoreError::Backend(e.to_string()))?;
    let added = tx
        .prepare_cached(
            "INSERT INTO events (idx, id, time, type, user, node, session_id, body, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO NOTHING",
        )
        .map_err(db_err)?
        .execute(params![
            event.index as i64,
            event.id,
            event.time.unix_timestamp(),
            event.event_type,
            event.user,
            event.node,
            event.session_id,
            body,
            event.hash
        ])
        .map_err(db_err)?;
    if added == 0 {
        return Ok(None);
    }
    *head = (event.index as i64, event.hash.clone());
    Ok(Some(event))
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn append(&self, event: AuditEvent) -> Result<AuditEvent> {
        self.with(move |c| {
            let tx = begin(c)?;
            let mut head = chain_head(&tx)?;
            let event = insert(&tx, &mut head, event)?
                .ok_or_else(|| StoreError::AlreadyExists("an event with this id".to_string()))?;
            tx.commit().map_err(db_err)?;
            Ok(event)
        })
        .await
    }

    async fn append_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>> {
        self.with(move |c| {
            let tx = begin(c)?;
            let mut head = chain_head(&tx)?;
            let mut out = Vec::with_capacity(events.len());
            for e in events {
                out.extend(insert(&tx, &mut head, e)?);
            }
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }

    async fn head(&self) -> Result<Option<(u64, String)>> {
        self.with(|c| {
            let tx = c.transaction().map_err(db_err)?;
            let head = chain_head(&tx)?;
            Ok((head.0 > 0).then_some((head.0 as u64, head.1)))
        })
        .await
    }

    async fn search(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let (sql, values) = search_sql(q);
        self.with(move |c| {
            let mut st = c.prepare_cached(&sql).map_err(db_err)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(values), |r| parse(r.get(0)?))
                .map_err(db_err)?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    async fn count(&self, q: &AuditQuery) -> Result<u64> {
        let (filter, values) = filter_sql(q);
        self.with(move |c| {
            let n: i64 = c
                .prepare_cached(&format!("SELECT COUNT(*) FROM events {filter}"))
                .map_err(db_err)?
                .query_row(rusqlite::params_from_iter(values), |r| r.get(0))
                .map_err(db_err)?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn verify(&self) -> Result<VerifyReport> {
        self.with(|c| {
            let mut st = c
                .prepare(
                    "SELECT idx, body, hash, id, time, type, \"user\", node, session_id
                     FROM events ORDER BY idx",
                )
                .map_err(db_err)?;
            let mut rows = st.query([]).map_err(db_err)?;
            let mut prev = String::new();
            let mut expected_idx = 1u64;
            let mut count = 0;
            while let Some(row) = rows.next().map_err(db_err)? {
                let idx: i64 = row.get(0).map_err(db_err)?;
                let stored_hash: String = row.get(2).map_err(db_err)?;
                let event = parse(row.get(1).map_err(db_err)?).map_err(db_err)?;
                let columns: StoredColumns = (
                    row.get(3).map_err(db_err)?,
                    row.get(4).map_err(db_err)?,
                    row.get(5).map_err(db_err)?,
                    row.get(6).map_err(db_err)?,
                    row.get(7).map_err(db_err)?,
                    row.get(8).map_err(db_err)?,
                );
                count += 1;
                let broken = check_stored(expected_idx, &prev, idx, &stored_hash, &columns, &event);
                if let Some(why) = broken {
                    return Ok(VerifyReport {
                        events: count,
                        first_broken: Some((idx as u64, why)),
                    });
                }
                prev = event.hash;
                expected_idx += 1;
            }
            Ok(VerifyReport {
                events: count,
                first_broken: None,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::audit::codes;

    #[tokio::test]
    async fn resent_events_are_stored_once_and_batches_keep_order() {
        let dir = std::env::temp_dir().join(format!("warden-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = SqliteAuditLog::open(&dir.join("audit.db")).unwrap();
        let first = AuditEvent::new(codes::LOGIN_SUCCESS, "c1", "a", "one");
        log.append(first.clone()).await.unwrap();
        assert!(matches!(
            log.append(first.clone()).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let second = AuditEvent::new(codes::LOGIN_SUCCESS, "c1", "a", "two");
        let third = AuditEvent::new(codes::LOGIN_SUCCESS, "c1", "a", "three");
        let stored = log.append_batch(vec![first, second, third]).await.unwrap();
        let messages: Vec<&str> = stored.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["two", "three"]);
        assert_eq!(stored[0].index + 1, stored[1].index);
        assert!(log.verify().await.unwrap().first_broken.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = std::env::temp_dir().join(format!("warden-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.db");
        crate::conformance::audit(move || {
            let path = path.clone();
            async move { Arc::new(SqliteAuditLog::open(&path).unwrap()) as Arc<dyn AuditLog> }
        })
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn chain_detects_tampering() {
        let dir = std::env::temp_dir().join(format!("warden-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = SqliteAuditLog::open(&dir.join("audit.db")).unwrap();
        for user in ["a", "b", "c"] {
            log.append(AuditEvent::new(codes::LOGIN_SUCCESS, "c1", user, "ok"))
                .await
                .unwrap();
        }
        let found = log
            .search(&AuditQuery {
                user: Some("b".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index, 2);
        assert_eq!(log.verify().await.unwrap().first_broken, None);
        // Alter the second event's message behind the log's back.
        {
            let c = log.conn.lock().unwrap();
            let body: String = c
                .query_row("SELECT body FROM events WHERE idx = 2", [], |r| r.get(0))
                .unwrap();
            let body = body.replace("\"ok\"", "\"forged\"");
            c.execute("UPDATE events SET body = ?1 WHERE idx = 2", [body])
                .unwrap();
        }
        let report = log.verify().await.unwrap();
        assert_eq!(report.first_broken.unwrap().0, 2);
        // Deleting an event is detected too.
        {
            let c = log.conn.lock().unwrap();
            c.execute("DELETE FROM events WHERE idx <= 2", []).unwrap();
        }
        assert_eq!(log.verify().await.unwrap().first_broken.unwrap().0, 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
