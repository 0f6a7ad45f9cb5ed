//! Session recordings: the [`RecordingStore`] trait and its file
//! implementation (one recording file and one metadata file per session).

use crate::backend::StoreError;
use crate::Result;
use async_trait::async_trait;
use std::io::Write;
use std::path::{Path, PathBuf};
use warden_types::api::RecordingInfo;

/// Where recordings live. `put` returns once the recording is durable, so
/// the uploader may delete its spool.
#[async_trait]
pub trait RecordingStore: Send + Sync + 'static {
    async fn put(&self, info: &RecordingInfo, data: Vec<u8>) -> Result<()>;
    async fn get(&self, session_id: &str) -> Result<Option<Vec<u8>>>;
    async fn info(&self, session_id: &str) -> Result<Option<RecordingInfo>>;
    async fn list(&self) -> Result<Vec<RecordingInfo>>;
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
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
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
    async fn put(&self, info: &RecordingInfo, data: Vec<u8>) -> Result<()> {
        valid_id(&info.session_id)?;
        let (rec, meta) = (
            self.path(&info.session_id, "wrec"),
            self.path(&info.session_id, "json"),
        );
        let json = serde_json::to_vec(info).map_err(|e| StoreError::Backend(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            // The recording first: metadata present means the data is too.
            write_durable(&rec, &data)?;
            write_durable(&meta, &json)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
        .map_err(io)
    }

    async fn get(&self, session_id: &str) -> Result<Option<Vec<u8>>> {
        valid_id(session_id)?;
        if !self.path(session_id, "json").exists() {
            return Ok(None);
        }
        match tokio::fs::read(self.path(session_id, "wrec")).await {
            Ok(b) => Ok(Some(b)),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.get(&info.session_id).await.unwrap().unwrap(), b"WRC1data");
        assert_eq!(s.list().await.unwrap(), vec![info.clone()]);
        assert!(s.get("../../etc/passwd").await.is_err());
        assert!(s
            .get("0b8f1f5e-0000-4000-8000-000000000002")
            .await
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
