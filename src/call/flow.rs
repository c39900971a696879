//! The PIN flow of one call (sans-IO): prompt, collect digits (terminator, maximum length,
//! clear key, first- and inter-digit timeouts), judge against the CRM's answer (the lookup
//! runs while the prompt plays), retry up to `max_attempts`, then transfer: to the success
//! extension only with a `PinVerified`, to the failure extension otherwise.
//!
//! The flow decides; the call carries out its `FlowAction`s (prompts, REFER, hang-up) and
//! feeds back digits, prompt completion, the CRM reply, the transfer outcome and timeouts.

use super::lockout::{contact_key, number_key};
use super::verdict::{self, CheckResult, LockState, Pin, PinCheck, PinVerified};
use crate::config::org::{AnonymousPolicy, Organization, ResultCarrier};
use crate::crm::{CrmReply, VerifyReply};
use crate::media::dtmf::{DigitEvent, DigitSource};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Percent-encodes a URI header value (RFC 3261 §25.1 `hvalue`: unreserved kept).
fn uri_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header field value with nothing that could break the message (CR, LF, controls).
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// How long the flow waits for the CRM once the caller has finished typing.
pub const CRM_DEADLINE: Duration = Duration::from_secs(2);

/// How long the flow waits for its PIN check (comparison and lockout store). Checks queue
/// for a core under load (argon2, a few at a time), so seconds here are slowness, not a
/// fault; only a check that never comes back (a driver fault) reaches this.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(15);

/// The call's result, for the audit record and the failure routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Verified,
    WrongPin,
    NoInput,
    UnknownCaller,
    Anonymous,
    CrmError,
    LockedOut,
    /// The shared lockout store (Redis) could not be reached in time: fails closed.
    LockoutUnavailable,
    NotActivated,
    /// The caller hung up before a verdict.
    Abandoned,
}

impl Outcome {
    /// The name in the audit record and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::WrongPin => "wrong_pin",
            Outcome::NoInput => "no_input",
            Outcome::UnknownCaller => "unknown_caller",
            Outcome::Anonymous => "anonymous",
            Outcome::CrmError => "crm_error",
            Outcome::LockedOut => "locked_out",
            Outcome::LockoutUnavailable => "lockout_unavailable",
            Outcome::NotActivated => "not_activated",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// Where the caller goes. `Success` can only be built from a `PinVerified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    Success(PinVerified),
    Failure(Outcome),
}

/// What the call must do for the flow.
#[derive(Debug, Clone)]
pub enum FlowAction {
    /// Play these prompts (by name), replacing whatever plays. The flow is told when this
    /// list (not an earlier, interrupted one) is done.
    Play(Vec<&'static str>),
    /// Send REFER to this URI, with these extra header fields on the REFER itself.
    Refer {
        uri: String,
        headers: Vec<(String, String)>,
    },
    /// Ask the CRM's verify webhook about this PIN; answer with `on_verify`.
    Verify(Pin),
    /// Settle a verdict off the call's task (the PIN comparison or the webhook's answer,
    /// and the lockout bookkeeping); answer with `on_check`.
    Check(PinCheck),
    /// Is any of these lockout keys locked? Answer with `on_lock_state`.
    LockCheck(Vec<String>),
    /// End the call (BYE).
    Hangup,
}

#[derive(Debug)]
enum State {
    /// Asking the lockout store whether the caller's number is locked.
    CheckingLock {
        until: Instant,
    },
    /// Prompting and collecting. `deadline` is unset while the prompt still plays.
    Collecting {
        attempt: u32,
        entry: Pin,
        deadline: Option<Instant>,
        typed: bool,
    },
    /// The caller finished typing; the CRM has not answered yet.
    AwaitingCrm {
        attempt: u32,
        entry: Pin,
        until: Instant,
    },
    /// The PIN is being compared with the one on file (argon2, on the PIN-check workers).
    AwaitingCheck {
        attempt: u32,
        until: Instant,
    },
    /// The verify webhook has the PIN; waiting for its verdict.
    AwaitingVerify {
        attempt: u32,
        until: Instant,
        asked: Instant,
    },
    /// REFER sent (the verdict announcement plays meanwhile); the call reports how it ends.
    Transferring,
    /// Saying the transfer failed, then the fallback destination (once) or hanging up.
    Closing {
        fallback: Option<String>,
    },
    Done,
}

/// The flow's contribution to the audit record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FlowFacts {
    pub outcome: Option<Outcome>,
    pub contact_id: Option<String>,
    pub attempts: u32,
    /// Each attempt's result, in order (the last is usually `outcome`).
    pub attempt_results: Vec<Outcome>,
    pub digit_source: Option<DigitSource>,
    pub transfer_target: Option<String>,
    pub transfer_outcome: Option<String>,
    /// The PBX took the caller (directly or through the fallback).
    pub transferred: bool,
    pub answer_to_verdict_ms: Option<u64>,
    /// From the end of the last entry (the `#`) to the REFER: what the caller waits.
    pub entry_to_refer_ms: Option<u64>,
    pub crm_latency_ms: Option<u64>,
}

