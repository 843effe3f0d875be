//! Shared server state, the HTTP router and ways to run it (in-process or from the binary).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::faults::Faults;
use crate::lifecycle;
use crate::stats::Stats;
use crate::store::Store;

/// Namespaces every cluster starts with.
pub const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Clone)]
pub struct Config {
    /// Authorize `system:serviceaccount:<ns>:<name>` bearer tokens against stored RBAC objects.
    pub enforce_rbac: bool,
    /// How many change events are kept for watches resuming from an older resourceVersion.
    pub history_limit: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// Watch duration when the client sets no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enforce_rbac: false,
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(30),
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

pub(crate) struct Shared {
    pub config: Config,
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
    /// Bumped to close every open watch.
    pub watch_epoch: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data for this simple state; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A handle on one in-memory API server (cheap to clone).
#[derive(Clone)]
pub struct Server(pub(crate) Arc<Shared>);

impl Server {
    pub fn new(config: Config) -> Self {
        let mut store = Store::new(config.history_limit);
        for ns in INITIAL_NAMESPACES {
            if let Err(e) = lifecycle::ensure_namespace(&mut store, ns) {
                tracing::error!(namespace = ns, error = %e, "could not create initial namespace");
            }
        }
        let (watch_epoch, _) = watch::channel(0);
        Server(Arc::new(Shared {
            config,
            store: Mutex::new(store),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::default()),
            watch_epoch,
        }))
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.0.store)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.0.faults)
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        lock(&self.0.stats)
    }

    /// Closes every open watch connection.
    pub fn drop_watches(&self) {
        self.0.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    pub fn router(&self) -> Router {
        crate::api::router(self.clone())
    }
}

/// Serves `server` on `listener` until `shutdown` completes; open watches are closed at shutdown.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    server: Server,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closer = server.clone();
    axum::serve(listener, server.router())
        .with_graceful_shutdown(async move {
            shutdown.await;
            closer.drop_watches();
        })
        .await
}

/// Serves `server` on `listener` forever.
pub async fn serve(listener: TcpListener, server: Server) -> std::io::Result<()> {
    serve_with_shutdown(listener, server, std::future::pending()).await
}

/// A server running in the current Tokio runtime on its own port; stopped when dropped.
pub struct RunningServer {
    addr: SocketAddr,
    server: Server,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Binds 127.0.0.1 on a free port and serves in a background task.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = Server::new(config);
        let task = tokio::spawn(serve(listener, server.clone()));
        Ok(RunningServer { addr, server, task })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn server(&self) -> &Server {
        &self.server
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.server.drop_watches();
        self.task.abort();
    }
}
