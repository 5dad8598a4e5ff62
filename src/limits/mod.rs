//! Rate limits and budgets: who may send how much, counted exactly under concurrency
//! and, with Redis, across every instance.
//!
//! Admission builds the request's checks (per key, team and end user), seeds budget
//! windows from the usage table after a restart, and decides all checks at once;
//! budgets reserve the most the request can cost. Settlement (or an early end) gives
//! back what was not used. Without Redis the counters live in this process.

pub mod counters;
mod memory;
mod redis;
pub mod spec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::counters::{Check, CounterError, Counters, RateState, Release, Verdict};
use self::memory::MemoryCounters;
use self::redis::RedisCounters;
use self::spec::{Budget, BudgetUnit, Limits};
use crate::store::{KeyRecord, Store, TeamRecord, UsageFilter};

/// What to do when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    /// Count in this process meanwhile (limits become per instance); logged and counted.
    FailOpen,
    /// Refuse requests with 503 until Redis is back.
    FailClosed,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    pub redis_prefix: String,
    pub on_redis_failure: RedisFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("rate limit reached for {what}: {limit}; retry after {}", humanize_ms(*.retry_after_ms))]
    RateLimited { what: String, limit: String, retry_after_ms: u64, headers: Box<RateHeaders> },
    #[error(
        "you exceeded your budget: {scope} {budget} (used {used}); it resets at {resets_at}. Ask an admin to raise it"
    )]
    BudgetExhausted { scope: String, budget: String, used: String, resets_at: String },
    #[error("rate limits cannot be checked (Redis unavailable) and the gateway is configured to fail closed")]
    Unavailable,
    #[error("model `{model}` has no price in its provider catalog, so the key's USD budget cannot be enforced on it")]
    Unpriced { model: String },
}

/// Who a request is counted against.
pub struct Subject<'a> {
    pub key: &'a KeyRecord,
    pub team: Option<&'a TeamRecord>,
    pub end_user: Option<&'a str>,
}

/// The most a request can use: prompt estimate plus its maximum output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Demand {
    pub tokens: u64,
    pub usd: f64,
}

/// OpenAI's `x-ratelimit-*` values: the tightest request and token limits that apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub requests: Option<(u64, RateState)>,
    pub tokens: Option<(u64, RateState)>,
}

impl RateHeaders {
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        for (kind, entry) in [("requests", self.requests), ("tokens", self.tokens)] {
            if let Some((limit, state)) = entry {
                let (limit_name, remaining_name, reset_name) = match kind {
                    "requests" => {
                        ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
                    }
                    _ => ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
                };
                pairs.push((limit_name, limit.to_string()));
                pairs.push((remaining_name, state.remaining.to_string()));
                pairs.push((reset_name, humanize_ms(state.reset_ms)));
            }
        }
        pairs
    }
}

/// OpenAI's reset format: `250ms`, `6s`, `1m30s`.
pub fn humanize_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let seconds = ms.div_ceil(1000);
    if seconds < 60 { format!("{seconds}s") } else { format!("{}m{}s", seconds / 60, seconds % 60) }
}

/// A check's meaning, to explain a refusal and fill the headers.
#[derive(Clone)]
enum Purpose {
    Requests { scope: String, limit: u64 },
    Tokens { scope: String, limit: u64, key: String, reserved: u64 },
    Concurrency { scope: String, limit: u64, key: String },
    Budget { scope: String, budget: Budget, bucket: String, reserved: f64, ttl_secs: u64, resets_at: i64 },
}

pub struct Limiter {
    counters: Arc<dyn Counters>,
    /// Used when there is no Redis, and as the fail-open fallback when there is.
    local: Arc<MemoryCounters>,
    uses_redis: bool,
    on_redis_failure: RedisFailure,
    store: Store,
    /// Budget buckets known to be seeded, and when that was checked.
    seeded: Mutex<HashMap<String, Instant>>,
    /// Times Redis failed and the local counters were used instead.
    pub redis_failures: AtomicU64,
    /// Per key id, the share of its tightest budget spent, as last seen (for routing's
    /// budget-aware downgrade, which must not wait on Redis).
    spent_fractions: Mutex<HashMap<String, f64>>,
    fraction_refreshed: Mutex<HashMap<String, Instant>>,
}

