//! For tests, here and in the crates above: a fresh PostgreSQL database per test on the server
//! named by `KLAXON_TEST_DATABASE_URL`, dropped when the test ends (also when it fails).
//! Without that variable a test prints a notice and passes, unless `KLAXON_REQUIRE_SERVICES=1`.

/// A fresh PostgreSQL database for one test, dropped with this value.
pub struct PgDb {
    /// The server's URL as given (the database the test connects to for CREATE and DROP).
    admin_url: String,
    name: String,
    /// The URL of the fresh database.
    pub url: String,
}

impl PgDb {
    /// The fresh database's URL reached through `host:port` instead (a proxy in front).
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

    /// `None` (after a notice) when no server is configured and none is required.
    pub async fn create() -> Option<PgDb> {
        use sqlx::Connection;
        let Ok(admin_url) = std::env::var("KLAXON_TEST_DATABASE_URL") else {
            if std::env::var("KLAXON_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("KLAXON_REQUIRE_SERVICES=1 but KLAXON_TEST_DATABASE_URL is not set");
            }
            eprintln!("skipped: set KLAXON_TEST_DATABASE_URL to run the PostgreSQL store tests");
            return None;
        };
        let name = format!("klaxon_test_{}", klaxon_core::model::new_id().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to KLAXON_TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(PgDb {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own runtime does the DROP (FORCE: the store's pool may still hold connections).
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
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
#[test]
fn with_database_replaces_only_the_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
        "postgresql://u:p@h/t2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
}
