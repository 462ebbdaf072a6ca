//! The Markdown report: one section per scenario, one table row per figure with its baseline,
//! the ratio between them and the goal it is held to; a summary of every goal at the end.
//! Also the latency histogram every scenario records into.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What a figure measures, which decides how it prints.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// Events per second; the text names the events (`rows/s`).
    Rate(&'static str),
    Nanos,
    Micros,
    Millis,
    /// Mebibytes (2^20 bytes), as `/proc` reports kB.
    Mib,
    Secs,
    Percent,
    /// A ratio between two measured figures (`12.3×`).
    Ratio,
    /// A plain number of things (429 answers, repeats).
    Count,
    /// Mebibytes per hour: how fast memory grows (the soak).
    MibPerHour,
    /// A ratio close to 1 that needs three decimals (`1.032×`): memory's growth in the soak.
    Growth,
}

/// A measured number and its unit.
#[derive(Clone, Copy, Debug)]
pub struct Fig {
    pub value: f64,
    pub unit: Unit,
}

impl Fig {
    pub fn rate(value: f64, what: &'static str) -> Fig {
        Fig {
            value,
            unit: Unit::Rate(what),
        }
    }

    pub fn micros(value: u64) -> Fig {
        Fig {
            value: value as f64,
            unit: Unit::Micros,
        }
    }

    pub fn nanos(value: u64) -> Fig {
        Fig {
            value: value as f64,
            unit: Unit::Nanos,
        }
    }

    pub fn millis(d: Duration) -> Fig {
        Fig {
            value: d.as_secs_f64() * 1e3,
            unit: Unit::Millis,
        }
    }

    pub fn secs(value: f64) -> Fig {
        Fig {
            value,
            unit: Unit::Secs,
        }
    }

    pub fn percent(value: f64) -> Fig {
        Fig {
            value,
            unit: Unit::Percent,
        }
    }

    pub fn ratio(value: f64) -> Fig {
        Fig {
            value,
            unit: Unit::Ratio,
        }
    }

    pub fn count(value: f64) -> Fig {
        Fig {
            value,
            unit: Unit::Count,
        }
    }

    pub fn mib_per_hour(value: f64) -> Fig {
        Fig {
            value,
            unit: Unit::MibPerHour,
        }
    }

    pub fn growth(value: f64) -> Fig {
        Fig {
            value,
            unit: Unit::Growth,
        }
    }

    pub fn mib(kib: u64) -> Fig {
        Fig {
            value: kib as f64 / 1024.0,
            unit: Unit::Mib,
        }
    }
}

impl fmt::Display for Fig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.value;
        match self.unit {
            Unit::Rate(what) => write!(f, "{} {what}", thousands(v)),
            Unit::Nanos => write!(f, "{} ns", thousands(v)),
            // Sub-millisecond latencies read best in µs, longer ones in ms.
            Unit::Micros if v < 1_000.0 => write!(f, "{v:.0} µs"),
            Unit::Micros => write!(f, "{:.2} ms", v / 1e3),
            Unit::Millis => write!(f, "{v:.0} ms"),
            Unit::Mib => write!(f, "{v:.1} MB"),
            Unit::Secs => write!(f, "{v:.1} s"),
            Unit::Percent => write!(f, "{v:.1} %"),
            Unit::Ratio => write!(f, "{v:.1}×"),
            Unit::Count => write!(f, "{}", thousands(v)),
            Unit::MibPerHour => write!(f, "{v:.2} MB/h"),
            Unit::Growth => write!(f, "{v:.3}×"),
        }
    }
}

/// A count with thousands separators, for the report's text.
pub fn int(n: usize) -> String {
    thousands(n as f64)
}

/// `12345.6` → `12,346`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// A target a figure is held to, in the figure's own unit.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtLeast(f64),
    Below(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Goal::AtLeast(g) => v >= g,
            Goal::Below(g) => v < g,
            Goal::AtMost(g) => v <= g,
        }
    }

    fn describe(self, unit: Unit) -> String {
        let (sign, g) = match self {
            Goal::AtLeast(g) => ("≥", g),
            Goal::Below(g) => ("<", g),
            Goal::AtMost(g) => ("≤", g),
        };
        format!("{sign} {}", Fig { value: g, unit })
    }
}

