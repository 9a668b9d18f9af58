//! A connection's outbound queue: many senders (the router, the connection itself), one
//! reader (the connection's writer), bounded, and free of heap memory while empty.
//!
//! tokio's `mpsc` would do, but it allocates its first block of slots (about 1 KiB with its
//! channel state) at creation and keeps grown blocks, for every connection, idle or not.
//! Here an idle connection costs one small `Arc`: the queue allocates when something is
//! queued and gives its memory back once drained after a burst.
//!
//! Overflow policy: [`Sender::try_send`] never waits; it fails with `Full` once `capacity`
//! items wait, and the caller decides (the router disconnects the client as too slow).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Items a drained queue may keep room for; a bigger one is freed (a burst is over).
const KEEP_ROOM: usize = 8;

/// Why an item was not queued; it comes back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// `capacity` items wait already.
    Full(T),
    /// The reader is gone.
    Closed(T),
}

struct Shared<T> {
    queue: Mutex<Queue<T>>,
    /// Wakes the reader: an item arrived or the last sender left.
    ready: Notify,
    senders: AtomicUsize,
    capacity: usize,
}

struct Queue<T> {
    items: VecDeque<T>,
    reader_gone: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // Every critical section is one VecDeque operation: a panic cannot leave it torn.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded queue of at most `capacity` items.
pub fn mailbox<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            reader_gone: false,
        }),
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
        capacity,
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
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mailbox::Sender").finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the reader is gone.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let was_empty = {
            let mut queue = self.shared.lock();
            if queue.reader_gone {
                return Err(TrySendError::Closed(item));
            }
            if queue.items.len() >= self.shared.capacity {
                return Err(TrySendError::Full(item));
            }
            queue.items.push_back(item);
            queue.items.len() == 1
        };
        // The reader drains everything before it waits, so only the first item of a burst
        // needs to wake it.
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

/// The reading side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once every sender is gone and all is read.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                // A last item may have raced in before the last sender left.
                return self.try_recv();
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next item if one waits.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut queue = self.shared.lock();
        let item = queue.items.pop_front();
        if queue.items.is_empty() && queue.items.capacity() > KEEP_ROOM {
            queue.items = VecDeque::new();
        }
        item
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.reader_gone = true;
        queue.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_order_and_closes_when_the_senders_go() {
        let (tx, mut rx) = mailbox(2);
        tx.try_send(1).unwrap();
        let tx2 = tx.clone();
        tx2.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(3).unwrap();
        drop((tx, tx2));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_and_a_gone_reader_refuses() {
        let (tx, mut rx) = mailbox(4);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send("hi").unwrap();
        let (first, rx) = reader.await.unwrap();
        assert_eq!(first, Some("hi"));
        drop(rx);
        assert!(matches!(tx.try_send("late"), Err(TrySendError::Closed(_))));
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = mailbox(1000);
        for i in 0..500 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.lock().items.capacity(), 0);
    }
}
