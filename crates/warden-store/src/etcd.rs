//! The cluster state on etcd v3, shared by every auth server.
//!
//! etcd's revisions, prefix watches and transactions are the `Backend`
//! contract almost word for word. Two things are added on top:
//! - **Exact expiry.** etcd leases count whole seconds and forget the
//!   instant they end, so each value carries its expiry (8 bytes of unix
//!   milliseconds, 0 for none) before the value itself; reads treat an item
//!   past it as absent, and the lease (a second or so longer) makes etcd
//!   delete it, which watchers see as a delete.
//! - **Absent means absent.** A conditional write first reads the key and
//!   then commits only if its `mod_revision` is still the one read, so an
//!   expired item that etcd has not yet deleted is replaced like a missing
//!   one.
//!
//! Each member has its own connection; a call that cannot reach one (or
//! meets an election) moves on to the next, for up to 15 s, so losing a
//! member or the leader costs a retry, not an error.
//!
//! `etcds://` speaks TLS, verifying the members against the CA named by
//! `ca=`, and presents a client certificate (`cert=`, `key=`) to members
//! that ask for one (`--client-cert-auth`).

use crate::backend::{
    expect_revision, from_millis, now_millis, to_millis, Backend, Event, EventKind, Item,
    StoreError, Watcher,
};
use crate::Result;
use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Bytes before each value: its expiry.
const HEADER: usize = 8;
/// How long a call keeps trying other members.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// etcd [`Backend`]. Cheap to clone.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// TLS to the members (`etcds://`).
    tls: Option<etcd_client::TlsOptions>,
    /// One client per member, connected on first use.
    clients: Mutex<Vec<Option<Client>>>,
    /// The member that answered last.
    preferred: AtomicUsize,
}

/// Whether another member (or a moment later) may succeed where `e` failed.
fn retryable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Unknown
            ) || s.message().contains("leader")
        }
        _ => false,
    }
}

fn err(e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {e}"))
}

fn encode(value: &[u8], expires: Option<SystemTime>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.extend_from_slice(&expires.map_or(0, to_millis).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// A stored value and its expiry; `None` for bytes not written by us.
fn decode(raw: &[u8]) -> Option<(Vec<u8>, Option<SystemTime>)> {
    let head: [u8; HEADER] = raw.get(..HEADER)?.try_into().ok()?;
    let ms = i64::from_be_bytes(head);
    Some((raw[HEADER..].to_vec(), (ms > 0).then(|| from_millis(ms))))
}

/// The item `kv` holds if it is live now.
fn live(kv: &KeyValue) -> Option<Item> {
    let (value, expires) = decode(kv.value())?;
    if expires.is_some_and(|e| to_millis(e) <= now_millis()) {
        return None;
    }
    Some(Item {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value,
        revision: kv.mod_revision(),
        expires,
    })
}

/// An `etcd://` or `etcds://` URL, read.
struct EtcdUrl {
    hosts: Vec<String>,
    tls: Option<etcd_client::TlsOptions>,
}

impl EtcdUrl {
    fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            StoreError::Backend(format!(
                "{}: {why}; expected etcd://HOST:PORT[,HOST:PORT...] or etcds://HOST:PORT[,...]?ca=CA.pem[&cert=CLIENT.pem&key=CLIENT.key]",
                crate::postgres::redact_url(url)
            ))
        };
        let (tls, rest) = match (url.strip_prefix("etcds://"), url.strip_prefix("etcd://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => return Err(bad("not an etcd URL")),
        };
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if hosts.is_empty() {
            return Err(bad("name at least one etcd member"));
        }
        let mut files = std::collections::BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !matches!(k, "ca" | "cert" | "key") {
                return Err(bad(&format!("unknown parameter {k:?}")));
            }
            let pem = std::fs::read_to_string(v)
                .map_err(|e| bad(&format!("cannot read {k}={v} ({e})")))?;
            files.insert(k, pem);
        }
        if !tls {
            if !files.is_empty() {
                return Err(bad("ca, cert and key need TLS: write etcds://"));
            }
            return Ok(EtcdUrl { hosts, tls: None });
        }
        let Some(ca) = files.get("ca") else {
            return Err(bad(
                "etcds:// needs ca=FILE, the CA that signed the members' certificates",
            ));
        };
        let mut options =
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca));
        match (files.get("cert"), files.get("key")) {
            (Some(cert), Some(key)) => {
                options = options.identity(etcd_client::Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => {
                return Err(bad(
                    "give both cert= and key= (the client certificate and its key)",
                ))
            }
        }
        Ok(EtcdUrl {
            hosts,
            tls: Some(options),
        })
    }
}

/// Whether `host:port` names this machine.
fn is_loopback(host_port: &str) -> bool {
    crate::is_loopback_host(host_port.rsplit_once(':').map_or(host_port, |(h, _)| h))
}

