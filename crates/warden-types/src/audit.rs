//! The audit event schema. Types and codes are stable: SIEM dashboards key
//! on them. See docs/audit-events.md.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One audit event. `prev_hash`/`hash` chain events so that alteration,
/// deletion or reordering is detectable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    /// Position in the log, from 1; set by the log on append.
    #[serde(default)]
    pub index: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    #[serde(rename = "type")]
    pub event_type: String,
    pub code: String,
    pub cluster: String,
    /// Who acted (or tried to).
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_addr: Option<String>,
    pub success: bool,
    pub message: String,
    /// Event-specific details (the target of a change, the roles granted...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
}

/// Event types and their codes.
pub mod codes {
    /// (type, code) pairs.
    pub const LOGIN_SUCCESS: (&str, &str) = ("user.login", "WA1000I");
    pub const LOGIN_FAILURE: (&str, &str) = ("user.login", "WA1000W");
    pub const SIGNUP: (&str, &str) = ("user.signup", "WA1001I");
    pub const SIGNUP_FAILURE: (&str, &str) = ("user.signup", "WA1001W");
    pub const USER_CREATE: (&str, &str) = ("user.create", "WA1002I");
    pub const USER_UPDATE: (&str, &str) = ("user.update", "WA1003I");
    pub const USER_DELETE: (&str, &str) = ("user.delete", "WA1004I");
    pub const USER_LOCKED_OUT: (&str, &str) = ("user.lockout", "WA1005W");
    pub const MFA_SESSION: (&str, &str) = ("mfa.session", "WA1010I");
    pub const MFA_SESSION_FAILURE: (&str, &str) = ("mfa.session", "WA1010W");
    pub const MFA_ADD: (&str, &str) = ("mfa.add", "WA1011I");
    pub const MFA_ADD_FAILURE: (&str, &str) = ("mfa.add", "WA1011W");
    pub const MFA_REMOVE: (&str, &str) = ("mfa.remove", "WA1012I");
    pub const MFA_REMOVE_FAILURE: (&str, &str) = ("mfa.remove", "WA1012W");
    pub const ROLE_CREATE: (&str, &str) = ("role.create", "WA2000I");
    pub const ROLE_UPDATE: (&str, &str) = ("role.update", "WA2001I");
    pub const ROLE_DELETE: (&str, &str) = ("role.delete", "WA2002I");
    pub const TOKEN_CREATE: (&str, &str) = ("token.create", "WA3000I");
    pub const TOKEN_DELETE: (&str, &str) = ("token.delete", "WA3001I");
    pub const ACCESS_DENIED: (&str, &str) = ("api.denied", "WA4000W");
    /// Attempts refused by a rate limit, counted over a window.
    pub const RATE_LIMITED: (&str, &str) = ("rate_limited", "WA4001W");
    pub const NODE_JOIN: (&str, &str) = ("node.join", "WA5000I");
    pub const NODE_JOIN_FAILURE: (&str, &str) = ("node.join", "WA5000W");
    pub const NODE_DELETE: (&str, &str) = ("node.delete", "WA5001I");
    pub const SESSION_START: (&str, &str) = ("session.start", "WA6000I");
    pub const SESSION_END: (&str, &str) = ("session.end", "WA6001I");
    pub const SESSION_REJECTED: (&str, &str) = ("session.rejected", "WA6002W");
    pub const EXEC: (&str, &str) = ("exec", "WA6003I");
    pub const SUBSYSTEM: (&str, &str) = ("subsystem", "WA6004I");
    pub const PORT_FORWARD: (&str, &str) = ("port_forward", "WA6005I");
    pub const PORT_FORWARD_DENIED: (&str, &str) = ("port_forward", "WA6005W");
    pub const X11_FORWARD: (&str, &str) = ("x11_forward", "WA6006I");
    pub const SFTP: (&str, &str) = ("sftp", "WA6007I");
    pub const SESSION_TERMINATED: (&str, &str) = ("session.terminated", "WA6008W");
    pub const RECORDING_PLAY: (&str, &str) = ("recording.play", "WA6010I");
    pub const RECORDING_FAILURE: (&str, &str) = ("recording.failure", "WA6011W");
    /// A login a role in audit mode would have refused (its deny rules
    /// only record); the login went ahead.
    pub const ACCESS_WOULD_DENY: (&str, &str) = ("access.would_deny", "WA6012W");
    pub const LOCK_CREATE: (&str, &str) = ("lock.create", "WA7000I");
    pub const REQUEST_CREATE: (&str, &str) = ("access_request.create", "WA8000I");
    pub const REQUEST_REVIEW: (&str, &str) = ("access_request.review", "WA8001I");
    pub const REQUEST_AUTO_APPROVE: (&str, &str) = ("access_request.auto_approve", "WA8003I");
    pub const REQUEST_DROP: (&str, &str) = ("access_request.drop", "WA8004I");
    pub const CONFIG_UPDATE: (&str, &str) = ("config.update", "WA9000I");
    pub const CONFIG_DELETE: (&str, &str) = ("config.delete", "WA9001I");
    pub const WEBHOOK_FAILURE: (&str, &str) = ("webhook.failure", "WA9002W");
    /// The audit log was unreachable; auth's events waited on its disk.
    pub const AUDIT_OUTAGE: (&str, &str) = ("audit.outage", "WA9003W");
    /// The recording store was unreachable; recordings waited on the nodes.
    pub const RECORDINGS_OUTAGE: (&str, &str) = ("recordings.outage", "WA9004W");
    /// A backup of the cluster state was taken.
    pub const CLUSTER_BACKUP: (&str, &str) = ("cluster.backup", "WA9005I");
    /// The cluster state was restored from a backup: the first event of a
    /// new log, or a mark in a surviving one, naming the chain head the
    /// backup saw.
    pub const CLUSTER_RESTORE: (&str, &str) = ("cluster.restore", "WA9006W");
    /// A CA rotation moved to another phase (or was rolled back).
    pub const CA_ROTATE: (&str, &str) = ("ca.rotate", "WA9007I");
    /// `warden policy sync` applied a commit of the RBAC repository.
    pub const POLICY_SYNC: (&str, &str) = ("policy.sync", "WA9008I");
    /// `warden policy sync` refused a commit (its tests failed) or could
    /// not apply it; the last good state stays.
    pub const POLICY_SYNC_FAILED: (&str, &str) = ("policy.sync_failed", "WA9009W");
    pub const CERT_RENEW: (&str, &str) = ("cert.renew", "WA8002I");
    pub const LOCK_DELETE: (&str, &str) = ("lock.delete", "WA7001I");
    pub const SFTP_FAILURE: (&str, &str) = ("sftp", "WA6007W");
    pub const DB_SESSION_START: (&str, &str) = ("db.session.start", "WD1000I");
    pub const DB_SESSION_REJECTED: (&str, &str) = ("db.session.start", "WD1000W");
    pub const DB_SESSION_END: (&str, &str) = ("db.session.end", "WD1001I");
    pub const DB_QUERY: (&str, &str) = ("db.query", "WD1002I");
    pub const DB_SESSION_TERMINATED: (&str, &str) = ("db.session.terminated", "WD1003W");
    /// Every event type, for checking a search's `--type`.
    pub const EVENT_TYPES: &[&str] = &[
        "access.would_deny",
        "access_request.auto_approve",
        "access_request.create",
        "access_request.drop",
        "access_request.review",
        "api.denied",
        "audit.outage",
        "ca.rotate",
        "cert.renew",
        "cluster.backup",
        "cluster.restore",
        "config.delete",
        "config.update",
        "db.query",
        "db.session.end",
        "db.session.start",
        "db.session.terminated",
        "exec",
        "lock.create",
        "lock.delete",
        "mfa.add",
        "mfa.remove",
        "mfa.session",
        "node.delete",
        "node.join",
        "policy.sync",
        "policy.sync_failed",
        "port_forward",
        "rate_limited",
        "recording.failure",
        "recording.play",
        "recordings.outage",
        "role.create",
        "role.delete",
        "role.update",
        "session.end",
        "session.rejected",
        "session.start",
        "session.terminated",
        "sftp",
        "subsystem",
        "token.create",
        "token.delete",
        "user.create",
        "user.delete",
        "user.lockout",
        "user.login",
        "user.signup",
        "user.update",
        "webhook.failure",
        "x11_forward",
    ];
    /// What a proxy may report: sign-ins its jump host refused.
    pub const PROXY_EVENT_TYPES: &[&str] = &["session.rejected"];
    /// Event types a node may report.
    pub const NODE_EVENT_TYPES: &[&str] = &[
        "session.start",
        "session.end",
        "session.rejected",
        "exec",
        "subsystem",
        "port_forward",
        "x11_forward",
        "sftp",
        "session.terminated",
        "recording.failure",
        "access.would_deny",
        "db.session.start",
        "db.session.end",
        "db.query",
        "db.session.terminated",
    ];
}

