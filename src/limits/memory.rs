//! Counters in this process: exact for one instance, zero setup.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, ready};

use super::counters::{Check, CounterError, Counters, Release, Verdict, gcra};

#[derive(Default)]
pub struct MemoryCounters {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Rate buckets: theoretical arrival time in ms.
    rates: HashMap<String, f64>,
    concurrency: HashMap<String, u64>,
    budgets: HashMap<String, BudgetBucket>,
    decisions: u64,
}

#[derive(Default, Clone, Copy)]
struct BudgetBucket {
    spent: f64,
    reserved: f64,
    /// When the bucket's window is over (ms); then it is dropped.
    expires_ms: u64,
}

/// Entries are pruned every this many decisions, so a bot with a million end users does
/// not grow the map forever.
const PRUNE_EVERY: u64 = 4096;

impl State {
    fn prune(&mut self, now_ms: u64) {
        let now = now_ms as f64;
        // A rate bucket whose arrival time has passed is full: the same as no entry.
        self.rates.retain(|_, tat| *tat > now);
        self.concurrency.retain(|_, count| *count > 0);
        self.budgets.retain(|_, bucket| bucket.expires_ms > now_ms);
    }

    fn budget(&mut self, bucket: &str, ttl_secs: u64, now_ms: u64) -> &mut BudgetBucket {
        let entry = self.budgets.entry(bucket.to_owned()).or_default();
        entry.expires_ms = entry.expires_ms.max(now_ms + ttl_secs * 1000);
        entry
    }
}

impl MemoryCounters {
    fn decide(&self, checks: &[Check], now_ms: u64) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.decisions += 1;
        if state.decisions.is_multiple_of(PRUNE_EVERY) {
            state.prune(now_ms);
        }
        let now = now_ms as f64;
        let mut outcomes = Vec::with_capacity(checks.len());
        for (index, check) in checks.iter().enumerate() {
            let passed = match check {
                Check::Rate { key, per_minute, cost } => {
                    let tat = state.rates.get(key).copied().unwrap_or(0.0);
                    match gcra(tat, now, *per_minute, *cost) {
                        Ok(passed) => Some(passed),
                        Err(wait) => return Verdict::Refused { index, retry_after_ms: Some(wait) },
                    }
                }
                Check::Concurrency { key, max } => {
                    if state.concurrency.get(key).copied().unwrap_or(0) >= *max {
                        return Verdict::Refused { index, retry_after_ms: Some(1000) };
                    }
                    None
                }
                Check::Budget { buckets, limit, amount, .. } => {
                    let used: f64 = buckets
                        .iter()
                        .filter_map(|bucket| state.budgets.get(bucket))
                        .map(|b| b.spent + b.reserved)
                        .sum();
                    if used + amount > *limit {
                        return Verdict::Refused { index, retry_after_ms: None };
                    }
                    None
                }
            };
            outcomes.push(passed);
        }
        // Every check passed: count them all.
        let mut states = Vec::with_capacity(checks.len());
        for (check, outcome) in checks.iter().zip(outcomes) {
            match check {
                Check::Rate { key, .. } => {
                    if let Some((tat, rate)) = outcome {
                        state.rates.insert(key.clone(), tat);
                        states.push(Some(rate));
                        continue;
                    }
                }
                Check::Concurrency { key, .. } => *state.concurrency.entry(key.clone()).or_default() += 1,
                Check::Budget { buckets, amount, ttl_secs, .. } => {
                    if let Some(current) = buckets.first() {
                        state.budget(current, *ttl_secs, now_ms).reserved += amount;
                    }
                }
            }
            states.push(None);
        }
        Verdict::Admitted(states)
    }

    fn apply(&self, releases: &[Release], now_ms: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for release in releases {
            match release {
                Release::Concurrency { key } => {
                    if let Some(count) = state.concurrency.get_mut(key) {
                        *count = count.saturating_sub(1);
                    }
                }
                Release::Budget { bucket, reserved, actual, ttl_secs } => {
                    let bucket = state.budget(bucket, *ttl_secs, now_ms);
                    bucket.reserved = (bucket.reserved - reserved).max(0.0);
                    bucket.spent += actual;
                }
                Release::Rate { key, per_minute, delta } => {
                    let interval = super::counters::RATE_PERIOD_MS / (*per_minute).max(1) as f64;
                    if let Some(tat) = state.rates.get_mut(key) {
                        *tat = (*tat + *delta as f64 * interval).max(now_ms as f64 - super::counters::RATE_PERIOD_MS);
                    }
                }
            }
        }
    }
}

