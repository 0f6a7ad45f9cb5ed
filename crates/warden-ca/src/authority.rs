//! The stored form of a certificate authority.

use crate::keystore::{KeyHandle, KeyStore};
use crate::{ssh, tls, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaType {
    /// Signs OpenSSH user certificates.
    User,
    /// Signs OpenSSH host certificates.
    Host,
    /// Signs X.509 certificates for the API and tunnels.
    Tls,
    /// Signs the X.509 client certificates that databases trust (and, on
    /// an admin's request, databases' server certificates).
    Db,
}

impl CaType {
    pub const ALL: [CaType; 4] = [CaType::User, CaType::Host, CaType::Tls, CaType::Db];

    pub fn as_str(self) -> &'static str {
        match self {
            CaType::User => "user",
            CaType::Host => "host",
            CaType::Tls => "tls",
            CaType::Db => "db",
        }
    }
}

/// One CA key with its public forms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaKey {
    pub handle: KeyHandle,
    /// `ssh-ed25519 AAAA...` for the SSH CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
    /// Self-signed CA certificate for the tls CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_pem: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

/// A CA: the keys that sign now and every key that is still trusted. Several
/// keys may be trusted at once, so keys can rotate without an outage; and
/// several may sign at once, one per auth server whose HSM holds its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertAuthority {
    pub kind: CaType,
    pub cluster: String,
    /// Keys that sign. An auth server signs with the first one it can
    /// load (preferring one in its own HSM); all are trusted.
    pub active: Vec<CaKey>,
    /// Trusted, not signing yet: a rotation's new keys, or those of an
    /// auth server joining with its own HSM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<CaKey>,
    /// Keys still trusted but no longer signing (public parts only).
    #[serde(default)]
    pub trusted: Vec<CaKey>,
    /// tls only: each signing key's certificate for the others' keys, so a
    /// client that pinned (or saved) one auth server's key accepts a
    /// certificate issued with another's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cross: Vec<CrossCert>,
    /// A rotation (or a join) under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

/// A CA certificate for `subject`'s key issued with `issuer`'s (both
/// [`crate::KeyHandle::public_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossCert {
    pub subject: String,
    pub issuer: String,
    pub pem: String,
}

/// The stored form, which may predate `pending`: a rotation then kept its
/// new key second in `active` (init) or the old one there (switched).
#[derive(Deserialize)]
struct Stored {
    kind: CaType,
    cluster: String,
    active: Vec<CaKey>,
    #[serde(default)]
    pending: Vec<CaKey>,
    #[serde(default)]
    trusted: Vec<CaKey>,
    #[serde(default)]
    cross: Vec<CrossCert>,
    #[serde(default)]
    rotation: Option<Rotation>,
}

impl<'de> Deserialize<'de> for CertAuthority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut s = Stored::deserialize(d)?;
        let old_form = s.pending.is_empty() && s.trusted.is_empty() && s.active.len() > 1;
        match s.rotation.as_ref().map(|r| r.phase) {
            Some(Phase::Init) if old_form => s.pending = s.active.split_off(1),
            Some(Phase::Switched) if old_form => s.trusted = s.active.split_off(1),
            _ => {}
        }
        Ok(CertAuthority {
            kind: s.kind,
            cluster: s.cluster,
            active: s.active,
            pending: s.pending,
            trusted: s.trusted,
            cross: s.cross,
            rotation: s.rotation,
        })
    }
}

/// Where a rotation stands. It goes `init` (a new key is trusted
/// everywhere; the old one still signs), then `switched` (the new key
/// signs; the old one is still trusted, so certificates it signed keep
/// working), then the old key is dropped and the rotation ends. Until the
/// drop it can be rolled back. A join (an auth server adding its own HSM
/// key) has only `init`: its switch adds the key to the signing ones and
/// ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Init,
    Switched,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::Switched => "switched",
        }
    }
}

/// A rotation under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub phase: Phase,
    /// Unix seconds of the last phase change.
    pub since: i64,
    /// Automatic rotations: how long the old key stays trusted after the
    /// switch (seconds). `None`: an operator moves every phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<i64>,
    /// A join: the keys that sign now keep signing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
}