impl crate::routing::BudgetView for Limiter {
    fn spent_fraction(&self, key_id: Option<&str>) -> Option<f64> {
        let fractions = self.spent_fractions.lock().unwrap_or_else(PoisonError::into_inner);
        fractions.get(key_id?).copied()
    }
}

/// How long a seeded budget bucket is trusted before asking the counters again.
const SEEDED_FOR: Duration = Duration::from_secs(60);

impl Limiter {
    pub fn new(config: &LimitsConfig, store: Store) -> Result<Limiter, CounterError> {
        let local = Arc::new(MemoryCounters::default());
        let (counters, uses_redis): (Arc<dyn Counters>, bool) = match &config.redis_url {
            Some(url) if !url.trim().is_empty() => {
                (Arc::new(RedisCounters::new(url, config.redis_timeout, &config.redis_prefix)?), true)
            }
            _ => (local.clone(), false),
        };
        Ok(Limiter {
            counters,
            local,
            uses_redis,
            on_redis_failure: config.on_redis_failure,
            store,
            seeded: Mutex::new(HashMap::new()),
            redis_failures: AtomicU64::new(0),
            spent_fractions: Mutex::new(HashMap::new()),
            fraction_refreshed: Mutex::new(HashMap::new()),
        })
    }

    pub fn uses_redis(&self) -> bool {
        self.uses_redis
    }

    /// Decides every limit and budget of `subject` for a request of `demand`.
    pub async fn admit(self: &Arc<Self>, subject: &Subject<'_>, demand: Demand) -> Result<Admission, LimitError> {
        let now = jiff::Timestamp::now();
        let mut purposes = Vec::new();
        let key = subject.key;
        let scopes = [
            Some((format!("key:{}", key.id), format!("key `{}`", key.name), &key.policy.limits, &key.policy.budgets)),
            subject.team.map(|team| {
                (format!("team:{}", team.id), format!("team `{}`", team.id), &team.policy.limits, &team.policy.budgets)
            }),
            subject.end_user.map(|user| {
                (
                    format!("user:{}:{user}", key.id),
                    format!("end user `{user}`"),
                    &key.policy.end_user_limits,
                    &key.policy.end_user_budgets,
                )
            }),
        ];
        for (id, scope, limits, budgets) in scopes.into_iter().flatten() {
            add_limits(&mut purposes, &id, &scope, limits, demand);
            for budget in budgets {
                let window = budget.window(now);
                let amount = match budget.unit {
                    BudgetUnit::Usd => demand.usd,
                    BudgetUnit::Tokens => demand.tokens as f64,
                };
                let unit = match budget.unit {
                    BudgetUnit::Usd => "usd",
                    BudgetUnit::Tokens => "tokens",
                };
                let ttl_secs = (window.resets_at - now.as_second()).max(60) as u64
                    + budget.window_hours.map_or(0, |h| u64::from(h) * 3600)
                    + 3600;
                let buckets: Vec<String> =
                    window.buckets.iter().map(|bucket| format!("budget:{id}:{unit}:{bucket}")).collect();
                self.seed(&id, budget, &buckets, &window.bucket_starts, &window, ttl_secs).await?;
                purposes.push((
                    Check::Budget { buckets: buckets.clone(), limit: budget.amount, amount, ttl_secs },
                    Purpose::Budget {
                        scope: scope.clone(),
                        budget: budget.clone(),
                        bucket: buckets[0].clone(),
                        reserved: amount,
                        ttl_secs,
                        resets_at: window.resets_at,
                    },
                ));
            }
        }
        let admission = self.decide(purposes, now).await?;
        if !key.policy.budgets.is_empty() && self.fraction_is_stale(&key.id) {
            // Refreshed after the answer, off the request path: the next request sees it.
            let (limiter, id, budgets) = (self.clone(), key.id.clone(), key.policy.budgets.clone());
            tokio::spawn(async move { limiter.refresh_spent_fraction(&id, &budgets).await });
        }
        Ok(admission)
    }

    /// Whether the key's spent fraction was last refreshed over a second ago (and marks
    /// it refreshed now): routing needs a recent figure, not one per request.
    fn fraction_is_stale(&self, key_id: &str) -> bool {
        let mut refreshed = self.fraction_refreshed.lock().unwrap_or_else(PoisonError::into_inner);
        if refreshed.len() > 100_000 {
            refreshed.clear();
        }
        match refreshed.get(key_id) {
            Some(at) if at.elapsed() < Duration::from_secs(1) => false,
            _ => {
                refreshed.insert(key_id.to_owned(), Instant::now());
                true
            }
        }
    }

