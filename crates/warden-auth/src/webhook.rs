//! Outgoing webhooks: audit events POSTed as JSON to admin-set URLs, signed
//! with HMAC-SHA256 and retried with backoff, so a chat bot can announce
//! access requests and a SIEM can receive events.
//!
//! Signature: `X-Warden-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" under the webhook's secret>` (see docs/webhooks.md).

use hyper::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
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

pub use crate::http_out::parse_url;

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
        let tls = crate::http_out::tls_config();
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

/// Posts until the receiver answers 2xx, a 4xx says retrying is useless,
/// or the retries run out.
async fn deliver(job: &Job, tls: &Arc<rustls::ClientConfig>) -> Result<(), String> {
    parse_url(&job.hook.spec.url)?;
    let mut last = String::new();
    for attempt in 0..=BACKOFF.len() {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(BACKOFF[attempt - 1])).await;
        }
        let t = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = signature(job.hook.spec.secret.expose().as_bytes(), t, &job.body);
        match tokio::time::timeout(TIMEOUT, post(&job.hook.spec.url, tls, job, &sig)).await {
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
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
    job: &Job,
    sig: &str,
) -> Result<u16, String> {
    let headers = [
        ("content-type", "application/json"),
        ("x-warden-event", job.event_type.as_str()),
        ("x-warden-delivery", job.event_id.as_str()),
        ("x-warden-signature", sig),
    ];
    let resp = crate::http_out::send(
        tls,
        hyper::Method::POST,
        url,
        &headers,
        job.body.clone(),
        64 * 1024,
    )
    .await?;
    Ok(resp.status)
}

#[cfg(test)]
mod tests {
    use super::*;

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
