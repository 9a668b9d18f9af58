//! Event delivery to workers: event ids, each link's in-flight window, the pending buffer,
//! redelivery when a link goes, `Leaving`, and dropping poison events. Owned by the router
//! task; it never touches a connection (the router tells a refused sender) nor a socket.
//!
//! The guarantee (docs/ARCHITECTURE.md, "Delivery"):
//! - At least once. An event stays here, in the pending buffer or in the in-flight window
//!   of the link it was handed to, until that link's worker acks it. When a link closes for
//!   any reason, its unacked events are redelivered (to another worker, or held for the
//!   next one). They were accepted, so they are held even past `pending_events`.
//! - Duplicates only for events whose worker executed some of their commands but closed
//!   before acking them (a crash, kill -9): the next worker handles them again. Acks are
//!   cumulative and a worker sends one per batch, so a crash can leave the handled events of
//!   its last unacked batch to be handled again, not only the one it died on.
//! - Order per connection. A client whose events are unacked on a link is pinned to it;
//!   its newer events go to that link or wait behind the older ones. When the link closes,
//!   its unacked events go back to the front of the buffer, in order, ahead of anything
//!   newer from the same client. Different clients are not ordered relative to each other.
//! - A worker that sends `Leaving` gets no new event. A client pinned to it waits until
//!   its events there are acked (then it moves to another worker) or the link closes (then
//!   they are redelivered). A worker that acks all it has before closing (the reload path)
//!   therefore loses nothing and causes no duplicate.
//! - Poison: when a link closes, only its oldest unacked event is suspect. A worker handles
//!   events in order, but its acks go out in batches, so the one it died on is that one or
//!   one shortly behind it. A suspect is therefore redelivered on trial: alone, to a link
//!   with nothing else in flight, which gets nothing more until it acks it. While a suspect
//!   waits, one link (the one with the fewest events in flight) is reserved: it gets no new
//!   event until it has emptied and taken the suspect; the other links go on. An event that
//!   was the oldest unacked one of more than `max_redeliveries` closed links is logged with
//!   its client and dropped (counted in `dropped`). A good event handled just before the
//!   poison one is blamed once, acked on its trial and cleared. The trial isolates the event
//!   on this gateway only: a worker linked to several gateways handles their events
//!   together, and a worker killed for another reason blames whatever it was on, so a good
//!   event can still be blamed more than once, just far less often than without trials.
//! - Window: a link holds at most `max_in_flight` unacked events. Past that it gets no
//!   more; its clients' events wait in the buffer (where new messages count against
//!   `pending_events`) until acks free room.
//!
//! Events live in this gateway's memory only: a gateway that stops takes its connections
//! and their unacked events with it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use protocol::link::{ClientId, Event, Inbound};

use crate::config::GatewayConfig;
use crate::router::{LinkOut, WorkerHandle};
use crate::stats::{bump, Counters};

/// An event the gateway still owes a worker, or that a worker has not acked.
#[derive(Debug)]
struct Held {
    event: Arc<Event>,
    /// Links that closed while this was their oldest unacked event.
    failures: u32,
}

impl Held {
    /// A worker may have died on it: it is redelivered on trial (module comment).
    fn is_suspect(&self) -> bool {
        self.failures > 0
    }
}

/// One worker link, as delivery sees it.
#[derive(Debug)]
struct Link {
    handle: WorkerHandle,
    /// Id of the next event on this link; ids start at 1 and increase per link.
    next_id: u64,
    /// Handed to the link and not acked, oldest first (ids increase: an ack pops a prefix).
    in_flight: VecDeque<(u64, Held)>,
    /// The worker sent `Leaving`: no new events.
    leaving: bool,
}

impl Link {
    /// Whether the link takes an event now: it is not leaving and has room, and no suspect
    /// is on trial in it; a `suspect` goes only to a link with nothing in flight.
    fn takes(&self, window: usize, suspect: bool) -> bool {
        if self.leaving {
            return false;
        }
        if suspect {
            return self.in_flight.is_empty();
        }
        let on_trial = self
            .in_flight
            .front()
            .is_some_and(|(_, held)| held.is_suspect());
        !on_trial && self.in_flight.len() < window
    }
}

/// A client with unacked events on a link: its events go there, or wait.
#[derive(Debug)]
struct Pin {
    link: u64,
    unacked: usize,
}

/// One of `client`'s events was acked: its pin goes with its last unacked event.
fn unpin(pins: &mut HashMap<ClientId, Pin>, client: ClientId) {
    if let Some(pin) = pins.get_mut(&client) {
        pin.unacked -= 1;
        if pin.unacked == 0 {
            pins.remove(&client);
        }
    }
}

