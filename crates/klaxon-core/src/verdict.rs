//! What a channel says after one send, and the one shared function that turns an HTTP answer
//! into it (STYLE.md: classification lives once; providers add only their extra codes).

use std::time::Duration;

/// The whole contract between a channel and the engine. The engine, not the channel, decides
/// what happens next: reschedule, give up, pause, open the circuit.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The provider took it. `provider_id` is its message id when it gives one.
    Delivered { provider_id: Option<String> },
    /// Worth trying again. `after` is the provider's own wait (429 `retry_after`), a floor for
    /// the backoff; `throttled` means the provider is rate-limiting us, so the whole channel
    /// pauses until `after` has passed.
    Retry {
        reason: String,
        status: Option<u16>,
        after: Option<Duration>,
        throttled: bool,
    },
    /// Trying again cannot help (bad request, bad token, chat or webhook gone).
    /// `disable_channel` is set when the provider says the endpoint is gone for good
    /// (webhook 410, Discord unknown webhook): the channel is switched off and says why.
    Reject {
        reason: String,
        status: Option<u16>,
        disable_channel: bool,
    },
}

impl Verdict {
    pub fn retry(reason: impl Into<String>) -> Self {
        Verdict::Retry {
            reason: reason.into(),
            status: None,
            after: None,
            throttled: false,
        }
    }

    pub fn reject(reason: impl Into<String>) -> Self {
        Verdict::Reject {
            reason: reason.into(),
            status: None,
            disable_channel: false,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Delivered { .. } => None,
            Verdict::Retry { reason, .. } | Verdict::Reject { reason, .. } => Some(reason),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Verdict::Delivered { .. } => None,
            Verdict::Retry { status, .. } | Verdict::Reject { status, .. } => *status,
        }
    }
}

/// Maps an HTTP answer to a verdict: 2xx delivered; 408, 425, 429 and 5xx retry (429 throttles,
/// honouring `retry_after`); 3xx and other 4xx reject — redirects are not followed, as the
/// Standard Webhooks spec asks. `reason` is the provider's own words, already redacted.
pub fn classify_http(status: u16, retry_after: Option<Duration>, reason: String) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered { provider_id: None },
        429 => Verdict::Retry {
            reason,
            status: Some(status),
            after: retry_after,
            throttled: true,
        },
        408 | 425 | 500..=599 => Verdict::Retry {
            reason,
            status: Some(status),
            after: retry_after,
            throttled: false,
        },
        _ => Verdict::Reject {
            reason,
            status: Some(status),
            disable_channel: false,
        },
    }
}

/// Parses a `Retry-After` header: delta-seconds, possibly fractional (Discord sends floats).
/// HTTP dates are rare from these providers and treated as absent.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    wait_secs(value.trim().parse().ok()?)
}

/// A wait a provider gave in seconds (a header, or a body field such as Telegram's and
/// Discord's `retry_after`), capped at a day. Negative and non-finite values are absent; an
/// absurd one (`1e20`) must not reach `Duration::from_secs_f64`, which panics past `u64` seconds.
pub fn wait_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_waits_are_capped_never_a_panic() {
        assert_eq!(wait_secs(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(wait_secs(1e20), Some(Duration::from_secs(86_400)));
        assert_eq!(wait_secs(f64::MAX), Some(Duration::from_secs(86_400)));
        assert_eq!(wait_secs(-1.0), None);
        assert_eq!(wait_secs(f64::NAN), None);
        assert_eq!(parse_retry_after("1e30"), Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn status_table() {
        let cases: &[(u16, &str)] = &[
            (200, "delivered"),
            (201, "delivered"),
            (204, "delivered"),
            (301, "reject"),
            (400, "reject"),
            (401, "reject"),
            (403, "reject"),
            (404, "reject"),
            (408, "retry"),
            (410, "reject"),
            (413, "reject"),
            (429, "throttle"),
            (500, "retry"),
            (502, "retry"),
            (503, "retry"),
            (504, "retry"),
        ];
        for &(status, want) in cases {
            let got = match classify_http(status, None, String::new()) {
                Verdict::Delivered { .. } => "delivered",
                Verdict::Retry {
                    throttled: true, ..
                } => "throttle",
                Verdict::Retry { .. } => "retry",
                Verdict::Reject { .. } => "reject",
            };
            assert_eq!(got, want, "status {status}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 64.57 "),
            Some(Duration::from_secs_f64(64.57))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