/// One call's PIN flow.
#[derive(Debug)]
pub struct PinFlow {
    org: Arc<Organization>,
    /// Lockout is on (the store lives with the driver), and this caller's number key.
    lockout: bool,
    number_key: Option<String>,
    state: State,
    crm: Option<CrmReply>,
    crm_asked: Option<Instant>,
    started: Instant,
    /// When the last entry ended (its terminator, last key or timeout).
    entry_ended: Option<Instant>,
    facts: FlowFacts,
    actions: Vec<FlowAction>,
    fallback_tried: bool,
    /// The CRM judges PINs itself (verify webhook): no lookup, no local comparison.
    remote_verify: bool,
}

impl PinFlow {
    /// Starts at answer. `caller` is `None` for a withheld number; `crm_asked` is when the
    /// lookup was requested (None when there is nothing to look up); with `remote_verify`
    /// the CRM's webhook judges each PIN.
    pub fn start(
        now: Instant,
        org: Arc<Organization>,
        caller: Option<&str>,
        crm_asked: Option<Instant>,
        lockout: bool,
        remote_verify: bool,
    ) -> PinFlow {
        let caller_known = caller.is_some();
        let mut f = PinFlow {
            number_key: caller.map(|c| number_key(&org.name, c)),
            lockout,
            remote_verify,
            state: State::Done,
            crm: None,
            crm_asked,
            started: now,
            entry_ended: None,
            facts: FlowFacts::default(),
            actions: Vec::new(),
            fallback_tried: false,
            org,
        };
        if !caller_known && f.org.anonymous == AnonymousPolicy::Fail {
            f.verdict(now, TransferTarget::Failure(Outcome::Anonymous));
        } else {
            if !caller_known {
                f.crm = Some(CrmReply::NotFound);
            }
            // A locked number goes straight to the failure extension, before it is asked
            // anything: the prompt starts when the store has answered (at once from memory,
            // a round trip from Redis).
            match f.number_key.clone().filter(|_| f.lockout) {
                Some(k) => {
                    f.actions.push(FlowAction::LockCheck(vec![k]));
                    f.state = State::CheckingLock {
                        until: now + CRM_DEADLINE,
                    };
                }
                None => f.prompt_entry(1, &["enter_pin"]),
            }
        }
        f
    }

