//! The operator's HTTP endpoint (hyper, HTTP/1.1, on the service's runtime): `/metrics`
//! (Prometheus text), `/healthz`, `/readyz`, `/calls` (calls in progress as JSON) and
//! `POST /reload`. Loopback by default; with a bearer token from the environment every
//! request must carry it.

use super::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// What `POST /reload` runs: re-reads the configuration file and swaps it in, or says why
/// not. The same thing SIGHUP does.
pub type ReloadHook = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Serves the admin endpoint until the task is aborted.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    token: Option<String>,
    reload: Option<ReloadHook>,
) {
    let token: Option<Arc<str>> = token.map(Arc::from);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let (shared, token, reload) = (shared.clone(), token.clone(), reload.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (shared, token, reload) = (shared.clone(), token.clone(), reload.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(handle(
                        &shared,
                        token.as_deref(),
                        reload,
                        req,
                    ))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn authorized(token: Option<&str>, req: &Request<Incoming>) -> bool {
    let Some(want) = token else { return true };
    let got = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time in the token's content.
    bool::from(got.as_bytes().ct_eq(want.as_bytes()))
}

fn handle(
    shared: &Shared,
    token: Option<&str>,
    reload: Option<ReloadHook>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    if !authorized(token, &req) {
        let mut r = reply(StatusCode::UNAUTHORIZED, TEXT, "unauthorized\n");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            shared.refresh_gauges();
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.encode(),
            )
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, TEXT, "ok\n"),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Ordering::Relaxed) {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n")
            } else {
                reply(StatusCode::OK, TEXT, "ready\n")
            }
        }
        (&Method::GET, "/calls") => reply(StatusCode::OK, JSON, shared.calls_json()),
        (&Method::POST, "/reload") => match reload {
            // Reading and checking the file blocks: tell the runtime.
            Some(hook) => match tokio::task::block_in_place(|| hook()) {
                Ok(msg) => reply(StatusCode::OK, TEXT, format!("{msg}\n")),
                Err(e) => reply(StatusCode::UNPROCESSABLE_ENTITY, TEXT, format!("{e}\n")),
            },
            None => reply(
                StatusCode::NOT_IMPLEMENTED,
                TEXT,
                "no configuration file to reload\n",
            ),
        },
        (_, "/metrics" | "/healthz" | "/readyz" | "/calls" | "/reload") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n")
        }
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n"),
    }
}