/// The delivery state. See the module comment for the guarantee.
#[derive(Debug)]
pub(crate) struct Delivery {
    links: Vec<Link>,
    /// Events not yet handed to a worker. Oldest first per client; a redelivered event goes
    /// before anything newer of its client.
    pending: VecDeque<Held>,
    /// How many of `pending` each client has, so a new event knows whether to queue behind.
    queued: HashMap<ClientId, usize>,
    pins: HashMap<ClientId, Pin>,
    /// Suspects in `pending`: while there is one, a link is kept free for it (`reserved`).
    suspects: usize,
    pending_cap: usize,
    window: usize,
    max_redeliveries: u32,
    /// Something changed that may let held events go (an ack, a link up or down).
    dirty: bool,
    counters: Arc<Counters>,
}

impl Delivery {
    pub(crate) fn new(config: &GatewayConfig, counters: Arc<Counters>) -> Self {
        Self {
            links: Vec::new(),
            pending: VecDeque::new(),
            queued: HashMap::new(),
            pins: HashMap::new(),
            suspects: 0,
            pending_cap: config.pending_events,
            window: config.max_in_flight.max(1),
            max_redeliveries: config.max_redeliveries,
            dirty: false,
            counters,
        }
    }

    /// Connected worker links, leaving ones included.
    pub(crate) fn workers(&self) -> usize {
        self.links.len()
    }

    /// Events waiting for a worker.
    pub(crate) fn held(&self) -> usize {
        self.pending.len()
    }

    /// Every worker link's handle, leaving ones included.
    pub(crate) fn handles(&self) -> impl Iterator<Item = &WorkerHandle> {
        self.links.iter().map(|l| &l.handle)
    }

    /// The handle of worker link `link`, to reply on it.
    pub(crate) fn handle(&self, link: u64) -> Option<&WorkerHandle> {
        self.links
            .iter()
            .find(|l| l.handle.link == link)
            .map(|l| &l.handle)
    }

    /// Hands `event` to a worker or holds it. A `refusable` event (a client's message) is
    /// refused instead when the buffer is full: returns `false`, and the sender must be
    /// told. Connect and Close are held past the limit: their number is bounded by the
    /// connections themselves, and losing one would leave a worker's view wrong forever.
    pub(crate) fn emit(&mut self, event: Event, refusable: bool) -> bool {
        let client = event.client();
        let held = Held {
            event: Arc::new(event),
            failures: 0,
        };
        // Behind this client's held events, or it would overtake them.
        let held = if self.queued.contains_key(&client) {
            held
        } else {
            match self.target(client, false, self.reserved()) {
                Some(i) => match self.hand(i, held) {
                    Ok(()) => return true,
                    Err(held) => held,
                },
                None => held,
            }
        };
        if refusable && self.pending.len() >= self.pending_cap {
            return false;
        }
        self.queue_back(held);
        true
    }

    /// A worker passed the handshake.
    pub(crate) fn link_up(&mut self, handle: WorkerHandle) {
        self.links.push(Link {
            handle,
            next_id: 1,
            in_flight: VecDeque::new(),
            leaving: false,
        });
        self.dirty = true;
    }

    /// The worker on `link` handled every event up to `id` (acks are cumulative).
    pub(crate) fn ack(&mut self, link: u64, id: u64) {
        let Some(l) = self.links.iter_mut().find(|l| l.handle.link == link) else {
            return;
        };
        let handled = l.in_flight.partition_point(|(event, _)| *event <= id);
        if handled == 0 {
            tracing::debug!(link, event = id, "ack for no unacked event ignored");
            return;
        }
        for (_, held) in l.in_flight.drain(..handled) {
            unpin(&mut self.pins, held.event.client());
        }
        self.dirty = true;
    }

    /// The worker on `link` is leaving: it gets no new events.
    pub(crate) fn leaving(&mut self, link: u64) {
        if let Some(l) = self.links.iter_mut().find(|l| l.handle.link == link) {
            tracing::info!(link, unacked = l.in_flight.len(), "worker leaving");
            l.leaving = true;
        }
    }

