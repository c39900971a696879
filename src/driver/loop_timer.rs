//! The call loop's alarm clock: a timerfd, so the loop wakes at its next frame's deadline
//! to within microseconds. tokio's timers round a deadline up to the next millisecond, and
//! the reactor's `epoll_wait` timeout rounds up once more: every frame went out 1–2 ms late
//! before the loop had done any work (frame lateness p99 3.2 ms on an idle machine). Falls
//! back to tokio's sleep where no timerfd can be made. Besides batch.rs and the DTMF
//! kernels, the one place with `unsafe`; each block says why it holds.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub(crate) enum LoopTimer {
    Fd(AsyncFd<OwnedFd>),
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl LoopTimer {
    pub fn new() -> LoopTimer {
        match timerfd() {
            Ok(fd) => LoopTimer::Fd(fd),
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd: the call loop wakes by tokio's millisecond timer");
                LoopTimer::Tokio(Box::pin(tokio::time::sleep(Duration::from_secs(86400))))
            }
        }
    }

    /// Rings at `at` (now, if it has passed); `None` disarms it.
    pub fn set(&mut self, at: Option<Instant>) {
        match self {
            LoopTimer::Fd(fd) => {
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                let value = at.map_or(zero, |at| {
                    // Zero would disarm it: a deadline already passed rings at once.
                    let d = at
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_nanos(1));
                    libc::timespec {
                        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    }
                });
                let spec = libc::itimerspec {
                    it_interval: zero,
                    it_value: value,
                };
                // SAFETY: the fd is our open timerfd; `spec` is a valid itimerspec that
                // outlives the call; the old value is not asked for (null).
                let r = unsafe {
                    libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
                };
                if r != 0 {
                    tracing::warn!(
                        error = %std::io::Error::last_os_error(),
                        "timerfd_settime failed"
                    );
                }
            }
            LoopTimer::Tokio(sleep) => {
                let far = Instant::now() + Duration::from_secs(86400);
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(at.unwrap_or(far)));
            }
        }
    }

    /// Waits for the ring (cancel-safe: a ring not yet taken stays for the next wait).
    pub async fn rung(&mut self) {
        match self {
            LoopTimer::Fd(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    return std::future::pending().await;
                };
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8 from our own fd
                // (non-blocking: -1 with EAGAIN when it has not rung).
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                // Taken (or nothing there): the next ring is a new edge either way.
                ready.clear_ready();
                if n == expirations.len() as isize {
                    return;
                }
            },
            LoopTimer::Tokio(sleep) => sleep.as_mut().await,
        }
    }
}

fn timerfd() -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: timerfd_create takes two integers and returns a new fd or -1.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the `AsyncFd` owns the fd: it is neither closed nor replaced while
    // registered (deregistered when the `AsyncFd` drops, before the fd closes).
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rings_on_time_again_and_again_and_not_when_disarmed() {
        let mut t = LoopTimer::new();
        assert!(matches!(t, LoopTimer::Fd(_)), "Linux has timerfd");
        for wait in [3u64, 1, 7] {
            let start = Instant::now();
            let at = start + Duration::from_millis(wait);
            t.set(Some(at));
            t.rung().await;
            assert!(Instant::now() >= at, "never early");
        }
        // A deadline already passed rings at once.
        t.set(Some(Instant::now() - Duration::from_millis(5)));
        tokio::time::timeout(Duration::from_secs(2), t.rung())
            .await
            .expect("a passed deadline rings");
        t.set(None);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), t.rung())
                .await
                .is_err(),
            "disarmed: no ring"
        );
    }
}
