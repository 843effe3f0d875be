//! The pod mutating webhook: readiness-gate injection at pod creation, served by every replica
//! (leader or standby) from its own small index, over TLS with a certificate it keeps itself or
//! takes from files.

pub mod admission;
pub mod certs;
pub mod index;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;

use crate::metrics::Metrics;

pub struct WebhookSettings {
    pub addr: SocketAddr,
    pub certificate: tls::Source,
    pub watch_namespace: Option<String>,
}

/// Serves until the listener fails. `ready` turns true once a certificate is loaded and the index
/// has listed bindings and Services (a replica joins the webhook Service only then).
pub async fn run(
    client: Client,
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    ready.store(false, Ordering::Relaxed);
    let index = Arc::new(index::InjectIndex::default());
    let serving = Arc::new(tls::ServingCert::default());
    let watches = tokio::spawn(index.clone().run(client.clone(), settings.watch_namespace));
    let certificate = tokio::spawn(tls::keep(client, settings.certificate, serving.clone()));
    let (ready_index, ready_serving) = (index.clone(), serving.clone());
    tokio::spawn(async move {
        while !(ready_index.synced() && ready_serving.loaded()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!("pod webhook ready");
    });
    let served = server::serve(settings.addr, serving, server::router(index, metrics)).await;
    watches.abort();
    certificate.abort();
    served
}
