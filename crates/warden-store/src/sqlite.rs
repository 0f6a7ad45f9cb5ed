//! The embedded default backend: one SQLite file in WAL mode with
//! `synchronous=FULL`, so a write is durable once acknowledged.

use crate::backend::{
    expect_revision, from_millis, now_millis, prefix_end, spawn_watch, to_millis, Backend, Batch,
    Event, EventKind, Item, StoreError, Watcher,
};
use crate::Result;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How many revisions of history watchers can resume from.
const KEEP_EVENTS: i64 = 100_000;
/// Events a watcher reads per query.
const WATCH_BATCH: i64 = 512;

struct Inner {
    conn: Mutex<Connection>,
    /// Latest revision written through this instance; wakes watchers.
    head: watch::Sender<i64>,
}

/// SQLite [`Backend`].
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteBackend {
    /// Opens (creating if needed) the store at `path` and starts the TTL
    /// sweeper.
    pub fn open(path: &Path) -> Result<Self> {
        create_private_db(path)?;
        let conn = Connection::open(path).map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY, value BLOB NOT NULL,
                 revision INTEGER NOT NULL, expires INTEGER);
             CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;
             CREATE TABLE IF NOT EXISTS events (
                 revision INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
                 kind INTEGER NOT NULL, value BLOB NOT NULL, expires INTEGER);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta VALUES ('compacted', 0);",
        )
        .map_err(db_err)?;
        let head = current_revision(&conn)?;
        let backend = SqliteBackend {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                head: watch::channel(head).0,
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&backend.inner)));
        }
        Ok(backend)
    }

    /// Runs `f` in a transaction on the blocking pool.
    async fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            // IMMEDIATE takes the write lock up front, so a second process
            // on the same file (e.g. during a restart) waits instead of
            // failing its read-then-write with SQLITE_BUSY.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let out = f(&tx)?;
            tx.commit().map_err(db_err)?;
            let head = current_revision(&conn)?;
            inner.head.send_if_modified(|h| {
                let changed = *h != head;
                *h = head;
                changed
            });
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Deletes expired items (emitting delete events) and old history.
    pub async fn sweep_once(&self) -> Result<()> {
        self.tx(|tx| {
            let now = now_millis();
            let keys: Vec<String> = {
                let mut st = tx
                    .prepare("SELECT key FROM kv WHERE expires IS NOT NULL AND expires <= ?1")
                    .map_err(db_err)?;
                let rows = st
                    .query_map([now], |r| r.get(0))
                    .map_err(db_err)?
                    .collect::<std::result::Result<Vec<String>, _>>()
                    .map_err(db_err)?;
                rows
            };
            for key in keys {
                remove(tx, &key)?;
            }
            let head = current_revision(tx)?;
            let floor = head - KEEP_EVENTS;
            if floor > 0 {
                tx.execute("DELETE FROM events WHERE revision <= ?1", [floor])
                    .map_err(db_err)?;
                tx.execute(
                    "UPDATE meta SET value = max(value, ?1) WHERE name = 'compacted'",
                    [floor],
                )
                .map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }
}

async fn sweep(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(inner) = inner.upgrade() else { return };
        let backend = SqliteBackend { inner };
        if let Err(e) = backend.sweep_once().await {
            tracing::warn!(error = %e, "store sweep failed");
        }
    }
}

/// The latest revision. Compaction always keeps the newest event, and
/// AUTOINCREMENT never reuses a revision, so MAX is the head.
fn current_revision(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "SELECT COALESCE((SELECT MAX(revision) FROM events),
                         (SELECT value FROM meta WHERE name = 'compacted'), 0)",
        [],
        |r| r.get(0),
    )
    .map_err(db_err)
}

