//! What every bench shares, so that each reports the same way:
//!
//! - [`Outcomes`]: every timed operation's outcome is counted. Figures (throughput, latency) count
//!   only the successful ones; failures are printed by kind on their own line, with a WARNING
//!   when there are any, and more than [`MAX_FAILED_SHARE`] of them fails the bench.
//! - [`Report`]: each target, the figure this run measured and whether it is `MET` or `NOT MET`,
//!   in one format (`target: asya/raw bare >= 50%  measured 51%  MET`). A missed target does not
//!   fail the bench (the machines are noisy); failed operations do.
//!
//! Included by each bench with `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

use asya_host::app::local::LocalHost;
use asya_host::message::envelope::{Envelope, Phase, SINK};
use asya_host::runtime::executor::CallOutcome;
use asya_host::transport::results::Finished;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// More than this share of failed operations fails the bench (1%).
pub const MAX_FAILED_SHARE: f64 = 0.01;

/// The outcomes of one kind of timed operation (handler calls, messages, host starts, ...).
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    what: String,
    ok: u64,
    failed: BTreeMap<String, u64>,
}

impl Outcomes {
    /// No outcomes yet of operations called `what` (plural: "handler calls").
    pub fn new(what: impl Into<String>) -> Self {
        Outcomes {
            what: what.into(),
            ..Default::default()
        }
    }

    /// What the operations are.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Counts `n` successful operations.
    pub fn add_ok(&mut self, n: u64) {
        self.ok += n;
    }

    /// Counts one failed operation of `kind` (a reason: `Timeout`, `x-sump: HandlerError`, ...).
    pub fn fail(&mut self, kind: impl Into<String>) {
        self.fail_n(kind, 1);
    }

    /// Counts `n` failed operations of `kind`.
    pub fn fail_n(&mut self, kind: impl Into<String>, n: u64) {
        if n > 0 {
            *self.failed.entry(kind.into()).or_default() += n;
        }
    }

    /// Successful operations.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Failed operations, all kinds.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Every counted operation.
    pub fn total(&self) -> u64 {
        self.ok + self.failures()
    }

    /// The share of operations that failed (0 when none ran).
    pub fn failed_share(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.failures() as f64 / self.total() as f64
        }
    }

    /// Adds another count of the same operations.
    pub fn merge(&mut self, other: &Outcomes) {
        self.ok += other.ok;
        for (kind, n) in &other.failed {
            self.fail_n(kind.clone(), *n);
        }
    }

    /// Counts a handler call: it succeeded when the handler returned (a value or `None`).
    pub fn call(&mut self, outcome: &CallOutcome) -> bool {
        match outcome {
            CallOutcome::Returned(_) | CallOutcome::ReturnedNone => {
                self.ok += 1;
                true
            }
            CallOutcome::Failed(failure) => {
                self.fail(failure.reason.as_str());
                false
            }
        }
    }

    /// Counts a message that reached an end actor: it succeeded when it ended at `x-sink` with
    /// its status `succeeded`.
    pub fn finished(&mut self, done: &Finished) -> bool {
        self.finished_as(done, |_| true)
    }

    /// [`Outcomes::finished`], and its final envelope must also satisfy `expected` (a wrong
    /// result counts as a failure of kind `x-sink: unexpected result`).
    pub fn finished_as(&mut self, done: &Finished, expected: impl Fn(&Envelope) -> bool) -> bool {
        if done.end_actor != SINK {
            self.fail(format!("{}: {}", done.end_actor, reason(&done.envelope)));
            return false;
        }
        self.ended_as(&done.envelope, expected)
    }

    /// Counts a stored final envelope (NATS results bucket): it succeeded when its status is
    /// `succeeded` (ended at `x-sink`); `failed` ones ended at `x-sump`.
    pub fn ended(&mut self, envelope: &Envelope) -> bool {
        self.ended_as(envelope, |_| true)
    }

    fn ended_as(&mut self, envelope: &Envelope, expected: impl Fn(&Envelope) -> bool) -> bool {
        match envelope.status.as_ref().map(|s| s.phase) {
            Some(Phase::Succeeded) if expected(envelope) => {
                self.ok += 1;
                true
            }
            Some(Phase::Succeeded) => {
                self.fail(format!("{SINK}: unexpected result"));
                false
            }
            Some(Phase::Failed) => {
                self.fail(format!("x-sump: {}", reason(envelope)));
                false
            }
            Some(phase) => {
                self.fail(format!("ended in phase {phase:?}"));
                false
            }
            None => {
                self.fail("ended without a status");
                false
            }
        }
    }

    /// Counts every result of a batch ([`LocalHost::run_batch`]); returns how many succeeded.
    pub fn batch(&mut self, results: &[Finished]) -> u64 {
        self.batch_as(results, |_| true)
    }

    /// [`Outcomes::batch`] with [`Outcomes::finished_as`]'s check of each result.
    pub fn batch_as(&mut self, results: &[Finished], expected: impl Fn(&Envelope) -> bool) -> u64 {
        results
            .iter()
            .filter(|done| self.finished_as(done, &expected))
            .count() as u64
    }

    /// `failures (WHAT): N of TOTAL` with the kinds, and a WARNING line when there are any.
    pub fn print(&self) {
        let kinds: Vec<String> = self
            .failed
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!("  ({})", kinds.join(", "))
        };
        println!(
            "  failures ({}): {} of {}{kinds}",
            self.what,
            self.failures(),
            self.total()
        );
        if self.failures() > 0 {
            println!(
                "  WARNING: {} of {} {} failed ({:.2}%); the figures above count only the {} that succeeded{}",
                self.failures(),
                self.total(),
                self.what,
                self.failed_share() * 100.0,
                self.ok,
                if self.failed_share() > MAX_FAILED_SHARE {
                    "; more than 1% failed: this run FAILS"
                } else {
                    ""
                }
            );
        }
    }

    /// One line of JSON, for a bench's child process to hand its counts to the parent.
    pub fn to_json(&self) -> String {
        json!({"what": self.what, "ok": self.ok, "failed": self.failed}).to_string()
    }

    /// The counts of [`Outcomes::to_json`].
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let v: Value = serde_json::from_str(text)?;
        let mut out = Outcomes::new(v["what"].as_str().unwrap_or_default());
        out.ok = v["ok"].as_u64().unwrap_or(0);
        if let Some(failed) = v["failed"].as_object() {
            for (kind, n) in failed {
                out.fail_n(kind.clone(), n.as_u64().unwrap_or(0));
            }
        }
        Ok(out)
    }
}