/// What an automatic rotation waits for before its next step: at least
/// `after` seconds in its phase, and then every online node and proxy
/// confirming it holds the new trust. With `force`, nodes that have not
/// confirmed [`Wait::NODES_AT_MOST`] seconds later are passed over; without,
/// the rotation waits for them (or an operator), because moving on would
/// cut them off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    pub after: i64,
    pub nodes: bool,
    pub force: bool,
}

impl Wait {
    /// Proxies re-read the CAs every 5 s: no step comes sooner than this.
    pub const AT_LEAST: i64 = 10;
    /// Nodes that have not confirmed by then are named and passed over.
    pub const NODES_AT_MOST: i64 = 300;

    /// Whether the step is due `waited` seconds into the phase, given
    /// whether every online node has confirmed: `None` not yet,
    /// `Some(false)` due although some nodes lag, `Some(true)` due.
    pub fn due(self, waited: i64, nodes_confirmed: bool) -> Option<bool> {
        if waited < self.after {
            return None;
        }
        if !self.nodes || nodes_confirmed {
            return Some(true);
        }
        (self.force && waited >= self.after + Self::NODES_AT_MOST).then_some(false)
    }
}

impl CaType {
    /// How an automatic rotation of this CA paces itself; `grace` is the
    /// operator's (by default the cluster's default session TTL).
    ///
    /// - user: nodes and proxies must trust the new key before it signs
    ///   (quick; a node late past 5 minutes only refuses new certificates
    ///   until it catches up); certificates the old key signed run out
    ///   over `grace` before it is dropped.
    /// - host: clients learn a new host CA only when they log in or renew,
    ///   so `grace` comes before the switch; the drop waits for every node
    ///   and proxy to hold host certificates from the new key.
    /// - tls: both: clients must hold the new CA before servers present
    ///   certificates from it, and certificates from the old key must run
    ///   out before it is dropped; every node and proxy must confirm each
    ///   step, since one that missed it could no longer reach auth.
    pub fn wait(self, phase: Phase, grace: i64) -> Wait {
        let grace = grace.max(Wait::AT_LEAST);
        let (after, nodes, force) = match (self, phase) {
            (CaType::User, Phase::Init) => (Wait::AT_LEAST, true, true),
            (CaType::User, Phase::Switched) => (grace, false, false),
            (CaType::Host, Phase::Init) => (grace, false, false),
            (CaType::Host, Phase::Switched) => (Wait::AT_LEAST, true, false),
            (CaType::Tls, _) => (grace, true, false),
            // Databases are configured by hand to trust the new key (from
            // `warden admin db ca export`): `grace` for that before the
            // switch, and for the old key's certificates (minutes long)
            // to run out after it. No node confirms anything.
            (CaType::Db, _) => (grace, false, false),
        };
        Wait {
            after,
            nodes,
            force,
        }
    }
}

/// Why a rotation step cannot be taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error(
        "a rotation is already under way (phase {0}); move it on with --phase, or roll it back"
    )]
    UnderWay(&'static str),
    #[error("no rotation is under way; start one with 'warden admin ca rotate'")]
    NotUnderWay,
    #[error("the tls CA cannot roll back after the switch: every node and proxy now holds a certificate from the new key; finish with --phase drop (and rotate again if need be)")]
    TlsSwitched,
    #[error("the rotation is in phase {have}; {step} needs phase {need}")]
    WrongPhase {
        step: &'static str,
        have: &'static str,
        need: &'static str,
    },
}

