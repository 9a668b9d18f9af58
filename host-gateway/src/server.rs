//! Starting and stopping a gateway: the bound listeners, the accept loops, the shared
//! [`Context`] every task gets, and the shutdown drain. What happens on a connection is
//! in the connection modules; what happens to its messages is in the router.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use protocol::link::ClientId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{ConfigError, GatewayConfig};
use crate::router::{Router, RouterMsg};
use crate::stats::Counters;
use crate::{announce, device_conn, serial, telnet_conn, worker_link};

/// Messages waiting for the router. Large enough to absorb a burst from thousands of
/// clients; when full, connections wait before reading more (backpressure on the senders).
const ROUTER_QUEUE: usize = 4096;
/// How long open connections get to say goodbye at shutdown before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failed accept (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    // The cause is in the message rather than `source()`, so anyhow prints it once.
    #[error("cannot listen for {what} on {addr}: {cause}")]
    Bind {
        /// Which listener (`telnet`, `device`, `worker`).
        what: &'static str,
        /// The configured address.
        addr: String,
        /// The cause (address in use, say).
        cause: std::io::Error,
    },
}

/// The gateway's three listening sockets, already bound (tests bind `127.0.0.1:0`).
#[derive(Debug)]
pub struct Listeners {
    /// Telnet users.
    pub telnet: TcpListener,
    /// Devices over TCP.
    pub device: TcpListener,
    /// Worker links.
    pub worker: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &GatewayConfig) -> Result<Listeners, GatewayError> {
        async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, GatewayError> {
            TcpListener::bind(addr)
                .await
                .map_err(|cause| GatewayError::Bind {
                    what,
                    addr: addr.to_owned(),
                    cause,
                })
        }
        Ok(Listeners {
            telnet: bind("telnet", &config.telnet_listen).await?,
            device: bind("device", &config.device_listen).await?,
            worker: bind("worker", &config.worker_listen).await?,
        })
    }
}

/// What every task of a running gateway shares: one pointer (every connection's task keeps
/// a copy, so it is kept small), dereferencing to [`Shared`].
#[derive(Clone)]
pub struct Context(Arc<Shared>);

impl std::ops::Deref for Context {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The gateway-wide state behind a [`Context`].
pub struct Shared {
    /// The configuration.
    pub config: Arc<GatewayConfig>,
    /// The counters.
    pub counters: Arc<Counters>,
    /// The router's channel.
    pub router: mpsc::Sender<RouterMsg>,
    /// Cancelled when the gateway stops.
    pub shutdown: CancellationToken,
    /// Every spawned task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    next_conn: AtomicU64,
    next_link: AtomicU64,
}

#[cfg(test)]
impl Context {
    /// A context with nothing behind its router channel, for unit tests.
    pub(crate) fn detached(config: GatewayConfig) -> Context {
        let (router, _) = mpsc::channel(1);
        Context(Arc::new(Shared {
            config: Arc::new(config),
            counters: Arc::new(Counters::default()),
            router,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_conn: AtomicU64::new(1),
            next_link: AtomicU64::new(1),
        }))
    }
}

impl Shared {
    /// A fresh client id; connection numbers start at 1 and never repeat.
    pub fn next_client_id(&self) -> ClientId {
        ClientId::new(
            self.config.id,
            self.next_conn.fetch_add(1, Ordering::Relaxed),
        )
    }

    /// A fresh worker link id.
    pub fn next_link_id(&self) -> u64 {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs a gateway on `listeners` until `shutdown` resolves, then closes every connection
/// and returns.
pub async fn run(
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future,
) -> Result<(), GatewayError> {
    config.validate()?;
    let token = CancellationToken::new();
    // If the caller drops this future instead of resolving `shutdown`, stop anyway.
    let _stop_on_drop = token.clone().drop_guard();
    let counters = Arc::new(Counters::default());
    let (router_tx, router_rx) = mpsc::channel(ROUTER_QUEUE);
    let ctx = Context(Arc::new(Shared {
        config: Arc::new(config),
        counters: counters.clone(),
        router: router_tx,
        shutdown: token.clone(),
        tracker: TaskTracker::new(),
        next_conn: AtomicU64::new(1),
        next_link: AtomicU64::new(1),
    }));
    if !ctx.config.discovery.is_empty() {
        let addr = match ctx.config.announce.as_str() {
            "" => listeners
                .worker
                .local_addr()
                .map_err(|err| GatewayError::Bind {
                    what: "worker",
                    addr: ctx.config.worker_listen.clone(),
                    cause: err,
                })?
                .to_string(),
            addr => addr.to_owned(),
        };
        let announcement = announce::Announcement {
            servers: ctx.config.discovery.clone(),
            prefix: ctx.config.discovery_prefix.clone(),
            id: ctx.config.id,
            addr,
        };
        ctx.tracker
            .spawn(announce::run(announcement, token.clone()));
    }
    let router = Router::new(&ctx.config, counters);
    let router_task = tokio::spawn(router.run(router_rx, token.clone()));
    let counters = ctx.counters.clone();
    let traffic = move || {
        counters.messages_in.load(Ordering::Relaxed) + counters.messages_out.load(Ordering::Relaxed)
    };
    ctx.tracker
        .spawn(process::trim::run(traffic, token.clone()));

    ctx.tracker.spawn(accept_loop(
        ctx.clone(),
        listeners.telnet,
        "telnet",
        telnet_conn::serve,
    ));
    ctx.tracker.spawn(accept_loop(
        ctx.clone(),
        listeners.device,
        "device",
        device_conn::serve_tcp,
    ));
    ctx.tracker.spawn(accept_loop(
        ctx.clone(),
        listeners.worker,
        "worker",
        |ctx, stream, peer| {
            let link = ctx.next_link_id();
            let span = tracing::info_span!("worker", link, %peer);
            worker_link::serve(ctx, stream, link).instrument(span)
        },
    ));
    for port in ctx.config.serial.iter().cloned() {
        ctx.tracker.spawn(serial::keep_open(ctx.clone(), port));
    }

    tokio::select! {
        _ = shutdown => {}
        _ = token.cancelled() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
    ctx.tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    let _ = router_task.await;
    Ok(())
}

/// Accepts connections on `listener` until shutdown; each gets its own task.
async fn accept_loop<F, Fut>(ctx: Context, listener: TcpListener, what: &'static str, serve: F)
where
    F: Fn(Context, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Lines and frames are small and interactive; don't let Nagle delay them.
                let _ = stream.set_nodelay(true);
                ctx.tracker.spawn(serve(ctx.clone(), stream, peer));
            }
            Err(err) => {
                tracing::warn!(listener = what, cause = %err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