impl EtcdBackend {
    /// Connects to `etcd://HOST:PORT[,HOST:PORT...]`, or with TLS to
    /// `etcds://HOST:PORT[,...]?ca=CA.pem[&cert=CLIENT.pem&key=CLIENT.key]`.
    pub async fn connect(url: &str) -> Result<Self> {
        let target = EtcdUrl::parse(url)?;
        if target.tls.is_none() {
            if let Some(h) = target.hosts.iter().find(|h| !is_loopback(h)) {
                tracing::warn!(member = %h, "etcd is reached without TLS: its traffic (users, roles, tokens' hashes, sealed CA keys) crosses the network in clear; use etcds://...?ca=CA.pem");
            }
        }
        let scheme = if target.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoints: Vec<String> = target
            .hosts
            .iter()
            .map(|h| format!("{scheme}://{h}"))
            .collect();
        let backend = EtcdBackend {
            inner: Arc::new(Inner {
                clients: Mutex::new(vec![None; endpoints.len()]),
                endpoints,
                tls: target.tls,
                preferred: AtomicUsize::new(0),
            }),
        };
        // Reachable now, not at the first request.
        backend.revision().await?;
        Ok(backend)
    }

    /// The client of member `i`, connecting if needed.
    async fn client(&self, i: usize) -> std::result::Result<Client, etcd_client::Error> {
        if let Some(c) = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner())[i].clone() {
            return Ok(c);
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from the majority refuses, rather than
            // serving stale reads and a silent watch.
            .with_require_leader(true);
        let options = match &self.inner.tls {
            Some(tls) => options.with_tls(tls.clone()),
            None => options,
        };
        let c = Client::connect([self.inner.endpoints[i].as_str()], Some(options)).await?;
        self.inner.clients.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the member that answered last, moving on to the others
    /// while they are unreachable or electing a leader.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        Ok(self.call_retried(op).await?.0)
    }