    async fn refresh_spent_fraction(&self, key_id: &str, budgets: &[Budget]) {
        let used = self.budget_use(&format!("key:{key_id}"), budgets).await;
        let fraction = used
            .iter()
            .filter(|(budget, used, _)| budget.amount > 0.0 && used.is_finite())
            .map(|(budget, used, _)| used / budget.amount)
            .fold(0.0, f64::max);
        self.spent_fractions.lock().unwrap_or_else(PoisonError::into_inner).insert(key_id.to_owned(), fraction);
    }

    /// Runs the checks on Redis (or on the local counters when Redis fails and the
    /// gateway fails open) and turns the verdict into an admission or a refusal.
    async fn decide(
        self: &Arc<Self>,
        purposes: Vec<(Check, Purpose)>,
        now: jiff::Timestamp,
    ) -> Result<Admission, LimitError> {
        let (checks, purposes): (Vec<Check>, Vec<Purpose>) = purposes.into_iter().unzip();
        let (verdict, counters) = match self.counters.admit(&checks, now_ms(now)).await {
            Ok(verdict) => (verdict, self.counters.clone()),
            Err(error) => (self.fall_back(error, &checks, now).await?, self.local.clone() as Arc<dyn Counters>),
        };
        match verdict {
            Verdict::Admitted(states) => {
                let mut headers = RateHeaders::default();
                for (purpose, state) in purposes.iter().zip(&states) {
                    match (purpose, state) {
                        (Purpose::Requests { limit, .. }, Some(state)) => {
                            tighten(&mut headers.requests, *limit, *state)
                        }
                        (Purpose::Tokens { limit, .. }, Some(state)) => tighten(&mut headers.tokens, *limit, *state),
                        _ => {}
                    }
                }
                Ok(Admission { limiter: self.clone(), counters, purposes, headers, settled: false })
            }
            Verdict::Refused { index, retry_after_ms } => {
                Err(self.refusal(&purposes[index], retry_after_ms, now).await)
            }
        }
    }

    /// A deployment's own limits (the provider account's rpm/tpm for a model), taken just
    /// before calling it. `None` when it has none.
    pub async fn admit_deployment(
        self: &Arc<Self>,
        deployment: &str,
        limits: Limits,
        tokens: u64,
    ) -> Result<Option<Admission>, LimitError> {
        if limits.rpm.is_none() && limits.tpm.is_none() {
            return Ok(None);
        }
        let mut purposes = Vec::new();
        let (id, scope) = (format!("deployment:{deployment}"), format!("deployment {deployment}"));
        add_limits(&mut purposes, &id, &scope, &limits, Demand { tokens, usd: 0.0 });
        self.decide(purposes, jiff::Timestamp::now()).await.map(Some)
    }

    async fn fall_back(
        &self,
        error: CounterError,
        checks: &[Check],
        now: jiff::Timestamp,
    ) -> Result<Verdict, LimitError> {
        if !self.uses_redis || self.on_redis_failure == RedisFailure::FailClosed {
            tracing::error!("{error}; refusing requests (fail closed)");
            return Err(LimitError::Unavailable);
        }
        let failures = self.redis_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures.is_power_of_two() {
            tracing::warn!(failures, "{error}; counting in this process meanwhile (fail open)");
        }
        self.local.admit(checks, now_ms(now)).await.map_err(|_| LimitError::Unavailable)
    }

