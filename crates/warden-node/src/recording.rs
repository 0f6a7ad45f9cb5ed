//! Recording sessions at the node: events are encoded into chunks and
//! appended to a spool file as the session runs (synced every few seconds
//! and at the end); finished or orphaned spools (after a crash) are
//! uploaded to auth and deleted only once auth has stored them durably.

use crate::identity::NodeIdentity;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_recording::{Encoder, Header};
use warden_types::api::RecordingInfo;
use warden_types::endpoints;

/// Recording stops (with a marker) past this size; auth accepts 256 MiB.
const MAX_SPOOL: u64 = 240 << 20;
/// How often buffered events reach the spool file and the disk.
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// How often the uploader looks for work when nothing wakes it.
const SCAN_EVERY: Duration = Duration::from_secs(5);

/// The spool directory and the sessions being recorded into it.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<SpoolInner>,
}

struct SpoolInner {
    dir: PathBuf,
    live: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
}

impl Spool {
    pub fn new(dir: &Path) -> Self {
        Spool {
            inner: Arc::new(SpoolInner {
                dir: dir.to_path_buf(),
                live: Mutex::new(HashSet::new()),
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Starts recording a session: the header is written and synced
    /// before this returns, so a failure here means nothing can be
    /// recorded (a `strict` session is then refused).
    pub fn start(&self, header: &Header) -> std::io::Result<Recorder> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let id = header.warden.session_id.clone();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(std::io::Error::other("invalid session id"));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.inner.dir)?;
        let path = self.inner.dir.join(format!("{id}.wrec"));
        // Live before the file exists, so the uploader never takes it.
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        let mut enc = Encoder::new(header);
        let first = enc.flush().expect("a header makes a chunk");
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| {
                file.write_all(&first)?;
                file.sync_data()?;
                Ok(file)
            });
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                // Nothing to upload: a headless file would only fail forever.
                let _ = std::fs::remove_file(&path);
                self.finished(&id);
                return Err(e);
            }
        };
        Ok(Recorder {
            inner: Arc::new(Mutex::new(State {
                file,
                enc,
                began: Instant::now(),
                size: first.len() as u64,
                capped: false,
                error: None,
                unsynced: false,
                done: false,
                status: tokio::sync::watch::Sender::new(Status::Recording),
            })),
            id,
            spool: self.clone(),
        })
    }

    fn finished(&self, id: &str) {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.inner.wake.notify_one();
    }

    /// Spool files of sessions not live in this process.
    fn pending(&self) -> Vec<(String, PathBuf)> {
        let live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Ok(dir) = std::fs::read_dir(&self.inner.dir) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let id = p.file_name()?.to_str()?.strip_suffix(".wrec")?.to_string();
                (!live.contains(&id)).then_some((id, p))
            })
            .collect()
    }
}

struct State {
    file: std::fs::File,
    enc: Encoder,
    began: Instant,
    size: u64,
    capped: bool,
    /// The first write error; the session goes on unrecorded from there.
    error: Option<String>,
    unsynced: bool,
    done: bool,
    status: tokio::sync::watch::Sender<Status>,
}

/// Where a recording stands, for whoever must act when it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Recording,
    /// Writing failed (disk full, I/O error); nothing after it is recorded.
    Failed(String),
    /// Ended and synced.
    Done,
}

impl Status {
    fn failure(&self) -> Option<String> {
        match self {
            Status::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }
}

impl State {
    fn write(&mut self, chunk: Vec<u8>) {
        if self.error.is_some() {
            return;
        }
        match self.file.write_all(&chunk) {
            Ok(()) => {
                self.size += chunk.len() as u64;
                self.unsynced = true;
            }
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        tracing::error!(error = %e, "cannot write session recording");
        let text = e.to_string();
        self.error = Some(text.clone());
        self.status.send_replace(Status::Failed(text));
    }

    fn after_event(&mut self) {
        if let Some(c) = self.enc.ready() {
            self.write(c);
        }
        if self.size > MAX_SPOOL && !self.capped {
            // Everything after this is unrecorded: a failure like a full
            // disk (a strict session ends), with a marker saying so.
            self.capped = true;
            let t = self.began.elapsed().as_secs_f64();
            self.enc.marker(
                t,
                "recording stopped: the session's recording reached its size limit",
            );
            self.status.send_replace(Status::Failed(
                "the session's recording reached its size limit".into(),
            ));
        }
    }

    /// Writes what the encoder holds; returns a handle to fsync (outside
    /// the lock: the session's output path takes it too) if anything is
    /// unsynced.
    fn flush(&mut self) -> Option<std::fs::File> {
        if let Some(c) = self.enc.flush() {
            self.write(c);
        }
        if !self.unsynced || self.error.is_some() {
            return None;
        }
        self.unsynced = false;
        match self.file.try_clone() {
            Ok(f) => Some(f),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }
}

/// Flushes and syncs a recording's spool file, the lock held only to write.
fn sync(inner: &Mutex<State>) {
    let file = inner.lock().unwrap_or_else(|p| p.into_inner()).flush();
    if let Some(Err(e)) = file.map(|f| f.sync_data()) {
        inner.lock().unwrap_or_else(|p| p.into_inner()).fail(e);
    }
}

/// One session's recording. Cheap to clone; every method is a short,
/// bounded piece of work on the session's own path, so a fast session is
/// slowed by encoding and page-cache writes only.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<State>>,
    id: String,
    spool: Spool,
}

impl Recorder {
    fn with(&self, f: impl FnOnce(&mut State, f64)) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if s.done || s.error.is_some() || s.capped {
            return;
        }
        let t = s.began.elapsed().as_secs_f64();
        f(&mut s, t);
    }

