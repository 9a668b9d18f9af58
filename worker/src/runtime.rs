//! The worker's main loop: link to every configured gateway, hand their events to the
//! handler one at a time in arrival order, ack each event after its commands were queued,
//! and on shutdown close the links and flush the store.
//!
//! Acks are sent but nothing is redelivered yet: zero-loss redelivery is the gateway's
//! later business; the seam is here (an event is acked only once it was handled).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use protocol::link::{Event, Inbound, Session, WorkerToGateway};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::gateway_api::Gateway;
use crate::handler::{Context, Handler, HandlerResult};
use crate::link::{run_link, Delivery, LinkParams};
use crate::store::{Store, StoreError};

/// Events read from all links but not yet handled. Past it the links stop reading
/// (backpressure through TCP to the gateways, which hold their own bounded queues). While
/// a link is stopped its query replies wait too, so a handler querying during such a
/// backlog waits up to `QUERY_TIMEOUT`; sized like the gateway's per-worker queue (16 Ki
/// small events, a few MB) so this happens only under real overload.
pub const EVENT_QUEUE: usize = 16 * 1024;

/// Why the worker stopped (a gateway being away is never a reason).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config lists no gateway, so there would be nothing to do.
    #[error("no gateways configured")]
    NoGateways,
    /// The store failed to flush at shutdown.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs a worker until `shutdown` completes, then closes the links, flushes the store and
/// returns. Gateways that are down are retried for as long as it runs.
pub async fn run<H: Handler>(
    config: WorkerConfig,
    store: Arc<dyn Store>,
    mut handler: H,
    shutdown: impl Future,
) -> Result<(), WorkerError> {
    if config.gateways.is_empty() {
        return Err(WorkerError::NoGateways);
    }
    let gateway = Gateway::new();
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let cancel = CancellationToken::new();
    let links: Vec<_> = config
        .gateways
        .iter()
        .map(|addr| {
            let params = LinkParams {
                addr: addr.clone(),
                secret: config.secret.clone(),
                name: config.name.clone(),
            };
            tokio::spawn(run_link(
                params,
                gateway.clone(),
                events_tx.clone(),
                cancel.clone(),
            ))
        })
        .collect();
    drop(events_tx);
    tracing::info!(name = %config.name, gateways = config.gateways.len(), "worker started");

    tokio::pin!(shutdown);
    loop {
        let delivery = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            delivery = events.recv() => match delivery {
                Some(delivery) => delivery,
                None => break,
            },
        };
        handle(&mut handler, &gateway, &store, delivery).await;
    }

    tracing::info!("worker stopping");
    // Unhandled events go unacked (the gateway keeps them); their ack senders go with them,
    // so each link's writer can drain and close.
    drop(events);
    cancel.cancel();
    for link in links {
        let _ = link.await;
    }
    let flushing = Arc::clone(&store);
    match tokio::task::spawn_blocking(move || flushing.flush()).await {
        Ok(result) => result?,
        Err(join) => tracing::error!(cause = %join, "store flush panicked"),
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Handles one event and acks it; nothing that happens in the handler escapes.
async fn handle<H: Handler>(
    handler: &mut H,
    gateway: &Gateway,
    store: &Arc<dyn Store>,
    delivery: Delivery,
) {
    let Delivery {
        gateway: from,
        id,
        mut event,
        ack,
    } = delivery;
    let client = event.client();
    let span = tracing::info_span!("event", gateway = from, event = id, client = %client);
    async {
        // The handler reads the session from the cache, never from the event: move it there.
        let (session, closed) = match &mut event {
            Event::Connect { .. } => (Session::new(), false),
            Event::Message { session, .. } => (std::mem::take(session), false),
            Event::Close { session, .. } => (std::mem::take(session), true),
        };
        gateway.sessions().begin(client, session);
        let cx = Context::new(gateway.clone(), Arc::clone(store), client);
        match AssertUnwindSafe(dispatch(handler, &cx, event)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(client = %client, cause = %err, "handler failed"),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".to_string());
                tracing::error!(client = %client, panic = %what, "handler panicked; worker goes on");
            }
        }
        gateway.sessions().end(client, closed);
        // Same queue as the event's link, so the ack follows the commands sent there.
        // A closed link means the gateway will see the event as unhandled.
        let _ = ack.send(WorkerToGateway::Ack { event: id }).await;
    }
    .instrument(span)
    .await
}

async fn dispatch<H: Handler>(handler: &mut H, cx: &Context, event: Event) -> HandlerResult {
    match event {
        Event::Connect { client, kind, peer } => handler.on_connect(cx, client, kind, peer).await,
        Event::Message {
            client,
            body: Inbound::Line(line),
            ..
        } => handler.on_message(cx, client, line).await,
        Event::Message {
            client,
            body: Inbound::Device(msg),
            ..
        } => handler.on_device(cx, client, msg).await,
        Event::Close { client, uid, .. } => handler.on_close(cx, client, uid).await,
    }
}
