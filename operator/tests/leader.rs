//! Lease leader election against the in-memory API: one leader at a time, renewal, takeover
//! after expiry, and optimistic concurrency on the Lease.

use asya_operator::leader::{try_acquire_or_renew, LeaseSettings};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube_fake_client::ClientBuilder;
use std::time::Duration;

fn candidate(holder: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "asya-system".into(),
        name: "asya-operator".into(),
        holder: holder.into(),
        ttl: Duration::from_secs(15),
    }
}

#[tokio::test]
async fn one_leader_renewal_and_takeover() {
    let client = ClientBuilder::new().build().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "asya-system");
    let (a, b) = (candidate("operator-a"), candidate("operator-b"));
    let t0 = Timestamp::now();

    assert!(try_acquire_or_renew(&leases, &a, t0).await.unwrap());
    assert!(!try_acquire_or_renew(&leases, &b, t0).await.unwrap());
    let t1 = t0 + SignedDuration::from_secs(5);
    assert!(try_acquire_or_renew(&leases, &a, t1).await.unwrap());
    // Still within the TTL of a's last renewal.
    let t2 = t1 + SignedDuration::from_secs(14);
    assert!(!try_acquire_or_renew(&leases, &b, t2).await.unwrap());

    // a stops renewing: b takes over after the TTL, and a no longer leads.
    let t3 = t1 + SignedDuration::from_secs(16);
    assert!(try_acquire_or_renew(&leases, &b, t3).await.unwrap());
    assert!(!try_acquire_or_renew(&leases, &a, t3).await.unwrap());
    let lease = leases.get("asya-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(lease.lease_transitions, Some(1));
    assert_eq!(lease.lease_duration_seconds, Some(15));
}

#[tokio::test]
async fn a_stale_lease_write_loses() {
    let client = ClientBuilder::new().build().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client, "asya-system");
    let a = candidate("operator-a");
    assert!(try_acquire_or_renew(&leases, &a, Timestamp::now())
        .await
        .unwrap());
    let stale = leases.get("asya-operator").await.unwrap();
    assert!(try_acquire_or_renew(&leases, &a, Timestamp::now())
        .await
        .unwrap());
    // A write based on the old resourceVersion is refused (409), as a racing candidate's would be.
    let err = leases
        .replace("asya-operator", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
}
