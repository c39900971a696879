//! Where a CRM's JSON keeps what we need: RFC 6901 JSON pointers (`/results/0/pin`) or
//! RFC 9535 JSONPath (`$.customFields[?@.caption == 'Security PIN'].value`, through
//! `serde_json_path`), checked when the configuration loads. A selector that must give one
//! value and gives several is an error that says so, never a guess.

use serde_json::Value;
use serde_json_path::JsonPath;

/// A JSON pointer or a JSONPath.
#[derive(Debug, Clone)]
pub enum Selector {
    /// `""` (the whole document) or `/a/b`.
    Pointer(String),
    /// `$…`
    Path { text: String, path: JsonPath },
}

/// A selector that does not give exactly what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// It gives several values where one is needed.
    #[error("{selector} selects {count} values, expected one")]
    Several { selector: String, count: usize },
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Pointer(p) if p.is_empty() => f.write_str("(the whole reply)"),
            Selector::Pointer(p) => f.write_str(p),
            Selector::Path { text, .. } => f.write_str(text),
        }
    }
}

impl Selector {
    /// Parses `""`, `/pointer` or `$.json.path`; the error says which and why.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let t = text.trim();
        if t.is_empty() || t.starts_with('/') {
            return Ok(Selector::Pointer(t.to_string()));
        }
        if t.starts_with('$') {
            return JsonPath::parse(t)
                .map(|path| Selector::Path {
                    text: t.to_string(),
                    path,
                })
                .map_err(|e| format!("'{t}' is not a valid JSONPath (RFC 9535): {e}"));
        }
        Err(format!(
            "'{t}' is neither a JSON pointer (/a/b) nor a JSONPath ($.a.b)"
        ))
    }

    /// Every value it selects (a pointer selects at most one).
    pub fn all<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        match self {
            Selector::Pointer(p) => v.pointer(p).into_iter().collect(),
            Selector::Path { path, .. } => path.query(v).all(),
        }
    }

    /// The one value it selects, `None` when it selects nothing (or `null`), an error when
    /// it selects several.
    pub fn one<'a>(&self, v: &'a Value) -> Result<Option<&'a Value>, SelectError> {
        match self.all(v).as_slice() {
            [] | [Value::Null] => Ok(None),
            [one] => Ok(Some(one)),
            many => Err(SelectError::Several {
                selector: self.to_string(),
                count: many.len(),
            }),
        }
    }

    /// The records it selects: the elements of an array it selects, else each object.
    pub fn records<'a>(&self, v: &'a Value) -> Option<Vec<&'a Value>> {
        let found = self.all(v);
        match found.as_slice() {
            [] | [Value::Null] => None,
            [Value::Array(a)] => Some(a.iter().collect()),
            _ => Some(found),
        }
    }
}

/// Quotes a text for a JSONPath string literal (`'Security PIN'`): the field names of
/// presets are put into their paths with this.
pub fn quote(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A scalar as text: a string as it is, a number in decimal.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_and_paths_select_custom_fields() {
        let contact = json!({
            "id": 7,
            "customFields": [
                {"caption": "Customer Since", "value": "2019"},
                {"caption": "Security PIN", "value": "1234"},
                {"caption": "Dup", "value": "a"},
                {"caption": "Dup", "value": "b"},
            ],
            "properties": {"security pin": "9"},
        });
        let pin = Selector::parse("$.customFields[?@.caption == 'Security PIN'].value").unwrap();
        assert_eq!(pin.one(&contact).unwrap(), Some(&json!("1234")));
        let missing = Selector::parse("$.customFields[?@.caption == 'PIN'].value").unwrap();
        assert_eq!(missing.one(&contact).unwrap(), None);
        let dup = Selector::parse("$.customFields[?@.caption == 'Dup'].value").unwrap();
        let e = dup.one(&contact).unwrap_err().to_string();
        assert_eq!(
            e,
            "$.customFields[?@.caption == 'Dup'].value selects 2 values, expected one"
        );
        let p = Selector::parse(&format!("$.properties[{}]", quote("security pin"))).unwrap();
        assert_eq!(p.one(&contact).unwrap(), Some(&json!("9")));
        assert_eq!(
            Selector::parse("/id").unwrap().one(&contact).unwrap(),
            Some(&json!(7))
        );
        assert_eq!(text(&json!(7)).as_deref(), Some("7"));
        assert_eq!(quote("it's \\"), "'it\\'s \\\\'");
        assert!(Selector::parse("$.a[")
            .unwrap_err()
            .contains("not a valid JSONPath"));
        assert!(Selector::parse("a.b").unwrap_err().contains("neither"));
    }

    #[test]
    fn records_from_arrays_objects_or_several_nodes() {
        let v = json!({"items": [{"id": 1}, {"id": 2}], "one": {"id": 3}, "none": null});
        let n = |s: &str| Selector::parse(s).unwrap().records(&v).map(|r| r.len());
        assert_eq!(n("/items"), Some(2));
        assert_eq!(n("$.items[*]"), Some(2));
        assert_eq!(n("$.items[?@.id == 2]"), Some(1));
        assert_eq!(n("/one"), Some(1));
        assert_eq!(n("/none"), None);
        assert_eq!(n("/missing"), None);
        assert_eq!(n(""), Some(1));
    }
}