    /// [`EtcdBackend::call`], also saying whether it had to retry: a retried
    /// write may have been applied by an attempt whose answer was lost.
    async fn call_retried<T, F, Fut>(&self, op: F) -> Result<(T, bool)>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        let n = self.inner.endpoints.len();
        let mut attempt: u32 = 0;
        loop {
            let i = self.inner.preferred.load(Ordering::Relaxed) % n;
            let result = match self.client(i).await {
                Ok(c) => op(c).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok((v, attempt > 0)),
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    tracing::debug!(member = %self.inner.endpoints[i], error = %e, "etcd call failed; trying another member");
                    if matches!(e, etcd_client::Error::TransportError(_)) {
                        self.inner.clients.lock().unwrap_or_else(|p| p.into_inner())[i] = None;
                    }
                    let _ = self.inner.preferred.compare_exchange(
                        i,
                        (i + 1) % n,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    attempt += 1;
                    // A full round of members: wait a little (an election).
                    if attempt as usize % n == 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    async fn read(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .call(|mut c| {
                let key = key.to_string();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().cloned())
    }

    /// The put of `value`, with a lease for its expiry, and the bytes it
    /// stores.
    async fn put_op(
        &self,
        key: &str,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<(TxnOp, Vec<u8>)> {
        let mut options = None;
        if let Some(at) = expires {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            // Whole seconds, rounded up, and one more: the item is absent
            // for readers at its expiry; etcd deletes it a little later.
            let ttl = left.as_secs() as i64 + 2;
            let lease = self
                .call(|mut c| async move { c.lease_grant(ttl, None).await })
                .await?;
            options = Some(PutOptions::new().with_lease(lease.id()));
        }
        let bytes = encode(value, expires);
        Ok((TxnOp::put(key, bytes.clone(), options), bytes))
    }

    /// Runs `txn`; returns whether it succeeded, the revision after it, and
    /// whether it was retried.
    async fn txn(&self, txn: Txn) -> Result<(bool, i64, bool)> {
        let (resp, retried) = self
            .call_retried(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let revision = resp
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend("etcd: a transaction without a header".into()))?;
        Ok((resp.succeeded(), revision, retried))
    }

    /// Commits `op` if `key` is still as read (`observed`: its
    /// mod_revision, 0 when missing); returns the new revision, or `None`
    /// when something changed in between. `written`: the bytes `op` puts
    /// (`None` for a delete), to recognise our own write when a retried
    /// attempt's first try was applied and its answer lost.
    async fn commit_if(
        &self,
        key: &str,
        observed: i64,
        op: TxnOp,
        written: Option<&[u8]>,
    ) -> Result<Option<i64>> {
        let compare = match observed {
            0 => Compare::create_revision(key, CompareOp::Equal, 0),
            r => Compare::mod_revision(key, CompareOp::Equal, r),
        };
        let (ok, revision, retried) = self.txn(Txn::new().when([compare]).and_then([op])).await?;
        if ok || !retried {
            return Ok(ok.then_some(revision));
        }
        let now = self.read(key).await?;
        Ok(match (written, now) {
            (Some(bytes), Some(kv)) if kv.value() == bytes && kv.mod_revision() > observed => {
                Some(kv.mod_revision())
            }
            (None, None) => Some(revision),
            _ => None,
        })
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>> {
        Ok(self.read(key).await?.as_ref().and_then(live))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64> {
        let (op, _) = self.put_op(key, &value, expires).await?;
        Ok(self.txn(Txn::new().and_then([op])).await?.1)
    }

    async fn create(&self, key: &str, value: Vec<u8>, expires: Option<SystemTime>) -> Result<i64> {
        loop {
            let current = self.read(key).await?;
            if current.as_ref().and_then(live).is_some() {
                return Err(StoreError::AlreadyExists(key.to_string()));
            }
            let observed = current.map_or(0, |kv| kv.mod_revision());
            let (op, bytes) = self.put_op(key, &value, expires).await?;
            if let Some(rev) = self.commit_if(key, observed, op, Some(&bytes)).await? {
                return Ok(rev);
            }
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
        expires: Option<SystemTime>,
    ) -> Result<i64> {
        loop {
            let current = self.read(key).await?;
            expect_revision(key, current.as_ref().and_then(live), expected)?;
            let (op, bytes) = self.put_op(key, &value, expires).await?;
            if let Some(rev) = self.commit_if(key, expected, op, Some(&bytes)).await? {
                return Ok(rev);
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        loop {
            let Some(current) = self.read(key).await? else {
                return Ok(false);
            };
            let was_live = live(&current).is_some();
            let op = TxnOp::delete(key, None);
            if self
                .commit_if(key, current.mod_revision(), op, None)
                .await?
                .is_some()
            {
                return Ok(was_live);
            }
        }
    }

    async fn compare_and_delete(&self, key: &str, expected: i64) -> Result<()> {
        loop {
            let current = self.read(key).await?;
            expect_revision(key, current.as_ref().and_then(live), expected)?;
            let op = TxnOp::delete(key, None);
            if self.commit_if(key, expected, op, None).await?.is_some() {
                return Ok(());
            }
        }
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>> {
        let resp = self
            .call(|mut c| {
                let prefix = prefix.to_string();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut items: Vec<Item> = resp.kvs().iter().filter_map(live).collect();
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(items)
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Watcher> {
        let (mut stream, first) = self
            .call(|mut c| {
                let prefix = prefix.to_string();
                async move {
                    let options = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(after + 1);
                    let mut stream = c.watch(prefix, Some(options)).await?;
                    // The answer to the creation (or its refusal).
                    let first = stream.message().await?;
                    Ok((stream, first))
                }
            })
            .await?;
        let (tx, rx) = mpsc::channel(256);
        // A start revision below etcd's compaction is refused in the first
        // answer; the caller lists again.
        if let Some(resp) = &first {
            if resp.compact_revision() > 0 {
                return Err(StoreError::Compacted {
                    requested: after,
                    oldest: resp.compact_revision(),
                });
            }
        }
        tokio::spawn(async move {
            // The stream is the watch: dropped with the Watcher's receiver.
            let mut next = first;
            loop {
                let resp = match next.take() {
                    Some(r) => r,
                    None => {
                        let message = tokio::select! {
                            m = stream.message() => m,
                            _ = tx.closed() => return,
                        };
                        match message {
                            Ok(Some(r)) => r,
                            Ok(None) => return,
                            Err(e) => {
                                let _ = tx.send(Err(err(e))).await;
                                return;
                            }
                        }
                    }
                };
                if resp.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(StoreError::Compacted {
                            requested: after,
                            oldest: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    let _ = tx
                        .send(Err(StoreError::Backend(format!(
                            "etcd cancelled the watch: {}",
                            resp.cancel_reason()
                        ))))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let event = match ev.event_type() {
                        EventType::Put => {
                            let Some((value, expires)) = decode(kv.value()) else {
                                continue;
                            };
                            Event {
                                kind: EventKind::Put,
                                item: Item {
                                    key,
                                    value,
                                    revision: kv.mod_revision(),
                                    expires,
                                },
                            }
                        }
                        EventType::Delete => Event {
                            kind: EventKind::Delete,
                            item: Item {
                                key,
                                value: Vec::new(),
                                revision: kv.mod_revision(),
                                expires: None,
                            },
                        },
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Watcher { rx })
    }

    async fn revision(&self) -> Result<i64> {
        let resp = self
            .call(
                |mut c| async move { c.get("/", Some(GetOptions::new().with_count_only())).await },
            )
            .await?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| StoreError::Backend("etcd: an answer without a header".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_expiry() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let raw = encode(b"v", Some(at));
        assert_eq!(decode(&raw), Some((b"v".to_vec(), Some(at))));
        assert_eq!(decode(&encode(b"", None)), Some((Vec::new(), None)));
        assert_eq!(decode(b"short"), None);
    }
}
