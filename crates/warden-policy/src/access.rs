//! The node-login decision, in one place for every caller: auth answers
//! `POST /v1/nodes/access` with it, and a node decides a login from its
//! pushed copy of the same state without a round trip. Both read the state
//! through [`AccessState`], so the two answers cannot drift apart.

use crate::locks::{lock_for, LockSubject};
use std::collections::BTreeMap;
use warden_types::api::AccessCheckResponse;
use warden_types::{
    AccessRequestSpec, Document, LockSpec, RequestedNode, RequireMfa, RoleSpec, UserSpec,
};

/// The resources a login decision reads.
pub trait AccessState {
    /// The user of that name, if one exists.
    fn user(&self, name: &str) -> Option<Document<UserSpec>>;
    /// The role of that name, if one exists.
    fn role(&self, name: &str) -> Option<Document<RoleSpec>>;
    /// Access requests (any state; only approved, unexpired ones count).
    fn requests(&self) -> Vec<Document<AccessRequestSpec>>;
    /// Locks (expired ones are skipped here).
    fn locks(&self) -> Vec<Document<LockSpec>>;
}

/// What a user holds right now, requests included.
#[derive(Clone, Debug, Default)]
pub struct Effective {
    /// Their own roles plus those of approved, unexpired role requests.
    pub roles: Vec<String>,
    /// Ids of the requests in force.
    pub requests: Vec<String>,
    /// When the earliest of them ends (Unix seconds).
    pub until: Option<i64>,
    /// Resource requests in force: a node and login each, with the roles
    /// (`search_as_roles`) that must still allow it.
    pub resources: Vec<(RequestedNode, Vec<String>)>,
}

/// Locks not yet expired at `now` (Unix seconds).
pub fn locks_in_force(locks: Vec<Document<LockSpec>>, now: i64) -> Vec<Document<LockSpec>> {
    locks
        .into_iter()
        .filter(|l| l.metadata.expires.is_none_or(|e| e.unix_timestamp() > now))
        .collect()
}

/// Whether a certificate carrying `user_id` belongs to `user` (and not to
/// an earlier, deleted user of the same name).
pub fn same_user(user: &Document<UserSpec>, user_id: Option<&str>) -> bool {
    user.spec.uid.is_empty() || user_id == Some(user.spec.uid.as_str())
}

/// A user's access in force at `now`: their roles plus what approved,
/// unexpired and unlocked requests add.
pub fn effective(
    user: &Document<UserSpec>,
    requests: &[Document<AccessRequestSpec>],
    locks: &[Document<LockSpec>],
    now: i64,
) -> Effective {
    let mut e = Effective {
        roles: user.spec.roles.clone(),
        ..Effective::default()
    };
    for r in requests {
        let locked = locks
            .iter()
            .any(|l| l.spec.target.request.as_deref() == Some(r.name()));
        let someone_else = !r.spec.user_uid.is_empty() && r.spec.user_uid != user.spec.uid;
        if r.spec.user != user.name() || someone_else || !r.spec.active(now) || locked {
            continue;
        }
        e.requests.push(r.name().to_string());
        e.until = Some(
            e.until
                .map_or(r.spec.access_until, |u| u.min(r.spec.access_until)),
        );
        for role in &r.spec.roles {
            if !e.roles.contains(role) {
                e.roles.push(role.clone());
            }
        }
        for node in &r.spec.resources {
            e.resources
                .push((node.clone(), r.spec.search_as_roles.clone()));
        }
    }
    e
}

/// One login asked of a node.
#[derive(Clone, Copy, Debug)]
pub struct NodeLogin<'a> {
    pub node_id: &'a str,
    /// The node's name (locks may name it); empty if unknown.
    pub node_name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub user: &'a str,
    /// The user id the certificate carries.
    pub user_id: Option<&'a str>,
    pub login: &'a str,
    /// The node a per-session MFA certificate names, if any.
    pub mfa_node: Option<&'a str>,
}

