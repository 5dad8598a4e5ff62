//! Virtual keys: created by an admin, shown once, stored as a SHA-256 hash. Lookups go
//! through a small cache with a short TTL, so a revocation reaches every instance
//! within [`KeyCache::TTL`] (and this one at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::limits::spec::KeyPolicy;
use crate::store::{KeyRecord, Store, StoreError, TeamRecord};

/// Every virtual key starts with this, so the gateway (and secret scanners) can tell
/// them from other keys.
pub const KEY_PREFIX: &str = "sk-sy-";

/// A key that authenticated, with its team.
#[derive(Debug)]
pub struct AuthedKey {
    pub record: KeyRecord,
    pub team: Option<TeamRecord>,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Valid(Arc<AuthedKey>),
    Unknown,
    Revoked,
    Expired,
}

pub struct KeyCache {
    store: Store,
    entries: Mutex<HashMap<String, (Lookup, Instant)>>,
}

/// Input for a new key.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default, flatten)]
    pub policy: KeyPolicy,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KeyCache {
    /// How long a lookup is trusted, positive or negative.
    pub const TTL: Duration = Duration::from_secs(2);
    const MAX_ENTRIES: usize = 100_000;

    pub fn new(store: Store) -> Self {
        KeyCache { store, entries: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The cached lookup, if fresh.
    pub fn cached(&self, secret: &str) -> Option<Lookup> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(&hash(secret)).filter(|(_, at)| at.elapsed() < Self::TTL).map(|(lookup, _)| lookup.clone())
    }

    pub async fn lookup(&self, secret: &str) -> Result<Lookup, StoreError> {
        if let Some(found) = self.cached(secret) {
            return Ok(found);
        }
        let hashed = hash(secret);
        let lookup = match self.store.key_by_hash(&hashed).await? {
            None => Lookup::Unknown,
            Some(record) if record.revoked_at.is_some() => Lookup::Revoked,
            Some(record) if record.expires_at.is_some_and(|at| at <= jiff::Timestamp::now().as_second()) => {
                Lookup::Expired
            }
            Some(record) => {
                let team = match &record.team {
                    Some(team) => self.store.team(team).await?,
                    None => None,
                };
                Lookup::Valid(Arc::new(AuthedKey { record, team }))
            }
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
        }
        entries.insert(hashed, (lookup.clone(), Instant::now()));
        Ok(lookup)
    }

    /// Forgets every cached lookup (after a revocation or rotation here).
    pub fn invalidate(&self) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Creates a key; returns the record and the secret, which is not kept anywhere.
    pub async fn create(&self, new: NewKey) -> Result<(KeyRecord, String), KeyError> {
        validate(&new)?;
        let secret = generate_secret()?;
        let record = KeyRecord {
            id: crate::protocol::random_id("key_"),
            name: new.name,
            team: new.team,
            hash: hash(&secret),
            prefix: display_prefix(&secret),
            policy: new.policy,
            metadata: new.metadata.unwrap_or_else(|| serde_json::json!({})),
            expires_at: new.expires_at,
            revoked_at: None,
            created_at: jiff::Timestamp::now().as_second(),
        };
        self.store.insert_key(&record).await?;
        Ok((record, secret))
    }

    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let revoked = self.store.revoke_key(id, jiff::Timestamp::now().as_second()).await?;
        self.invalidate();
        Ok(revoked)
    }

    /// A new secret for a live key; the old secret stops working.
    pub async fn rotate(&self, id: &str) -> Result<Option<String>, KeyError> {
        let secret = generate_secret()?;
        let rotated = self.store.rotate_key(id, &hash(&secret), &display_prefix(&secret)).await?;
        self.invalidate();
        Ok(rotated.then_some(secret))
    }
}

fn validate(new: &NewKey) -> Result<(), KeyError> {
    if new.name.trim().is_empty() {
        return Err(KeyError::Invalid("a key needs a `name`".into()));
    }
    for budget in new.policy.budgets.iter().chain(&new.policy.end_user_budgets) {
        budget.validate().map_err(KeyError::Invalid)?;
    }
    if new.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(KeyError::Invalid("`metadata` must be a JSON object".into()));
    }
    Ok(())
}

/// `sk-sy-` and 40 characters of [A-Za-z0-9] from the OS's secure generator (~238 bits).
fn generate_secret() -> Result<String, KeyError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut secret = String::from(KEY_PREFIX);
    let mut bytes = [0u8; 64];
    while secret.len() < KEY_PREFIX.len() + 40 {
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Invalid(format!("no secure randomness: {e}")))?;
        // Bytes above the largest multiple of 62 are skipped, so every character is equally likely.
        for byte in bytes.iter().filter(|b| usize::from(**b) < 248) {
            if secret.len() == KEY_PREFIX.len() + 40 {
                break;
            }
            secret.push(ALPHABET[usize::from(*byte) % ALPHABET.len()] as char);
        }
    }
    Ok(secret)
}

/// SHA-256 in hex. The secrets are long and random, so a fast hash is enough: there is
/// nothing to brute-force that a slow hash would protect.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(DIGITS[usize::from(byte >> 4)] as char);
        hex.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    hex
}

fn display_prefix(secret: &str) -> String {
    format!("{}…", secret.chars().take(KEY_PREFIX.len() + 4).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let (a, b) = (generate_secret().unwrap(), generate_secret().unwrap());
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 40);
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert!(!display_prefix(&a).contains(&a[10..]));
    }
}
