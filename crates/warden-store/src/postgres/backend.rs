//! The cluster state on PostgreSQL, shared by every auth server.
//!
//! Every write takes the row lock of the revision counter first and holds
//! it until commit, so revisions are handed out and committed in one order:
//! once revision N is visible, every revision before it is too, and a
//! watcher reading "after N" can never skip a write that commits late.
//! Watchers are woken by writers' `NOTIFY` and poll as a fallback.

use super::{db_err, migrate, parse_config, Pool};
use crate::backend::{
    expect_revision, from_millis, now_millis, prefix_end, spawn_watch, to_millis, Backend, Batch,
    Event, EventKind, Item, StoreError, Watcher,
};
use crate::Result;
use async_trait::async_trait;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{GenericClient, Row};

/// How many revisions of history watchers can resume from.
const KEEP_EVENTS: i64 = 100_000;
/// Events a watcher reads per query.
const WATCH_BATCH: i64 = 512;
/// The channel writers notify with the new head revision.
const CHANNEL: &str = "warden_kv";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS warden_kv (
    key TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL,
    revision BIGINT NOT NULL,
    expires BIGINT);
CREATE INDEX IF NOT EXISTS warden_kv_expires ON warden_kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS warden_kv_events (
    revision BIGINT PRIMARY KEY,
    key TEXT COLLATE "C" NOT NULL,
    kind SMALLINT NOT NULL,
    value BYTEA NOT NULL,
    expires BIGINT);
CREATE INDEX IF NOT EXISTS warden_kv_events_key ON warden_kv_events (key, revision);
CREATE TABLE IF NOT EXISTS warden_kv_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO warden_kv_meta VALUES ('head', 0), ('compacted', 0) ON CONFLICT DO NOTHING;
"#;

struct Inner {
    pool: Pool,
    /// The newest revision known to be committed; wakes watchers.
    head: watch::Sender<i64>,
}

/// PostgreSQL [`Backend`]. Cheap to clone; one instance per process.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

fn item(key: String, r: &Row) -> Item {
    Item {
        key,
        value: r.get("value"),
        revision: r.get("revision"),
        expires: r.get::<_, Option<i64>>("expires").map(from_millis),
    }
}

async fn live(c: &impl GenericClient, key: &str) -> Result<Option<Item>> {
    let row = c
        .query_opt(
            "SELECT value, revision, expires FROM warden_kv
             WHERE key = $1 AND (expires IS NULL OR expires > $2)",
            &[&key, &now_millis()],
        )
        .await
        .map_err(db_err)?;
    Ok(row.map(|r| item(key.to_string(), &r)))
}

/// Takes the next revision, holding the counter's row lock until the
/// transaction ends.
async fn next_revision(c: &impl GenericClient) -> Result<i64> {
    let row = c
        .query_one(
            "UPDATE warden_kv_meta SET value = value + 1 WHERE name = 'head' RETURNING value",
            &[],
        )
        .await
        .map_err(db_err)?;
    Ok(row.get(0))
}

async fn write(
    c: &impl GenericClient,
    key: &str,
    value: &[u8],
    expires: Option<SystemTime>,
) -> Result<i64> {
    let rev = next_revision(c).await?;
    let exp = expires.map(to_millis);
    c.execute(
        "INSERT INTO warden_kv_events (revision, key, kind, value, expires) VALUES ($1, $2, 0, $3, $4)",
        &[&rev, &key, &value, &exp],
    )
    .await
    .map_err(db_err)?;
    c.execute(
        "INSERT INTO warden_kv (key, value, revision, expires) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, revision = excluded.revision, expires = excluded.expires",
        &[&key, &value, &rev, &exp],
    )
    .await
    .map_err(db_err)?;
    notify(c, rev).await?;
    Ok(rev)
}

async fn remove(c: &impl GenericClient, key: &str) -> Result<i64> {
    let rev = next_revision(c).await?;
    c.execute(
        "INSERT INTO warden_kv_events (revision, key, kind, value) VALUES ($1, $2, 1, ''::bytea)",
        &[&rev, &key],
    )
    .await
    .map_err(db_err)?;
    c.execute("DELETE FROM warden_kv WHERE key = $1", &[&key])
        .await
        .map_err(db_err)?;
    notify(c, rev).await?;
    Ok(rev)
}

/// Delivered to listeners when the transaction commits.
async fn notify(c: &impl GenericClient, rev: i64) -> Result<()> {
    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &rev.to_string()])
        .await
        .map_err(db_err)?;
    Ok(())
}