impl Counters for MemoryCounters {
    fn admit<'a>(&'a self, checks: &'a [Check], now_ms: u64) -> BoxFuture<'a, Result<Verdict, CounterError>> {
        ready(Ok(self.decide(checks, now_ms))).boxed()
    }

    fn release<'a>(&'a self, releases: &'a [Release], now_ms: u64) -> BoxFuture<'a, Result<(), CounterError>> {
        self.apply(releases, now_ms);
        ready(Ok(())).boxed()
    }

    fn missing<'a>(&'a self, buckets: &'a [String]) -> BoxFuture<'a, Result<Vec<String>, CounterError>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let missing = buckets.iter().filter(|b| !state.budgets.contains_key(*b)).cloned().collect();
        ready(Ok(missing)).boxed()
    }

    fn seed<'a>(&'a self, bucket: &'a str, spent: f64, ttl_secs: u64) -> BoxFuture<'a, Result<(), CounterError>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let expires_ms = jiff::Timestamp::now().as_millisecond().max(0) as u64 + ttl_secs * 1000;
        state.budgets.entry(bucket.to_owned()).or_insert(BudgetBucket { spent, reserved: 0.0, expires_ms });
        ready(Ok(())).boxed()
    }

    fn used<'a>(&'a self, buckets: &'a [String]) -> BoxFuture<'a, Result<f64, CounterError>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let used = buckets.iter().filter_map(|b| state.budgets.get(b)).map(|b| b.spent + b.reserved).sum();
        ready(Ok(used)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: f64, amount: f64) -> Check {
        Check::Budget { buckets: vec!["b".into()], limit, amount, ttl_secs: 60 }
    }

    #[test]
    fn checks_pass_or_fail_together() {
        let counters = MemoryCounters::default();
        let rate = Check::Rate { key: "r".into(), per_minute: 10, cost: 1 };
        // The budget check fails: the rate check before it must not be counted.
        let refused = counters.decide(&[rate.clone(), budget(1.0, 2.0)], 0);
        assert_eq!(refused, Verdict::Refused { index: 1, retry_after_ms: None });
        match counters.decide(&[rate], 0) {
            Verdict::Admitted(states) => {
                assert_eq!(states[0].unwrap().remaining, 9, "the refused request took nothing")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reservations_are_settled_with_real_cost() {
        let counters = MemoryCounters::default();
        assert!(matches!(counters.decide(&[budget(10.0, 6.0)], 0), Verdict::Admitted(_)));
        assert!(matches!(counters.decide(&[budget(10.0, 6.0)], 0), Verdict::Refused { .. }), "6 reserved + 6 > 10");
        counters.apply(&[Release::Budget { bucket: "b".into(), reserved: 6.0, actual: 1.0, ttl_secs: 60 }], 0);
        assert!(matches!(counters.decide(&[budget(10.0, 6.0)], 0), Verdict::Admitted(_)), "1 spent + 6 ≤ 10");
    }

    #[test]
    fn concurrency_slots_are_given_back() {
        let counters = MemoryCounters::default();
        let slot = Check::Concurrency { key: "c".into(), max: 1 };
        assert!(matches!(counters.decide(std::slice::from_ref(&slot), 0), Verdict::Admitted(_)));
        assert!(matches!(counters.decide(std::slice::from_ref(&slot), 0), Verdict::Refused { .. }));
        counters.apply(&[Release::Concurrency { key: "c".into() }], 0);
        assert!(matches!(counters.decide(&[slot], 0), Verdict::Admitted(_)));
    }
}
