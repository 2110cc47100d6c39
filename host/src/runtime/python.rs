//! The native-Python executor: handlers that cannot be WASM (torch, CUDA, C extensions) run in
//! `python -m asya.runtime` beside the host and are called over a Unix socket (protocol
//! `asya-runtime/2`, see `sdk-python/src/asya/runtime.py`). Everything around the call —
//! routing, retries, timeouts, metrics — is the same sidecar code as for WASM actors.
//!
//! One persistent connection carries every call in flight: each request has an id, and the
//! runtime answers in whatever order its handlers finish. A writer task coalesces the requests
//! queued since its last write into one write; a reader task hands each response to its caller.
//!
//! A call that times out is cancelled in the runtime (an `async def` handler's task is cancelled,
//! the other calls go on); a plain function's thread cannot be stopped, so a runtime this host
//! started is restarted instead. A runtime that dies fails its calls in flight with a precise
//! reason, and a runtime this host started is restarted once per crash.

use crate::message::envelope::{ErrorInfo, Reason};
use crate::runtime::executor::Executor;
use crate::runtime::executor::{CallOutcome, Failure, Mode};
use crate::runtime::wasm::Descriptor;
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

/// The protocol this host speaks.
pub const PROTOCOL: &str = "asya-runtime/2";
/// The hello is small; anything larger is not a runtime.
const MAX_HELLO: usize = 64 << 10;
/// Error responses (a traceback) are bounded too: a larger frame breaks the connection.
const MAX_ERROR_FRAME: usize = 16 << 20;
/// Bytes of a call or response frame's header: length (u32), kind (u8), call id (u64), all
/// big-endian. The length counts the kind, the id and the body.
const HEADER: usize = 13;
/// Host → runtime: run the handler on the body (JSON text).
const KIND_CALL: u8 = 0;
/// Host → runtime: the call with this id is abandoned; cancel it if it can be.
const KIND_CANCEL: u8 = 1;
/// Runtime → host: the handler's result, JSON text.
const KIND_OK: u8 = 0;
/// Runtime → host: the handler returned `None`.
const KIND_NONE: u8 = 1;
/// Runtime → host: the handler raised; the body is a JSON error object.
const KIND_ERROR: u8 = 2;
/// The writer task stops coalescing at this many bytes.
const MAX_BATCH: usize = 1 << 20;

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
    /// Calls in flight at once (all on one connection).
    pub max_in_flight: usize,
    /// Largest accepted result: a larger one is discarded as it arrives, never buffered.
    pub max_output_bytes: usize,
}

/// How the runtime runs the handler, which decides what a timeout can stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// An `async def` handler: every call is a task on one event loop, and can be cancelled.
    Async,
    /// A plain function: every call runs on a worker thread, which nothing can stop.
    #[default]
    Threads,
}

#[derive(Deserialize)]
struct Hello {
    protocol: String,
    handler: String,
    mode: Mode,
    sdk_version: String,
    #[serde(default)]
    concurrency: Concurrency,
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

/// One response, as the reader task hands it to its caller.
enum Reply {
    Ok(Vec<u8>),
    None,
    Error(Vec<u8>),
    /// A result of this many bytes, over `max_output_bytes`: read past, never buffered.
    TooLarge(usize),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// One connection to the runtime, shared by every call in flight.
struct Link {
    /// The runtime generation this connection reached.
    generation: u64,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Link {
    fn start(stream: UnixStream, generation: u64, max_output_bytes: usize) -> Link {
        let (read, write) = stream.into_split();
        // Unbounded, yet bounded in effect: at most `max_in_flight` calls (each one frame and
        // at most one cancel) are queued, held back by the executor's permits.
        let (outgoing, frames) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write_loop(write, frames, pending.clone(), alive.clone()));
        let reader = tokio::spawn(read_loop(
            read,
            pending.clone(),
            alive.clone(),
            max_output_bytes,
        ));
        Link {
            generation,
            outgoing,
            pending,
            alive,
            tasks: [writer, reader],
        }
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Registers call `id` and queues its frame; `None` if the connection is gone.
    fn call(&self, id: u64, input: &str) -> Option<oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let sent = self.is_alive()
            && self
                .outgoing
                .send(frame(KIND_CALL, id, input.as_bytes()))
                .is_ok();
        if !sent {
            self.pending.lock().expect("pending lock").remove(&id);
            return None;
        }
        Some(rx)
    }

