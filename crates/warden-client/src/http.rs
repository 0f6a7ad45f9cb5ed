//! A small JSON-over-HTTPS client: one TLS connection per call, bounded
//! response size, errors mapped to [`ClientError`].

use crate::tls::{client_config, ClientCert, ClusterVerifier, Trust};
use crate::{ClientError, Result};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use warden_types::api::ApiError;
use warden_types::endpoints::{Endpoint, Method as EndpointMethod, Raw};

/// Largest response body accepted.
const MAX_RESPONSE: usize = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per address, when there are others to try.
const FAILOVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One service at one or more addresses (`host:port[,host:port...]`):
/// connections go to the address that answered last, else to the others
/// in order, so a dead auth server costs one refused connect, not an
/// outage.
#[derive(Clone, Debug)]
pub struct Endpoints {
    addrs: Arc<Vec<String>>,
    preferred: Arc<AtomicUsize>,
}

impl Endpoints {
    pub fn parse(list: &str) -> Self {
        let mut addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            addrs.push(list.to_string());
        }
        Endpoints {
            addrs: Arc::new(addrs),
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The address in use (the last that answered).
    pub fn current(&self) -> &str {
        &self.addrs[self.preferred.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// How many addresses there are (at least one).
    fn count(&self) -> usize {
        self.addrs.len()
    }

    /// Connects to the current address, failing over to the others.
    pub async fn connect(&self) -> Result<TcpStream> {
        self.connect_past(0).await
    }

    /// As [`Endpoints::connect`], starting `skip` addresses past the
    /// current one (without preferring where it lands: those passed over
    /// were alive, only unable to serve one request).
    async fn connect_past(&self, skip: usize) -> Result<TcpStream> {
        let start = (self.preferred.load(Ordering::Relaxed) + skip) % self.addrs.len();
        // One address: the patient timeout; several: move on sooner.
        let timeout = match self.addrs.len() {
            1 => CONNECT_TIMEOUT,
            _ => FAILOVER_CONNECT_TIMEOUT,
        };
        let mut failures = Vec::new();
        for i in 0..self.addrs.len() {
            let n = (start + i) % self.addrs.len();
            let addr = &self.addrs[n];
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    if n != start && skip == 0 {
                        tracing::info!(to = %addr, "failed over");
                        self.preferred.store(n, Ordering::Relaxed);
                    }
                    return Ok(tcp);
                }
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: connection timed out")),
            }
        }
        Err(ClientError::Unreachable {
            addr: self.addrs.join(","),
            reason: match failures.len() {
                1 => failures
                    .remove(0)
                    .split_once(": ")
                    .map_or(String::new(), |(_, r)| r.to_string()),
                _ => failures.join("; "),
            },
        })
    }
}

/// A request body: bytes in memory, or a file streamed from disk.
type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Connections kept open for the next call.
type Idle = Arc<std::sync::Mutex<Vec<(std::time::Instant, SendRequest<ReqBody>)>>>;

/// What a call sends.
enum Payload<'a> {
    Empty,
    Bytes(Bytes, &'static str),
    /// A file, read as it is sent (a recording may be hundreds of MiB).
    File(&'a std::path::Path),
}

impl Payload<'_> {
    /// A fresh body, for each attempt.
    fn body(&self) -> std::io::Result<ReqBody> {
        Ok(match self {
            Payload::Empty => Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
            Payload::Bytes(b, _) => Full::new(b.clone()).map_err(|n| match n {}).boxed_unsync(),
            Payload::File(path) => FileBody {
                file: tokio::fs::File::from_std(std::fs::File::open(path)?),
                buf: vec![0; 64 << 10].into_boxed_slice(),
            }
            .boxed_unsync(),
        })
    }

    fn content_type(&self) -> Option<&'static str> {
        match self {
            Payload::Empty => None,
            Payload::Bytes(_, t) => Some(t),
            Payload::File(_) => Some("application/octet-stream"),
        }
    }

