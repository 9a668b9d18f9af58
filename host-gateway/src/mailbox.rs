//! A connection's outbound queue: many senders (the router, the connection itself), one
//! reader (the connection's writer), bounded, and free of heap memory while empty.
//!
//! tokio's `mpsc` would do, but it allocates its first block of slots (about 1 KiB with its
//! channel state) at creation and keeps grown blocks, for every connection, idle or not.
//! Here an idle connection costs one small `Arc`: the queue allocates when something is
//! queued and gives its memory back once drained after a burst. The same `Arc` carries a
//! little state both sides share (`S`: when the peer was last heard, why it was kicked) and
//! an interrupt that jumps the queue, so a connection needs no other shared allocation.
//!
//! Overflow policy: [`Sender::try_send`] never waits; it fails with `Full` once the items
//! waiting weigh `capacity` ([`Weigh`]: a run of `n` rendered lines weighs `n`, so the bound
//! counts messages however they are packed), and the caller decides (the router disconnects
//! the client as too slow).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// Room an empty queue takes when an item arrives: a burst of a broadcast usually fits, so
/// the queue allocates once per burst instead of doubling its way up from 4 (a copy each
/// time). The queue gives the room back when it is drained.
const FIRST_ROOM: usize = 32;

/// What an item counts for against the queue's capacity.
pub trait Weigh {
    /// Its weight: 1 unless it packs several messages.
    fn weight(&self) -> usize {
        1
    }
}

/// Why an item was not queued; it comes back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The items waiting weigh `capacity` already (or this one does not fit beside them).
    Full(T),
    /// The reader is gone.
    Closed(T),
}

/// What [`Receiver::recv`] gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv<T> {
    /// The next item.
    Item(T),
    /// A sender called [`Sender::interrupt`]; items still queued stay queued.
    Interrupted,
    /// Every sender is gone and every item was read.
    Closed,
}

struct Shared<T, S> {
    queue: Mutex<Queue<T>>,
    /// Wakes the one reader: an item arrived, an interrupt, or the last sender left. A waker
    /// slot rather than a `Notify`: waiting on it puts nothing in the reader's future.
    ready: AtomicWaker,
    senders: AtomicUsize,
    capacity: usize,
    status: S,
}

struct Queue<T> {
    items: VecDeque<T>,
    /// What `items` weigh together; at most `capacity` (which is clamped to `u32`: a
    /// `u32` here fits in the padding, an idle connection's queue costs no more).
    load: u32,
    reader_gone: bool,
    interrupted: bool,
}

impl<T, S> Shared<T, S> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Every item leaves the VecDeque in one operation before anything else runs (also
        // in `try_recv_while`, whose callback gets it already popped): a panic cannot
        // leave the queue torn.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded queue of items weighing at most `capacity` together, with `status` shared by
/// both sides.
pub fn mailbox<T: Weigh, S>(capacity: usize, status: S) -> (Sender<T, S>, Receiver<T, S>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            load: 0,
            reader_gone: false,
            interrupted: false,
        }),
        ready: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        capacity: capacity.min(u32::MAX as usize),
        status,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending side; clone it for each sender. When every sender is gone the reader sees
/// the end (a connection keeps one for its own answers, so its queue ends with it).
pub struct Sender<T, S = ()> {
    shared: Arc<Shared<T, S>>,
}

impl<T, S> std::fmt::Debug for Sender<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mailbox::Sender").finish_non_exhaustive()
    }
}

impl<T, S> Clone for Sender<T, S> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T, S> Drop for Sender<T, S> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.wake();
        }
    }
}

impl<T: Weigh> Queue<T> {
    /// Takes `item` if it fits beside what waits within `capacity`.
    fn fits(&self, item: &T, capacity: usize) -> bool {
        self.load as usize + item.weight() <= capacity
    }

    fn push(&mut self, item: T) {
        self.load += item.weight() as u32;
        self.items.push_back(item);
    }

    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.load -= item.weight() as u32;
        Some(item)
    }

    /// Gives a drained queue's room back: a burst is over, and an idle connection holds
    /// none.
    fn shrink_if_drained(&mut self) {
        if self.items.is_empty() && self.items.capacity() > 0 {
            self.items = VecDeque::new();
        }
    }
}

impl<T: Weigh, S> Sender<T, S> {
    /// The state both sides share.
    pub fn status(&self) -> &S {
        &self.shared.status
    }

    /// Wakes the reader with [`Recv::Interrupted`] before any queued item (once per call;
    /// the reader looks at the status to learn why).
    pub fn interrupt(&self) {
        self.shared.lock().interrupted = true;
        self.shared.ready.wake();
    }