/// The user a certificate names (unless it names an earlier user of that
/// name), the locks in force and the user's effective roles (those of
/// approved requests count for locks too).
#[allow(clippy::type_complexity)]
fn subject(
    state: &impl AccessState,
    user: &str,
    user_id: Option<&str>,
    now: i64,
) -> Result<
    (
        Option<Document<UserSpec>>,
        Vec<Document<LockSpec>>,
        Effective,
    ),
    AccessCheckResponse,
> {
    let user_doc = state.user(user);
    if user_doc.as_ref().is_some_and(|u| !same_user(u, user_id)) {
        return Err(AccessCheckResponse::denied(format!(
            "this certificate was issued to an earlier user named {user}, since deleted; run 'warden login'"
        )));
    }
    let locks = locks_in_force(state.locks(), now);
    let effective = user_doc
        .as_ref()
        .map(|u| effective(u, &state.requests(), &locks, now))
        .unwrap_or_default();
    Ok((user_doc, locks, effective))
}

/// The roles that ask for MFA before each session, for a refusal's words.
fn session_mfa_roles(roles: &[Document<RoleSpec>]) -> String {
    roles
        .iter()
        .filter(|r| r.spec.options.require_mfa == RequireMfa::Session)
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn roles_named(state: &impl AccessState, names: &[String]) -> Vec<Document<RoleSpec>> {
    names.iter().filter_map(|n| state.role(n)).collect()
}

/// Decides whether `q.user` may log in as `q.login` on the node, with the
/// user's current roles, requests and the locks in force at `now`.
pub fn decide_node_login(state: &impl AccessState, q: &NodeLogin, now: i64) -> AccessCheckResponse {
    let (user_doc, locks, effective) = match subject(state, q.user, q.user_id, now) {
        Ok(x) => x,
        Err(refused) => return refused,
    };
    let subject = LockSubject {
        user: q.user,
        roles: &effective.roles,
        requests: &effective.requests,
        node: Some((q.node_id, q.node_name)),
        login: Some(q.login),
    };
    if let Some(lock) = lock_for(&locks, &subject) {
        return AccessCheckResponse::denied(crate::lock_message(lock));
    }
    let Some(u) = user_doc else {
        return AccessCheckResponse::denied(format!("user {} does not exist (deleted?)", q.user));
    };
    let mut roles = roles_named(state, &effective.roles);
    let mut decision = crate::check_node_access(&roles, &u.spec.traits, q.login, q.labels);
    if !decision.allowed {
        // A resource request grants this node and login only, while a role
        // it was asked through still allows it; the user's own deny rules
        // still win.
        for (node, search_as) in &effective.resources {
            if node.node != q.node_id || node.login != q.login {
                continue;
            }
            let mut with = roles.clone();
            with.extend(roles_named(state, search_as));
            let d = crate::check_node_access(&with, &u.spec.traits, q.login, q.labels);
            if d.allowed {
                decision = d;
                roles = with;
                break;
            }
        }
    }
    let options = crate::session_options(&roles);
    let mut reason = decision.summary();
    let mut allowed = decision.allowed;
    if allowed && options.session_mfa && q.mfa_node != Some(q.node_id) {
        allowed = false;
        reason = format!(
            "role {} requires a fresh MFA check for each session; connect with 'warden ssh' (it asks for a one-time code)",
            session_mfa_roles(&roles)
        );
    }
    AccessCheckResponse {
        allowed,
        reason,
        explanation: decision.reasons.clone(),
        permit_port_forwarding: options.permit_port_forwarding,
        permit_agent_forwarding: options.permit_agent_forwarding,
        permit_x11_forwarding: options.permit_x11_forwarding,
        roles: roles.iter().map(|r| r.name().to_string()).collect(),
        record_session: options.record_session,
        would_deny: match allowed {
            true => decision.would_deny.clone(),
            false => Vec::new(),
        },
    }
}

/// A database connection to decide.
#[derive(Clone, Copy, Debug)]
pub struct DbLogin<'a> {
    /// The database service (an agent) serving it: its id and name, which
    /// a lock's `node` may name.
    pub service: (&'a str, &'a str),
    /// The database's Warden name (a lock's `node` may name it too).
    pub database: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub user: &'a str,
    pub user_id: Option<&'a str>,
    pub db_user: &'a str,
    pub db_name: &'a str,
}