    /// How long the whole call may take: a file gets a second per MiB
    /// on top.
    fn timeout(&self) -> Duration {
        match self {
            Payload::File(p) => {
                let len = std::fs::metadata(p).map_or(0, |m| m.len());
                REQUEST_TIMEOUT + Duration::from_secs(len >> 20)
            }
            _ => REQUEST_TIMEOUT,
        }
    }
}

/// A file as a request body, in pieces as hyper asks for them.
struct FileBody {
    file: tokio::fs::File,
    buf: Box<[u8]>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::io::Result<hyper::body::Frame<Bytes>>>> {
        use std::task::Poll;
        let this = &mut *self;
        let mut read = tokio::io::ReadBuf::new(&mut this.buf);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut this.file), cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(hyper::body::Frame::data(
                Bytes::copy_from_slice(read.filled()),
            )))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Idle connections kept per client.
const MAX_IDLE: usize = 2;
/// An idle connection is reused only this long: servers close idle ones
/// (auth after 30 s), and a request must not race that close.
const IDLE_FOR: Duration = Duration::from_secs(15);

/// A client of one Warden API endpoint (at one or more addresses). Clones
/// share their kept-alive connections: build one per identity and reuse
/// it, and calls skip the TLS handshake.
#[derive(Clone)]
pub struct ApiClient {
    addr: String,
    endpoints: Endpoints,
    idle: Idle,
    server_name: ServerName<'static>,
    alpn: Vec<u8>,
    /// Shared by clones, so [`ApiClient::set_identity`] reaches them all.
    tls: Arc<std::sync::RwLock<Tls>>,
    extra_headers: Vec<(String, String)>,
}

/// How an [`ApiClient`] does TLS.
#[derive(Clone)]
struct Tls {
    verifier: Arc<ClusterVerifier>,
    config: Arc<rustls::ClientConfig>,
}

