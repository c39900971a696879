//! The embedded file-backed CRM: `sip-config/contacts.toml`, contacts with E.164 phone
//! numbers and an argon2id hash of their PIN (never the PIN), and the writer behind
//! `pincoderouting contacts set-pin`.

use super::{Contact, CrmReply};
use crate::call::verdict::{hash_pin, Pin, StoredPin};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContact {
    id: String,
    #[serde(default)]
    name: String,
    organization: String,
    phones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pin_hash: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    contact: Vec<RawContact>,
}

/// Contacts by (organization, E.164 number).
#[derive(Debug, Default)]
pub struct ContactDirectory {
    by_phone: HashMap<(String, String), Vec<Contact>>,
    count: usize,
}

fn valid_e164(p: &str) -> bool {
    p.len() >= 8
        && p.len() <= 16
        && p.starts_with('+')
        && p[1..].chars().all(|c| c.is_ascii_digit())
}

fn parse_file(text: &str) -> Result<RawFile, String> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        format!("line {line}: {}", e.message())
    })
}

impl ContactDirectory {
    /// Loads the contacts file. A missing file is an empty directory (every caller is
    /// unknown) only if the path does not exist at all; unreadable or invalid is an error.
    pub fn load(path: &Path) -> Result<ContactDirectory, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("contacts file not found".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<ContactDirectory, String> {
        let raw = parse_file(text)?;
        let mut dir = ContactDirectory::default();
        for c in raw.contact {
            for p in &c.phones {
                if !valid_e164(p) {
                    return Err(format!(
                        "contact {}: phone '{p}' is not E.164 (+15551234567)",
                        c.id
                    ));
                }
            }
            let pin = match &c.pin_hash {
                Some(h) => Some(
                    StoredPin::from_hash(h)
                        .map_err(|e| format!("contact {}: pin_hash: {e}", c.id))?,
                ),
                None => None,
            };
            let contact = Contact {
                id: c.id.clone(),
                name: c.name.clone(),
                pin,
            };
            for p in c.phones {
                dir.by_phone
                    .entry((c.organization.clone(), p))
                    .or_default()
                    .push(contact.clone());
            }
            dir.count += 1;
        }
        Ok(dir)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Looks a caller up in an organization.
    pub fn lookup(&self, organization: &str, e164: &str) -> CrmReply {
        match self
            .by_phone
            .get(&(organization.to_string(), e164.to_string()))
            .map(Vec::as_slice)
        {
            None | Some([]) => CrmReply::NotFound,
            Some([one]) => CrmReply::Found(one.clone()),
            Some(_) => CrmReply::Ambiguous,
        }
    }
}

/// Sets the PIN of the contact with this phone number (creating the contact when `create`
/// gives its id, name and organization), writing the argon2id hash back to the file.
/// The file is rewritten from its parsed form (comments are not kept).
pub fn set_pin(
    path: &Path,
    phone: &str,
    pin: &Pin,
    create: Option<(String, String, String)>,
) -> Result<String, String> {
    if !valid_e164(phone) {
        return Err(format!("phone '{phone}' is not E.164 (+15551234567)"));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create.is_some() => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut raw = parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let hash = hash_pin(pin)?;
    let id = match raw
        .contact
        .iter_mut()
        .find(|c| c.phones.iter().any(|p| p == phone))
    {
        Some(c) => {
            c.pin_hash = Some(hash);
            c.id.clone()
        }
        None => match create {
            Some((id, name, organization)) => {
                raw.contact.push(RawContact {
                    id: id.clone(),
                    name,
                    organization,
                    phones: vec![phone.to_string()],
                    pin_hash: Some(hash),
                });
                id
            }
            None => {
                return Err(format!(
                    "no contact has phone {phone} (use --id/--name/--org to add one)"
                ))
            }
        },
    };
    let out = format!(
        "# Contacts of the embedded file CRM. PINs are argon2id hashes; set one with\n\
         #   pincoderouting contacts set-pin --file {} --phone +15551234567\n\n{}",
        path.display(),
        toml::to_string(&raw).map_err(|e| e.to_string())?
    );
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_found_unknown_ambiguous_and_bad_files() {
        let pin = Pin::from_digits("1234").unwrap();
        let h = hash_pin(&pin).unwrap();
        let text = format!(
            "[[contact]]\nid = \"a\"\norganization = \"acme\"\nphones = [\"+15551234567\"]\npin_hash = \"{h}\"\n\
[[contact]]\nid = \"b\"\norganization = \"acme\"\nphones = [\"+15550000001\"]\n\
[[contact]]\nid = \"c\"\norganization = \"acme\"\nphones = [\"+15550000001\"]\n"
        );
        let d = ContactDirectory::parse(&text).unwrap();
        assert_eq!(d.len(), 3);
        assert!(
            matches!(d.lookup("acme", "+15551234567"), CrmReply::Found(c) if c.id == "a" && c.pin.is_some())
        );
        assert!(matches!(
            d.lookup("other", "+15551234567"),
            CrmReply::NotFound
        ));
        assert!(matches!(
            d.lookup("acme", "+15550000001"),
            CrmReply::Ambiguous
        ));
        assert!(ContactDirectory::parse(
            "[[contact]]\nid = \"x\"\norganization = \"a\"\nphones = [\"555\"]\n"
        )
        .is_err());
        let e = ContactDirectory::parse("[[contact]]\nid = \"x\"\norganization = \"a\"\nphones = [\"+15551234567\"]\npin_hash = \"1234\"\n").unwrap_err();
        assert!(e.contains("pin_hash"), "{e}");
        assert!(!e.contains("1234\""), "no secret echoed: {e}");
        let e = ContactDirectory::parse("[[contact]\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
    }

    #[test]
    fn set_pin_writes_a_hash_never_the_pin() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("contacts.toml");
        let pin = Pin::from_digits("987654").unwrap();
        let create = Some(("c1".to_string(), "Alice".to_string(), "acme".to_string()));
        assert_eq!(set_pin(&path, "+15551234567", &pin, create).unwrap(), "c1");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("987654"), "{text}");
        assert!(text.contains("$argon2id$"));
        let dir = ContactDirectory::load(&path).unwrap();
        let CrmReply::Found(c) = dir.lookup("acme", "+15551234567") else {
            panic!()
        };
        assert!(c.pin.unwrap().matches(&pin));
        // Change it: the old PIN no longer matches.
        let new = Pin::from_digits("1111").unwrap();
        set_pin(&path, "+15551234567", &new, None).unwrap();
        let dir = ContactDirectory::load(&path).unwrap();
        let CrmReply::Found(c) = dir.lookup("acme", "+15551234567") else {
            panic!()
        };
        let stored = c.pin.unwrap();
        assert!(stored.matches(&new));
        assert!(!stored.matches(&pin));
        assert!(set_pin(&path, "+15559999999", &new, None).is_err());
        assert!(set_pin(&path, "555", &new, None).is_err());
    }
}
