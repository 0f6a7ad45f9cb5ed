//! Outgoing webhooks: audit events POSTed as JSON to admin-set URLs, signed
//! with HMAC-SHA256 and retried with backoff, so a chat bot can announce
//! access requests and a SIEM can receive events.
//!
//! Signature: `X-Warden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" under the webhook's secret>` (see docs/webhooks.md).

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use warden_store::{AuditLog, WatchCache};
use warden_types::audit::{codes, AuditEvent};
use warden_types::{Document, WebhookSpec};

/// Deliveries waiting; beyond this new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;
/// Delays before each retry: about two minutes in all.
const BACKOFF: [u64; 6] = [1, 2, 4, 8, 16, 64];
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a webhook posts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parses an `http(s)://host[:port]/path` URL.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("url {url:?}: use http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}

/// The signature header value for `body` at unix time `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!(
        "t={t},v1={}",
        data_encoding::HEXLOWER.encode(ctx.sign().as_ref())
    )
}

struct Job {
    hook: Document<WebhookSpec>,
    event_type: String,
    event_id: String,
    body: Bytes,
}

/// Sends audit events to the webhooks that want them.
pub(crate) struct Webhooks {
    hooks: WatchCache<WebhookSpec>,
    tx: mpsc::Sender<Job>,
}

impl Webhooks {
    /// Starts the delivery task; failures that exhaust their retries are
    /// audited (and never sent to webhooks, so a broken hook cannot loop).
    pub fn start(
        hooks: WatchCache<WebhookSpec>,
        audit: Arc<dyn AuditLog>,
        cluster: String,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let tls = Arc::new(tls_config());
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(CONCURRENCY));
            while let Some(job) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tls, audit, cluster) = (tls.clone(), audit.clone(), cluster.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(why) = deliver(&job, &tls).await {
                        tracing::warn!(webhook = job.hook.name(), %why, "webhook delivery failed");
                        let ev = AuditEvent::new(
                            codes::WEBHOOK_FAILURE,
                            &cluster,
                            "warden",
                            format!(
                                "webhook {} gave up on event {}: {why}",
                                job.hook.name(),
                                job.event_id
                            ),
                        )
                        .with("webhook", job.hook.name().to_string())
                        .with("event_id", job.event_id.clone())
                        .with("event_type", job.event_type.clone());
                        if let Err(e) = audit.append(ev).await {
                            tracing::error!(error = %e, "cannot write audit event");
                        }
                    }
                });
            }
        });
        Webhooks { hooks, tx }
    }

    /// Queues `event` (with `extra`, e.g. the access request it is about)
    /// for every webhook that wants its type. Never blocks.
    pub fn notify(&self, event: &AuditEvent, extra: Option<serde_json::Value>) {
        if event.event_type == codes::WEBHOOK_FAILURE.0 {
            return;
        }
        let hooks: Vec<_> = self
            .hooks
            .list()
            .into_iter()
            .filter(|h| h.spec.wants(&event.event_type))
            .collect();
        if hooks.is_empty() {
            return;
        }
        let mut payload = serde_json::json!({ "event": event });
        if let Some(extra) = extra {
            payload["request"] = extra;
        }
        let body = Bytes::from(serde_json::to_vec(&payload).unwrap_or_default());
        for hook in hooks {
            let job = Job {
                hook,
                event_type: event.event_type.clone(),
                event_id: event.id.clone(),
                body: body.clone(),
            };
            if self.tx.try_send(job).is_err() {
                tracing::warn!(event = %event.id, "webhook queue full; dropping a delivery");
            }
        }
    }
}

/// System trust roots (Debian's bundle) for https webhooks.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter("/etc/ssl/certs/ca-certificates.crt") {
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Posts until the receiver answers 2xx, a 4xx says retrying is useless,
/// or the retries run out.
async fn deliver(job: &Job, tls: &Arc<rustls::ClientConfig>) -> Result<(), String> {
    let target = parse_url(&job.hook.spec.url)?;
    let mut last = String::new();
    for attempt in 0..=BACKOFF.len() {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(BACKOFF[attempt - 1])).await;
        }
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = signature(job.hook.spec.secret.expose().as_bytes(), t, &job.body);
        match tokio::time::timeout(TIMEOUT, post(&target, tls, job, &sig)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => return Ok(()),
            Ok(Ok(status)) if (400..500).contains(&status) && status != 408 && status != 429 => {
                return Err(format!("receiver refused it with HTTP {status}"));
            }
            Ok(Ok(status)) => last = format!("HTTP {status}"),
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        tracing::debug!(webhook = job.hook.name(), attempt, %last, "webhook attempt failed");
    }
    Err(format!(
        "{} attempts failed, last: {last}",
        BACKOFF.len() + 1
    ))
}

async fn post(
    t: &Target,
    tls: &Arc<rustls::ClientConfig>,
    job: &Job,
    sig: &str,
) -> Result<u16, String> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
    let authority = if t.port == 80 || t.port == 443 {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let req = Request::post(t.path.as_str())
        .header("host", authority)
        .header("content-type", "application/json")
        .header("user-agent", concat!("warden/", env!("CARGO_PKG_VERSION")))
        .header("x-warden-event", job.event_type.as_str())
        .header("x-warden-delivery", job.event_id.as_str())
        .header("x-warden-signature", sig)
        .body(Full::new(job.body.clone()))
        .map_err(|e| e.to_string())?;
    if t.https {
        let name = ServerName::try_from(t.host.clone()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", t.host))?;
        send(stream, req).await
    } else {
        send(tcp, req).await
    }
}

async fn send<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<u16, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://chat.example.com/hooks/warden?x=1").unwrap(),
            Target {
                https: true,
                host: "chat.example.com".into(),
                port: 443,
                path: "/hooks/warden?x=1".into()
            }
        );
        assert_eq!(parse_url("http://127.0.0.1:8080").unwrap().path, "/");
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        let sig = signature(b"key", 1700000000, b"{}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"key");
        let want = ring::hmac::sign(&key, b"1700000000.{}");
        assert_eq!(
            sig,
            format!(
                "t=1700000000,v1={}",
                data_encoding::HEXLOWER.encode(want.as_ref())
            )
        );
        assert!(ring::hmac::verify(&key, b"1700000000.{}", want.as_ref()).is_ok());
    }
}
