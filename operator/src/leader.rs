//! Leader election on a `coordination.k8s.io/v1` Lease, with the `kube-leader-election`
//! crate's [`LeaseLock`] doing the reads and writes. This module is the seam around it: it
//! paces the rounds, bounds each one, confirms a takeover before acting on it, and publishes
//! whether this replica leads. Only the leader runs the controller.
//!
//! # Rounds
//!
//! With `ttl` = T, [`hold`] runs a round every P = T/3 (rounds start on a fixed tick), and
//! every round must answer within D = P (the Kubernetes client has no read timeout of its own,
//! so an unanswered request would otherwise keep a partitioned leader leading forever). A
//! round is the crate's `try_acquire_or_renew`: GET the Lease; if it names this replica, merge
//! patch `renewTime`; else, if `renewTime + leaseDurationSeconds` is past on this machine's
//! wall clock, merge patch `holderIdentity` to this replica (a takeover); else wait. A missing
//! Lease is created (an exclusive create: of two creators one gets 409).
//!
//! A replica leads after two consecutive rounds in which the lease names it: the round that
//! acquired it and the next, whose GET must still show it as holder (see below why). It steps
//! down, publishing `false`, at the first round that fails, times out, or finds another
//! holder; `main` then stops the controller and exits, to come back as a candidate.
//!
//! # The split-brain window
//!
//! The crate's acquire and renew are merge patches **without** a `resourceVersion`
//! precondition (only the create is exclusive), so the API server does not arbitrate races:
//!
//! * two candidates that both read the expired lease both get `Acquired` (the lease ends up
//!   naming whichever patch landed last);
//! * a holder whose renew patch lands just after another replica's takeover gets `Acquired`
//!   too (it only wrote `renewTime`, the lease names the new holder).
//!
//! Taken as is, the loser of either race would lead alongside the winner until its next round:
//! up to P + D = 2T/3 (10 s with T = 15 s). This module closes both: a round counts only if
//! the lease the crate returns names this replica (the renew race), and a takeover is acted on
//! only when the next round, P later, reads the lease and still finds this replica in it (the
//! acquire race: the loser then finds the winner and never starts its controller). The
//! residual case is a write that reaches the API server after its round's deadline D (a
//! request stuck in a proxy, say) and overwrites a confirmed leader; the overwritten leader
//! learns it at its next round, within P + D of that write.
//!
//! Losing the API server: let the old leader's last successful renewal write `renewTime` =
//! t_r (with the old leader's clock). Its next round starts at most P after the round that
//! wrote it, and fails or times out within D: it publishes `false` by t_r + P + D = t_r + 2T/3.
//! A candidate may take over only once its own clock is past t_r + T (the crate compares
//! `renewTime` with the candidate's wall clock; unlike client-go, it does not time the lease
//! from when it observed a change). It acts on the takeover only at its next round, which
//! starts P after the taking-over round did, and that round read the expired lease at most
//! D = P into it: the new leader publishes `true` no earlier than t_r + T on its own clock.
//! So the two do not overlap as long as the nodes' clocks disagree by less than T/3 (5 s with
//! T = 15 s); a larger skew ε overlaps them by up to ε - T/3. What does overlap is the old
//! leader's drain: on `false`, `main` cancels the controller, which lets reconciles already
//! running finish; their Kubernetes calls cannot land while the API server is unreachable,
//! but their JetStream calls can.
//!
//! A new leader is in place within T + 2P + D = 2T of the old one's last renewal (30 s with
//! T = 15 s): expiry, the candidate's next round that sees it, the confirming round. A replica
//! that exits on SIGTERM does not release the lease.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Which lease, and who is asking.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub holder: String,
    /// How long a lease lasts without renewal (whole seconds; the Lease stores seconds).
    pub ttl: Duration,
}

impl LeaseSettings {
    /// The time between rounds, and the most a round may take: `ttl / 3` (at least 100 ms).
    pub fn period(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }
}

/// A round that did not complete: this replica does not lead after it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crate's read or write of the Lease failed.
    #[error("lease {lease}: {source}")]
    Lease {
        /// The Lease's name.
        lease: String,
        /// What failed.
        #[source]
        source: kube_leader_election::Error,
    },
    /// The API server did not answer within the round's deadline.
    #[error("lease {lease}: no answer within {deadline:?}")]
    Timeout {
        /// The Lease's name.
        lease: String,
        /// The round's deadline.
        deadline: Duration,
    },
}

/// One replica's candidacy: the crate's lock, and whether the previous round found the lease
/// naming this replica.
pub struct Candidate {
    lock: LeaseLock,
    lease: String,
    holder: String,
    deadline: Duration,
    held: bool,
}

impl Candidate {
    /// A candidate for the lease in `settings`.
    pub fn new(client: Client, settings: &LeaseSettings) -> Self {
        let lock = LeaseLock::new(
            client,
            &settings.namespace,
            LeaseLockParams {
                holder_id: settings.holder.clone(),
                lease_name: settings.name.clone(),
                lease_ttl: settings.ttl,
            },
        );
        Candidate {
            lock,
            lease: settings.name.clone(),
            holder: settings.holder.clone(),
            deadline: settings.period(),
            held: false,
        }
    }

    /// One round: creates, renews or takes over the lease. `Ok(true)` while this replica
    /// leads, i.e. the lease named it at the end of this round and of the previous one.
    pub async fn round(&mut self) -> Result<bool, Error> {
        let result = tokio::time::timeout(self.deadline, self.lock.try_acquire_or_renew()).await;
        let held = match result {
            Ok(Ok(LeaseLockResult::Acquired(lease))) => holder(&lease) == Some(&self.holder),
            Ok(Ok(LeaseLockResult::NotAcquired(_))) => false,
            // Another candidate created the lease first.
            Ok(Err(kube_leader_election::Error::CreateLease(kube::Error::Api(status))))
                if status.code == 409 =>
            {
                false
            }
            Ok(Err(source)) => {
                self.held = false;
                return Err(Error::Lease {
                    lease: self.lease.clone(),
                    source,
                });
            }
            Err(_) => {
                self.held = false;
                return Err(Error::Timeout {
                    lease: self.lease.clone(),
                    deadline: self.deadline,
                });
            }
        };
        let leads = held && self.held;
        self.held = held;
        Ok(leads)
    }
}

fn holder(lease: &Lease) -> Option<&String> {
    lease.spec.as_ref()?.holder_identity.as_ref()
}

/// Runs a round every `ttl / 3` and publishes whether this replica leads: `true` from the
/// round that confirms a takeover, `false` from the first round that fails, times out or
/// finds another holder.
pub async fn hold(client: Client, settings: LeaseSettings, leading: watch::Sender<bool>) {
    let mut candidate = Candidate::new(client, &settings);
    let mut tick = tokio::time::interval(settings.period());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let lead = match candidate.round().await {
            Ok(lead) => lead,
            Err(err) => {
                tracing::warn!(error = %err, "lease round failed");
                false
            }
        };
        if *leading.borrow() != lead {
            tracing::info!(holder = %settings.holder, leading = lead, "leadership changed");
        }
        leading.send_replace(lead);
    }
}
