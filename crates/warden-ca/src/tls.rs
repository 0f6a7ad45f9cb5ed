//! X.509: the tls CA certificate, client and server certificates, the
//! identity extension and the CA pin.

use crate::keystore::{CaSigner, KeyAlg};
use crate::{sha256_hex, CaError, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};
use warden_types::{Identity, IDENTITY_EXT_OID};

/// Lifetime of a tls CA certificate.
const CA_LIFETIME: Duration = Duration::days(3650);
/// Lifetime of a cross certificate between two auth servers' tls keys.
const CROSS_LIFETIME: Duration = Duration::days(1);

fn x509_err(e: impl std::fmt::Display) -> CaError {
    CaError::X509(e.to_string())
}

/// Adapts a [`CaSigner`] to rcgen.
struct RcgenSigner<'a> {
    signer: &'a dyn CaSigner,
    public: Vec<u8>,
}

/// rcgen's errors, where the CA key's own failure has no text of its own.
fn rcgen_err(e: rcgen::Error) -> CaError {
    match e {
        rcgen::Error::RemoteKeyError => {
            CaError::Hsm("the CA key did not sign (the auth server's log says why)".into())
        }
        e => CaError::X509(e.to_string()),
    }
}

impl<'a> RcgenSigner<'a> {
    fn new(signer: &'a dyn CaSigner) -> Self {
        RcgenSigner {
            public: signer.public_key(),
            signer,
        }
    }
}

impl PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.signer.alg() {
            KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlg::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        // The signer logs its own failure (rcgen's error carries no text).
        let sig = self
            .signer
            .sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(match self.signer.alg() {
            KeyAlg::Ed25519 => sig,
            // X.509 wants ECDSA signatures as DER, not r || s.
            KeyAlg::EcdsaP256 => ecdsa_der(&sig),
        })
    }
}

/// An ECDSA signature `r || s` as DER (`SEQUENCE { INTEGER r, INTEGER s }`).
fn ecdsa_der(sig: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = match b.iter().position(|&x| x != 0) {
            Some(i) => &b[i..],
            None => &[0u8][..],
        };
        let mut out = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        out.push((b.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(b);
        out
    };
    let (r, s) = sig.split_at(sig.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn random_serial() -> SerialNumber {
    let mut bytes = crate::random_bytes::<16>();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

/// A tls CA certificate's fields for the key `public` (raw bytes).
fn ca_params(cluster: &str, public: &[u8]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, cluster);
    // A name of its own per key: during a rotation two CA certificates are
    // trusted at once, and a client that trusts only one must find no
    // candidate issuer ("unknown issuer") rather than a namesake whose
    // signature fails.
    let id = data_encoding::HEXLOWER.encode(&public[..4.min(public.len())]);
    dn.push(DnType::CommonName, format!("{cluster} tls CA {id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(random_serial());
    params
}

/// A self-signed CA certificate for the cluster's tls CA.
pub fn create_ca_cert(ca: &dyn CaSigner, cluster: &str) -> Result<String> {
    let cert = ca_params(cluster, &ca.public_key())
        .self_signed(&RcgenSigner::new(ca))
        .map_err(rcgen_err)?;
    Ok(cert.pem())
}

/// A CA certificate for another tls CA key (`subject`, raw public bytes)
/// issued with `issuer`'s: with several auth servers each signing with a
/// key of its own, a client that trusts one key follows this to accept a
/// certificate issued with another. Same name and key as the other key's
/// own CA certificate, so either completes a chain.
pub fn cross_certify(
    issuer: &dyn CaSigner,
    issuer_cert_pem: &str,
    cluster: &str,
    subject_alg: KeyAlg,
    subject: &[u8],
) -> Result<String> {
    struct Key(KeyAlg, Vec<u8>);
    impl PublicKeyData for Key {
        fn der_bytes(&self) -> &[u8] {
            &self.1
        }
        fn algorithm(&self) -> &'static SignatureAlgorithm {
            match self.0 {
                KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
                KeyAlg::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            }
        }
    }
    let from =
        Issuer::from_ca_cert_pem(issuer_cert_pem, RcgenSigner::new(issuer)).map_err(x509_err)?;
    let mut params = ca_params(cluster, subject);
    // Short-lived: renewed daily while both keys are trusted, it outlives
    // a dropped key by a day at most (clients with a pin use it).
    params.not_after = OffsetDateTime::now_utc() + CROSS_LIFETIME;
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&Key(subject_alg, subject.to_vec()), &from)
        .map_err(rcgen_err)?;
    Ok(cert.pem())
}

/// A self-signed ECDSA P-256 server certificate for `names` (DNS names or
/// IP addresses) and its PKCS#8 key: what a proxy shows browsers when the
/// operator gave it no certificate of its own (browsers take neither
/// Ed25519 certificates nor the cluster's CA).
pub fn self_signed_p256(common_name: &str, names: &[String]) -> Result<(String, Vec<u8>)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(x509_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for name in names {
        params.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(x509_err)?),
        });
    }
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + Duration::days(90);
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(x509_err)?;
    Ok((cert.pem(), key.serialize_der()))
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    /// Services that both serve and call (proxy, node).
    ClientAndServer,
}

