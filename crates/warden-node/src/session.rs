//! Running a user's processes: exec, shell and subsystems, with or without
//! a PTY, as the requested Unix login; and pumping their bytes to the SSH
//! channel with backpressure both ways.

use crate::pty;
use crate::recording::Recorder;
use crate::unix::Account;
use russh::server::Msg;
use russh::Channel;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Environment variables a client may set (OpenSSH's usual AcceptEnv).
pub fn env_allowed(name: &str) -> bool {
    matches!(name, "LANG" | "COLORTERM" | "TZ") || name.starts_with("LC_")
}

/// A requested terminal.
#[derive(Clone, Debug)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// What to run.
pub struct Spec {
    pub account: Account,
    /// `None`: the login shell. `Some`: a command for the shell's `-c`.
    pub command: Option<String>,
    /// Run this binary directly instead (subsystems).
    pub program: Option<String>,
    pub pty: Option<PtyRequest>,
    pub env: Vec<(String, String)>,
    pub session_id: String,
    pub username: String,
    /// Switch to the account (root only); else run as ourselves.
    pub switch_user: bool,
    /// The client's and the node's ends of the connection, for
    /// `SSH_CLIENT` and `SSH_CONNECTION` as sshd sets them (bash reads
    /// `~/.bashrc` for remote commands only when it sees them).
    pub addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// A started process.
pub struct Running {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// PTY master, when a PTY was requested.
    pub master: Option<pty::Master>,
}

impl Running {
    pub fn master_fd(&self) -> Option<RawFd> {
        self.master.as_ref().map(|m| m.raw())
    }
}

/// Starts the process described by `spec`.
pub fn spawn(spec: &Spec) -> std::io::Result<Running> {
    let (cmd, master) = build(spec)?;
    let child = tokio::process::Command::from(cmd).spawn()?;
    let pid = child.id().unwrap_or(0);
    let master = match master {
        Some(m) => Some(pty::Master::new(m)?),
        None => None,
    };
    Ok(Running { child, pid, master })
}

/// Runs `spec` to completion, blocking, with no input or output (helpers
/// such as `xauth` that must finish before the session starts).
pub fn run_blocking(spec: &Spec) -> std::io::Result<std::process::ExitStatus> {
    let (mut cmd, _) = build(spec)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// The command for `spec`, with the PTY master if one was requested.
fn build(spec: &Spec) -> std::io::Result<(std::process::Command, Option<std::os::fd::OwnedFd>)> {
    use std::os::unix::process::CommandExt;
    let a = &spec.account;
    let shell = a.shell.clone();
    let base = shell.rsplit('/').next().unwrap_or("sh").to_string();
    let mut cmd = match (&spec.program, &spec.command) {
        (Some(p), _) => std::process::Command::new(p),
        (None, Some(c)) => {
            let mut cmd = std::process::Command::new(&shell);
            cmd.arg("-c").arg(c);
            cmd
        }
        (None, None) => {
            let mut cmd = std::process::Command::new(&shell);
            // A leading '-' makes it a login shell.
            cmd.arg0(format!("-{base}"));
            cmd
        }
    };
    let home = if std::path::Path::new(&a.home).is_dir() {
        a.home.clone()
    } else {
        "/".to_string()
    };
    cmd.env_clear()
        .env("HOME", &a.home)
        .env("USER", &a.name)
        .env("LOGNAME", &a.name)
        .env("SHELL", &shell)
        .env("MAIL", format!("/var/mail/{}", a.name))
        .env(
            "PATH",
            if a.uid == 0 {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            } else {
                "/usr/local/bin:/usr/bin:/bin"
            },
        )
        .env("WARDEN_SESSION_ID", &spec.session_id)
        .env("WARDEN_USER", &spec.username)
        .current_dir(&home);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some((peer, local)) = spec.addrs {
        let (ip, port) = (peer.ip().to_canonical(), peer.port());
        cmd.env("SSH_CLIENT", format!("{ip} {port} {}", local.port()))
            .env(
                "SSH_CONNECTION",
                format!("{ip} {port} {} {}", local.ip().to_canonical(), local.port()),
            );
    }
    let mut master = None;
    let with_pty = spec.pty.is_some();
    if let Some(p) = &spec.pty {
        let (m, s) = pty::open(p.cols, p.rows)?;
        cmd.env("TERM", &p.term);
        if let Some(tty) = pty::tty_path(&s) {
            cmd.env("SSH_TTY", tty);
        }
        cmd.stdin(Stdio::from(s.try_clone()?))
            .stdout(Stdio::from(s.try_clone()?))
            .stderr(Stdio::from(s));
        master = Some(m);
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    // Prepared before fork: nothing may allocate in the child.
    let name = CString::new(a.name.clone())
        .map_err(|_| std::io::Error::other("login name contains NUL"))?;
    let (uid, gid, switch) = (a.uid, a.gid, spec.switch_user);
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if with_pty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if switch {
                if libc::initgroups(name.as_ptr(), gid as _) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Never keep root by accident.
                if uid != 0 && libc::setuid(0) == 0 {
                    return Err(std::io::Error::other("could not drop privileges"));
                }
            }
            Ok(())
        });
    }
    Ok((cmd, master))
}

/// Watches the bytes of an SFTP session and reports file operations.
pub struct SftpTap {
    pub tracker: std::sync::Arc<std::sync::Mutex<crate::sftp_audit::SftpTracker>>,
    pub ops: tokio::sync::mpsc::UnboundedSender<crate::sftp_audit::FileOp>,
}

/// An AsyncRead that shows every chunk read to `see`.
struct Tap<R, F> {
    inner: R,
    see: F,
}

impl<R: AsyncRead + Unpin, F: FnMut(&[u8]) + Unpin> AsyncRead for Tap<R, F> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let chunk = &buf.filled()[before..];
            if !chunk.is_empty() {
                (this.see)(chunk);
            }
        }
        r
    }
}

