//! Where the lockout counters live: in this process (`memory`, one instance) or in Redis,
//! shared by every instance behind a proxy, so a brute-force run spread over several
//! instances is stopped exactly as on one.
//!
//! Redis layout (every key expires by itself): `pcr:fail:{key}` a sorted set of failure
//! times (sliding window), `pcr:lock:{key}` present while the key is locked. A failure is
//! counted and the lock set in one Lua script with the server's clock, so instances with
//! skewed clocks agree. Every operation has a deadline; on error or deadline the
//! configured policy applies (fail closed by default: no verdict without the store).

use super::costly::CostlyPool;
use crate::call::lockout::{Lockout, LockoutPolicy};
use crate::call::verdict::{CheckResult, LockState, PinCheck};
use crate::config::{LockoutConfig, LockoutStoreConfig, OnStoreError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// The lockout store of a running server.
pub(crate) enum LockoutStore {
    Off,
    Memory(Arc<Mutex<Lockout>>),
    Redis(Arc<RedisLockout>),
}

impl LockoutStore {
    pub fn new(config: Option<&LockoutConfig>) -> Result<LockoutStore, String> {
        let Some(c) = config else {
            return Ok(LockoutStore::Off);
        };
        Ok(match &c.store {
            LockoutStoreConfig::Memory => {
                LockoutStore::Memory(Arc::new(Mutex::new(Lockout::new(c.policy))))
            }
            LockoutStoreConfig::Redis { url } => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| format!("lockout store {url}: {e}"))?;
                LockoutStore::Redis(Arc::new(RedisLockout {
                    client,
                    conn: tokio::sync::Mutex::new(None),
                    policy: c.policy,
                    timeout: c.store_timeout,
                    on_error: c.on_store_error,
                }))
            }
        })
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, LockoutStore::Off)
    }

    /// The in-memory table, when that is the store (for the lockouts gauge).
    pub fn memory(&self) -> Option<&Arc<Mutex<Lockout>>> {
        match self {
            LockoutStore::Memory(m) => Some(m),
            _ => None,
        }
    }
}

/// Settles a verdict against the store: a locked key stops it before the comparison, the
/// comparison runs on the PIN-check workers when it costs CPU (argon2), the outcome is counted.
/// Costly comparisons run on the PIN-check workers (`costly`): a few at a time (one per
/// core), in the order they came, below the call loops' priority, because each holds
/// argon2's memory (8 MiB) and a core for milliseconds, and a burst of callers typing at
/// once must neither grow a thread pool by a thread and 8 MiB each nor delay the media.
/// A cheap comparison (plain PIN, a webhook's verdict) never waits behind them: it runs
/// here, in microseconds.
pub(crate) async fn settle(
    store: &LockoutStore,
    costly: &CostlyPool,
    check: PinCheck,
) -> CheckResult {
    let check = match settle_now(store, Instant::now(), check) {
        Settle::Done(settled) => return settled,
        Settle::Wait(check) => check,
    };
    match store {
        LockoutStore::Off | LockoutStore::Memory(_) => {
            let table = store.memory().cloned();
            // Never on a runtime thread if it costs milliseconds.
            costly
                .run(move || check.settle_in_memory(Instant::now(), table.as_deref()))
                .await
                .unwrap_or_else(unavailable_after_panic)
        }
        LockoutStore::Redis(r) => {
            let keys = check.keys().to_vec();
            match r.any_locked(&keys).await {
                Ok(true) => return check.locked(),
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "lockout store unreachable");
                    if r.on_error == OnStoreError::FailClosed {
                        return check.unavailable();
                    }
                }
            }
            let judgement = if check.is_costly() {
                match costly.run(move || check.judge()).await {
                    Some(j) => j,
                    None => return unavailable_after_panic(),
                }
            } else {
                check.judge()
            };
            match r.record(&keys, judgement.verified.is_some()).await {
                Ok(locked) => judgement.finish(if locked {
                    LockState::Locked
                } else {
                    LockState::Open
                }),
                Err(e) => {
                    warn!(error = %e, "lockout store unreachable");
                    match r.on_error {
                        OnStoreError::FailClosed => judgement.finish(LockState::Unavailable),
                        OnStoreError::SkipLockout => judgement.finish(LockState::Open),
                    }
                }
            }
        }
    }
}

