//! The worker's main loop: link to every gateway (configured or discovered), hand their events to the
//! handler one at a time in arrival order, ack each event after its commands were queued,
//! and on shutdown hand over without losing an event.
//!
//! An event is acked once it was handled (also when the handler failed or panicked: it
//! was handled, and retrying it would fail again); the gateway redelivers whatever was not
//! acked. The ack goes on the event's link after the commands the handler queued there, so
//! a gateway that saw the ack has those commands (commands for clients of other gateways
//! go on their own links, with no order against this ack).
//!
//! Shutdown: every link sends `Leaving` and links no new gateway; the worker goes on
//! handling (and acking) what is queued and what the gateways sent before they saw
//! `Leaving`, until every link is done reading (the gateway closed its side, or went quiet
//! with everything handled) or [`LEAVE_GRACE`] passed. Then the
//! links drain and close, and the store is flushed and dropped (its lock released).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use protocol::link::{Event, Inbound, PackedSession, WorkerToGateway};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::config::{Routing, WorkerConfig};
use crate::gateway_api::Gateway;
use crate::handler::{Context, Handler, HandlerResult};
use crate::link::{Delivery, Stop};
use crate::link_set;
use crate::store::{Store, StoreError};

/// Events read from all links but not yet handled. Past it the links stop reading
/// (backpressure through TCP to the gateways, which hold their own bounded queues). While
/// a link is stopped its query replies wait too, so a handler querying during such a
/// backlog waits up to `QUERY_TIMEOUT`; sized like the gateway's per-worker queue (16 Ki
/// small events, a few MB) so this happens only under real overload.
pub const EVENT_QUEUE: usize = 16 * 1024;
/// How long a leaving worker goes on handling events. Below the supervisor's 10 s kill
/// grace with room for the links to drain (2 s) and the store to flush; what is not handled
/// by then goes unacked and the gateway redelivers it to the next worker.
pub const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// Why the worker stopped (a gateway being away is never a reason).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config lists no gateway and no discovery server, so there would be nothing to do.
    #[error("no gateways configured (and no discovery servers to find them)")]
    NoGateways,
    /// The store failed to flush at shutdown.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs a worker until `shutdown` completes, then hands over (see the module docs), flushes
/// and drops the store, and returns. Gateways that are down are retried until then.
pub async fn run<H: Handler>(
    config: WorkerConfig,
    store: Arc<dyn Store>,
    mut handler: H,
    shutdown: impl Future,
) -> Result<(), WorkerError> {
    if config.gateways.is_empty() && config.discovery.is_empty() {
        return Err(WorkerError::NoGateways);
    }
    let gateway = Gateway::new(config.routing == Routing::Targeted);
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    let stop = Stop::default();
    tracing::info!(
        name = %config.name,
        gateways = config.gateways.len(),
        discovery = config.discovery.len(),
        "worker started"
    );
    let links = tokio::spawn(link_set::run(
        config,
        gateway.clone(),
        events_tx.downgrade(),
        stop.clone(),
    ));

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

    tracing::info!("worker leaving: finishing the events the gateways already sent");
    stop.leave.cancel();
    // From now on the queue closes once every link has stopped reading.
    drop(events_tx);
    let handled = drain(&mut handler, &gateway, &store, &mut events).await;
    // Unhandled events go unacked (the gateway redelivers them); their ack senders go with
    // them, so each link's writer can drain and close.
    drop(events);
    stop.close.cancel();
    let _ = links.await;
    let flushing = Arc::clone(&store);
    match tokio::task::spawn_blocking(move || flushing.flush()).await {
        Ok(result) => result?,
        Err(join) => tracing::error!(cause = %join, "store flush panicked"),
    }
    // The last reference: dropping it releases sled's lock for the next worker.
    if Arc::strong_count(&store) > 1 {
        tracing::warn!("store still referenced at exit; the next worker may wait for its lock");
    }
    drop(store);
    tracing::info!(handled, "worker stopped");
    Ok(())
}

/// Handles what the links still deliver after `Leaving` until they all stopped reading or
/// [`LEAVE_GRACE`] passed; returns how many events were handled. A handler still running at
/// the end of the grace is cut off, and its event goes unacked.
async fn drain<H: Handler>(
    handler: &mut H,
    gateway: &Gateway,
    store: &Arc<dyn Store>,
    events: &mut mpsc::Receiver<Delivery>,
) -> usize {
    let deadline = tokio::time::sleep(LEAVE_GRACE);
    tokio::pin!(deadline);
    let mut handled = 0;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = &mut deadline => break,
            delivery = events.recv() => match delivery {
                Some(delivery) => delivery,
                None => return handled,
            },
        };
        tokio::select! {
            biased;
            _ = handle(handler, gateway, store, delivery) => handled += 1,
            _ = &mut deadline => {
                tracing::warn!("a handler was still running at the end of the grace; its event will be redelivered");
                break;
            }
        }
    }
    tracing::warn!(
        grace = ?LEAVE_GRACE,
        left = events.len(),
        "gateways still sending at the end of the grace; the rest will be redelivered"
    );
    handled
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
        event,
        ack,
        outstanding: _outstanding,
    } = delivery;
    let client = event.client();
    // At debug level only: an enabled span costs the worker a quarter of its CPU per event
    // (the subscriber formats its fields into a new string each time). The handler's own
    // failures below name the event themselves.
    let span = tracing::debug_span!("event", gateway = from, event = id, client = %client);
    async {
        // The handler reads the session from the cache, never from the event. A shared
        // reference, not a move: taking it out would leave a new empty map behind.
        let (session, closed) = match &event {
            Event::Connect { .. } => (PackedSession::new(), false),
            Event::Message { session, .. } => (session.clone(), false),
            Event::Close { session, .. } => (session.clone(), true),
        };
        gateway.sessions().begin(client, session);
        let cx = Context::new(gateway.clone(), Arc::clone(store), client);
        match AssertUnwindSafe(dispatch(handler, &cx, event)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(gateway = from, event = id, client = %client, cause = %err, "handler failed")
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".to_string());
                tracing::error!(gateway = from, event = id, client = %client, panic = %what, "handler panicked; worker goes on");
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
        } => handler.on_device(cx, client, *msg).await,
        Event::Close { client, uid, .. } => handler.on_close(cx, client, uid).await,
    }
}
