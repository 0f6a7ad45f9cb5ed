use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use warden_store::StoreError;
use warden_types::api::ApiError;

/// Errors of the auth API, each with an HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Expired(String),
    /// A service we depend on (the identity provider) failed.
    #[error("{0}")]
    Unavailable(String),
    /// This auth server cannot serve the request yet, another may (it
    /// joins with a key that does not sign yet): clients with several
    /// auth addresses try the next.
    #[error("{0}")]
    NotReady(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AuthError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AuthError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthError::AccessDenied(_) => (StatusCode::FORBIDDEN, "access_denied"),
            AuthError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AuthError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            AuthError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AuthError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AuthError::Locked(_) => (StatusCode::FORBIDDEN, "account_locked"),
            AuthError::Expired(_) => (StatusCode::GONE, "expired"),
            AuthError::Unavailable(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            AuthError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            AuthError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ApiError {
            code: code.to_string(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(k) => AuthError::AlreadyExists(format!("{k} already exists")),
            StoreError::NotFound(k) => AuthError::NotFound(format!("{k} not found")),
            StoreError::Conflict { .. } => AuthError::Conflict(format!(
                "{e}; someone else changed it, read it again and retry"
            )),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<warden_ca::CaError> for AuthError {
    fn from(e: warden_ca::CaError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;
