//! Who is calling: the master key (admin), a virtual key (see [`crate::keys`]), or
//! anyone in open mode; and a guard that slows down clients that keep failing to
//! authenticate.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::keys::AuthedKey;
use crate::limits::counters::gcra;

/// `SWITCHYARD_MASTER_KEY`: the admin credential; never logged or echoed.
#[derive(Clone)]
pub struct MasterKey(String);

impl MasterKey {
    /// The key from the environment; unset or blank means none.
    pub fn from_env() -> Option<Self> {
        std::env::var("SWITCHYARD_MASTER_KEY")
            .ok()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .map(MasterKey)
    }

    fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Presented the master key.
    Master,
    /// No master key is configured (loopback-only development mode) and no virtual key
    /// was presented: let in, unlimited.
    Open,
    /// A virtual key, with its limits and team.
    Key(Arc<AuthedKey>),
}

impl Principal {
    pub fn key(&self) -> Option<&AuthedKey> {
        match self {
            Principal::Key(key) => Some(key),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Master | Principal::Open)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send it as `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this API key has expired")]
    Expired,
    #[error("too many failed authentication attempts from this address; retry later")]
    TooManyFailures { retry_after_ms: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("keys cannot be checked right now: {0}")]
    Unavailable(String),
}

/// Checks a token against the master key; `None` when it is not the master key.
pub fn master(master: Option<&MasterKey>, token: &str) -> Option<Principal> {
    master.filter(|key| key.matches(token)).map(|_| Principal::Master)
}

/// The token of `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Failed authentications per client address, as a GCRA bucket each: a flood of bad
/// keys from one address is refused before any key lookup.
pub struct FailedAuthGuard {
    per_minute: u64,
    buckets: Mutex<HashMap<IpAddr, f64>>,
}

impl FailedAuthGuard {
    const MAX_ADDRESSES: usize = 100_000;

    pub fn new(per_minute: u64) -> Self {
        FailedAuthGuard { per_minute: per_minute.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` has failures left; `Err(wait)` when it is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let tat = buckets.get(&ip).copied().unwrap_or(0.0);
        gcra(tat, now_ms(), self.per_minute, 1).map(|_| ())
    }

    /// Counts one failure for `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = now_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= Self::MAX_ADDRESSES {
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets.get(&ip).copied().unwrap_or(0.0);
        if let Ok((next, _)) = gcra(tat, now, self.per_minute, 1) {
            buckets.insert(ip, next);
        }
    }
}

fn now_ms() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_matches_only_itself() {
        let key = MasterKey("sk-master".into());
        assert!(master(Some(&key), "sk-master").is_some());
        assert!(master(Some(&key), "sk-other").is_none());
        assert!(master(None, "sk-master").is_none());
        assert_eq!(bearer_token("bearer  sk-master "), Some("sk-master"));
        assert_eq!(bearer_token("Basic abc"), None);
    }

    #[test]
    fn failures_per_address_are_limited() {
        let guard = FailedAuthGuard::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(guard.check(ip).is_ok());
            guard.failed(ip);
        }
        assert!(guard.check(ip).is_err());
        assert!(guard.check("10.0.0.2".parse().unwrap()).is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", MasterKey("sk-secret".into())).contains("secret"));
    }
}
