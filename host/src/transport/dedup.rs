//! Consumer-side deduplication for brokers that do not drop repeated publishes themselves
//! (RabbitMQ, SQS standard queues). NATS JetStream drops a repeated `Nats-Msg-Id` at publish;
//! these brokers deliver both copies, so each actor's subscription remembers the ids (the
//! sidecar's per-hop dedup ids, carried as the message id) of the messages it finished, for a
//! window, and acknowledges a repeat without handling it again.
//!
//! Only a *finished* message (acknowledged after its outputs were published) is remembered: a
//! message returned for a delayed retry comes back with the same id and must be handled.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ids of finished messages, each kept for `window`, at most `capacity` of them (the oldest are
/// forgotten first, so memory is bounded whatever the rate).
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    by_id: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl DedupWindow {
    /// A window of `window`, remembering at most `capacity` ids.
    pub fn new(window: Duration, capacity: usize) -> Self {
        DedupWindow {
            window,
            capacity: capacity.max(1),
            seen: Mutex::default(),
        }
    }

    /// Whether `id` finished within the window.
    pub fn contains(&self, id: &str) -> bool {
        let seen = self.seen.lock().expect("dedup lock");
        seen.by_id
            .get(id)
            .is_some_and(|at| at.elapsed() < self.window)
    }

    /// Records `id` as finished now.
    pub fn insert(&self, id: &str) {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("dedup lock");
        while let Some((at, _)) = seen.order.front() {
            if now.duration_since(*at) < self.window && seen.order.len() < self.capacity {
                break;
            }
            let (at, old) = seen.order.pop_front().expect("front exists");
            // Only forget it if it was not recorded again since.
            if seen.by_id.get(&old) == Some(&at) {
                seen.by_id.remove(&old);
            }
        }
        seen.by_id.insert(id.to_owned(), now);
        seen.order.push_back((now, id.to_owned()));
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.seen.lock().expect("dedup lock").by_id.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One [`DedupWindow`] per actor of a transport, made on first use.
pub struct DedupWindows {
    window: Duration,
    by_actor: Mutex<HashMap<String, Arc<DedupWindow>>>,
}

/// How many finished ids an actor remembers at most (bounds memory at high rates).
pub const DEDUP_CAPACITY: usize = 200_000;

impl DedupWindows {
    /// Windows of `window`, [`DEDUP_CAPACITY`] ids each.
    pub fn new(window: Duration) -> Self {
        DedupWindows {
            window,
            by_actor: Mutex::default(),
        }
    }

    /// The window of `actor`.
    pub fn of(&self, actor: &str) -> Arc<DedupWindow> {
        self.by_actor
            .lock()
            .expect("dedup windows")
            .entry(actor.to_owned())
            .or_insert_with(|| Arc::new(DedupWindow::new(self.window, DEDUP_CAPACITY)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let window = DedupWindow::new(Duration::from_millis(50), 100);
        assert!(!window.contains("a"));
        window.insert("a");
        assert!(window.contains("a"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!window.contains("a"));
        window.insert("b");
        assert_eq!(window.len(), 1, "the expired id was dropped");
    }

    #[test]
    fn memory_is_bounded_by_capacity() {
        let window = DedupWindow::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            window.insert(&i.to_string());
        }
        assert_eq!(window.len(), 3);
        assert!(window.contains("9") && !window.contains("0"));
    }

    #[test]
    fn a_reinserted_id_is_kept_from_its_latest_insert() {
        let window = DedupWindow::new(Duration::from_secs(60), 2);
        window.insert("a");
        window.insert("b");
        window.insert("a");
        window.insert("c");
        assert!(window.contains("a") && window.contains("c"));
    }
}
