//! What the gateway knows about each deployment (`provider/model`) from its own recent
//! calls: a circuit breaker, an EWMA of latency, requests in flight, and an optional
//! concurrency gate with a bounded wait queue. Outlives policy reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::providers::catalog::ConcurrencyLimit;

/// When a deployment's breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this share of the last `window` calls failed (once `window` calls are seen).
    pub error_rate: f64,
    pub window: u32,
    /// How long an open breaker rejects traffic before one probe is let through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { consecutive_failures: 5, error_rate: 0.5, window: 20, cooldown: Duration::from_secs(30) }
    }
}

/// Every deployment seen so far, by `provider/model`.
#[derive(Default)]
pub struct Health {
    deployments: RwLock<HashMap<String, Arc<Deployment>>>,
}

impl Health {
    /// The deployment's state, created on first use.
    pub fn deployment(&self, name: &str, limit: Option<ConcurrencyLimit>) -> Arc<Deployment> {
        if let Some(found) = self.deployments.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            return found.clone();
        }
        let mut deployments = self.deployments.write().unwrap_or_else(PoisonError::into_inner);
        deployments.entry(name.to_owned()).or_insert_with(|| Arc::new(Deployment::new(limit))).clone()
    }

    /// Every deployment's name, circuit and calls in flight, for metrics.
    pub fn snapshot(&self) -> Vec<(String, CircuitState, u32)> {
        let deployments = self.deployments.read().unwrap_or_else(PoisonError::into_inner);
        deployments
            .iter()
            .map(|(name, deployment)| (name.clone(), deployment.circuit(), deployment.in_flight()))
            .collect()
    }
}

pub struct Deployment {
    breaker: Mutex<Breaker>,
    /// Exponentially weighted latency in microseconds; 0 until the first call.
    latency_ewma_us: AtomicU64,
    in_flight: AtomicU32,
    gate: Option<Gate>,
}

struct Gate {
    permits: Arc<Semaphore>,
    limit: ConcurrencyLimit,
    waiting: AtomicU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    /// The cool-down is over; the next call is a probe.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    /// The last calls' outcomes, newest in bit 0; 1 = failure.
    recent: u64,
    recent_len: u32,
    open_until: Option<Instant>,
    /// A half-open probe is under way; other calls stay away until it reports.
    probing: bool,
}

/// Why a deployment cannot take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    CircuitOpen,
    QueueFull,
    QueueTimeout,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailable::CircuitOpen => "circuit breaker open",
            Unavailable::QueueFull => "at max concurrency with a full wait queue",
            Unavailable::QueueTimeout => "no free slot within the queue timeout",
        })
    }
}

impl Deployment {
    fn new(limit: Option<ConcurrencyLimit>) -> Self {
        Deployment {
            breaker: Mutex::new(Breaker::default()),
            latency_ewma_us: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            gate: limit.map(|limit| Gate {
                permits: Arc::new(Semaphore::new(limit.max as usize)),
                limit,
                waiting: AtomicU32::new(0),
            }),
        }
    }

    pub fn circuit(&self) -> CircuitState {
        let breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        match breaker.open_until {
            None => CircuitState::Closed,
            Some(until) if Instant::now() < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    /// Whether planning should offer this deployment: not open, not saturated.
    pub fn availability(&self) -> Result<(), Unavailable> {
        if self.circuit() == CircuitState::Open {
            return Err(Unavailable::CircuitOpen);
        }
        if let Some(gate) = &self.gate
            && gate.permits.available_permits() == 0
            && gate.waiting.load(Ordering::Relaxed) >= gate.limit.queue
        {
            return Err(Unavailable::QueueFull);
        }
        Ok(())
    }

    /// Latency EWMA, or `None` before the first call.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_ewma_us.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Claims a slot for one call: checks the breaker (taking the half-open probe if due)
    /// and waits in the concurrency queue if there is one. The slot is held until the
    /// returned guard drops, i.e. until the response (or stream) is finished.
    pub async fn acquire(self: &Arc<Self>) -> Result<CallSlot, Unavailable> {
        let mut probe = false;
        {
            let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(until) = breaker.open_until {
                if Instant::now() < until || breaker.probing {
                    return Err(Unavailable::CircuitOpen);
                }
                breaker.probing = true;
                probe = true;
            }
        }
        let permit = match &self.gate {
            None => None,
            Some(gate) => match gate.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => match self.wait_in_queue(gate).await {
                    Ok(permit) => Some(permit),
                    Err(unavailable) => {
                        if probe {
                            self.end_probe();
                        }
                        return Err(unavailable);
                    }
                },
            },
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(CallSlot { deployment: self.clone(), probe, _permit: permit })
    }

    async fn wait_in_queue(&self, gate: &Gate) -> Result<OwnedSemaphorePermit, Unavailable> {
        if gate.waiting.fetch_add(1, Ordering::AcqRel) >= gate.limit.queue {
            gate.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Unavailable::QueueFull);
        }
        let waited = tokio::time::timeout(gate.limit.wait, gate.permits.clone().acquire_owned()).await;
        gate.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Unavailable::QueueTimeout),
        }
    }

    fn end_probe(&self) {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner).probing = false;
    }

    /// A call's outcome: feeds the breaker and, on success, the latency average.
    pub fn record(&self, succeeded: bool, latency: Duration, settings: &BreakerSettings) {
        if succeeded {
            let sample = latency.as_micros().clamp(1, u64::MAX as u128) as u64;
            let old = self.latency_ewma_us.load(Ordering::Relaxed);
            // Weight 0.2 for the newest call: reacts within a handful of calls, ignores one outlier.
            let new = if old == 0 { sample } else { (old * 4 + sample) / 5 };
            self.latency_ewma_us.store(new.max(1), Ordering::Relaxed);
        }
        let mut breaker = self.breaker.lock().unwrap_or_else(PoisonError::into_inner);
        breaker.record(succeeded, settings);
    }
}