    /// A worker link closed: its unacked events go back to the front of the buffer, in
    /// order, except a poison event. Returns whether it was a worker link.
    pub(crate) fn link_down(&mut self, link: u64) -> bool {
        let Some(i) = self.links.iter().position(|l| l.handle.link == link) else {
            return false;
        };
        let gone = self.links.remove(i);
        let mut back = Vec::with_capacity(gone.in_flight.len());
        for (n, (_, mut held)) in gone.in_flight.into_iter().enumerate() {
            self.pins.remove(&held.event.client());
            if n == 0 {
                held.failures += 1;
                if held.failures > self.max_redeliveries {
                    self.poisoned(&held);
                    continue;
                }
            }
            back.push(held);
        }
        if !back.is_empty() {
            tracing::info!(
                link,
                redelivered = back.len(),
                "unacked events of a closed link held for redelivery"
            );
        }
        for held in back.into_iter().rev() {
            self.suspects += usize::from(held.is_suspect());
            *self.queued.entry(held.event.client()).or_default() += 1;
            self.pending.push_front(held);
        }
        self.dirty = true;
        true
    }

    /// Hands held events to workers if anything changed since the last time.
    pub(crate) fn drain_if_dirty(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.drain();
        }
    }

    /// Hands held events to workers: oldest first per client; a client whose event cannot
    /// go keeps the rest of its events behind it, other clients go on.
    pub(crate) fn drain(&mut self) {
        let mut reserved = self.reserved();
        if self.pending.is_empty() || !self.any_room(reserved) {
            return;
        }
        let mut blocked = HashSet::new();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        while let Some(mut held) = self.pending.pop_front() {
            let client = held.event.client();
            let suspect = held.is_suspect();
            if !blocked.contains(&client) {
                if let Some(i) = self.target(client, suspect, reserved) {
                    match self.hand(i, held) {
                        Ok(()) => {
                            self.unqueue(client);
                            if suspect {
                                self.suspects -= 1;
                                reserved = self.reserved();
                            }
                            continue;
                        }
                        Err(back) => held = back,
                    }
                }
                blocked.insert(client);
            }
            kept.push_back(held);
            if !self.any_room(reserved) {
                kept.append(&mut self.pending);
            }
        }
        self.pending = kept;
    }

    /// The link (index) that takes `client`'s next event now, if any: the one it is pinned
    /// to, else the sticky choice among links not leaving, else any of them that takes it.
    /// Only a suspect goes to the `reserved` link.
    fn target(&self, client: ClientId, suspect: bool, reserved: Option<u64>) -> Option<usize> {
        let takes = |l: &Link| {
            l.takes(self.window, suspect) && (suspect || reserved != Some(l.handle.link))
        };
        if let Some(pin) = self.pins.get(&client) {
            // A suspect is never pinned: its link closed, and it is its client's oldest event.
            debug_assert!(!suspect, "a suspect pinned to a link");
            let i = self.links.iter().position(|l| l.handle.link == pin.link)?;
            return takes(&self.links[i]).then_some(i);
        }
        let open = self.links.iter().filter(|l| !l.leaving).count() as u64;
        if open == 0 {
            return None;
        }
        let nth = usize::try_from(client.conn() % open).unwrap_or(0);
        let mut candidates = self.links.iter().enumerate().filter(|(_, l)| !l.leaving);
        match candidates.clone().nth(nth) {
            Some((i, l)) if takes(l) => Some(i),
            _ => candidates.find(|(_, l)| takes(l)).map(|(i, _)| i),
        }
    }

    /// While a suspect waits: the link kept free of new events until it can take it, the
    /// one closest to empty (and not leaving).
    fn reserved(&self) -> Option<u64> {
        if self.suspects == 0 {
            return None;
        }
        self.links
            .iter()
            .filter(|l| !l.leaving)
            .min_by_key(|l| l.in_flight.len())
            .map(|l| l.handle.link)
    }

    /// Whether any link takes an event now: a new one, or the suspect it is reserved for.
    fn any_room(&self, reserved: Option<u64>) -> bool {
        self.links
            .iter()
            .any(|l| l.takes(self.window, reserved == Some(l.handle.link)))
    }

    /// Queues `held` on link `i` and records it in flight; gives it back if the link's
    /// queue is full or closed (then its `WorkerDown` is on the way).
    fn hand(&mut self, i: usize, held: Held) -> Result<(), Held> {
        let link = &mut self.links[i];
        let id = link.next_id;
        let out = LinkOut::Event {
            id,
            event: held.event.clone(),
        };
        if link.handle.tx.try_send(out).is_err() {
            return Err(held);
        }
        link.next_id += 1;
        let client = held.event.client();
        link.in_flight.push_back((id, held));
        let pin = self.pins.entry(client).or_insert(Pin {
            link: link.handle.link,
            unacked: 0,
        });
        debug_assert_eq!(pin.link, link.handle.link, "a pinned client went elsewhere");
        pin.unacked += 1;
        Ok(())
    }

    fn queue_back(&mut self, held: Held) {
        *self.queued.entry(held.event.client()).or_default() += 1;
        self.pending.push_back(held);
    }

    fn unqueue(&mut self, client: ClientId) {
        if let Some(n) = self.queued.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.queued.remove(&client);
            }
        }
    }

    fn poisoned(&self, held: &Held) {
        bump(&self.counters.dropped);
        tracing::warn!(
            conn = %held.event.client(),
            event = %summary(&held.event),
            failures = held.failures,
            "event dropped: its worker link closed before acking it too many times"
        );
    }
}

