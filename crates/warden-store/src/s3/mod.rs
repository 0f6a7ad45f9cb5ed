//! Recordings in S3-compatible object storage (AWS S3, MinIO, Ceph...),
//! shared by every auth server: one object for a recording (uploaded in
//! parts when large) and one for its metadata, written after the data so a
//! metadata object always means a complete recording.
//!
//! `s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=REGION`; the keys
//! come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
//! `AWS_SESSION_TOKEN`). Without `endpoint`, AWS S3 in `region`.

pub mod sigv4;

use crate::backend::StoreError;
use crate::recordings::{is_session_id, RecordingStore, RecordingStream, Upload};
use crate::Result;
use async_trait::async_trait;
use hyper::body::Bytes;
use hyper::Method;
use sigv4::{sha256_hex, uri_encode, Credentials};
use std::sync::Arc;
use warden_types::api::RecordingInfo;

/// Recordings larger than this go up in parts of this size (S3's minimum
/// part is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// How long a download may wait for S3's next bytes.
const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// The largest answer to anything else (listings, errors).
const MAX_SMALL: usize = 16 << 20;

/// S3 [`RecordingStore`].
#[derive(Clone)]
pub struct S3RecordingStore {
    tls: Arc<rustls::ClientConfig>,
    https: bool,
    host: String,
    port: u16,
    /// Bucket in the host name (AWS) or in the path (endpoints).
    virtual_host: bool,
    bucket: String,
    prefix: String,
    region: String,
    creds: Credentials,
}

fn err(text: impl Into<String>) -> StoreError {
    StoreError::Backend(text.into())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of the first `<tag>` in `xml`, unescaped.
fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml_unescape(&xml[start..end]))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn valid_id(id: &str) -> Result<()> {
    if is_session_id(id) {
        Ok(())
    } else {
        Err(err(format!("invalid session id {id:?}")))
    }
}

