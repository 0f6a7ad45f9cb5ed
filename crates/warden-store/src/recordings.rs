//! Session recordings: the [`RecordingStore`] trait and its file
//! implementation (one recording file and one metadata file per session).

use crate::backend::StoreError;
use crate::Result;
use async_trait::async_trait;
use hyper::body::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};
use warden_types::api::RecordingInfo;

/// Where recordings live. A recording goes in as it arrives, through an
/// [`Upload`]: it is listed, and readable, only once committed, and
/// commit returns once it is durable, so the uploader may delete its
/// spool.
#[async_trait]
pub trait RecordingStore: Send + Sync + 'static {
    /// Starts storing the recording of `session_id`.
    async fn begin(&self, session_id: &str) -> Result<Box<dyn Upload>>;
    /// Stores a whole recording at once.
    async fn put(&self, info: &RecordingInfo, data: Vec<u8>) -> Result<()> {
        let mut upload = self.begin(&info.session_id).await?;
        if let Err(e) = upload.write(data.into()).await {
            upload.abort().await;
            return Err(e);
        }
        upload.commit(info).await
    }
    /// The recording of `session_id`, read as it arrives: a reader holds
    /// a piece at a time, however large the recording.
    async fn get(&self, session_id: &str) -> Result<Option<RecordingStream>>;
    async fn info(&self, session_id: &str) -> Result<Option<RecordingInfo>>;
    async fn list(&self) -> Result<Vec<RecordingInfo>>;
}

/// A recording read back from a store, piece by piece.
pub type RecordingStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// Reads a whole [`RecordingStream`] into memory (small recordings, tests).
pub async fn read_all(mut stream: RecordingStream) -> Result<Vec<u8>> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.map_err(io)?);
    }
    Ok(out)
}

