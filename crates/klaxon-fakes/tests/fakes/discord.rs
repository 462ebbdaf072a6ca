//! `FakeDiscord`: execute-webhook answers, validation errors, buckets, failure injection.

use std::time::Duration;

use klaxon_fakes::discord::FakeDiscord;
use serde_json::{Value, json};

use crate::{client, header, send};

fn hook_url(fake: &FakeDiscord, query: &str) -> String {
    format!("{}/api/webhooks/123/abc{query}", fake.url())
}

async fn post(
    fake: &FakeDiscord,
    query: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    send(client().post(hook_url(fake, query)).json(&body)).await
}

#[tokio::test]
async fn accepts_and_records_messages() {
    let fake = FakeDiscord::start().await;
    let (status, headers, body) = post(&fake, "", json!({"content": "hi"})).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_eq!(header(&headers, "x-ratelimit-limit"), "5");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "4");

    let embed = json!({"title": "Disk", "color": 0xFF0000, "timestamp": "2026-01-01T00:00:00Z"});
    let (status, _, first) = post(
        &fake,
        "?wait=true&thread_id=555",
        json!({"embeds": [embed]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["channel_id"], "555");
    assert_eq!(first["embeds"][0]["title"], "Disk");
    assert_eq!(first["content"], "");
    let (_, _, second) = post(&fake, "?wait=true", json!({"content": "again"})).await;
    assert_eq!(second["content"], "again");
    let id = |v: &Value| {
        v["id"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .expect("id")
    };
    assert!(id(&second) > id(&first), "snowflakes increase");

    let messages = fake.messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0].webhook_id, "123");
    assert_eq!(messages[0].body, json!({"content": "hi"}));
    assert!(!messages[0].wait);
    assert!(messages[1].wait);
    assert_eq!(messages[1].thread_id.as_deref(), Some("555"));
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn unknown_and_deleted_webhooks() {
    let fake = FakeDiscord::start().await;
    let wrong_token = format!("{}/api/webhooks/123/nope", fake.url());
    let (status, _, body) = send(client().post(wrong_token).json(&json!({"content": "x"}))).await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "Unknown Webhook", "code": 10015}))
    );

    fake.add_webhook("9", "tok");
    let url = format!("{}/api/v10/webhooks/9/tok", fake.url());
    assert_eq!(
        send(client().post(&url).json(&json!({"content": "x"})))
            .await
            .0,
        204
    );
    fake.delete_webhook("9");
    let (status, _, body) = send(client().post(&url).json(&json!({"content": "x"}))).await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(10015)));
}

#[tokio::test]
async fn invalid_bodies_get_discord_errors() {
    let fake = FakeDiscord::start().await;
    // Plenty of room in the bucket for this test.
    fake.set_limit(100, Duration::from_secs(2));

    let (status, _, body) = post(&fake, "", json!({"embeds": [{"title": "x".repeat(257)}]})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"code": 50035, "message": "Invalid Form Body", "errors": {"embeds": {"0": {"title":
            {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}]}}}}})
    );

    let (status, _, body) = post(&fake, "", json!({"content": "x".repeat(2001)})).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(50035)));
    assert!(body["errors"]["content"]["_errors"].is_array());

    let (status, _, body) = post(&fake, "", json!({"content": ""})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 50006, "message": "Cannot send an empty message"})
        )
    );

    let broken = client()
        .post(hook_url(&fake, ""))
        .header("content-type", "application/json")
        .body("{\"content\":");
    let (status, _, body) = send(broken).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 50109, "message": "The request body contains invalid JSON."})
        )
    );

    let untyped = client()
        .post(hook_url(&fake, ""))
        .body("{\"content\":\"x\"}");
    let (status, _, body) = send(untyped).await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(50006)));

    // GET is Discord's Get Webhook with Token: the webhook, nothing posted.
    let (status, _, body) = send(client().get(hook_url(&fake, ""))).await;
    assert_eq!((status, body["type"].as_i64()), (200, Some(1)));
    let (status, _, _) = send(client().put(hook_url(&fake, ""))).await;
    assert_eq!(status, 405);
    assert!(fake.messages().is_empty());
    assert_eq!(fake.rejected().len(), 6);
}

#[tokio::test]
async fn bucket_answers_429_with_headers() {
    let fake = FakeDiscord::start().await;
    for remaining in (0..5).rev() {
        let (status, headers, _) = post(&fake, "", json!({"content": "x"})).await;
        assert_eq!(status, 204);
        assert_eq!(
            header(&headers, "x-ratelimit-remaining"),
            remaining.to_string()
        );
        let reset_after: f64 = header(&headers, "x-ratelimit-reset-after")
            .parse()
            .expect("float");
        assert!(reset_after > 0.0 && reset_after <= 2.0);
        let reset: f64 = header(&headers, "x-ratelimit-reset")
            .parse()
            .expect("float");
        assert!(reset > 1_600_000_000.0);
        assert!(!header(&headers, "x-ratelimit-bucket").is_empty());
    }
    let (status, headers, body) = post(&fake, "", json!({"content": "x"})).await;
    assert_eq!(status, 429);
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    let retry_after = body["retry_after"].as_f64().expect("float");
    assert!(retry_after > 0.0 && retry_after <= 2.0);
    assert_eq!(
        header(&headers, "retry-after"),
        (retry_after.ceil() as u64).max(1).to_string()
    );
    assert_eq!(header(&headers, "x-ratelimit-scope"), "user");
    assert_eq!(header(&headers, "x-ratelimit-remaining"), "0");
    assert_eq!(fake.count_429(), 1);
    assert_eq!(fake.messages().len(), 5);

    // Once the window has passed, the bucket refills.
    tokio::time::sleep(Duration::from_secs_f64(retry_after + 0.05)).await;
    assert_eq!(post(&fake, "", json!({"content": "x"})).await.0, 204);
}

