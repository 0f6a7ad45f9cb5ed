//! Session recordings: nodes upload them when a session ends (or after a
//! crash); auditors list and fetch them, and every fetch is audited.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::routes::{serving, Serve};
use crate::server::AuthServer;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use http_body_util::BodyExt;
use warden_types::api::{RecordingInfo, RecordingQuery};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::{resources as res, verbs};

/// Largest recording a node may upload (the node caps what it records).
pub const MAX_RECORDING: usize = 256 << 20;
/// Uploads an auth server receives at once; more wait their turn. Each
/// holds at most a chunk being checked (4 MiB, and as much decompressed)
/// and, for S3, a part (8 MiB).
pub(crate) const CONCURRENT_UPLOADS: usize = 8;

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::RECORDINGS, list)
        .serve(&endpoints::RECORDING, fetch)
        // The body streams to the store; `receive` bounds it.
        .route(
            endpoints::UPLOAD_RECORDING.path,
            serving(&endpoints::UPLOAD_RECORDING, upload).layer(DefaultBodyLimit::disable()),
        )
}

/// Stores a node's recording as it arrives, checking it on the way:
/// acknowledged only once it reads as a whole and is durable; refused (and
/// its parts dropped) at the first bad byte. Idempotent: a retried upload
/// of a stored session is a no-op.
async fn upload(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<RecordingInfo>> {
    let node = crate::nodes::require_node(&c)?.to_string();
    // Checked before the store sees it: a bad id is not a store outage.
    if !warden_store::is_session_id(&id) {
        return Err(AuthError::BadRequest(format!(
            "{:?} is not a session id",
            id.chars().take(64).collect::<String>()
        )));
    }
    let stored = s.inner.recordings.info(&id).await;
    if let Some(existing) = s.recording_store(stored, false)? {
        return Ok(Json(existing));
    }
    let _slot = s
        .inner
        .upload_slots
        .acquire()
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    let begun = s.inner.recordings.begin(&id).await;
    let mut upload = s.recording_store(begun, false)?;
    let (scanned, size) = match receive(&s, &id, body, upload.as_mut()).await {
        Ok(r) => r,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    let w = &scanned.header.warden;
    let info = RecordingInfo {
        session_id: id,
        user: w.user.clone(),
        login: w.login.clone(),
        // The node speaks for itself only.
        node,
        node_name: w.node_name.clone(),
        command: w.command.clone(),
        start: scanned.header.timestamp,
        duration_ms: (scanned.duration * 1000.0) as u64,
        size,
        events: scanned.events,
        truncated: scanned.truncated,
    };
    let committed = upload.commit(&info).await;
    s.recording_store(committed, true)?;
    Ok(Json(info))
}

/// Passes an upload's body to the store piece by piece, checked as it
/// goes: checked, not decoded, so memory stays at a chunk and a part
/// however large the recording (output that compressed well would take
/// many times its size as events).
async fn receive(
    s: &AuthServer,
    id: &str,
    mut body: Body,
    upload: &mut dyn warden_store::Upload,
) -> Result<(warden_recording::Summary, u64)> {
    let bad = |e: &dyn std::fmt::Display| AuthError::BadRequest(format!("recording {id}: {e}"));
    let mut reader = warden_recording::scanner();
    let mut size = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(&format!("the upload broke off: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > MAX_RECORDING as u64 {
            return Err(bad(&format!(
                "larger than {} MiB, the most a node records",
                MAX_RECORDING >> 20
            )));
        }
        reader.push(&data).map_err(|e| bad(&e))?;
        // The header is in the first chunk: checked before a part is sent.
        if let Some(h) = reader.header() {
            same_session(&h.warden.session_id, id)?;
        }
        let written = upload.write(data).await;
        s.recording_store(written, false)?;
    }
    // Every header is read in a push, so it was checked above.
    let scanned = reader.finish().map_err(|e| bad(&e))?;
    Ok((scanned, size))
}

fn same_session(recorded: &str, id: &str) -> Result<()> {
    match recorded == id {
        true => Ok(()),
        false => Err(AuthError::BadRequest(format!(
            "recording is of session {recorded:?}, not {id:?}"
        ))),
    }
}

/// An outage of the recording store, as uploads see it.
struct Outage {
    since: std::time::Instant,
    /// Store calls that failed during it.
    failures: u64,
}

/// The recording store's health: an outage starts at the first failed
/// store call of an upload and ends, with a `recordings.outage` audit
/// event, at the first upload stored again. Meanwhile the nodes keep their
/// recordings (nothing is acknowledged before it is durable) and send them
/// again every few seconds, so the end is seen within seconds of the store
/// taking writes again; a store that answers reads but refuses writes is
/// still out.
#[derive(Default)]
pub(crate) struct StoreHealth(std::sync::Mutex<Option<Outage>>);

impl AuthServer {
    /// Passes a store result through, noting failures; `stored`: this was
    /// the write that makes an upload durable, so its success ends an
    /// outage.
    fn recording_store<T>(&self, r: warden_store::Result<T>, stored: bool) -> Result<T> {
        match r {
            Ok(v) => {
                if stored {
                    self.recording_store_works();
                }
                Ok(v)
            }
            Err(warden_store::StoreError::Backend(e)) => {
                self.recording_store_failed(&e);
                Err(AuthError::Unavailable(format!(
                    "the recording store is unavailable ({e}); the node keeps the recording and sends it again"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn recording_store_failed(&self, error: &str) {
        let mut health = self
            .inner
            .recording_health
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match health.as_mut() {
            Some(o) => o.failures += 1,
            None => {
                tracing::warn!(%error, "the recording store is unavailable; recordings wait on the nodes");
                *health = Some(Outage {
                    since: std::time::Instant::now(),
                    failures: 1,
                });
                // Under the lock, so a concurrent end cannot overwrite it.
                warden_types::metrics::METRICS
                    .recording_store_failing
                    .set(1);
            }
        }
    }

    fn recording_store_works(&self) {
        let outage = {
            let mut health = self
                .inner
                .recording_health
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let outage = health.take();
            if outage.is_some() {
                warden_types::metrics::METRICS
                    .recording_store_failing
                    .set(0);
            }
            outage
        };
        let Some(o) = outage else {
            return;
        };
        let seconds = o.since.elapsed().as_secs();
        tracing::info!(
            seconds,
            failures = o.failures,
            "the recording store is back"
        );
        let s = self.clone();
        tokio::spawn(async move {
            s.audit(
                AuditEvent::new(
                    codes::RECORDINGS_OUTAGE,
                    s.cluster(),
                    "warden",
                    format!(
                        "the recording store was unavailable for about {seconds}s; {} store call(s) failed, and the nodes kept their recordings and sent them again",
                        o.failures
                    ),
                )
                .with("seconds", seconds)
                .with("failures", o.failures),
            )
            .await;
        });
    }
}

async fn list(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Query(q): Query<RecordingQuery>,
) -> Result<Json<Vec<RecordingInfo>>> {
    s.authorize(&c, res::SESSION, verbs::LIST).await?;
    let all = s.inner.recordings.list().await?;
    Ok(Json(
        all.into_iter()
            .filter(|r| q.user.as_ref().is_none_or(|u| &r.user == u))
            .filter(|r| {
                q.node
                    .as_ref()
                    .is_none_or(|n| &r.node == n || &r.node_name == n)
            })
            .filter(|r| q.since.is_none_or(|t| r.start >= t))
            .collect(),
    ))
}

async fn fetch(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse> {
    s.authorize(&c, res::SESSION, verbs::READ).await?;
    // Not an id at all: say so plainly, not as a storage error.
    if !warden_store::is_session_id(&id) {
        return Err(AuthError::NotFound(format!(
            "no recording with id {:?}; 'warden recordings ls' lists them",
            id.chars().take(64).collect::<String>()
        )));
    }
    let data = s
        .inner
        .recordings
        .get(&id)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no recording of session {id}; 'warden recordings ls' lists them (a session's recording arrives when it ends)")))?;
    let mut ev = AuditEvent::new(
        codes::RECORDING_PLAY,
        s.cluster(),
        &c.identity.username,
        format!("fetched the recording of session {id}"),
    );
    ev.session_id = Some(id);
    s.audit(ev).await;
    // Streamed from the store: auth holds a piece at a time.
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(data),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use std::collections::VecDeque;

    /// A request body that arrives in the given pieces.
    struct Pieces(VecDeque<Bytes>);

    impl hyper::body::Body for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Bytes>, Self::Error>>>
        {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    fn recording(session: &str) -> Vec<u8> {
        let mut e = warden_recording::Encoder::new(&warden_recording::Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1_700_000_000,
            title: None,
            warden: warden_recording::SessionInfo {
                session_id: session.into(),
                user: "alice".into(),
                login: "root".into(),
                ..Default::default()
            },
        });
        // Incompressible output, so the file spans many chunks.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut out = Vec::new();
        for i in 0..48 {
            let bytes: Vec<u8> = (0..65_536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            e.output(i as f64, &bytes);
            out.extend(e.ready().unwrap_or_default());
        }
        out.extend(e.flush().unwrap_or_default());
        out
    }

    async fn send(s: &AuthServer, id: &str, data: &[u8]) -> Result<Json<RecordingInfo>> {
        let caller = Caller {
            identity: warden_types::Identity {
                kind: warden_types::IdentityKind::Node,
                username: "node-1".into(),
                cluster: s.cluster().to_string(),
                roles: vec![],
                logins: vec![],
                traits: Default::default(),
                requests: vec![],
                expires: i64::MAX,
                login_expires: 0,
                user_id: String::new(),
            },
            addr: "127.0.0.1:1".parse().unwrap(),
            public_key: vec![],
            not_after: i64::MAX,
        };
        // Pieces that straddle the recording's chunks.
        let pieces = data.chunks(100_003).map(Bytes::copy_from_slice).collect();
        upload(
            State(s.clone()),
            Extension(caller),
            Path(id.to_string()),
            Body::new(Pieces(pieces)),
        )
        .await
    }

    /// Uploads are checked as they stream into the store: a good one is
    /// stored byte for byte; one that goes bad after many chunks, or is
    /// another session's, is refused and leaves nothing behind.
    #[tokio::test]
    async fn uploads_stream_into_the_store_checked() {
        let dir = std::env::temp_dir().join(format!("warden-upload-{}", uuid::Uuid::new_v4()));
        let s = AuthServer::open(&dir, None, &Default::default())
            .await
            .unwrap();
        let id = "0193a5e0-0000-7000-8000-00000000000a";
        let good = recording(id);
        assert!(good.len() > 3 << 20);

        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1000] ^= 0x55;
        let e = send(&s, id, &bad).await.unwrap_err().to_string();
        assert!(
            e.contains("corrupt recording") || e.contains("chunk"),
            "{e}"
        );
        let other = send(&s, "0193a5e0-0000-7000-8000-00000000000b", &good)
            .await
            .unwrap_err()
            .to_string();
        assert!(other.contains("is of session"), "{other}");
        let files = || {
            std::fs::read_dir(dir.join("recordings"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert!(files().is_empty(), "refused uploads left {:?}", files());

        let Json(info) = send(&s, id, &good).await.unwrap();
        assert_eq!(
            (info.size, info.events, info.truncated),
            (good.len() as u64, 48, false)
        );
        let stored = s.inner.recordings.get(id).await.unwrap().unwrap();
        assert!(warden_store::read_all(stored).await.unwrap() == good);
        // A recording cut by a crash is kept, marked.
        let cut_id = "0193a5e0-0000-7000-8000-00000000000c";
        let cut = recording(cut_id);
        let Json(info) = send(&s, cut_id, &cut[..cut.len() / 2]).await.unwrap();
        assert!(info.truncated && info.events > 0 && info.events < 48);
        assert_eq!(files().len(), 4, "{:?}", files());
        let _ = std::fs::remove_dir_all(dir);
    }
}