/// Decides a database connection as [`decide_node_login`] decides an SSH
/// login: the user's roles and active requests' roles, locks first
/// (user, role, request, the service or the database by name, or the
/// database user as a login), then `db_labels`/`db_users`/`db_names`
/// with deny winning.
pub fn decide_db_login(state: &impl AccessState, q: &DbLogin, now: i64) -> AccessCheckResponse {
    let (user_doc, locks, effective) = match subject(state, q.user, q.user_id, now) {
        Ok(x) => x,
        Err(refused) => return refused,
    };
    for target in [q.service, (q.database, q.database)] {
        let subject = LockSubject {
            user: q.user,
            roles: &effective.roles,
            requests: &effective.requests,
            node: Some(target),
            login: Some(q.db_user),
        };
        if let Some(lock) = lock_for(&locks, &subject) {
            return AccessCheckResponse::denied(crate::lock_message(lock));
        }
    }
    let Some(u) = user_doc else {
        return AccessCheckResponse::denied(format!("user {} does not exist (deleted?)", q.user));
    };
    let roles = roles_named(state, &effective.roles);
    let decision = crate::check_db_access(
        &roles,
        &u.spec.traits,
        crate::DbRequest {
            labels: q.labels,
            db_user: q.db_user,
            db_name: q.db_name,
        },
    );
    // A refusal says why role by role: which list left the user or name
    // out, or which deny rule took it away.
    let mut reason = match decision.allowed {
        true => decision.summary(),
        false => decision.reasons.join("; "),
    };
    let mut allowed = decision.allowed;
    // Per-session MFA is not asked for on database connections yet: a
    // role that requires it is not satisfied without it (fail closed).
    if allowed && crate::session_options(&roles).session_mfa {
        allowed = false;
        reason = format!(
            "role {} requires a fresh MFA check for each session, which database connections do not offer yet",
            session_mfa_roles(&roles)
        );
    }
    AccessCheckResponse {
        allowed,
        reason,
        explanation: decision.reasons.clone(),
        roles: roles.iter().map(|r| r.name().to_string()).collect(),
        would_deny: match allowed {
            true => decision.would_deny.clone(),
            false => Vec::new(),
        },
        ..AccessCheckResponse::denied(String::new())
    }
}

/// The state a node holds, as auth pushes it: a [`AccessState`] over
/// plain maps.
#[derive(Clone, Debug, Default)]
pub struct AccessSnapshot {
    pub users: BTreeMap<String, Document<UserSpec>>,
    pub roles: BTreeMap<String, Document<RoleSpec>>,
    pub requests: Vec<Document<AccessRequestSpec>>,
    pub locks: Vec<Document<LockSpec>>,
}

