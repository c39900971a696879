//! The PIN-check workers: argon2 comparisons run on a few threads of their own, one per
//! call loop, at a lower CPU priority than the call loops (nice 10).
//!
//! An argon2id verification holds a core for milliseconds. On the tokio blocking pool a
//! burst of callers typing at once took both cores from the call loops (our RTP frames
//! went out up to 90 ms late while the checks ran) and every check allocated, zeroed and
//! faulted in its 8 MiB anew. Here the checks wait in one queue, in the order they came;
//! a worker keeps its argon2 memory (`verdict::verify_argon2`), and the scheduler gives a
//! call loop the core whenever both want it, so media stays on time and the checks take
//! what is left. A job that panics ends with no result (the caller gets `None`); the
//! worker goes on. The workers end when the pool is dropped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The nice value of the workers: below the call loops (0), not starved (CFS still gives
/// a nice-10 thread about a tenth of a contended core).
const WORKER_NICE: libc::c_int = 10;

pub(crate) struct CostlyPool {
    jobs: mpsc::Sender<Job>,
}

impl CostlyPool {
    /// Starts `workers` threads (at least one).
    pub fn start(workers: usize) -> CostlyPool {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..workers.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pin-check-{i}"))
                .spawn(move || worker(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a PIN-check worker");
            }
        }
        CostlyPool { jobs }
    }

    /// Runs `f` on a worker; `None` if it panicked or no worker is left.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}

fn worker(queue: &Mutex<mpsc::Receiver<Job>>) {
    // SAFETY: setpriority only reads its integer arguments; on Linux PRIO_PROCESS with a
    // thread id sets that one thread's nice value. Raising it needs no privilege.
    let reniced = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            WORKER_NICE,
        )
    };
    if reniced != 0 {
        tracing::warn!("PIN-check worker runs at the call loops' priority (setpriority failed)");
    }
    loop {
        // The lock is held only while taking a job, never while running one.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return; // the pool is gone
        };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a PIN check panicked; its call gets no verdict");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_at_lower_priority_and_a_panic_ends_only_its_job() {
        let pool = CostlyPool::start(1);
        // SAFETY: getpriority only reads its integer arguments.
        let nice = pool
            .run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) })
            .await;
        assert!(nice >= Some(WORKER_NICE), "nice {nice:?}");
        let gone: Option<u32> = pool.run(|| panic!("a bug in one check")).await;
        assert_eq!(gone, None, "the panicking job has no result");
        assert_eq!(pool.run(|| 7).await, Some(7), "the worker goes on");
    }

    #[tokio::test]
    async fn jobs_wait_their_turn_in_the_order_they_came() {
        let pool = Arc::new(CostlyPool::start(1));
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || held.recv().is_ok()).await })
        };
        let order = Arc::new(Mutex::new(Vec::new()));
        let queued: Vec<_> = (0..5)
            .map(|i| {
                let (pool, order) = (pool.clone(), order.clone());
                tokio::spawn(async move {
                    pool.run(move || order.lock().map(|mut o| o.push(i)).is_ok())
                        .await
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            queued.iter().all(|q| !q.is_finished()),
            "nothing runs while the one worker is busy"
        );
        hold.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Some(true));
        for q in queued {
            assert_eq!(q.await.unwrap(), Some(true));
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }
}
