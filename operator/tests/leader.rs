//! Lease leader election against the in-memory API: one leader at a time, renewal, takeover
//! after expiry, the races the `kube-leader-election` crate leaves to its caller, and
//! stepping down when a round fails.
//!
//! The crate reads the wall clock, so "a's renewals stop for 16 s" is played by moving the
//! Lease's `renewTime` 16 s back.

use asya_operator::leader::{hold, Candidate, LeaseSettings};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::SignedDuration;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use kube_fake_client::{interceptor, ClientBuilder};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: &str = "asya-system";
const LEASE: &str = "asya-operator";

fn settings(holder: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: NS.into(),
        name: LEASE.into(),
        holder: holder.into(),
        ttl: Duration::from_secs(15),
    }
}

/// The next GET of the Lease returns this snapshot instead of the stored one: a candidate that
/// read the lease before another's write landed.
type Stale = Arc<Mutex<Option<Value>>>;

async fn api() -> (Client, Stale) {
    let stale: Stale = Arc::default();
    let served = stale.clone();
    let client = ClientBuilder::new()
        .with_interceptor_funcs(interceptor::Funcs::new().get(move |ctx| {
            Ok(if ctx.name == LEASE {
                served.lock().unwrap().take()
            } else {
                None
            })
        }))
        .build()
        .await
        .unwrap();
    (client, stale)
}

fn leases(client: &Client) -> Api<Lease> {
    Api::namespaced(client.clone(), NS)
}

async fn lease(client: &Client) -> Lease {
    leases(client).get(LEASE).await.unwrap()
}

/// Plays `secs` seconds without renewal: moves `renewTime` back.
async fn silence(client: &Client, secs: i64) {
    let renewed = lease(client).await.spec.unwrap().renew_time.unwrap().0;
    let earlier = MicroTime(renewed - SignedDuration::from_secs(secs));
    leases(client)
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": earlier}})),
        )
        .await
        .unwrap();
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

#[tokio::test]
async fn one_leader_renewal_and_takeover() {
    let (client, _) = api().await;
    let mut a = Candidate::new(client.clone(), &settings("operator-a"));
    let mut b = Candidate::new(client.clone(), &settings("operator-b"));

    // a creates the lease, and leads from the round that finds it still there.
    assert!(!a.round().await.unwrap());
    assert!(!b.round().await.unwrap());
    assert!(a.round().await.unwrap());
    assert!(!b.round().await.unwrap());
    // Still within the TTL of a's last renewal.
    silence(&client, 14).await;
    assert!(!b.round().await.unwrap());
    assert!(a.round().await.unwrap());

    // a stops renewing: b takes over after the TTL, a no longer leads, and b leads from its
    // next round.
    silence(&client, 16).await;
    assert!(!b.round().await.unwrap());
    assert!(!a.round().await.unwrap());
    assert!(b.round().await.unwrap());
    assert!(!a.round().await.unwrap());
    let lease = lease(&client).await.spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(lease.lease_transitions, Some(1));
    assert_eq!(lease.lease_duration_seconds, Some(15));
}

/// What the crate alone does when two candidates race for an expired lease: its takeover is a
/// merge patch without a `resourceVersion` precondition, so both are told they acquired it.
/// (If this ever fails, the crate arbitrates races itself and the confirming round in
/// `leader` could go.)
#[tokio::test]
async fn the_crate_alone_lets_two_racing_candidates_acquire() {
    let (client, stale) = api().await;
    let lock = |holder: &str| {
        LeaseLock::new(
            client.clone(),
            NS,
            LeaseLockParams {
                holder_id: holder.into(),
                lease_name: LEASE.into(),
                lease_ttl: Duration::from_secs(15),
            },
        )
    };
    let (old, a, b) = (lock("operator-old"), lock("operator-a"), lock("operator-b"));
    old.try_acquire_or_renew().await.unwrap();
    silence(&client, 16).await;
    let expired = serde_json::to_value(lease(&client).await).unwrap();

    assert!(matches!(
        a.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::Acquired(_)
    ));
    // b read the lease before a's takeover landed.
    *stale.lock().unwrap() = Some(expired);
    assert!(matches!(
        b.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::Acquired(_)
    ));
    assert_eq!(holder(&lease(&client).await), Some("operator-b"));
}

/// The same race through `leader`: neither leads on the round that took the lease, and at the
/// next round only the candidate the lease names does.
#[tokio::test]
async fn racing_takeovers_lead_one_at_a_time() {
    let (client, stale) = api().await;
    let mut old = Candidate::new(client.clone(), &settings("operator-old"));
    let mut a = Candidate::new(client.clone(), &settings("operator-a"));
    let mut b = Candidate::new(client.clone(), &settings("operator-b"));
    old.round().await.unwrap();
    silence(&client, 16).await;
    let expired = serde_json::to_value(lease(&client).await).unwrap();

    assert!(!a.round().await.unwrap());
    *stale.lock().unwrap() = Some(expired);
    assert!(!b.round().await.unwrap());
    assert_eq!(holder(&lease(&client).await), Some("operator-b"));

    assert!(!a.round().await.unwrap());
    assert!(b.round().await.unwrap());
    assert!(!a.round().await.unwrap());
    assert!(b.round().await.unwrap());
}

/// A leader whose renewal lands after another's takeover: the crate says `Acquired` (its
/// patch only wrote `renewTime`), the lease names the other, and `leader` steps down.
#[tokio::test]
async fn a_renewal_after_a_takeover_does_not_lead() {
    let (client, stale) = api().await;
    let mut a = Candidate::new(client.clone(), &settings("operator-a"));
    let mut b = Candidate::new(client.clone(), &settings("operator-b"));
    a.round().await.unwrap();
    assert!(a.round().await.unwrap());
    let held_by_a = serde_json::to_value(lease(&client).await).unwrap();
    silence(&client, 16).await;
    assert!(!b.round().await.unwrap());

    // a read the lease before b's takeover landed, and renews it.
    *stale.lock().unwrap() = Some(held_by_a);
    assert!(!a.round().await.unwrap());
    assert_eq!(holder(&lease(&client).await), Some("operator-b"));
    assert!(b.round().await.unwrap());
    assert!(!a.round().await.unwrap());
}

/// `hold` publishes leadership from the confirming round, and steps down at the first round
/// that fails.
#[tokio::test]
async fn hold_publishes_leadership_and_steps_down_when_a_round_fails() {
    let failing = Arc::new(AtomicBool::new(false));
    let fail = failing.clone();
    let client = ClientBuilder::new()
        .with_interceptor_funcs(interceptor::Funcs::new().get(move |_| {
            if fail.load(Ordering::SeqCst) {
                Err(kube_fake_client::Error::Internal(
                    "API server unreachable".into(),
                ))
            } else {
                Ok(None)
            }
        }))
        .build()
        .await
        .unwrap();
    let settings = LeaseSettings {
        ttl: Duration::from_secs(3),
        ..settings("operator-a")
    };
    let (tx, mut leading) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(hold(client, settings, tx));
    let within = Duration::from_secs(5);
    tokio::time::timeout(within, leading.wait_for(|l| *l))
        .await
        .expect("leads within two rounds")
        .unwrap();
    failing.store(true, Ordering::SeqCst);
    tokio::time::timeout(within, leading.wait_for(|l| !*l))
        .await
        .expect("steps down at the next round")
        .unwrap();
    task.abort();
}
