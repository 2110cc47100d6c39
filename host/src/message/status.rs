//! Status transitions and dispatches: every path that moves an envelope on (to its next step,
//! to the sink, to a retry, to the error end) sets `status` here, so the phase, reason, actor,
//! attempt and timestamps change the same way everywhere.

use crate::message::envelope::{Envelope, ErrorInfo, Phase, Reason, Status, SINK};

/// What the retry policy decided about a failure (see the resiliency module).
#[derive(Debug, Clone, PartialEq)]
pub enum FailureAction {
    /// Send the message back to the same actor; `attempt` is the attempt number it will carry.
    Retry {
        /// The attempt number of the next try (from 2).
        attempt: u32,
        /// Attempts allowed by the matching policy.
        max_attempts: u32,
    },
    /// Stop retrying; the message ends at `destination` (normally `x-sump`) with `reason`.
    GiveUp {
        /// `HandlerError`-like reason of the failure, or `MaxRetriesExhausted` / `NonRetryable`.
        reason: Reason,
        /// Where the message goes: `x-sump` or the policy's `onExhausted` actors.
        route_to: Vec<String>,
    },
}

/// One envelope to publish, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// Destination actor (queue) name.
    pub destination: String,
    /// The envelope to publish there.
    pub envelope: Envelope,
}

/// Sends `env` to `route.curr` as a fresh, pending message for that actor (first attempt).
pub fn to_current_step(mut env: Envelope, now: &str) -> Dispatch {
    let next_actor = env.route.curr.clone();
    let status = env.status_mut(now);
    status.phase = Phase::Pending;
    status.reason = None;
    status.error = None;
    status.actor = Some(next_actor.clone());
    status.attempt = 1;
    status.max_attempts = 1;
    status.first_attempt_at = None;
    status.not_before = None;
    status.updated_at = Some(now.to_owned());
    Dispatch {
        destination: next_actor,
        envelope: env,
    }
}

/// Ends `env` successfully at `x-sink` after `actor` ran.
pub fn finish(mut env: Envelope, actor: &str, now: &str) -> Dispatch {
    env.route = env.route.ended_at(SINK);
    succeed_status(env.status_mut(now), actor, now);
    Dispatch {
        destination: SINK.to_owned(),
        envelope: env,
    }
}

/// Marks a message succeeded at `actor`.
pub fn succeed_status(status: &mut Status, actor: &str, now: &str) {
    status.phase = Phase::Succeeded;
    status.reason = Some(Reason::Completed);
    status.actor = Some(actor.to_owned());
    status.error = None;
    status.updated_at = Some(now.to_owned());
}

/// Marks a message failed at `actor` with `reason` and `error`.
pub fn fail_status(status: &mut Status, actor: &str, reason: Reason, error: ErrorInfo, now: &str) {
    status.phase = Phase::Failed;
    status.reason = Some(reason);
    status.actor = Some(actor.to_owned());
    status.error = Some(error);
    status.updated_at = Some(now.to_owned());
}

/// Marks a message to be retried by `actor` as attempt `attempt` of `max_attempts`.
pub fn retry_status(
    status: &mut Status,
    actor: &str,
    reason: Reason,
    error: ErrorInfo,
    attempt: u32,
    max_attempts: u32,
    now: &str,
) {
    status.phase = Phase::Retrying;
    status.reason = Some(reason);
    status.actor = Some(actor.to_owned());
    status.attempt = attempt;
    status.max_attempts = max_attempts;
    status.error = Some(error);
    status.updated_at = Some(now.to_owned());
}

/// Makes a message a fresh, pending first attempt for the actor it is handed to (an except
/// router, an `onExhausted` actor), keeping the error it carries.
pub fn pending_again(status: &mut Status, now: &str) {
    status.phase = Phase::Pending;
    status.attempt = 1;
    status.max_attempts = 1;
    status.first_attempt_at = None;
    status.not_before = None;
    status.updated_at = Some(now.to_owned());
}
