//! What to do after a failed attempt: try the same target again, move on to the next
//! one, or give the error to the client; and how long to wait before trying again.

use std::time::Duration;

use super::policy::AttemptSettings;
use crate::providers::{ProviderError, RetryAfter};

/// The next step after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// A passing fault (connect error, timeout, 429, 5xx, a stream that broke before its
    /// first content): retry this target, then the next.
    Retry,
    /// This target cannot serve the request (its key was refused, it lacks the model):
    /// no retry, but another target may.
    NextTarget,
    /// The request itself is at fault (400, 413, 422 …): every target would refuse it.
    GiveUp,
}

impl NextStep {
    pub fn after(error: &ProviderError) -> NextStep {
        match error {
            ProviderError::Unreachable { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::MidStream { .. }
            | ProviderError::Interrupted { .. }
            | ProviderError::InvalidResponse { .. } => NextStep::Retry,
            ProviderError::Status { status, .. } => match status {
                408 | 409 | 429 | 500..=599 => NextStep::Retry,
                401 | 403 | 404 => NextStep::NextTarget,
                _ => NextStep::GiveUp,
            },
            ProviderError::Unsupported { .. } => NextStep::NextTarget,
        }
    }

    /// Whether this failure says the deployment is unhealthy (for its circuit breaker).
    /// A refused request says nothing about the deployment.
    pub fn counts_against_health(self) -> bool {
        self == NextStep::Retry
    }
}

/// How long to wait before retry number `retry` (1-based) of the same target: exponential
/// backoff with full jitter, or the upstream's `Retry-After` when it sent one. `None` when
/// the wait would exceed `max_backoff`: better to move on to the next target at once.
pub fn backoff(settings: &AttemptSettings, retry: u32, error: &ProviderError) -> Option<Duration> {
    if let ProviderError::Status { retry_after: Some(retry_after), .. } = error
        && let Some(wait) = parse_retry_after(retry_after)
    {
        return (wait <= settings.max_backoff).then_some(wait);
    }
    let exponential = settings.backoff.saturating_mul(1 << retry.saturating_sub(1).min(16));
    let ceiling = exponential.min(settings.max_backoff);
    // Full jitter: anywhere in [ceiling/2, ceiling], so retrying clients spread out.
    let half = ceiling / 2;
    Some(half + half.mul_f64(fastrand::f64()))
}

/// `retry-after-ms` (OpenAI's) first, then `retry-after` in seconds. An HTTP-date is not
/// honoured (no provider sends one); the exponential backoff applies instead.
fn parse_retry_after(retry_after: &RetryAfter) -> Option<Duration> {
    if let Some(ms) = retry_after.millis.as_deref().and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let seconds = retry_after.seconds.as_deref()?.trim().parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorEnvelope;

    fn status(code: u16, retry_after: Option<RetryAfter>) -> ProviderError {
        ProviderError::Status {
            provider: "p".into(),
            status: code,
            body: Box::new(ErrorEnvelope::new("x", "server_error", None, None)),
            retry_after: retry_after.map(Box::new),
        }
    }

    #[test]
    fn classification() {
        let table = [
            (status(429, None), NextStep::Retry),
            (status(500, None), NextStep::Retry),
            (status(503, None), NextStep::Retry),
            (status(400, None), NextStep::GiveUp),
            (status(422, None), NextStep::GiveUp),
            (status(401, None), NextStep::NextTarget),
            (status(404, None), NextStep::NextTarget),
            (ProviderError::Timeout { provider: "p".into(), after: Duration::from_secs(1) }, NextStep::Retry),
            (ProviderError::Unreachable { provider: "p".into(), cause: "refused".into() }, NextStep::Retry),
        ];
        for (error, expected) in table {
            assert_eq!(NextStep::after(&error), expected, "{error}");
        }
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let settings = AttemptSettings {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..AttemptSettings::default()
        };
        let error = status(500, None);
        for (retry, low, high) in [(1, 50, 100), (2, 100, 200), (3, 175, 350), (9, 175, 350)] {
            for _ in 0..50 {
                let wait = backoff(&settings, retry, &error).unwrap();
                assert!(wait >= Duration::from_millis(low) && wait <= Duration::from_millis(high), "{retry}: {wait:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_or_skipped_when_too_long() {
        let settings = AttemptSettings { max_backoff: Duration::from_secs(2), ..AttemptSettings::default() };
        let header = |seconds: &str, millis: Option<&str>| {
            Some(RetryAfter { seconds: Some(seconds.into()), millis: millis.map(Into::into) })
        };
        assert_eq!(backoff(&settings, 1, &status(429, header("1", None))), Some(Duration::from_secs(1)));
        assert_eq!(backoff(&settings, 1, &status(429, header("1", Some("250")))), Some(Duration::from_millis(250)));
        assert_eq!(backoff(&settings, 1, &status(429, header("7", None))), None);
    }
}