    /// After a restart (or when Redis lost a bucket) a budget window's spend is read back
    /// from the usage table before anything is counted against it.
    async fn seed(
        &self,
        scope_id: &str,
        budget: &Budget,
        buckets: &[String],
        starts: &[i64],
        window: &spec::Window,
        ttl_secs: u64,
    ) -> Result<(), LimitError> {
        let fresh = {
            let seeded = self.seeded.lock().unwrap_or_else(PoisonError::into_inner);
            buckets.iter().all(|b| seeded.get(b).is_some_and(|at| at.elapsed() < SEEDED_FOR))
        };
        if fresh {
            return Ok(());
        }
        let missing = match self.counters.missing(buckets).await {
            Ok(missing) => missing,
            // Redis is down: admission will fall back (or refuse); nothing to seed now.
            Err(_) => return Ok(()),
        };
        for (bucket, start) in buckets.iter().zip(starts) {
            if !missing.contains(bucket) {
                continue;
            }
            let end = if budget.period == spec::Period::Rolling { start + 3600 } else { window.resets_at };
            let mut filter = UsageFilter { since: Some(*start), until: Some(end), ..UsageFilter::default() };
            match scope_id.split(':').collect::<Vec<_>>().as_slice() {
                ["key", id] => filter.key_id = Some((*id).to_owned()),
                ["team", id] => filter.team = Some((*id).to_owned()),
                ["user", key, user] => {
                    filter.key_id = Some((*key).to_owned());
                    filter.end_user = Some((*user).to_owned());
                }
                _ => {}
            }
            let total = match self.store.usage(&filter, None).await {
                Ok(totals) => totals.into_iter().next().unwrap_or_default(),
                Err(error) => {
                    tracing::error!("cannot read past usage to restore a budget: {error}");
                    return Err(LimitError::Unavailable);
                }
            };
            let spent = match budget.unit {
                BudgetUnit::Usd => total.cost_usd,
                BudgetUnit::Tokens => (total.input_tokens + total.output_tokens) as f64,
            };
            let _ = self.counters.seed(bucket, spent, ttl_secs).await;
            let _ = self.local.seed(bucket, spent, ttl_secs).await;
        }
        let mut seeded = self.seeded.lock().unwrap_or_else(PoisonError::into_inner);
        for bucket in buckets {
            seeded.insert(bucket.clone(), Instant::now());
        }
        Ok(())
    }

    async fn refusal(&self, purpose: &Purpose, retry_after_ms: Option<u64>, now: jiff::Timestamp) -> LimitError {
        let retry_after_ms = retry_after_ms.unwrap_or(1000);
        match purpose {
            Purpose::Requests { scope, limit } => LimitError::RateLimited {
                what: scope.clone(),
                limit: format!("{limit} requests per minute"),
                retry_after_ms,
                headers: Box::new(RateHeaders {
                    requests: Some((*limit, RateState { remaining: 0, reset_ms: retry_after_ms })),
                    tokens: None,
                }),
            },
            Purpose::Tokens { scope, limit, .. } => LimitError::RateLimited {
                what: scope.clone(),
                limit: format!("{limit} tokens per minute"),
                retry_after_ms,
                headers: Box::new(RateHeaders {
                    requests: None,
                    tokens: Some((*limit, RateState { remaining: 0, reset_ms: retry_after_ms })),
                }),
            },
            Purpose::Concurrency { scope, limit, .. } => LimitError::RateLimited {
                what: scope.clone(),
                limit: format!("{limit} requests at once"),
                retry_after_ms,
                headers: Box::default(),
            },
            Purpose::Budget { scope, budget, bucket, resets_at, .. } => {
                let used = self.counters.used(std::slice::from_ref(bucket)).await.unwrap_or(f64::NAN);
                let zone = budget.timezone.as_deref().and_then(|z| jiff::tz::TimeZone::get(z).ok());
                let resets = jiff::Timestamp::from_second(*resets_at).unwrap_or(now);
                LimitError::BudgetExhausted {
                    scope: scope.clone(),
                    budget: budget.describe(),
                    used: match budget.unit {
                        BudgetUnit::Usd => format!("{used:.4} USD incl. requests in flight"),
                        BudgetUnit::Tokens => format!("{used:.0} tokens incl. requests in flight"),
                    },
                    resets_at: resets.to_zoned(zone.unwrap_or(jiff::tz::TimeZone::UTC)).to_string(),
                }
            }
        }
    }

    /// Spend plus reservations in the current window of each of the key's budgets.
    pub async fn budget_use(&self, scope_id: &str, budgets: &[Budget]) -> Vec<(Budget, f64, i64)> {
        let now = jiff::Timestamp::now();
        let mut out = Vec::new();
        for budget in budgets {
            let window = budget.window(now);
            let unit = match budget.unit {
                BudgetUnit::Usd => "usd",
                BudgetUnit::Tokens => "tokens",
            };
            let buckets: Vec<String> = window.buckets.iter().map(|b| format!("budget:{scope_id}:{unit}:{b}")).collect();
            let _ = self.seed(scope_id, budget, &buckets, &window.bucket_starts, &window, 3600).await;
            let used = self.counters.used(&buckets).await.unwrap_or(f64::NAN);
            out.push((budget.clone(), used, window.resets_at));
        }
        out
    }
}