impl AccessState for AccessSnapshot {
    fn user(&self, name: &str) -> Option<Document<UserSpec>> {
        self.users.get(name).cloned()
    }
    fn role(&self, name: &str) -> Option<Document<RoleSpec>> {
        self.roles.get(name).cloned()
    }
    fn requests(&self) -> Vec<Document<AccessRequestSpec>> {
        self.requests.clone()
    }
    fn locks(&self) -> Vec<Document<LockSpec>> {
        self.locks.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use warden_types::resource::kind;
    use warden_types::{LockTarget, RequestState};

    const NOW: i64 = 1_800_000_000;

    fn role(name: &str, json: &str) -> Document<RoleSpec> {
        Document::new(
            kind::ROLE,
            name,
            serde_json::from_str(json).expect("role JSON"),
        )
    }

    fn user(name: &str, roles: &[&str]) -> Document<UserSpec> {
        Document::new(
            kind::USER,
            name,
            UserSpec {
                roles: roles.iter().map(|r| r.to_string()).collect(),
                uid: format!("uid-{name}"),
                ..Default::default()
            },
        )
    }

    fn state() -> AccessSnapshot {
        let mut s = AccessSnapshot::default();
        for r in [
            role(
                "dev",
                r#"{"allow":{"logins":["app"],"node_labels":{"env":["dev"]}}}"#,
            ),
            role(
                "prod",
                r#"{"allow":{"logins":["app"],"node_labels":{"env":["prod"]}}}"#,
            ),
            role(
                "mfa",
                r#"{"options":{"require_mfa":"session"},"allow":{"logins":["root"],"node_labels":{"*":["*"]}}}"#,
            ),
        ] {
            s.roles.insert(r.name().to_string(), r);
        }
        for u in [user("alice", &["dev"]), user("bob", &["mfa"])] {
            s.users.insert(u.name().to_string(), u);
        }
        s
    }

    fn login<'a>(
        labels: &'a BTreeMap<String, String>,
        user: &'a str,
        uid: &'a str,
        login: &'a str,
    ) -> NodeLogin<'a> {
        NodeLogin {
            node_id: "n1",
            node_name: "db-1",
            labels,
            user,
            user_id: Some(uid),
            login,
            mfa_node: None,
        }
    }

    fn labels(env: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("env".to_string(), env.to_string())])
    }

    fn request(user: &str, roles: &[&str], until: i64) -> Document<AccessRequestSpec> {
        Document::new(
            kind::ACCESS_REQUEST,
            format!("req-{user}"),
            AccessRequestSpec {
                user: user.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                state: RequestState::Approved,
                access_until: until,
                user_uid: format!("uid-{user}"),
                ..Default::default()
            },
        )
    }

    fn lock(f: impl FnOnce(&mut LockTarget), expires: Option<i64>) -> Document<LockSpec> {
        let mut target = LockTarget::default();
        f(&mut target);
        let mut d = Document::new(
            kind::LOCK,
            "l1",
            LockSpec {
                target,
                reason: "incident 7".into(),
                created_by: None,
            },
        );
        d.metadata.expires = expires.map(|e| OffsetDateTime::from_unix_timestamp(e).unwrap());
        d
    }

    fn db<'a>(
        labels: &'a BTreeMap<String, String>,
        user: &'a str,
        db_user: &'a str,
    ) -> DbLogin<'a> {
        DbLogin {
            service: ("svc-1", "db-agent"),
            database: "pg1",
            labels,
            user,
            user_id: Some("uid-alice"),
            db_user,
            db_name: "app",
        }
    }

    #[test]
    fn database_connections_follow_roles_requests_and_locks() {
        let mut s = state();
        s.roles.insert(
            "pg".into(),
            role(
                "pg",
                r#"{"allow":{"db_labels":{"env":["dev"]},"db_users":["reader"],"db_names":["app"]}}"#,
            ),
        );
        let dev = labels("dev");
        let prod = labels("prod");
        // Alice's roles give no database: refused, then granted by a request.
        assert!(!decide_db_login(&s, &db(&dev, "alice", "reader"), NOW).allowed);
        s.requests.push(request("alice", &["pg"], NOW + 60));
        let d = decide_db_login(&s, &db(&dev, "alice", "reader"), NOW);
        assert!(d.allowed, "{}", d.reason);
        assert!(d.roles.contains(&"pg".to_string()), "{:?}", d.roles);
        assert!(!decide_db_login(&s, &db(&dev, "alice", "reader"), NOW + 61).allowed);
        assert!(!decide_db_login(&s, &db(&prod, "alice", "reader"), NOW).allowed);
        assert!(!decide_db_login(&s, &db(&dev, "alice", "postgres"), NOW).allowed);
        // A lock on the database by name, on its service, or on the
        // database user ends it.
        for l in [
            lock(|t| t.node = Some("pg1".into()), None),
            lock(|t| t.node = Some("svc-1".into()), None),
            lock(|t| t.login = Some("reader".into()), None),
        ] {
            let mut locked = s.clone();
            locked.locks.push(l);
            let d = decide_db_login(&locked, &db(&dev, "alice", "reader"), NOW);
            assert!(!d.allowed && d.reason.contains("locked"), "{}", d.reason);
        }
        // A role that asks for MFA per session is not satisfied.
        let mut mfa = s.clone();
        mfa.roles.get_mut("pg").unwrap().spec.options.require_mfa = RequireMfa::Session;
        let d = decide_db_login(&mfa, &db(&dev, "alice", "reader"), NOW);
        assert!(!d.allowed && d.reason.contains("MFA"), "{}", d.reason);
        // Another user of the same name is not alice.
        let mut other = db(&dev, "alice", "reader");
        other.user_id = Some("uid-old");
        assert!(!decide_db_login(&s, &other, NOW).allowed);
    }

    #[test]
    fn roles_decide_by_labels() {
        let s = state();
        let dev = labels("dev");
        let prod = labels("prod");
        let d = decide_node_login(&s, &login(&dev, "alice", "uid-alice", "app"), NOW);
        assert!(d.allowed, "{}", d.reason);
        assert_eq!(d.roles, vec!["dev"]);
        let d = decide_node_login(&s, &login(&prod, "alice", "uid-alice", "app"), NOW);
        assert!(!d.allowed);
        let d = decide_node_login(&s, &login(&dev, "alice", "uid-alice", "root"), NOW);
        assert!(!d.allowed);
    }

    #[test]
    fn unknown_and_recreated_users_are_refused() {
        let s = state();
        let dev = labels("dev");
        let d = decide_node_login(&s, &login(&dev, "carol", "uid-carol", "app"), NOW);
        assert!(
            !d.allowed && d.reason.contains("does not exist"),
            "{}",
            d.reason
        );
        let d = decide_node_login(&s, &login(&dev, "alice", "uid-old", "app"), NOW);
        assert!(
            !d.allowed && d.reason.contains("earlier user"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn requests_count_while_active() {
        let mut s = state();
        let prod = labels("prod");
        s.requests.push(request("alice", &["prod"], NOW + 60));
        let q = login(&prod, "alice", "uid-alice", "app");
        assert!(decide_node_login(&s, &q, NOW).allowed);
        assert!(!decide_node_login(&s, &q, NOW + 61).allowed);
        // A request lock takes the request's roles away.
        s.locks
            .push(lock(|t| t.request = Some("req-alice".into()), None));
        assert!(!decide_node_login(&s, &q, NOW).allowed);
    }

    #[test]
    fn locks_bind_until_they_expire() {
        let mut s = state();
        let dev = labels("dev");
        let q = login(&dev, "alice", "uid-alice", "app");
        s.locks
            .push(lock(|t| t.node = Some("db-1".into()), Some(NOW + 10)));
        let d = decide_node_login(&s, &q, NOW);
        assert!(
            !d.allowed && d.reason.contains("incident 7"),
            "{}",
            d.reason
        );
        assert!(decide_node_login(&s, &q, NOW + 11).allowed);
        s.locks = vec![lock(|t| t.role = Some("dev".into()), None)];
        assert!(!decide_node_login(&s, &q, NOW).allowed);
    }

    #[test]
    fn session_mfa_needs_a_certificate_for_this_node() {
        let s = state();
        let dev = labels("dev");
        let mut q = login(&dev, "bob", "uid-bob", "root");
        let d = decide_node_login(&s, &q, NOW);
        assert!(!d.allowed && d.reason.contains("fresh MFA"), "{}", d.reason);
        q.mfa_node = Some("n2");
        assert!(!decide_node_login(&s, &q, NOW).allowed);
        q.mfa_node = Some("n1");
        assert!(decide_node_login(&s, &q, NOW).allowed);
    }
}
