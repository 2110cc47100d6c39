//! Opt-in: against a real cluster when `KUBECONFIG` is set (returns early, saying so,
//! otherwise). Applies the CRDs, a Flavor and an AsyncActor, runs `reconcile()` with an
//! in-memory JetStream (no NATS needed in the cluster), and checks the Deployment, owner
//! references, status and that deleting the actor removes the consumer and the objects.
//!
//! ```text
//! KUBECONFIG=~/.kube/config cargo test --release -p asya-operator --test real_cluster -- --nocapture
//! ```
//! The namespace `asya-operator-test` is created and deleted. KEDA is optional (without it,
//! `ScalingReady` is False with reason KedaNotInstalled).

use asya_operator::controller::{self, conditions, Context};
use asya_operator::crd::{self, AsyncActor, Flavor};
use asya_operator::jetstream::MemoryJetStream;
use asya_operator::metrics::Metrics;
use asya_operator::render::Settings;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "asya-operator-test";

#[tokio::test]
async fn reconciles_on_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("KUBECONFIG is not set: skipping the real-cluster test (see the README)");
        return;
    }
    asya_operator::install_tls_provider();
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let ssa = PatchParams::apply("asya-operator-test").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crd::crds() {
        let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
        crds.patch(&name, &ssa, &Patch::Apply(&crd)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // CRDs become established
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NS,
            &ssa,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
            ),
        )
        .await
        .unwrap();
    let flavors: Api<Flavor> = Api::all(client.clone());
    flavors
        .patch(
            "cpu-fast-test",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "asya.sh/v1alpha1", "kind": "Flavor",
                "metadata": {"name": "cpu-fast-test"},
                "spec": {"scaling": {"minReplicaCount": 1, "maxReplicaCount": 3, "queueLength": 5}}
            })),
        )
        .await
        .unwrap();
    let actors: Api<AsyncActor> = Api::namespaced(client.clone(), NS);
    actors
        .patch(
            "echo",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
                "metadata": {"name": "echo", "namespace": NS},
                "spec": {"handler": "echo.handle", "component": "oci://localhost:5000/echo:v1",
                         "flavors": ["cpu-fast-test"]}
            })),
        )
        .await
        .unwrap();
    // A bad actor is rejected by the CRD's validation.
    let bad = actors
        .patch(
            "Bad_Name",
            &ssa,
            &Patch::Apply(
                json!({"apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
                "metadata": {"name": "Bad_Name", "namespace": NS}, "spec": {"runtime": "java"}}),
            ),
        )
        .await;
    assert!(bad.is_err(), "the API server accepted a bad actor");

    let jetstream = Arc::new(MemoryJetStream::new());
    let ctx = Arc::new(Context::new(
        client.clone(),
        jetstream.clone(),
        Settings::default(),
        Arc::new(Metrics::new()),
        None,
    ));
    for _ in 0..2 {
        let actor = actors.get("echo").await.unwrap();
        controller::reconcile(Arc::new(actor), ctx.clone())
            .await
            .unwrap();
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deployment = deployments.get("echo").await.expect("the Deployment");
    assert_eq!(
        deployment.metadata.owner_references.clone().unwrap()[0].kind,
        "AsyncActor"
    );
    let status = actors.get("echo").await.unwrap().status.unwrap();
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::SPEC_VALID)
        .unwrap();
    assert_eq!(valid.status, "True");

    actors
        .delete("echo", &DeleteParams::default())
        .await
        .unwrap();
    let actor = actors.get("echo").await.unwrap();
    assert!(actor.metadata.deletion_timestamp.is_some());
    controller::reconcile(Arc::new(actor), ctx.clone())
        .await
        .unwrap();
    assert_eq!(jetstream.deleted().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while actors.get_opt("echo").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the actor was not deleted");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = flavors
        .delete("cpu-fast-test", &DeleteParams::default())
        .await;
    let _ = namespaces.delete(NS, &DeleteParams::default()).await;
    eprintln!("real cluster: ok ({})", deployment.name_any());
}
