//! Names every component derives the same way: actor names and the reserved built-in actors,
//! and the JetStream layout of a namespace (stream, subjects, consumers, results bucket,
//! deduplication ids) with the consumer settings the host and the operator both create.

use crate::SpecError;
use std::time::Duration;

/// A valid actor name: a DNS label (it names the Deployment, the consumer and the subject).
pub const ACTOR_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// The longest actor name.
pub const ACTOR_NAME_MAX_LENGTH: usize = 63;
/// What an actor name must look like.
pub const ACTOR_NAME_RULE: &str =
    "must be 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit";

/// Where a message goes when it ends successfully.
pub const SINK: &str = "x-sink";
/// Where a message goes when it ends in failure.
pub const SUMP: &str = "x-sump";
/// The built-in fan-in aggregator of compiled flows.
pub const FANIN: &str = "x-fanin";
/// The built-in pause step: a message routed here waits, stored, until a human resumes it
/// through the gateway (human in the loop).
pub const PAUSE: &str = "x-pause";
/// Names of the host's built-in actors; no AsyncActor may take them.
pub const RESERVED_NAMES: [&str; 4] = [SINK, SUMP, FANIN, PAUSE];
/// Why a reserved name is refused.
pub const RESERVED_RULE: &str =
    "is reserved for the host's built-in actors (x-sink, x-sump, x-fanin, x-pause)";

/// The envelope header that marks a message as a gateway task: its value is the task id (the
/// envelope id), and hosts report each hop of such a message to the task log.
pub const TASK_HEADER: &str = "asya-task";
/// The JetStream stream every namespace's task events go to (one subject per task).
pub const TASKS_STREAM: &str = "ASYA_TASKS";

/// The subject of task `id`'s events in namespace `namespace` (on [`TASKS_STREAM`]).
pub fn task_subject(namespace: &str, id: &str) -> String {
    format!("asya-tasks.{namespace}.{id}")
}

/// The subjects of every task of `namespace`.
pub fn task_subjects(namespace: &str) -> String {
    format!("asya-tasks.{namespace}.*")
}

/// Whether `name` is one of the two end actors (`x-sink`, `x-sump`).
pub fn is_end_actor(name: &str) -> bool {
    name == SINK || name == SUMP
}

/// Whether `name` is a built-in actor ([`RESERVED_NAMES`]).
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.contains(&name)
}

/// Whether `name` is a DNS label ([`ACTOR_NAME_PATTERN`], at most 63 characters).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= ACTOR_NAME_MAX_LENGTH
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks an AsyncActor's name: a DNS label that is not reserved.
pub fn check_actor_name(name: &str) -> Result<(), SpecError> {
    if !is_dns_label(name) {
        return Err(SpecError::new(
            "metadata.name",
            format!("{ACTOR_NAME_RULE} (got {name:?})"),
        ));
    }
    if is_reserved(name) {
        return Err(SpecError::new(
            "metadata.name",
            format!("{name:?} {RESERVED_RULE}"),
        ));
    }
    Ok(())
}

/// The schema of a list of actor names (`onExhausted`): each a DNS label.
pub fn actor_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "string",
            "maxLength": ACTOR_NAME_MAX_LENGTH,
            "pattern": ACTOR_NAME_PATTERN,
            "x-asya-message": ACTOR_NAME_RULE,
        },
    })
}

/// The JetStream stream of a namespace: `ASYA_<NAMESPACE>` (upper case, `-` and `.` as `_`).
pub fn stream_name(namespace: &str) -> String {
    format!("ASYA_{}", namespace.to_uppercase().replace(['-', '.'], "_"))
}

/// The subjects a namespace's stream holds: `asya.<namespace>.>`.
pub fn stream_subjects(namespace: &str) -> String {
    format!("asya.{namespace}.>")
}

/// The subject of an actor's queue: `asya.<namespace>.<actor>`.
pub fn subject(namespace: &str, actor: &str) -> String {
    format!("asya.{namespace}.{actor}")
}

/// The durable consumer reading an actor's queue: the actor's name.
pub fn consumer_name(actor: &str) -> String {
    actor.to_owned()
}