    fn prompt_entry(&mut self, attempt: u32, prompts: &[&'static str]) {
        self.actions.push(FlowAction::Play(prompts.to_vec()));
        self.state = State::Collecting {
            attempt,
            entry: Pin::empty(),
            deadline: None,
            typed: false,
        };
    }

    /// The actions produced so far.
    pub fn poll_action(&mut self) -> Option<FlowAction> {
        (!self.actions.is_empty()).then(|| self.actions.remove(0))
    }

    pub fn facts(&self) -> &FlowFacts {
        &self.facts
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Where the flow is, as an index into `call::PROGRESS`.
    pub fn progress(&self) -> u8 {
        match self.state {
            State::CheckingLock { .. } => 1,
            State::Collecting { .. } => 2,
            State::AwaitingCrm { .. }
            | State::AwaitingCheck { .. }
            | State::AwaitingVerify { .. } => 3,
            State::Transferring => 4,
            State::Closing { .. } => 5,
            State::Done => 6,
        }
    }

    /// The caller hung up (or the call ended otherwise) before the flow finished.
    pub fn abandon(&mut self) {
        if self.facts.outcome.is_none() {
            self.facts.outcome = Some(Outcome::Abandoned);
        }
        self.state = State::Done;
    }

    /// The prompt list ended (played out or interrupted).
    pub fn on_prompts_done(&mut self, now: Instant) {
        match &mut self.state {
            State::Collecting {
                deadline, typed, ..
            } if deadline.is_none() => {
                let wait = if *typed {
                    self.org.inter_digit_timeout
                } else {
                    self.org.first_digit_timeout
                };
                *deadline = Some(now + wait);
            }
            State::Closing { fallback } => match fallback.take() {
                Some(uri) => {
                    self.fallback_tried = true;
                    self.actions.push(FlowAction::Refer {
                        uri,
                        headers: Vec::new(),
                    });
                    self.state = State::Transferring;
                }
                None => {
                    self.actions.push(FlowAction::Hangup);
                    self.state = State::Done;
                }
            },
            _ => {}
        }
    }

    /// A key from any source.
    pub fn on_digit(&mut self, now: Instant, d: &DigitEvent) {
        let State::Collecting {
            attempt,
            entry,
            deadline,
            typed,
        } = &mut self.state
        else {
            return;
        };
        if self.facts.digit_source.is_none() {
            self.facts.digit_source = Some(d.source);
        }
        *typed = true;
        let key = d.digit.as_char();
        *deadline = Some(now + self.org.inter_digit_timeout);
        if Some(key) == self.org.clear_key {
            entry.clear();
            return;
        }
        if Some(key) == self.org.terminator {
            let (attempt, entry) = (*attempt, std::mem::replace(entry, Pin::empty()));
            return self.entry_done(now, attempt, entry);
        }
        entry.push(key);
        if entry.len() >= self.org.max_digits {
            let (attempt, entry) = (*attempt, std::mem::replace(entry, Pin::empty()));
            self.entry_done(now, attempt, entry);
        }
    }

    /// The CRM answered.
    pub fn on_crm(&mut self, now: Instant, reply: CrmReply) {
        if self.crm.is_some() {
            return;
        }
        if let Some(asked) = self.crm_asked {
            self.facts.crm_latency_ms =
                Some(now.saturating_duration_since(asked).as_millis() as u64);
        }
        self.crm = Some(reply);
        if matches!(self.state, State::AwaitingCrm { .. }) {
            if let State::AwaitingCrm { attempt, entry, .. } =
                std::mem::replace(&mut self.state, State::Done)
            {
                self.judge(now, attempt, entry);
            }
        }
    }

    fn entry_done(&mut self, now: Instant, attempt: u32, entry: Pin) {
        self.facts.attempts = attempt;
        self.entry_ended = Some(now);
        if entry.len() < self.org.min_digits {
            let outcome = if entry.is_empty() {
                Outcome::NoInput
            } else {
                Outcome::WrongPin
            };
            return self.failed_attempt(now, attempt, outcome);
        }
        if self.remote_verify && self.crm.is_none() {
            self.actions.push(FlowAction::Verify(entry));
            self.state = State::AwaitingVerify {
                attempt,
                until: now + CRM_DEADLINE,
                asked: now,
            };
            return;
        }
        if self.crm.is_none() {
            self.state = State::AwaitingCrm {
                attempt,
                entry,
                until: now + CRM_DEADLINE,
            };
            return;
        }
        self.judge(now, attempt, entry);
    }

    /// The lockout keys of this caller: the contact (when known) and the number; none
    /// when lockout is off.
    fn keys(&self, contact: Option<&str>) -> Vec<String> {
        if !self.lockout {
            return Vec::new();
        }
        let mut k: Vec<String> = contact
            .map(|c| contact_key(&self.org.name, c))
            .into_iter()
            .collect();
        k.extend(self.number_key.clone());
        k
    }

    /// Waits for the settlement of a verdict (`on_check`).
    fn settle(&mut self, now: Instant, attempt: u32, check: PinCheck) {
        self.actions.push(FlowAction::Check(check));
        self.state = State::AwaitingCheck {
            attempt,
            until: now + CHECK_DEADLINE,
        };
    }

    fn judge(&mut self, now: Instant, attempt: u32, entry: Pin) {
        let reply = self
            .crm
            .clone()
            .unwrap_or(CrmReply::Error("no reply".into()));
        match reply {
            CrmReply::Found(contact) => {
                self.facts.contact_id = Some(contact.id.clone());
                // Settled off the call's task: a locked caller or contact is not even
                // compared; the outcome is counted for the lockout.
                let keys = self.keys(Some(&contact.id));
                self.settle(now, attempt, PinCheck::compare(contact, entry, keys));
            }
            // Unknown or ambiguous callers cannot be verified; say nothing that tells an
            // attacker whether the number is known, and do not make them retry.
            CrmReply::NotFound | CrmReply::Ambiguous => {
                self.verdict(now, TransferTarget::Failure(Outcome::UnknownCaller))
            }
            CrmReply::Error(_) => self.verdict(now, TransferTarget::Failure(Outcome::CrmError)),
        }
    }

    fn failed_attempt(&mut self, now: Instant, attempt: u32, outcome: Outcome) {
        self.facts.attempts = attempt;
        self.facts.attempt_results.push(outcome);
        if attempt >= self.org.max_attempts {
            return self.verdict(now, TransferTarget::Failure(outcome));
        }
        let say = if outcome == Outcome::NoInput {
            "no_input"
        } else {
            "incorrect_pin"
        };
        self.prompt_entry(attempt + 1, &[say, "try_again", "enter_pin"]);
    }

    fn verdict(&mut self, now: Instant, target: TransferTarget) {
        let outcome = match &target {
            TransferTarget::Success(_) => Outcome::Verified,
            TransferTarget::Failure(o) => *o,
        };
        self.facts.outcome = Some(outcome);
        if self.facts.attempt_results.len() < self.facts.attempts as usize {
            self.facts.attempt_results.push(outcome);
        }
        self.facts.answer_to_verdict_ms =
            Some(now.saturating_duration_since(self.started).as_millis() as u64);
        // The REFER leaves with this verdict (same instant).
        self.facts.entry_to_refer_ms = self
            .entry_ended
            .map(|t| now.saturating_duration_since(t).as_millis() as u64);
        // The REFER leaves now; the caller hears the announcements while the PBX carries
        // out the transfer (they stop when it ends: final NOTIFY or BYE).
        let refer = self.refer_for(&target);
        self.actions.push(refer);
        let mut say: Vec<&'static str> = Vec::new();
        if self.org.announce_verdict {
            match &target {
                TransferTarget::Success(_) => say.push("verified"),
                TransferTarget::Failure(Outcome::LockedOut) => say.push("locked_out"),
                // Said only if the operator provided it (an optional prompt).
                TransferTarget::Failure(Outcome::CrmError) => say.push("crm_error"),
                TransferTarget::Failure(_) => {}
            }
        }
        if self.org.announce_transfer {
            say.push("transferring");
        }
        if !say.is_empty() {
            self.actions.push(FlowAction::Play(say));
        }
        self.state = State::Transferring;
    }

    /// The REFER for a verdict: the success extension only with a `PinVerified`, and the
    /// result where the organization wants it (Refer-To URI headers, REFER headers).
    fn refer_for(&mut self, target: &TransferTarget) -> FlowAction {
        let ext = match target {
            TransferTarget::Success(_) => self.org.pin_success_ext.clone(),
            TransferTarget::Failure(_) => self.org.pin_failed_ext.clone(),
        };
        let mut uri = self.org.refer_uri(&ext);
        let mut headers = Vec::new();
        if self.org.refer_to_result_header {
            let mut result = vec![(
                "X-PIN-Result",
                match target {
                    TransferTarget::Success(_) => "verified".to_string(),
                    TransferTarget::Failure(_) => "failed".to_string(),
                },
            )];
            if let TransferTarget::Success(v) = target {
                // The agent's screen can open the contact the caller proved to be.
                result.push(("X-PIN-Contact", v.contact_id().to_string()));
            }
            if self.org.pin_result_in.contains(&ResultCarrier::ReferTo) {
                for (i, (name, value)) in result.iter().enumerate() {
                    let sep = if i == 0 && !uri.contains('?') {
                        '?'
                    } else {
                        '&'
                    };
                    uri.push(sep);
                    uri.push_str(name);
                    uri.push('=');
                    uri.push_str(&uri_escape(value));
                }
            }
            if self.org.pin_result_in.contains(&ResultCarrier::ReferHeader) {
                headers.extend(result.iter().map(|(n, v)| (n.to_string(), header_safe(v))));
            }
        }
        self.facts.transfer_target = Some(ext);
        FlowAction::Refer { uri, headers }
    }

    /// The settlement asked for by `FlowAction::Check`.
    pub fn on_check(&mut self, now: Instant, result: CheckResult) {
        let State::AwaitingCheck { attempt, .. } = self.state else {
            return;
        };
        if result.contact_id.is_some() {
            self.facts.contact_id = result.contact_id.clone();
        }
        match (result.lock, result.verified) {
            // The lockout store could not answer: no verdict stands on it (fails closed).
            (LockState::Unavailable, _) => {
                self.verdict(now, TransferTarget::Failure(Outcome::LockoutUnavailable))
            }
            (LockState::Locked, _) => {
                self.verdict(now, TransferTarget::Failure(Outcome::LockedOut))
            }
            (LockState::Open, Some(proof)) => self.verdict(now, TransferTarget::Success(proof)),
            (LockState::Open, None) => self.failed_attempt(now, attempt, Outcome::WrongPin),
        }
    }

    /// The lockout store's answer to `FlowAction::LockCheck` (the caller's number).
    pub fn on_lock_state(&mut self, now: Instant, state: LockState) {
        if !matches!(self.state, State::CheckingLock { .. }) {
            return;
        }
        match state {
            LockState::Locked => self.verdict(now, TransferTarget::Failure(Outcome::LockedOut)),
            // Unavailable decides nothing here: the settlement of the PIN asks again.
            LockState::Open | LockState::Unavailable => self.prompt_entry(1, &["enter_pin"]),
        }
    }

    /// The verify webhook's answer.
    pub fn on_verify(&mut self, now: Instant, reply: VerifyReply) {
        let State::AwaitingVerify { attempt, asked, .. } = self.state else {
            return;
        };
        self.facts.crm_latency_ms = Some(now.saturating_duration_since(asked).as_millis() as u64);
        match reply {
            VerifyReply::Verified { contact_id } => {
                self.facts.contact_id = Some(contact_id.clone());
                let keys = self.keys(Some(&contact_id));
                let proof = verdict::webhook_verified(contact_id.clone());
                let check = PinCheck::remote(Some(contact_id), Some(proof), keys);
                self.settle(now, attempt, check);
            }
            VerifyReply::Rejected { contact_id } => {
                self.facts.contact_id = contact_id.clone();
                let keys = self.keys(contact_id.as_deref());
                self.settle(now, attempt, PinCheck::remote(contact_id, None, keys));
            }
            VerifyReply::Error(_) => {
                self.verdict(now, TransferTarget::Failure(Outcome::CrmError));
            }
        }
    }

    /// How the REFER ended: `Ok(())` the PBX took the call, `Err(why)` it did not.
    pub fn on_transfer(&mut self, result: Result<(), String>) {
        if !matches!(self.state, State::Transferring) {
            return;
        }
        let previous = self.facts.transfer_outcome.take();
        let prefix = previous.map(|p| format!("{p}; ")).unwrap_or_default();
        match result {
            Ok(()) if self.fallback_tried => {
                self.facts.transferred = true;
                self.facts.transfer_outcome = Some(format!("{prefix}fallback transferred"));
                self.actions.push(FlowAction::Hangup);
                self.state = State::Done;
            }
            Ok(()) => {
                self.facts.transferred = true;
                self.facts.transfer_outcome = Some("transferred".into());
                self.actions.push(FlowAction::Hangup);
                self.state = State::Done;
            }
            Err(why) => {
                // A verified caller is never sent to a fallback: it is a failure route.
                let fallback = match (&self.org.transfer_fallback, self.fallback_tried) {
                    (Some(f), false) => Some(f.clone()),
                    _ => None,
                };
                let then = if fallback.is_some() {
                    "trying the fallback"
                } else {
                    "hung up"
                };
                let what = if self.fallback_tried {
                    "fallback failed"
                } else {
                    "failed"
                };
                self.facts.transfer_outcome = Some(format!("{prefix}{what}: {why}; {then}"));
                self.actions.push(FlowAction::Play(vec!["transfer_failed"]));
                self.state = State::Closing { fallback };
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Collecting { deadline, .. } => *deadline,
            State::AwaitingCrm { until, .. }
            | State::AwaitingVerify { until, .. }
            | State::AwaitingCheck { until, .. }
            | State::CheckingLock { until } => Some(*until),
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Collecting {
                attempt,
                entry,
                deadline: Some(d),
                ..
            } if now >= d => {
                // Inter-digit timeout with enough digits counts as a complete entry.
                self.entry_done(now, attempt, entry);
            }
            // The store did not answer about the number: ask for the PIN; its settlement
            // asks the store again (and fails closed if it is still away).
            State::CheckingLock { until } if now >= until => {
                self.prompt_entry(1, &["enter_pin"]);
            }
            // A comparison that never came back (a driver fault): never a verified caller.
            State::AwaitingCheck { until, .. } if now >= until => {
                self.verdict(now, TransferTarget::Failure(Outcome::CrmError));
            }
            State::AwaitingVerify { until, .. } if now >= until => {
                self.facts.crm_latency_ms = Some(CRM_DEADLINE.as_millis() as u64);
                self.verdict(now, TransferTarget::Failure(Outcome::CrmError));
            }
            State::AwaitingCrm { until, .. } if now >= until => {
                self.facts.crm_latency_ms = Some(CRM_DEADLINE.as_millis() as u64);
                self.crm = Some(CrmReply::Error("CRM deadline passed".into()));
                self.verdict(now, TransferTarget::Failure(Outcome::CrmError));
            }
            other => self.state = other,
        }
    }
}