    pub fn output(&self, bytes: &[u8]) {
        self.with(|s, t| {
            s.enc.output(t, bytes);
            s.after_event();
        });
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        self.with(|s, t| {
            s.enc.resize(t, cols, rows);
            s.after_event();
        });
    }

    pub fn marker(&self, text: &str) {
        self.with(|s, t| {
            s.enc.marker(t, text);
            s.after_event();
        });
    }

    /// Why the recording failed (write error or size limit), if it did.
    pub fn failed(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .borrow()
            .failure()
    }

    /// Resolves once the recording fails (with the error) or ends (None).
    pub fn failure(&self) -> impl std::future::Future<Output = Option<String>> + Send + 'static {
        let mut rx = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .subscribe();
        async move {
            rx.wait_for(|s| *s != Status::Recording)
                .await
                .ok()?
                .failure()
        }
    }

    /// Keeps the spool current until the session ends.
    pub fn spawn_syncer(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SYNC_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let done = tokio::task::spawn_blocking(move || {
                    if inner.lock().unwrap_or_else(|p| p.into_inner()).done {
                        return true;
                    }
                    sync(&inner);
                    false
                })
                .await
                .unwrap_or(true);
                if done {
                    return;
                }
            }
        });
    }

    /// Ends the recording: everything synced, then queued for upload.
    pub async fn finish(self) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            sync(&inner);
            let mut s = inner.lock().unwrap_or_else(|p| p.into_inner());
            s.done = true;
            if s.status.borrow().failure().is_none() {
                s.status.send_replace(Status::Done);
            }
        })
        .await;
        self.spool.finished(&self.id);
    }
}

/// Uploads spooled recordings of sessions that are over (or were cut by a
/// crash before this process started), forever; retries what fails.
pub async fn upload_loop(identity: Arc<NodeIdentity>) {
    let spool = identity.spool.clone();
    loop {
        let pending = spool.pending();
        warden_types::metrics::METRICS
            .node_spooled_recordings
            .set(pending.len() as u64);
        for (id, path) in pending {
            match upload(&identity, &id, &path).await {
                Ok(info) => {
                    tracing::info!(session = %id, bytes = info.size, truncated = info.truncated, "recording uploaded");
                    if let Err(e) = std::fs::remove_file(&path) {
                        tracing::warn!(error = %e, "cannot delete an uploaded spool file");
                    }
                }
                // It will never upload: keep it aside for a person
                // instead of retrying forever.
                Err(UploadError::Unreadable(why)) => {
                    let bad = path.with_extension("bad");
                    tracing::error!(session = %id, error = %why, file = %bad.display(), "recording cannot be read; set aside");
                    let _ = std::fs::rename(&path, &bad);
                }
                // Not this one now (auth refused it: an auth older than
                // this node during an upgrade, say): retried later, others
                // go on.
                Err(UploadError::Refused(why)) => {
                    tracing::warn!(session = %id, error = %why, "recording not uploaded; will retry");
                }
                // The rest would fail alike.
                Err(UploadError::Unavailable(why)) => {
                    tracing::warn!(session = %id, error = %why, "recording upload failed; will retry");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(SCAN_EVERY, spool.inner.wake.notified()).await;
    }
}

/// Why a spooled recording did not upload; each calls for its own next step.
#[derive(Debug)]
enum UploadError {
    /// This node cannot read the file it wrote (cut before its header,
    /// damaged on disk, another session's).
    Unreadable(String),
    /// This file cannot go now: auth refused it, or it could not be read
    /// from disk.
    Refused(String),
    /// Auth did not answer, failed itself, or refused this node (a 401 or
    /// 403 is about the caller: every other file would fare alike).
    Unavailable(String),
}

/// Scans a spooled recording without holding it whole.
fn scan_file(path: &Path) -> Result<warden_recording::Summary, UploadError> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| UploadError::Refused(format!("cannot read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let mut reader = warden_recording::scanner();
    let mut buf = vec![0; 256 << 10];
    loop {
        let n = file.read(&mut buf).map_err(cannot)?;
        if n == 0 {
            break;
        }
        reader
            .push(&buf[..n])
            .map_err(|e| UploadError::Unreadable(e.to_string()))?;
    }
    reader
        .finish()
        .map_err(|e| UploadError::Unreadable(e.to_string()))
}

async fn upload(
    identity: &NodeIdentity,
    id: &str,
    path: &Path,
) -> Result<RecordingInfo, UploadError> {
    // Checked here first, read in pieces as auth will: what this node
    // cannot read, auth cannot either.
    let file = path.to_path_buf();
    let summary = tokio::task::spawn_blocking(move || scan_file(&file))
        .await
        .map_err(|e| UploadError::Unavailable(e.to_string()))??;
    if summary.header.warden.session_id != id {
        return Err(UploadError::Unreadable(format!(
            "the file holds session {:?}",
            summary.header.warden.session_id
        )));
    }
    let api = identity
        .api()
        .map_err(|e| UploadError::Unavailable(format!("{e:#}")))?;
    api.put_file(
        &endpoints::UPLOAD_RECORDING,
        &endpoints::UPLOAD_RECORDING.at(&[&id]),
        path,
    )
    .await
    .map_err(|e| match e {
        // Statuses about the file itself; the rest (401/403 about
        // this node, 408/429 about load, 5xx) hold for every file.
        warden_client::ClientError::Api {
            status: 400 | 409 | 413 | 422,
            ..
        } => UploadError::Refused(e.to_string()),
        e => UploadError::Unavailable(e.to_string()),
    })
}