impl S3RecordingStore {
    /// Parses `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]` and
    /// reads the keys from the environment.
    pub fn from_url(url: &str) -> Result<Self> {
        let usage = "expected s3://BUCKET[/PREFIX][?endpoint=http(s)://HOST:PORT&region=REGION]";
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| err(format!("{url:?}: {usage}")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(err(format!(
                "{url:?}: bucket names are lower-case letters, digits, '-' and '.'; {usage}"
            )));
        }
        let mut prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        let (mut endpoint, mut region) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "endpoint" => endpoint = Some(percent_decode(v)),
                "region" => region = Some(percent_decode(v)),
                _ => return Err(err(format!("{url:?}: unknown parameter {k:?}; {usage}"))),
            }
        }
        let region = region
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let (https, host, port, virtual_host) = match &endpoint {
            Some(e) => {
                let t = warden_http::parse_url(e).map_err(|e| err(format!("endpoint: {e}")))?;
                (t.https, t.host, t.port, false)
            }
            None => (true, format!("s3.{region}.amazonaws.com"), 443, true),
        };
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(access_key), Some(secret_key)) =
            (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(err(
                "recordings on S3 need AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
            ));
        };
        Ok(S3RecordingStore {
            tls: warden_http::tls_config(),
            https,
            host,
            port,
            virtual_host,
            bucket: bucket.to_string(),
            prefix,
            region,
            creds: Credentials {
                access_key,
                secret_key,
                session_token: var("AWS_SESSION_TOKEN"),
            },
        })
    }

    /// Where the store points, for messages (no secrets).
    pub fn describe(&self) -> String {
        format!(
            "s3://{}/{} at {}://{}:{}",
            self.bucket,
            self.prefix,
            if self.https { "https" } else { "http" },
            self.host,
            self.port
        )
    }

    /// One signed request for `key` (`None`: the bucket itself).
    async fn request(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(String, String)],
        body: Bytes,
        max_body: usize,
    ) -> Result<warden_http::Response> {
        let (url, headers) = self.sign(&method, key, query, &body)?;
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // An S3 that does not answer must not hold an upload (or start-up)
        // forever: 30 s, plus a second per MiB sent.
        let wait = std::time::Duration::from_secs(30 + (body.len() >> 20) as u64);
        tokio::time::timeout(
            wait,
            warden_http::send(&self.tls, method, &url, &headers, body, max_body),
        )
        .await
        .map_err(|_| self.silent(wait))?
        .map_err(|e| err(format!("S3 at {}: {e}", self.describe())))
    }

    fn silent(&self, wait: std::time::Duration) -> StoreError {
        err(format!(
            "S3 at {} did not answer within {wait:?}",
            self.describe()
        ))
    }

    /// The URL and headers (signature included) of a request.
    fn sign(
        &self,
        method: &Method,
        key: Option<&str>,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<(String, Vec<(String, String)>)> {
        let mut path = String::new();
        if !self.virtual_host {
            path.push('/');
            path.push_str(&self.bucket);
        }
        match key {
            Some(k) => {
                path.push('/');
                path.push_str(&uri_encode(&format!("{}{k}", self.prefix), true));
            }
            None if self.virtual_host => path.push('/'),
            None => {}
        }
        let host = match self.virtual_host {
            true => format!("{}.{}", self.bucket, self.host),
            false => self.host.clone(),
        };
        let authority = match (self.https, self.port) {
            (true, 443) | (false, 80) => host.clone(),
            _ => format!("{host}:{}", self.port),
        };
        let amz_date = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .map_err(|e| err(e.to_string()))?;
        let payload_hash = sha256_hex(body);
        let mut headers = vec![
            ("host".to_string(), authority),
            ("x-amz-content-sha256".to_string(), payload_hash.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        if let Some(token) = &self.creds.session_token {
            headers.push(("x-amz-security-token".to_string(), token.clone()));
        }
        let auth = sigv4::authorization(
            &self.creds,
            &sigv4::Request {
                method: method.as_str(),
                path: &path,
                query,
                headers: &headers,
                payload_hash: &payload_hash,
                region: &self.region,
                amz_date: &amz_date,
            },
        );
        let query_string = sigv4::canonical_query(query);
        let url = format!(
            "{}://{host}:{}{path}{}{query_string}",
            if self.https { "https" } else { "http" },
            self.port,
            if query.is_empty() { "" } else { "?" },
        );
        headers.retain(|(k, _)| k != "host");
        headers.push(("authorization".to_string(), auth));
        headers.push(("content-length".to_string(), body.len().to_string()));
        Ok((url, headers))
    }

    /// Fails unless `resp` is a success, naming S3's error code.
    fn check(&self, what: &str, resp: warden_http::Response) -> Result<warden_http::Response> {
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        let text = String::from_utf8_lossy(&resp.body);
        let code = xml_tag(&text, "Code").unwrap_or_default();
        let hint = match code.as_str() {
            "NoSuchBucket" => "; create the bucket first",
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" => {
                "; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy"
            }
            _ => "",
        };
        Err(err(format!(
            "S3 {what} in {}: HTTP {} {code}{hint}",
            self.describe(),
            resp.status
        )))
    }

    /// Checks that the bucket exists and the keys work; at start, so a
    /// wrong URL or key is found before the first recording.
    pub async fn probe(&self) -> Result<()> {
        let q = [
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), "1".to_string()),
            ("prefix".to_string(), self.prefix.clone()),
        ];
        let resp = self
            .request(Method::GET, None, &q, Bytes::new(), MAX_SMALL)
            .await?;
        self.check("listing", resp).map(|_| ())
    }

    /// Creates the bucket (for first setups and tests).
    pub async fn create_bucket(&self) -> Result<()> {
        let resp = self
            .request(Method::PUT, None, &[], Bytes::new(), MAX_SMALL)
            .await?;
        self.check("bucket creation", resp).map(|_| ())
    }

    /// One object in one request (metadata, a short recording).
    async fn put_object(&self, key: &str, data: Bytes) -> Result<()> {
        let resp = self
            .request(Method::PUT, Some(key), &[], data, MAX_SMALL)
            .await?;
        self.check(&format!("upload of {key}"), resp).map(|_| ())
    }

    /// Starts a multipart upload of `key`: its upload id.
    async fn start_multipart(&self, key: &str) -> Result<String> {
        let resp = self
            .request(
                Method::POST,
                Some(key),
                &[("uploads".to_string(), String::new())],
                Bytes::new(),
                MAX_SMALL,
            )
            .await?;
        let resp = self.check(&format!("upload of {key}"), resp)?;
        xml_tag(&String::from_utf8_lossy(&resp.body), "UploadId")
            .ok_or_else(|| err("S3 started a multipart upload without an UploadId"))
    }

    /// Sends part `number` of an upload: its ETag.
    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: usize,
        part: Bytes,
    ) -> Result<String> {
        let q = [
            ("partNumber".to_string(), number.to_string()),
            ("uploadId".to_string(), upload_id.to_string()),
        ];
        let resp = self
            .request(Method::PUT, Some(key), &q, part, MAX_SMALL)
            .await?;
        let resp = self.check(&format!("part {number} of {key}"), resp)?;
        resp.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| err(format!("S3 returned no ETag for part {number} of {key}")))
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<()> {
        let mut parts = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            parts.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(etag)
            ));
        }
        parts.push_str("</CompleteMultipartUpload>");
        let q = [("uploadId".to_string(), upload_id.to_string())];
        let resp = self
            .request(Method::POST, Some(key), &q, Bytes::from(parts), MAX_SMALL)
            .await?;
        let resp = self.check(&format!("completion of {key}"), resp)?;
        // S3 may answer 200 with an error document for a failed completion.
        let text = String::from_utf8_lossy(&resp.body);
        if text.contains("<Error>") {
            return Err(err(format!(
                "S3 completion of {key}: {}",
                xml_tag(&text, "Code").unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Parts of an abandoned upload cost storage until aborted.
    async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let q = [("uploadId".to_string(), upload_id.to_string())];
        if let Err(e) = self
            .request(Method::DELETE, Some(key), &q, Bytes::new(), MAX_SMALL)
            .await
        {
            tracing::warn!(%key, error = %e, "cannot abort an S3 multipart upload; a bucket lifecycle rule for incomplete uploads removes its parts");
        }
    }

    /// An object read as it arrives (a recording: too large to hold).
    async fn download(&self, key: &str) -> Result<Option<RecordingStream>> {
        use futures_util::StreamExt;
        use http_body_util::BodyExt;
        let (url, headers) = self.sign(&Method::GET, Some(key), &[], &[])?;
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let resp = tokio::time::timeout(
            READ_IDLE,
            warden_http::send_streaming(&self.tls, Method::GET, &url, &headers, Bytes::new()),
        )
        .await
        .map_err(|_| self.silent(READ_IDLE))?
        .map_err(|e| err(format!("S3 at {}: {e}", self.describe())))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            let headers = resp.headers().clone();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_SMALL)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let resp = warden_http::Response {
                status,
                headers,
                body,
            };
            return self
                .check(&format!("download of {key}"), resp)
                .map(|_| None);
        }
        let what = format!("S3 download of {key} from {}", self.describe());
        let stream = futures_util::stream::unfold(Some(resp.into_body()), move |body| {
            let what = what.clone();
            async move {
                let mut body = body?;
                loop {
                    let failed = |e: String| {
                        Some((Err(std::io::Error::other(format!("{what}: {e}"))), None))
                    };
                    match tokio::time::timeout(READ_IDLE, body.frame()).await {
                        Err(_) => return failed(format!("no data for {READ_IDLE:?}")),
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => return failed(e.to_string()),
                        Ok(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                return Some((Ok(data), Some(body)));
                            }
                        }
                    }
                }
            }
        });
        Ok(Some(stream.boxed()))
    }

    async fn get_object(&self, key: &str, max: usize) -> Result<Option<Bytes>> {
        let resp = self
            .request(Method::GET, Some(key), &[], Bytes::new(), max)
            .await?;
        if resp.status == 404 {
            return Ok(None);
        }
        Ok(Some(self.check(&format!("download of {key}"), resp)?.body))
    }

    /// Keys under the prefix ending in `suffix`, without the prefix.
    async fn keys(&self, suffix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("list-type".to_string(), "2".to_string()),
                ("prefix".to_string(), self.prefix.clone()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".to_string(), t.clone()));
            }
            let resp = self
                .request(Method::GET, None, &q, Bytes::new(), MAX_SMALL)
                .await?;
            let resp = self.check("listing", resp)?;
            let text = String::from_utf8_lossy(&resp.body).into_owned();
            let mut rest = text.as_str();
            while let Some(i) = rest.find("<Key>") {
                let after = &rest[i..];
                if let Some(k) = xml_tag(after, "Key") {
                    if let Some(name) = k.strip_prefix(&self.prefix) {
                        if name.ends_with(suffix) && !name.contains('/') {
                            out.push(name.to_string());
                        }
                    }
                }
                rest = &after[5..];
            }
            token = match xml_tag(&text, "IsTruncated").as_deref() {
                Some("true") => xml_tag(&text, "NextContinuationToken"),
                _ => None,
            };
            if token.is_none() {
                return Ok(out);
            }
        }
    }
}

