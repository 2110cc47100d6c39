//! The gateway against a real nats-server and real `asya-host run` processes (real components):
//! human in the loop across gateway and host restarts, tenant isolation for every verb, and a
//! precise error for every kind of bad input. MCP is tested with the official SDK and the MCP
//! Inspector (tests/gateway/, Python).

mod common;

use common::nats::{free_port, HostProcess, NatsServer};
use common::net::http_request;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const KEY_A: &str = "key-of-team-a";
const KEY_B: &str = "key-of-team-b";

fn digest(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// The gateway's configuration: two tenants, their tools, a small body limit.
fn write_config(dir: &Path) -> PathBuf {
    let config = format!(
        r#"tenants:
- namespace: team-a
  apiKeys: [{{name: a, sha256: {}}}]
- namespace: team-b
  apiKeys: [{{name: b, sha256: {}}}]
limits: {{maxBodyBytes: 4096, ratePerSecond: 1000, burst: 1000}}
tools:
- name: review
  namespace: team-a
  description: Drafts, waits for a human, publishes.
  route: [draft, x-pause, publish]
- name: quick
  namespace: team-a
  route: [draft, publish]
- name: typed
  namespace: team-a
  route: [draft]
  inputSchema: {{type: object, properties: {{text: {{type: string}}}}, required: [text]}}
- name: expiring
  namespace: team-a
  route: [draft, x-pause, publish]
  timeout: 2s
- name: solo
  namespace: team-b
  route: [draft]
"#,
        digest(KEY_A),
        digest(KEY_B)
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

struct Gateway {
    child: Child,
    port: u16,
}

impl Gateway {
    fn start(nats: &str, config: &Path) -> Gateway {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_asya-gateway"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--nats",
                nats,
            ])
            .arg("--config")
            .arg(config)
            .env("ASYA_LOG", "warn")
            .spawn()
            .expect("starting asya-gateway serve");
        let gateway = Gateway { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while gateway.call("GET", "/healthz", None, None).0 != 200 {
            assert!(Instant::now() < deadline, "the gateway did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
    }

    /// (status, JSON body or the raw text as a JSON string).
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let body = body.map(|b| b.to_string());
        self.raw(method, path, &headers, body.as_deref().map(str::as_bytes))
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let Some((code, text)) = http_request(self.port, method, path, headers, body) else {
            return (0, Value::Null);
        };
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, value)
    }

    /// Creates a task on `tool` as `key`; its id.
    fn create(&self, key: &str, tool: &str, payload: Value) -> String {
        let (code, body) = self.call(
            "POST",
            "/v1/tasks",
            Some(key),
            Some(json!({"tool": tool, "payload": payload})),
        );
        assert_eq!(code, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the task is in `phase`; its status.
    fn wait_for(&self, key: &str, id: &str, phase: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self.call("GET", &format!("/v1/tasks/{id}"), Some(key), None);
            assert_eq!(code, 200, "{body}");
            if body["phase"] == phase {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never reached {phase}: {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(server: &NatsServer) -> HostProcess {
    let component = common::component("behaviours.behave", "payload");
    HostProcess::start(
        &server.url(),
        &common::repo_root().join("tests/fixtures/gateway"),
        &[
            ("draft", component.as_path()),
            ("publish", component.as_path()),
        ],
        &[],
    )
}

/// The `field` of every object in the array `list`.
fn fields(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item[field].as_str().expect("a string field").to_owned())
        .collect()
}

/// The `event:` names of an SSE body, in order.
fn sse_kinds(body: &Value) -> Vec<String> {
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_paused_task_survives_gateway_and_host_restarts_and_resumes_to_the_end() {
    let server = NatsServer::start();
    let dir = tempdir();
    let config = write_config(&dir);
    let host = start_host(&server);
    let gateway = Gateway::start(&server.url(), &config);

    let id = gateway.create(
        KEY_A,
        "review",
        json!({"text": "draft", "pause_prompt": "Publish this?"}),
    );
    let paused = gateway.wait_for(KEY_A, &id, "paused");
    assert_eq!(paused["pause"]["prompt"], "Publish this?");
    assert_eq!(paused["actor"], "x-pause");
    assert_eq!(
        (paused["hops"].as_u64(), paused["total_hops"].as_u64()),
        (Some(1), Some(2))
    );

    // Both processes go away (SIGKILL) and come back: the pause is kept by the server.
    host.kill9();
    gateway.stop();
    let host = start_host(&server);
    let gateway = Gateway::start(&server.url(), &config);
    let still = gateway.wait_for(KEY_A, &id, "paused");
    assert_eq!(still["pause"]["prompt"], "Publish this?");
    let (code, listed) = gateway.call("GET", "/v1/tasks?phase=paused", Some(KEY_A), None);
    assert_eq!(code, 200);
    assert!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "{listed}"
    );

    let (code, resumed) = gateway.call(
        "POST",
        &format!("/v1/tasks/{id}/resume"),
        Some(KEY_A),
        Some(json!({"input": {"approved": true}})),
    );
    assert_eq!(code, 200, "{resumed}");
    let done = gateway.wait_for(KEY_A, &id, "succeeded");
    let result = &done["result"];
    assert_eq!(result["approved"], true, "{done}");
    assert_eq!(result["seen_by"], 2, "draft and publish both ran: {done}");
    assert!(
        result.get("pause_prompt").is_none(),
        "the prompt is dropped on resume: {done}"
    );

    // A late subscriber gets the whole history, and the stream ends with the task.
    let (code, events) = gateway.call("GET", &format!("/v1/tasks/{id}/events"), Some(KEY_A), None);
    assert_eq!(code, 200);
    assert_eq!(
        sse_kinds(&events),
        ["created", "hop", "paused", "resumed", "succeeded"],
        "{events}"
    );
    // Resuming again, or an unknown task, is refused precisely.
    let (code, body) = gateway.call(
        "POST",
        &format!("/v1/tasks/{id}/resume"),
        Some(KEY_A),
        Some(json!({"input": {}})),
    );
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("not_paused")),
        "{body}"
    );
    let (code, body) = gateway.call(
        "POST",
        "/v1/tasks/00000000-0000-4000-8000-000000000000/resume",
        Some(KEY_A),
        Some(json!({"input": {}})),
    );
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    drop(host);
}

#[test]
fn tenants_see_and_touch_only_their_own_and_bad_keys_get_401() {
    let server = NatsServer::start();
    let dir = tempdir();
    let config = write_config(&dir);
    let _host = start_host(&server);
    let gateway = Gateway::start(&server.url(), &config);

    let a_task = gateway.create(KEY_A, "review", json!({"text": "a"}));
    gateway.wait_for(KEY_A, &a_task, "paused");
    let b_task = gateway.create(KEY_B, "solo", json!({"text": "b"}));
    gateway.wait_for(KEY_B, &b_task, "succeeded");

    // Read, events, resume, cancel: another tenant's task does not exist for B.
    for (method, path, body) in [
        ("GET", format!("/v1/tasks/{a_task}"), None),
        ("GET", format!("/v1/tasks/{a_task}/events"), None),
        (
            "POST",
            format!("/v1/tasks/{a_task}/resume"),
            Some(json!({"input": {}})),
        ),
        ("POST", format!("/v1/tasks/{a_task}/cancel"), None),
    ] {
        let (code, reply) = gateway.call(method, &path, Some(KEY_B), body);
        assert_eq!(
            (code, reply["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}: {reply}"
        );
    }
    // List: each sees its own.
    let (_, listed) = gateway.call("GET", "/v1/tasks", Some(KEY_B), None);
    let ids = fields(&listed["tasks"], "id");
    assert_eq!(ids, [b_task.as_str()]);
    let (_, listed) = gateway.call("GET", "/v1/tasks", Some(KEY_A), None);
    let ids = fields(&listed["tasks"], "id");
    assert_eq!(ids, [a_task.as_str()]);
    // Tools and calls: B neither sees nor calls A's tools.
    let (_, tools) = gateway.call("GET", "/v1/tools", Some(KEY_B), None);
    let names = fields(&tools["tools"], "name");
    assert_eq!(names, ["solo"]);
    let (code, reply) = gateway.call(
        "POST",
        "/v1/tasks",
        Some(KEY_B),
        Some(json!({"tool": "review", "payload": {}})),
    );
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (404, Some("unknown_tool")),
        "{reply}"
    );
    // A's task is untouched by all of it.
    assert_eq!(
        gateway.wait_for(KEY_A, &a_task, "paused")["phase"],
        "paused"
    );

    // Bad or missing keys: 401 on every endpoint, MCP included; health stays open.
    for (method, path) in [
        ("GET", "/v1/tools".to_owned()),
        ("GET", "/v1/tasks".to_owned()),
        ("POST", "/v1/tasks".to_owned()),
        ("GET", format!("/v1/tasks/{a_task}")),
        ("GET", format!("/v1/tasks/{a_task}/events")),
        ("POST", format!("/v1/tasks/{a_task}/resume")),
        ("POST", format!("/v1/tasks/{a_task}/cancel")),
        ("POST", "/mcp".to_owned()),
    ] {
        for key in [None, Some("wrong-key")] {
            let (code, reply) = gateway.call(method, &path, key, Some(json!({})));
            assert_eq!(code, 401, "{method} {path} with {key:?}: {reply}");
            assert_eq!(reply["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(gateway.call("GET", "/healthz", None, None).0, 200);
}

#[test]
fn bad_input_gets_a_precise_status_and_loses_nothing() {
    let server = NatsServer::start();
    let dir = tempdir();
    let config = write_config(&dir);
    let _host = start_host(&server);
    let gateway = Gateway::start(&server.url(), &config);
    let auth = format!("Bearer {KEY_A}");
    let headers = [("Authorization", auth.as_str())];

    // Another tenant's task in flight the whole time.
    let b_task = gateway.create(KEY_B, "solo", json!({"do": "sleep", "seconds": 1}));

    let oversize = json!({"tool": "quick", "payload": {"text": "x".repeat(8192)}}).to_string();
    let cases: Vec<(&[u8], u16, &str, &str)> = vec![
        (oversize.as_bytes(), 413, "payload_too_large", "4096"),
        (b"{not json", 400, "bad_request", "not valid"),
        (br#"{"tool": "quick"}"#, 400, "bad_request", "payload"),
        (
            br#"{"tool": "quick", "payload": [1]}"#,
            400,
            "bad_request",
            "payload",
        ),
        (
            br#"{"tool": "quick", "route": ["draft"], "payload": {}}"#,
            400,
            "bad_request",
            "exactly one",
        ),
        (br#"{"payload": {}}"#, 400, "bad_request", "exactly one"),
        (
            br#"{"tool": "nope", "payload": {}}"#,
            404,
            "unknown_tool",
            "nope",
        ),
        (
            br#"{"route": ["Bad_Name"], "payload": {}}"#,
            400,
            "bad_request",
            "Bad_Name",
        ),
        (
            br#"{"route": ["draft"], "payload": {}, "timeout": "soon"}"#,
            400,
            "bad_request",
            "timeout",
        ),
        (
            br#"{"tool": "quick", "payload": {}, "extra": 1}"#,
            400,
            "bad_request",
            "extra",
        ),
    ];
    for (body, status, code, mentions) in cases {
        let (got, reply) = gateway.raw("POST", "/v1/tasks", &headers, Some(body));
        let text = String::from_utf8_lossy(body);
        assert_eq!(got, status, "{text}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{text}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mentions),
            "{text}: {message:?} should mention {mentions:?}"
        );
    }
    let (code, reply) = gateway.call("GET", "/v1/tasks?phase=bogus", Some(KEY_A), None);
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{reply}"
    );
    let (code, _) = gateway.call("GET", "/v1/tasks/not-a-task", Some(KEY_A), None);
    assert_eq!(code, 404);

    // A pause whose deadline passes: resume is refused and the task ends DeadlineExpired.
    let expiring = gateway.create(KEY_A, "expiring", json!({"text": "late"}));
    gateway.wait_for(KEY_A, &expiring, "paused");
    std::thread::sleep(Duration::from_millis(2200));
    let (code, reply) = gateway.call(
        "POST",
        &format!("/v1/tasks/{expiring}/resume"),
        Some(KEY_A),
        Some(json!({"input": {"approved": true}})),
    );
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (409, Some("deadline_expired")),
        "{reply}"
    );
    let failed = gateway.wait_for(KEY_A, &expiring, "failed");
    assert_eq!(failed["reason"], "DeadlineExpired", "{failed}");
    let (code, reply) = gateway.call(
        "POST",
        &format!("/v1/tasks/{expiring}/resume"),
        Some(KEY_A),
        Some(json!({"input": 5})),
    );
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{reply}"
    );

    // Cancel: once, then 409.
    let paused = gateway.create(KEY_A, "review", json!({}));
    gateway.wait_for(KEY_A, &paused, "paused");
    let (code, reply) = gateway.call(
        "POST",
        &format!("/v1/tasks/{paused}/cancel"),
        Some(KEY_A),
        None,
    );
    assert_eq!(
        (code, reply["phase"].as_str()),
        (200, Some("canceled")),
        "{reply}"
    );
    let (code, reply) = gateway.call(
        "POST",
        &format!("/v1/tasks/{paused}/cancel"),
        Some(KEY_A),
        None,
    );
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{reply}"
    );
    let (code, reply) = gateway.call(
        "POST",
        &format!("/v1/tasks/{paused}/resume"),
        Some(KEY_A),
        Some(json!({})),
    );
    assert_eq!(
        (code, reply["error"]["code"].as_str()),
        (409, Some("not_paused")),
        "{reply}"
    );

    // None of it touched the other tenant's task, and the gateway still serves.
    let done = gateway.wait_for(KEY_B, &b_task, "succeeded");
    assert_eq!(done["result"]["do"], "sleep", "{done}");
    let quick = gateway.create(KEY_A, "quick", json!({"text": "after"}));
    assert_eq!(
        gateway.wait_for(KEY_A, &quick, "succeeded")["result"]["seen_by"],
        2
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("asya-gateway-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
