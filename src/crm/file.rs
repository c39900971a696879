//! The embedded file-backed CRM: `sip-config/contacts.toml`, contacts with phone numbers (any
//! common format, read with their organization's country code by libphonenumber's rules;
//! what cannot be placed — an extension — is kept as written) and an argon2id hash of their
//! PIN (never the PIN); the writers behind `pincoderouting contacts set-pin` and
//! `contacts import --csv`.

use super::phone::{self, LookupNumber};
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

/// The country code of an organization (`None` when it is unknown: only numbers written
/// with their own country code, `+…`, are placed).
pub type CountryCodeOf<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Contacts by (organization, number key): the E.164 form, or the raw text for a number
/// that cannot be placed.
#[derive(Debug, Default)]
pub struct ContactDirectory {
    by_phone: HashMap<(String, String), Vec<Contact>>,
    count: usize,
}

/// The key a stored number is filed under, or why it is not a phone number at all.
fn phone_key(p: &str, country_code: &str) -> Result<String, String> {
    if let Some(placed) = phone::place(p, country_code) {
        return Ok(placed.e164);
    }
    let t = p.trim();
    let ok = !t.is_empty()
        && t.len() <= 32
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || " +-.()*#/".contains(c));
    if ok {
        Ok(t.to_string())
    } else {
        Err(format!("phone '{p}' is not a phone number or an extension"))
    }
}

fn parse_file(text: &str) -> Result<RawFile, String> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                text.get(..s.start.min(text.len()))
                    .unwrap_or("")
                    .matches('\n')
                    .count()
                    + 1
            })
            .unwrap_or(0);
        format!("line {line}: {}", e.message())
    })
}

impl ContactDirectory {
    /// Loads the contacts file; phones are read with their organization's country code.
    pub fn load(path: &Path, country_code_of: CountryCodeOf) -> Result<ContactDirectory, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("contacts file not found".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        Self::parse_with(&text, country_code_of)
    }

    /// Parses a contacts file whose numbers are written with their country code (`+…`) or
    /// are extensions.
    pub fn parse(text: &str) -> Result<ContactDirectory, String> {
        Self::parse_with(text, &|_| None)
    }

