//! The data dir of a running `warden start`: one process per data dir
//! (a lock), and a record of where the running cluster keeps it, so
//! `warden admin` on the auth host finds the admin identity without flags
//! (as kubectl finds its kubeconfig).

use anyhow::{bail, Context};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "warden.lock";
const PID_FILE: &str = "warden.pid";
/// Name of the lock's descriptor in a graceful restart's handover.
pub const HANDOVER_NAME: &str = "lock";

/// An exclusive lock on a data dir, held for the life of the process and
/// handed to the successor on a graceful restart (a `flock` belongs to the
/// open file, which the successor inherits).
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Takes the lock on `data_dir`, or fails naming the process that holds
    /// it. Without `create`, a data dir that has no lock file yet gives
    /// `None` (nothing can be running there) and nothing is created.
    pub fn take(data_dir: &Path, create: bool) -> anyhow::Result<Option<Self>> {
        let path = data_dir.join(LOCK_FILE);
        let file = match crate::handover::inherited_file(HANDOVER_NAME) {
            Some(f) => f,
            None if !create && !path.exists() => return Ok(None),
            None => {
                use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(data_dir)
                    .with_context(|| {
                        format!("cannot create the data dir {}", data_dir.display())
                    })?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?
            }
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let pid = std::fs::read_to_string(data_dir.join(PID_FILE))
                    .map(|p| format!(" (pid {})", p.trim()))
                    .unwrap_or_default();
                bail!(
                    "another warden{pid} is already running on the data dir {}: stop it first, restart it with 'kill -HUP', or pass --data-dir for another cluster",
                    data_dir.display()
                );
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(Some(DataDirLock { file }))
    }

    /// The descriptor to hand over on a graceful restart.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Writes `warden.pid`: the process that now serves the data dir.
pub fn write_pid(data_dir: &Path) {
    let _ = warden_ca::keystore::write_file_atomic(
        &data_dir.join(PID_FILE),
        std::process::id().to_string().as_bytes(),
        0o644,
    );
}

/// Where this OS user's record of the running cluster's data dir lives:
/// `$XDG_STATE_HOME/warden/data-dir`, else `~/.local/state/warden/data-dir`.
fn record_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/state"),
    };
    Some(base.join("warden").join("data-dir"))
}

/// Records `data_dir` as the running cluster's, for `warden admin`.
pub fn record(data_dir: &Path) {
    let Some(path) = record_path() else {
        return;
    };
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let written =
        warden_ca::keystore::write_file_atomic(&path, dir.as_os_str().as_encoded_bytes(), 0o600);
    if let Err(e) = written {
        // A service user without a writable home (systemd's DynamicUser):
        // admins there use the default data dir or --data-dir.
        tracing::debug!(error = %e, path = %path.display(), "cannot record the data dir for 'warden admin'");
    }
}

/// The data dir the last `warden start` of this OS user recorded, while
/// a warden still runs on it.
pub fn recorded() -> Option<PathBuf> {
    let text = std::fs::read_to_string(record_path()?).ok()?;
    let dir = PathBuf::from(text.trim());
    in_use(&dir).then_some(dir)
}

/// Whether a process holds the lock on `data_dir`.
fn in_use(data_dir: &Path) -> bool {
    let Ok(file) = File::open(data_dir.join(LOCK_FILE)) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; the lock, if we get it, goes
    // with the file when it is dropped.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// `--data-dir DIR ` when `data_dir` is not the default, for printed hints.
pub fn flag_for(data_dir: &Path) -> String {
    if data_dir == crate::default_data_dir() {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    }
}
