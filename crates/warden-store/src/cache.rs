//! An in-memory copy of the resources under a prefix, kept fresh by the
//! backend's watch stream, so hot paths never make a store round trip.

use crate::backend::{Backend, EventKind, StoreError};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use warden_types::Document;

/// Resources under one prefix, by name.
pub struct WatchCache<S> {
    items: Arc<RwLock<BTreeMap<String, Document<S>>>>,
    /// The store revision the cache reflects: of its last change, or of
    /// its last full load.
    revision: Arc<tokio::sync::watch::Sender<i64>>,
}

impl<S> Clone for WatchCache<S> {
    fn clone(&self) -> Self {
        WatchCache {
            items: self.items.clone(),
            revision: self.revision.clone(),
        }
    }
}

fn decode<S: DeserializeOwned>(value: &[u8], revision: i64) -> Option<Document<S>> {
    let mut doc: Document<S> = serde_json::from_slice(value).ok()?;
    doc.metadata.revision = Some(revision);
    Some(doc)
}

impl<S: DeserializeOwned + Clone + Send + Sync + 'static> WatchCache<S> {
    /// Loads everything under `prefix` and follows changes until the
    /// backend goes away. Undecodable documents are skipped with a warning.
    pub async fn start(backend: Arc<dyn Backend>, prefix: &str) -> crate::Result<Self> {
        let cache = WatchCache {
            items: Arc::new(RwLock::new(BTreeMap::new())),
            revision: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let rev = cache.reload(&*backend, prefix).await?;
        let this = cache.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move { this.follow(backend, prefix, rev).await });
        Ok(cache)
    }

    async fn reload(&self, backend: &dyn Backend, prefix: &str) -> crate::Result<i64> {
        let rev = backend.revision().await?;
        let items = backend.range(prefix).await?;
        let mut map = BTreeMap::new();
        for item in items {
            match decode::<S>(&item.value, item.revision) {
                Some(doc) => {
                    let name = item.key.strip_prefix(prefix).unwrap_or(&item.key);
                    map.insert(name.to_string(), doc);
                }
                None => tracing::warn!(key = %item.key, "skipping undecodable resource"),
            }
        }
        *self.items.write().unwrap_or_else(|p| p.into_inner()) = map;
        self.revision.send_replace(rev);
        Ok(rev)
    }

    async fn follow(self, backend: Arc<dyn Backend>, prefix: String, mut rev: i64) {
        loop {
            let mut watcher = match backend.watch(&prefix, rev).await {
                Ok(w) => w,
                Err(StoreError::Compacted { .. }) => {
                    match self.reload(&*backend, &prefix).await {
                        Ok(r) => rev = r,
                        Err(e) => tracing::warn!(error = %e, "cache reload failed"),
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, %prefix, "watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(ev) = watcher.next().await {
                let Ok(ev) = ev else { break };
                rev = ev.item.revision;
                let name = ev
                    .item
                    .key
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&ev.item.key)
                    .to_string();
                let mut items = self.items.write().unwrap_or_else(|p| p.into_inner());
                match ev.kind {
                    EventKind::Put => match decode::<S>(&ev.item.value, ev.item.revision) {
                        Some(doc) => {
                            items.insert(name, doc);
                        }
                        None => {
                            items.remove(&name);
                        }
                    },
                    EventKind::Delete => {
                        items.remove(&name);
                    }
                }
                drop(items);
                self.revision.send_replace(rev);
            }
            if Arc::strong_count(&self.items) == 1 {
                return; // every reader is gone
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn get(&self, name: &str) -> Option<Document<S>> {
        self.items
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits until the cache reflects a revision after `after`, or `max`
    /// has passed: a long poll for changes, whichever auth server (of one
    /// store) the revision came from.
    pub async fn wait_past(&self, after: i64, max: Duration) {
        let mut rx = self.revision.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|r| *r > after)).await;
    }

    pub fn list(&self) -> Vec<Document<S>> {
        self.items
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteBackend;
    use warden_types::resource::kind;

    #[tokio::test]
    async fn follows_changes() {
        let dir = std::env::temp_dir().join(format!("warden-cache-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let b: Arc<dyn Backend> = Arc::new(SqliteBackend::open(&dir.join("s.db")).unwrap());
        let put = |name: &str, v: u32| {
            let doc = Document::new(kind::ROLE, name, v);
            serde_json::to_vec(&doc).unwrap()
        };
        b.put("/r/a", put("a", 1), None).await.unwrap();
        let cache: WatchCache<u32> = WatchCache::start(b.clone(), "/r/").await.unwrap();
        assert_eq!(cache.get("a").unwrap().spec, 1);
        b.put("/r/b", put("b", 2), None).await.unwrap();
        b.delete("/r/a").await.unwrap();
        for _ in 0..100 {
            if cache.get("a").is_none() && cache.get("b").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cache.get("a").is_none());
        assert_eq!(cache.get("b").unwrap().spec, 2);
        // A long poll returns at the next change, not at its timeout.
        let at = cache.revision();
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let t = std::time::Instant::now();
                cache.wait_past(at, Duration::from_secs(30)).await;
                t.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.put("/r/c", put("c", 3), None).await.unwrap();
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(cache.revision() > at);
        let _ = std::fs::remove_dir_all(dir);
    }
}