/// The host part of `host:port` (IPv6 in brackets allowed).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl ApiClient {
    /// A client for `addr` (`host:port`). `server_name` defaults to the
    /// host of `addr`.
    pub fn new(
        addr: &str,
        server_name: Option<&str>,
        trust: Trust,
        alpn: &[u8],
        client_cert: Option<&ClientCert>,
    ) -> Result<Self> {
        let endpoints = Endpoints::parse(addr);
        let name = server_name
            .unwrap_or_else(|| host_of(endpoints.current()))
            .to_string();
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            ClientError::Local(format!("{name:?} is not a valid host name or IP address"))
        })?;
        let verifier = ClusterVerifier::new(trust);
        let config = client_config(verifier.clone(), alpn, client_cert)?;
        Ok(ApiClient {
            addr: addr.to_string(),
            endpoints,
            idle: Default::default(),
            server_name,
            alpn: alpn.to_vec(),
            tls: Arc::new(std::sync::RwLock::new(Tls { verifier, config })),
            extra_headers: Vec::new(),
        })
    }

    /// Replaces the trust and client certificate of this client and all
    /// its clones (a service renewed its certificates). Calls in flight
    /// finish on their connections; idle ones are dropped.
    pub fn set_identity(&self, trust: Trust, client_cert: Option<&ClientCert>) -> Result<()> {
        let verifier = ClusterVerifier::new(trust);
        let config = client_config(verifier.clone(), &self.alpn, client_cert)?;
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Tls { verifier, config };
        // Kept-alive connections were made with the old identity (perhaps
        // one a rotation is retiring): none is reused.
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }

    /// A client of the same service (addresses, server name, trust, ALPN)
    /// presenting another certificate, sharing nothing with this one: the
    /// proxy acting for a web session with the certificate issued to it.
    pub fn as_identity(&self, client_cert: &ClientCert) -> Result<ApiClient> {
        let trust = self.current_tls().verifier.trust().clone();
        let verifier = ClusterVerifier::new(trust);
        let config = client_config(verifier.clone(), &self.alpn, Some(client_cert))?;
        Ok(ApiClient {
            addr: self.addr.clone(),
            endpoints: Endpoints::parse(&self.addr),
            idle: Default::default(),
            server_name: self.server_name.clone(),
            alpn: self.alpn.clone(),
            tls: Arc::new(std::sync::RwLock::new(Tls { verifier, config })),
            extra_headers: Vec::new(),
        })
    }

    fn current_tls(&self) -> Tls {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a header to every request (the proxy passes the client address).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// CA pins the server presented on the last handshake.
    pub fn presented_pins(&self) -> Vec<String> {
        self.current_tls()
            .verifier
            .presented
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn tls_error(&self, e: std::io::Error) -> ClientError {
        let presented = self.presented_pins();
        let text = e.to_string();
        if text.contains("CA pin mismatch") {
            return ClientError::PinMismatch {
                addr: self.addr.clone(),
                expected: match self.current_tls().verifier.trust() {
                    Trust::Pin(p) => p.clone(),
                    _ => String::new(),
                },
                presented: presented.join(", "),
            };
        }
        if text.contains("not yet trusted") {
            return ClientError::UntrustedCluster {
                addr: self.addr.clone(),
                presented: presented.first().cloned().unwrap_or_default(),
            };
        }
        let reason = if text.contains("CertificateRequired")
            || text.contains("certificate required")
        {
            "the server requires a client certificate; run 'warden login'".to_string()
        } else if text.contains("UnknownIssuer") {
            // Saved trust, and the server's CA is not in it: after a
            // tls CA rotation, a client that never renewed meanwhile.
            format!(
                    "the cluster presents a certificate from a CA this machine does not trust (presented: {}); if your admin rotated the cluster's tls CA, log in again with the new pin: warden login --ca-pin PIN ('warden admin ca ls' shows it)",
                    if presented.is_empty() { "none".to_string() } else { presented.join(", ") }
                )
        } else if text.contains("UnknownCA") || text.contains("BadCertificate") {
            "the server refused this machine's certificate (its CA key is no longer trusted, e.g. after a CA rotation); run 'warden login'".to_string()
        } else if text.contains("CertExpired") || text.contains("expired") {
            "a certificate has expired; run 'warden login'".to_string()
        } else {
            text
        };
        ClientError::Tls {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Opens a TLS connection (also used for raw streams later).
    pub async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connect_past(0).await
    }

    async fn connect_past(
        &self,
        skip: usize,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = self.endpoints.connect_past(skip).await?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(self.current_tls().config)
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.tls_error(e))
    }

    async fn call_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        self.call_json_limited(method, path, body, MAX_RESPONSE)
            .await
    }

    async fn call_json_limited<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        limit: usize,
    ) -> Result<T> {
        let body = match body {
            Some(b) => Payload::Bytes(
                serde_json::to_vec(b)
                    .map_err(|e| ClientError::Local(e.to_string()))?
                    .into(),
                "application/json",
            ),
            None => Payload::Empty,
        };
        let bytes = self.call_raw(method, path, body, limit).await?;
        self.parse(&bytes)
    }

    fn parse<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol {
            addr: self.addr.clone(),
            reason: format!("invalid JSON: {e}"),
        })
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Payload<'_>,
        limit: usize,
    ) -> Result<Bytes> {
        tokio::time::timeout(body.timeout(), self.call_inner(method, path, body, limit))
            .await
            .map_err(|_| self.timed_out())?
    }

    fn timed_out(&self) -> ClientError {
        ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: "request timed out".into(),
        }
    }

    /// An idle connection that is still open and recent enough.
    async fn reusable(&self) -> Option<SendRequest<ReqBody>> {
        loop {
            let (since, mut sender) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if since.elapsed() < IDLE_FOR && !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender` for the next call, if it can take one.
    fn keep(&self, sender: SendRequest<ReqBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((std::time::Instant::now(), sender));
        }
    }

    /// A failed request; under TLS 1.3 a server refuses a client
    /// certificate after the handshake, so its alert surfaces here.
    fn send_error(&self, e: hyper::Error) -> ClientError {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        if text.contains("received fatal alert") {
            return self.tls_error(std::io::Error::other(text));
        }
        self.proto(e.to_string())
    }

    fn proto(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Payload<'_>,
        limit: usize,
    ) -> Result<Bytes> {
        let (resp, sender) = self.exchange(method, path, body).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| self.proto(e.to_string()))?
            .to_bytes();
        if let Some(mut sender) = sender {
            if sender.ready().await.is_ok() {
                self.keep(sender);
            }
        }
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(body)
    }

    /// Sends a request, on a kept-alive connection if there is one: the
    /// answer, its body unread, and the connection if it may be kept.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Payload<'_>,
    ) -> Result<(
        hyper::Response<hyper::body::Incoming>,
        Option<SendRequest<ReqBody>>,
    )> {
        let proto = |reason: String| self.proto(reason);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", host_of(self.endpoints.current()))
            .header("user-agent", format!("warden/{}", warden_types::VERSION));
        if let Some(t) = body.content_type() {
            req = req.header("content-type", t);
        }
        for (k, v) in &self.extra_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let template = req
            .body(())
            .map_err(|e| ClientError::Local(e.to_string()))?;
        let (parts, _) = template.into_parts();
        // A kept-alive connection may have been closed by the server just
        // now: a request it never took (or, for a GET, any failure on it)
        // is sent again once on a new connection.
        let mut reused = self.reusable().await;
        // Servers passed over for answering 503 (e.g. an auth server
        // joining with a key that does not sign yet): the request goes to
        // the next address, once each.
        let mut skip = 0;
        // A server may also close a fresh connection before reading the
        // request (auth does at a CA rotation step, so clients reconnect
        // under the new trust): a GET is sent again, once.
        let mut fresh_retry = method == Method::GET;
        let (resp, sender) = loop {
            let was_reused = reused.is_some();
            // Why a fresh connection ended: a refused client certificate
            // (TLS 1.3 refuses it after the handshake) shows up there, while
            // the request itself only sees "canceled".
            let mut ended = None;
            let mut sender = match reused.take() {
                Some(s) => s,
                None => {
                    let tls = self.connect_past(skip).await?;
                    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                        .await
                        .map_err(|e| proto(e.to_string()))?;
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    ended = Some(rx);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            let _ = tx.send(e);
                        }
                    });
                    sender
                }
            };
            let req = Request::from_parts(
                parts.clone(),
                body.body().map_err(|e| ClientError::Local(e.to_string()))?,
            );
            match sender.send_request(req).await {
                Ok(resp)
                    if resp.status() == hyper::StatusCode::SERVICE_UNAVAILABLE
                        && skip + 1 < self.endpoints.count() =>
                {
                    skip += 1;
                    tracing::debug!(skip, "the server cannot serve this now; trying the next");
                }
                Ok(resp) => break (resp, sender),
                Err(e)
                    if was_reused
                        && (e.is_canceled()
                            || (method == Method::GET && e.is_incomplete_message())) =>
                {
                    continue
                }
                Err(e) if !was_reused && fresh_retry && e.is_incomplete_message() => {
                    fresh_retry = false;
                    tracing::debug!(
                        "the server closed a new connection unread; retrying the GET once"
                    );
                }
                Err(e) => {
                    let cause = match ended {
                        Some(rx) => tokio::time::timeout(Duration::from_millis(500), rx)
                            .await
                            .ok()
                            .and_then(|r| r.ok()),
                        None => None,
                    };
                    return Err(self.send_error(cause.unwrap_or(e)));
                }
            }
        };
        // A connection past the preferred server is not kept: the next
        // request tries the preferred one again.
        Ok((resp, (skip == 0).then_some(sender)))
    }

    /// Fetches the raw bytes at `path` of `e` as they arrive (a recording
    /// may be hundreds of MiB): read them with [`Download::next`].
    pub async fn download(&self, e: &Endpoint<(), Raw>, path: &str) -> Result<Download> {
        let (resp, _) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.exchange(method(e.method), path, Payload::Empty),
        )
        .await
        .map_err(|_| self.timed_out())??;
        let status = resp.status();
        if !status.is_success() {
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| self.proto(e.to_string()))?
                .to_bytes();
            return Err(api_error(status, &body));
        }
        Ok(Download {
            body: resp.into_body(),
            addr: self.addr.clone(),
        })
    }

    /// Calls endpoint `e` (declared in `warden_types::endpoints`) with
    /// `req`: its JSON body, or for `GET` and `DELETE` its query string.
    pub async fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        e: &Endpoint<Req, Resp>,
        req: &Req,
    ) -> Result<Resp> {
        self.call_at(e, &e.at(&[]), req).await
    }

    /// Calls endpoint `e` at `path`: its path with the parameters filled
    /// in (`e.at(&[..])`).
    pub async fn call_at<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        e: &Endpoint<Req, Resp>,
        path: &str,
        req: &Req,
    ) -> Result<Resp> {
        self.call_as(e, path, req).await
    }

    /// Calls endpoint `e` at `path` and reads its answer as `T`, the same
    /// JSON read another way: for tools that handle documents of every
    /// kind generically (`warden admin get`).
    pub async fn call_as<T: DeserializeOwned, Req: Serialize + ?Sized, Resp>(
        &self,
        e: &Endpoint<Req, Resp>,
        path: &str,
        req: &Req,
    ) -> Result<T> {
        match e.method {
            EndpointMethod::Get | EndpointMethod::Delete => {
                // `()` has no query; structs become `a=1&b=2`.
                let query = if std::mem::size_of_val(req) == 0 {
                    String::new()
                } else {
                    serde_urlencoded::to_string(req)
                        .map_err(|e| ClientError::Local(e.to_string()))?
                };
                let path = match query.is_empty() {
                    true => path.to_string(),
                    false => format!("{path}?{query}"),
                };
                self.call_json::<(), T>(method(e.method), &path, None).await
            }
            m => self.call_json(method(m), path, Some(req)).await,
        }
    }

    /// As [`ApiClient::call`] for a `POST`/`PUT` whose answer may be
    /// larger than the usual bound (a backup of a large cluster), up to
    /// `limit` bytes.
    pub async fn call_large<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        e: &Endpoint<Req, Resp>,
        req: &Req,
        limit: usize,
    ) -> Result<Resp> {
        self.call_json_limited(method(e.method), e.path, Some(req), limit)
            .await
    }

    /// Passes a JSON body to endpoint `e` untouched and returns the answer
    /// as it came (a proxy forwarding a public call it need not read).
    pub async fn forward_json<Req: ?Sized, Resp>(
        &self,
        e: &Endpoint<Req, Resp>,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        self.call_json(method(e.method), e.path, Some(body)).await
    }

    /// Sends a file (a session recording) to `path` of `e`, streaming it
    /// from disk, and parses its JSON answer.
    pub async fn put_file<Resp: DeserializeOwned>(
        &self,
        e: &Endpoint<Raw, Resp>,
        path: &str,
        file: &std::path::Path,
    ) -> Result<Resp> {
        let bytes = self
            .call_raw(method(e.method), path, Payload::File(file), MAX_RESPONSE)
            .await?;
        self.parse(&bytes)
    }
}

/// An answer's body, read as it arrives.
pub struct Download {
    body: hyper::body::Incoming,
    addr: String,
}

impl Download {
    /// The next bytes; `None` at the end. A server silent for a minute
    /// is an error.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            let frame = tokio::time::timeout(REQUEST_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| ClientError::Unreachable {
                    addr: self.addr.clone(),
                    reason: "the download stalled".into(),
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Protocol {
                        addr: self.addr.clone(),
                        reason: e.to_string(),
                    })
                }
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// An error answer as the caller's error: the API's own, or the status.
fn api_error(status: hyper::StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http".into(),
            message: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        },
    }
}

fn method(m: EndpointMethod) -> Method {
    match m {
        EndpointMethod::Get => Method::GET,
        EndpointMethod::Post => Method::POST,
        EndpointMethod::Put => Method::PUT,
        EndpointMethod::Patch => Method::PATCH,
        EndpointMethod::Delete => Method::DELETE,
    }
}