impl Breaker {
    fn record(&mut self, succeeded: bool, settings: &BreakerSettings) {
        let window = settings.window.clamp(1, 64);
        self.recent = (self.recent << 1) | u64::from(!succeeded);
        self.recent_len = (self.recent_len + 1).min(window);
        let mask = if window == 64 { u64::MAX } else { (1u64 << window) - 1 };
        self.recent &= mask;
        let was_probe = std::mem::take(&mut self.probing);
        if succeeded {
            self.consecutive_failures = 0;
            if was_probe || self.open_until.is_some() {
                // A successful probe closes the breaker with a clean slate.
                *self = Breaker::default();
            }
            return;
        }
        self.consecutive_failures += 1;
        let failure_rate = f64::from(self.recent.count_ones()) / f64::from(self.recent_len);
        let too_many_in_a_row = self.consecutive_failures >= settings.consecutive_failures.max(1);
        let rate_exceeded = self.recent_len >= window && failure_rate >= settings.error_rate;
        if was_probe || too_many_in_a_row || rate_exceeded {
            self.open_until = Some(Instant::now() + settings.cooldown);
        }
    }
}

/// One claimed call slot: counts as in flight (and holds a concurrency permit) until dropped.
pub struct CallSlot {
    deployment: Arc<Deployment>,
    /// This call is the half-open probe: if it ends unrecorded (client gone), free the probe.
    probe: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl CallSlot {
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.deployment.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.probe {
            self.deployment.end_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings { consecutive_failures: 3, error_rate: 0.5, window: 4, cooldown: Duration::from_millis(50) }
    }

    #[tokio::test]
    async fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let deployment = Arc::new(Deployment::new(None));
        for _ in 0..2 {
            deployment.record(false, Duration::ZERO, &settings());
        }
        assert_eq!(deployment.circuit(), CircuitState::Closed);
        deployment.record(false, Duration::ZERO, &settings());
        assert_eq!(deployment.circuit(), CircuitState::Open);
        assert_eq!(deployment.availability(), Err(Unavailable::CircuitOpen));
        assert!(deployment.acquire().await.is_err());

        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(deployment.circuit(), CircuitState::HalfOpen);
        let probe = deployment.acquire().await.expect("the probe is let through");
        assert!(deployment.acquire().await.is_err(), "only one probe at a time");
        // The probe fails: open again.
        deployment.record(false, Duration::ZERO, &settings());
        drop(probe);
        assert_eq!(deployment.circuit(), CircuitState::Open);

        tokio::time::sleep(Duration::from_millis(60)).await;
        let _probe = deployment.acquire().await.expect("probe");
        deployment.record(true, Duration::from_millis(5), &settings());
        assert_eq!(deployment.circuit(), CircuitState::Closed);
        assert!(deployment.acquire().await.is_ok());
    }

    #[test]
    fn opens_on_error_rate_over_the_window() {
        let deployment = Deployment::new(None);
        let s = settings();
        for ok in [true, false, true, false] {
            deployment.record(ok, Duration::ZERO, &s);
        }
        assert_eq!(deployment.circuit(), CircuitState::Open, "2 of 4 failed = 50%");
    }

    #[test]
    fn latency_is_averaged() {
        let deployment = Deployment::new(None);
        assert_eq!(deployment.latency(), None);
        deployment.record(true, Duration::from_millis(100), &settings());
        deployment.record(true, Duration::from_millis(200), &settings());
        assert_eq!(deployment.latency(), Some(Duration::from_millis(120)));
    }

    #[tokio::test]
    async fn concurrency_gate_queues_then_refuses() {
        let limit = ConcurrencyLimit { max: 1, queue: 1, wait: Duration::from_millis(50) };
        let deployment = Arc::new(Deployment::new(Some(limit)));
        let first = deployment.acquire().await.expect("free slot");
        assert_eq!(deployment.in_flight(), 1);
        assert_eq!(deployment.availability(), Ok(()), "the queue still has room");
        // A waiter times out while the slot is held.
        assert_eq!(deployment.acquire().await.err(), Some(Unavailable::QueueTimeout));
        // A waiter gets the slot once it is released.
        let waiter = {
            let deployment = deployment.clone();
            tokio::spawn(async move { deployment.acquire().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(deployment.availability(), Err(Unavailable::QueueFull));
        assert_eq!(deployment.acquire().await.err(), Some(Unavailable::QueueFull));
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(deployment.in_flight(), 0);
    }
}
