//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

pub async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], metrics.render()) }
        }),
    );
    axum::serve(tokio::net::TcpListener::bind(addr).await?, app).await
}

/// `/readyz` turns 200 once the binding watch has listed everything.
pub async fn serve_health(addr: SocketAddr, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready.clone();
            async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "bindings not listed yet")
                }
            }
        }),
    );
    axum::serve(tokio::net::TcpListener::bind(addr).await?, app).await
}