    /// Queues `item` unless the queue is full or the reader is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let was_empty = {
            let mut queue = self.shared.lock();
            if queue.reader_gone {
                return Err(TrySendError::Closed(item));
            }
            if !queue.fits(&item, self.shared.capacity) {
                return Err(TrySendError::Full(item));
            }
            if queue.items.capacity() == 0 {
                queue
                    .items
                    .reserve_exact(FIRST_ROOM.min(self.shared.capacity));
            }
            queue.push(item);
            queue.items.len() == 1
        };
        // The reader drains everything before it waits, so only the first item of a burst
        // needs to wake it.
        if was_empty {
            self.shared.ready.wake();
        }
        Ok(())
    }

    /// Queues `items`, oldest first, under one lock and with one wake-up: as many as there
    /// is room for. What was refused stays in `items`: the newest ones from the first that
    /// did not fit (`Full`), all of them if the reader is gone (`Closed`); `items` is empty
    /// on success.
    pub fn try_send_all(&self, items: &mut Vec<T>) -> Result<(), TrySendError<()>> {
        if items.is_empty() {
            return Ok(());
        }
        let wake = {
            let mut queue = self.shared.lock();
            if queue.reader_gone {
                return Err(TrySendError::Closed(()));
            }
            // What the accepted items bring the queue's load to.
            let mut load = queue.load as usize;
            let accepted = items
                .iter()
                .take_while(|item| {
                    let fits = load + item.weight() <= self.shared.capacity;
                    if fits {
                        load += item.weight();
                    }
                    fits
                })
                .count();
            let was_empty = queue.items.is_empty();
            if accepted == items.len() && queue.items.capacity() == 0 {
                // The usual case: the queue takes the caller's allocation over, no copy.
                queue.items = VecDeque::from(std::mem::take(items));
            } else {
                queue.items.extend(items.drain(..accepted));
            }
            queue.load = load as u32;
            was_empty && accepted > 0
        };
        if wake {
            self.shared.ready.wake();
        }
        if items.is_empty() {
            Ok(())
        } else {
            Err(TrySendError::Full(()))
        }
    }
}

/// The reading side.
pub struct Receiver<T, S = ()> {
    shared: Arc<Shared<T, S>>,
}

impl<T: Weigh, S> Receiver<T, S> {
    /// The state both sides share.
    pub fn status(&self) -> &S {
        &self.shared.status
    }

    /// An interrupt if one is pending, else the next item, waiting for one; `Closed` once
    /// every sender is gone and all is read.
    pub async fn recv(&mut self) -> Recv<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll, for hand-written futures.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv<T>> {
        if let Some(got) = self.next() {
            return Poll::Ready(got);
        }
        self.shared.ready.register(cx.waker());
        // Whatever arrived before the waker was registered woke nobody: look again.
        match self.next() {
            Some(got) => Poll::Ready(got),
            None => Poll::Pending,
        }
    }

    /// Ready once a sender called [`Sender::interrupt`], without taking any item (nor the
    /// interrupt): for a reader busy with something else (a write to a full socket, a frame
    /// awaiting its ack) that must still notice a kick.
    pub fn poll_interrupted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.lock().interrupted {
            return Poll::Ready(());
        }
        self.shared.ready.register(cx.waker());
        if self.shared.lock().interrupted {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// What `recv` would return now, if anything.
    fn next(&mut self) -> Option<Recv<T>> {
        {
            let mut queue = self.shared.lock();
            if std::mem::take(&mut queue.interrupted) {
                return Some(Recv::Interrupted);
            }
            if let Some(item) = queue.pop() {
                queue.shrink_if_drained();
                return Some(Recv::Item(item));
            }
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            // A last item may have raced in before the last sender left.
            return Some(self.try_recv().map_or(Recv::Closed, Recv::Item));
        }
        None
    }

    /// `true` if no item waits.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }

    /// What the waiting items weigh together (for the telnet writer, how many lines wait).
    pub fn load(&self) -> usize {
        self.shared.lock().load as usize
    }

    /// Hands the waiting items to `take`, oldest first, under one lock (not one per item)
    /// until none is left or `take` returns `false`; the rest stay queued. `take` runs
    /// while senders wait for the lock, so it should only copy (the telnet writer copies up
    /// to its 64 KiB write batch and one run of text; with one runtime thread, the default, nobody waits).
    pub fn try_recv_while(&mut self, mut take: impl FnMut(T) -> bool) {
        let mut queue = self.shared.lock();
        while let Some(item) = queue.pop() {
            if !take(item) {
                break;
            }
        }
        queue.shrink_if_drained();
    }

    /// The next item if one waits.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut queue = self.shared.lock();
        let item = queue.pop();
        queue.shrink_if_drained();
        item
    }
}

impl<T, S> Drop for Receiver<T, S> {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.reader_gone = true;
        queue.items = VecDeque::new();
        queue.load = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for i32 {}
    impl Weigh for &str {}

    /// A run of `.0` messages.
    #[derive(Debug, PartialEq)]
    struct Run(usize);

