//! Who is calling: the bearer key on a request, checked against the master key.
//! (Virtual keys per team and end user build on this.)

use std::fmt;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Presented the master key.
    Master,
    /// No master key is configured (loopback-only development mode): everyone is let in.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send it as `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
}

/// Checks an `Authorization` header value against the master key.
pub fn authenticate(master: Option<&MasterKey>, authorization: Option<&str>) -> Result<Principal, AuthError> {
    let Some(master) = master else {
        return Ok(Principal::Open);
    };
    let token = bearer_token(authorization.ok_or(AuthError::Missing)?).ok_or(AuthError::Missing)?;
    if master.matches(token) { Ok(Principal::Master) } else { Err(AuthError::Invalid) }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(header: &str) -> Option<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_required_when_set() {
        let key = MasterKey("sk-master".into());
        assert_eq!(authenticate(Some(&key), Some("Bearer sk-master")), Ok(Principal::Master));
        assert_eq!(authenticate(Some(&key), Some("bearer  sk-master ")), Ok(Principal::Master));
        assert_eq!(authenticate(Some(&key), Some("Bearer sk-other")), Err(AuthError::Invalid));
        assert_eq!(authenticate(Some(&key), Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(authenticate(Some(&key), None), Err(AuthError::Missing));
        assert_eq!(authenticate(None, None), Ok(Principal::Open));
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", MasterKey("sk-secret".into())).contains("secret"));
    }
}