fn add_limits(purposes: &mut Vec<(Check, Purpose)>, id: &str, scope: &str, limits: &Limits, demand: Demand) {
    if let Some(rpm) = limits.rpm {
        purposes.push((
            Check::Rate { key: format!("rpm:{id}"), per_minute: rpm, cost: 1 },
            Purpose::Requests { scope: scope.to_owned(), limit: rpm },
        ));
    }
    if let Some(tpm) = limits.tpm {
        let key = format!("tpm:{id}");
        purposes.push((
            Check::Rate { key: key.clone(), per_minute: tpm, cost: demand.tokens },
            Purpose::Tokens { scope: scope.to_owned(), limit: tpm, key, reserved: demand.tokens },
        ));
    }
    if let Some(max) = limits.concurrent {
        let key = format!("conc:{id}");
        purposes.push((
            Check::Concurrency { key: key.clone(), max },
            Purpose::Concurrency { scope: scope.to_owned(), limit: max, key },
        ));
    }
}

fn tighten(slot: &mut Option<(u64, RateState)>, limit: u64, state: RateState) {
    if slot.is_none_or(|(_, current)| state.remaining < current.remaining) {
        *slot = Some((limit, state));
    }
}

fn now_ms(now: jiff::Timestamp) -> u64 {
    now.as_millisecond().max(0) as u64
}

/// An admitted request's hold on its limits: settled with real usage, or released as
/// unused if the request ends early (dropped).
pub struct Admission {
    limiter: Arc<Limiter>,
    counters: Arc<dyn Counters>,
    purposes: Vec<Purpose>,
    pub headers: RateHeaders,
    settled: bool,
}

impl Admission {
    /// Real usage: gives back what was reserved but not used, adds what was.
    pub fn settle(mut self, tokens: u64, usd: f64) {
        self.settled = true;
        self.release(Some((tokens, usd)));
    }

    /// Usage unknown (a cut stream, a departed client): the whole reservation counts as
    /// spent, so a budget is never overspent on a guess.
    pub fn keep_reservation(mut self) {
        self.settled = true;
        self.release(None);
    }

    /// `used`: real tokens and USD; `None`: the reservation itself.
    fn release(&self, used: Option<(u64, f64)>) {
        let releases: Vec<Release> = self
            .purposes
            .iter()
            .filter_map(|purpose| match purpose {
                Purpose::Requests { .. } => None,
                Purpose::Tokens { limit, key, reserved, .. } => used.map(|(tokens, _)| Release::Rate {
                    key: key.clone(),
                    per_minute: *limit,
                    delta: tokens as i64 - (*reserved).min(*limit) as i64,
                }),
                Purpose::Concurrency { key, .. } => Some(Release::Concurrency { key: key.clone() }),
                Purpose::Budget { budget, bucket, reserved, ttl_secs, .. } => Some(Release::Budget {
                    bucket: bucket.clone(),
                    reserved: *reserved,
                    actual: match (used, budget.unit) {
                        (None, _) => *reserved,
                        (Some((_, usd)), BudgetUnit::Usd) => usd,
                        (Some((tokens, _)), BudgetUnit::Tokens) => tokens as f64,
                    },
                    ttl_secs: *ttl_secs,
                }),
            })
            .collect();
        if releases.is_empty() {
            return;
        }
        let counters = self.counters.clone();
        let limiter = self.limiter.clone();
        let now = now_ms(jiff::Timestamp::now());
        let task = async move {
            if let Err(error) = counters.release(&releases, now).await {
                tracing::warn!("releasing limits failed: {error}");
                let _ = limiter.local.release(&releases, now).await;
            }
        };
        // In-process counters finish at once; only Redis needs a task of its own.
        let mut task = Box::pin(task);
        if futures_util::FutureExt::now_or_never(&mut task).is_none() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(task);
                }
                Err(_) => tracing::warn!("limits not released: no runtime"),
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.settled {
            // Ended before any upstream answered: nothing was used.
            self.release(Some((0, 0.0)));
        }
    }
}
