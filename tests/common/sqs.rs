//! A real `moto_server` (moto 5, the AWS mock: SQS, DynamoDB, ...) on a free loopback port, for
//! the SQS transport's tests. It boots in about a second.
//!
//! moto keeps everything in memory: [`MotoServer::restart`] and [`MotoServer::kill`] lose every
//! queue, message and table (unlike [`super::rabbitmq::RabbitServer`], it cannot model a broker
//! that survives a restart; use it for clients that reconnect, or that must recreate queues).
#![allow(dead_code)]

use super::net::{free_port, http_get};
use super::repo_root;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

extern "C" {
    #[link_name = "kill"]
    fn sys_kill(pid: i32, signal: i32) -> i32;
}

/// `$MOTO_SERVER_BIN`, else the project's virtual environment.
fn moto_server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOTO_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let bin = repo_root().join(".venv/bin/moto_server");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup.sh (it installs 'moto[server]' into .venv)",
        bin.display()
    );
    bin
}

/// The environment a host process (or an AWS SDK client in a test) needs to use `endpoint`:
/// the endpoint, dummy credentials, the region, and no EC2 metadata lookups.
/// (`AWS_DEFAULT_REGION` too, for boto3 and the AWS CLI.)
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A moto server on `127.0.0.1:<port>`; dropping it kills the server.
pub struct MotoServer {
    child: Option<Child>,
    /// The HTTP port.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Added to the server's environment (kept for restarts).
    env: Vec<(String, String)>,
}

impl MotoServer {
    /// Starts a server on a free port and waits until it answers HTTP.
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Starts a server with `env` added to its environment (e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`
    /// makes moto check every request's credentials against its IAM users).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let mut server = MotoServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("moto.log"))
            .unwrap();
        let child = Command::new(moto_server_binary())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting moto_server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(self.port, "/moto-api/").map(|(code, _)| code) != Some(200) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "moto_server exited during start ({status}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {}:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server printed (one line per request).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// [`aws_env`] for this server.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        aws_env(&self.endpoint())
    }

    /// Forgets every queue, message and table without restarting (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST /moto-api/reset HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "moto reset failed: {response}"
        );
    }

    /// Stops the server (SIGTERM) and waits for it to exit. Its state is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { sys_kill(child.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            kill_group(&mut child);
        }
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }

    /// Freezes the server (SIGSTOP to its process group): it keeps its state but answers
    /// nothing, as an unreachable SQS would, until [`MotoServer::resume`].
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            unsafe { sys_kill(-(child.id() as i32), 19) };
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            unsafe { sys_kill(-(child.id() as i32), 18) };
        }
    }

    /// Stops the server (if it runs) and starts a fresh one on the same port: the endpoint stays
    /// valid, but every queue, message and table is gone (moto keeps state in memory only).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

/// SIGKILL to the process group led by `child` (spawned with `process_group(0)`), then reaps it.
fn kill_group(child: &mut Child) {
    unsafe { sys_kill(-(child.id() as i32), 9) };
    let _ = child.kill();
    let _ = child.wait();
}