macro_rules! in_tx {
    ($self:expr, |$tx:ident| $body:expr) => {{
        let mut conn = $self.inner.pool.get().await?;
        let $tx = conn.transaction().await.map_err(db_err)?;
        let out = $body;
        match out {
            Ok(v) => {
                $tx.commit().await.map_err(db_err)?;
                Ok(v)
            }
            Err(e) => Err(e),
        }
    }};
}

impl PostgresBackend {
    /// Connects, creates the tables if needed, and starts the listener
    /// and the TTL sweeper.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = Pool::new(parse_config(url)?);
        {
            let mut c = pool.get().await?;
            migrate(&mut c, "kv", 1, SCHEMA).await?;
        }
        let backend = PostgresBackend {
            inner: Arc::new(Inner {
                pool,
                head: watch::channel(0).0,
            }),
        };
        let head = backend.revision().await?;
        backend.inner.head.send_replace(head);
        tokio::spawn(listen(Arc::downgrade(&backend.inner)));
        tokio::spawn(sweep(Arc::downgrade(&backend.inner)));
        Ok(backend)
    }

    /// Deletes expired items (emitting delete events) and old history.
    /// Any number of auth servers may sweep; the counter lock makes them
    /// take turns, and only the first finds work.
    pub async fn sweep_once(&self) -> Result<()> {
        let now = now_millis();
        let conn = self.inner.pool.get().await?;
        let due = conn
            .query_opt(
                "SELECT 1 FROM warden_kv WHERE expires IS NOT NULL AND expires <= $1 LIMIT 1",
                &[&now],
            )
            .await
            .map_err(db_err)?
            .is_some();
        drop(conn);
        if due {
            in_tx!(self, |tx| {
                async {
                    lock_writes(&tx).await?;
                    let keys: Vec<String> = tx
                        .query(
                            "SELECT key FROM warden_kv WHERE expires IS NOT NULL AND expires <= $1 ORDER BY key",
                            &[&now],
                        )
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    for key in keys {
                        remove(&tx, &key).await?;
                    }
                    Ok::<_, StoreError>(())
                }
                .await
            })?;
        }
        let head = self.revision().await?;
        let floor = head - KEEP_EVENTS;
        if floor > 0 {
            let conn = self.inner.pool.get().await?;
            let compacted: i64 = conn
                .query_one(
                    "SELECT value FROM warden_kv_meta WHERE name = 'compacted'",
                    &[],
                )
                .await
                .map_err(db_err)?
                .get(0);
            // Compact in steps, not on every sweep.
            if floor - compacted >= KEEP_EVENTS / 10 {
                conn.execute(
                    "UPDATE warden_kv_meta SET value = GREATEST(value, $1) WHERE name = 'compacted'",
                    &[&floor],
                )
                .await
                .map_err(db_err)?;
                conn.execute(
                    "DELETE FROM warden_kv_events WHERE revision <= $1",
                    &[&floor],
                )
                .await
                .map_err(db_err)?;
            }
        }
        Ok(())
    }

    async fn compacted(&self) -> Result<i64> {
        let conn = self.inner.pool.get().await?;
        Ok(conn
            .query_one(
                "SELECT value FROM warden_kv_meta WHERE name = 'compacted'",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0))
    }

    /// Events after `after` under `prefix`; a watcher that fell behind
    /// compaction gets [`StoreError::Compacted`] instead of a silent gap.
    async fn read_events(&self, prefix: &str, after: i64) -> Result<Batch> {
        let conn = self.inner.pool.get().await?;
        let oldest: i64 = conn
            .query_one(
                "SELECT value FROM warden_kv_meta WHERE name = 'compacted'",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0);
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        let end = prefix_end(prefix);
        let rows = conn
            .query(
                "SELECT revision, key, kind, value, expires FROM warden_kv_events
                 WHERE revision > $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)
                 ORDER BY revision LIMIT $4",
                &[&after, &prefix, &end, &WATCH_BATCH],
            )
            .await
            .map_err(db_err)?;
        // Compaction between the two reads would leave a silent gap.
        let oldest_after: i64 = conn
            .query_one(
                "SELECT value FROM warden_kv_meta WHERE name = 'compacted'",
                &[],
            )
            .await
            .map_err(db_err)?
            .get(0);
        if after < oldest_after {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: oldest_after,
            });
        }
        Ok(Batch {
            full: rows.len() as i64 == WATCH_BATCH,
            scanned: rows.last().map_or(after, |r| r.get("revision")),
            events: rows
                .iter()
                .map(|r| {
                    let kind: i16 = r.get("kind");
                    Event {
                        kind: if kind == 0 {
                            EventKind::Put
                        } else {
                            EventKind::Delete
                        },
                        item: item(r.get("key"), r),
                    }
                })
                .filter(|e| e.item.key.starts_with(prefix))
                .collect(),
        })
    }
}

