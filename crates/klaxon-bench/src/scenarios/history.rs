//! Scenario 8, history at size: the queries behind the dashboard and the operator API
//! (newest page, filters, a deep page, one notification's detail, dead letters, queue depth)
//! on a store holding 100,000 notifications, against the plain indexed read of the same page
//! on the same file (the floor: SQLite returning 50 rows by primary key).

use std::str::FromStr;
use std::time::{Duration, Instant};

use klaxon_core::Severity;
use klaxon_core::model::{DeliveryStatus, Notification, new_id};
use klaxon_store::{ListFilter, NewDelivery, NewEntry};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use crate::Scale;
use crate::harness::fresh_db;
use crate::report::{Fig, Goal, Lat, Report, Row, int};

/// A page the dashboard asks for.
const PAGE: usize = 50;
/// Runs of each query; the figure is the median.
const RUNS: usize = 30;
/// A page must come back well inside what a person notices: 50 ms, in µs.
const GOAL_US: f64 = 50_000.0;

pub async fn run(report: &mut Report, scale: Scale) -> anyhow::Result<()> {
    let n = scale.n(100_000);
    report.section(
        "8. History at size: dashboard and operator queries",
        &format!(
            "A fresh store filled with {} notifications over 4 channels and 3 severities, one \
             delivery each (2% pending, 1 in 5,000 dead — dead letters are rare — the rest \
             delivered), then each query run {RUNS} \
             times through `Store` (median). Baseline: `SELECT id, body FROM notifications \
             ORDER BY id DESC LIMIT 50` with sqlx on the same file.",
            int(n)
        ),
    );
    let (_dir, url) = fresh_db()?;
    let store = klaxon_store::open(&url).await?;
    store.migrate().await?;
    let channels = ["telegram", "discord", "email", "sms"];
    let severities = [Severity::Info, Severity::Warning, Severity::Critical];
    let mut i = 0usize;
    while i < n {
        let rows = 500.min(n - i);
        let entries: Vec<NewEntry> = (i..i + rows)
            .map(|k| NewEntry {
                notification: Notification::new(format!("fill {k}: 2 MNQ @ 23,488.75"))
                    .title(format!("BUY MNQ #{k}"))
                    .severity(severities[k % severities.len()]),
                deliveries: vec![NewDelivery {
                    id: new_id(),
                    channel: channels[k % channels.len()].into(),
                    target: None,
                    group: None,
                }],
                suppress: None,
            })
            .collect();
        store.insert(entries).await?;
        i += rows;
    }
    // Outcomes by hand: 2% left pending, 1 in 5,000 dead, the rest delivered.
    let opts = SqliteConnectOptions::from_str(&url)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    sqlx::query(
        "UPDATE deliveries SET attempts = 1, status = CASE \
           WHEN rowid % 5000 = 7 THEN 'dead' WHEN rowid % 50 = 4 THEN 'pending' ELSE 'delivered' END",
    )
    .execute(&pool)
    .await?;

    let p = pool.clone();
    let baseline = time(move || {
        let p = p.clone();
        async move {
            sqlx::query("SELECT id, body FROM notifications ORDER BY id DESC LIMIT 50")
                .fetch_all(&p)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    })
    .await?;
    // The dead-letter query as it was before the status index: newest notifications first,
    // each checked for a dead delivery — a scan when dead letters are rare.
    let p = pool.clone();
    let dead_by_scan = time(move || {
        let p = p.clone();
        async move {
            sqlx::query(
                "SELECT n.id, n.body FROM notifications n WHERE EXISTS (SELECT 1 FROM deliveries d \
                 WHERE d.notification_id = n.id AND d.status = 'dead') ORDER BY n.id DESC LIMIT 50",
            )
            .fetch_all(&p)
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from)
        }
    })
    .await?;
    pool.close().await;

    let list = |f: ListFilter| {
        let store = store.clone();
        move || {
            let store = store.clone();
            let f = f.clone();
            async move { store.list(f).await.map(|_| ()).map_err(anyhow::Error::from) }
        }
    };
    let page = ListFilter {
        limit: PAGE,
        ..ListFilter::default()
    };
    let newest = store.list(page.clone()).await?;
    let some_id = newest
        .first()
        .map(|r| r.notification.id)
        .ok_or_else(|| anyhow::anyhow!("the store is empty"))?;
    let middle = store
        .list(ListFilter {
            limit: n / 2,
            ..ListFilter::default()
        })
        .await?
        .last()
        .map(|r| r.notification.id);
    let cases: Vec<(&str, ListFilter)> = vec![
        ("newest page (50)", page.clone()),
        (
            "status = dead (dead letters, rare)",
            ListFilter {
                status: Some(DeliveryStatus::Dead),
                ..page.clone()
            },
        ),
        (
            "status = pending (2%)",
            ListFilter {
                status: Some(DeliveryStatus::Pending),
                ..page.clone()
            },
        ),
        (
            "status = delivered (most)",
            ListFilter {
                status: Some(DeliveryStatus::Delivered),
                ..page.clone()
            },
        ),
        (
            "channel = email",
            ListFilter {
                channel: Some("email".into()),
                ..page.clone()
            },
        ),
        (
            "severity = critical",
            ListFilter {
                severity: Some(Severity::Critical),
                ..page.clone()
            },
        ),
        (
            "page from the middle (cursor)",
            ListFilter {
                cursor: middle,
                ..page.clone()
            },
        ),
        (
            "dead on one channel",
            ListFilter {
                status: Some(DeliveryStatus::Dead),
                channel: Some("sms".into()),
                ..page.clone()
            },
        ),
    ];
    for (name, filter) in cases {
        let rare_dead = filter.status == Some(DeliveryStatus::Dead) && filter.channel.is_none();
        let d = time(list(filter)).await?;
        report.row(Row {
            figure: name,
            value: Fig::micros(d.as_micros() as u64),
            baseline: Some(if rare_dead {
                (
                    "the same by scanning notifications (before the status index)",
                    Fig::micros(dead_by_scan.as_micros() as u64),
                )
            } else {
                ("raw newest 50", Fig::micros(baseline.as_micros() as u64))
            }),
            goal: Some(Goal::Below(GOAL_US)),
        });
    }
    let s = store.clone();
    let detail = time(move || {
        let s = s.clone();
        async move {
            s.get(some_id)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    })
    .await?;
    report.row(Row {
        figure: "one notification with attempts",
        value: Fig::micros(detail.as_micros() as u64),
        baseline: Some(("raw newest 50", Fig::micros(baseline.as_micros() as u64))),
        goal: Some(Goal::Below(GOAL_US)),
    });
    let s = store.clone();
    let depth = time(move || {
        let s = s.clone();
        async move {
            s.depth(klaxon_store::DepthScope::All)
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    })
    .await?;
    report.row(Row {
        figure: "queue depth (every /status)",
        value: Fig::micros(depth.as_micros() as u64),
        baseline: Some(("raw newest 50", Fig::micros(baseline.as_micros() as u64))),
        goal: Some(Goal::Below(GOAL_US)),
    });
    report.note(format!(
        "{} notifications; medians of {RUNS} runs each, after one warm-up run.",
        int(n)
    ));
    Ok(())
}

/// The median of `RUNS` timed runs, after one warm-up.
async fn time<F, Fut>(mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?;
    let mut lat = Lat::micros();
    for _ in 0..RUNS {
        let t = Instant::now();
        f().await?;
        lat.record(t.elapsed());
    }
    Ok(Duration::from_micros(lat.q(0.5).value as u64))
}