/// How a process ended and what crossed the channel.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why the node ended the session (a strict recording failed).
    pub stopped: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Copies until `r` ends. The channel writer is flushed, not shut down:
/// shutting down sends EOF, and stdout and stderr share one channel, so EOF
/// goes out once, after both.
async fn copy_counted<R, W>(mut r: R, mut w: W) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let n = tokio::io::copy(&mut r, &mut w).await.unwrap_or(0);
    let _ = w.flush().await;
    n
}

/// How long a session's processes have to end after a hangup.
const HANGUP_GRACE: Duration = Duration::from_secs(5);

/// Runs a session until its process ends (see [`pump_io`]), or until:
/// - `hangup` fires (the channel or the whole connection is gone): as a
///   terminal does, the session's processes get SIGHUP; if they have not
///   ended after a grace period (they ignore it, like `nohup`), the
///   session ends without them, as under OpenSSH: they run on detached,
///   their output going nowhere;
/// - `strict` is set and the recording fails (disk full, size limit): the
///   session's processes are killed and its output stops at once, so
///   nothing runs unrecorded; the user is told why.
#[allow(clippy::too_many_arguments)]
pub async fn pump(
    running: Running,
    leader: Leader,
    channel: Channel<Msg>,
    handle: russh::server::Handle,
    sftp: Option<SftpTap>,
    recorder: Option<Recorder>,
    hangup: tokio::sync::oneshot::Receiver<()>,
    strict: bool,
) -> Outcome {
    let pid = leader.pid;
    let id = channel.id();
    let failed = {
        let watch = recorder.as_ref().filter(|_| strict).map(|r| r.failure());
        async move {
            match watch {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        }
    };
    // Boxed so that a strict stop can drop it (and the output with it).
    let mut work = Box::pin(pump_io(
        running,
        channel,
        handle.clone(),
        sftp,
        recorder,
        leader.clone(),
    ));
    let signal = |sig| leader.signal(sig);
    tokio::select! {
        outcome = &mut work => outcome,
        _ = hangup => {
            leader.hang_up();
            tokio::time::timeout(HANGUP_GRACE, &mut work)
                .await
                .unwrap_or_else(|_| {
                    tracing::info!(pid, "session process ignored SIGHUP; left running detached");
                    Outcome::default()
                })
        }
        Some(error) = failed => {
            signal(libc::SIGKILL);
            drop(work); // no more output leaves unrecorded
            let text = format!(
                "\r\nwarden: session ended: your role requires recording (record_session: strict) and this node can no longer record: {error}\r\n"
            );
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let _ = handle.extended_data(id, 1, text.into_bytes()).await;
                let _ = handle.exit_status_request(id, 255).await;
                let _ = handle.eof(id).await;
                let _ = handle.close(id).await;
            })
            .await;
            Outcome {
                signal: Some(libc::SIGKILL),
                stopped: Some(error),
                ..Default::default()
            }
        }
    }
}

