//! Outgoing HTTP(S) requests: the auth service's webhook deliveries and
//! OpenID Connect calls, and the S3 recording store's requests. One request
//! per connection; https is verified against the system roots.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where a request goes.
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

/// The system's trust roots (Debian's bundle).
pub fn root_store() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter("/etc/ssl/certs/ca-certificates.crt") {
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
    }
    roots
}

/// A client config trusting the system roots.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = root_store();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A response: status, headers and body (bounded).
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Sends one request to `url` and reads at most `max_body` bytes of the
/// answer. Errors are phrased for people ("cannot connect to ...").
pub async fn send(
    tls: &Arc<rustls::ClientConfig>,
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    max_body: usize,
) -> Result<Response, String> {
    let resp = send_streaming(tls, method, url, headers, body).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// As [`send`], but the answer's body is left to read as it arrives (a
/// download too large to hold).
pub async fn send_streaming(
    tls: &Arc<rustls::ClientConfig>,
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let t = parse_url(url)?;
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
    let authority = if t.port == 80 || t.port == 443 {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let mut req = Request::builder()
        .method(method)
        .uri(t.path.as_str())
        .header("host", authority)
        .header("user-agent", concat!("warden/", env!("CARGO_PKG_VERSION")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    if t.https {
        let name = ServerName::try_from(t.host.clone()).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", t.host))?;
        exchange(stream, req).await
    } else {
        exchange(tcp, req).await
    }
}

async fn exchange<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
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
}