    pub fn parse_with(
        text: &str,
        country_code_of: CountryCodeOf,
    ) -> Result<ContactDirectory, String> {
        let raw = parse_file(text)?;
        let mut dir = ContactDirectory::default();
        for c in raw.contact {
            let cc = country_code_of(&c.organization).unwrap_or_default();
            let mut keys = Vec::new();
            for p in &c.phones {
                let key = phone_key(p, &cc).map_err(|e| format!("contact {}: {e}", c.id))?;
                if !keys.contains(&key) {
                    keys.push(key);
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
            for key in keys {
                dir.by_phone
                    .entry((c.organization.clone(), key))
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

    /// Looks a caller up in an organization: by E.164, or by the raw caller ID as received.
    pub fn lookup(&self, organization: &str, number: &LookupNumber) -> CrmReply {
        match self
            .by_phone
            .get(&(organization.to_string(), number.key().to_string()))
            .map(Vec::as_slice)
        {
            None | Some([]) => CrmReply::NotFound,
            Some([one]) => CrmReply::Found(one.clone()),
            Some(_) => CrmReply::Ambiguous,
        }
    }
}

const FILE_HEADER: &str =
    "# Contacts of the embedded file CRM. PINs are argon2id hashes; set one with\n\
#   pincoderouting contacts set-pin --phone +15551234567 (the PIN is read from standard input)\n\
# or import a CSV with `pincoderouting contacts import --csv FILE`.\n\n";

fn read_raw(path: &Path, may_be_missing: bool) -> Result<RawFile, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_be_missing => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_raw(path: &Path, raw: &RawFile) -> Result<(), String> {
    let out = format!(
        "{FILE_HEADER}{}",
        toml::to_string(raw).map_err(|e| e.to_string())?
    );
    // Written beside the file and renamed over it: a crash never leaves half a file.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, out).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Sets the PIN of the contact with this phone number (any common format, read with
/// `country_code`), creating the contact when `create` gives its id, name and organization,
/// and writes the argon2id hash back to the file. The file is rewritten from its parsed
/// form (comments are not kept).
pub fn set_pin(
    path: &Path,
    phone: &str,
    pin: &Pin,
    create: Option<(String, String, String)>,
    country_code: &str,
) -> Result<String, String> {
    let key = phone_key(phone, country_code)?;
    let mut raw = read_raw(path, create.is_some())?;
    let hash = hash_pin(pin)?;
    let id = match raw.contact.iter_mut().find(|c| {
        c.phones
            .iter()
            .any(|p| phone_key(p, country_code).is_ok_and(|k| k == key))
    }) {
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
                    phones: vec![key],
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
    write_raw(path, &raw)?;
    Ok(id)
}

/// What `import_csv` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
}

/// Imports contacts from CSV text with a header row naming the columns `id`, `name`,
/// `organization`, `phones` (several separated by `;`) and `pin` (any order, other columns
/// ignored; `organization` may be left out when `default_org` is given). Each PIN is stored
/// only as its argon2id hash; a contact with the same id is replaced. Nothing is written
/// unless every row is valid; an error names the row, never a PIN.
pub fn import_csv(
    path: &Path,
    csv_text: &str,
    default_org: Option<&str>,
    country_code_of: CountryCodeOf,
) -> Result<ImportReport, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(csv_text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("CSV header: {e}"))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
    };
    let (Some(id_col), Some(phones_col), Some(pin_col)) = (col("id"), col("phones"), col("pin"))
    else {
        return Err("CSV header: needs the columns id, phones and pin".into());
    };
    let (name_col, org_col) = (col("name"), col("organization"));
    if org_col.is_none() && default_org.is_none() {
        return Err("CSV header: no organization column (or give --org)".into());
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Row numbers as a spreadsheet shows them (the header is row 1).
        let row = i + 2;
        // Never echo the record: it holds a PIN.
        let record = record.map_err(|_| format!("CSV row {row}: unreadable"))?;
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("").to_string();
        let id = field(Some(id_col));
        if id.is_empty() {
            return Err(format!("CSV row {row}: empty id"));
        }
        let organization = match field(org_col) {
            o if !o.is_empty() => o,
            _ => default_org.unwrap_or_default().to_string(),
        };
        let Some(cc) = country_code_of(&organization) else {
            return Err(format!(
                "CSV row {row} ({id}): organization '{organization}' has no country code \
                 (not in the configuration: give --country-code)"
            ));
        };
        let mut phones = Vec::new();
        for p in field(Some(phones_col))
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let key = phone_key(p, &cc).map_err(|e| format!("CSV row {row} ({id}): {e}"))?;
            if !phones.contains(&key) {
                phones.push(key);
            }
        }
        if phones.is_empty() {
            return Err(format!("CSV row {row} ({id}): no phone"));
        }
        let pin = super::pin::sanitize(&field(Some(pin_col)))
            .map_err(|e| format!("CSV row {row} ({id}): PIN {e}"))?;
        let pin_hash = match pin {
            StoredPin::Plain(p) => hash_pin(&p)?,
            StoredPin::Argon2(h) => h,
        };
        rows.push(RawContact {
            id,
            name: field(name_col),
            organization,
            phones,
            pin_hash: Some(pin_hash),
        });
    }
    let mut raw = read_raw(path, true)?;
    let mut report = ImportReport::default();
    for c in rows {
        match raw.contact.iter_mut().find(|x| x.id == c.id) {
            Some(existing) => {
                *existing = c;
                report.updated += 1;
            }
            None => {
                raw.contact.push(c);
                report.added += 1;
            }
        }
    }
    // The result must load as the service will load it.
    let text = toml::to_string(&raw).map_err(|e| e.to_string())?;
    ContactDirectory::parse_with(&text, country_code_of)?;
    write_raw(path, &raw)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str, cc: &str) -> LookupNumber {
        phone::lookup_number(s, cc)
    }

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
            matches!(d.lookup("acme", &n("+15551234567", "1")), CrmReply::Found(c) if c.id == "a" && c.pin.is_some())
        );
        assert!(matches!(
            d.lookup("other", &n("+15551234567", "1")),
            CrmReply::NotFound
        ));
        assert!(matches!(
            d.lookup("acme", &n("+15550000001", "1")),
            CrmReply::Ambiguous
        ));
        assert!(ContactDirectory::parse(
            "[[contact]]\nid = \"x\"\norganization = \"a\"\nphones = [\"<script>\"]\n"
        )
        .is_err());
        let e = ContactDirectory::parse("[[contact]]\nid = \"x\"\norganization = \"a\"\nphones = [\"+15551234567\"]\npin_hash = \"1234\"\n").unwrap_err();
        assert!(e.contains("pin_hash"), "{e}");
        assert!(!e.contains("1234\""), "no secret echoed: {e}");
        let e = ContactDirectory::parse("[[contact]\n").unwrap_err();
        assert!(e.starts_with("line 1:"), "{e}");
    }

