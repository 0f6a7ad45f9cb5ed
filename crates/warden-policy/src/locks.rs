//! Which lock, if any, binds a caller. Locks bind everything their target
//! can do: API calls, logins, renewals and sessions alike.

use warden_types::{Document, LockSpec};

/// Who is acting, as far as locks are concerned.
#[derive(Clone, Copy, Debug, Default)]
pub struct LockSubject<'a> {
    pub user: &'a str,
    /// Roles in force: the user's own and those gained through requests.
    pub roles: &'a [String],
    /// Access requests the caller's certificate or grant carries.
    pub requests: &'a [String],
    /// The node acted on (id, name), if any.
    pub node: Option<(&'a str, &'a str)>,
    /// The login asked for, if any.
    pub login: Option<&'a str>,
}

/// The first of `locks` that binds `subject`: a user, role, node or login
/// lock whose every set field matches, or a lock on one of the subject's
/// access requests. Expiry is the caller's business (pass locks in force).
pub fn lock_for<'l>(
    locks: &'l [Document<LockSpec>],
    subject: &LockSubject,
) -> Option<&'l Document<LockSpec>> {
    locks.iter().find(|l| {
        let t = &l.spec.target;
        match &t.request {
            Some(id) => subject.requests.iter().any(|r| r == id),
            None => t.matches(subject.user, subject.roles, subject.node, subject.login),
        }
    })
}

/// How a lock reads in refusals and in a terminated session's notice.
pub fn lock_message(l: &Document<LockSpec>) -> String {
    format!("locked ({}): {}", l.spec.target.describe(), l.spec.reason)
}

/// The first lock on the node itself (a lock naming only `node`, by id or
/// name): such a node may no longer join, heartbeat or open sessions.
pub fn node_lock<'l>(
    locks: &'l [Document<LockSpec>],
    node_id: &str,
    node_name: &str,
) -> Option<&'l Document<LockSpec>> {
    locks.iter().find(|l| {
        let t = &l.spec.target;
        t.user.is_none()
            && t.role.is_none()
            && t.login.is_none()
            && t.request.is_none()
            && t.node
                .as_deref()
                .is_some_and(|n| n == node_id || (!node_name.is_empty() && n == node_name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_types::resource::kind;
    use warden_types::LockTarget;

    fn lock(f: impl FnOnce(&mut LockTarget)) -> Document<LockSpec> {
        let mut target = LockTarget::default();
        f(&mut target);
        Document::new(
            kind::LOCK,
            "l",
            LockSpec {
                target,
                reason: "why".into(),
                created_by: None,
            },
        )
    }

    fn subject<'a>(user: &'a str, roles: &'a [String], requests: &'a [String]) -> LockSubject<'a> {
        LockSubject {
            user,
            roles,
            requests,
            ..Default::default()
        }
    }

    #[test]
    fn user_role_and_request_locks_bind_api_callers() {
        let roles = vec!["access".to_string(), "dba".to_string()];
        let requests = vec!["r1".to_string()];
        let s = subject("bob", &roles, &requests);
        let user = [lock(|t| t.user = Some("bob".into()))];
        assert!(lock_for(&user, &s).is_some());
        assert!(lock_for(&user, &subject("alice", &roles, &requests)).is_none());
        // A role gained through a request counts like an own role.
        let role = [lock(|t| t.role = Some("dba".into()))];
        assert!(lock_for(&role, &s).is_some());
        assert!(lock_for(&role, &subject("bob", &roles[..1], &requests)).is_none());
        let request = [lock(|t| t.request = Some("r1".into()))];
        assert!(lock_for(&request, &s).is_some());
        assert!(lock_for(&request, &subject("bob", &roles, &[])).is_none());
    }

    #[test]
    fn narrower_locks_do_not_bind_the_api() {
        let roles = vec!["access".to_string()];
        let s = subject("bob", &roles, &[]);
        // A lock on bob's access to one node or one login is about
        // sessions, not API calls.
        let on_node = [lock(|t| {
            t.user = Some("bob".into());
            t.node = Some("db-1".into());
        })];
        assert!(lock_for(&on_node, &s).is_none());
        let on_login = [lock(|t| t.login = Some("root".into()))];
        assert!(lock_for(&on_login, &s).is_none());
        let with_node = LockSubject {
            node: Some(("id-1", "db-1")),
            ..s
        };
        assert!(lock_for(&on_node, &with_node).is_some());
        assert!(
            lock_for(&[lock(|_| {})], &s).is_none(),
            "empty lock binds nobody"
        );
    }

    #[test]
    fn node_locks_by_id_or_name_only() {
        let by_name = [lock(|t| t.node = Some("db-1".into()))];
        assert!(node_lock(&by_name, "id-1", "db-1").is_some());
        assert!(node_lock(&by_name, "db-1", "").is_some());
        assert!(node_lock(&by_name, "id-2", "db-2").is_none());
        let user_on_node = [lock(|t| {
            t.node = Some("db-1".into());
            t.user = Some("bob".into());
        })];
        assert!(node_lock(&user_on_node, "id-1", "db-1").is_none());
    }
}
