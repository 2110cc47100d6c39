//! Supervision of the host's long-running tasks (queue loops, end actors, fan-in): a task that
//! ends with an error, or ends while the host is still running, is started again after a
//! backoff, and [`Health`] remembers which tasks are down and since when. `/healthz` fails
//! when one has stayed down past a threshold (so Kubernetes restarts the pod); `/readyz`
//! reports whether every task is consuming.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// First delay before a restart; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest delay between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A task that ran this long before it ended starts again from [`FIRST_BACKOFF`].
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The state of one supervised task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// Since when it has been down (`None`: running).
    pub down_since: Option<Instant>,
    /// Why it last ended.
    pub last_error: Option<String>,
    /// How many times it was restarted.
    pub restarts: u64,
}

/// Which supervised tasks are running, shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Health {
    tasks: Mutex<BTreeMap<String, TaskState>>,
}

/// What `/healthz` and `/readyz` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every task is running.
    pub all_up: bool,
    /// Tasks down for longer than the threshold, with why: the host is not healthy.
    pub failing: Vec<String>,
    /// Tasks down right now, with why.
    pub down: Vec<String>,
}

impl Health {
    /// A shared, empty health record.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn set(&self, name: &str, update: impl FnOnce(&mut TaskState)) {
        let mut tasks = self.tasks.lock().expect("health lock");
        let state = tasks.entry(name.to_owned()).or_insert(TaskState {
            down_since: None,
            last_error: None,
            restarts: 0,
        });
        update(state);
    }

    /// `name` is running.
    pub fn up(&self, name: &str) {
        self.set(name, |s| s.down_since = None);
    }

    /// `name` ended (with `error`); it stays down until [`Health::up`].
    pub fn down(&self, name: &str, error: String) {
        self.set(name, |s| {
            s.down_since.get_or_insert_with(Instant::now);
            s.last_error = Some(error);
        });
    }

    /// `name` is not supervised any more (an actor that was removed).
    pub fn forget(&self, name: &str) {
        self.tasks.lock().expect("health lock").remove(name);
    }

    /// The state of `name`, if supervised.
    pub fn state(&self, name: &str) -> Option<TaskState> {
        self.tasks.lock().expect("health lock").get(name).cloned()
    }

    /// The tasks' state, judged against `unhealthy_after`.
    pub fn report(&self, unhealthy_after: Duration) -> Report {
        let tasks = self.tasks.lock().expect("health lock");
        let mut report = Report {
            all_up: true,
            failing: Vec::new(),
            down: Vec::new(),
        };
        for (name, state) in tasks.iter() {
            let Some(since) = state.down_since else {
                continue;
            };
            report.all_up = false;
            let line = format!(
                "{name}: down for {:.0?} ({} restarts): {}",
                since.elapsed(),
                state.restarts,
                state.last_error.as_deref().unwrap_or("ended")
            );
            if since.elapsed() >= unhealthy_after {
                report.failing.push(line.clone());
            }
            report.down.push(line);
        }
        report
    }
}

/// The delay before restart number `restarts` (1-based): doubling from [`FIRST_BACKOFF`],
/// capped at [`MAX_BACKOFF`].
pub fn backoff(restarts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << restarts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Runs `task` (made anew by `make` for each start) until `shutdown` is cancelled, restarting
/// it with backoff whenever it ends; records its state in `health` under `name`.
pub async fn supervise<F, Fut>(
    name: String,
    health: Arc<Health>,
    shutdown: CancellationToken,
    mut make: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut failures = 0u32;
    loop {
        health.up(&name);
        let started = Instant::now();
        let result = make().await;
        if shutdown.is_cancelled() {
            health.forget(&name);
            return result;
        }
        let error = match result {
            Ok(()) => "ended while the host runs".to_owned(),
            Err(err) => format!("{err:#}"),
        };
        if started.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        failures += 1;
        let delay = backoff(failures);
        tracing::warn!(task = %name, error = %error, ?delay, "task ended; restarting");
        health.down(&name, error);
        health.set(&name, |s| s.restarts += 1);
        tokio::select! {
            _ = shutdown.cancelled() => {
                health.forget(&name);
                return Ok(());
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(4), FIRST_BACKOFF * 8);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn a_failing_task_is_restarted_and_reported_until_it_runs() {
        let health = Health::new();
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let task = {
            let (health, shutdown, starts) = (health.clone(), shutdown.clone(), starts.clone());
            tokio::spawn(supervise(
                "fanin".into(),
                health,
                shutdown.clone(),
                move || {
                    let (starts, shutdown) = (starts.clone(), shutdown.clone());
                    async move {
                        // Fails three times, then runs until shutdown.
                        if starts.fetch_add(1, Ordering::SeqCst) < 3 {
                            anyhow::bail!("connection refused");
                        }
                        shutdown.cancelled().await;
                        Ok(())
                    }
                },
            ))
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let report = health.report(Duration::from_secs(60));
        assert!(!report.all_up);
        assert!(report.down[0].contains("connection refused"), "{report:?}");
        assert!(
            report.failing.is_empty(),
            "not down long enough to be unhealthy"
        );
        assert!(!health.report(Duration::ZERO).failing.is_empty());
        // 200 + 400 + 800 ms of backoff later it runs.
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 4);
        assert!(health.report(Duration::ZERO).all_up);
        assert_eq!(health.state("fanin").unwrap().restarts, 3);
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert!(health.state("fanin").is_none());
    }
}
