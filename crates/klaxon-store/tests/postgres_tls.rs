//! The PostgreSQL store over TLS (`?sslmode=require`, as managed databases ask), against the
//! real server on this machine (`KLAXON_TEST_DATABASE_URL`), when that server has TLS on.
//! `verify-full` checks the certificate: the server here has a self-signed one, which it refuses.

use sqlx::Connection;

use klaxon_store::testing::PgDb;

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

#[tokio::test]
async fn the_store_connects_over_tls_when_asked() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut plain = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    if ssl != "on" {
        eprintln!("skipped: the test PostgreSQL server has ssl = {ssl}");
        return;
    }
    let store = klaxon_store::open(&with_param(&db.url, "sslmode=require"))
        .await
        .expect("the store opens over TLS");
    store.migrate().await.unwrap();
    assert!(
        store
            .depth(klaxon_store::DepthScope::All)
            .await
            .unwrap()
            .is_empty()
    );
    // Every connection the store holds to this database is encrypted.
    let (store_conns, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database() \
         AND a.pid <> pg_backend_pid()",
    )
    .fetch_one(&mut plain)
    .await
    .unwrap();
    assert!(store_conns > 0);
    assert_eq!(
        encrypted, store_conns,
        "a store connection is not encrypted"
    );

    // verify-full checks the certificate against the system's roots: a self-signed one fails,
    // with the reason and without the password.
    let url = with_param(&db.url, "sslmode=verify-full");
    match klaxon_store::open(&url).await {
        Ok(s) => {
            // The pool connects lazily on some versions: the first query must fail then.
            assert!(
                s.depth(klaxon_store::DepthScope::All).await.is_err(),
                "verify-full accepted a self-signed certificate"
            );
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.to_lowercase().contains("certificate") || text.contains("tls"),
                "{text}"
            );
        }
    }
    plain.close().await.ok();
}