/// Follows `NOTIFY`s of other writers (any auth server) on a dedicated
/// connection, reconnecting when it drops.
async fn listen(inner: Weak<Inner>) {
    use futures_util::StreamExt;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (config, tls) = (
            strong.pool.target().config.clone(),
            strong.pool.target().tls.clone(),
        );
        drop(strong);
        let connected = config.connect(tls).await;
        let (client, mut connection) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %db_err(e), "PostgreSQL listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().parse::<i64>().ok()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(error = %db_err(e), "PostgreSQL LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        while let Some(rev) = rx.recv().await {
            let Some(strong) = inner.upgrade() else {
                driver.abort();
                return;
            };
            if let Some(rev) = rev {
                strong.head.send_if_modified(|h| {
                    let newer = rev > *h;
                    if newer {
                        *h = rev;
                    }
                    newer
                });
            }
        }
        driver.abort();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sweep(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(inner) = inner.upgrade() else { return };
        let backend = PostgresBackend { inner };
        if let Err(e) = backend.sweep_once().await {
            tracing::warn!(error = %e, "store sweep failed");
        }
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>> {
        let conn = self.inner.pool.get().await?;
        live(&*conn, key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64> {
        in_tx!(self, |tx| write(&tx, key, &value, expires).await)
    }

    async fn create(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64> {
        in_tx!(self, |tx| {
            async {
                lock_writes(&tx).await?;
                if live(&tx, key).await?.is_some() {
                    return Err(StoreError::AlreadyExists(key.to_string()));
                }
                write(&tx, key, &value, expires).await
            }
            .await
        })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
        expires: Option<SystemTime>,
    ) -> Result<i64> {
        in_tx!(self, |tx| {
            async {
                lock_writes(&tx).await?;
                expect_revision(key, live(&tx, key).await?, expected)?;
                write(&tx, key, &value, expires).await
            }
            .await
        })
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        in_tx!(self, |tx| {
            async {
                lock_writes(&tx).await?;
                if live(&tx, key).await?.is_none() {
                    return Ok(false);
                }
                remove(&tx, key).await?;
                Ok(true)
            }
            .await
        })
    }

    async fn compare_and_delete(&self, key: &str, expected: i64) -> Result<()> {
        in_tx!(self, |tx| {
            async {
                lock_writes(&tx).await?;
                expect_revision(key, live(&tx, key).await?, expected)?;
                remove(&tx, key).await.map(|_| ())
            }
            .await
        })
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>> {
        let conn = self.inner.pool.get().await?;
        let end = prefix_end(prefix);
        let rows = conn
            .query(
                "SELECT key, value, revision, expires FROM warden_kv
                 WHERE key >= $1 AND ($2::text IS NULL OR key < $2)
                   AND (expires IS NULL OR expires > $3)
                 ORDER BY key",
                &[&prefix, &end, &now_millis()],
            )
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| item(r.get("key"), r))
            .filter(|i| i.key.starts_with(prefix))
            .collect())
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Watcher> {
        let oldest = self.compacted().await?;
        if after < oldest {
            return Err(StoreError::Compacted {
                requested: after,
                oldest,
            });
        }
        let weak = Arc::downgrade(&self.inner);
        let prefix = prefix.to_string();
        Ok(spawn_watch(
            after,
            self.inner.head.subscribe(),
            move |last| {
                let backend = weak.upgrade().map(|inner| PostgresBackend { inner });
                let p = prefix.clone();
                async move { Some(backend?.read_events(&p, last).await) }
            },
        ))
    }

    async fn revision(&self) -> Result<i64> {
        let conn = self.inner.pool.get().await?;
        Ok(conn
            .query_one("SELECT value FROM warden_kv_meta WHERE name = 'head'", &[])
            .await
            .map_err(db_err)?
            .get(0))
    }
}

/// Takes the writers' lock without using a revision: checks read after
/// it see every write committed before.
async fn lock_writes(c: &impl GenericClient) -> Result<()> {
    c.execute(
        "SELECT 1 FROM warden_kv_meta WHERE name = 'head' FOR UPDATE",
        &[],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}
