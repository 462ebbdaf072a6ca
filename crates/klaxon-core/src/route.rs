//! Routing: which channels a notification goes to (PRODUCT.md §6). Ordered rules, first match
//! wins unless it says `continue = true`; explicit `channels` on a notification bypass routes;
//! a default route catches what no rule matched; per-source switches keep a source's (or one
//! of its strategies') notifications from being sent while still recording them.
//!
//! Patterns are globs (`signal.*`, case-insensitive) or regexes written `/…/` (`/…/i` for
//! case-insensitive), compiled once when the configuration is read. [`Routing::explain`] says
//! rule by rule why a notification goes where it goes (`klaxon route --explain`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::dedup::{self, Dedup};
use crate::model::{Notification, Severity};

/// A field pattern: a glob, or a regex written `/…/`. Built infallibly so tests and code can
/// write `"signal.*".into()`; a regex that does not compile is kept as `Invalid`, never
/// matches, and is reported by [`RouteMatch::validate`] when the configuration is loaded.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    kind: PatternKind,
}

#[derive(Clone)]
enum PatternKind {
    Glob,
    // Arc: routes are cloned into the service and the CLI; the compiled program is shared.
    Regex(Arc<regex::Regex>),
    Invalid(String),
}

impl Pattern {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let kind = match regex_source(&text) {
            None => PatternKind::Glob,
            Some((source, insensitive)) => match regex::RegexBuilder::new(source)
                .case_insensitive(insensitive)
                // Patterns come from the operator's file, but a huge compiled program would
                // still slow every notification: keep it small.
                .size_limit(1 << 20)
                .build()
            {
                Ok(re) => PatternKind::Regex(Arc::new(re)),
                Err(e) => PatternKind::Invalid(e.to_string()),
            },
        };
        Pattern { text, kind }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_match(&self, value: &str) -> bool {
        match &self.kind {
            PatternKind::Glob => glob(&self.text, value),
            PatternKind::Regex(re) => re.is_match(value),
            PatternKind::Invalid(_) => false,
        }
    }

    /// Why the pattern cannot be used, when it cannot.
    pub fn error(&self) -> Option<&str> {
        match &self.kind {
            PatternKind::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// `/src/` or `/src/i` → the regex source and whether it ignores case.
fn regex_source(text: &str) -> Option<(&str, bool)> {
    let rest = text.strip_prefix('/')?;
    if let Some(src) = rest.strip_suffix("/i") {
        return Some((src, true));
    }
    rest.strip_suffix('/').map(|src| (src, false))
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Self {
        Pattern::new(s)
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Self {
        Pattern::new(s)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Pattern::new)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub event_type: Option<Pattern>,
    pub source: Option<Pattern>,
    /// `data.strategy`, else `data.strategy_name`.
    pub strategy: Option<Pattern>,
    pub action: Option<Pattern>,
    pub symbol: Option<Pattern>,
    pub user_id: Option<Pattern>,
    /// Matches when any of the notification's tags matches.
    pub tags: Option<Pattern>,
    /// `"warning"` (exactly), `">=warning"`, `">error"`, `"<=info"`, `"<info"`.
    pub severity: Option<String>,
}

/// The first condition of a rule that a notification did not meet.
#[derive(Debug, Clone, PartialEq)]
pub struct Miss {
    /// The `match` key: `symbol`, `severity`, …
    pub field: &'static str,
    pub pattern: String,
    /// The notification's value; `None` when it has none.
    pub value: Option<String>,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} `{v}` does not match `{}`", self.field, self.pattern),
            None => write!(f, "{} is absent (pattern `{}`)", self.field, self.pattern),
        }
    }
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

/// `data.strategy`, else `data.strategy_name`: the names strategy engines and webhook signals use.
pub fn strategy_of(n: &Notification) -> Option<&str> {
    n.data
        .get("strategy")
        .or_else(|| n.data.get("strategy_name"))
        .and_then(|v| v.as_str())
}

impl RouteMatch {
    /// Every pattern that cannot be used, by its `match` key.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (field, p) in self.patterns() {
            if let Some(e) = p.error() {
                out.push((field, format!("`{p}` is not a valid regex: {e}")));
            }
        }
        if let Some(s) = &self.severity
            && let Err(e) = parse_severity(s)
        {
            out.push(("severity", e));
        }
        out
    }

    fn patterns(&self) -> impl Iterator<Item = (&'static str, &Pattern)> {
        [
            ("event_type", &self.event_type),
            ("source", &self.source),
            ("strategy", &self.strategy),
            ("action", &self.action),
            ("symbol", &self.symbol),
            ("user_id", &self.user_id),
            ("tags", &self.tags),
        ]
        .into_iter()
        .filter_map(|(f, p)| p.as_ref().map(|p| (f, p)))
    }

