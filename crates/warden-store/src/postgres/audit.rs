//! The audit log on PostgreSQL: one hash chain for every auth server.
//!
//! An append takes a transaction-scoped advisory lock, reads the chain's
//! head and extends it, so appends from any number of processes are
//! serialised by the database and the chain stays one total order.

use super::{db_err, migrate, parse_config, Pool};
use crate::audit::{
    check_stored, event_hash, filter_clause, search_limit, search_order, AuditLog, FilterValue,
    StoredColumns, VerifyReport,
};
use crate::backend::StoreError;
use crate::Result;
use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use warden_types::api::AuditQuery;
use warden_types::audit::AuditEvent;

/// Held by the appender for the length of its transaction.
const CHAIN_LOCK: i64 = 0x5741_5244_454e_0003;
/// Rows `verify` reads per query.
const VERIFY_BATCH: i64 = 5_000;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS warden_audit (
    idx BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    time BIGINT NOT NULL,
    type TEXT NOT NULL,
    "user" TEXT NOT NULL,
    node TEXT,
    session_id TEXT,
    body TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS warden_audit_time ON warden_audit (time, idx);
CREATE INDEX IF NOT EXISTS warden_audit_type ON warden_audit (type, time, idx);
CREATE INDEX IF NOT EXISTS warden_audit_user ON warden_audit ("user", time, idx);
CREATE INDEX IF NOT EXISTS warden_audit_node ON warden_audit (node, time, idx);
CREATE INDEX IF NOT EXISTS warden_audit_session ON warden_audit (session_id, time, idx);
"#;

/// PostgreSQL [`AuditLog`], shared by every auth server.
pub struct PostgresAuditLog {
    pool: Pool,
}

fn parse(body: &str) -> Result<AuditEvent> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Backend(format!("undecodable audit event: {e}")))
}

/// The `WHERE` clause of `q`'s filters with `$n` placeholders.
fn where_clause(q: &AuditQuery) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let (clause, values) = filter_clause(q, |n| format!("${n}"));
    let values = values
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                FilterValue::Text(t) => Box::new(t),
                FilterValue::Int(n) => Box::new(n),
            }
        })
        .collect();
    (clause, values)
}

fn params(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect()
}

async fn chain_head(c: &impl GenericClient) -> Result<(i64, String)> {
    Ok(c.query_opt(
        "SELECT idx, hash FROM warden_audit ORDER BY idx DESC LIMIT 1",
        &[],
    )
    .await
    .map_err(db_err)?
    .map(|r| (r.get(0), r.get(1)))
    .unwrap_or((0, String::new())))
}

/// Chains one event onto `head` and inserts it; `None` when its id is
/// already stored.
async fn insert(
    c: &impl GenericClient,
    head: &mut (i64, String),
    mut event: AuditEvent,
) -> Result<Option<AuditEvent>> {
    event.index = head.0 as u64 + 1;
    event.prev_hash = head.1.clone();
    event.hash = event_hash(&event);
    let body = serde_json::to_string(&event).map_err(|e| StoreError::Backend(e.to_string()))?;
    let added = c
        .execute(
            "INSERT INTO warden_audit (idx, id, time, type, \"user\", node, session_id, body, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            &[
                &(event.index as i64),
                &event.id,
                &event.time.unix_timestamp(),
                &event.event_type,
                &event.user,
                &event.node,
                &event.session_id,
                &body,
                &event.hash,
            ],
        )
        .await
        .map_err(db_err)?;
    if added == 0 {
        return Ok(None);
    }
    *head = (event.index as i64, event.hash.clone());
    Ok(Some(event))
}

impl PostgresAuditLog {
    /// Connects and creates the table if needed.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = Pool::new(parse_config(url)?);
        {
            let mut c = pool.get().await?;
            migrate(&mut c, "audit", 1, SCHEMA).await?;
        }
        Ok(PostgresAuditLog { pool })
    }

    /// Appends `events` in one transaction holding the chain lock.
    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await.map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK])
            .await
            .map_err(db_err)?;
        let mut head = chain_head(&tx).await?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.extend(insert(&tx, &mut head, e).await?);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }
}

#[async_trait]
impl AuditLog for PostgresAuditLog {
    async fn append(&self, event: AuditEvent) -> Result<AuditEvent> {
        self.append_all(vec![event])
            .await?
            .pop()
            .ok_or_else(|| StoreError::AlreadyExists("an event with this id".to_string()))
    }

    async fn append_batch(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEvent>> {
        self.append_all(events).await
    }

    async fn head(&self) -> Result<Option<(u64, String)>> {
        let conn = self.pool.get().await?;
        let head = chain_head(&*conn).await?;
        Ok((head.0 > 0).then_some((head.0 as u64, head.1)))
    }

    async fn search(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let (clause, mut values) = where_clause(q);
        let limit = format!("${}", values.len() + 1);
        values.push(Box::new(search_limit(q)));
        let sql = format!(
            "SELECT body FROM warden_audit {clause} ORDER BY {} LIMIT {limit}",
            search_order(q)
        );
        let conn = self.pool.get().await?;
        let rows = conn.query(&sql, &params(&values)).await.map_err(db_err)?;
        rows.iter().map(|r| parse(r.get(0))).collect()
    }

    async fn count(&self, q: &AuditQuery) -> Result<u64> {
        let (clause, values) = where_clause(q);
        let conn = self.pool.get().await?;
        let n: i64 = conn
            .query_one(
                &format!("SELECT COUNT(*) FROM warden_audit {clause}"),
                &params(&values),
            )
            .await
            .map_err(db_err)?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn verify(&self) -> Result<VerifyReport> {
        let conn = self.pool.get().await?;
        let mut prev = String::new();
        let mut expected_idx = 1u64;
        let mut count = 0;
        let mut after = 0i64;
        loop {
            let rows = conn
                .query(
                    "SELECT idx, body, hash, id, time, type, \"user\", node, session_id
                     FROM warden_audit WHERE idx > $1 ORDER BY idx LIMIT $2",
                    &[&after, &VERIFY_BATCH],
                )
                .await
                .map_err(db_err)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let idx: i64 = row.get(0);
                let stored_hash: String = row.get(2);
                let event = parse(row.get(1))?;
                let columns: StoredColumns = (
                    row.get(3),
                    row.get(4),
                    row.get(5),
                    row.get(6),
                    row.get(7),
                    row.get(8),
                );
                count += 1;
                if let Some(why) =
                    check_stored(expected_idx, &prev, idx, &stored_hash, &columns, &event)
                {
                    return Ok(VerifyReport {
                        events: count,
                        first_broken: Some((idx as u64, why)),
                    });
                }
                prev = event.hash;
                expected_idx += 1;
                after = idx;
            }
        }
        Ok(VerifyReport {
            events: count,
            first_broken: None,
        })
    }
}
