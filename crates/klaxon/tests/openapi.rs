//! The OpenAPI document: served, structurally valid (every `$ref` resolves, every operation
//! answers something), every described route exists in the real router, and real answers carry
//! no field the document does not describe.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use klaxon_fakes::webhook::WebhookSink;
use serde_json::{Value, json};

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// The property names a schema allows (through `$ref`, `allOf` and flattened parts).
fn properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let s = resolve(doc, schema);
    let mut out: BTreeSet<String> = s["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in s["allOf"].as_array().into_iter().flatten() {
        out.extend(properties(doc, part));
    }
    out
}

/// The schema of property `name`, through `$ref` and `allOf`.
fn property<'a>(doc: &'a Value, schema: &'a Value, name: &str) -> Option<&'a Value> {
    let s = resolve(doc, schema);
    if let Some(p) = s["properties"].get(name) {
        return Some(p);
    }
    s["allOf"]
        .as_array()?
        .iter()
        .find_map(|part| property(doc, part, name))
}

/// The schema of `path`'s `method` answer with `status`.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let s =
        &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"];
    assert!(!s.is_null(), "{method} {path} {status} has no JSON schema");
    s
}

/// Every key of `value` is described by `schema`.
fn assert_described(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let allowed = properties(doc, schema);
    for key in value.as_object().unwrap().keys() {
        assert!(
            allowed.contains(key),
            "{what}: `{key}` is not in the document ({allowed:?})"
        );
    }
}

const TV_SECRET: &str = "openapi-test-secret-0123";

#[tokio::test]
async fn the_document_is_valid_complete_and_true() {
    common::crypto();
    let sink = WebhookSink::start().await;
    let cfg = format!(
        "[tradingview]\nsecret = \"{TV_SECRET}\"\n[store]\nurl = \"{{db}}\"\n[delivery]\nhealth_interval = \"1h\"\n[delivery.retry]\nretries = 0\n[channels.hook]\nurl = \"{}\"\n",
        common::json_url(&sink)
    );
    let s = TestServer::start(&cfg).await;
    let (code, doc) = s.get("/api/openapi.json").await;
    assert_eq!(code, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Klaxon");

    // Every route the product has is described (PRODUCT.md §4 and the operator API).
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            described.insert(format!("{} {path}", method.to_uppercase()));
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} answers nothing");
            for r in responses.values() {
                if let Some(schema) = r["content"]["application/json"]["schema"].as_object() {
                    resolve(&doc, &Value::Object(schema.clone()));
                }
            }
            if path.starts_with("/api/v1/") {
                assert!(
                    op["security"].is_array(),
                    "{method} {path} does not say it needs the token"
                );
            }
        }
    }
    for route in [
        "POST /api/v1/notifications",
        "GET /api/v1/notifications",
        "POST /api/v1/notifications/batch",
        "GET /api/v1/notifications/{id}",
        "POST /api/v1/events",
        "GET /api/v1/channels",
        "GET /api/v1/channels/{name}",
        "PATCH /api/v1/channels/{name}",
        "POST /api/v1/channels/{name}/test",
        "GET /api/v1/dead-letters",
        "POST /api/v1/dead-letters/retry",
        "POST /api/v1/dead-letters/{id}/retry",
        "GET /health",
        "GET /ready",
        "GET /status",
        "GET /metrics",
        "GET /api/openapi.json",
        "GET /api/v1/events/stream",
        "GET /",
        "GET /dashboard/app.js",
        "GET /dashboard/app.css",
        "POST /hooks/tradingview/{secret}",
        "POST /hooks/alertmanager",
    ] {
        assert!(
            described.contains(route),
            "{route} is missing from the document"
        );
    }
    // …and every described route is served: no 405, no "no such route".
    for route in &described {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "hook")
            .replace("{secret}", TV_SECRET);
        let method: reqwest::Method = method.parse().unwrap();
        let r = s
            .http
            .request(method, s.url(&path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let streaming = r
            .headers()
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
        // The live stream never ends: its status says it is routed.
        let body: Value = if streaming {
            Value::Null
        } else {
            r.json().await.unwrap_or(Value::Null)
        };
        assert_ne!(code, 405, "{route}");
        assert!(
            !(code == 404
                && body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no such route"))),
            "{route} is described but not routed"
        );
    }

    // Real answers carry only described fields.
    let (code, accepted) = s
        .post("/api/v1/notifications", &json!({"title": "t", "message": "m", "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}]}))
        .await;
    assert_eq!(code, 202);
    assert_described(
        &doc,
        response_schema(&doc, "/api/v1/notifications", "post", "202"),
        &accepted,
        "accepted",
    );
    let id = accepted["id"].as_str().unwrap();
    let detail = s.wait_final(id, Duration::from_secs(10)).await;
    let schema = response_schema(&doc, "/api/v1/notifications/{id}", "get", "200");
    assert_described(&doc, schema, &detail, "notification");
    let deliveries = property(&doc, schema, "deliveries").expect("deliveries described");
    assert_described(
        &doc,
        &deliveries["items"],
        &detail["deliveries"][0],
        "delivery",
    );
    // A delivery's `attempts` is the list of attempts in the detail view and their count in the
    // history list, and the document says so for each (schemathesis found both described as
    // the count, and the list's attachments described with the `content_base64` it leaves out).
    let attempts = |schema: &Value| {
        let item = &property(&doc, schema, "deliveries").expect("deliveries")["items"];
        resolve(&doc, property(&doc, item, "attempts").expect("attempts"))["type"].clone()
    };
    assert!(detail["deliveries"][0]["attempts"].is_array());
    assert_eq!(attempts(schema), "array");
    let (_, list) = s.get("/api/v1/notifications").await;
    let page = response_schema(&doc, "/api/v1/notifications", "get", "200");
    let item = &property(&doc, page, "items").expect("items described")["items"];
    assert_described(&doc, item, &list["items"][0], "listed notification");
    assert!(list["items"][0]["deliveries"][0]["attempts"].is_u64());
    assert_eq!(attempts(item), "integer");
    let listed = &property(&doc, item, "attachments").expect("attachments")["items"];
    assert!(!properties(&doc, listed).contains("content_base64"));
    assert!(
        list["items"][0]["attachments"][0]
            .get("content_base64")
            .is_none()
    );
    let (_, status) = s.get("/status").await;
    assert_described(
        &doc,
        response_schema(&doc, "/status", "get", "200"),
        &status,
        "status",
    );
    let (_, channels) = s.get("/api/v1/channels").await;
    let cschema = response_schema(&doc, "/api/v1/channels/{name}", "get", "200");
    assert_described(&doc, cschema, &channels["channels"][0], "channel");
    let (code, err) = s
        .post(
            "/api/v1/notifications",
            &json!({"severity": "loud", "message": "m"}),
        )
        .await;
    assert_eq!(code, 400);
    assert_described(
        &doc,
        response_schema(&doc, "/api/v1/notifications", "post", "400"),
        &err,
        "error",
    );
    sink.set_status_for_all(400);
    let (_, dead) = s
        .post("/api/v1/notifications", &json!({"message": "dies"}))
        .await;
    s.wait_final(dead["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    let (_, letters) = s.get("/api/v1/dead-letters").await;
    let lschema = response_schema(&doc, "/api/v1/dead-letters", "get", "200");
    assert_described(&doc, lschema, &letters, "dead letters");
    let items = property(&doc, lschema, "items").expect("items described");
    assert_described(&doc, &items["items"], &letters["items"][0], "dead letter");
    s.stop().await;
}
