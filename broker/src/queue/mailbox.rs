//! A queue's mailboxes: multi-producer, single-consumer, holding no memory while empty.
//!
//! tokio's mpsc channels allocate a block of 32 slots when they are created; with a queue's
//! two mailboxes that was 5 KB for every queue, most of what an idle queue cost. These
//! allocate on the first command and let the buffer go once it is drained, so an idle queue
//! holds two small headers. The API is the subset of tokio's that queues use, with its error
//! types, and the receiver takes part in tokio's cooperative budget as tokio's does.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Poll, Waker};

use tokio::sync::Notify;

pub use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver closed or was dropped: sends fail.
    closed: bool,
    /// Live senders; at zero the receiver sees the end.
    senders: usize,
    /// The receiver, waiting for a command.
    waker: Option<Waker>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    /// Commands held before `Sender::send` waits (`usize::MAX`: unbounded).
    bound: usize,
    /// Wakes senders waiting for room.
    room: Notify,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code panics while holding the lock, and the state is valid at every step anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `value` unless the mailbox is closed or full.
    fn push(&self, value: T) -> Result<(), TrySendError<T>> {
        let mut s = self.lock();
        if s.closed {
            return Err(TrySendError::Closed(value));
        }
        if s.queue.len() >= self.bound {
            return Err(TrySendError::Full(value));
        }
        s.queue.push_back(value);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

fn new<T>(bound: usize) -> Arc<Inner<T>> {
    Arc::new(Inner {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closed: false,
            senders: 1,
            waker: None,
        }),
        bound,
        room: Notify::new(),
    })
}

/// A mailbox that holds at most `bound` commands; `Sender::send` waits for room.
pub fn bounded<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let inner = new(bound.max(1));
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

/// A mailbox without a bound.
pub fn unbounded<T>() -> (UnboundedSender<T>, Receiver<T>) {
    let inner = new(usize::MAX);
    (
        UnboundedSender(Sender {
            inner: inner.clone(),
        }),
        Receiver { inner },
    )
}

/// The sending side of a bounded mailbox.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Sender<T> {
    /// Sends without waiting.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.inner.push(value)
    }

    /// Sends, waiting while the mailbox is full. Cancel safe in that nothing is sent unless it
    /// completes (the value is dropped with the future).
    pub async fn send(&self, mut value: T) -> Result<(), SendError<T>> {
        loop {
            let notified = self.inner.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so room made after it is not missed.
            notified.as_mut().enable();
            match self.inner.push(value) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(v)) => return Err(SendError(v)),
                Err(TrySendError::Full(v)) => value = v,
            }
            notified.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.lock().senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.inner.lock();
        s.senders -= 1;
        let waker = (s.senders == 0).then(|| s.waker.take()).flatten();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The sending side of an unbounded mailbox.
#[derive(Clone)]
pub struct UnboundedSender<T>(Sender<T>);

impl<T> UnboundedSender<T> {
    /// Sends; fails only if the receiver is closed or gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0
            .inner
            .push(value)
            .map_err(|e| SendError(e.into_inner()))
    }
}

/// The receiving side: the queue's owner task.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Receiver<T> {
    /// Moves up to `limit` commands into `buffer`, waiting for at least one; 0 once every
    /// sender is gone and the mailbox is empty. Cancel safe: commands move only on completion.
    pub async fn recv_many(&mut self, buffer: &mut Vec<T>, limit: usize) -> usize {
        poll_fn(|cx| {
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            if limit == 0 {
                coop.made_progress();
                return Poll::Ready(0);
            }
            let mut s = self.inner.lock();
            if s.queue.is_empty() {
                if s.senders == 0 || s.closed {
                    coop.made_progress();
                    return Poll::Ready(0);
                }
                if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    s.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let was_full = s.queue.len() >= self.inner.bound;
            let n = limit.min(s.queue.len());
            buffer.extend(s.queue.drain(..n));
            if s.queue.is_empty() {
                // The buffer goes with the burst that needed it: an idle queue holds none.
                s.queue = VecDeque::new();
            }
            drop(s);
            if was_full {
                self.inner.room.notify_waiters();
            }
            coop.made_progress();
            Poll::Ready(n)
        })
        .await
    }

    /// Takes one command if there is one.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut s = self.inner.lock();
        match s.queue.pop_front() {
            Some(v) => {
                let was_full = s.queue.len() + 1 >= self.inner.bound;
                drop(s);
                if was_full {
                    self.inner.room.notify_waiters();
                }
                Ok(v)
            }
            None if s.senders == 0 || s.closed => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// No command is waiting.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().queue.is_empty()
    }

    /// Refuses further sends; commands already in the mailbox can still be received.
    pub fn close(&mut self) {
        self.inner.lock().closed = true;
        self.inner.room.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = {
            let mut s = self.inner.lock();
            s.closed = true;
            std::mem::take(&mut s.queue)
        };
        self.inner.room.notify_waiters();
        // Dropped outside the lock: a command's drop may send elsewhere (a reply, a confirm).
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn delivers_in_order_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = bounded(4);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        tx2.send(2).await.unwrap();
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 10).await, 2);
        assert_eq!(got, [1, 2]);
        drop(tx);
        tx2.try_send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.recv_many(&mut got, 10).await, 1);
        assert_eq!(rx.recv_many(&mut got, 10).await, 0);
        assert_eq!(got, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_senders_wait_until_the_receiver_takes() {
        let (tx, mut rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        let waiting = tokio::spawn(async move {
            tx.send(3).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "the send waits while the mailbox is full"
        );
        let mut got = Vec::new();
        rx.recv_many(&mut got, 1).await;
        let tx = waiting.await.unwrap();
        drop(tx);
        while rx.recv_many(&mut got, 10).await > 0 {}
        assert_eq!(got, [1, 2, 3]);
    }

    #[tokio::test]
    async fn closing_refuses_sends_and_wakes_waiting_senders() {
        let (tx, mut rx) = bounded(1);
        tx.try_send(1).unwrap();
        let waiting = tokio::spawn(async move { tx.send(2).await.is_err() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        rx.close();
        assert!(waiting.await.unwrap(), "a send to a closed mailbox fails");
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        let (utx, urx) = unbounded::<u32>();
        drop(urx);
        assert!(utx.send(1).is_err());
    }

    #[tokio::test]
    async fn an_idle_mailbox_lets_its_buffer_go() {
        let (tx, mut rx) = unbounded();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(rx.recv_many(&mut got, 600).await, 600);
        assert!(rx.inner.lock().queue.capacity() >= 400);
        assert_eq!(rx.recv_many(&mut got, 600).await, 400);
        assert_eq!(rx.inner.lock().queue.capacity(), 0);
    }

    #[tokio::test]
    async fn commands_left_in_a_dropped_mailbox_are_dropped() {
        let (tx, rx) = unbounded();
        let (reply, answer) = tokio::sync::oneshot::channel::<()>();
        tx.send(reply).unwrap();
        drop(rx);
        assert!(
            answer.await.is_err(),
            "the reply sender was dropped with the mailbox"
        );
    }
}