    pub fn matches(&self, n: &Notification) -> bool {
        self.check(n).is_ok()
    }

    /// `Ok` when every condition holds, else the first that does not (in the order of
    /// [`RouteMatch`]'s fields).
    pub fn check(&self, n: &Notification) -> Result<(), Miss> {
        let data_str = |k: &str| n.data.get(k).and_then(|v| v.as_str());
        for (field, p) in self.patterns() {
            let ok = match field {
                "tags" => n.tags.iter().any(|t| p.is_match(t)),
                _ => {
                    let value = match field {
                        "event_type" => n.event_type.as_deref(),
                        "source" => Some(n.source.as_str()),
                        "strategy" => strategy_of(n),
                        "user_id" => n.user_id.as_deref(),
                        other => data_str(other),
                    };
                    value.is_some_and(|v| p.is_match(v))
                }
            };
            if !ok {
                let value = match field {
                    "tags" if n.tags.is_empty() => None,
                    "tags" => Some(n.tags.join(", ")),
                    "event_type" => n.event_type.clone(),
                    "source" => Some(n.source.clone()),
                    "strategy" => strategy_of(n).map(str::to_string),
                    "user_id" => n.user_id.clone(),
                    other => data_str(other).map(str::to_string),
                };
                return Err(Miss {
                    field,
                    pattern: p.to_string(),
                    value,
                });
            }
        }
        if let Some(s) = &self.severity
            && !parse_severity(s).is_ok_and(|(op, level)| op.holds(n.severity, level))
        {
            return Err(Miss {
                field: "severity",
                pattern: s.clone(),
                value: Some(n.severity.as_str().to_string()),
            });
        }
        Ok(())
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
    /// No rule matched a critical notification and there is no default route, so it goes
    /// everywhere rather than nowhere.
    CriticalUnmatched,
    /// No rule matched.
    Unmatched,
    /// No rule matched: the default route (`[routing] default`).
    Default,
}

impl fmt::Display for RouteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteReason::Explicit => f.write_str("the notification names its channels"),
            RouteReason::NoRoutes => f.write_str("no routes are configured: every channel"),
            RouteReason::Rules(ix) => {
                let names: Vec<String> = ix.iter().map(|i| format!("routes[{i}]")).collect();
                write!(f, "matched {}", names.join(", "))
            }
            RouteReason::CriticalUnmatched => f.write_str(
                "no rule matched a critical notification and there is no default route: every channel",
            ),
            RouteReason::Unmatched => {
                f.write_str("no rule matched and there is no default route: no channel")
            }
            RouteReason::Default => f.write_str("no rule matched: the default route"),
        }
    }
}

/// Picks channel names for a notification. `all` lists every configured channel.
pub fn resolve(routes: &[Route], n: &Notification, all: &[&str]) -> (Vec<String>, RouteReason) {
    resolve_with(routes, None, n, all)
}

/// [`resolve`] with a default route for what no rule matched.
fn resolve_with(
    routes: &[Route],
    default: Option<&[String]>,
    n: &Notification,
    all: &[&str],
) -> (Vec<String>, RouteReason) {
    if let Some(chosen) = &n.channels {
        return (unique(chosen.iter().cloned()), RouteReason::Explicit);
    }
    if routes.is_empty() && default.is_none() {
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
        return (unique(out.into_iter()), RouteReason::Rules(matched));
    }
    if let Some(d) = default {
        return (unique(d.iter().cloned()), RouteReason::Default);
    }
    if n.severity == Severity::Critical {
        return (
            all.iter().map(|s| s.to_string()).collect(),
            RouteReason::CriticalUnmatched,
        );
    }
    (Vec::new(), RouteReason::Unmatched)
}

fn unique(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A per-source switch (`[sources.NAME]`): notifications whose `source` matches `name` are
/// accepted and recorded, but while the source — or their strategy — is switched off, every
/// delivery is stored `suppressed` with the reason instead of being sent. The sender never
/// sees an error: a strategy engine must not break because an operator muted it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSwitch {
    /// Matched against the notification's `source` (glob or `/regex/`).
    pub name: Pattern,
    pub enabled: bool,
    /// Strategy patterns (matched against `data.strategy` / `data.strategy_name`) and their
    /// switch; a strategy not listed is on.
    pub strategies: Vec<(Pattern, bool)>,
}