/// A file read piece by piece; the stream ends after an error.
fn file_stream(file: tokio::fs::File) -> RecordingStream {
    use futures_util::StreamExt;
    futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

/// One recording on its way into a store. Dropped without a commit, it
/// leaves nothing behind (an abort, in the background where it needs I/O).
#[async_trait]
pub trait Upload: Send {
    /// The next bytes of the recording.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Makes the recording, described by `info`, durable and visible. On
    /// an error nothing is visible.
    async fn commit(self: Box<Self>, info: &RecordingInfo) -> Result<()>;
    /// Drops what was written.
    async fn abort(self: Box<Self>);
}

/// Recordings as files in a directory (0700, files 0600).
#[derive(Clone)]
pub struct FileRecordingStore {
    dir: PathBuf,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Session ids become file names: only UUID-like ids are accepted.
/// Could `id` name a recording (a session id)? Anything else names none.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn valid_id(id: &str) -> Result<()> {
    if is_session_id(id) {
        Ok(())
    } else {
        Err(StoreError::Backend(format!("invalid session id {id:?}")))
    }
}

/// Writes `data` to `path` atomically and durably.
pub(crate) fn write_durable(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_through(path, &path.with_extension("tmp"), data)
}

/// As [`write_durable`], through a temporary file of its own: two
/// commits of one recording may overlap.
fn write_durable_unique(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    write_through(path, &tmp, data)
}

fn write_through(path: &Path, tmp: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl FileRecordingStore {
    pub fn open(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        // Uploads cut short by a crash: their nodes still hold them. Only
        // old ones: a process handing over (SIGHUP) may still be writing.
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600));
            if (name.contains(".wrec.part-") || name.contains(".tmp-")) && stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(FileRecordingStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }
}

#[async_trait]
impl RecordingStore for FileRecordingStore {
    async fn begin(&self, session_id: &str) -> Result<Box<dyn Upload>> {
        valid_id(session_id)?;
        use std::os::unix::fs::OpenOptionsExt;
        // A name of its own: a retried upload may overlap the first.
        let part = self.path(
            session_id,
            &format!("wrec.part-{}", uuid::Uuid::new_v4().simple()),
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(io)?;
        Ok(Box::new(FileUpload {
            file: Some(tokio::io::BufWriter::with_capacity(
                256 << 10,
                tokio::fs::File::from_std(file),
            )),
            part,
            rec: self.path(session_id, "wrec"),
            meta: self.path(session_id, "json"),
        }))
    }

    async fn get(&self, session_id: &str) -> Result<Option<RecordingStream>> {
        valid_id(session_id)?;
        if !self.path(session_id, "json").exists() {
            return Ok(None);
        }
        match tokio::fs::File::open(self.path(session_id, "wrec")).await {
            Ok(f) => Ok(Some(file_stream(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn info(&self, session_id: &str) -> Result<Option<RecordingInfo>> {
        valid_id(session_id)?;
        match tokio::fs::read(self.path(session_id, "json")).await {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn list(&self) -> Result<Vec<RecordingInfo>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let p = entry?.path();
                if p.extension().and_then(|e| e.to_str()) == Some("json") {
                    if let Ok(info) = serde_json::from_slice::<RecordingInfo>(&std::fs::read(&p)?) {
                        out.push(info);
                    }
                }
            }
            out.sort_by_key(|i: &RecordingInfo| std::cmp::Reverse(i.start));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
        .map_err(io)
    }
}

/// A recording written to a file of its own, renamed into place on commit.
struct FileUpload {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    part: PathBuf,
    rec: PathBuf,
    meta: PathBuf,
}

#[async_trait]
impl Upload for FileUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io(std::io::ErrorKind::BrokenPipe.into()))?;
        if let Err(e) = file.write_all(&data).await {
            // What was buffered may be lost: this upload can only abort.
            self.file = None;
            return Err(io(e));
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, info: &RecordingInfo) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let json = serde_json::to_vec(info).map_err(|e| StoreError::Backend(e.to_string()))?;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io(std::io::ErrorKind::BrokenPipe.into()))?;
        file.flush().await.map_err(io)?;
        let file = file.into_inner().into_std().await;
        let (part, rec, meta) = (self.part.clone(), self.rec.clone(), self.meta.clone());
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            std::fs::rename(&part, &rec)?;
            // The recording first: metadata present means the data is too.
            write_durable_unique(&meta, &json)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
        .map_err(io)
    }

    async fn abort(self: Box<Self>) {}
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        // Committed: renamed away, so this finds nothing.
        let _ = std::fs::remove_file(&self.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn got(s: &FileRecordingStore, id: &str) -> Option<Vec<u8>> {
        Some(read_all(s.get(id).await.unwrap()?).await.unwrap())
    }

    #[tokio::test]
    async fn put_get_list() {
        let dir = std::env::temp_dir().join(format!("warden-rec-{}", std::process::id()));
        let s = FileRecordingStore::open(&dir).unwrap();
        let info = RecordingInfo {
            session_id: "0b8f1f5e-0000-4000-8000-000000000001".into(),
            user: "alice".into(),
            start: 10,
            ..Default::default()
        };
        s.put(&info, b"WRC1data".to_vec()).await.unwrap();
        // In pieces; nothing is visible, or left, before the commit.
        let other = RecordingInfo {
            session_id: "0b8f1f5e-0000-4000-8000-000000000003".into(),
            start: 5,
            ..info.clone()
        };
        let mut up = s.begin(&other.session_id).await.unwrap();
        up.write(Bytes::from_static(b"WRC2")).await.unwrap();
        up.write(Bytes::from_static(b"more")).await.unwrap();
        assert!(s.get(&other.session_id).await.unwrap().is_none());
        up.commit(&other).await.unwrap();
        assert_eq!(got(&s, &other.session_id).await.unwrap(), b"WRC2more");
        let mut up = s.begin(&other.session_id).await.unwrap();
        up.write(Bytes::from_static(b"lost")).await.unwrap();
        drop(up);
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 4, "two recordings and their metadata, no parts");
        assert_eq!(got(&s, &info.session_id).await.unwrap(), b"WRC1data");
        assert_eq!(s.list().await.unwrap(), vec![info.clone(), other]);
        assert!(s.get("../../etc/passwd").await.is_err());
        assert!(s
            .get("0b8f1f5e-0000-4000-8000-000000000002")
            .await
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
