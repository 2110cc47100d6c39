//! Consumer-side deduplication for brokers that do not drop repeated publishes themselves
//! (RabbitMQ, SQS standard queues). NATS JetStream drops a repeated `Nats-Msg-Id` at publish;
//! these brokers deliver both copies, so each actor's subscription remembers the ids (the
//! sidecar's per-hop dedup ids, carried as the message id) of the messages it finished, for a
//! window, and acknowledges a repeat without handling it again.
//!
//! Only a *finished* message (acknowledged after its outputs were published) is remembered: a
//! message returned for a delayed retry comes back with the same id and must be handled.
//!
//! Copies of one message can also arrive together (an input redelivered after a crash
//! republishes its outputs, and both copies land in one batch). While one copy is being handled
//! its id is *in flight* ([`DedupWindow::begin`]); another copy waits and comes back, so the two
//! never run at once (and never race to store the same result).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ids of finished messages, each kept for `window`, at most `capacity` of them (the oldest are
/// forgotten first, so memory is bounded whatever the rate).
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    seen: Mutex<Seen>,
    in_flight: Mutex<HashSet<String>>,
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
            in_flight: Mutex::default(),
        }
    }

    /// Whether `id` finished within the window.
    pub fn contains(&self, id: &str) -> bool {
        let seen = self.seen.lock().expect("dedup lock");
        seen.by_id
            .get(id)
            .is_some_and(|at| at.elapsed() < self.window)
    }

    /// Marks `id` in flight; `None` when another copy of it is in flight already. The id stays
    /// in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, id: &str) -> Option<InFlight> {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(id.to_owned())
            .then(|| InFlight {
                window: self.clone(),
                id: id.to_owned(),
            })
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

/// A message id in flight (see [`DedupWindow::begin`]); dropping it ends that.
pub struct InFlight {
    window: Arc<DedupWindow>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.window
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.id);
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
    fn one_copy_of_a_message_is_in_flight_at_a_time() {
        let window = Arc::new(DedupWindow::new(Duration::from_secs(60), 10));
        let first = window.begin("a").expect("the first copy runs");
        assert!(window.begin("a").is_none(), "a second copy waits");
        assert!(window.begin("b").is_some());
        drop(first);
        assert!(
            window.begin("a").is_some(),
            "free again once the first is done"
        );
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
