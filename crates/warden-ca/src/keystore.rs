//! Where CA private keys live.

use crate::{random_bytes, CaError, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A CA key's algorithm: Ed25519 wherever the key store offers it, ECDSA
/// P-256 (SHA-256) for HSMs that lack Ed25519.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlg {
    #[default]
    Ed25519,
    EcdsaP256,
}

impl KeyAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::EcdsaP256 => "ecdsa-p256",
        }
    }

    fn is_ed25519(&self) -> bool {
        *self == KeyAlg::Ed25519
    }

    /// Whether `sig` (as [`CaSigner::sign`] makes it) over `msg` verifies
    /// under `public` (as [`CaSigner::public_key`] gives it).
    pub fn verify(self, public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn ring::signature::VerificationAlgorithm = match self {
            KeyAlg::Ed25519 => &ring::signature::ED25519,
            KeyAlg::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_FIXED,
        };
        ring::signature::UnparsedPublicKey::new(alg, public)
            .verify(msg, sig)
            .is_ok()
    }
}

/// A stored reference to a CA key: safe to keep in the backend because the
/// private part is either encrypted (software) or a label in an HSM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHandle {
    /// Which key store holds the key: `software` or `pkcs11` (an HSM).
    pub store: String,
    /// The public key, hex: raw Ed25519, or an uncompressed SEC1 point.
    pub public_key: String,
    /// Store-specific data: for `software`, the sealed seed (base64).
    pub data: String,
    #[serde(default, skip_serializing_if = "KeyAlg::is_ed25519")]
    pub alg: KeyAlg,
}

impl KeyHandle {
    /// The public key's bytes.
    pub fn public_bytes(&self) -> Result<Vec<u8>> {
        data_encoding::HEXLOWER
            .decode(self.public_key.as_bytes())
            .map_err(|_| CaError::Key("a CA key's public key is not hex".into()))
    }
}

/// Something that signs with a CA key.
pub trait CaSigner: Send + Sync {
    fn alg(&self) -> KeyAlg {
        KeyAlg::Ed25519
    }
    /// Raw Ed25519 (32 bytes), or an uncompressed SEC1 P-256 point (65).
    fn public_key(&self) -> Vec<u8>;
    /// A signature over `msg` (an HSM may fail to give one): Ed25519, or
    /// ECDSA P-256 over SHA-256 as `r || s` (64 bytes each way).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>>;
}

/// Creates and loads CA keys.
pub trait KeyStore: Send + Sync {
    fn generate(&self) -> Result<KeyHandle>;
    fn load(&self, handle: &KeyHandle) -> Result<Arc<dyn CaSigner>>;
}

struct SoftwareSigner {
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl CaSigner for SoftwareSigner {
    fn public_key(&self) -> Vec<u8> {
        self.public.to_vec()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        Ok(self.pair.sign(msg).as_ref().to_vec())
    }
}

/// Keys encrypted at rest with AES-256-GCM under a key-encryption key (KEK)
/// kept in a 0600 file in the data directory.
pub struct SoftwareKeyStore {
    kek: LessSafeKey,
    /// The key itself, for an encrypted backup.
    raw: Zeroizing<Vec<u8>>,
}

const CA_KEY_AAD: &[u8] = b"warden ca key v1";

impl SoftwareKeyStore {
    /// Opens the KEK at `path`, creating it (0600) if absent.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        Self::read(path, true)
    }

    /// Opens the KEK at `path`, which must exist (one the operator gave).
    pub fn open_existing(path: &Path) -> Result<Self> {
        Self::read(path, false)
    }

    fn read(path: &Path, create: bool) -> Result<Self> {
        let kek_err = |reason: String| CaError::Kek {
            path: path.display().to_string(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = Zeroizing::new(random_bytes::<32>().to_vec());
                write_private_file(path, &key).map_err(|e| kek_err(e.to_string()))?;
                key
            }
            Err(e) => return Err(kek_err(e.to_string())),
        };
        check_private_mode(path).map_err(kek_err)?;
        if bytes.len() != 32 {
            return Err(kek_err(format!(
                "expected 32 bytes, found {}; restore it from backup",
                bytes.len()
            )));
        }
        Ok(Self::from_key(&bytes))
    }

