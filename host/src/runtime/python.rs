//! The native-Python executor: handlers that cannot be WASM (torch, CUDA, C extensions) run in
//! `python -m asya.runtime` beside the host and are called over a Unix socket (protocol
//! `asya-runtime/1`, see `sdk-python/src/asya/runtime.py`). Everything around the call —
//! routing, retries, timeouts, metrics — is the same sidecar code as for WASM actors.
//!
//! A call that times out, or a runtime that dies, fails the message with a precise reason; a
//! runtime this host started is then restarted.

use crate::message::envelope::{ErrorInfo, Reason};
use crate::runtime::executor::Executor;
use crate::runtime::executor::{CallOutcome, Failure, Mode};
use crate::runtime::wasm::Descriptor;
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

/// The protocol this host speaks.
pub const PROTOCOL: &str = "asya-runtime/1";
const MAX_FRAME: usize = 256 << 20;

/// How to start the runtime (for `asya dev`; in a cluster the user's container runs it).
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// The Python interpreter (with the asya SDK importable).
    pub python: PathBuf,
    /// `module.func` or `module.Class.method`.
    pub handler: String,
    /// Payload or envelope mode.
    pub mode: Mode,
    /// Directory holding the handler's module.
    pub source_dir: PathBuf,
    /// Extra environment for the handler.
    pub env: Vec<(String, String)>,
}

/// Where the runtime listens and whether this host supervises it.
#[derive(Debug, Clone)]
pub struct PythonRuntimeConfig {
    /// The runtime's Unix socket.
    pub socket: PathBuf,
    /// Start (and restart) the runtime from here, or connect to one started by someone else.
    pub spawn: Option<SpawnSpec>,
    /// How long to wait for the runtime to accept connections.
    pub ready_timeout: Duration,
    /// Messages in flight at once (connections).
    pub max_in_flight: usize,
    /// Largest accepted result.
    pub max_output_bytes: usize,
}

#[derive(Deserialize)]
struct Hello {
    protocol: String,
    handler: String,
    mode: Mode,
    sdk_version: String,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    none: Option<bool>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    message: String,
    #[serde(default)]
    mro_names: Vec<String>,
    #[serde(default)]
    traceback: String,
}

struct Conn {
    stream: UnixStream,
    generation: u64,
}

/// Calls a native-Python runtime over its socket.
pub struct PythonExecutor {
    actor: String,
    config: PythonRuntimeConfig,
    descriptor: Descriptor,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    process: tokio::sync::Mutex<Option<Child>>,
    generation: AtomicU64,
    next_id: AtomicU64,
    /// Times the runtime was (re)started by this host.
    pub restarts: AtomicU64,
}

async fn write_frame(stream: &mut UnixStream, value: &serde_json::Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await
}