/// Checks the results of a warm-up batch (not timed, not counted): any failure there means the
/// bench itself is broken, so it stops with the kinds.
pub fn check_warm_up(results: &[Finished]) -> anyhow::Result<()> {
    let mut warm = Outcomes::new("warm-up messages");
    warm.batch(results);
    anyhow::ensure!(
        warm.failures() == 0,
        "{} of {} warm-up messages failed: {:?}",
        warm.failures(),
        warm.total(),
        warm.failed
    );
    Ok(())
}

/// Why a final envelope ended where it did (`status.reason`), or `no reason`.
fn reason(envelope: &Envelope) -> &'static str {
    envelope
        .status
        .as_ref()
        .and_then(|s| s.reason)
        .map_or("no reason", |r| r.as_str())
}

/// Sends one message through `route` and waits for its own result (results of earlier messages
/// that timed out are skipped). `Some(result)` when it arrived, not yet counted (count it with
/// [`Outcomes::finished`]); `None` when none came within `timeout`, counted as a failure.
pub async fn round_trip(
    host: &mut LocalHost,
    route: &[String],
    payload: Value,
    timeout: Duration,
    outcomes: &mut Outcomes,
) -> anyhow::Result<Option<Finished>> {
    let id = host.send(route, payload).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match host.next_result(left).await {
            Ok(done) if done.envelope.id == id => return Ok(Some(done)),
            Ok(_) => continue,
            Err(_) if Instant::now() >= deadline => {
                outcomes.fail(format!("no result within {timeout:?}"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A quantile of a histogram, NaN when it holds no sample (nothing succeeded).
pub fn quantile(histogram: &Histogram<u64>, q: f64) -> f64 {
    if histogram.is_empty() {
        f64::NAN
    } else {
        histogram.value_at_quantile(q) as f64
    }
}

/// The median of some durations in milliseconds, NaN when there are none.
pub fn median_ms(mut values: Vec<Duration>) -> f64 {
    values.sort();
    match values.len() {
        0 => f64::NAN,
        n => values[n / 2].as_secs_f64() * 1e3,
    }
}

/// Which way a target goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    AtLeast,
    AtMost,
}

#[derive(Debug, Clone)]
struct Target {
    name: String,
    bound: Bound,
    goal: f64,
    unit: String,
    /// `Err(why)`: not evaluated in this run.
    measured: Result<f64, String>,
}

/// A bench's operation counts and targets, printed together at the end of its output.
#[derive(Debug, Default)]
pub struct Report {
    outcomes: Vec<Outcomes>,
    targets: Vec<Target>,
}

impl Report {
    /// A report with nothing in it yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the outcomes of one kind of operation.
    pub fn outcomes(&mut self, outcomes: &Outcomes) -> &mut Self {
        self.outcomes.push(outcomes.clone());
        self
    }

    /// A target `name >= goal unit`, with this run's figure.
    pub fn at_least(&mut self, name: &str, goal: f64, measured: f64, unit: &str) -> &mut Self {
        self.target(name, Bound::AtLeast, goal, Ok(measured), unit)
    }

    /// A target `name <= goal unit`, with this run's figure.
    pub fn at_most(&mut self, name: &str, goal: f64, measured: f64, unit: &str) -> &mut Self {
        self.target(name, Bound::AtMost, goal, Ok(measured), unit)
    }

    /// A target `name >= goal unit` this run does not measure, and why.
    pub fn at_least_unmeasured(
        &mut self,
        name: &str,
        goal: f64,
        unit: &str,
        why: &str,
    ) -> &mut Self {
        self.target(name, Bound::AtLeast, goal, Err(why.into()), unit)
    }

    /// A target `name <= goal unit` this run does not measure, and why.
    pub fn at_most_unmeasured(
        &mut self,
        name: &str,
        goal: f64,
        unit: &str,
        why: &str,
    ) -> &mut Self {
        self.target(name, Bound::AtMost, goal, Err(why.into()), unit)
    }

    fn target(
        &mut self,
        name: &str,
        bound: Bound,
        goal: f64,
        measured: Result<f64, String>,
        unit: &str,
    ) -> &mut Self {
        self.targets.push(Target {
            name: name.into(),
            bound,
            goal,
            unit: unit.into(),
            measured,
        });
        self
    }

    /// Prints the failures of each kind of operation, then each target and whether this run met
    /// it (`target: none stated` when the bench has none); an error when more than 1% of any
    /// kind of operation failed.
    pub fn finish(&self) -> anyhow::Result<()> {
        for outcomes in &self.outcomes {
            outcomes.print();
        }
        if self.targets.is_empty() {
            println!("  target: none stated");
        }
        for t in &self.targets {
            let op = match t.bound {
                Bound::AtLeast => ">=",
                Bound::AtMost => "<=",
            };
            let stated = format!("  target: {} {op} {}{}", t.name, t.goal, t.unit);
            match &t.measured {
                Err(why) => println!("{stated}  not evaluated ({why})"),
                Ok(m) if m.is_nan() => {
                    println!("{stated}  measured -  NOT MET (nothing succeeded)")
                }
                Ok(m) => {
                    let met = match t.bound {
                        Bound::AtLeast => *m >= t.goal,
                        Bound::AtMost => *m <= t.goal,
                    };
                    println!(
                        "{stated}  measured {}{}  {}",
                        figure(*m),
                        t.unit,
                        if met { "MET" } else { "NOT MET" }
                    );
                }
            }
        }
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter(|o| o.failed_share() > MAX_FAILED_SHARE)
            .map(|o| format!("{} of {} {}", o.failures(), o.total(), o.what))
            .collect();
        anyhow::ensure!(
            failed.is_empty(),
            "more than 1% of the operations failed: {}",
            failed.join("; ")
        );
        Ok(())
    }
}

/// A measured figure with about three significant digits.
fn figure(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 => 2,
        _ => 3,
    };
    format!("{v:.decimals$}")
}

/// This process's resident set, in bytes (Linux `/proc/self/statm`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A native-Python runtime this process spawns for `handler` (from `tests/fixtures/handlers`,
/// payload mode), listening on `socket`, with `in_flight` calls at once.
pub fn native_runtime(
    python: std::path::PathBuf,
    source_dir: std::path::PathBuf,
    handler: &str,
    socket: std::path::PathBuf,
    in_flight: usize,
) -> asya_host::runtime::python::PythonRuntimeConfig {
    asya_host::runtime::python::PythonRuntimeConfig {
        socket,
        spawn: Some(asya_host::runtime::python::SpawnSpec {
            python,
            handler: handler.into(),
            mode: asya_host::runtime::executor::Mode::Payload,
            source_dir,
            env: vec![],
        }),
        ready_timeout: Duration::from_secs(60),
        max_in_flight: in_flight,
        max_output_bytes: 8 << 20,
    }
}