    #[test]
    fn numbers_in_any_format_with_the_organizations_country_code() {
        let text = "[[contact]]\nid = \"us\"\norganization = \"acme\"\nphones = [\"(555) 123-4567\", \"101\"]\n\
[[contact]]\nid = \"it\"\norganization = \"roma\"\nphones = [\"06 1234 5678\"]\n\
[[contact]]\nid = \"uk\"\norganization = \"acme\"\nphones = [\"+44 20 7946 0958\"]\n";
        let cc = |org: &str| match org {
            "acme" => Some("1".to_string()),
            "roma" => Some("39".to_string()),
            _ => None,
        };
        let d = ContactDirectory::parse_with(text, &cc).unwrap();
        let found = |org: &str, num: LookupNumber| match d.lookup(org, &num) {
            CrmReply::Found(c) => c.id,
            other => panic!("{org} {num:?}: {other:?}"),
        };
        assert_eq!(found("acme", n("555-123-4567", "1")), "us");
        assert_eq!(found("acme", n("+15551234567", "1")), "us");
        assert_eq!(
            found("acme", n("101", "1")),
            "us",
            "an extension, looked up raw"
        );
        assert_eq!(found("roma", n("0612345678", "39")), "it");
        assert_eq!(found("acme", n("011 44 20 7946 0958", "1")), "uk");
        assert!(matches!(
            d.lookup("acme", &n("102", "1")),
            CrmReply::NotFound
        ));
    }

    #[test]
    fn set_pin_writes_a_hash_never_the_pin() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("contacts.toml");
        let pin = Pin::from_digits("987654").unwrap();
        let create = Some(("c1".to_string(), "Alice".to_string(), "acme".to_string()));
        assert_eq!(
            set_pin(&path, "(555) 123-4567", &pin, create, "1").unwrap(),
            "c1"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("987654"), "{text}");
        assert!(text.contains("$argon2id$"));
        assert!(text.contains("+15551234567"), "stored as E.164: {text}");
        let cc = |_: &str| Some("1".to_string());
        let dir = ContactDirectory::load(&path, &cc).unwrap();
        let CrmReply::Found(c) = dir.lookup("acme", &n("+15551234567", "1")) else {
            panic!()
        };
        assert!(c.pin.unwrap().matches(&pin));
        // Change it (the number written another way): the old PIN no longer matches.
        let new = Pin::from_digits("1111").unwrap();
        set_pin(&path, "+1 555 123 4567", &new, None, "1").unwrap();
        let dir = ContactDirectory::load(&path, &cc).unwrap();
        let CrmReply::Found(c) = dir.lookup("acme", &n("5551234567", "1")) else {
            panic!()
        };
        let stored = c.pin.unwrap();
        assert!(stored.matches(&new));
        assert!(!stored.matches(&pin));
        assert!(set_pin(&path, "+15559999999", &new, None, "1").is_err());
        assert!(set_pin(&path, "<bad>", &new, None, "1").is_err());
    }

    #[test]
    fn csv_import_stores_hashes_and_names_bad_rows_without_pins() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("contacts.toml");
        let cc = |org: &str| {
            (org == "roma")
                .then(|| "39".to_string())
                .or(Some("1".into()))
        };
        let csv = "id,name,organization,phones,pin\n\
c1,Ann,acme,(555) 123-4567; 555.765.4321,1234\n\
c2,\"Rossi, Marco\",roma,06 1234 5678, 0042 \n";
        let r = import_csv(&path, csv, None, &cc).unwrap();
        assert_eq!(
            r,
            ImportReport {
                added: 2,
                updated: 0
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("1234\"") && !text.contains("0042"), "{text}");
        let dir = ContactDirectory::load(&path, &cc).unwrap();
        let CrmReply::Found(c) = dir.lookup("acme", &n("+15557654321", "1")) else {
            panic!()
        };
        assert_eq!(c.id, "c1");
        assert!(c.pin.unwrap().matches(&Pin::from_digits("1234").unwrap()));
        let CrmReply::Found(c) = dir.lookup("roma", &n("+390612345678", "39")) else {
            panic!()
        };
        assert!(c.pin.unwrap().matches(&Pin::from_digits("0042").unwrap()));
        // Again with a new PIN and no organization column: replaced, not duplicated.
        let r = import_csv(
            &path,
            "id,phones,pin\nc1,5551234567,9876\n",
            Some("acme"),
            &cc,
        )
        .unwrap();
        assert_eq!(
            r,
            ImportReport {
                added: 0,
                updated: 1
            }
        );
        // Bad rows: named by row and id, never by PIN; nothing written.
        let before = std::fs::read_to_string(&path).unwrap();
        for (csv, want) in [
            (
                "id,phones,pin\nc9,5551112222,12 34\n",
                "row 2 (c9): PIN field is not digits",
            ),
            (
                "id,phones,pin\nc9,5551112222,\n",
                "row 2 (c9): PIN field is empty",
            ),
            ("id,phones,pin\nc9,,1234\n", "row 2 (c9): no phone"),
            ("id,phones\nc9,5551112222\n", "needs the columns"),
            ("id,phones,pin\n,5551112222,5678\n", "row 2: empty id"),
        ] {
            let e = import_csv(&path, csv, Some("acme"), &cc).unwrap_err();
            assert!(e.contains(want), "{csv:?}: {e}");
            assert!(!e.contains("5678") && !e.contains("12 34"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }
}