async fn read_frame(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

impl PythonExecutor {
    /// Starts the runtime (if configured to), waits until it is ready and reads its hello.
    pub async fn load(actor: &str, config: PythonRuntimeConfig) -> Result<Self> {
        let executor = PythonExecutor {
            actor: actor.to_owned(),
            permits: Semaphore::new(config.max_in_flight.max(1)),
            config,
            descriptor: Descriptor {
                handler: String::new(),
                mode: Mode::Payload,
                sdk_version: String::new(),
            },
            idle: Mutex::default(),
            process: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
        };
        executor.start_process(None).await?;
        let (conn, hello) = executor
            .connect_ready()
            .await
            .with_context(|| format!("actor '{actor}': the python runtime did not become ready"))?;
        let mut executor = executor;
        executor.descriptor = Descriptor {
            handler: hello.handler,
            mode: hello.mode,
            sdk_version: hello.sdk_version,
        };
        executor.idle.lock().expect("pool lock").push(conn);
        Ok(executor)
    }

    /// What the runtime said about its handler.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Starts (or restarts) the runtime this host spawns. With `replacing`, only if the running
    /// runtime is still that generation: of several calls that fail on one crashed runtime, the
    /// first restarts it and the others find it restarted.
    async fn start_process(&self, replacing: Option<u64>) -> Result<()> {
        let Some(spec) = &self.config.spawn else {
            return Ok(());
        };
        let mut guard = self.process.lock().await;
        if replacing.is_some_and(|g| g != self.generation.load(Ordering::SeqCst)) {
            return Ok(());
        }
        if let Some(mut old) = guard.take() {
            let _ = old.kill().await;
        }
        let _ = std::fs::remove_file(&self.config.socket);
        let mut cmd = Command::new(&spec.python);
        cmd.args(["-m", "asya.runtime"])
            .env("ASYA_HANDLER", &spec.handler)
            .env(
                "ASYA_HANDLER_MODE",
                match spec.mode {
                    Mode::Payload => "payload",
                    Mode::Envelope => "envelope",
                },
            )
            .env("ASYA_RUNTIME_SOCKET", &self.config.socket)
            .env("ASYA_SOURCE_DIR", &spec.source_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.source_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} -m asya.runtime", spec.python.display()))?;
        for (stream, out) in [
            (
                "stdout",
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
        ] {
            if let Some(out) = out {
                let actor = self.actor.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::info!(target: "asya::handler", actor = %actor, stream, "{line}");
                    }
                });
            }
        }
        *guard = Some(child);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn connect(&self) -> Result<(Conn, Hello)> {
        let mut stream = UnixStream::connect(&self.config.socket)
            .await
            .with_context(|| format!("connecting to {}", self.config.socket.display()))?;
        let hello: Hello = serde_json::from_slice(&read_frame(&mut stream).await?)
            .context("the runtime's hello is not valid")?;
        if hello.protocol != PROTOCOL {
            bail!(
                "the runtime speaks {}, this host {PROTOCOL}",
                hello.protocol
            );
        }
        Ok((
            Conn {
                stream,
                generation: self.generation.load(Ordering::SeqCst),
            },
            hello,
        ))
    }

    async fn connect_ready(&self) -> Result<(Conn, Hello)> {
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            match self.connect().await {
                Ok(ok) => return Ok(ok),
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => {
                    if let Some(child) = self.process.lock().await.as_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            bail!("the python runtime exited during start-up ({status}); see its log above");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Restarts the runtime of `generation` after `reason` (once, however many calls failed
    /// on it); returns whether this host restarts runtimes at all.
    async fn recover(&self, reason: &str, generation: u64) -> bool {
        if self.config.spawn.is_none() {
            return false;
        }
        tracing::warn!(actor = %self.actor, reason, "restarting the python runtime");
        if let Err(err) = self.start_process(Some(generation)).await {
            tracing::error!(actor = %self.actor, error = %format!("{err:#}"), "could not restart the python runtime");
        }
        self.idle.lock().expect("pool lock").clear();
        true
    }

    async fn exchange(&self, conn: &mut Conn, input: String) -> Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        write_frame(&mut conn.stream, &json!({"id": id, "input": input})).await?;
        let body = read_frame(&mut conn.stream).await?;
        serde_json::from_slice(&body).context("the runtime's response is not valid")
    }
}

#[async_trait]
impl Executor for PythonExecutor {
    fn mode(&self) -> Mode {
        self.descriptor.mode
    }

    async fn call(&self, input: String, timeout: Duration) -> CallOutcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return CallOutcome::Failed(Failure::host(Reason::Trap, "actor is shutting down"));
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let pooled = {
            let mut idle = self.idle.lock().expect("pool lock");
            idle.retain(|c| c.generation == generation);
            idle.pop()
        };
        // Waiting for the runtime to accept a connection counts against the call's timeout.
        let started = Instant::now();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match tokio::time::timeout(timeout, self.connect_ready()).await {
                Ok(Ok((conn, _))) => conn,
                Ok(Err(err)) => {
                    return CallOutcome::Failed(Failure::host(
                        Reason::Trap,
                        format!("python runtime unavailable: {err:#}"),
                    ))
                }
                Err(_) => {
                    return CallOutcome::Failed(Failure::host(
                        Reason::Timeout,
                        format!(
                            "the python runtime did not accept a connection within {} ms",
                            timeout.as_millis()
                        ),
                    ))
                }
            },
        };
        let left = timeout.saturating_sub(started.elapsed());
        let response = match tokio::time::timeout(left, self.exchange(&mut conn, input)).await {
            Err(_) => {
                let stopped = self.recover("a call timed out", generation).await;
                let what = if stopped {
                    "the python runtime was restarted"
                } else {
                    // The runtime runs in the user's container: its connection is closed, and
                    // the handler's thread there runs on until the handler returns.
                    "its connection to the python runtime was closed"
                };
                return CallOutcome::Failed(Failure::host(
                    Reason::Timeout,
                    format!(
                        "handler did not return within {} ms; {what}",
                        timeout.as_millis()
                    ),
                ));
            }
            Ok(Err(err)) => {
                self.recover("the connection failed", generation).await;
                return CallOutcome::Failed(Failure::host(
                    Reason::Trap,
                    format!("python runtime connection lost (did it crash?): {err:#}"),
                ));
            }
            Ok(Ok(response)) => response,
        };
        self.idle.lock().expect("pool lock").push(conn);
        if let Some(error) = response.error {
            return CallOutcome::Failed(Failure {
                reason: Reason::HandlerError,
                error: ErrorInfo {
                    kind: error.kind,
                    message: error.message,
                    mro: error.mro_names,
                    traceback: Some(error.traceback).filter(|t| !t.is_empty()),
                },
            });
        }
        match (response.ok, response.none) {
            (Some(text), _) if text.len() > self.config.max_output_bytes => {
                CallOutcome::Failed(Failure::host(
                    Reason::OutputTooLarge,
                    format!(
                        "handler result is {} bytes, more than the allowed {}",
                        text.len(),
                        self.config.max_output_bytes
                    ),
                ))
            }
            (Some(text), _) => CallOutcome::Returned(text),
            (None, Some(true)) => CallOutcome::ReturnedNone,
            _ => CallOutcome::Failed(Failure::host(
                Reason::Trap,
                "the python runtime sent a response with neither ok, none nor error",
            )),
        }
    }
}
