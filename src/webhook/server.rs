//! The HTTPS listener: TLS with the certificate [`ServingCert`] holds at the time of each
//! handshake (so renewals apply without a restart), HTTP/1.1, one task per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::admission;
use super::index::InjectIndex;
use super::tls::ServingCert;
use crate::metrics::Metrics;

/// The path the webhook configuration names (the reference controller's).
pub const MUTATE_PODS: &str = "/mutate-v1-pod";
/// A client that opens a connection and never completes the handshake holds only its own task.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(index: Arc<InjectIndex>, metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        MUTATE_PODS,
        post(move |body: Bytes| {
            let (index, metrics) = (index.clone(), metrics.clone());
            async move {
                let started = Instant::now();
                match admission::review(&body, &index) {
                    Ok((outcome, answer)) => {
                        metrics.admission(outcome.label(), started.elapsed());
                        (StatusCode::OK, [("content-type", "application/json")], answer.to_string())
                    }
                    Err(error) => {
                        metrics.admission("rejected", started.elapsed());
                        tracing::warn!(%error, "refusing an admission request");
                        (StatusCode::BAD_REQUEST, [("content-type", "text/plain")], error.to_string())
                    }
                }
            }
        }),
    )
}

pub async fn serve(addr: SocketAddr, serving: Arc<ServingCert>, app: Router) -> std::io::Result<()> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(serving);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(%error, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "webhook TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            let service = TowerToHyperService::new(app);
            if let Err(error) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await
            {
                tracing::debug!(%peer, %error, "webhook connection ended with an error");
            }
        });
    }
}