/// A certificate request, before the subject's public key is attached.
#[derive(Clone, Debug)]
pub struct CertRequest {
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub identity: Option<Identity>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub usage: Usage,
}

fn params_for(req: &CertRequest) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, req.common_name.as_str());
    params.distinguished_name = dn;
    for name in &req.dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.clone().try_into().map_err(x509_err)?));
    }
    for ip in &req.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match req.usage {
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::ClientAndServer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    if let Some(id) = &req.identity {
        let json = serde_json::to_vec(id).map_err(x509_err)?;
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                IDENTITY_EXT_OID,
                der_octet_string(&json),
            ));
    }
    Ok(params)
}

/// DER OCTET STRING wrapping, so the extension value is well-formed ASN.1.
fn der_octet_string(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let len = data.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(data);
    out
}

fn read_octet_string(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// Issues a certificate for the public key in a PEM CSR. The CSR's own
/// signature is checked (proof that the caller holds the private key); its
/// requested names and extensions are ignored.
pub fn issue_from_csr(
    ca: &dyn CaSigner,
    ca_cert_pem: &str,
    csr_pem: &str,
    req: &CertRequest,
) -> Result<String> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::X509(format!("invalid certificate signing request: {e}")))?;
    let signer = RcgenSigner::new(ca);
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, signer).map_err(x509_err)?;
    let cert = params_for(req)?
        .signed_by(&csr.public_key, &issuer)
        .map_err(rcgen_err)?;
    Ok(cert.pem())
}

/// Issues a certificate for a raw Ed25519 public key (services whose keys
/// the auth server created itself).
pub fn issue_for_ed25519(
    ca: &dyn CaSigner,
    ca_cert_pem: &str,
    public_key: [u8; 32],
    req: &CertRequest,
) -> Result<String> {
    struct Raw([u8; 32]);
    impl PublicKeyData for Raw {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static SignatureAlgorithm {
            &rcgen::PKCS_ED25519
        }
    }
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, RcgenSigner::new(ca)).map_err(x509_err)?;
    let cert = params_for(req)?
        .signed_by(&Raw(public_key), &issuer)
        .map_err(rcgen_err)?;
    Ok(cert.pem())
}

/// Verifies client certificates against the trusted CA list alone,
/// ignoring intermediates the client sends: every trusted key is in the
/// list already, and a chain through a cross certificate (which outlives
/// its place in the list by up to its lifetime) must not bring a dropped
/// key back.
#[derive(Debug)]
struct LeafOnly(std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for LeafOnly {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, &[], now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The client certificate verifier of Warden's servers: required, from a
/// key in `ca_pems`, chained directly (see `LeafOnly`).
pub fn client_cert_verifier(
    ca_pems: &[String],
) -> Result<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for der in pem_to_der(pem)? {
            roots.add(der).map_err(x509_err)?;
        }
    }
    let inner = rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
        .build()
        .map_err(x509_err)?;
    Ok(std::sync::Arc::new(LeafOnly(inner)))
}

/// DER certificates in a PEM bundle.
pub fn pem_to_der(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| CaError::X509(format!("invalid PEM certificate: {e}")))
}

/// The identity a Warden certificate carries (None if it has none).
pub fn identity_from_der(der: &[u8]) -> Result<Option<Identity>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(x509_err)?;
    let oid = x509_parser::oid_registry::Oid::from(IDENTITY_EXT_OID)
        .map_err(|_| CaError::X509("bad identity OID".into()))?;
    for ext in cert.extensions() {
        if ext.oid == oid {
            let json = read_octet_string(ext.value)
                .ok_or_else(|| CaError::X509("malformed identity extension".into()))?;
            return serde_json::from_slice(json)
                .map(Some)
                .map_err(|e| CaError::X509(format!("malformed identity extension: {e}")));
        }
    }
    Ok(None)
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo: the CA pin.
pub fn spki_pin(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(x509_err)?;
    Ok(format!("sha256:{}", sha256_hex(cert.public_key().raw)))
}