#[async_trait]
impl RecordingStore for S3RecordingStore {
    async fn begin(&self, session_id: &str) -> Result<Box<dyn Upload>> {
        valid_id(session_id)?;
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: format!("{session_id}.wrec"),
            meta: format!("{session_id}.json"),
            buffer: Vec::new(),
            multipart: None,
            etags: Vec::new(),
            failed: false,
        }))
    }

    async fn get(&self, session_id: &str) -> Result<Option<RecordingStream>> {
        valid_id(session_id)?;
        if self.info(session_id).await?.is_none() {
            return Ok(None);
        }
        self.download(&format!("{session_id}.wrec")).await
    }

    async fn info(&self, session_id: &str) -> Result<Option<RecordingInfo>> {
        valid_id(session_id)?;
        Ok(self
            .get_object(&format!("{session_id}.json"), MAX_SMALL)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn list(&self) -> Result<Vec<RecordingInfo>> {
        let mut out = Vec::new();
        for key in self.keys(".json").await? {
            if let Some(b) = self.get_object(&key, MAX_SMALL).await? {
                if let Ok(info) = serde_json::from_slice::<RecordingInfo>(&b) {
                    out.push(info);
                }
            }
        }
        out.sort_by_key(|i: &RecordingInfo| std::cmp::Reverse(i.start));
        Ok(out)
    }
}

/// A recording going up as it arrives: in parts of [`PART_SIZE`] once it
/// outgrows one, so at most a part is held; a short one in one request.
/// The metadata object goes last, so it always means a whole recording.
struct S3Upload {
    store: S3RecordingStore,
    key: String,
    meta: String,
    buffer: Vec<u8>,
    /// The multipart upload's id, once one is needed.
    multipart: Option<String>,
    /// ETags of the parts sent.
    etags: Vec<String>,
    /// A part failed: its bytes are gone, so this upload can only abort.
    failed: bool,
}

impl S3Upload {
    async fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        let id = match &self.multipart {
            Some(id) => id.clone(),
            None => {
                let id = self.store.start_multipart(&self.key).await?;
                self.multipart = Some(id.clone());
                id
            }
        };
        let number = self.etags.len() + 1;
        let etag = self
            .store
            .put_part(&self.key, &id, number, Bytes::from(part))
            .await?;
        self.etags.push(etag);
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.failed {
            return Err(err("this upload failed before; start it again"));
        }
        let mut data = &data[..];
        while !data.is_empty() {
            if self.buffer.capacity() == 0 {
                // Exactly a part: one allocation, never doubled.
                self.buffer.reserve_exact(PART_SIZE);
            }
            let take = (PART_SIZE - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == PART_SIZE {
                let part = std::mem::take(&mut self.buffer);
                if let Err(e) = self.send_part(part).await {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>, info: &RecordingInfo) -> Result<()> {
        if self.failed {
            return Err(err("this upload failed before; start it again"));
        }
        let json = serde_json::to_vec(info).map_err(|e| err(e.to_string()))?;
        let buffer = std::mem::take(&mut self.buffer);
        match self.multipart.clone() {
            None => {
                self.store
                    .put_object(&self.key, Bytes::from(buffer))
                    .await?
            }
            Some(id) => {
                if !buffer.is_empty() {
                    self.send_part(buffer).await?;
                }
                self.store
                    .complete_multipart(&self.key, &id, &self.etags)
                    .await?;
                self.multipart = None;
            }
        }
        self.store.put_object(&self.meta, Bytes::from(json)).await
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(id) = self.multipart.take() {
            self.store.abort_multipart(&self.key, &id).await;
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Neither committed nor aborted (the caller went away): abort in
        // the background.
        if let (Some(id), Ok(rt)) = (self.multipart.take(), tokio::runtime::Handle::try_current()) {
            let (store, key) = (self.store.clone(), self.key.clone());
            rt.spawn(async move { store.abort_multipart(&key, &id).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        std::env::set_var("AWS_ACCESS_KEY_ID", "k");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "s");
        let s = S3RecordingStore::from_url(
            "s3://recs/cluster-a/?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1",
        )
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.https, s.virtual_host),
            ("127.0.0.1", 9000, false, false)
        );
        assert_eq!(
            (s.prefix.as_str(), s.region.as_str()),
            ("cluster-a/", "eu-west-1")
        );
        let s = S3RecordingStore::from_url("s3://recs?region=eu-west-1").unwrap();
        assert_eq!(s.host, "s3.eu-west-1.amazonaws.com");
        assert!(s.virtual_host && s.https && s.prefix.is_empty());
        for bad in ["s3://", "s3://Bad_Bucket/x", "http://x", "s3://b?bogus=1"] {
            assert!(S3RecordingStore::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn xml() {
        let x = "<R><Key>a&amp;b</Key><ETag>&quot;e&quot;</ETag></R>";
        assert_eq!(xml_tag(x, "Key").as_deref(), Some("a&b"));
        assert_eq!(xml_tag(x, "ETag").as_deref(), Some("\"e\""));
        assert_eq!(xml_tag(x, "None"), None);
        assert_eq!(percent_decode("a%2Fb+c%zz"), "a/b c%zz");
    }
}