/// Creates the database file 0600 (SQLite gives its -wal and -shm files the
/// same mode): it holds password hashes and sealed keys.
pub(crate) fn create_private_db(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Backend(format!("{}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

/// The live item at `key`, inside a transaction.
fn live(tx: &Transaction<'_>, key: &str) -> Result<Option<Item>> {
    tx.query_row(
        "SELECT value, revision, expires FROM kv WHERE key = ?1 AND (expires IS NULL OR expires > ?2)",
        params![key, now_millis()],
        |r| {
            Ok(Item {
                key: key.to_string(),
                value: r.get(0)?,
                revision: r.get(1)?,
                expires: r.get::<_, Option<i64>>(2)?.map(from_millis),
            })
        },
    )
    .optional()
    .map_err(db_err)
}

fn write(
    tx: &Transaction<'_>,
    key: &str,
    value: &[u8],
    expires: Option<SystemTime>,
) -> Result<i64> {
    let exp = expires.map(to_millis);
    tx.execute(
        "INSERT INTO events (key, kind, value, expires) VALUES (?1, 0, ?2, ?3)",
        params![key, value, exp],
    )
    .map_err(db_err)?;
    let rev = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO kv (key, value, revision, expires) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, revision = excluded.revision, expires = excluded.expires",
        params![key, value, rev, exp],
    )
    .map_err(db_err)?;
    Ok(rev)
}

fn remove(tx: &Transaction<'_>, key: &str) -> Result<i64> {
    tx.execute(
        "INSERT INTO events (key, kind, value) VALUES (?1, 1, x'')",
        params![key],
    )
    .map_err(db_err)?;
    let rev = tx.last_insert_rowid();
    tx.execute("DELETE FROM kv WHERE key = ?1", params![key])
        .map_err(db_err)?;
    Ok(rev)
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>> {
        let key = key.to_string();
        self.tx(move |tx| live(tx, &key)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64> {
        let key = key.to_string();
        self.tx(move |tx| write(tx, &key, &value, expires)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64> {
        let key = key.to_string();
        self.tx(move |tx| {
            if live(tx, &key)?.is_some() {
                return Err(StoreError::AlreadyExists(key));
            }
            write(tx, &key, &value, expires)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
        expires: Option<SystemTime>,
    ) -> Result<i64> {
        let key = key.to_string();
        self.tx(move |tx| {
            expect_revision(&key, live(tx, &key)?, expected)?;
            write(tx, &key, &value, expires)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        self.tx(move |tx| {
            if live(tx, &key)?.is_none() {
                return Ok(false);
            }
            remove(tx, &key)?;
            Ok(true)
        })
        .await
    }

    async fn compare_and_delete(&self, key: &str, expected: i64) -> Result<()> {
        let key = key.to_string();
        self.tx(move |tx| {
            expect_revision(&key, live(tx, &key)?, expected)?;
            remove(tx, &key).map(|_| ())
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>> {
        let prefix = prefix.to_string();
        self.tx(move |tx| {
            let end = prefix_end(&prefix).unwrap_or_else(|| "\u{10ffff}".to_string());
            let mut st = tx
                .prepare(
                    "SELECT key, value, revision, expires FROM kv
                     WHERE key >= ?1 AND key < ?2 AND (expires IS NULL OR expires > ?3)
                     ORDER BY key",
                )
                .map_err(db_err)?;
            let items = st
                .query_map(params![prefix, end, now_millis()], |r| {
                    Ok(Item {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        revision: r.get(2)?,
                        expires: r.get::<_, Option<i64>>(3)?.map(from_millis),
                    })
                })
                .map_err(db_err)?
                .collect::<std::result::Result<Vec<Item>, _>>()
                .map_err(db_err)?;
            Ok(items
                .into_iter()
                .filter(|i| i.key.starts_with(&prefix))
                .collect())
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Watcher> {
        let oldest = self.tx(compacted).await?;
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
                let backend = weak.upgrade().map(|inner| SqliteBackend { inner });
                let p = prefix.clone();
                async move { Some(backend?.tx(move |tx| read_events(tx, &p, last)).await) }
            },
        ))
    }

    async fn revision(&self) -> Result<i64> {
        self.tx(|tx| current_revision(tx)).await
    }
}

fn compacted(tx: &Transaction<'_>) -> Result<i64> {
    tx.query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
        r.get(0)
    })
    .map_err(db_err)
}

/// Events after `after`; a watcher that fell behind compaction gets
/// [`StoreError::Compacted`] instead of a silent gap.
fn read_events(tx: &Transaction<'_>, prefix: &str, after: i64) -> Result<Batch> {
    let oldest = compacted(tx)?;
    if after < oldest {
        return Err(StoreError::Compacted {
            requested: after,
            oldest,
        });
    }
    let end = prefix_end(prefix).unwrap_or_else(|| "\u{10ffff}".to_string());
    let mut st = tx
        .prepare(
            "SELECT revision, key, kind, value, expires FROM events
             WHERE revision > ?1 AND key >= ?2 AND key < ?3 ORDER BY revision LIMIT ?4",
        )
        .map_err(db_err)?;
    let rows = st
        .query_map(params![after, prefix, end, WATCH_BATCH], |r| {
            let kind: i64 = r.get(2)?;
            Ok(Event {
                kind: if kind == 0 {
                    EventKind::Put
                } else {
                    EventKind::Delete
                },
                item: Item {
                    revision: r.get(0)?,
                    key: r.get(1)?,
                    value: r.get(3)?,
                    expires: r.get::<_, Option<i64>>(4)?.map(from_millis),
                },
            })
        })
        .map_err(db_err)?
        .collect::<std::result::Result<Vec<Event>, _>>()
        .map_err(db_err)?;
    Ok(Batch {
        full: rows.len() as i64 == WATCH_BATCH,
        scanned: rows.last().map_or(after, |e| e.item.revision),
        // The range scan is by string order; keep exact prefix matches only.
        events: rows
            .into_iter()
            .filter(|e| e.item.key.starts_with(prefix))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = std::env::temp_dir().join(format!("warden-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        crate::conformance::run(move || {
            let path = path.clone();
            async move { Arc::new(SqliteBackend::open(&path).unwrap()) as Arc<dyn Backend> }
        })
        .await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
