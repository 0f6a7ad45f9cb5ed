//! Verifying a cluster: by CA pin on first contact, by the saved CA after.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};
use warden_ca::tls::{pem_to_der, spki_pin};

/// How the client decides to trust the server.
#[derive(Clone, Debug)]
pub enum Trust {
    /// First contact: the chain must include a CA whose key hashes to this
    /// pin, and the server certificate must chain to it.
    Pin(String),
    /// First contact without a pin: record what the server presents and
    /// refuse, so the user can be asked.
    Discover,
    /// Known cluster: these CA certificates (PEM).
    Roots(Vec<String>),
}

/// A server certificate verifier for [`Trust`]. It records the CA pins the
/// server presented, for error messages and trust prompts.
#[derive(Debug)]
pub struct ClusterVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
    /// CA pins in the chain the server presented.
    pub presented: Mutex<Vec<String>>,
}

impl ClusterVerifier {
    pub fn new(trust: Trust) -> Arc<Self> {
        Arc::new(ClusterVerifier {
            trust,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            presented: Mutex::new(Vec::new()),
        })
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    fn webpki(&self, roots: RootCertStore) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for ClusterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pins: Vec<(String, &CertificateDer<'_>)> = intermediates
            .iter()
            .filter_map(|c| spki_pin(c).ok().map(|p| (p, c)))
            .collect();
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) =
            pins.iter().map(|(p, _)| p.clone()).collect();
        let mut roots = RootCertStore::empty();
        match &self.trust {
            Trust::Pin(pin) => {
                let (_, ca) = pins
                    .iter()
                    .find(|(p, _)| p == pin)
                    .ok_or_else(|| rustls::Error::General("CA pin mismatch".into()))?;
                roots
                    .add((*ca).clone().into_owned())
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            }
            Trust::Discover => {
                return Err(rustls::Error::General("cluster not yet trusted".into()))
            }
            Trust::Roots(pems) => {
                for pem in pems {
                    for der in pem_to_der(pem).map_err(|e| rustls::Error::General(e.to_string()))? {
                        roots
                            .add(der)
                            .map_err(|e| rustls::Error::General(e.to_string()))?;
                    }
                }
            }
        }
        // On first contact the rest of the chain may lead, through a cross
        // certificate, from another auth server's key to the pinned one.
        // A known cluster's saved list holds every key it trusts itself:
        // nothing the server sends is taken as a path (a cross certificate
        // outlives a dropped key by up to its lifetime).
        let path: &[CertificateDer<'_>] = match &self.trust {
            Trust::Pin(_) => intermediates,
            _ => &[],
        };
        let verified =
            self.webpki(roots)?
                .verify_server_cert(end_entity, path, server_name, ocsp, now);
        match (&self.trust, verified) {
            // The pinned key is in the chain but did not issue (or
            // certify) the server's certificate: that is a mismatch too.
            (
                Trust::Pin(_),
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::BadSignature,
                )),
            ) => Err(rustls::Error::General("CA pin mismatch".into())),
            (_, verified) => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client certificate and its key.
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pkcs8: Vec<u8>,
}

/// A rustls client config for `verifier`, offering `alpn`, presenting
/// `client_cert` if given.
pub fn client_config(
    verifier: Arc<ClusterVerifier>,
    alpn: &[u8],
    client_cert: Option<&ClientCert>,
) -> crate::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some(c) => builder
            .with_client_auth_cert(
                pem_to_der(&c.cert_pem)?,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_pkcs8.clone())),
            )
            .map_err(|e| crate::ClientError::Local(format!("invalid client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_ca::tls::{ca_pin, create_ca_cert, cross_certify, issue_for_ed25519};
    use warden_ca::tls::{CertRequest, Usage};
    use warden_ca::{KeyStore, SoftwareKeyStore};

    /// Two auth servers' tls keys: a server certificate issued with the
    /// second verifies for a client that pinned the first once the chain
    /// carries the first's cross certificate for the second, and not
    /// without it; a saved CA list takes no path from the server.
    #[test]
    fn a_cross_certificate_bridges_two_signing_keys() {
        let dir = std::env::temp_dir().join(format!("warden-cross-{}", std::process::id()));
        let ks = SoftwareKeyStore::open_or_create(&dir.join("kek")).unwrap();
        let a = ks.load(&ks.generate().unwrap()).unwrap();
        let b = ks.load(&ks.generate().unwrap()).unwrap();
        let (a_pem, b_pem) = (
            create_ca_cert(&*a, "c1").unwrap(),
            create_ca_cert(&*b, "c1").unwrap(),
        );
        let cross = cross_certify(&*a, &a_pem, "c1", b.alg(), &b.public_key()).unwrap();
        let key = warden_ca::ClientKey::generate();
        let now = time::OffsetDateTime::now_utc();
        let leaf = issue_for_ed25519(
            &*b,
            &b_pem,
            key.public_raw(),
            &CertRequest {
                common_name: "proxy".into(),
                dns_names: vec!["proxy.c1".into()],
                ips: vec![],
                identity: None,
                not_before: now - time::Duration::minutes(1),
                not_after: now + time::Duration::hours(1),
                usage: Usage::Server,
            },
        )
        .unwrap();
        let der = |pem: &str| pem_to_der(pem).unwrap().remove(0);
        let name = ServerName::try_from("proxy.c1").unwrap();
        let verify = |trust: Trust, chain: &[&str]| {
            let rest: Vec<_> = chain.iter().map(|p| der(p)).collect();
            ClusterVerifier::new(trust)
                .verify_server_cert(&der(&leaf), &rest, &name, &[], UnixTime::now())
                .map(|_| ())
        };
        let pin_a = Trust::Pin(ca_pin(&a_pem).unwrap());
        verify(pin_a.clone(), &[&b_pem, &a_pem, &cross]).unwrap();
        assert!(
            verify(pin_a.clone(), &[&b_pem, &a_pem]).is_err(),
            "no bridge"
        );
        // A saved CA list takes no path from the server: it trusts the
        // keys it holds (B's too, once saved after B joined).
        let saved_a = Trust::Roots(vec![a_pem.clone()]);
        assert!(verify(saved_a, &[&b_pem, &a_pem, &cross]).is_err());
        verify(Trust::Roots(vec![a_pem.clone(), b_pem.clone()]), &[]).unwrap();
        // A cross certificate from a key the client does not trust bridges
        // nothing.
        let c = ks.load(&ks.generate().unwrap()).unwrap();
        let c_pem = create_ca_cert(&*c, "c1").unwrap();
        let forged = cross_certify(&*c, &c_pem, "c1", b.alg(), &b.public_key()).unwrap();
        assert!(verify(pin_a, &[&b_pem, &c_pem, &forged]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
