//! A recording for the page's player, streamed as it downloads: the page
//! starts playing once the first lines arrive, whatever the length.
//!
//! The body is JSON lines, asciicast v2 with the markers kept: the header,
//! then `[seconds, "o" | "r" | "m", data]` per event, then one last line,
//! `{"end": {"truncated": BOOL}}`, or `{"error": WHY}` when the recording
//! turns out corrupt part-way (the status line is long gone by then).
//! Auth checks the right to read it and audits the playback, as for
//! `warden play`.

use super::Authed;
use crate::public::error_response;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use warden_recording::{Item, Reader};
use warden_types::endpoints;

/// Pieces in flight between the download and the browser: a slow browser
/// slows the download, so the proxy holds little of any recording.
const IN_FLIGHT: usize = 8;

pub(super) async fn events(Authed(s): Authed, Path(id): Path<String>) -> Response {
    let mut download = match s
        .api
        .download(&endpoints::RECORDING, &endpoints::RECORDING.at(&[&id]))
        .await
    {
        Ok(d) => d,
        Err(e) => return error_response(e),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(IN_FLIGHT);
    tokio::spawn(async move {
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let mut reader = Reader::new(move |item| {
            let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
            line(&mut out, &item);
        });
        let take = || std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
        let end = loop {
            match download.next().await {
                Ok(Some(piece)) => {
                    if let Err(e) = reader.push(&piece) {
                        break serde_json::json!({ "error": e.to_string() });
                    }
                    let batch = take();
                    if !batch.is_empty() && tx.send(batch.into()).await.is_err() {
                        return; // the browser left
                    }
                }
                Ok(None) => match reader.finish() {
                    Ok(summary) => {
                        break serde_json::json!({ "end": { "truncated": summary.truncated } })
                    }
                    Err(e) => break serde_json::json!({ "error": e.to_string() }),
                },
                Err(e) => {
                    break serde_json::json!({ "error": format!("the download from auth failed: {e}") })
                }
            }
        };
        let mut last = take();
        last.extend_from_slice(end.to_string().as_bytes());
        last.push(b'\n');
        let _ = tx.send(last.into()).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        [("content-type", "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One item as a line.
fn line(out: &mut Vec<u8>, item: &Item<'_>) {
    let text = match item {
        Item::Header(h) => serde_json::to_string(h),
        Item::Event(e) => serde_json::to_string(&(e.time, e.kind.code(), &e.data)),
    };
    match text {
        Ok(t) => {
            out.extend_from_slice(t.as_bytes());
            out.push(b'\n');
        }
        Err(e) => tracing::warn!(error = %e, "a recording item does not serialize"),
    }
}