/// Settles a check at once when nothing in it waits: the store is in memory (or off) and
/// the comparison costs microseconds (a plain PIN, a webhook's verdict). The call loop
/// does this in the step that took the `#`, so the REFER leaves in that step; anything
/// else (argon2, a store a network away) is given back for `settle`, off the loop.
pub(crate) fn settle_now(store: &LockoutStore, now: Instant, check: PinCheck) -> Settle {
    match store {
        LockoutStore::Off | LockoutStore::Memory(_) if !check.is_costly() => {
            Settle::Done(check.settle_in_memory(now, store.memory().map(|m| &**m)))
        }
        _ => Settle::Wait(check),
    }
}

/// What `settle_now` did with a check.
pub(crate) enum Settle {
    /// Settled: the verdict.
    Done(CheckResult),
    /// It has to wait (argon2, a store a network away): for `settle`.
    Wait(PinCheck),
}

/// The comparison itself panicked (a bug): no verdict stands.
fn unavailable_after_panic() -> CheckResult {
    CheckResult {
        contact_id: None,
        verified: None,
        lock: LockState::Unavailable,
    }
}

/// Is any of `keys` locked? (The start-of-call check of the caller's number.)
pub(crate) async fn lock_state(store: &LockoutStore, keys: &[String]) -> LockState {
    match store {
        LockoutStore::Off => LockState::Open,
        LockoutStore::Memory(m) => memory_lock_state(m, keys),
        LockoutStore::Redis(r) => match r.any_locked(keys).await {
            Ok(true) => LockState::Locked,
            Ok(false) => LockState::Open,
            Err(e) => {
                warn!(error = %e, "lockout store unreachable");
                LockState::Unavailable
            }
        },
    }
}

/// The same, answered at once from memory.
pub(crate) fn memory_lock_state(m: &Mutex<Lockout>, keys: &[String]) -> LockState {
    let now = Instant::now();
    let locked = m
        .lock()
        .map(|mut t| keys.iter().any(|k| t.is_locked(now, k)))
        .unwrap_or(false);
    if locked {
        LockState::Locked
    } else {
        LockState::Open
    }
}

/// The Redis store.
pub(crate) struct RedisLockout {
    client: redis::Client,
    /// Connected lazily (the service starts while Redis is down) and kept: the manager
    /// reconnects by itself.
    conn: tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>,
    policy: LockoutPolicy,
    timeout: Duration,
    on_error: OnStoreError,
}

/// Counts one failure for every key pair (KEYS: fail, lock, fail, lock, ...) in the sliding
/// window and locks those that reach the limit; returns 1 if any key is locked.
/// ARGV: window ms, failures, cooldown ms, a unique member for this failure.
const RECORD_FAILURE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local locked = 0
for i = 1, #KEYS, 2 do
  local fail, lock = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', lock) == 1 then
    locked = 1
  else
    redis.call('ZREMRANGEBYSCORE', fail, '-inf', now - window)
    redis.call('ZADD', fail, now, ARGV[4])
    redis.call('PEXPIRE', fail, window)
    if redis.call('ZCARD', fail) >= limit then
      redis.call('SET', lock, '1', 'PX', cooldown)
      redis.call('DEL', fail)
      locked = 1
    end
  end
end
return locked
";

fn fail_key(k: &str) -> String {
    format!("pcr:fail:{k}")
}

fn lock_key(k: &str) -> String {
    format!("pcr:lock:{k}")
}

