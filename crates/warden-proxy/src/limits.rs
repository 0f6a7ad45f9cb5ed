//! Bounds on what unauthenticated traffic may hold: connections per
//! source until they authenticate, and a process-wide cap kept below the
//! descriptor limit (OpenSSH's `MaxStartups` and `LoginGraceTime` are the
//! model).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections one source address may hold before they authenticate.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 256;

/// Time an SSH client has to authenticate after connecting.
pub const LOGIN_GRACE: Duration = Duration::from_secs(20);

/// Descriptors kept free for files, the store and auth connections.
const FD_RESERVE: u64 = 512;

/// The process's soft limit on open files.
pub fn fd_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur
    } else {
        1024
    }
}

/// Raises the soft limit on open files to the hard limit (`warden start`
/// does this first): every connection holds a descriptor, and the caps
/// here are set below the limit.
pub fn raise_fd_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit through a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                tracing::warn!("cannot raise the open-file limit");
            }
        }
    }
}

/// Connections to serve at once: at most `wanted`, and few enough that each
/// (with the one upstream connection it may open) fits in the descriptor
/// limit, so a flood is refused at accept instead of failing everything.
pub fn connection_cap(wanted: usize) -> usize {
    let budget = fd_limit().saturating_sub(FD_RESERVE) / 2;
    wanted.min(budget.max(16) as usize)
}

/// Serves one SSH connection, ending it when the client has not
/// authenticated (`authenticated` set by the handler) within
/// [`LOGIN_GRACE`] of connecting, the handshake included.
pub async fn run_ssh<H, S>(
    config: Arc<russh::server::Config>,
    stream: S,
    handler: H,
    authenticated: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String>
where
    H: russh::server::Handler + Send + 'static,
    H::Error: std::fmt::Display,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + LOGIN_GRACE;
    let running =
        match tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, handler))
            .await
        {
            Err(_) => return Err("no SSH handshake within the login grace time".into()),
            Ok(Err(e)) => return Err(format!("handshake failed: {e}")),
            Ok(Ok(r)) => r,
        };
    let handle = running.handle();
    tokio::pin!(running);
    tokio::select! {
        r = &mut running => return r.map_err(|e| e.to_string()),
        _ = tokio::time::sleep_until(deadline) => {}
    }
    if authenticated.load(std::sync::atomic::Ordering::SeqCst) {
        return running.await.map_err(|e| e.to_string());
    }
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            format!("not authenticated within {}s", LOGIN_GRACE.as_secs()),
            String::new(),
        )
        .await;
    Err("not authenticated within the login grace time".into())
}

/// The source an address counts for: an IPv4 address, or the /64 an IPv6
/// address belongs to (one host can use a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

/// Counts connections per source that have not authenticated yet.
#[derive(Clone, Default)]
pub struct PerSource {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One unauthenticated connection of a source; dropping it (the connection
/// ended or authenticated) frees its place.
pub struct SourceGuard {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's [`SourceGuard`], shared with its requests: a request
/// that authenticates a long-lived stream (the web terminal) gives it up.
#[derive(Clone)]
pub struct Pending(Arc<Mutex<Option<SourceGuard>>>);

impl Pending {
    pub fn new(guard: SourceGuard) -> Self {
        Pending(Arc::new(Mutex::new(Some(guard))))
    }

    /// Frees the connection's place among its source's unauthenticated ones.
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl PerSource {
    /// A place for one more connection from `ip`, if it has fewer than
    /// `max` unauthenticated connections now.
    pub fn try_acquire(&self, ip: IpAddr, max: usize) -> Option<SourceGuard> {
        let ip = source_of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_has_its_own_bounded_count() {
        let p = PerSource::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| p.try_acquire(a, 3).unwrap()).collect();
        assert!(p.try_acquire(a, 3).is_none());
        assert!(
            p.try_acquire(b, 3).is_some(),
            "another source is not affected"
        );
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _one = p.try_acquire(v6a, 1).unwrap();
        assert!(p.try_acquire(v6b, 1).is_none(), "one /64 is one source");
        drop(held);
        assert!(p.try_acquire(a, 3).is_some(), "places come back");
        assert!(p.counts.lock().unwrap().len() <= 1);
    }

    #[test]
    fn caps_fit_the_descriptor_limit() {
        assert!(connection_cap(usize::MAX) as u64 <= fd_limit());
        assert_eq!(connection_cap(10), 10.min(connection_cap(usize::MAX)));
    }
}
