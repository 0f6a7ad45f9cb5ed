//! Local profiles: `~/.warden` (or `$WARDEN_HOME`) holds one profile per
//! proxy, with the user's key (0600) and certificates.
//!
//! ```text
//! ~/.warden/current                        name of the active profile
//! ~/.warden/profiles/<name>.json           proxy, user, cluster, CA pin
//! ~/.warden/keys/<name>/<user>             private key (OpenSSH, 0600)
//! ~/.warden/keys/<name>/<user>-cert.pub    OpenSSH user certificate
//! ~/.warden/keys/<name>/<user>-x509.pem    X.509 client certificate
//! ~/.warden/keys/<name>/cas.pem            the cluster's tls CA
//! ~/.warden/keys/<name>/known_hosts        @cert-authority line for nodes
//! ~/.warden/known_clusters/<name>.json     CA and pin of clusters verified
//! ```

use crate::tls::{ClientCert, Trust};
use crate::{ClientError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use warden_ca::keystore::{write_file_atomic, write_private_file};
use warden_ca::ClientKey;
use warden_types::api::LoginResponse;

/// One cluster login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub proxy: String,
    pub user: String,
    pub cluster: String,
    pub ca_pin: String,
    /// The cluster's other proxies, learned at login: where the client
    /// goes when `proxy` does not answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

impl Profile {
    /// `proxy`, then the fallbacks, as one address list (`a,b,c`).
    pub fn proxies(&self) -> String {
        std::iter::once(self.proxy.as_str())
            .chain(self.fallbacks.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A cluster whose CA was verified by pin.
#[derive(Serialize, Deserialize)]
struct KnownCluster {
    pin: String,
    ca_pems: Vec<String>,
}

/// The directory of profiles.
#[derive(Clone, Debug)]
pub struct ProfileStore {
    home: PathBuf,
}

/// A profile name for a proxy address: safe as a file name.
pub fn profile_name(proxy: &str) -> String {
    proxy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn local(e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(e.to_string())
}

impl ProfileStore {
    pub fn new(home: PathBuf) -> Self {
        ProfileStore { home }
    }

    /// `$WARDEN_HOME`, else `~/.warden`.
    pub fn default_home() -> Result<PathBuf> {
        if let Some(h) = std::env::var_os("WARDEN_HOME") {
            return Ok(PathBuf::from(h));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| ClientError::Local("HOME is not set; set WARDEN_HOME".into()))?;
        Ok(PathBuf::from(home).join(".warden"))
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn key_dir(&self, p: &Profile) -> PathBuf {
        self.home.join("keys").join(&p.name)
    }
    pub fn private_key_path(&self, p: &Profile) -> PathBuf {
        self.key_dir(p).join(&p.user)
    }
    pub fn ssh_cert_path(&self, p: &Profile) -> PathBuf {
        self.key_dir(p).join(format!("{}-cert.pub", p.user))
    }
    pub fn tls_cert_path(&self, p: &Profile) -> PathBuf {
        self.key_dir(p).join(format!("{}-x509.pem", p.user))
    }
    pub fn ca_path(&self, p: &Profile) -> PathBuf {
        self.key_dir(p).join("cas.pem")
    }
    pub fn known_hosts_path(&self, p: &Profile) -> PathBuf {
        self.key_dir(p).join("known_hosts")
    }
    fn profile_path(&self, name: &str) -> PathBuf {
        self.home.join("profiles").join(format!("{name}.json"))
    }

    /// Saves the result of a login and makes it the current profile.
    pub fn save_login(
        &self,
        proxy: &str,
        ca_pin: &str,
        key: &ClientKey,
        resp: &LoginResponse,
    ) -> Result<Profile> {
        let name = profile_name(proxy);
        // A renewal keeps the proxies learned at login.
        let fallbacks = match self.load(&name) {
            Ok(Some(old)) if old.cluster == resp.identity.cluster => old.fallbacks,
            _ => Vec::new(),
        };
        let p = Profile {
            name,
            proxy: proxy.to_string(),
            user: resp.identity.username.clone(),
            cluster: resp.identity.cluster.clone(),
            ca_pin: ca_pin.to_string(),
            fallbacks,
        };
        create_private_dir(&self.key_dir(&p))?;
        create_private_dir(&self.home.join("profiles"))?;
        write_private_file(&self.private_key_path(&p), key.to_openssh()?.as_bytes())?;
        let public = key.ssh_public_key().to_openssh().map_err(local)?;
        // Every file is replaced atomically: a concurrent reader (another
        // `warden` renewing at the same time) never sees half a file.
        write_file_atomic(
            &self.key_dir(&p).join(format!("{}.pub", p.user)),
            format!("{public}\n").as_bytes(),
            0o644,
        )?;
        write_file_atomic(
            &self.ssh_cert_path(&p),
            format!("{}\n", resp.ssh_cert.trim()).as_bytes(),
            0o644,
        )?;
        write_private_file(&self.tls_cert_path(&p), resp.tls_cert_pem.as_bytes())?;
        write_file_atomic(
            &self.ca_path(&p),
            resp.tls_ca_pems.join("").as_bytes(),
            0o644,
        )?;
        self.remember_cluster(proxy, ca_pin, &resp.tls_ca_pems)?;
        let known_hosts: String = resp
            .ssh_host_ca_keys
            .iter()
            .map(|k| format!("@cert-authority * {k}\n"))
            .collect();
        write_file_atomic(&self.known_hosts_path(&p), known_hosts.as_bytes(), 0o644)?;
        write_file_atomic(
            &self.profile_path(&p.name),
            &serde_json::to_vec_pretty(&p).map_err(local)?,
            0o644,
        )?;
        write_file_atomic(&self.home.join("current"), p.name.as_bytes(), 0o644)?;
        Ok(p)
    }

    /// Replaces the profile's fallback proxies.
    pub fn set_fallbacks(&self, p: &Profile, fallbacks: Vec<String>) -> Result<Profile> {
        let mut p = p.clone();
        p.fallbacks = fallbacks;
        write_file_atomic(
            &self.profile_path(&p.name),
            &serde_json::to_vec_pretty(&p).map_err(local)?,
            0o644,
        )?;
        Ok(p)
    }

    /// The active profile, if logged in anywhere.
    pub fn current(&self) -> Result<Option<Profile>> {
        let name = match std::fs::read_to_string(self.home.join("current")) {
            Ok(n) => n.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.load(&name)
    }

    pub fn load(&self, name: &str) -> Result<Option<Profile>> {
        match std::fs::read(self.profile_path(name)) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                ClientError::Local(format!(
                    "profile {} is corrupt ({e}); run 'warden logout' and log in again",
                    self.profile_path(name).display()
                ))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn known_path(&self, proxy: &str) -> PathBuf {
        self.home
            .join("known_clusters")
            .join(format!("{}.json", profile_name(proxy)))
    }

    /// Remembers a cluster verified by pin, so later commands need no pin.
    pub fn remember_cluster(&self, proxy: &str, pin: &str, ca_pems: &[String]) -> Result<()> {
        create_private_dir(&self.home.join("known_clusters"))?;
        let known = KnownCluster {
            pin: pin.to_string(),
            ca_pems: ca_pems.to_vec(),
        };
        write_file_atomic(
            &self.known_path(proxy),
            &serde_json::to_vec_pretty(&known).map_err(local)?,
            0o644,
        )?;
        Ok(())
    }

    /// How to trust `proxy` if it was verified before: its saved CA and pin.
    pub fn saved_trust(&self, proxy: &str) -> Result<Option<(Trust, String)>> {
        let bytes = match std::fs::read(self.known_path(proxy)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let known: KnownCluster = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Local(format!(
                "{} is corrupt ({e}); delete it and pass --ca-pin",
                self.known_path(proxy).display()
            ))
        })?;
        Ok(Some((Trust::Roots(known.ca_pems), known.pin)))
    }

    /// The saved CA of a profile.
    pub fn trust(&self, p: &Profile) -> Result<Trust> {
        let pem = std::fs::read_to_string(self.ca_path(p)).map_err(|e| {
            ClientError::Local(format!(
                "cannot read {}: {e}; run 'warden login'",
                self.ca_path(p).display()
            ))
        })?;
        Ok(Trust::Roots(vec![pem]))
    }

    /// The X.509 client certificate and key of a profile.
    pub fn client_cert(&self, p: &Profile) -> Result<ClientCert> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|e| {
                ClientError::Local(format!(
                    "cannot read {}: {e}; run 'warden login'",
                    path.display()
                ))
            })
        };
        let key = ClientKey::from_openssh(&read(self.private_key_path(p))?)?;
        Ok(ClientCert {
            cert_pem: read(self.tls_cert_path(p))?,
            key_pkcs8: key.pkcs8_der().to_vec(),
        })
    }

    /// Removes a profile and its keys.
    pub fn remove(&self, p: &Profile) -> Result<()> {
        match std::fs::remove_dir_all(self.key_dir(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let _ = std::fs::remove_file(self.profile_path(&p.name));
        if let Ok(cur) = std::fs::read_to_string(self.home.join("current")) {
            if cur.trim() == p.name {
                let _ = std::fs::remove_file(self.home.join("current"));
            }
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ClientError::Local(format!("cannot create {}: {e}", dir.display())))
}