    /// Forgets call `id` and asks the runtime to cancel it.
    fn cancel(&self, id: u64) {
        self.pending.lock().expect("pending lock").remove(&id);
        let _ = self.outgoing.send(frame(KIND_CANCEL, id, &[]));
    }
}

fn frame(kind: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&((body.len() + 9) as u32).to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Marks the connection dead and fails every call still waiting on it (their senders drop).
fn close(pending: &Pending, alive: &AtomicBool) {
    alive.store(false, Ordering::Release);
    pending.lock().expect("pending lock").clear();
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Pending,
    alive: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(64 << 10);
    while let Some(first) = frames.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < MAX_BATCH {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write.write_all(&batch).await.is_err() {
            break;
        }
        batch.clear();
    }
    close(&pending, &alive);
}

async fn read_loop(
    read: OwnedReadHalf,
    pending: Pending,
    alive: Arc<AtomicBool>,
    max_output: usize,
) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let mut header = [0u8; HEADER];
    loop {
        if read.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let kind = header[4];
        let id = u64::from_be_bytes(header[5..].try_into().expect("8 bytes"));
        let Some(body_len) = len.checked_sub(9) else {
            tracing::error!(
                len,
                "the python runtime sent a frame shorter than its header"
            );
            break;
        };
        let reply = match kind {
            KIND_OK if body_len > max_output => {
                // Read past it in small pieces: a runaway result never sits in memory.
                let skipped = tokio::io::copy(
                    &mut (&mut read).take(body_len as u64),
                    &mut tokio::io::sink(),
                )
                .await;
                if skipped.ok() != Some(body_len as u64) {
                    break;
                }
                Reply::TooLarge(body_len)
            }
            KIND_OK | KIND_ERROR if body_len <= max_output.max(MAX_ERROR_FRAME) => {
                let mut body = vec![0u8; body_len];
                if read.read_exact(&mut body).await.is_err() {
                    break;
                }
                if kind == KIND_OK {
                    Reply::Ok(body)
                } else {
                    Reply::Error(body)
                }
            }
            KIND_NONE if body_len == 0 => Reply::None,
            _ => {
                tracing::error!(
                    kind,
                    len,
                    "the python runtime sent a frame this host does not understand"
                );
                break;
            }
        };
        // Absent when the call timed out and was forgotten.
        if let Some(caller) = pending.lock().expect("pending lock").remove(&id) {
            let _ = caller.send(reply);
        }
    }
    close(&pending, &alive);
}

/// Calls a native-Python runtime over its socket.
pub struct PythonExecutor {
    actor: String,
    config: PythonRuntimeConfig,
    descriptor: Descriptor,
    concurrency: Concurrency,
    /// The connection calls use, if one is up.
    link: Mutex<Option<Arc<Link>>>,
    /// Held while connecting, so that many calls finding no connection make one.
    connecting: tokio::sync::Mutex<()>,
    permits: Semaphore,
    process: tokio::sync::Mutex<Option<Child>>,
    generation: AtomicU64,
    next_id: AtomicU64,
    /// Times the runtime was (re)started by this host.
    pub restarts: AtomicU64,
}

async fn read_hello(stream: &mut UnixStream) -> Result<Hello> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_HELLO {
        bail!("the runtime's hello is {len} bytes; is this an asya runtime?");
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).context("the runtime's hello is not valid")
}

impl PythonExecutor {
    /// Starts the runtime (if configured to), waits until it is ready and reads its hello.
    pub async fn load(actor: &str, config: PythonRuntimeConfig) -> Result<Self> {
        let mut executor = PythonExecutor {
            actor: actor.to_owned(),
            permits: Semaphore::new(config.max_in_flight.max(1)),
            config,
            descriptor: Descriptor {
                handler: String::new(),
                mode: Mode::Payload,
                sdk_version: String::new(),
            },
            concurrency: Concurrency::Threads,
            link: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            process: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
        };
        executor.start_process(None).await?;
        let (link, hello) = executor
            .connect_ready()
            .await
            .with_context(|| format!("actor '{actor}': the python runtime did not become ready"))?;
        executor.descriptor = Descriptor {
            handler: hello.handler,
            mode: hello.mode,
            sdk_version: hello.sdk_version,
        };
        executor.concurrency = hello.concurrency;
        *executor.link.lock().expect("link lock") = Some(Arc::new(link));
        Ok(executor)
    }