/// The first process of a session, for signalling the whole session.
/// Knows when the process has been reaped: from then on its pid may
/// belong to someone else, and signals are no longer sent. (A signal
/// sent from another task in the instant between the reap and the mark
/// would need the pid reused within it: a full wrap of the pid space.)
#[derive(Clone, Debug)]
pub struct Leader {
    pid: u32,
    reaped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Leader {
    pub fn new(pid: u32) -> Self {
        Leader {
            pid,
            reaped: Default::default(),
        }
    }

    /// Called right after `wait` returned for the leader.
    fn mark_reaped(&self) {
        self.reaped.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends `sig` to all the session's processes (its job-control
    /// groups too) unless the leader has been reaped: for ending it.
    pub fn signal(&self, sig: i32) {
        if !self.reaped() {
            signal_session(self.pid, sig);
        }
    }

    /// A hangup, as a terminal gives its session when it goes away: SIGHUP
    /// (and SIGCONT, so that stopped processes see it) to the leader's
    /// process group. An interactive shell passes it on to its jobs, as
    /// under sshd. A few system calls however many processes the machine
    /// runs, so tearing down many sessions at once stays cheap; ending a
    /// session by force (locks, strict recording) uses [`Leader::signal`].
    pub fn hang_up(&self) {
        self.signal_group(libc::SIGHUP);
        self.signal_group(libc::SIGCONT);
    }

    /// Sends `sig` to the leader's process group only (the shell and
    /// what it runs in the foreground), as OpenSSH does for a client's
    /// `signal` request; not once the leader has been reaped.
    pub fn signal_group(&self, sig: i32) {
        if !self.reaped() {
            if let Ok(pid) = i32::try_from(self.pid) {
                if pid > 1 {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(-pid, sig) };
                }
            }
        }
    }

    fn reaped(&self) -> bool {
        self.reaped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The session leader's process, owned: whoever waits for it marks the
/// [`Leader`] reaped, also when the session stops waiting first (a strict
/// stop, a hangup the process ignored): it is then reaped in the
/// background, and from that moment no longer signalled.
struct Waiter {
    child: Option<tokio::process::Child>,
    leader: Leader,
}

impl Waiter {
    /// Cancel-safe: the child stays here until `wait` completes.
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(std::io::Error::other(
                "the session's process was already reaped",
            ));
        };
        let status = child.wait().await;
        self.leader.mark_reaped();
        self.child = None;
        status
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let leader = self.leader.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = child.wait().await;
                leader.mark_reaped();
            });
        }
    }
}

/// Sends `sig` to every process of the session led by `leader`: its
/// process group and the groups job control made inside it (found by
/// session id in /proc). Only for a leader not yet reaped, whose ids
/// cannot have been reused (see [`Leader`]).
fn signal_session(leader: u32, sig: i32) {
    let Ok(leader) = i32::try_from(leader) else {
        return;
    };
    if leader <= 1 {
        return;
    }
    let mut groups = vec![leader];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp session ...; comm may hold spaces.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(Ok(pgrp)), Some(Ok(sid))) = (
                f.get(2).map(|v| v.parse::<i32>()),
                f.get(3).map(|v| v.parse::<i32>()),
            ) {
                if sid == leader && pgrp > 1 && !groups.contains(&pgrp) {
                    groups.push(pgrp);
                }
            }
        }
    }
    for g in groups {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-g, sig) };
    }
}

