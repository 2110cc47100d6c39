//! A guest's stdout and stderr, kept in memory up to a byte budget and drained into the host's
//! log after each call.

use anyhow::Result;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Which guest stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

#[derive(Debug, Default)]
pub(crate) struct OutputBuffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    overflowed: bool,
}

/// stdout and stderr of a guest, kept in memory up to a byte budget and drained after each call
/// into the host's log (tagged with the actor). Writing past the budget stops the guest.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    buffers: Arc<Mutex<OutputBuffers>>,
    capacity: usize,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        CapturedOutput {
            buffers: Arc::default(),
            capacity,
        }
    }

    pub(crate) fn stream(&self, which: Stream) -> GuestOutputStream {
        GuestOutputStream {
            output: self.clone(),
            which,
        }
    }

    /// Takes what the guest wrote since the last call, and whether it tried to write more than
    /// allowed.
    pub fn drain(&self) -> (Vec<u8>, Vec<u8>, bool) {
        let mut b = self.buffers.lock().expect("output lock");
        let overflowed = std::mem::take(&mut b.overflowed);
        (
            std::mem::take(&mut b.stdout),
            std::mem::take(&mut b.stderr),
            overflowed,
        )
    }

    fn write(&self, which: Stream, bytes: &[u8]) -> Result<(), ()> {
        let mut b = self.buffers.lock().expect("output lock");
        if b.stdout.len() + b.stderr.len() + bytes.len() > self.capacity {
            b.overflowed = true;
            return Err(());
        }
        match which {
            Stream::Stdout => b.stdout.extend_from_slice(bytes),
            Stream::Stderr => b.stderr.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// The message the guest traps with when it writes too much output.
pub const OUTPUT_OVERFLOW_TRAP: &str = "asya: handler output (stdout/stderr) exceeded its limit";

#[derive(Debug, Clone)]
pub(crate) struct GuestOutputStream {
    output: CapturedOutput,
    which: Stream,
}

impl IsTerminal for GuestOutputStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutputStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutputStream {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutputStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.output
            .write(self.which, &bytes)
            .map_err(|()| StreamError::trap(OUTPUT_OVERFLOW_TRAP))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutputStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(
            self.output
                .write(self.which, buf)
                .map(|()| buf.len())
                .map_err(|()| std::io::Error::other(OUTPUT_OVERFLOW_TRAP)),
        )
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