/// The raw public key a certificate is for (Ed25519: 32 bytes).
pub fn public_key_raw(cert_der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(x509_err)?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// The pin of the first certificate in a PEM bundle.
pub fn ca_pin(ca_cert_pem: &str) -> Result<String> {
    let der = pem_to_der(ca_cert_pem)?;
    let first = der
        .first()
        .ok_or_else(|| CaError::X509("no certificate in PEM".into()))?;
    spki_pin(first)
}

/// `not_after` of a certificate, unix seconds.
pub fn not_after(cert_der: &[u8]) -> Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(x509_err)?;
    Ok(cert.validity().not_after.timestamp())
}

/// Whether a certificate (the first in `pem`) is past half its lifetime
/// at `now` (unix seconds): services renew then. An unreadable one is due.
pub fn renewal_due(pem: &str, now: i64) -> bool {
    let Some(der) = pem_to_der(pem).ok().and_then(|d| d.into_iter().next()) else {
        return true;
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok((_, cert)) => {
            let (from, to) = (
                cert.validity().not_before.timestamp(),
                cert.validity().not_after.timestamp(),
            );
            now >= from + (to - from) / 2
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{KeyStore, SoftwareKeyStore};
    use crate::{random_bytes, ClientKey};
    use warden_types::IdentityKind;

    #[test]
    fn client_cert_carries_identity_and_chains_to_ca() {
        let dir =
            std::env::temp_dir().join(format!("warden-tls-{}", sha256_hex(&random_bytes::<8>())));
        let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        let ca = ks.load(&ks.generate().unwrap()).unwrap();
        let ca_pem = create_ca_cert(&*ca, "c1").unwrap();
        let pin = ca_pin(&ca_pem).unwrap();
        assert!(pin.starts_with("sha256:") && pin.len() == 71);
        let key = ClientKey::generate();
        let id = Identity {
            kind: IdentityKind::User,
            username: "alice".into(),
            cluster: "c1".into(),
            roles: vec!["access".into()],
            logins: vec!["root".into()],
            traits: Default::default(),
            requests: vec![],
            expires: 123,
            login_expires: 0,
            user_id: String::new(),
        };
        let now = OffsetDateTime::now_utc();
        let pem = issue_from_csr(
            &*ca,
            &ca_pem,
            &key.csr_pem("alice").unwrap(),
            &CertRequest {
                common_name: "alice".into(),
                dns_names: vec![],
                ips: vec![],
                identity: Some(id.clone()),
                not_before: now,
                not_after: now + Duration::hours(1),
                usage: Usage::Client,
            },
        )
        .unwrap();
        let der = pem_to_der(&pem).unwrap();
        assert_eq!(identity_from_der(&der[0]).unwrap(), Some(id));
        // It verifies as a client cert under the CA, via rustls' verifier.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_to_der(&ca_pem).unwrap().remove(0)).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der[0], &[], rustls_pki_types::UnixTime::now())
            .unwrap();
        // A garbage CSR is a clear error, not a panic.
        let err = issue_from_csr(
            &*ca,
            &ca_pem,
            "not a csr",
            &CertRequest {
                common_name: "x".into(),
                dns_names: vec![],
                ips: vec![],
                identity: None,
                not_before: now,
                not_after: now,
                usage: Usage::Client,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("certificate signing request"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn renewal_is_due_at_half_life() {
        let dir = std::env::temp_dir().join(format!(
            "warden-renew-{}",
            crate::sha256_hex(&random_bytes::<8>())
        ));
        let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        let ca = ks.load(&ks.generate().unwrap()).unwrap();
        let ca_pem = create_ca_cert(&*ca, "c1").unwrap();
        let t = OffsetDateTime::now_utc();
        let pem = issue_for_ed25519(
            &*ca,
            &ca_pem,
            ClientKey::generate().public_raw(),
            &CertRequest {
                common_name: "svc".into(),
                dns_names: vec![],
                ips: vec![],
                identity: None,
                not_before: t - Duration::seconds(100),
                not_after: t + Duration::seconds(300),
                usage: Usage::Server,
            },
        )
        .unwrap();
        let now = t.unix_timestamp();
        assert!(!renewal_due(&pem, now));
        assert!(!renewal_due(&pem, now + 99));
        assert!(renewal_due(&pem, now + 100));
        assert!(renewal_due("not a certificate", now));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn octet_strings_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 70000] {
            let data = vec![7u8; n];
            assert_eq!(read_octet_string(&der_octet_string(&data)), Some(&data[..]));
        }
        assert_eq!(read_octet_string(&[0x04, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(read_octet_string(&[0x04, 0x05, 1]), None);
    }
}
