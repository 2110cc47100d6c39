//! The built-in end actors `x-sink` and `x-sump`: they run inside the host, take finished
//! messages off their queues and persist the final envelope, keyed by envelope id, so a client
//! can fetch a result by id.

use crate::message::envelope::{Envelope, SINK, SUMP};
use crate::message::routing;
use crate::transport::results::ResultStore;
use crate::transport::{Delivery, Transport};
use anyhow::{Context, Result};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs `x-sink` and `x-sump` on `transport` until `shutdown`, storing into `store`.
pub async fn run_end_actors(
    transport: Arc<dyn Transport>,
    store: Arc<dyn ResultStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let sink = run_end_actor(SINK, transport.clone(), store.clone(), shutdown.clone());
    let sump = run_end_actor(SUMP, transport, store, shutdown);
    tokio::try_join!(sink, sump)?;
    Ok(())
}

async fn run_end_actor(
    name: &'static str,
    transport: Arc<dyn Transport>,
    store: Arc<dyn ResultStore>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut subscription = transport
        .subscribe(name)
        .await
        .with_context(|| format!("subscribing to '{name}'"))?;
    let concurrency = store.concurrency().max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut stored = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let Some(delivery) =
            crate::transport::next_delivery(subscription.as_mut(), &shutdown, name).await
        else {
            break;
        };
        while let Some(done) = stored.try_join_next() {
            done.context("an end actor task panicked")??;
        }
        let store = store.clone();
        stored.spawn(async move {
            let _permit = permit;
            store_one(name, store.as_ref(), delivery).await
        });
    }
    // Results being stored are finished (and acknowledged) before the end actor returns.
    while let Some(done) = stored.join_next().await {
        done.context("an end actor task panicked")??;
    }
    Ok(())
}

/// Persists one finished message, then acknowledges it (or has it redelivered).
async fn store_one(name: &str, store: &dyn ResultStore, delivery: Delivery) -> Result<()> {
    let (envelope, stored) = match serde_json::from_slice::<Envelope>(&delivery.bytes) {
        Ok(env) => {
            // Under the id its sender published it with: a redelivery (the store's write landed,
            // the acknowledgement did not) is dropped as a repeat, not written a second time.
            let dedup_id = routing::output_dedup_id(&env, name);
            let stored = store.put_once(name, &env, &dedup_id).await;
            (env, stored)
        }
        Err(err) => {
            // Garbage published straight to an end actor is still kept, as a ParseError.
            let env = routing::parse_error_dispatch(
                name,
                &delivery.bytes,
                &err.to_string(),
                &crate::message::envelope::now_rfc3339(),
            )
            .envelope;
            let stored = store.put(name, &env).await;
            (env, stored)
        }
    };
    match stored {
        Ok(()) => delivery.acker.ack().await?,
        Err(err) => {
            tracing::warn!(actor = name, envelope = %envelope.id, error = %format!("{err:#}"),
                "storing the result failed; it will be redelivered");
            delivery.acker.nak(None).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::envelope::Route;
    use crate::transport::embedded::EmbeddedTransport;
    use crate::transport::results::MemoryResults;
    use crate::transport::Outbound;
    use async_trait::async_trait;
    use std::time::{Duration, Instant};

    /// A store whose every write takes a fixed time, like a round trip to a server.
    struct SlowStore {
        inner: Arc<MemoryResults>,
        write: Duration,
        in_flight: usize,
    }

    #[async_trait]
    impl ResultStore for SlowStore {
        async fn put(&self, end_actor: &str, envelope: &Envelope) -> Result<()> {
            tokio::time::sleep(self.write).await;
            self.inner.put(end_actor, envelope).await
        }
        async fn get(&self, id: &str) -> Result<Option<Envelope>> {
            self.inner.get(id).await
        }
        fn concurrency(&self) -> usize {
            self.in_flight
        }
    }

    async fn time_to_store(in_flight: usize, messages: usize) -> Duration {
        let transport = Arc::new(EmbeddedTransport::new());
        let (inner, mut stored) = MemoryResults::new();
        let store = Arc::new(SlowStore {
            inner,
            write: Duration::from_millis(40),
            in_flight,
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_end_actors(transport.clone(), store, shutdown.clone()));
        let started = Instant::now();
        for n in 0..messages {
            let env = Envelope::new(
                Route::through(&[SINK]).unwrap(),
                serde_json::json!({ "n": n }),
                "2026-11-25T00:00:00Z",
            );
            let bytes = env.to_bytes();
            transport
                .publish(
                    SINK,
                    Outbound {
                        bytes,
                        dedup_id: env.id,
                    },
                )
                .await
                .unwrap();
        }
        for _ in 0..messages {
            stored.recv().await.unwrap();
        }
        let took = started.elapsed();
        shutdown.cancel();
        task.await.unwrap().unwrap();
        took
    }

    #[tokio::test]
    async fn an_end_actor_keeps_several_slow_stores_in_flight() {
        // 16 writes of 40 ms: one at a time takes 640 ms; eight at a time about 80 ms.
        let one = time_to_store(1, 16).await;
        let eight = time_to_store(8, 16).await;
        assert!(one >= Duration::from_millis(640), "{one:?}");
        assert!(eight < Duration::from_millis(400), "{eight:?}");
    }
}
