//! Ordering a route's candidates: the first is tried first, the rest are fallbacks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// As listed: a fallback chain.
    Ordered,
    /// One target picked by weight (sticky per end user), the rest as listed.
    Weighted,
    /// Lowest expected cost first.
    Cheapest,
    /// Lowest recent latency first; never-measured targets first, so each gets measured.
    Fastest,
    /// Fewest requests in flight first.
    LeastBusy,
}

/// A target that passed every filter, with what the strategies sort by.
#[derive(Clone)]
pub struct Candidate {
    pub target: Target,
    pub weight: u32,
    /// USD for this request's estimated tokens; `None` for a model without catalog prices.
    pub expected_cost: Option<f64>,
    pub latency: Option<Duration>,
    pub in_flight: u32,
}

/// Orders `candidates` in place. `sticky` (the end user or key) keeps a caller on the
/// same weighted pick; without it the pick is random per request.
pub fn order(strategy: Strategy, candidates: &mut [Candidate], sticky: Option<&str>) {
    // Sorts are stable: ties keep the listed order.
    match strategy {
        Strategy::Ordered => {}
        Strategy::Cheapest => candidates.sort_by(|a, b| match (a.expected_cost, b.expected_cost) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }),
        Strategy::Fastest => candidates.sort_by_key(|c| c.latency.unwrap_or(Duration::ZERO)),
        Strategy::LeastBusy => candidates.sort_by_key(|c| c.in_flight),
        Strategy::Weighted => {
            let total: u64 = candidates.iter().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return;
            }
            let mut point = match sticky {
                Some(key) => fnv1a(key.as_bytes()) % total,
                None => fastrand::u64(..total),
            };
            let pick = candidates
                .iter()
                .position(|c| {
                    let weight = u64::from(c.weight);
                    if point < weight {
                        return true;
                    }
                    point -= weight;
                    false
                })
                .unwrap_or(0);
            candidates[..=pick].rotate_right(1);
        }
    }
}

/// A hash that is the same in every process and version, so stickiness survives restarts
/// and holds across instances.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}