/// The key-value bucket of a namespace's final envelopes: `ASYA_RESULTS_<NAMESPACE>`.
pub fn results_bucket(namespace: &str) -> String {
    format!(
        "ASYA_RESULTS_{}",
        stream_name(namespace).trim_start_matches("ASYA_")
    )
}

/// The key-value bucket of a namespace's flow fan-ins: `ASYA_FANIN_<NAMESPACE>`.
pub fn fanin_bucket(namespace: &str) -> String {
    format!(
        "ASYA_FANIN_{}",
        stream_name(namespace).trim_start_matches("ASYA_")
    )
}

/// The subjects every stored result is published on (`$KV.<bucket>.>`).
pub fn results_subject(namespace: &str) -> String {
    format!("$KV.{}.>", results_bucket(namespace))
}

/// The `Nats-Msg-Id` of the output of hop `hop` of message `id` sent to `destination`: a
/// redelivered input republishes the same ids, which the stream drops within
/// [`DUPLICATE_WINDOW`].
pub fn dedup_id(id: &str, hop: impl std::fmt::Display, destination: &str) -> String {
    format!("{id}:{hop}:{destination}")
}

/// The RabbitMQ or SQS queue of `actor` in `namespace`: `asya-<namespace>-<actor>`, as Asya
/// names them.
pub fn queue_name(namespace: &str, actor: &str) -> String {
    format!("asya-{namespace}-{actor}")
}

/// The RabbitMQ queue holding `actor`'s messages retried after `delay_ms`: messages wait there
/// for its per-queue TTL, then dead-letter back to the actor's queue. One queue per distinct
/// delay, so a message never waits behind a longer one.
pub fn delay_queue_name(namespace: &str, actor: &str, delay_ms: u64) -> String {
    format!("asya-{namespace}-{actor}.delay-{delay_ms}ms")
}

/// The DynamoDB table holding results and open fan-ins of every namespace (keys are prefixed by
/// namespace), unless `ASYA_DYNAMODB_TABLE` names another.
pub const DEFAULT_STATE_TABLE: &str = "asya-state";

/// Window in which equal `Nats-Msg-Id`s are dropped (stream and results bucket alike).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a result stays in a namespace's results bucket (the default; `--results-ttl` of
/// the host and the operator, per namespace with `--results-ttl-for NS=DURATION`).
pub const DEFAULT_RESULTS_TTL: Duration = Duration::from_secs(24 * 3600);
/// The namespace streams use work-queue retention: a message is removed once its actor's
/// consumer acknowledges it, so a stream holds exactly the messages not yet processed (each
/// actor's consumer filters its own subject, which work-queue streams require). Limits
/// retention would keep every message ever sent.
pub const STREAM_RETENTION: &str = "workqueue";
/// A delivery not acknowledged within this time is delivered again (the default).
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(60);
/// Messages a consumer's pull fetches at once (the default).
pub const DEFAULT_BATCH: usize = 8;

/// Unacknowledged deliveries a consumer allows for a pull batch of `batch`: enough for a few
/// batches in flight while outputs wait for JetStream's confirmation.
pub fn max_ack_pending(batch: usize) -> i64 {
    (batch.max(1) * 8) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(stream_name("my-team.a"), "ASYA_MY_TEAM_A");
        assert_eq!(results_bucket("demo"), "ASYA_RESULTS_DEMO");
        assert_eq!(subject("demo", "a"), "asya.demo.a");
        assert_eq!(dedup_id("id", 2, SINK), "id:2:x-sink");
        assert_eq!(max_ack_pending(DEFAULT_BATCH), 64);
        assert!(check_actor_name("ok-1").is_ok());
        for bad in ["x-fanin", "x-sink", "Bad", "-a", "a-", "", &"a".repeat(64)] {
            assert!(check_actor_name(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn dns_label_iff_the_pattern_matches(name in "[a-z0-9-]{0,70}|\\PC{0,10}") {
            let re = regex::Regex::new(ACTOR_NAME_PATTERN).unwrap();
            proptest::prop_assert_eq!(is_dns_label(&name), re.is_match(&name) && name.len() <= 63);
        }
    }
}
