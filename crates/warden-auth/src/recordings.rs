//! Session recordings: nodes upload them when a session ends (or after a
//! crash); auditors list and fetch them, and every fetch is audited.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::routes::{serving, Serve};
use crate::server::AuthServer;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use warden_types::api::{RecordingInfo, RecordingQuery};
use warden_types::audit::{codes, AuditEvent};
use warden_types::endpoints;
use warden_types::resource::{resources as res, verbs};

/// Largest recording a node may upload (the node caps what it records).
pub const MAX_RECORDING: usize = 256 << 20;

pub fn routes() -> Router<AuthServer> {
    Router::new()
        .serve(&endpoints::RECORDINGS, list)
        .serve(&endpoints::RECORDING, fetch)
        .route(
            endpoints::UPLOAD_RECORDING.path,
            serving(&endpoints::UPLOAD_RECORDING, upload)
                .layer(DefaultBodyLimit::max(MAX_RECORDING)),
        )
}

/// Stores a node's recording once it decodes; acknowledged only when
/// durable. Idempotent: a retried upload of a stored session is a no-op.
async fn upload(
    State(s): State<AuthServer>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
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
    // Checked, not decoded: output that compressed well would take many
    // times the upload's size in memory as events.
    let (scanned, data) = tokio::task::spawn_blocking(move || {
        let data: Vec<u8> = body.into();
        (warden_recording::scan(&data), data)
    })
    .await
    .map_err(|e| AuthError::Internal(e.to_string()))?;
    let scanned = scanned.map_err(|e| AuthError::BadRequest(format!("recording {id}: {e}")))?;
    let w = &scanned.header.warden;
    if w.session_id != id {
        return Err(AuthError::BadRequest(format!(
            "recording is of session {:?}, not {id:?}",
            w.session_id
        )));
    }
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
        size: data.len() as u64,
        events: scanned.events,
        truncated: scanned.truncated,
    };
    let put = s.inner.recordings.put(&info, data).await;
    s.recording_store(put, true)?;
    Ok(Json(info))
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
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data))
}