impl SourceSwitch {
    /// Why this switch keeps `n` from being sent, if it does.
    pub fn switched_off(&self, n: &Notification) -> Option<String> {
        if !self.name.is_match(&n.source) {
            return None;
        }
        if !self.enabled {
            return Some(format!(
                "source `{}` is switched off (sources.{}.enabled = false)",
                n.source, self.name
            ));
        }
        let strategy = strategy_of(n)?;
        self.strategies
            .iter()
            .find(|(p, on)| !on && p.is_match(strategy))
            .map(|(p, _)| {
                format!(
                    "strategy `{strategy}` of source `{}` is switched off (sources.{}.strategies.{p} = false)",
                    n.source, self.name
                )
            })
    }
}

/// Everything that decides where notifications go, built once from the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub routes: Vec<Route>,
    /// Channels for a notification no rule matched (`[routing] default`).
    pub default: Option<Vec<String>>,
    pub sources: Vec<SourceSwitch>,
}

/// Where a notification goes and what happens to it on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub channels: Vec<String>,
    pub reason: RouteReason,
    /// Set when a source switch is off: every delivery is stored `suppressed` with this text.
    pub switched_off: Option<String>,
    /// The effective dedup key and window, when repeats are to be suppressed.
    pub dedup: Option<Dedup>,
}

/// One rule's verdict for `klaxon route --explain`.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleCheck {
    Matched,
    Missed(Miss),
    /// An earlier rule matched without `continue`, or the notification named its channels.
    NotEvaluated,
}

/// Rule by rule, why a notification goes where it goes.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub rules: Vec<(usize, RuleCheck)>,
    pub decision: Decision,
    /// The digest settings of each matched rule that has them.
    pub groups: Vec<(usize, GroupSpec)>,
    pub critical: bool,
}

impl Routing {
    pub fn decide(&self, n: &Notification, all: &[&str]) -> Decision {
        let (channels, reason) = resolve_with(&self.routes, self.default.as_deref(), n, all);
        let matched: Vec<&Route> = match &reason {
            RouteReason::Rules(ix) => ix.iter().filter_map(|&i| self.routes.get(i)).collect(),
            _ => Vec::new(),
        };
        let switched_off = self.sources.iter().find_map(|s| s.switched_off(n));
        let dedup = dedup::effective(n, matched.iter().filter_map(|r| r.dedup_window));
        Decision {
            channels,
            reason,
            switched_off,
            dedup,
        }
    }

