//! The CRM side: what a lookup answers, and the adapters: the embedded file-backed
//! directory (`file`) and the REST lookup (`http`, with its `presets`, `select`ors and
//! `auth`). Both answer with a `CrmReply`. Numbers are read by libphonenumber's rules
//! (`phone`); PINs as CRMs hold them are checked by `pin`.

pub mod auth;
pub mod file;
pub mod http;
pub mod phone;
pub mod pin;
pub mod presets;
pub mod select;

use crate::call::verdict::StoredPin;
use std::sync::Arc;

/// A loaded CRM, as the drivers use it.
#[derive(Debug, Clone)]
pub enum CrmAdapter {
    /// The embedded file CRM: answers at once.
    File(Arc<file::ContactDirectory>),
    /// A REST lookup.
    Lookup(Arc<http::HttpLookup>),
    /// A verify webhook (judges PINs itself).
    Verify(Arc<http::HttpVerify>),
}

impl CrmAdapter {
    /// Does this CRM judge PINs itself (no lookup, the PIN goes to it)?
    pub fn is_verify(&self) -> bool {
        matches!(self, CrmAdapter::Verify(_))
    }
}

/// A CRM contact as the flow needs it.
#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    pub name: String,
    /// `None`: the contact has no PIN on file.
    pub pin: Option<StoredPin>,
}

/// The answer to "who is calling?".
#[derive(Debug, Clone)]
pub enum CrmReply {
    Found(Contact),
    /// No contact has this number.
    NotFound,
    /// Several contacts share it: treated as unknown (a PIN cannot say which one).
    Ambiguous,
    /// The CRM could not answer (timeout, refused, bad reply...).
    Error(String),
}

/// The answer of a verify webhook (CRMs that will not hand out PINs).
#[derive(Debug, Clone)]
pub enum VerifyReply {
    /// The CRM says the PIN is right.
    Verified { contact_id: String },
    /// The CRM says it is wrong (or the caller is unknown to it).
    Rejected { contact_id: Option<String> },
    /// No usable answer.
    Error(String),
}