    fn from_key(key: &[u8]) -> Self {
        SoftwareKeyStore {
            kek: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key")),
            raw: Zeroizing::new(key.to_vec()),
        }
    }

    /// The key-encryption key's 32 bytes: only for a backup that
    /// encrypts them again.
    pub fn export_kek(&self) -> Zeroizing<Vec<u8>> {
        self.raw.clone()
    }

    /// Encrypts `plaintext`, bound to `context` (so a ciphertext made for
    /// one purpose cannot be replayed as another). Returns base64.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> String {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .expect("AES-GCM seal of a small buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        data_encoding::BASE64.encode(&out)
    }

    /// Reverses [`SoftwareKeyStore::seal`].
    pub fn open(&self, context: &[u8], sealed: &str) -> Result<Zeroizing<Vec<u8>>> {
        let raw = data_encoding::BASE64
            .decode(sealed.as_bytes())
            .map_err(|_| CaError::Decrypt)?;
        if raw.len() < NONCE_LEN {
            return Err(CaError::Decrypt);
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CaError::Decrypt)?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .kek
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| CaError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl KeyStore for SoftwareKeyStore {
    fn generate(&self) -> Result<KeyHandle> {
        let seed = Zeroizing::new(random_bytes::<32>());
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&*seed).map_err(|e| CaError::Key(e.to_string()))?;
        Ok(KeyHandle {
            store: "software".into(),
            public_key: data_encoding::HEXLOWER.encode(pair.public_key().as_ref()),
            data: self.seal(CA_KEY_AAD, &*seed),
            alg: KeyAlg::Ed25519,
        })
    }

    fn load(&self, handle: &KeyHandle) -> Result<Arc<dyn CaSigner>> {
        if handle.store != "software" {
            return Err(CaError::UnknownKeyStore(handle.store.clone()));
        }
        let seed = self.open(CA_KEY_AAD, &handle.data)?;
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| CaError::Key(e.to_string()))?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| CaError::Key("bad public key length".into()))?;
        if data_encoding::HEXLOWER.encode(&public) != handle.public_key {
            return Err(CaError::Key(
                "decrypted key does not match its public key".into(),
            ));
        }
        Ok(Arc::new(SoftwareSigner { pair, public }))
    }
}

/// Writes a new file readable only by its owner (0600), durably.
pub fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_file_atomic(path, data, 0o600)
}

/// Writes `data` to `path` with `mode`, atomically (a temp file of its own,
/// then a rename) and durably: readers see the old or the new content,
/// never a mix, however many processes write at once.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself must survive a power loss (the KEK above all).
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Refuses key files that others can read.
pub fn check_private_mode(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "permissions {:o} are too open; run: chmod 600 {}",
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_round_trip_and_kek_matters() {
        let dir = std::env::temp_dir().join(format!(
            "warden-ks-{}",
            crate::sha256_hex(&random_bytes::<8>())
        ));
        let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        let mode = std::fs::metadata(dir.join("kek"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let h = ks.generate().unwrap();
        assert!(!h.data.contains(&h.public_key));
        let signer = ks.load(&h).unwrap();
        let sig = signer.sign(b"msg").unwrap();
        assert!(KeyAlg::Ed25519.verify(&signer.public_key(), b"msg", &sig));
        assert!(!KeyAlg::Ed25519.verify(&signer.public_key(), b"other", &sig));
        // Reopening the same KEK loads the key; another KEK cannot.
        let again = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        assert_eq!(again.load(&h).unwrap().public_key(), signer.public_key());
        let other = SoftwareKeyStore::open_or_create(&dir.join("kek2")).unwrap();
        assert!(matches!(other.load(&h), Err(CaError::Decrypt)));
        // Context binding.
        let sealed = ks.seal(b"a", b"secret");
        assert!(ks.open(b"b", &sealed).is_err());
        assert_eq!(&*ks.open(b"a", &sealed).unwrap(), b"secret");
        // A world-readable KEK is refused.
        std::fs::set_permissions(dir.join("kek"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SoftwareKeyStore::open_or_create(&dir.join("kek"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
