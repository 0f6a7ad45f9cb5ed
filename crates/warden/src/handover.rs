//! Graceful restart: on SIGHUP the running process starts its successor
//! (same binary, same arguments) handing over its listening sockets, waits
//! until the successor is ready, stops accepting, and keeps serving the
//! sessions it has until they end (bounded by a drain timeout). Upgrades do
//! not cut live sessions.

use anyhow::{bail, Context};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// Listening sockets (and the data dir's lock) handed over, as `name=fd,...`.
const ENV_FDS: &str = "WARDEN_INHERIT_FDS";
/// A pipe the successor writes to once it serves.
const ENV_READY: &str = "WARDEN_READY_FD";

fn inherited_fds() -> HashMap<String, RawFd> {
    std::env::var(ENV_FDS)
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The listener named `name` that a predecessor handed over, if any.
pub fn inherited(name: &str) -> Option<std::net::TcpListener> {
    let fd = *inherited_fds().get(name)?;
    // SAFETY: the predecessor passed this descriptor for exactly this use,
    // and nothing else in this process refers to it.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    // Close-on-exec again, so it is not leaked to children.
    // SAFETY: fd is valid.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// A descriptor other than a listener (the data dir's lock) that a
/// predecessor handed over, if any.
pub fn inherited_file(name: &str) -> Option<std::fs::File> {
    let fd = *inherited_fds().get(name)?;
    // SAFETY: as in `inherited`.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: fd is valid.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(file)
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) that this process
/// serves and is the service's main process, which after a graceful
/// restart moves to the successor. Nothing without `$NOTIFY_SOCKET`.
pub fn notify_systemd_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
        // An abstract socket (Linux).
        Some(name) => {
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)
        }
        None => std::os::unix::net::SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let message = format!("READY=1\nMAINPID={}\n", std::process::id());
        socket.send_to_addr(message.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Tells the predecessor that this process now serves.
pub fn signal_ready() {
    let Some(fd) = std::env::var(ENV_READY)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // SAFETY: the predecessor passed this pipe end for this one write.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = std::io::Write::write_all(&mut f, b"ready");
}

/// Starts the successor with duplicates of `listeners` and waits until it
/// reports ready.
pub async fn start_successor(listeners: &[(String, RawFd)]) -> anyhow::Result<u32> {
    let mut fds = Vec::new();
    let mut env = Vec::new();
    for (name, fd) in listeners {
        // SAFETY: dup of a descriptor we own; the copy has no CLOEXEC, so
        // the child inherits it.
        let copy = unsafe { libc::dup(*fd) };
        if copy < 0 {
            bail!(
                "cannot duplicate the {name} socket: {}",
                std::io::Error::last_os_error()
            );
        }
        fds.push(copy);
        env.push(format!("{name}={copy}"));
    }
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let (read_end, write_end) = (pipe[0], pipe[1]);
    // The child inherits the write end only.
    // SAFETY: valid descriptor.
    unsafe { libc::fcntl(write_end, libc::F_SETFD, 0) };
    // After a package upgrade the running binary is gone: Linux names it
    // "PATH (deleted)", and the new one sits at PATH.
    let exe = std::env::current_exe().context("cannot find the warden binary")?;
    let exe = match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => std::path::PathBuf::from(path),
        None => exe,
    };
    let child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV_FDS, env.join(","))
        .env(ENV_READY, write_end.to_string())
        .spawn()
        .context("cannot start the new process");
    // Our copies are the child's now.
    for fd in fds.into_iter().chain([write_end]) {
        // SAFETY: closing descriptors we created above.
        unsafe { libc::close(fd) };
    }
    let child = child?;
    // SAFETY: read_end is ours.
    let reader = unsafe { std::fs::File::from_raw_fd(read_end) };
    let mut reader = tokio::fs::File::from_std(reader);
    let mut buf = [0u8; 5];
    use tokio::io::AsyncReadExt;
    match tokio::time::timeout(Duration::from_secs(60), reader.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(child.id()),
        _ => bail!("the new process did not become ready (see its log); this one keeps serving"),
    }
}

/// The raw descriptor of a tokio listener, for the handover.
pub fn fd_of(l: &tokio::net::TcpListener) -> RawFd {
    l.as_raw_fd()
}
