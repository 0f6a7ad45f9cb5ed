//! Routing by the endpoint table: each handler is served under its
//! endpoint's method and path (`warden_types::endpoints`), the same
//! declarations clients call through, never a path literal of its own.

use axum::handler::Handler;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use warden_types::endpoints::{Endpoint, Method};

fn filter(m: Method) -> MethodFilter {
    match m {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    }
}

/// The method router serving endpoint `e` with handler `h` (to add layers
/// to one endpoint).
pub(crate) fn serving<Req: ?Sized, Resp, H, T, S>(e: &Endpoint<Req, Resp>, h: H) -> MethodRouter<S>
where
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    on(filter(e.method), h)
}

/// `Router::serve(&endpoint, handler)`.
pub(crate) trait Serve<S> {
    fn serve<Req: ?Sized, Resp, H, T>(self, e: &Endpoint<Req, Resp>, h: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static;
}

impl<S: Clone + Send + Sync + 'static> Serve<S> for Router<S> {
    fn serve<Req: ?Sized, Resp, H, T>(self, e: &Endpoint<Req, Resp>, h: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        // Routes of one path with several methods merge.
        self.route(e.path, serving(e, h))
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;
    use warden_types::endpoints::ALL;

    /// Every endpoint the table declares is served by auth, under its
    /// method: none is declared without a handler.
    #[tokio::test]
    async fn auth_serves_every_endpoint_of_the_table() {
        let dir = std::env::temp_dir().join(format!("warden-routes-{}", uuid::Uuid::new_v4()));
        let server = crate::AuthServer::open(&dir, None, &Default::default())
            .await
            .unwrap();
        let app = crate::api::router(server);
        for (method, template) in ALL {
            let path: String = template
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let req = axum::http::Request::builder()
                .method(method.as_str())
                .uri(&path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            // axum's own "no such route" is an empty 404; every refusal of
            // ours has a body.
            assert!(
                !(status == 404 && body.is_empty()) && status != 405,
                "{} {template} is not served: {status}",
                method.as_str()
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
