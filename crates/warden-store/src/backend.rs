use crate::Result;
use async_trait::async_trait;
use std::time::SystemTime;
use thiserror::Error;
use tokio::sync::mpsc;

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
