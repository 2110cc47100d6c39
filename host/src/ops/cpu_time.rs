//! CPU time spent polling a future, measured per poll with the thread's CPU clock: the handler's
//! share of the host's CPU, even when an async call yields and resumes on another worker thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time consumed by the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wraps a future; resolves to its output and the CPU time spent inside its polls.
pub struct CpuTimed<F> {
    inner: F,
    spent: Duration,
}

impl<F> CpuTimed<F> {
    /// Measures `inner`.
    pub fn new(inner: F) -> Self {
        CpuTimed {
            inner,
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future + Unpin> Future for CpuTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = thread_cpu_time();
        let polled = Pin::new(&mut self.inner).poll(cx);
        let spent = thread_cpu_time().saturating_sub(start);
        self.spent += spent;
        match polled {
            Poll::Ready(out) => Poll::Ready((out, self.spent)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_busy_polls_not_sleeps() {
        // Busy for 30 ms of this thread's CPU (not wall time: the machine may be loaded).
        let busy = Box::pin(async {
            let start = thread_cpu_time();
            let mut x = 0u64;
            while thread_cpu_time() - start < Duration::from_millis(30) {
                x = x.wrapping_add(1);
                std::hint::black_box(x);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let ((), cpu) = CpuTimed::new(busy).await;
        assert!(cpu >= Duration::from_millis(30), "{cpu:?}");
        assert!(
            cpu < Duration::from_millis(90),
            "sleeping is not CPU time: {cpu:?}"
        );
    }
}
