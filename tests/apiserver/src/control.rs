//! The double's own control endpoints under `/_double/` (no real API server serves this prefix):
//!
//! - `POST /_double/faults` arms faults (see [`crate::faults::FaultRequest`]); `GET` shows the
//!   armed ones; `DELETE` disarms all.
//! - `GET /_double/stats` returns request counters; `DELETE /_double/stats` resets them.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::faults::FaultRequest;
use crate::server::Server;

const MAX_BODY: usize = 1 << 20;

pub async fn handle(server: &Server, method: &Method, path: &str, body: Body) -> Response {
    match serve(server, method, path, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve(server: &Server, method: &Method, path: &str, body: Body) -> Result<Response, ApiError> {
    let ok = |v: serde_json::Value| Ok((StatusCode::OK, axum::Json(v)).into_response());
    match (method.as_str(), path) {
        ("POST", "faults") => {
            let bytes = axum::body::to_bytes(body, MAX_BODY)
                .await
                .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
            let request: FaultRequest = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_request(format!("invalid fault request: {e}")))?;
            server.faults().arm(&request).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if request.drop_watches {
                server.drop_watches();
            }
            tracing::info!(?request, "faults armed");
            ok(json!(&*server.faults()))
        }
        ("GET", "faults") => ok(json!(&*server.faults())),
        ("DELETE", "faults") => {
            server.faults().clear();
            ok(json!(&*server.faults()))
        }
        ("GET", "stats") => ok(json!(&*server.stats())),
        ("DELETE", "stats") => {
            server.stats().reset();
            ok(json!(&*server.stats()))
        }
        _ => Err(ApiError::path_not_found()),
    }
}
