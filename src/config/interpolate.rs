//! `${VAR}` and `${VAR:-default}` in TOML string values.
//!
//! Interpolation happens while a string value is deserialised, so an unset variable is
//! reported by the TOML parser at the exact line and column of the value.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer};

/// Expands `${VAR}` and `${VAR:-default}` using `lookup`; `$$` is a literal `$`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = body.find('}').ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
        let (name, default) = match body[..end].split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (&body[..end], None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{}}}` is not a valid variable reference", &body[..end]));
        }
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A TOML string with environment references expanded from the process environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvString(String);

impl EnvString {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl Deref for EnvString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        expand(&raw, |name| std::env::var(name).ok()).map(EnvString).map_err(serde::de::Error::custom)
    }
}

impl From<String> for EnvString {
    /// Wraps an already-expanded string (defaults written in code).
    fn from(value: String) -> Self {
        EnvString(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.org".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_unset_and_defaulted_variables() {
        assert_eq!(expand("https://${HOST}/v1", env).unwrap(), "https://example.org/v1");
        assert_eq!(expand("${MISSING:-http://127.0.0.1:11434}", env).unwrap(), "http://127.0.0.1:11434");
        assert_eq!(expand("${HOST:-other}", env).unwrap(), "example.org");
        assert_eq!(expand("${EMPTY:-fallback}", env).unwrap(), "fallback");
        assert_eq!(expand("no refs, $5 and $$HOME", env).unwrap(), "no refs, $5 and $HOME");
    }

    #[test]
    fn rejects_unset_and_malformed_references() {
        assert!(expand("${MISSING}", env).unwrap_err().contains("MISSING is not set"));
        assert!(expand("${HOST", env).unwrap_err().contains("unclosed"));
        assert!(expand("${A B}", env).unwrap_err().contains("not a valid"));
    }
}
