//! A fresh PostgreSQL database per test on the server named by `KLAXON_TEST_DATABASE_URL`,
//! dropped when the test ends: tests never see each other's rows, and CI's server stays clean.

use sqlx::Connection;

pub struct TestDatabase {
    /// The server's URL as given (the database the helper connects to for CREATE and DROP).
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// `None` (after a printed notice) when no server is configured and none is required;
    /// panics when `KLAXON_REQUIRE_SERVICES=1` and none is configured.
    pub async fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("KLAXON_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("KLAXON_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "KLAXON_REQUIRE_SERVICES=1 but KLAXON_TEST_DATABASE_URL is not set"
            );
            eprintln!("skipped: set KLAXON_TEST_DATABASE_URL to run the PostgreSQL tests");
            return None;
        };
        let name = format!(
            "klaxon_test_{:032x}",
            rand_suffix() ^ u128::from(std::process::id())
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to KLAXON_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of the fresh database reached through `host:port` instead (a proxy).
    pub fn url_via(&self, host_port: &str) -> String {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .unwrap_or(("postgres", &self.url));
        let (user, after) = rest.split_once('@').map_or(("", rest), |(u, a)| (u, a));
        let path = after.find('/').map_or("", |i| &after[i..]);
        let user = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        format!("{scheme}://{user}{host_port}{path}")
    }
}

fn rand_suffix() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A per-process counter keeps two databases created in the same nanosecond apart.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    t.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u128::from(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, which cannot be blocked on; a thread with its own
        // runtime does the DROP (FORCE: pools may still hold connections).
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
    }

    #[test]
    fn url_via_swaps_the_host() {
        let db = TestDatabase {
            admin_url: String::new(),
            name: "t".into(),
            url: "postgres://postgres@127.0.0.1:5432/t?sslmode=disable".into(),
        };
        assert_eq!(
            db.url_via("127.0.0.1:9999"),
            "postgres://postgres@127.0.0.1:9999/t?sslmode=disable"
        );
        std::mem::forget(db);
    }
}
