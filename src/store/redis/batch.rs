//! Commands sent together: the `GET`s and `SET`s of the requests that arrive in one turn of
//! the runtime leave in one write to Redis, instead of one write (and one wake-up of Redis)
//! each.
//!
//! fred writes a command as soon as its connection task sees it and flushes when no other
//! command is waiting. Polled from the request's own task, a command wakes that connection
//! task, and tokio runs the task a task wakes right after it (its LIFO slot): the connection
//! task finds one command, writes it and flushes. Under load that is one `writev` and one
//! wake-up of Redis per request. Here a request queues its command instead (a future not yet
//! polled); the first one of a turn spawns a sender task that yields once, so that the other
//! requests of the turn queue theirs, then polls every queued command once before fred's
//! connection task runs: they leave in one write.
//!
//! A command sent while none of this store's is waiting for Redis goes at once, from its own
//! task: batching pays only when commands overlap, and a lone one (a quiet server, a client
//! sending one request at a time) would otherwise wait for the runtime's turn to end.
//!
//! A request still waits through the store's breaker and command timeout as before; only the
//! task that polls its command changes. Commands and their options are the same: fred still
//! applies the command timeout and routes each command to its node of a cluster.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Poll;

use bytes::Bytes;
use fred::error::{Error, ErrorKind};
use fred::prelude::*;
use fred::types::Expiration;
use tokio::sync::oneshot;

use super::RedisStore;

type Queued = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The commands queued for the next write, and how many are waiting for Redis.
#[derive(Default)]
pub(super) struct Batch {
    queued: Mutex<Vec<Queued>>,
    waiting: AtomicUsize,
}

/// One command counted in [`Batch::waiting`] until it is answered or dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> (Self, usize) {
        (Self(count), count.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RedisStore {
    /// The answer of `command` (a fred call on a clone of this store), sent with the other
    /// commands of this turn. Boxed, like every call (see [`RedisStore::call`]): this future
    /// and the queued one stay small.
    pub(super) async fn batched<T: Send + 'static>(
        &self,
        command: Pin<Box<impl Future<Output = Result<T, Error>> + Send + 'static>>,
    ) -> Result<T, Error> {
        let (_waiting, before) = Waiting::new(&self.shared.batch.waiting);
        if before == 0 {
            return command.await;
        }
        let (tx, rx) = oneshot::channel();
        let queued: Queued = Box::pin(async move {
            // Nobody waits for an answer to a request that gave up: it is dropped.
            let _ = tx.send(command.await);
        });
        let first = {
            let mut batch = self.shared.batch.lock();
            batch.push(queued);
            batch.len() == 1
        };
        if first {
            tokio::spawn(self.clone().send_batch());
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Canceled, "command batch dropped")))
    }

    /// `GET key`, batched.
    pub(super) fn batched_get(
        &self,
        key: String,
    ) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send + '_ {
        let store = self.clone();
        self.batched(Box::pin(async move { store.shared.client.get(key).await }))
    }

    /// `SET key value PX millis`, batched.
    pub(super) fn batched_set(
        &self,
        key: String,
        value: Bytes,
        millis: i64,
    ) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        let store = self.clone();
        let expiry = Some(Expiration::PX(millis));
        self.batched(Box::pin(async move {
            store
                .shared
                .client
                .set(key, value, expiry, None, false)
                .await
        }))
    }

    async fn send_batch(self) {
        // Runs after the tasks already runnable: the other requests of this turn queue theirs.
        tokio::task::yield_now().await;
        let mut commands = std::mem::take(&mut *self.shared.batch.lock());
        // Each first poll hands a command to fred's connection task, which runs only after
        // this task yields, and then finds them all. Answered commands are dropped.
        std::future::poll_fn(|cx| {
            commands.retain_mut(|command| command.as_mut().poll(cx).is_pending());
            if commands.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl Batch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        // A push or a take cannot panic half-way: a poisoned queue is still whole.
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}