impl RedisLockout {
    async fn conn(&self) -> Result<redis::aio::ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout, self.client.get_connection_manager())
            .await
            .map_err(|_| "connect: deadline passed".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| "deadline passed".to_string())?
            .map_err(|e| e.to_string())
    }

    pub async fn any_locked(&self, keys: &[String]) -> Result<bool, String> {
        if keys.is_empty() {
            return Ok(false);
        }
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("EXISTS");
        for k in keys {
            cmd.arg(lock_key(k));
        }
        let n: u64 = self.bounded(cmd.query_async(&mut c)).await?;
        Ok(n > 0)
    }

    /// Records the outcome for `keys`; whether a key is locked now.
    pub async fn record(&self, keys: &[String], verified: bool) -> Result<bool, String> {
        if keys.is_empty() {
            return Ok(false);
        }
        let mut c = self.conn().await?;
        if verified {
            let mut cmd = redis::cmd("DEL");
            for k in keys {
                cmd.arg(fail_key(k));
            }
            let _: u64 = self.bounded(cmd.query_async(&mut c)).await?;
            return Ok(false);
        }
        let script = redis::Script::new(RECORD_FAILURE);
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(fail_key(k)).key(lock_key(k));
        }
        let member: u64 = rand::random();
        inv.arg(self.policy.window.as_millis() as u64)
            .arg(self.policy.failures as u64)
            .arg(self.policy.cooldown.as_millis() as u64)
            .arg(format!("{member:016x}"));
        let locked: u64 = self.bounded(inv.invoke_async(&mut c)).await?;
        Ok(locked == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::verdict::{hash_pin, Pin, StoredPin};
    use crate::crm::Contact;

    fn check(stored: StoredPin, typed: &str) -> PinCheck {
        let contact = Contact {
            id: "c1".into(),
            name: "A".into(),
            pin: Some(stored),
        };
        PinCheck::compare(contact, Pin::from_digits(typed).unwrap(), vec![])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_argon2_checks_waits_for_the_workers_and_every_one_is_judged() {
        let right = Pin::from_digits("1234").unwrap();
        let hashed = StoredPin::from_hash(&hash_pin(&right).unwrap()).unwrap();
        let store = Arc::new(LockoutStore::Off);
        let workers = Arc::new(CostlyPool::start(1));
        // The one worker busy: the costly checks queue, a cheap one does not wait for them.
        let (release, busy) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let workers = workers.clone();
            tokio::spawn(async move { workers.run(move || busy.recv().is_ok()).await })
        };
        let burst: Vec<_> = (0..8)
            .map(|i| {
                let (store, workers) = (store.clone(), workers.clone());
                let c = check(hashed.clone(), if i % 2 == 0 { "1234" } else { "1235" });
                tokio::spawn(async move { settle(&store, &workers, c).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            burst.iter().all(|h| !h.is_finished()),
            "costly checks wait for a worker"
        );
        let cheap = settle(
            &store,
            &workers,
            check(StoredPin::Plain(right.clone()), "1234"),
        )
        .await;
        assert!(cheap.verified.is_some(), "a plain PIN is judged at once");
        release.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Some(true));
        for (i, h) in burst.into_iter().enumerate() {
            let r = h.await.unwrap();
            assert_eq!(r.verified.is_some(), i % 2 == 0, "check {i}");
            assert_eq!(r.lock, LockState::Open);
        }
    }

    #[test]
    fn only_cheap_checks_against_memory_are_settled_at_once() {
        let right = Pin::from_digits("1234").unwrap();
        let now = Instant::now();
        let memory = LockoutStore::Memory(Arc::new(Mutex::new(Lockout::new(
            crate::call::lockout::LockoutPolicy::default(),
        ))));
        for store in [&LockoutStore::Off, &memory] {
            let plain = |typed| check(StoredPin::Plain(right.clone()), typed);
            let Settle::Done(ok) = settle_now(store, now, plain("1234")) else {
                panic!("a plain PIN waits")
            };
            assert!(ok.verified.is_some(), "right plain PIN verified at once");
            let Settle::Done(wrong) = settle_now(store, now, plain("1235")) else {
                panic!("a plain PIN waits")
            };
            assert!(wrong.verified.is_none(), "wrong plain PIN refused at once");
            assert_eq!(wrong.lock, LockState::Open);
        }
        let hashed = StoredPin::from_hash(&hash_pin(&right).unwrap()).unwrap();
        assert!(
            matches!(
                settle_now(&memory, now, check(hashed, "1234")),
                Settle::Wait(_)
            ),
            "argon2 is given back, never run on the call loop"
        );
    }
}