/// One table row.
pub struct Row<'a> {
    pub figure: &'a str,
    pub value: Fig,
    /// What the figure is compared with, and its value (same unit).
    pub baseline: Option<(&'a str, Fig)>,
    pub goal: Option<Goal>,
}

/// The report being written; `finish` appends the goal summary.
pub struct Report {
    text: String,
    /// (figure, goal, met) for the summary.
    goals: Vec<(String, String, Fig, bool)>,
    in_table: bool,
}

impl Report {
    pub fn new() -> Report {
        Report {
            text: String::new(),
            goals: Vec::new(),
            in_table: false,
        }
    }

    /// Free text (a paragraph, or header lines).
    pub fn line(&mut self, s: impl AsRef<str>) {
        self.end_table();
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    pub fn section(&mut self, title: &str, what: &str) {
        self.end_table();
        eprintln!("== {title}");
        self.text.push_str(&format!("\n## {title}\n\n{what}\n"));
    }

    pub fn row(&mut self, row: Row<'_>) {
        if !self.in_table {
            self.text.push_str(
                "\n| figure | value | baseline | vs baseline | goal | |\n|---|---:|---|---:|---|---|\n",
            );
            self.in_table = true;
        }
        let (baseline, ratio) = match row.baseline {
            Some((what, b)) if b.value > 0.0 => (
                format!("{b} ({what})"),
                format!("{:.2}×", row.value.value / b.value),
            ),
            Some((what, b)) => (format!("{b} ({what})"), "—".into()),
            None => ("—".into(), "—".into()),
        };
        let (goal, verdict) = match row.goal {
            Some(g) => {
                let met = g.met(row.value.value);
                let goal = g.describe(row.value.unit);
                self.goals
                    .push((row.figure.to_string(), goal.clone(), row.value, met));
                (goal, if met { "goal met" } else { "**missed**" })
            }
            None => ("—".into(), ""),
        };
        eprintln!(
            "   {}: {} | baseline {baseline} | {verdict}",
            row.figure, row.value
        );
        self.text.push_str(&format!(
            "| {} | {} | {baseline} | {ratio} | {goal} | {verdict} |\n",
            row.figure, row.value
        ));
    }

    /// A note under the current table (errors, counts, caveats).
    pub fn note(&mut self, s: impl AsRef<str>) {
        self.end_table();
        eprintln!("   {}", s.as_ref());
        self.text.push_str(&format!("\n{}\n", s.as_ref()));
    }

    fn end_table(&mut self) {
        self.in_table = false;
    }

    /// The whole report, goal summary last.
    pub fn finish(mut self) -> String {
        self.end_table();
        self.text
            .push_str("\n## Goals\n\n| figure | value | goal | |\n|---|---:|---|---|\n");
        for (figure, goal, value, met) in &self.goals {
            let verdict = if *met { "goal met" } else { "**missed**" };
            self.text
                .push_str(&format!("| {figure} | {value} | {goal} | {verdict} |\n"));
        }
        let met = self.goals.iter().filter(|g| g.3).count();
        self.text
            .push_str(&format!("\n{met} of {} goals met.\n", self.goals.len()));
        self.text
    }
}

/// Latencies, recorded in one unit (µs or ns) chosen at creation.
pub struct Lat {
    hist: Histogram<u64>,
    nanos: bool,
}

impl Lat {
    /// Microseconds, 1 µs to 10 min, 3 significant digits.
    pub fn micros() -> Lat {
        Lat {
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            nanos: false,
        }
    }

    /// Nanoseconds, 1 ns to 10 s, 3 significant digits.
    pub fn nanos() -> Lat {
        Lat {
            hist: Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds"),
            nanos: true,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let v = if self.nanos {
            d.as_nanos()
        } else {
            d.as_micros()
        };
        // Values past the top bound are clamped to it rather than lost.
        self.hist
            .saturating_record(u64::try_from(v).unwrap_or(u64::MAX).max(1));
    }

    pub fn merge(&mut self, other: &Lat) {
        self.hist
            .add(&other.hist)
            .expect("histograms share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0.5, 0.99) as a figure in the recorded unit.
    pub fn q(&self, q: f64) -> Fig {
        self.fig(self.hist.value_at_quantile(q))
    }

    pub fn max(&self) -> Fig {
        self.fig(self.hist.max())
    }

    fn fig(&self, v: u64) -> Fig {
        if self.nanos {
            Fig::nanos(v)
        } else {
            Fig::micros(v)
        }
    }
}
