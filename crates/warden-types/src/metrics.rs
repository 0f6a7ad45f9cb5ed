//! Process metrics in Prometheus' text format: a few atomics, no registry
//! crate. Services bump them; `warden start --diag-addr` serves them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// A latency histogram with fixed buckets.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }
    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                self.counts[i].load(Relaxed)
            ));
        }
        let count = self.count.load(Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {count}\n",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        ));
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything the process measures.
pub struct Metrics {
    /// User-facing connections being served (what a graceful restart
    /// waits for).
    pub active_connections: Gauge,
    pub proxy_connections_ssh: Counter,
    pub proxy_connections_tls: Counter,
    pub proxy_connections_tunnel: Counter,
    pub proxy_connections_auth: Counter,
    pub proxy_connections_db: Counter,
    pub proxy_errors_sniff: Counter,
    pub proxy_errors_handshake: Counter,
    pub proxy_errors_node_unreachable: Counter,
    pub proxy_errors_limit: Counter,
    pub proxy_tunnels: Gauge,
    pub proxy_jump_sessions: Gauge,
    pub proxy_handshake_seconds: Histogram,
    pub node_sessions: Gauge,
    pub node_connections: Counter,
    pub node_rejections: Counter,
    /// Auth's own audit events waiting for the audit log.
    pub audit_spooled: Gauge,
    /// 1 while auth's recording store fails (uploads wait on the nodes).
    pub recording_store_failing: Gauge,
    /// Recordings on this node's disk waiting for upload.
    pub node_spooled_recordings: Gauge,
    /// When the node last had its policy confirmed current by auth (Unix
    /// seconds; 0 before the first answer).
    pub node_policy_current_at: Gauge,
}

/// The process-wide metrics.
pub static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a connection as active until dropped.
pub struct ActiveGuard(());

impl ActiveGuard {
    pub fn new() -> Self {
        METRICS.active_connections.inc();
        ActiveGuard(())
    }
}

impl Default for ActiveGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        METRICS.active_connections.dec();
    }
}

impl Metrics {
    /// All zero.
    pub const fn new() -> Self {
        Metrics {
            active_connections: Gauge::new(),
            proxy_connections_ssh: Counter::new(),
            proxy_connections_tls: Counter::new(),
            proxy_connections_tunnel: Counter::new(),
            proxy_connections_auth: Counter::new(),
            proxy_connections_db: Counter::new(),
            proxy_errors_sniff: Counter::new(),
            proxy_errors_handshake: Counter::new(),
            proxy_errors_node_unreachable: Counter::new(),
            proxy_errors_limit: Counter::new(),
            proxy_tunnels: Gauge::new(),
            proxy_jump_sessions: Gauge::new(),
            proxy_handshake_seconds: Histogram::new(),
            node_sessions: Gauge::new(),
            node_connections: Counter::new(),
            node_rejections: Counter::new(),
            audit_spooled: Gauge::new(),
            recording_store_failing: Gauge::new(),
            node_spooled_recordings: Gauge::new(),
            node_policy_current_at: Gauge::new(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in rows {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        family(
            "warden_proxy_connections_total",
            "counter",
            "Connections accepted on the proxy port, by protocol.",
            &[
                ("{protocol=\"ssh\"}", self.proxy_connections_ssh.get()),
                ("{protocol=\"web\"}", self.proxy_connections_tls.get()),
                ("{protocol=\"tunnel\"}", self.proxy_connections_tunnel.get()),
                ("{protocol=\"auth\"}", self.proxy_connections_auth.get()),
                ("{protocol=\"db\"}", self.proxy_connections_db.get()),
            ],
        );
        family(
            "warden_proxy_connection_errors_total",
            "counter",
            "Proxy connections that failed, by reason.",
            &[
                ("{reason=\"sniff\"}", self.proxy_errors_sniff.get()),
                ("{reason=\"handshake\"}", self.proxy_errors_handshake.get()),
                (
                    "{reason=\"node_unreachable\"}",
                    self.proxy_errors_node_unreachable.get(),
                ),
                (
                    "{reason=\"connection_limit\"}",
                    self.proxy_errors_limit.get(),
                ),
            ],
        );
        family(
            "warden_audit_spooled_events",
            "gauge",
            "Audit events auth keeps on local disk because the audit log is unreachable (0 when healthy).",
            &[("", self.audit_spooled.get())],
        );
        family(
            "warden_recording_store_failing",
            "gauge",
            "1 while the recording store (S3 or disk) fails on auth; recordings then wait in the nodes' spools.",
            &[("", self.recording_store_failing.get())],
        );
        family(
            "warden_node_spooled_recordings",
            "gauge",
            "Session recordings on this node's disk waiting for upload.",
            &[("", self.node_spooled_recordings.get())],
        );
        family(
            "warden_node_policy_current_timestamp_seconds",
            "gauge",
            "When auth last confirmed this node's copy of the access policy current (Unix seconds): alert when it falls behind --policy-max-stale.",
            &[("", self.node_policy_current_at.get())],
        );
        family(
            "warden_active_connections",
            "gauge",
            "User-facing connections being served.",
            &[("", self.active_connections.get())],
        );
        family(
            "warden_proxy_tunnels",
            "gauge",
            "Reverse tunnels from nodes connected to this proxy.",
            &[("", self.proxy_tunnels.get())],
        );
        family(
            "warden_proxy_sessions",
            "gauge",
            "Sessions forwarded by the jump host right now.",
            &[("", self.proxy_jump_sessions.get())],
        );
        family(
            "warden_node_sessions",
            "gauge",
            "Shells, commands and subsystems running on this node.",
            &[("", self.node_sessions.get())],
        );
        family(
            "warden_node_connections_total",
            "counter",
            "SSH connections to this node.",
            &[("", self.node_connections.get())],
        );
        family(
            "warden_node_rejections_total",
            "counter",
            "Logins this node refused.",
            &[("", self.node_rejections.get())],
        );
        self.proxy_handshake_seconds.render(
            "warden_proxy_tls_handshake_seconds",
            "TLS handshake latency on the proxy port.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.proxy_connections_ssh.inc();
        m.proxy_tunnels.set(3);
        m.node_sessions.inc();
        m.node_sessions.dec();
        m.node_sessions.dec();
        m.proxy_handshake_seconds
            .observe(std::time::Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("warden_proxy_connections_total{protocol=\"ssh\"} 1"));
        assert!(text.contains("warden_proxy_tunnels 3"));
        assert!(text.contains("warden_node_sessions 0"));
        assert!(text.contains("warden_proxy_tls_handshake_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("warden_proxy_tls_handshake_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("warden_proxy_tls_handshake_seconds_count 1"));
    }
}
