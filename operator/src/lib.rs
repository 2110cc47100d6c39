//! `asya-operator`: reconciles `AsyncActor` and `Flavor` resources (`asya.sh/v1alpha1`) into
//! Deployments running the asya host, KEDA ScaledObjects scaling them on their queue, and the
//! NATS JetStream stream and consumers they read.
//!
//! Layout (after kube-rs' controller-rs): [`crd`] the resource types and generated CRDs,
//! [`flavor`] the pure flavor merge, [`validate`] checks of the merged spec, [`render`] the pure
//! desired objects, [`jetstream`] the NATS seam, [`controller`] the reconciler, [`leader`] Lease
//! leader election, [`metrics`] metrics and health endpoints, [`offline`] `render` on files, [`pool`] the pure
//! placement of actors in shared host pools and their objects, [`backlog`] the pools' scaling
//! endpoint.

#![warn(missing_docs)]

pub mod backlog;
pub mod controller;
pub mod crd;
pub mod flavor;
pub mod jetstream;
pub mod leader;
pub mod metrics;
pub mod offline;
pub mod pool;
pub mod queues;
pub mod render;
pub mod validate;

/// Installs ring as the process-wide TLS provider (rustls cannot choose one on its own when
/// several are compiled in, and kube-client asks for the process default). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
