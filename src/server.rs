//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::health::Health;
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

/// `/healthz`: 503 when a reconcile is stuck or the lease loop is wedged (see [`Health::live`]);
/// `/readyz`: 503 until the caches have listed everything. Both read atomics and a small map.
pub async fn serve_health(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<()> {
    let live = health.clone();
    let app = Router::new()
        .route(
            "/healthz",
            get(move || {
                let health = live.clone();
                async move {
                    match health.live(Instant::now()) {
                        Ok(()) => (StatusCode::OK, "ok".to_owned()),
                        Err(why) => {
                            tracing::warn!(%why, "health check failing");
                            (StatusCode::SERVICE_UNAVAILABLE, why)
                        }
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let health = health.clone();
                async move {
                    if health.ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet (or the pod webhook not serving yet)")
                    }
                }
            }),
        );
    axum::serve(tokio::net::TcpListener::bind(addr).await?, app).await
}
