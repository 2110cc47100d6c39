//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews the lease every `ttl / 3`; a candidate takes it over once it has not been renewed for
//! `ttl`. Updates carry the lease's `resourceVersion`, so two candidates cannot both win a
//! takeover (the loser gets a 409 Conflict). Only the leader runs the controller.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// Which lease, and who is asking.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
}

/// What a candidate does with a lease it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It holds the lease: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// Someone else holds it.
    Wait,
}

/// Decides from the lease's spec (pure).
pub fn decide(spec: &LeaseSpec, holder: &str, now: Timestamp) -> Decision {
    match spec.holder_identity.as_deref() {
        Some(current) if current == holder => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            match renewed {
                Some(renewed) if now < renewed + SignedDuration::from_secs(ttl) => Decision::Wait,
                _ => Decision::Acquire,
            }
        }
    }
}

fn held_spec(settings: &LeaseSettings, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.holder.clone()),
        lease_duration_seconds: Some(settings.ttl.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

fn conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// One round: creates, renews or takes over the lease. `Ok(true)` while this replica leads.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..Default::default()
            },
            spec: Some(held_spec(settings, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(err) if conflict(&err) => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match decide(&spec, &settings.holder, now) {
        Decision::Wait => return Ok(false),
        Decision::Renew => {
            let mut renewed = spec;
            renewed.renew_time = Some(MicroTime(now));
            renewed.lease_duration_seconds = Some(settings.ttl.as_secs().max(1) as i32);
            lease.spec = Some(renewed);
        }
        Decision::Acquire => {
            let transitions = spec.lease_transitions.unwrap_or(0) + 1;
            lease.spec = Some(held_spec(settings, now, transitions));
        }
    }
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if conflict(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Keeps trying (every `ttl / 3`) and publishes whether this replica leads. Leadership is
/// considered lost when a renewal has not succeeded for `ttl`.
pub async fn hold(api: Api<Lease>, settings: LeaseSettings, leading: watch::Sender<bool>) {
    let period = (settings.ttl / 3).max(Duration::from_millis(100));
    let mut last_success: Option<std::time::Instant> = None;
    loop {
        let now = Timestamp::now();
        let lead = match try_acquire_or_renew(&api, &settings, now).await {
            Ok(true) => {
                last_success = Some(std::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(err) => {
                tracing::warn!(error = %err, lease = %settings.name, "lease renewal failed");
                // Keep leading until the lease could have expired.
                *leading.borrow() && last_success.is_some_and(|t| t.elapsed() < settings.ttl)
            }
        };
        if *leading.borrow() != lead {
            tracing::info!(holder = %settings.holder, leading = lead, "leadership changed");
        }
        leading.send_replace(lead);
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64) -> LeaseSpec {
        let now = Timestamp::from_second(1_000_000).unwrap();
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(decide(&spec(Some("me"), 5), "me", now), Decision::Renew);
        assert_eq!(decide(&spec(Some("other"), 5), "me", now), Decision::Wait);
        assert_eq!(
            decide(&spec(Some("other"), 16), "me", now),
            Decision::Acquire
        );
        assert_eq!(decide(&spec(None, 0), "me", now), Decision::Acquire);
    }
}