    impl Weigh for Run {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn the_bound_counts_what_items_weigh() {
        let (tx, mut rx) = mailbox(10, ());
        tx.try_send(Run(6)).unwrap();
        assert_eq!(rx.load(), 6);
        assert!(matches!(
            tx.try_send(Run(5)),
            Err(TrySendError::Full(Run(5)))
        ));
        let mut batch = vec![Run(3), Run(1), Run(1)];
        assert!(matches!(
            tx.try_send_all(&mut batch),
            Err(TrySendError::Full(()))
        ));
        assert_eq!(
            batch,
            [Run(1)],
            "what came after the first misfit comes back"
        );
        assert_eq!(rx.load(), 10);
        assert_eq!(rx.try_recv(), Some(Run(6)));
        assert_eq!(rx.load(), 4);
        tx.try_send(Run(5)).unwrap();
        let mut got = Vec::new();
        rx.try_recv_while(|run| {
            got.push(run);
            true
        });
        assert_eq!(got, [Run(3), Run(1), Run(5)]);
        assert_eq!(rx.load(), 0);
    }

    #[test]
    fn a_batch_read_stops_where_the_reader_says_and_leaves_the_rest_queued() {
        let (tx, mut rx) = mailbox(8, ());
        for n in 0..5 {
            tx.try_send(n).unwrap();
        }
        let mut got = Vec::new();
        rx.try_recv_while(|n| {
            got.push(n);
            n < 2
        });
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(rx.try_recv(), Some(3));
        rx.try_recv_while(|n| {
            got.push(n);
            true
        });
        assert_eq!(got, [0, 1, 2, 4]);
        assert!(rx.is_empty());
    }

    #[test]
    fn a_batch_sent_at_once_is_bounded_and_kept_in_order() {
        let (tx, mut rx) = mailbox(4, ());
        let mut batch = vec![1, 2];
        tx.try_send_all(&mut batch).unwrap();
        assert!(batch.is_empty());
        let mut batch = vec![3, 4, 5, 6];
        assert!(matches!(
            tx.try_send_all(&mut batch),
            Err(TrySendError::Full(()))
        ));
        assert_eq!(batch, [5, 6], "the newest that did not fit come back");
        let mut got = Vec::new();
        rx.try_recv_while(|n| {
            got.push(n);
            true
        });
        assert_eq!(got, [1, 2, 3, 4], "in order, up to the capacity");
        drop(rx);
        let mut batch = vec![7];
        assert!(matches!(
            tx.try_send_all(&mut batch),
            Err(TrySendError::Closed(()))
        ));
        assert_eq!(batch, [7]);
    }

    #[tokio::test]
    async fn bounded_in_order_and_closes_when_the_senders_go() {
        let (tx, mut rx) = mailbox(2, ());
        tx.try_send(1).unwrap();
        let tx2 = tx.clone();
        tx2.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv().await, Recv::Item(1));
        tx.try_send(3).unwrap();
        drop((tx, tx2));
        assert_eq!(rx.recv().await, Recv::Item(2));
        assert_eq!(rx.recv().await, Recv::Item(3));
        assert_eq!(rx.recv().await, Recv::Closed);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_and_a_gone_reader_refuses() {
        let (tx, mut rx) = mailbox(4, ());
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send("hi").unwrap();
        let (first, rx) = reader.await.unwrap();
        assert_eq!(first, Recv::Item("hi"));
        drop(rx);
        assert!(matches!(tx.try_send("late"), Err(TrySendError::Closed(_))));
    }

    #[tokio::test]
    async fn an_interrupt_jumps_the_queue_and_wakes_a_waiting_reader() {
        let (tx, mut rx) = mailbox(4, 7u8);
        tx.try_send(1).unwrap();
        tx.interrupt();
        assert_eq!(rx.recv().await, Recv::Interrupted);
        assert_eq!(rx.recv().await, Recv::Item(1));
        assert_eq!(*rx.status(), 7);
        let reader = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.interrupt();
        assert_eq!(reader.await.unwrap(), Recv::Interrupted);
    }

    #[tokio::test]
    async fn a_busy_reader_sees_an_interrupt_without_taking_items() {
        let (tx, rx) = mailbox(4, ());
        tx.try_send(1).unwrap();
        let waiter = tokio::spawn(async move {
            poll_fn(|cx| rx.poll_interrupted(cx)).await;
            rx
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "an item is not an interrupt");
        tx.interrupt();
        let mut rx = waiter.await.unwrap();
        assert_eq!(rx.recv().await, Recv::Interrupted);
        assert_eq!(rx.recv().await, Recv::Item(1));
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = mailbox(1000, ());
        tx.try_send(0).unwrap();
        assert_eq!(rx.shared.lock().items.capacity(), FIRST_ROOM);
        assert_eq!(rx.try_recv(), Some(0));
        assert_eq!(
            rx.shared.lock().items.capacity(),
            0,
            "one line is a burst too"
        );
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }
}