#[tokio::test]
async fn failure_injection() {
    let fake = FakeDiscord::start().await;
    fake.fail_next(1, 503);
    let (status, _, body) = post(&fake, "", json!({"content": "x"})).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"message": "503: Service Unavailable", "code": 0})
        )
    );
    fake.set_fail(klaxon_fakes::FailMode::Status(429));
    let (status, headers, body) = post(&fake, "", json!({"content": "x"})).await;
    assert_eq!((status, header(&headers, "retry-after")), (429, "1"));
    assert_eq!(body["retry_after"], 1.0);
    fake.set_fail(klaxon_fakes::FailMode::None);
    assert_eq!(post(&fake, "", json!({"content": "x"})).await.0, 204);
    assert_eq!(fake.count_429(), 1);
}

fn file_part(name: &str, bytes: Vec<u8>) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned())
}

async fn post_form(fake: &FakeDiscord, form: reqwest::multipart::Form) -> (u16, Value) {
    let (status, _, body) = send(client().post(hook_url(fake, "?wait=true")).multipart(form)).await;
    (status, body)
}

#[tokio::test]
async fn multipart_messages_carry_files() {
    let fake = FakeDiscord::start().await;
    let payload = json!({
        "embeds": [{"title": "Report"}],
        "attachments": [{"id": 0, "filename": "a.csv"}, {"id": "1", "filename": "b.png"}],
    });
    let form = reqwest::multipart::Form::new()
        .text("payload_json", payload.to_string())
        .part(
            "files[0]",
            file_part("a.csv", b"x,y\n1,2\n".to_vec())
                .mime_str("text/csv")
                .unwrap(),
        )
        .part("files[1]", file_part("b.png", vec![0, 159, 146, 150]));
    let (status, body) = post_form(&fake, form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["embeds"][0]["title"], "Report");
    assert_eq!(body["attachments"][1]["filename"], "b.png");
    assert_eq!(body["attachments"][1]["size"], 4);

    let m = &fake.messages()[0];
    assert_eq!(m.body, payload);
    assert_eq!(m.files.len(), 2);
    assert_eq!(
        (m.files[0].index, m.files[0].filename.as_str()),
        (0, "a.csv")
    );
    assert_eq!(m.files[0].content_type.as_deref(), Some("text/csv"));
    assert_eq!(m.files[0].bytes, b"x,y\n1,2\n");
    assert_eq!(m.files[1].bytes, [0, 159, 146, 150]);

    // Files alone are a message too.
    let form =
        reqwest::multipart::Form::new().part("files[0]", file_part("only.txt", b"hi".to_vec()));
    assert_eq!(post_form(&fake, form).await.0, 200);
}

#[tokio::test]
async fn multipart_bodies_are_validated() {
    let fake = FakeDiscord::start().await;
    fake.set_limit(100, Duration::from_secs(1));
    let form = |payload: String| reqwest::multipart::Form::new().text("payload_json", payload);

    // The payload obeys the same limits as a JSON body.
    let long = json!({"embeds": [{"title": "t".repeat(257)}]}).to_string();
    let (status, body) = post_form(&fake, form(long)).await;
    assert_eq!((status, &body["code"]), (400, &json!(50035)), "{body}");
    assert!(body["errors"]["embeds"]["0"]["title"]["_errors"].is_array());

    let (status, body) = post_form(&fake, form("{nope".into())).await;
    assert_eq!((status, &body["code"]), (400, &json!(50109)), "{body}");

    let (status, body) = post_form(&fake, form("{}".into())).await;
    assert_eq!((status, &body["code"]), (400, &json!(50006)), "{body}");

    // An attachment must name an uploaded part.
    let payload = json!({"content": "x", "attachments": [{"id": 3, "filename": "a"}]});
    let f = form(payload.to_string()).part("files[0]", file_part("a", b"a".to_vec()));
    let (status, body) = post_form(&fake, f).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"]["attachments"]["0"]["id"]["_errors"][0]["code"],
        "ATTACHMENT_NOT_FOUND"
    );

    let mut f = form(json!({"content": "x"}).to_string());
    for i in 0..11 {
        f = f.part(format!("files[{i}]"), file_part("a", b"a".to_vec()));
    }
    let (status, body) = post_form(&fake, f).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"]["attachments"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );

    fake.set_upload_limit(1000);
    let f =
        form(json!({"content": "x"}).to_string()).part("files[0]", file_part("a", vec![0; 1000]));
    let (status, body) = post_form(&fake, f).await;
    assert_eq!((status, &body["code"]), (413, &json!(40005)), "{body}");
    assert!(fake.messages().is_empty());
}
