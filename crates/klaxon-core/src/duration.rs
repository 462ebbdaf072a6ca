//! Human durations in config: `"500ms"`, `"2s"`, `"5m"`, `"1h"`, `"7d"`, or a bare number of
//! seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("`{text}` is not a duration like \"500ms\", \"2s\", \"5m\", \"1h\"")
    })?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m, h, d)"
            ));
        }
    };
    from_secs(secs).ok_or_else(|| format!("`{text}` is longer than 100 years"))
}

/// Beyond any sensible timeout or window, and far from `Duration`'s overflow (which panics).
const MAX_SECS: f64 = 100.0 * 365.0 * 86_400.0;

fn from_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=MAX_SECS).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// The shortest form [`parse`] reads back: `5m`, `90s`, `1h`, `250ms`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        Raw::Secs(s) => from_secs(s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{s} is not a valid duration (0 to 100 years, in seconds)"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert!(parse("5 fortnights").is_err());
        // Bad input is an error naming it, never a panic.
        assert!(
            parse("99999999999999999999999999999999s")
                .unwrap_err()
                .contains("100 years")
        );
        assert!(parse("1.5.5s").is_err());
        for (d, text) in [
            (300, "5m"),
            (90, "90s"),
            (7200, "2h"),
            (0, "0s"),
            (86_400, "1d"),
        ] {
            assert_eq!(format(Duration::from_secs(d)), text);
            assert_eq!(parse(text).unwrap(), Duration::from_secs(d));
        }
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        let huge: Result<Duration, _> = deserialize(serde_json::json!(1e300));
        assert!(huge.is_err());
        let negative: Result<Duration, _> = deserialize(serde_json::json!(-1));
        assert!(negative.is_err());
    }
}
