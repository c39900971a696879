//! The audit trail: one JSON line per call (and per refused INVITE) appended to the
//! configured file and written to the log. Records carry results, never digits or PINs.
#![allow(clippy::disallowed_methods)]

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// Where audit lines go.
#[derive(Debug, Default)]
pub struct AuditSink {
    file: Option<Mutex<std::fs::File>>,
    path: Option<std::path::PathBuf>,
}

impl AuditSink {
    /// Opens (appends to) the audit file, if one is configured.
    pub fn open(path: Option<&Path>) -> std::io::Result<AuditSink> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(AuditSink {
            file,
            path: path.map(Path::to_path_buf),
        })
    }

    /// Opens the file again by its path (after logrotate moved it away: reload, SIGHUP).
    /// On failure the old handle stays and the error is logged.
    pub fn reopen(&self) {
        let (Some(path), Some(file)) = (&self.path, &self.file) else {
            return;
        };
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                let mut cur = match file.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                *cur = f;
            }
            Err(e) => warn!(path = %path.display(), error = %e, "audit file reopen failed"),
        }
    }

    /// Writes one record: `{"ts_unix_ms":…,"kind":…, …fields}`.
    pub fn write(&self, kind: &str, record: &impl Serialize) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut v = match serde_json::to_value(record) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return,
        };
        v.insert("ts_unix_ms".into(), ts.into());
        v.insert("kind".into(), kind.into());
        let line = serde_json::Value::Object(v).to_string();
        info!(target: "audit", record = %line, "audit");
        if let Some(f) = &self.file {
            let mut f = match f.lock() {
                Ok(f) => f,
                Err(p) => p.into_inner(),
            };
            if let Err(e) = writeln!(f, "{line}") {
                warn!(error = %e, "audit file write failed");
            }
        }
    }
}