/// Longest user, node, login, session id or source in a stored event.
pub const MAX_SHORT: usize = 256;
/// Longest message in a stored event.
pub const MAX_MESSAGE: usize = 4096;
/// Largest JSON of an event's extra fields.
pub const MAX_FIELDS: usize = 16 * 1024;

impl AuditEvent {
    /// A new event of `(type, code)`; the log sets index and hashes.
    pub fn new(kind: (&str, &str), cluster: &str, user: &str, message: impl Into<String>) -> Self {
        AuditEvent {
            id: uuid::Uuid::now_v7().to_string(),
            index: 0,
            time: OffsetDateTime::now_utc(),
            event_type: kind.0.to_string(),
            code: kind.1.to_string(),
            cluster: cluster.to_string(),
            user: user.to_string(),
            login: None,
            node: None,
            session_id: None,
            source_addr: None,
            success: kind.1.ends_with('I'),
            message: message.into(),
            fields: serde_json::Map::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The event cut to bounded size, whoever supplied its strings: short
    /// fields (user, node, ...) to [`MAX_SHORT`] characters, the message
    /// to [`MAX_MESSAGE`], and the extra fields, if their JSON is larger
    /// than [`MAX_FIELDS`], replaced by a note saying so.
    pub fn bounded(mut self) -> Self {
        fn cut(s: &mut String, max: usize) {
            if s.len() > max {
                let mut end = max;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push_str("...[truncated]");
            }
        }
        for s in [
            &mut self.id,
            &mut self.event_type,
            &mut self.code,
            &mut self.cluster,
            &mut self.user,
        ] {
            cut(s, MAX_SHORT);
        }
        for s in [
            &mut self.login,
            &mut self.node,
            &mut self.session_id,
            &mut self.source_addr,
        ]
        .into_iter()
        .flatten()
        {
            cut(s, MAX_SHORT);
        }
        cut(&mut self.message, MAX_MESSAGE);
        let size = serde_json::to_vec(&self.fields).map_or(usize::MAX, |v| v.len());
        if size > MAX_FIELDS {
            self.fields = serde_json::Map::new();
            self.fields
                .insert("truncated_fields_bytes".into(), size.into());
        }
        self
    }

    /// Adds an event-specific field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    pub fn source(mut self, addr: Option<String>) -> Self {
        self.source_addr = addr;
        self
    }

    /// The bytes covered by `hash`: every field but `hash` itself, as
    /// canonical JSON (struct order, sorted maps).
    pub fn hash_input(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.hash = String::new();
        serde_json::to_vec(&copy).expect("audit events always serialize")
    }
}

#[cfg(test)]
mod tests {
    /// Every (type, code) constant's type is in `EVENT_TYPES`.
    #[test]
    fn event_types_lists_every_type() {
        let source = include_str!("audit.rs");
        let mut rest = source;
        let mut found = 0;
        while let Some(at) = rest.find("(&str, &str) = (\"") {
            rest = &rest[at + 17..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(
                codes::EVENT_TYPES.contains(&name),
                "{name} missing from EVENT_TYPES"
            );
            found += 1;
        }
        assert!(found > 40, "{found}");
    }

    use super::*;

    #[test]
    fn events_are_bounded_whatever_their_input() {
        let big = "é".repeat(40_000);
        let e = AuditEvent::new(codes::LOGIN_FAILURE, "c", &big, big.clone())
            .with("blob", big.clone())
            .source(Some(big.clone()))
            .bounded();
        assert!(e.user.len() <= MAX_SHORT + 20 && e.user.ends_with("[truncated]"));
        assert!(e.message.len() <= MAX_MESSAGE + 20);
        assert!(e.source_addr.unwrap().len() <= MAX_SHORT + 20);
        assert!(e.fields.contains_key("truncated_fields_bytes"));
        assert!(serde_json::to_vec(&e.fields).unwrap().len() < 100);
        let small = AuditEvent::new(codes::LOGIN_FAILURE, "c", "bob", "m").with("k", "v");
        assert_eq!(small.clone().bounded(), small);
    }
}
