//! The counters behind limits, as one small interface with two backends: in process
//! ([`super::memory`]) and Redis ([`super::redis`], shared by every instance). Every
//! check of a request is decided and applied atomically: all pass and are counted, or
//! none is.
//!
//! - rates use GCRA (a token bucket kept as one timestamp): a limit of N per minute
//!   allows bursts up to N and refills continuously;
//! - concurrency is a counter taken at admission and given back at settlement;
//! - budgets keep `spent` and `reserved` per window bucket: admission reserves the most a
//!   request can cost, settlement releases the reservation and adds what it really cost.

use futures_util::future::BoxFuture;

/// How long a rate bucket may take to refill completely: one minute.
pub const RATE_PERIOD_MS: f64 = 60_000.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Rate {
        key: String,
        per_minute: u64,
        cost: u64,
    },
    Concurrency {
        key: String,
        max: u64,
    },
    /// `buckets`: the window's bucket keys, current first; the reservation goes there.
    Budget {
        buckets: Vec<String>,
        limit: f64,
        amount: f64,
        ttl_secs: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Gives back a concurrency slot.
    Concurrency { key: String },
    /// Ends a reservation: `reserved` leaves the bucket, `actual` is added to its spend.
    Budget { bucket: String, reserved: f64, actual: f64, ttl_secs: u64 },
    /// Corrects a rate's cost once the real figure is known (negative gives tokens back).
    Rate { key: String, per_minute: u64, delta: i64 },
}

/// The state of a passed rate check, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateState {
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every check passed; one entry per check (rates carry their state).
    Admitted(Vec<Option<RateState>>),
    /// Check `index` failed; nothing was counted. `retry_after_ms` is `None` for a budget.
    Refused { index: usize, retry_after_ms: Option<u64> },
}

#[derive(Debug, thiserror::Error)]
#[error("rate-limit store unavailable: {0}")]
pub struct CounterError(pub String);

pub trait Counters: Send + Sync {
    fn admit<'a>(&'a self, checks: &'a [Check], now_ms: u64) -> BoxFuture<'a, Result<Verdict, CounterError>>;
    fn release<'a>(&'a self, releases: &'a [Release], now_ms: u64) -> BoxFuture<'a, Result<(), CounterError>>;
    /// Which of these budget buckets the counters do not hold yet (after a restart).
    fn missing<'a>(&'a self, buckets: &'a [String]) -> BoxFuture<'a, Result<Vec<String>, CounterError>>;
    /// Sets a bucket's spend unless some instance already did.
    fn seed<'a>(&'a self, bucket: &'a str, spent: f64, ttl_secs: u64) -> BoxFuture<'a, Result<(), CounterError>>;
    /// Spend plus reservations of the buckets, for `/v1/usage`.
    fn used<'a>(&'a self, buckets: &'a [String]) -> BoxFuture<'a, Result<f64, CounterError>>;
}

/// GCRA: where the bucket's theoretical arrival time moves for a request of `cost`, or
/// how long to wait. A cost above the limit is capped so a huge request can still pass
/// when the bucket is full.
pub fn gcra(tat_ms: f64, now_ms: f64, per_minute: u64, cost: u64) -> Result<(f64, RateState), u64> {
    let interval = RATE_PERIOD_MS / per_minute.max(1) as f64;
    let start = tat_ms.max(now_ms);
    let new_tat = start + cost.min(per_minute) as f64 * interval;
    let ahead = new_tat - now_ms;
    if ahead > RATE_PERIOD_MS {
        return Err((ahead - RATE_PERIOD_MS).ceil() as u64);
    }
    let remaining = ((RATE_PERIOD_MS - ahead) / interval).floor() as u64;
    Ok((new_tat, RateState { remaining, reset_ms: ahead.ceil() as u64 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_limit_per_minute_then_refills() {
        let mut tat = 0.0;
        for i in 0..10 {
            let (next, state) = gcra(tat, 1000.0, 10, 1).expect("within the limit");
            assert_eq!(state.remaining, 9 - i);
            tat = next;
        }
        let wait = gcra(tat, 1000.0, 10, 1).unwrap_err();
        assert_eq!(wait, 6000, "one request's worth refills in 6 s");
        assert!(gcra(tat, 7000.0, 10, 1).is_ok());
        // Costs above the limit are capped to the whole bucket.
        assert!(gcra(0.0, 1000.0, 10, 50).is_ok());
    }
}