    /// What the runtime said about its handler.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// Whether the handler is `async def` (cancellable calls) or a plain function (threads).
    pub fn concurrency(&self) -> Concurrency {
        self.concurrency
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
            .env(
                "ASYA_RUNTIME_THREADS",
                self.config.max_in_flight.max(1).to_string(),
            )
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
        let outputs: [(&str, Option<Box<dyn AsyncRead + Send + Unpin>>); 2] = [
            ("stdout", child.stdout.take().map(|s| Box::new(s) as _)),
            ("stderr", child.stderr.take().map(|s| Box::new(s) as _)),
        ];
        for (stream, out) in outputs {
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

    async fn connect(&self) -> Result<(Link, Hello)> {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut stream = UnixStream::connect(&self.config.socket)
            .await
            .with_context(|| format!("connecting to {}", self.config.socket.display()))?;
        let hello = read_hello(&mut stream).await?;
        if hello.protocol != PROTOCOL {
            bail!(
                "the runtime speaks {}, this host {PROTOCOL}",
                hello.protocol
            );
        }
        Ok((
            Link::start(stream, generation, self.config.max_output_bytes),
            hello,
        ))
    }

    async fn connect_ready(&self) -> Result<(Link, Hello)> {
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

    /// The connection to call on: the current one, or a new one once the old is gone.
    async fn link(&self) -> Result<Arc<Link>> {
        let usable = |link: &Option<Arc<Link>>| {
            link.as_ref()
                .filter(|l| l.is_alive() && l.generation == self.generation.load(Ordering::SeqCst))
                .cloned()
        };
        if let Some(link) = usable(&self.link.lock().expect("link lock")) {
            return Ok(link);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(link) = usable(&self.link.lock().expect("link lock")) {
            return Ok(link);
        }
        let (link, _) = self.connect_ready().await?;
        let link = Arc::new(link);
        *self.link.lock().expect("link lock") = Some(link.clone());
        Ok(link)
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
        true
    }

    /// The connection of `generation` broke under a call.
    async fn lost(&self, generation: u64) -> CallOutcome {
        self.recover("the connection failed", generation).await;
        CallOutcome::Failed(Failure::host(
            Reason::Trap,
            "python runtime connection lost (did it crash?)",
        ))
    }

    fn reply_outcome(&self, reply: Reply) -> CallOutcome {
        match reply {
            Reply::Ok(body) => match String::from_utf8(body) {
                Ok(text) => CallOutcome::Returned(text),
                Err(_) => CallOutcome::Failed(Failure::host(
                    Reason::Trap,
                    "the python runtime sent a result that is not UTF-8",
                )),
            },
            Reply::None => CallOutcome::ReturnedNone,
            Reply::TooLarge(len) => CallOutcome::Failed(Failure::host(
                Reason::OutputTooLarge,
                format!(
                    "handler result is {len} bytes, more than the allowed {}",
                    self.config.max_output_bytes
                ),
            )),
            Reply::Error(body) => match serde_json::from_slice::<WireError>(&body) {
                Ok(error) => CallOutcome::Failed(Failure {
                    reason: Reason::HandlerError,
                    error: ErrorInfo {
                        kind: error.kind,
                        message: error.message,
                        mro: error.mro_names,
                        traceback: Some(error.traceback).filter(|t| !t.is_empty()),
                    },
                }),
                Err(err) => CallOutcome::Failed(Failure::host(
                    Reason::Trap,
                    format!("the python runtime sent an error that is not valid: {err}"),
                )),
            },
        }
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
        // Waiting for the runtime to accept a connection counts against the call's timeout.
        let started = Instant::now();
        let link = match tokio::time::timeout(timeout, self.link()).await {
            Ok(Ok(link)) => link,
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
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Some(reply) = link.call(id, &input) else {
            return self.lost(link.generation).await;
        };
        drop(input);
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, reply).await {
            Ok(Ok(reply)) => self.reply_outcome(reply),
            Ok(Err(_)) => self.lost(link.generation).await,
            Err(_) => {
                link.cancel(id);
                let what = match self.concurrency {
                    Concurrency::Async => "its task in the python runtime was cancelled",
                    Concurrency::Threads if self.recover("a call timed out", link.generation).await => {
                        "a plain function's thread cannot be stopped, so the python runtime was restarted"
                    }
                    // The runtime runs in the user's container and serves other calls.
                    Concurrency::Threads => {
                        "the call was abandoned; a plain function's thread runs on in the python runtime until it returns"
                    }
                };
                CallOutcome::Failed(Failure::host(
                    Reason::Timeout,
                    format!(
                        "handler did not return within {} ms; {what}",
                        timeout.as_millis()
                    ),
                ))
            }
        }
    }
}