/// Moves bytes between the process and the channel until the process ends
/// and its output is drained; then reports exit status or signal and closes.
async fn pump_io(
    running: Running,
    channel: Channel<Msg>,
    handle: russh::server::Handle,
    sftp: Option<SftpTap>,
    recorder: Option<Recorder>,
    leader: Leader,
) -> Outcome {
    let id = channel.id();
    let (mut read_half, write_half) = channel.split();
    let mut outcome = Outcome::default();
    let Running {
        mut child, master, ..
    } = running;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let mut waiter = Waiter {
        child: Some(child),
        leader,
    };
    if let Some(master) = master {
        let out = write_half.make_writer();
        let rec = recorder.clone();
        let tapped = Tap {
            inner: master.clone(),
            see: move |b: &[u8]| {
                if let Some(r) = &rec {
                    r.output(b);
                }
            },
        };
        let to_user = copy_counted(tapped, out);
        let mut m = master.clone();
        let from_user = async {
            let r = read_half.make_reader();
            tokio::pin!(r);
            tokio::io::copy(&mut r, &mut m).await.unwrap_or(0)
        };
        // The shell's exit closes the slave; reading the master then ends.
        let (out_n, status) = tokio::join!(to_user, async {
            tokio::select! {
                s = waiter.wait() => s,
                _ = from_user => waiter.wait().await,
            }
        });
        outcome.bytes_out = out_n;
        record_status(&mut outcome, status);
    } else {
        let out = write_half.make_writer();
        let err = write_half.make_writer_ext(Some(1));
        let (client_tap, server_tap) = match &sftp {
            Some(t) => (
                Some((t.tracker.clone(), t.ops.clone())),
                Some((t.tracker.clone(), t.ops.clone())),
            ),
            None => (None, None),
        };
        let feed = async {
            if let Some(mut stdin) = stdin {
                let r = Box::pin(read_half.make_reader());
                let mut r = Tap {
                    inner: r,
                    see: move |b: &[u8]| {
                        if let Some((t, _)) = &client_tap {
                            t.lock().unwrap_or_else(|p| p.into_inner()).client(b);
                        }
                    },
                };
                let n = tokio::io::copy(&mut r, &mut stdin).await.unwrap_or(0);
                let _ = stdin.shutdown().await;
                n
            } else {
                0
            }
        };
        // SFTP's binary protocol is recorded as file operations instead.
        let rec = recorder.clone().filter(|_| sftp.is_none());
        let rec_err = rec.clone();
        let drain_out = async {
            match stdout {
                Some(s) => {
                    let tapped = Tap {
                        inner: s,
                        see: move |b: &[u8]| {
                            if let Some((t, ops)) = &server_tap {
                                for op in t.lock().unwrap_or_else(|p| p.into_inner()).server(b) {
                                    let _ = ops.send(op);
                                }
                            }
                            if let Some(r) = &rec {
                                r.output(b);
                            }
                        },
                    };
                    copy_counted(tapped, out).await
                }
                None => 0,
            }
        };
        let drain_err = async {
            match stderr {
                Some(s) => {
                    let tapped = Tap {
                        inner: s,
                        see: move |b: &[u8]| {
                            if let Some(r) = &rec_err {
                                r.output(b);
                            }
                        },
                    };
                    copy_counted(tapped, err).await
                }
                None => 0,
            }
        };
        let outputs = async { tokio::join!(drain_out, drain_err) };
        tokio::pin!(feed);
        tokio::pin!(outputs);
        // stdin may never reach EOF (the client keeps it open): stop
        // feeding once the outputs are drained.
        let ((o, e), i) = tokio::select! {
            oe = &mut outputs => (oe, 0),
            i = &mut feed => ((&mut outputs).await, i),
        };
        outcome.bytes_in = i;
        outcome.bytes_out = o + e;
        let status = waiter.wait().await;
        record_status(&mut outcome, status);
    }
    if let Some(t) = &sftp {
        for op in t.tracker.lock().unwrap_or_else(|p| p.into_inner()).finish() {
            let _ = t.ops.send(op);
        }
    }
    match (outcome.exit_code, outcome.signal) {
        (Some(code), _) => {
            let _ = write_half.exit_status(code as u32).await;
        }
        (None, Some(sig)) => {
            let _ = handle
                .exit_signal_request(id, signal_name(sig), false, String::new(), String::new())
                .await;
        }
        _ => {
            let _ = write_half.exit_status(255).await;
        }
    }
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
    outcome
}

fn record_status(o: &mut Outcome, status: std::io::Result<std::process::ExitStatus>) {
    if let Ok(s) = status {
        o.exit_code = s.code();
        o.signal = s.signal();
    }
}

/// An SSH signal name for a Unix signal number.
pub fn signal_name(sig: i32) -> russh::Sig {
    use russh::Sig;
    match sig {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(format!("SIG{other}")),
    }
}

/// The Unix signal for an SSH signal name.
pub fn signal_number(sig: &russh::Sig) -> Option<i32> {
    use russh::Sig;
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => libc::SIGUSR2,
            "WINCH" => libc::SIGWINCH,
            "CONT" => libc::SIGCONT,
            "STOP" => libc::SIGSTOP,
            _ => return None,
        },
    })
}

/// Where Debian and others keep OpenSSH's sftp-server.
pub fn sftp_server() -> Option<String> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/lib/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|p| p.to_string())
}
