//! Routing: which channels a notification goes to (PRODUCT.md §6). Ordered rules, first match
//! wins unless it says `continue = true`; explicit `channels` on a notification bypass routes.
//!
//! This is the basic matcher (globs on fields, severity comparisons); the routing issue grows
//! it (regex, dedup and grouping per route) without changing how the engine asks for a route.

use std::time::Duration;

use serde::Deserialize;

use crate::model::{Notification, Severity};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub strategy: Option<String>,
    pub action: Option<String>,
    pub symbol: Option<String>,
    pub user_id: Option<String>,
    /// Matches when any of the notification's tags matches.
    pub tags: Option<String>,
    /// `"warning"` (exactly), `">=warning"`, `">error"`, `"<=info"`, `"<info"`.
    pub severity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    pub matcher: RouteMatch,
    pub to: Vec<String>,
    pub cont: bool,
    /// Repeats of a notification's dedup key inside this window are `suppressed`.
    pub dedup_window: Option<Duration>,
    /// Aggregation: a burst of matching notifications becomes one digest per channel.
    pub group: Option<GroupSpec>,
}

/// How a route batches what it matches into digests (PRODUCT.md §7, Alertmanager's terms).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// Fields that split groups (`symbol`, `strategy`, `source`, `event_type`, `severity`,
    /// `user_id`, or any `data` key); empty: one group per route and channel.
    pub by: Vec<String>,
    /// How long the first notification of a group waits for others.
    pub wait: Duration,
    /// After a digest, how long before the next one for the same group.
    pub interval: Duration,
    /// At most this many notifications in one digest; more start the next one.
    pub max_batch: usize,
}

impl GroupSpec {
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_BATCH: usize = 100;
}

impl RouteMatch {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.severity {
            parse_severity(s)?;
        }
        Ok(())
    }

    pub fn matches(&self, n: &Notification) -> bool {
        let data_str = |k: &str| {
            n.data
                .get(k)
                .or_else(|| {
                    if k == "strategy" {
                        n.data.get("strategy_name")
                    } else {
                        None
                    }
                })
                .and_then(|v| v.as_str())
        };
        let field = |pat: &Option<String>, value: Option<&str>| match pat {
            None => true,
            Some(p) => value.is_some_and(|v| glob(p, v)),
        };
        field(&self.event_type, n.event_type.as_deref())
            && field(&self.source, Some(&n.source))
            && field(&self.strategy, data_str("strategy"))
            && field(&self.action, data_str("action"))
            && field(&self.symbol, data_str("symbol"))
            && field(&self.user_id, n.user_id.as_deref())
            && self
                .tags
                .as_ref()
                .is_none_or(|p| n.tags.iter().any(|t| glob(p, t)))
            && self.severity.as_ref().is_none_or(|s| {
                parse_severity(s).is_ok_and(|(op, level)| op.holds(n.severity, level))
            })
    }
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

impl Cmp {
    fn holds(self, a: Severity, b: Severity) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ge => a >= b,
            Cmp::Gt => a > b,
            Cmp::Le => a <= b,
            Cmp::Lt => a < b,
        }
    }
}

fn parse_severity(s: &str) -> Result<(Cmp, Severity), String> {
    let s = s.trim();
    let (op, rest) = [
        (">=", Cmp::Ge),
        ("<=", Cmp::Le),
        (">", Cmp::Gt),
        ("<", Cmp::Lt),
        ("=", Cmp::Eq),
    ]
    .iter()
    .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r)))
    .unwrap_or((Cmp::Eq, s));
    let level = rest
        .trim()
        .parse::<Severity>()
        .map_err(|e| format!("severity: {e}"))?;
    Ok((op, level))
}

/// Case-insensitive glob with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Why a notification goes where it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteReason {
    /// The notification named its channels.
    Explicit,
    /// No routes are configured: every channel.
    NoRoutes,
    /// These rules (indexes) matched.
    Rules(Vec<usize>),
    /// No rule matched a critical notification, so it goes everywhere rather than nowhere.
    CriticalUnmatched,
    /// No rule matched.
    Unmatched,
}

/// Picks channel names for a notification. `all` lists every configured channel.
pub fn resolve(routes: &[Route], n: &Notification, all: &[&str]) -> (Vec<String>, RouteReason) {
    if let Some(chosen) = &n.channels {
        return (dedup(chosen.iter().cloned()), RouteReason::Explicit);
    }
    if routes.is_empty() {
        return (
            all.iter().map(|s| s.to_string()).collect(),
            RouteReason::NoRoutes,
        );
    }
    let mut matched = Vec::new();
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        if r.matcher.matches(n) {
            matched.push(i);
            out.extend(r.to.iter().cloned());
            if !r.cont {
                break;
            }
        }
    }
    if !matched.is_empty() {
        return (dedup(out.into_iter()), RouteReason::Rules(matched));
    }
    if n.severity == Severity::Critical {
        return (
            all.iter().map(|s| s.to_string()).collect(),
            RouteReason::CriticalUnmatched,
        );
    }
    (Vec::new(), RouteReason::Unmatched)
}

fn dedup(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(m: RouteMatch, to: &[&str], cont: bool) -> Route {
        Route {
            matcher: m,
            to: to.iter().map(|s| s.to_string()).collect(),
            cont,
            ..Default::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob("signal.*", "signal.generated"));
        assert!(glob("*", ""));
        assert!(glob("M?Q*", "mnqi"));
        assert!(!glob("signal.*", "trade.executed"));
    }

    #[test]
    fn first_match_wins_unless_continue() {
        let routes = vec![
            route(
                RouteMatch {
                    severity: Some(">=warning".into()),
                    ..Default::default()
                },
                &["tg"],
                true,
            ),
            route(
                RouteMatch {
                    event_type: Some("signal.*".into()),
                    strategy: Some("break-and-enter".into()),
                    ..Default::default()
                },
                &["discord"],
                false,
            ),
            route(RouteMatch::default(), &["log"], false),
        ];
        let all = ["tg", "discord", "log"];
        let n = Notification::new("x")
            .event_type("signal.generated")
            .data("strategy_name", "break-and-enter");
        assert_eq!(resolve(&routes, &n, &all).0, ["discord"]);
        let n = n.severity(Severity::Error);
        assert_eq!(resolve(&routes, &n, &all).0, ["tg", "discord"]);
        let n = Notification::new("x");
        assert_eq!(resolve(&routes, &n, &all).0, ["log"]);
        let n = Notification::new("x").channel("tg").channel("tg");
        assert_eq!(
            resolve(&routes, &n, &all),
            (vec!["tg".to_string()], RouteReason::Explicit)
        );
    }

    #[test]
    fn unmatched_critical_goes_everywhere() {
        let routes = vec![route(
            RouteMatch {
                event_type: Some("x".into()),
                ..Default::default()
            },
            &["a"],
            false,
        )];
        let all = ["a", "b"];
        assert_eq!(
            resolve(&routes, &Notification::new("m"), &all).1,
            RouteReason::Unmatched
        );
        let (to, why) = resolve(
            &routes,
            &Notification::new("m").severity(Severity::Critical),
            &all,
        );
        assert_eq!((to.len(), why), (2, RouteReason::CriticalUnmatched));
    }
}
