//! Audit events wait in a local spool until the audit log acknowledges
//! them, so an outage loses nothing: each event is a file, synced before
//! [`EventSpool::push`] returns, named by a sequence number so events are
//! delivered in the order they happened. Events carry their own id and the
//! log ignores an id it already holds, so a resend after a lost
//! acknowledgement (or a crash between acknowledgement and delete) is not
//! stored twice. Nodes spool what they send to auth; auth spools its own
//! events while its audit log (e.g. PostgreSQL) is unreachable.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_types::audit::AuditEvent;

/// Look for undelivered events at least this often.
const SCAN_EVERY: Duration = Duration::from_secs(5);
/// Wait after a failed delivery (auth down) before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Events per delivery (auth takes at most 500).
const BATCH: usize = 200;
/// Most events in one spool file ([`EventSpool::push_all`]); a delivery
/// of whole files stays within auth's 500.
pub const MAX_PER_FILE: usize = 200;
/// Events kept while the log is unreachable; beyond, new events are
/// refused locally (and logged) rather than filling the disk.
const MAX_PENDING: usize = 100_000;

/// The spool directory of undelivered events.
#[derive(Clone)]
pub struct EventSpool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The next sequence number; held while writing so files are in order.
    next: Mutex<u64>,
    /// Events waiting (kept as a count: listing the directory per event
    /// would cost O(backlog) during a long outage).
    queued: std::sync::atomic::AtomicUsize,
    wake: tokio::sync::Notify,
}

/// A spool file's sequence number and how many events it holds: `SEQ.json`
/// holds one, `SEQ-N.json` (written by `push_all`) holds N.
fn seq_of(path: &Path) -> Option<(u64, usize)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".json")?;
    match name.split_once('-') {
        Some((seq, n)) => Some((seq.parse().ok()?, n.parse().ok()?)),
        None => Some((name.parse().ok()?, 1)),
    }
}

/// How many events a spool file holds, by its name.
fn count_of(path: &Path) -> usize {
    seq_of(path).map_or(1, |(_, n)| n)
}

impl EventSpool {
    /// Opens (creating, 0700) the spool in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let spool = EventSpool {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                next: Mutex::new(0),
                queued: Default::default(),
                wake: tokio::sync::Notify::new(),
            }),
        };
        // Half-written events of a crash were never acknowledged to anyone.
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let pending = spool.pending();
        let events = pending.iter().map(|(_, p)| count_of(p)).sum();
        spool.inner.queued.store(events, Ordering::SeqCst);
        let last = pending.last().map(|(s, _)| *s).unwrap_or(0);
        *spool.inner.next.lock().unwrap_or_else(|e| e.into_inner()) = last + 1;
        Ok(spool)
    }

    /// Undelivered events, oldest first.
    pub fn pending(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.inner.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                seq_of(&p).map(|(s, _)| (s, p))
            })
            .collect();
        out.sort_by_key(|(s, _)| *s);
        out
    }

    /// Stores `event` durably; the delivery loop sends it.
    pub fn push(&self, event: &AuditEvent) -> std::io::Result<()> {
        self.push_all(std::slice::from_ref(event))
    }

    /// Stores `events` durably, in order, with one synced write per
    /// [`MAX_PER_FILE`] of them: for sources of many small events (a
    /// database connection's statements), where a sync per event would be
    /// the bottleneck.
    pub fn push_all(&self, events: &[AuditEvent]) -> std::io::Result<()> {
        for chunk in events.chunks(MAX_PER_FILE) {
            // One event is stored as itself, as `push` always stored it.
            let body = match chunk {
                [one] => serde_json::to_vec(one),
                _ => serde_json::to_vec(chunk),
            }
            .map_err(std::io::Error::other)?;
            self.write(&body, chunk.len())?;
        }
        Ok(())
    }

    /// Writes one spool file holding `count` events.
    fn write(&self, body: &[u8], count: usize) -> std::io::Result<()> {
        let mut next = self.inner.next.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *next;
        if self.inner.queued.load(Ordering::SeqCst) >= MAX_PENDING {
            return Err(std::io::Error::other(format!(
                "{MAX_PENDING} audit events are waiting for the audit log already"
            )));
        }
        // Counted before the file appears: a delivery that finds and
        // deletes it at once must not drive the count below the files.
        self.inner.queued.fetch_add(count, Ordering::SeqCst);
        // Written aside, synced and renamed: the loop never sees half an
        // event, and an event is on disk before `push` returns.
        let path = match count {
            1 => self.inner.dir.join(format!("{seq:020}.json")),
            n => self.inner.dir.join(format!("{seq:020}-{n}.json")),
        };
        if let Err(e) = crate::recordings::write_durable(&path, body) {
            self.uncount(count);
            return Err(e);
        }
        *next = seq + 1;
        drop(next);
        self.inner.wake.notify_one();
        Ok(())
    }
}

impl EventSpool {
    /// Events waiting to be delivered.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Whether no event file waits (the count aside).
    pub fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    fn uncount(&self, n: usize) {
        let _ = self
            .inner
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                Some(q.saturating_sub(n))
            });
    }
}

