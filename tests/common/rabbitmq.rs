//! A real, private RabbitMQ node (Debian's `rabbitmq-server`) on free loopback ports, with all
//! its state in a temporary directory, for the RabbitMQ transport's tests: it can be stopped,
//! killed and restarted on the same ports and data, so durable and quorum queues survive.
//!
//! Each node gets its own `epmd` on a free port (`ERL_EPMD_PORT`), started here in the
//! foreground before the node, so the node never spawns the usual `epmd -daemon` (which would
//! detach into its own session and outlive the test) and never touches a system epmd on 4369.
//! Boot (to AMQP ready) takes about 4-6 s on an idle 2-core machine and 7-9 s while cargo builds
//! beside it; a restart about the same. A graceful stop takes 1-3 s (about 6 s with the
//! management plugin). A node uses about 130 MB of memory.
#![allow(dead_code)]

use super::net::free_port;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to boot (the first boot of a fresh node, on a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

extern "C" {
    #[link_name = "kill"]
    fn sys_kill(pid: i32, signal: i32) -> i32;
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// The `rabbitmq-server` start script: `$RABBITMQ_SERVER_BIN`, else Debian's
/// `/usr/lib/rabbitmq/bin/rabbitmq-server`. (Not `/usr/sbin/rabbitmq-server`: that wrapper
/// `su`s to the `rabbitmq` user when run as root and would ignore our environment.)
fn rabbitmq_server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("RABBITMQ_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let bin = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    assert!(
        bin.is_file(),
        "rabbitmq-server is missing: run scripts/setup.sh (apt-get install rabbitmq-server)"
    );
    bin
}

/// A RabbitMQ node of its own: AMQP on `127.0.0.1:<port>`, user `guest`/`guest`, vhost `/`.
///
/// Everything it writes (database, logs, Erlang cookie) is under a temporary directory that
/// lives as long as this value; dropping it kills the node and its epmd.
pub struct RabbitServer {
    node: Option<Child>,
    epmd: Option<Child>,
    /// The AMQP port.
    pub port: u16,
    /// The Erlang distribution port (the CLI tools talk to the node through it).
    pub dist_port: u16,
    /// The port of this node's own epmd.
    pub epmd_port: u16,
    /// The management plugin's HTTP port, when started with it.
    pub management_port: Option<u16>,
    /// The Erlang node name, `asya-test-<port>@localhost`.
    pub nodename: String,
    dir: tempfile::TempDir,
}

impl RabbitServer {
    /// Starts a node without the management plugin, and waits until it is ready.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a node, with the management plugin (HTTP API on [`RabbitServer::management_url`],
    /// user `guest`/`guest`) when `management` is true, and waits until it is ready. The plugin
    /// adds little to the boot time (well under a second) and about 30 MB of memory.
    pub fn start_with(management: bool) -> Self {
        let binary = rabbitmq_server_binary();
        let mut ports = Vec::new();
        while ports.len() < 4 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut server = RabbitServer {
            node: None,
            epmd: None,
            port: ports[0],
            dist_port: ports[1],
            epmd_port: ports[2],
            management_port: management.then_some(ports[3]),
            nodename: format!("asya-test-{}@localhost", ports[0]),
            dir,
        };
        server.write_config();
        server.spawn_epmd();
        server.spawn(&binary);
        server
    }

    /// The temporary directory holding the node's config, database (`mnesia/`) and logs (`log/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's log file (useful to print when a test fails).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("log/rabbit.log")
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `http://127.0.0.1:<management port>` (the API is under `/api/`, basic auth guest/guest).
    ///
    /// Panics when the node was started without the management plugin.
    pub fn management_url(&self) -> String {
        let port = self
            .management_port
            .expect("RabbitServer was started without the management plugin");
        format!("http://127.0.0.1:{port}")
    }

    fn write_config(&self) {
        let dir = self.dir.path();
        for sub in ["home", "log", "mnesia", "conf.d"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Resource alarms block every publisher: never let a test machine's small disk or
        // memory trip them (the defaults are 50 MB free disk and 40% of RAM).
        let mut config = String::from(
            "disk_free_limit.absolute = 1MB\n\
             vm_memory_high_watermark.absolute = 4GB\n",
        );
        let plugins = match self.management_port {
            Some(port) => {
                config.push_str(&format!(
                    "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"
                ));
                "[rabbitmq_management].\n"
            }
            None => "[].\n",
        };
        std::fs::write(dir.join("rabbitmq.conf"), config).unwrap();
        std::fs::write(dir.join("enabled_plugins"), plugins).unwrap();
        // Read instead of the system's /etc/rabbitmq/rabbitmq-env.conf.
        std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();
    }

    /// The environment of the node and of the CLI tools that talk to it.
    fn env(&self) -> Vec<(&'static str, String)> {
        let dir = self.dir.path().display().to_string();
        vec![
            ("HOME", format!("{dir}/home")),
            ("RABBITMQ_NODENAME", self.nodename.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            // Without it, the distribution port is NODE_PORT + 20000: past 65535 for most
            // ephemeral ports.
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("ERL_EPMD_PORT", self.epmd_port.to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                // The distribution listener on loopback only (it binds 0.0.0.0 by default).
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
            ("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia")),
            ("RABBITMQ_LOG_BASE", format!("{dir}/log")),
            ("RABBITMQ_LOGS", format!("{dir}/log/rabbit.log")),
            ("RABBITMQ_CONFIG_FILE", format!("{dir}/rabbitmq.conf")),
            ("RABBITMQ_CONFIG_FILES", format!("{dir}/conf.d")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                format!("{dir}/advanced.config"),
            ),
            ("RABBITMQ_CONF_ENV_FILE", format!("{dir}/rabbitmq-env.conf")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{dir}/enabled_plugins"),
            ),
        ]
    }

    fn spawn_epmd(&mut self) {
        let epmd = Command::new("epmd")
            .args([
                "-port",
                &self.epmd_port.to_string(),
                "-address",
                "127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting epmd (Erlang, installed with rabbitmq-server)");
        self.epmd = Some(epmd);
        // The node must find it listening, or it starts an `epmd -daemon` of its own.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.epmd_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "epmd did not listen on {}",
                self.epmd_port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self, binary: &Path) {
        let log = self.dir.path().join("log/rabbit.log");
        // Readiness is judged on what the log gains from now on (it is appended to on restart).
        let log_offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let console = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log/console.log"))
            .unwrap();
        let mut command = Command::new(binary);
        command
            .current_dir(self.dir.path())
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            // Its own process group: the start script, beam.smp and their helpers are killed
            // together.
            .process_group(0);
        let child = command.spawn().expect("starting rabbitmq-server");
        self.node = Some(child);
        self.wait_ready(&log, log_offset);
    }

    /// Waits until the AMQP port answers the protocol header with `connection.start` and the
    /// log says `Server startup complete`. (RabbitMQ 3.10 opens the AMQP listener as the last
    /// boot step, after the plugins; the log line follows it within ~100 ms.)
    fn wait_ready(&mut self, log: &Path, log_offset: u64) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.node.as_mut().unwrap().try_wait().unwrap() {
                self.node = None;
                panic!(
                    "rabbitmq-server exited during boot ({status}); log:\n{}",
                    self.log_tail()
                );
            }
            if amqp_answers(self.port) && log_contains(log, log_offset, "Server startup complete") {
                break;
            }
            if started.elapsed() > BOOT_TIMEOUT {
                panic!(
                    "rabbitmq-server did not become ready in {BOOT_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(port) = self.management_port {
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "management API did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The last lines of the node's log and console output.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        for name in ["log/console.log", "log/rabbit.log"] {
            let all = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = all.lines().collect();
            text.push_str(&format!("--- {name}\n"));
            for line in &lines[lines.len().saturating_sub(40)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Runs a RabbitMQ CLI tool (`rabbitmqctl`, `rabbitmq-diagnostics`, `rabbitmq-queues`, ...)
    /// against this node, e.g. `cli("rabbitmqctl", &["list_queues", "name", "messages"])`.
    /// Each call takes about half a second (an Erlang VM boots). Message counts that
    /// `list_queues` reports come from periodic stats (every 5 s): a quorum queue shows 0 right
    /// after a publish; a passive `queue.declare` over AMQP gives the current count.
    pub fn cli(&self, tool: &str, args: &[&str]) -> Output {
        let bin = rabbitmq_server_binary().with_file_name(tool);
        Command::new(&bin)
            .current_dir(self.dir.path())
            .envs(self.env())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
    }

    /// Stops the node gracefully (SIGTERM: queues and messages are flushed to disk) and waits
    /// for it to exit; kills it after 30 s. The epmd stays up for [`RabbitServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.node.take() {
            // The start script traps SIGTERM, forwards it to beam.smp and waits for it.
            unsafe { sys_kill(child.id() as i32, SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            kill_group(&mut child);
        }
    }

    /// Kills the node at once (SIGKILL to its whole process group), like a crash: no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.node.take() {
            kill_group(&mut child);
        }
    }

    /// Stops the node (if it runs) and starts it again on the same ports, name and data
    /// directory, so durable queues, persistent messages and quorum queues survive. After
    /// [`RabbitServer::kill`], it starts it again the same way.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(&rabbitmq_server_binary());
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.node.take() {
            kill_group(&mut child);
        }
        if let Some(mut epmd) = self.epmd.take() {
            kill_group(&mut epmd);
        }
    }
}

/// SIGKILL to the process group led by `child` (spawned with `process_group(0)`), then reaps it.
/// (beam.smp's helpers `erl_child_setup` and `inet_gethost` put themselves in sessions of their
/// own, but exit as soon as beam.smp does.)
fn kill_group(child: &mut Child) {
    unsafe { sys_kill(-(child.id() as i32), SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether an AMQP 0-9-1 server on `port` answers the protocol header with a method frame
/// (`connection.start`).
fn amqp_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut frame_type = [0u8; 1];
    matches!(stream.read_exact(&mut frame_type), Ok(()) if frame_type[0] == 1)
}

/// Whether `path`, from byte `offset` on, contains `needle`.
fn log_contains(path: &Path, offset: u64, needle: &str) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let tail = bytes.get(offset as usize..).unwrap_or_default();
    String::from_utf8_lossy(tail).contains(needle)
}
