//! Session recordings: nodes upload them when a session ends (or after a
//! crash); auditors list and fetch them, and every fetch is audited.

use crate::api::Caller;
use crate::error::{AuthError, Result};
use crate::server::AuthServer;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use warden_types::api::{RecordingInfo, RecordingQuery};
use warden_types::audit::{codes, AuditEvent};
use warden_types::resource::{resources as res, verbs};

/// Largest recording a node may upload (the node caps what it records).
pub const MAX_RECORDING: usize = 256 << 20;

pub fn routes() -> Router<AuthServer> {
    Router::new().route("/v1/recordings", get(list)).route(
        "/v1/recordings/{id}",
        get(fetch)
            .put(upload)
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
    if let Some(existing) = s.inner.recordings.info(&id).await? {
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
    s.inner.recordings.put(&info, data).await?;
    Ok(Json(info))
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
