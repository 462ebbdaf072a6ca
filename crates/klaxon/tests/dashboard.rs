//! The dashboard's files over HTTP: served by the binary at `/`, public (they hold no data) even
//! with an API token, under a strict content-security policy, and loading nothing from
//! elsewhere. What the page does is tested in a real browser in `browser.rs`.

mod common;

use common::TestServer;

const CFG: &str = r#"
[server]
api_token = "tok-123456"
[store]
url = "{db}"
[delivery]
health_interval = "1h"
[channels.log]
url = "log://"
"#;

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    common::crypto();
    let s = TestServer::start(CFG).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "{path} is public: the token is asked for by the page"
        );
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(h["referrer-policy"], "no-referrer");
        let body = r.text().await.unwrap();
        // Nothing from the internet: the only absolute URL is the SVG namespace.
        let external = body
            .replace("http://www.w3.org/2000/svg", "")
            .matches("://")
            .count();
        assert_eq!(external, 0, "{path} refers to another origin");
    }
    // The data still needs the token.
    let r = s.http.get(s.url("/api/v1/channels")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}