/// A short description of an event for logs: its kind and the start of its content.
fn summary(event: &Event) -> String {
    const MAX: usize = 60;
    let text = match event {
        Event::Connect { kind, peer, .. } => format!("connect {kind:?} from {peer}"),
        Event::Message {
            body: Inbound::Line(line),
            ..
        } => format!("line {line:?}"),
        Event::Message {
            body: Inbound::Device(msg),
            ..
        } => format!("device {msg:?}"),
        Event::Close { uid, .. } => format!("close (uid {uid:?})"),
    };
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::link::ClientKind;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn link(id: u64) -> (WorkerHandle, mpsc::Receiver<LinkOut>) {
        let (tx, rx) = mpsc::channel(64);
        let handle = WorkerHandle {
            link: id,
            name: format!("w{id}"),
            tx,
            kill: CancellationToken::new(),
            monitor: false,
        };
        (handle, rx)
    }

    fn line(conn: u64, text: &str) -> Event {
        Event::Message {
            client: ClientId::new(1, conn),
            session: Default::default(),
            body: Inbound::Line(text.into()),
        }
    }

    fn next(rx: &mut mpsc::Receiver<LinkOut>) -> Option<(u64, Event)> {
        match rx.try_recv().ok()? {
            LinkOut::Event { id, event } => Some((id, (*event).clone())),
            LinkOut::Reply { .. } | LinkOut::Routes { .. } => None,
        }
    }

    fn delivery(window: usize, pending: usize) -> Delivery {
        let config = GatewayConfig {
            max_in_flight: window,
            pending_events: pending,
            ..GatewayConfig::default()
        };
        Delivery::new(&config, Arc::new(Counters::default()))
    }

    #[test]
    fn a_full_window_holds_events_until_acks() {
        let mut d = delivery(2, 10);
        let (h, mut rx) = link(1);
        d.link_up(h);
        for text in ["a", "b", "c"] {
            assert!(d.emit(line(1, text), true));
        }
        assert_eq!(next(&mut rx), Some((1, line(1, "a"))));
        assert_eq!(next(&mut rx), Some((2, line(1, "b"))));
        assert_eq!(next(&mut rx), None);
        assert_eq!(d.held(), 1);
        d.ack(1, 1);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx), Some((3, line(1, "c"))));
    }

    #[test]
    fn an_ack_covers_every_earlier_event_on_its_link() {
        let mut d = delivery(10, 10);
        let (a, mut rx_a) = link(1);
        d.link_up(a);
        for text in ["a", "b", "c"] {
            assert!(d.emit(line(1, text), true));
        }
        for _ in 0..3 {
            assert!(next(&mut rx_a).is_some());
        }
        d.ack(1, 2);
        assert!(d.link_down(1));
        let (b, mut rx_b) = link(2);
        d.link_up(b);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(1, "c")));
        assert_eq!(next(&mut rx_b), None);
    }

    #[test]
    fn a_blocked_client_does_not_block_others() {
        let mut d = delivery(10, 10);
        let (a, mut rx_a) = link(1);
        d.link_up(a);
        assert!(d.emit(line(1, "pinned"), true));
        d.leaving(1);
        let (b, mut rx_b) = link(2);
        d.link_up(b);
        assert!(d.emit(line(1, "waits"), true));
        assert!(d.emit(line(2, "goes"), true));
        assert_eq!(next(&mut rx_a).map(|e| e.1), Some(line(1, "pinned")));
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(2, "goes")));
        assert_eq!(next(&mut rx_b), None);
        d.ack(1, 1);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(1, "waits")));
        assert_eq!(next(&mut rx_a), None);
    }

    #[test]
    fn redelivered_events_are_held_past_the_limit() {
        let mut d = delivery(10, 1);
        let (a, _rx_a) = link(1);
        d.link_up(a);
        for text in ["a", "b", "c"] {
            assert!(d.emit(line(1, text), true));
        }
        d.link_down(1);
        assert_eq!(d.held(), 3);
        assert!(
            !d.emit(line(1, "d"), true),
            "new messages still meet the limit"
        );
        let connect = Event::Connect {
            client: ClientId::new(1, 2),
            kind: ClientKind::Telnet,
            peer: "p".into(),
        };
        assert!(d.emit(connect, false));
        assert_eq!(d.held(), 4);
    }

    #[test]
    fn a_suspect_waits_for_an_empty_link_and_goes_alone() {
        let mut d = delivery(10, 10);
        let (a, mut rx_a) = link(1);
        let (b, mut rx_b) = link(2);
        d.link_up(a);
        d.link_up(b);
        // Client 1 sticks to link 2 (conn % 2), client 2 to link 1.
        assert!(d.emit(line(1, "suspect"), true));
        assert!(d.emit(line(2, "busy"), true));
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(1, "suspect")));
        assert_eq!(next(&mut rx_a).map(|e| e.1), Some(line(2, "busy")));
        assert!(d.link_down(2));
        d.drain_if_dirty();
        // Link 1, the only one, has an event in flight: the suspect waits, and link 1 is
        // reserved for it, so everything newer waits too.
        assert_eq!(next(&mut rx_a), None);
        assert!(d.emit(line(3, "newer"), true));
        assert_eq!(next(&mut rx_a), None);
        assert_eq!(d.held(), 2);
        // Link 1 empties: the suspect goes alone, and the link takes nothing until it acks.
        d.ack(1, 1);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_a), Some((2, line(1, "suspect"))));
        assert_eq!(next(&mut rx_a), None);
        assert!(d.emit(line(5, "still newer"), true));
        assert_eq!(next(&mut rx_a), None);
        d.ack(1, 2);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_a).map(|e| e.1), Some(line(3, "newer")));
        assert_eq!(next(&mut rx_a).map(|e| e.1), Some(line(5, "still newer")));
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn while_a_suspect_waits_only_the_link_closest_to_empty_is_kept_free_for_it() {
        let mut d = delivery(10, 10);
        let (a, mut rx_a) = link(1);
        let (b, mut rx_b) = link(2);
        let (c, _rx_c) = link(3);
        d.link_up(a);
        d.link_up(b);
        d.link_up(c);
        // With three links, conn 3 sticks to link 1, conn 1 to link 2, conn 2 to link 3.
        assert!(d.emit(line(3, "x"), true));
        assert!(d.emit(line(1, "y1"), true));
        assert!(d.emit(line(1, "y2"), true));
        assert!(d.emit(line(2, "suspect"), true));
        assert!(d.link_down(3));
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_a).map(|e| e.1), Some(line(3, "x")));
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(1, "y1")));
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(1, "y2")));
        // Link 1 has the fewest in flight: reserved. Conn 4 would stick to it (4 % 2 == 0),
        // and goes to link 2 instead.
        assert!(d.emit(line(4, "new"), true));
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(4, "new")));
        assert_eq!(next(&mut rx_a), None);
        d.ack(1, 1);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_a).map(|e| e.1), Some(line(2, "suspect")));
        assert_eq!((d.held(), d.suspects), (0, 0));
    }

    #[test]
    fn a_suspect_that_kills_its_trial_link_again_is_dropped_past_the_limit() {
        let config = GatewayConfig {
            max_redeliveries: 1,
            ..GatewayConfig::default()
        };
        let mut d = Delivery::new(&config, Arc::new(Counters::default()));
        let (a, _rx_a) = link(1);
        d.link_up(a);
        assert!(d.emit(line(1, "poison"), true));
        assert!(d.emit(line(1, "after"), true));
        assert!(d.link_down(1));
        let (b, mut rx_b) = link(2);
        d.link_up(b);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_b).map(|e| e.1), Some(line(1, "poison")));
        assert_eq!(next(&mut rx_b), None, "on trial, alone");
        assert!(d.link_down(2));
        let (c, mut rx_c) = link(3);
        d.link_up(c);
        d.drain_if_dirty();
        assert_eq!(next(&mut rx_c).map(|e| e.1), Some(line(1, "after")));
        assert_eq!(
            d.counters
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!((d.held(), d.suspects), (0, 0));
    }

    #[test]
    fn summaries_are_short() {
        let long = "x".repeat(500);
        assert!(summary(&line(1, &long)).chars().count() <= 61);
    }
}