/// How a delivery went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The spool is empty.
    Done,
    /// `send` failed; events stay, in order, for the next attempt.
    Failed,
}

/// Sends spooled events with `send`, oldest first in batches, deleting
/// each batch once `send` acknowledges it; stops at the first failure so
/// order is kept across outages.
pub async fn deliver<F, Fut>(spool: &EventSpool, send: &F) -> Delivery
where
    F: Fn(Vec<AuditEvent>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        // Whole files, up to BATCH events (a file of up to MAX_PER_FILE
        // more goes with them).
        let mut paths = Vec::new();
        let mut events: Vec<AuditEvent> = Vec::new();
        for (_, path) in spool.pending() {
            if events.len() >= BATCH {
                break;
            }
            match read_events(&path) {
                Ok(evs) => {
                    events.extend(evs);
                    paths.push(path);
                }
                Err(e) => {
                    // Unreadable: keep it aside for a person, go on. Its
                    // count is unknown; one is the least it held.
                    tracing::error!(path = %path.display(), error = %e, "unreadable spooled audit event");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                    spool.uncount(count_of(&path));
                }
            }
        }
        if paths.is_empty() {
            return Delivery::Done;
        }
        let count = events.len();
        if let Err(e) = send(events).await {
            tracing::debug!(error = %e, "audit event delivery failed");
            return Delivery::Failed;
        }
        for path in &paths {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(error = %e, "cannot delete a delivered audit event");
            }
        }
        spool.uncount(count);
    }
}

/// Delivers spooled events with `send` forever: woken by each push, and
/// retrying every 2 s while `send` fails. `what` names the destination in
/// the log lines an outage writes.
pub async fn deliver_loop<F, Fut>(spool: EventSpool, what: &'static str, send: F)
where
    F: Fn(Vec<AuditEvent>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut failing = false;
    loop {
        match deliver(&spool, &send).await {
            Delivery::Done => {
                if failing {
                    tracing::info!("{what} is reachable again; spooled audit events delivered");
                    failing = false;
                }
                let _ = tokio::time::timeout(SCAN_EVERY, spool.inner.wake.notified()).await;
            }
            Delivery::Failed => {
                if !failing {
                    tracing::warn!(
                        pending = spool.queued(),
                        "audit events cannot reach {what}; keeping them until it is back"
                    );
                    failing = true;
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// A spool file's events: one event, or a list of them (`push_all`).
fn read_events(path: &Path) -> Result<Vec<AuditEvent>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    match bytes.first() {
        Some(b'[') => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(&bytes)
            .map(|e| vec![e])
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent::new(
            warden_types::audit::codes::SESSION_START,
            "c",
            "alice",
            format!("event {n}"),
        )
    }

    #[test]
    fn events_keep_their_order_across_reopen() {
        let dir = std::env::temp_dir().join(format!("warden-evspool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = EventSpool::open(&dir).unwrap();
        for n in 0..3 {
            spool.push(&event(n)).unwrap();
        }
        // Delivered: the first one.
        std::fs::remove_file(&spool.pending()[0].1).unwrap();
        let spool = EventSpool::open(&dir).unwrap();
        spool.push(&event(3)).unwrap();
        let messages: Vec<String> = spool
            .pending()
            .iter()
            .map(|(_, p)| {
                let e: AuditEvent = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                e.message
            })
            .collect();
        assert_eq!(messages, ["event 1", "event 2", "event 3"]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&spool.pending()[0].1)
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn batches_and_single_events_are_delivered_in_order_and_counted() {
        let dir = std::env::temp_dir().join(format!("warden-evspool-b-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = EventSpool::open(&dir).unwrap();
        spool.push(&event(0)).unwrap();
        let many: Vec<AuditEvent> = (1..=450).map(event).collect();
        spool.push_all(&many).unwrap();
        spool.push(&event(451)).unwrap();
        assert_eq!(spool.queued(), 452);
        assert_eq!(spool.pending().len(), 5, "1 + 200 + 200 + 50 + 1");
        // Counted again, by event, after a restart.
        let spool = EventSpool::open(&dir).unwrap();
        assert_eq!(spool.queued(), 452);
        let got = std::sync::Mutex::new(Vec::new());
        let sizes = std::sync::Mutex::new(Vec::new());
        let send = |evs: Vec<AuditEvent>| {
            sizes.lock().unwrap().push(evs.len());
            got.lock()
                .unwrap()
                .extend(evs.into_iter().map(|e| e.message));
            async { Ok(()) }
        };
        assert_eq!(deliver(&spool, &send).await, Delivery::Done);
        let got = got.into_inner().unwrap();
        let want: Vec<String> = (0..=451).map(|n| format!("event {n}")).collect();
        assert_eq!(got, want);
        assert!(
            sizes.into_inner().unwrap().iter().all(|n| *n <= 500),
            "within what auth takes"
        );
        assert_eq!(spool.queued(), 0);
        assert!(spool.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
