use crate::Result;
use async_trait::async_trait;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

/// A stored value with its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub value: Vec<u8>,
    /// Store revision of the write that produced this value.
    pub revision: i64,
    /// After this instant the item is gone, as if deleted.
    pub expires: Option<SystemTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change seen by a watcher. For deletes, `item.value` is empty and
/// `item.revision` is the revision of the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub item: Item,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0:?} already exists")]
    AlreadyExists(String),
    #[error("{0:?} not found")]
    NotFound(String),
    #[error("{key:?} was changed concurrently (expected revision {expected}, found {actual})")]
    Conflict {
        key: String,
        expected: i64,
        actual: i64,
    },
    #[error("revision {requested} is no longer in the change log (oldest kept: {oldest}); list again and watch from the current revision")]
    Compacted { requested: i64, oldest: i64 },
    #[error("storage error: {0}")]
    Backend(String),
}

/// Streams [`Event`]s in revision order. Ends (returns `None`) when the
/// backend goes away; resume with [`Backend::watch`] from the last revision
/// seen, and nothing is missed.
pub struct Watcher {
    pub(crate) rx: mpsc::Receiver<Result<Event>>,
}

impl Watcher {
    pub async fn next(&mut self) -> Option<Result<Event>> {
        self.rx.recv().await
    }
}

/// The cluster state store: a key-value map with global, monotonically
/// increasing revisions, TTLs and prefix watches.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The live item at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Item>>;
    /// Writes unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64>;
    /// Writes only if no live item exists, else [`StoreError::AlreadyExists`].
    async fn create(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64>;
    /// Writes only if the live item is at `expected` revision, else
    /// [`StoreError::Conflict`] (or [`StoreError::NotFound`]).
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
        expires: Option<SystemTime>,
    ) -> Result<i64>;
    /// Deletes; returns whether a live item was there.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Deletes only if the live item is at `expected` revision: consumes
    /// one-time tokens exactly once.
    async fn compare_and_delete(&self, key: &str, expected: i64) -> Result<()>;
    /// Live items whose key starts with `prefix`, sorted by key.
    async fn range(&self, prefix: &str) -> Result<Vec<Item>>;
    /// Changes under `prefix` with revision greater than `after`.
    async fn watch(&self, prefix: &str, after: i64) -> Result<Watcher>;
    /// The revision of the latest write.
    async fn revision(&self) -> Result<i64>;
}

/// One read of a watcher's change log.
pub(crate) struct Batch {
    /// Changes under the watched prefix, in revision order.
    pub events: Vec<Event>,
    /// The last revision the read looked at, delivered or filtered out.
    pub scanned: i64,
    /// The read hit its row limit: read again at once.
    pub full: bool,
}

/// Runs a watcher: `read(after)` gives the changes after a revision (`None`
/// once the store is gone); reads again when `head` moves (a write through
/// this instance, or a notification of another's) and at least every
/// second, for writers the store cannot tell about.
pub(crate) fn spawn_watch<R, Fut>(after: i64, mut head: watch::Receiver<i64>, read: R) -> Watcher
where
    R: Fn(i64) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Result<Batch>>> + Send,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut last = after;
        loop {
            let Some(batch) = read(last).await else {
                return;
            };
            match batch {
                Ok(b) => {
                    for ev in b.events {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    last = last.max(b.scanned);
                    if b.full {
                        continue;
                    }
                }
                Err(e) => {
                    // The watcher ends; its owner resumes from its last event.
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            tokio::select! {
                r = head.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Watcher { rx }
}

/// The check of compare-and-swap and compare-and-delete: the live item
/// at `key` must exist and be at `expected`.
pub(crate) fn expect_revision(key: &str, current: Option<Item>, expected: i64) -> Result<Item> {
    let current = current.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    if current.revision != expected {
        return Err(StoreError::Conflict {
            key: key.to_string(),
            expected,
            actual: current.revision,
        });
    }
    Ok(current)
}

pub(crate) fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub(crate) fn now_millis() -> i64 {
    to_millis(SystemTime::now())
}

/// The smallest string greater than every string starting with `prefix`,
/// for an index range scan (bytewise order; LIKE would treat `%` and `_`
/// in keys as wildcards). `None`: no bound.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("").as_deref(), None);
    }
}