impl CertAuthority {
    /// A new CA with one fresh key.
    pub fn generate(kind: CaType, cluster: &str, store: &dyn KeyStore) -> Result<Self> {
        let handle = store.generate()?;
        let signer = store.load(&handle)?;
        let mut key = CaKey {
            handle,
            ssh_public_key: None,
            tls_cert_pem: None,
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        match kind {
            CaType::User | CaType::Host => {
                key.ssh_public_key = Some(ssh::public_key_line(
                    &*signer,
                    &format!("{cluster} {} CA", kind.as_str()),
                )?)
            }
            CaType::Tls => key.tls_cert_pem = Some(tls::create_ca_cert(&*signer, cluster)?),
            CaType::Db => {
                key.tls_cert_pem = Some(tls::create_ca_cert(&*signer, &format!("{cluster} db"))?)
            }
        }
        Ok(CertAuthority {
            kind,
            cluster: cluster.to_string(),
            active: vec![key],
            pending: Vec::new(),
            trusted: Vec::new(),
            cross: Vec::new(),
            rotation: None,
        })
    }

    /// A fresh key with this CA's public forms.
    pub fn new_key(&self, store: &dyn KeyStore) -> Result<CaKey> {
        Ok(Self::generate(self.kind, &self.cluster, store)?
            .active
            .remove(0))
    }

    fn phase(&self, step: &'static str, need: Phase) -> std::result::Result<(), RotationError> {
        match &self.rotation {
            None => Err(RotationError::NotUnderWay),
            Some(r) if r.phase != need => Err(RotationError::WrongPhase {
                step,
                have: r.phase.as_str(),
                need: need.as_str(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Starts a rotation: `key` is trusted from now on; the signing keys
    /// do not change yet.
    pub fn rotate_init(
        &mut self,
        key: CaKey,
        now: i64,
        grace: Option<i64>,
    ) -> std::result::Result<(), RotationError> {
        if let Some(r) = &self.rotation {
            return Err(RotationError::UnderWay(r.phase.as_str()));
        }
        self.pending.push(key);
        self.rotation = Some(Rotation {
            phase: Phase::Init,
            since: now,
            grace,
            join: false,
        });
        Ok(())
    }

    /// Adds an auth server's own key (from its HSM) as pending: to the
    /// rotation in `init` if there is one, else in a join of its own, whose
    /// switch makes it sign beside the keys that sign now. Returns whether
    /// a join was started.
    pub fn join(
        &mut self,
        key: CaKey,
        now: i64,
        grace: Option<i64>,
    ) -> std::result::Result<bool, RotationError> {
        match &self.rotation {
            Some(r) if r.phase == Phase::Init => {
                self.pending.push(key);
                Ok(false)
            }
            Some(r) => Err(RotationError::UnderWay(r.phase.as_str())),
            None => {
                self.rotate_init(key, now, grace)?;
                if let Some(r) = self.rotation.as_mut() {
                    r.join = true;
                }
                Ok(true)
            }
        }
    }

    /// The new keys sign; the old ones stay trusted. A join ends here:
    /// its keys sign beside the others.
    pub fn rotate_switch(&mut self, now: i64) -> std::result::Result<(), RotationError> {
        self.phase("switch", Phase::Init)?;
        let Some(r) = self.rotation.as_mut() else {
            return Err(RotationError::NotUnderWay);
        };
        if r.join {
            self.active.append(&mut self.pending);
            self.rotation = None;
            return Ok(());
        }
        r.phase = Phase::Switched;
        r.since = now;
        self.trusted.append(&mut self.active);
        self.active = std::mem::take(&mut self.pending);
        Ok(())
    }

    /// Ends the rotation: keys that no longer sign are no longer trusted,
    /// so what they signed is refused.
    pub fn rotate_drop(&mut self) -> std::result::Result<(), RotationError> {
        self.phase("drop", Phase::Switched)?;
        self.trusted.clear();
        self.rotation = None;
        self.prune_cross();
        Ok(())
    }

    /// Undoes a rotation before its drop: the old keys sign again and the
    /// new ones are forgotten. Not for the tls CA once switched: nodes and
    /// proxies then hold certificates from the new keys, and forgetting
    /// them would leave them unable to reach auth.
    pub fn rotate_rollback(&mut self) -> std::result::Result<(), RotationError> {
        let Some(r) = &self.rotation else {
            return Err(RotationError::NotUnderWay);
        };
        if self.kind == CaType::Tls && r.phase == Phase::Switched {
            return Err(RotationError::TlsSwitched);
        }
        match r.phase {
            Phase::Init => self.pending.clear(),
            Phase::Switched => self.active = std::mem::take(&mut self.trusted),
        }
        self.rotation = None;
        self.prune_cross();
        Ok(())
    }

    /// Forgets cross certificates for or from keys no longer trusted.
    fn prune_cross(&mut self) {
        let known: std::collections::HashSet<String> =
            self.all().map(|k| k.handle.public_key.clone()).collect();
        self.cross
            .retain(|c| known.contains(&c.subject) && known.contains(&c.issuer));
    }

    /// The first key that signs (with several, each auth server picks its
    /// own: [`CertAuthority::own_key`]).
    pub fn signing_key(&self) -> Option<&CaKey> {
        self.active.first()
    }

    /// Every trusted key: signing, pending, retiring.
    pub fn all(&self) -> impl Iterator<Item = &CaKey> {
        self.active
            .iter()
            .chain(self.pending.iter())
            .chain(self.trusted.iter())
    }

    /// Which of `keys` an auth server uses: the first it can load,
    /// preferring one in its own HSM (`has_hsm`) over a shared software
    /// key.
    pub fn own_key(
        keys: &[CaKey],
        has_hsm: bool,
        loadable: impl Fn(&CaKey) -> bool,
    ) -> Option<&CaKey> {
        let in_hsm = |k: &&CaKey| k.handle.store == crate::pkcs11::STORE;
        let usable = || keys.iter().filter(|k| loadable(k));
        has_hsm
            .then(|| usable().find(in_hsm))
            .flatten()
            .or_else(|| usable().next())
    }

    /// Whether an auth server with an HSM should add a key of its own: in
    /// a rotation's `init` when no pending key is in its HSM (or shared
    /// with it); otherwise when it can load none of the signing keys (it
    /// joins, or joins the join under way).
    pub fn wants_own_key(&self, loadable: impl Fn(&CaKey) -> bool) -> bool {
        let in_my_hsm = |k: &CaKey| k.handle.store == crate::pkcs11::STORE && loadable(k);
        let signs = self.active.iter().any(&loadable);
        match &self.rotation {
            Some(r) if r.phase == Phase::Switched => false,
            Some(r) if !r.join => !self.pending.iter().any(in_my_hsm),
            Some(_) => !signs && !self.pending.iter().any(&loadable),
            None => !signs,
        }
    }

    /// This CA with `key` first among the signing keys: what an auth
    /// server that signs with `key` hands out, so the issuer's certificate
    /// leads the CA list.
    pub fn led_by(mut self, key: &CaKey) -> Self {
        if let Some(i) = self.active.iter().position(|k| k == key) {
            let k = self.active.remove(i);
            self.active.insert(0, k);
        } else if let Some(i) = self.pending.iter().position(|k| k == key) {
            // A joining auth server's own listener, before its key signs.
            let k = self.pending.remove(i);
            self.active.insert(0, k);
        }
        self
    }

    /// tls: keys (other than `mine`) that `mine` has not certified, or
    /// whose certificate from it is half way through its (short) life at
    /// `now`.
    pub fn uncertified<'a>(
        &'a self,
        mine: &'a CaKey,
        now: i64,
    ) -> impl Iterator<Item = &'a CaKey> + 'a {
        self.active
            .iter()
            .chain(self.pending.iter())
            .filter(move |k| {
                k.handle.public_key != mine.handle.public_key
                    && !self.cross.iter().any(|c| {
                        c.subject == k.handle.public_key
                            && c.issuer == mine.handle.public_key
                            && !crate::tls::renewal_due(&c.pem, now)
                    })
            })
    }

    /// Records `mine`'s certificate for `subject`, replacing an older one.
    pub fn certify(&mut self, cert: CrossCert) {
        self.cross
            .retain(|c| !(c.subject == cert.subject && c.issuer == cert.issuer));
        self.cross.push(cert);
    }

    /// Every trusted OpenSSH public key line.
    pub fn ssh_public_keys(&self) -> Vec<String> {
        self.all()
            .filter_map(|k| k.ssh_public_key.clone())
            .collect()
    }

    /// Whether `sig` over `msg` is from any key this CA trusts.
    pub fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.all().any(|k| {
            k.handle
                .public_bytes()
                .is_ok_and(|public| k.handle.alg.verify(&public, msg, sig))
        })
    }

    /// Every trusted CA certificate (PEM), the signing keys' first, then
    /// the cross certificates between keys.
    pub fn tls_cert_pems(&self) -> Vec<String> {
        self.all()
            .filter_map(|k| k.tls_cert_pem.clone())
            .chain(self.cross.iter().map(|c| c.pem.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SoftwareKeyStore;

    fn publics(a: &CertAuthority) -> Vec<String> {
        a.ssh_public_keys()
    }

    #[test]
    fn automatic_rotations_pace_each_ca_by_what_its_clients_need() {
        let g = 3600;
        let w = |ca: CaType, p| ca.wait(p, g);
        // User: quick to switch (nodes only), grace before the drop.
        assert_eq!(w(CaType::User, Phase::Init).due(9, true), None);
        assert_eq!(w(CaType::User, Phase::Init).due(10, false), None);
        assert_eq!(w(CaType::User, Phase::Init).due(10, true), Some(true));
        assert_eq!(w(CaType::User, Phase::Init).due(310, false), Some(false));
        assert_eq!(w(CaType::User, Phase::Switched).due(g - 1, true), None);
        assert_eq!(w(CaType::User, Phase::Switched).due(g, false), Some(true));
        // Host: grace before the switch, quick to drop.
        assert_eq!(w(CaType::Host, Phase::Init).due(g - 1, true), None);
        assert_eq!(w(CaType::Host, Phase::Init).due(g, false), Some(true));
        assert_eq!(w(CaType::Host, Phase::Switched).due(10, true), Some(true));
        assert_eq!(w(CaType::Host, Phase::Switched).due(10, false), None);
        // Never forced past nodes that would be cut off.
        assert_eq!(w(CaType::Host, Phase::Switched).due(100_000, false), None);
        assert_eq!(w(CaType::Tls, Phase::Init).due(100_000, false), None);
        assert_eq!(w(CaType::Tls, Phase::Switched).due(100_000, false), None);
        // tls: grace on both sides, nodes confirming each time.
        for p in [Phase::Init, Phase::Switched] {
            assert_eq!(w(CaType::Tls, p).due(g - 1, true), None);
            assert_eq!(w(CaType::Tls, p).due(g, false), None);
            assert_eq!(w(CaType::Tls, p).due(g, true), Some(true));
        }
        // A grace shorter than proxies' refresh is stretched to it.
        assert_eq!(CaType::Tls.wait(Phase::Init, 1).after, Wait::AT_LEAST);
    }

    #[test]
    fn a_rotation_goes_init_switch_drop_and_rolls_back_before_the_drop() {
        let kek = std::env::temp_dir().join(format!("warden-rot-kek-{}", std::process::id()));
        let store = SoftwareKeyStore::open_or_create(&kek).unwrap();
        let mut a = CertAuthority::generate(CaType::User, "c1", &store).unwrap();
        let old = a.signing_key().unwrap().clone();
        assert_eq!(a.rotate_switch(1), Err(RotationError::NotUnderWay));

        let new = a.new_key(&store).unwrap();
        a.rotate_init(new.clone(), 10, Some(3600)).unwrap();
        assert_eq!(a.signing_key(), Some(&old), "init does not switch");
        assert_eq!(publics(&a).len(), 2, "both trusted");
        assert!(matches!(
            a.rotate_init(new.clone(), 11, None),
            Err(RotationError::UnderWay("init"))
        ));
        assert!(matches!(
            a.rotate_drop(),
            Err(RotationError::WrongPhase { .. })
        ));

        a.rotate_switch(20).unwrap();
        assert_eq!(a.signing_key(), Some(&new));
        assert_eq!(publics(&a).len(), 2, "the old key is still trusted");
        assert_eq!(a.rotation.as_ref().unwrap().since, 20);

        let mut rolled = a.clone();
        rolled.rotate_rollback().unwrap();
        assert_eq!(rolled.signing_key(), Some(&old));
        assert_eq!(publics(&rolled).len(), 1);
        assert!(rolled.rotation.is_none());

        a.rotate_drop().unwrap();
        assert_eq!(a.signing_key(), Some(&new));
        assert_eq!(publics(&a), vec![new.ssh_public_key.clone().unwrap()]);
        assert!(a.rotation.is_none());
        assert_eq!(a.rotate_rollback(), Err(RotationError::NotUnderWay));

        // The tls CA does not roll back once switched.
        let mut t = CertAuthority::generate(CaType::Tls, "c1", &store).unwrap();
        t.rotate_init(t.new_key(&store).unwrap(), 1, None).unwrap();
        t.rotate_switch(2).unwrap();
        assert_eq!(t.rotate_rollback(), Err(RotationError::TlsSwitched));
        // Rolled back from init: the new key is simply forgotten.
        let mut b = CertAuthority::generate(CaType::Host, "c1", &store).unwrap();
        let before = b.clone();
        b.rotate_init(b.new_key(&store).unwrap(), 1, None).unwrap();
        b.rotate_rollback().unwrap();
        assert_eq!(b, before);
        let _ = std::fs::remove_file(kek);
    }

    #[test]
    fn an_auth_server_joins_with_its_own_key_and_signs_beside_the_others() {
        let kek = std::env::temp_dir().join(format!("warden-join-kek-{}", std::process::id()));
        let store = SoftwareKeyStore::open_or_create(&kek).unwrap();
        let mut a = CertAuthority::generate(CaType::Tls, "c1", &store).unwrap();
        let first = a.signing_key().unwrap().clone();
        let second = a.new_key(&store).unwrap();
        // The second server loads only its own key.
        let theirs = |k: &CaKey| k == &second;
        assert!(a.wants_own_key(theirs));
        assert!(!a.wants_own_key(|k: &CaKey| k == &first));
        assert!(
            a.join(second.clone(), 5, Some(60)).unwrap(),
            "a join starts"
        );
        assert!(!a.wants_own_key(theirs), "its key is pending");
        assert!(
            !a.wants_own_key(|k: &CaKey| k == &first),
            "the first signs and keeps out of the join"
        );
        assert_eq!(a.tls_cert_pems().len(), 2, "pending is trusted");
        assert_eq!(CertAuthority::own_key(&a.active, false, theirs), None);
        a.rotate_switch(6).unwrap();
        assert!(a.rotation.is_none(), "a join ends at its switch");
        assert_eq!(a.active, vec![first.clone(), second.clone()]);
        assert_eq!(
            CertAuthority::own_key(&a.active, false, theirs),
            Some(&second)
        );
        assert_eq!(a.clone().led_by(&second).active[0], second);
        // Cross certificates until a key goes.
        let mut b = a.clone();
        let signer = store.load(&first.handle).unwrap();
        let pem = crate::tls::cross_certify(
            &*signer,
            first.tls_cert_pem.as_deref().unwrap(),
            "c1",
            second.handle.alg,
            &second.handle.public_bytes().unwrap(),
        )
        .unwrap();
        let cross = CrossCert {
            subject: second.handle.public_key.clone(),
            issuer: first.handle.public_key.clone(),
            pem,
        };
        b.certify(cross.clone());
        b.certify(cross);
        assert_eq!(b.cross.len(), 1, "a newer one replaces the older");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(b.uncertified(&first, now).count(), 0);
        assert_eq!(b.uncertified(&second, now).count(), 1);
        assert_eq!(
            b.uncertified(&first, now + 13 * 3600).count(),
            1,
            "renewed at half its day"
        );
        assert_eq!(b.tls_cert_pems().len(), 3);
        b.rotate_init(b.new_key(&store).unwrap(), 7, None).unwrap();
        b.rotate_switch(8).unwrap();
        b.rotate_drop().unwrap();
        assert!(b.cross.is_empty(), "pruned with the keys");
        // A rotation in init takes each server's key into its pending set.
        let mut c = a.clone();
        c.rotate_init(c.new_key(&store).unwrap(), 9, None).unwrap();
        let late = c.new_key(&store).unwrap();
        assert!(!c.join(late.clone(), 10, None).unwrap());
        assert_eq!(c.pending.len(), 2);
        c.rotate_switch(11).unwrap();
        assert!(c.active.contains(&late) && c.trusted.contains(&second));
        assert!(matches!(
            c.join(c.new_key(&store).unwrap(), 12, None),
            Err(RotationError::UnderWay("switched"))
        ));
        let _ = std::fs::remove_file(kek);
    }

    #[test]
    fn a_rotation_stored_before_pending_keys_reads_the_same() {
        let kek = std::env::temp_dir().join(format!("warden-old-kek-{}", std::process::id()));
        let store = SoftwareKeyStore::open_or_create(&kek).unwrap();
        let mut a = CertAuthority::generate(CaType::User, "c1", &store).unwrap();
        let (old, new) = (a.active[0].clone(), a.new_key(&store).unwrap());
        let stored = |phase: &str, first: &CaKey, second: &CaKey| {
            serde_json::json!({
                "kind": "user", "cluster": "c1", "active": [first, second],
                "rotation": {"phase": phase, "since": 1}
            })
        };
        let init: CertAuthority = serde_json::from_value(stored("init", &old, &new)).unwrap();
        a.rotate_init(new.clone(), 1, None).unwrap();
        assert_eq!(init, a);
        let switched: CertAuthority =
            serde_json::from_value(stored("switched", &new, &old)).unwrap();
        a.rotate_switch(1).unwrap();
        assert_eq!(switched, a);
        let _ = std::fs::remove_file(kek);
    }
}