    pub fn explain(&self, n: &Notification, all: &[&str]) -> Explanation {
        let decision = self.decide(n, all);
        let mut stopped = n.channels.is_some();
        let mut rules = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            if stopped {
                rules.push((i, RuleCheck::NotEvaluated));
                continue;
            }
            match r.matcher.check(n) {
                Ok(()) => {
                    rules.push((i, RuleCheck::Matched));
                    stopped = !r.cont;
                }
                Err(m) => rules.push((i, RuleCheck::Missed(m))),
            }
        }
        let groups = match &decision.reason {
            RouteReason::Rules(ix) => ix
                .iter()
                .filter_map(|&i| Some((i, self.routes.get(i)?.group.clone()?)))
                .collect(),
            _ => Vec::new(),
        };
        Explanation {
            rules,
            decision,
            groups,
            critical: n.severity == Severity::Critical,
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, check) in &self.rules {
            match check {
                RuleCheck::Matched => writeln!(f, "routes[{i}]: matched")?,
                RuleCheck::Missed(m) => writeln!(f, "routes[{i}]: not matched: {m}")?,
                RuleCheck::NotEvaluated => writeln!(f, "routes[{i}]: not evaluated")?,
            }
        }
        let d = &self.decision;
        if d.channels.is_empty() {
            writeln!(f, "channels: (none)")?;
        } else {
            writeln!(f, "channels: {}", d.channels.join(", "))?;
        }
        writeln!(f, "reason: {}", d.reason)?;
        if let Some(off) = &d.switched_off {
            writeln!(f, "suppressed: {off}")?;
        }
        match &d.dedup {
            Some(dd) => writeln!(
                f,
                "dedup: key {} within {}",
                dd.key,
                crate::duration::format(dd.window)
            )?,
            None => writeln!(f, "dedup: off")?,
        }
        if self.groups.is_empty() {
            writeln!(f, "group: off")?;
        }
        for (i, g) in &self.groups {
            write!(
                f,
                "group (routes[{i}]): by [{}], wait {}, interval {}, at most {} per digest",
                g.by.join(", "),
                crate::duration::format(g.wait),
                crate::duration::format(g.interval),
                g.max_batch
            )?;
            if self.critical {
                write!(f, " (critical: never aggregated)")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
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
    fn patterns_glob_or_regex() {
        let table: &[(&str, &str, bool)] = &[
            ("MNQ*", "mnqi", true),
            ("/^MNQ/", "MNQI", true),
            ("/^MNQ/", "mnqi", false),
            ("/^mnq/i", "MNQI", true),
            ("/MNQ|ES/", "ESZ5", true),
            ("/^(MNQ|ES)$/", "ESZ5", false),
            ("/", "/", true), // one slash is a glob, not an empty regex
            ("//", "", true), // the empty regex matches anything
        ];
        for (p, v, want) in table {
            assert_eq!(Pattern::new(*p).is_match(v), *want, "{p} on {v}");
        }
        let bad = Pattern::new("/(unclosed/");
        assert!(bad.error().is_some());
        assert!(!bad.is_match("(unclosed"));
    }

    #[test]
    fn invalid_patterns_are_named_by_field() {
        let m = RouteMatch {
            symbol: Some("/[/".into()),
            severity: Some(">=loud".into()),
            ..Default::default()
        };
        let errs = m.validate();
        assert_eq!(
            errs.iter().map(|e| e.0).collect::<Vec<_>>(),
            ["symbol", "severity"]
        );
        assert!(errs[0].1.contains("`/[/` is not a valid regex"));
    }

    #[test]
    fn first_failing_field_is_reported() {
        let n = Notification::new("x")
            .event_type("signal.generated")
            .data("strategy_name", "break-and-enter")
            .data("symbol", "MNQI")
            .data("action", "BUY")
            .tag("fast");
        // (rule, the first failing field and the notification's value there)
        type Row<'a> = (RouteMatch, Option<(&'a str, Option<&'a str>)>);
        let table: Vec<Row> = vec![
            (RouteMatch::default(), None),
            (
                RouteMatch {
                    event_type: Some("signal.*".into()),
                    symbol: Some("/^ES/".into()),
                    action: Some("SELL".into()),
                    ..Default::default()
                },
                Some(("action", Some("BUY"))),
            ),
            (
                RouteMatch {
                    symbol: Some("/^ES/".into()),
                    ..Default::default()
                },
                Some(("symbol", Some("MNQI"))),
            ),
            (
                RouteMatch {
                    user_id: Some("*".into()),
                    ..Default::default()
                },
                Some(("user_id", None)),
            ),
            (
                RouteMatch {
                    tags: Some("/^slow$/".into()),
                    ..Default::default()
                },
                Some(("tags", Some("fast"))),
            ),
            (
                RouteMatch {
                    strategy: Some("break-*".into()),
                    severity: Some(">=warning".into()),
                    ..Default::default()
                },
                Some(("severity", Some("info"))),
            ),
            (
                RouteMatch {
                    strategy: Some("/^break-and-enter$/".into()),
                    source: Some("api".into()),
                    tags: Some("f*".into()),
                    severity: Some("<=info".into()),
                    ..Default::default()
                },
                None,
            ),
        ];
        for (i, (m, want)) in table.into_iter().enumerate() {
            let got = m.check(&n).err();
            let got = got.as_ref().map(|miss| (miss.field, miss.value.as_deref()));
            assert_eq!(got, want, "row {i}");
        }
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

    #[test]
    fn default_route_takes_what_no_rule_matched() {
        let routing = Routing {
            routes: vec![route(
                RouteMatch {
                    symbol: Some("/^MNQ/".into()),
                    ..Default::default()
                },
                &["a"],
                false,
            )],
            default: Some(vec!["log".into()]),
            sources: Vec::new(),
        };
        let all = ["a", "b", "log"];
        let table: Vec<(Notification, &[&str], RouteReason)> = vec![
            (
                Notification::new("m").data("symbol", "MNQI"),
                &["a"],
                RouteReason::Rules(vec![0]),
            ),
            (
                Notification::new("m").data("symbol", "ES"),
                &["log"],
                RouteReason::Default,
            ),
            // A default exists, so an unmatched critical goes there, not everywhere.
            (
                Notification::new("m").severity(Severity::Critical),
                &["log"],
                RouteReason::Default,
            ),
            (
                Notification::new("m").channel("b"),
                &["b"],
                RouteReason::Explicit,
            ),
        ];
        for (n, want, why) in table {
            let d = routing.decide(&n, &all);
            assert_eq!(
                (d.channels.as_slice(), d.reason),
                (want_vec(want).as_slice(), why)
            );
        }
        // A default alone (no rules) still routes there rather than everywhere.
        let only_default = Routing {
            default: Some(vec!["log".into()]),
            ..Default::default()
        };
        let d = only_default.decide(&Notification::new("m"), &all);
        assert_eq!(
            (d.channels, d.reason),
            (vec!["log".to_string()], RouteReason::Default)
        );
    }

    fn want_vec(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn source_switches_suppress_but_keep_routing() {
        let routing = Routing {
            routes: vec![route(RouteMatch::default(), &["a"], false)],
            default: None,
            sources: vec![
                SourceSwitch {
                    name: "webhook_signals".into(),
                    enabled: false,
                    strategies: Vec::new(),
                },
                SourceSwitch {
                    name: "strategy_engine".into(),
                    enabled: true,
                    strategies: vec![("my-strat".into(), false), ("other".into(), true)],
                },
            ],
        };
        let all = ["a"];
        let table: Vec<(Notification, Option<&str>)> = vec![
            (
                Notification::new("m").source("webhook_signals"),
                Some("source `webhook_signals` is switched off"),
            ),
            (
                Notification::new("m")
                    .source("strategy_engine")
                    .data("strategy_name", "my-strat"),
                Some("strategy `my-strat` of source `strategy_engine` is switched off"),
            ),
            (
                Notification::new("m")
                    .source("strategy_engine")
                    .data("strategy", "other"),
                None,
            ),
            (Notification::new("m").source("strategy_engine"), None),
            (
                Notification::new("m")
                    .source("api")
                    .data("strategy_name", "my-strat"),
                None,
            ),
            // Explicit channels bypass routes, not the switch.
            (
                Notification::new("m")
                    .source("webhook_signals")
                    .channel("a"),
                Some("source `webhook_signals`"),
            ),
        ];
        for (i, (n, want)) in table.into_iter().enumerate() {
            let d = routing.decide(&n, &all);
            assert_eq!(d.channels, ["a"], "row {i}: routing still says where");
            match (want, d.switched_off) {
                (None, None) => {}
                (Some(w), Some(got)) => assert!(got.contains(w), "row {i}: {got}"),
                (w, got) => panic!("row {i}: want {w:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn decision_carries_dedup_from_matched_routes() {
        let mut dedup_route = route(
            RouteMatch {
                event_type: Some("signal.*".into()),
                ..Default::default()
            },
            &["a"],
            true,
        );
        dedup_route.dedup_window = Some(Duration::from_secs(60));
        let mut longer = route(RouteMatch::default(), &["b"], false);
        longer.dedup_window = Some(Duration::from_secs(300));
        let routing = Routing {
            routes: vec![dedup_route, longer],
            ..Default::default()
        };
        let all = ["a", "b"];
        let n = Notification::new("m").event_type("signal.generated");
        let d = routing.decide(&n, &all).dedup.unwrap();
        assert_eq!(d.window, Duration::from_secs(300), "the largest window");
        // Explicit channels bypass the routes, and so their windows.
        assert_eq!(routing.decide(&n.clone().channel("a"), &all).dedup, None);
    }

    #[test]
    fn explain_says_rule_by_rule() {
        let mut grouped = route(
            RouteMatch {
                event_type: Some("signal.*".into()),
                ..Default::default()
            },
            &["discord"],
            false,
        );
        grouped.group = Some(GroupSpec {
            by: vec!["symbol".into()],
            wait: Duration::from_secs(2),
            interval: Duration::from_secs(10),
            max_batch: 100,
        });
        grouped.dedup_window = Some(Duration::from_secs(300));
        let routing = Routing {
            routes: vec![
                route(
                    RouteMatch {
                        severity: Some(">=warning".into()),
                        ..Default::default()
                    },
                    &["tg"],
                    false,
                ),
                grouped,
                route(RouteMatch::default(), &["log"], false),
            ],
            ..Default::default()
        };
        let n = Notification::new("m")
            .event_type("signal.generated")
            .data("symbol", "MNQI");
        let e = routing.explain(&n, &["tg", "discord", "log"]);
        assert_eq!(
            e.rules.iter().map(|r| &r.1).collect::<Vec<_>>(),
            [
                &RuleCheck::Missed(Miss {
                    field: "severity",
                    pattern: ">=warning".into(),
                    value: Some("info".into())
                }),
                &RuleCheck::Matched,
                &RuleCheck::NotEvaluated,
            ]
        );
        let text = e.to_string();
        for line in [
            "routes[0]: not matched: severity `info` does not match `>=warning`",
            "routes[1]: matched",
            "routes[2]: not evaluated",
            "channels: discord",
            "reason: matched routes[1]",
            "within 5m",
            "group (routes[1]): by [symbol], wait 2s, interval 10s, at most 100 per digest",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }
}
