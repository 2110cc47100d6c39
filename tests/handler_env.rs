//! A wasm handler's configuration arrives as Asya users write it (issue 15): `spec.env` and the
//! keys of `spec.secretRefs` are in the handler's `os.environ`, next to `spec.sandbox.env`, and
//! nothing else of the host's environment is. The real `asya-host run` reads the Secret from a
//! mounted directory (as the operator mounts it), and its log never shows the value.

mod common;

use asya_host::message::envelope::{Envelope, Phase, Route};
use asya_host::transport::nats::{self, NatsSettings, NatsTransport};
use asya_host::transport::{Outbound, Transport};
use common::nats::{HostProcess, NatsServer};
use serde_json::json;
use std::time::Duration;

const SECRET: &str = "hf_s3cr3t-value-9731";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_env_and_secret_keys_reach_the_handler() {
    let probe = common::component("probe.probe", "payload");
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("actors");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&manifests).unwrap();
    // A Secret as Kubernetes projects it: one file per key, bookkeeping in `..data`.
    std::fs::create_dir_all(secrets.join("hf-token/..2026_12_02_00_00_00.1")).unwrap();
    std::fs::write(secrets.join("hf-token/HF_TOKEN"), SECRET).unwrap();
    std::fs::write(
        manifests.join("probe.yaml"),
        format!(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: probe}}\n\
             spec:\n  handler: probe.probe\n  component: {}\n  env: {{MODEL_NAME: tiny}}\n\
             \x20 secretRefs: [hf-token]\n  sandbox: {{env: {{GRANTED: 'yes'}}}}\n",
            probe.display()
        ),
    )
    .unwrap();
    // The host's own environment holds something the handler must not see.
    let server = NatsServer::start();
    let log = dir.path().join("host.log");
    let host = HostProcess::start_logging(
        &server.url(),
        &manifests,
        &[],
        &["--secrets-dir", secrets.to_str().unwrap()],
        Some(&log),
    );
    let client = nats::connect(&server.url()).await.unwrap();
    let transport = NatsTransport::new(client, "default", NatsSettings::default())
        .await
        .unwrap();
    let results = transport.results().await.unwrap();
    let env = Envelope::new(
        Route::through(&["probe"]).unwrap(),
        json!({}),
        "2026-12-02T00:00:00Z",
    );
    transport
        .publish(
            "probe",
            Outbound {
                bytes: env.to_bytes(),
                dedup_id: format!("{}:client", env.id),
            },
        )
        .await
        .unwrap();
    let done = results
        .wait(&env.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        done.status.as_ref().map(|s| s.phase),
        Some(Phase::Succeeded),
        "{done:?}"
    );
    assert_eq!(
        done.payload["env"],
        json!({"MODEL_NAME": "tiny", "GRANTED": "yes", "HF_TOKEN": SECRET}),
        "exactly spec.env, sandbox.env and the Secret's keys"
    );
    drop(host);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("actor loaded"), "the log was captured: {log}");
    assert!(
        !log.contains(SECRET),
        "the secret's value is in the host's log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_is_not_mounted_is_named() {
    let probe = common::component("probe.probe", "payload");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("probe.yaml"),
        format!(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {{name: probe}}\n\
             spec:\n  handler: probe.probe\n  component: {}\n  secretRefs: [missing]\n",
            probe.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asya-host"))
        .args(["dev", "--manifests"])
        .arg(dir.path())
        .arg("--component")
        .arg(format!("probe={}", probe.display()))
        .args(["--route", "probe", "--payload", "{}", "--secrets-dir"])
        .arg(dir.path().join("secrets"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("secret 'missing' (spec.secretRefs) is not mounted"),
        "{stderr}"
    );
}
