//! What an admin sets on a key or team: rate limits and budgets, and how a budget's
//! window is computed (calendar periods in a time zone, or a rolling window).

use crate::audit::ContentCapture;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, civil};
use serde::{Deserialize, Serialize};

/// Per-minute rates and a concurrency cap; unset means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute (prompt + completion; estimated at admission, corrected after).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetUnit {
    Usd,
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
    /// The last `window_hours`, in hourly steps.
    Rolling,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub amount: f64,
    pub unit: BudgetUnit,
    pub period: Period,
    /// IANA zone for calendar periods; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// For `rolling`: the window's length in hours (1–744).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<u32>,
}

/// A key's allowances and limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// Models and aliases this key may use (globs); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Gateway tools this key may call (globs); empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// Applied to each end user of the key separately (a bot's users).
    #[serde(default)]
    pub end_user_limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end_user_budgets: Vec<Budget>,
    /// Prompt and response content in this key's audit records; unset: the team's, then
    /// the gateway's `[audit] content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_content: Option<ContentCapture>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamPolicy {
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// Prompt and response content in the team's audit records (a key's own setting wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_content: Option<ContentCapture>,
}

/// The stretch of time a budget is counted over, as hourly or calendar buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bucket ids whose spend adds up to the window's; the first is the current one.
    pub buckets: Vec<String>,
    /// Unix seconds where each bucket starts, same order.
    pub bucket_starts: Vec<i64>,
    /// Unix seconds the current bucket ends (for a rolling window: the oldest hour drops out).
    pub resets_at: i64,
}

impl Budget {
    pub fn validate(&self) -> Result<(), String> {
        if !self.amount.is_finite() || self.amount < 0.0 {
            return Err("a budget `amount` is a number ≥ 0".into());
        }
        match (self.period, self.window_hours) {
            (Period::Rolling, Some(1..=744)) => {}
            (Period::Rolling, _) => return Err("a rolling budget needs `window_hours` between 1 and 744".into()),
            (_, Some(_)) => return Err("`window_hours` goes with period \"rolling\" only".into()),
            _ => {}
        }
        self.zone().map(|_| ())
    }

    fn zone(&self) -> Result<TimeZone, String> {
        match &self.timezone {
            None => Ok(TimeZone::UTC),
            Some(name) => TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}")),
        }
    }

    /// A short description for messages: `monthly 10 USD`.
    pub fn describe(&self) -> String {
        let amount = match self.unit {
            BudgetUnit::Usd => format!("{} USD", self.amount),
            BudgetUnit::Tokens => format!("{} tokens", self.amount),
        };
        match self.period {
            Period::Day => format!("daily {amount}"),
            Period::Week => format!("weekly {amount}"),
            Period::Month => format!("monthly {amount}"),
            Period::Rolling => format!("{amount} per rolling {} h", self.window_hours.unwrap_or(0)),
        }
    }

    pub fn window(&self, now: Timestamp) -> Window {
        let zone = self.zone().unwrap_or(TimeZone::UTC);
        if self.period == Period::Rolling {
            let hour = now.as_second().div_euclid(3600);
            let hours = i64::from(self.window_hours.unwrap_or(1).max(1));
            let ids = (0..hours).map(|back| hour - back);
            return Window {
                buckets: ids.clone().map(|h| format!("h{h}")).collect(),
                bucket_starts: ids.map(|h| h * 3600).collect(),
                resets_at: (hour + 1) * 3600,
            };
        }
        let today = now.to_zoned(zone.clone()).date();
        let (start, end) = match self.period {
            Period::Day => (today, today.tomorrow().unwrap_or(today)),
            Period::Week => {
                let monday =
                    today.checked_sub(i64::from(today.weekday().to_monday_zero_offset()).days()).unwrap_or(today);
                (monday, monday.checked_add(7.days()).unwrap_or(monday))
            }
            _ => {
                let first = today.first_of_month();
                (first, first.checked_add(1.month()).unwrap_or(first))
            }
        };
        let at = |date: civil::Date| date.to_zoned(zone.clone()).map(|z| z.timestamp().as_second()).unwrap_or(0);
        Window {
            buckets: vec![format!("{}{}", period_letter(self.period), start.strftime("%Y%m%d"))],
            bucket_starts: vec![at(start)],
            resets_at: at(end),
        }
    }
}

fn period_letter(period: Period) -> &'static str {
    match period {
        Period::Day => "d",
        Period::Week => "w",
        Period::Month => "m",
        Period::Rolling => "h",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(period: Period, zone: Option<&str>, hours: Option<u32>) -> Budget {
        Budget { amount: 1.0, unit: BudgetUnit::Usd, period, timezone: zone.map(Into::into), window_hours: hours }
    }

    #[test]
    fn calendar_windows_follow_the_time_zone() {
        // 2026-11-30 23:30 UTC is already December 1st in Kyiv (UTC+2).
        let now: Timestamp = "2026-11-30T23:30:00Z".parse().unwrap();
        let kyiv = budget(Period::Month, Some("Europe/Kyiv"), None).window(now);
        assert_eq!(kyiv.buckets, ["m20261201"]);
        assert_eq!(kyiv.resets_at, "2026-12-31T22:00:00Z".parse::<Timestamp>().unwrap().as_second());
        let utc = budget(Period::Month, None, None).window(now);
        assert_eq!(utc.buckets, ["m20261101"]);
        // 2026-11-30 is a Monday.
        let week = budget(Period::Week, None, None).window(now);
        assert_eq!(week.buckets, ["w20261130"]);
        let day = budget(Period::Day, None, None).window(now);
        assert_eq!(day.resets_at, "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap().as_second());
    }

    #[test]
    fn rolling_windows_are_hourly_buckets() {
        let now: Timestamp = "2026-11-22T10:15:00Z".parse().unwrap();
        let window = budget(Period::Rolling, None, Some(3)).window(now);
        assert_eq!(window.buckets.len(), 3);
        assert_eq!(window.bucket_starts[0], "2026-11-22T10:00:00Z".parse::<Timestamp>().unwrap().as_second());
        assert_eq!(window.bucket_starts[2], "2026-11-22T08:00:00Z".parse::<Timestamp>().unwrap().as_second());
        assert!(budget(Period::Rolling, None, None).validate().is_err());
        assert!(budget(Period::Day, Some("Nowhere/City"), None).validate().is_err());
    }
}
