//! `FakeTelegram`: envelope, validation, markup, chats, rate limits, failure injection.

use std::time::{Duration, Instant};

use klaxon_fakes::FailMode;
use klaxon_fakes::telegram::{
    DEFAULT_TOKEN, FakeTelegram, MAX_CAPTION_UTF16, MAX_DOCUMENT_BYTES, MAX_PHOTO_BYTES,
    MAX_TEXT_UTF16,
};
use serde_json::{Value, json};

use crate::{client, header, send};

fn method_url(fake: &FakeTelegram, method: &str) -> String {
    format!("{}/bot{DEFAULT_TOKEN}/{method}", fake.url())
}

async fn send_json(fake: &FakeTelegram, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    send(client().post(method_url(fake, "sendMessage")).json(&body)).await
}

#[tokio::test]
async fn get_me_token_and_routing() {
    let fake = FakeTelegram::start().await;
    let (status, _, body) = send(client().get(method_url(&fake, "getMe"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"ok": true, "result": {"id": 123456, "is_bot": true, "first_name": "Fake",
            "username": "fake_bot", "can_join_groups": true,
            "can_read_all_group_messages": false, "supports_inline_queries": false}})
    );
    // Method names are case-insensitive.
    let (status, _, _) = send(client().post(method_url(&fake, "GETME"))).await;
    assert_eq!(status, 200);

    let wrong = format!("{}/bot999:nope/getMe", fake.url());
    let (status, _, body) = send(client().get(wrong)).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );

    fake.with_token("42:other");
    let (status, _, body) = send(client().get(format!("{}/bot42:other/getMe", fake.url()))).await;
    assert_eq!((status, &body["result"]["id"]), (200, &json!(42)));

    let (status, _, body) = send(client().get(method_url(&fake, "sendPigeon"))).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found"})
    );
    assert_eq!(fake.requests(), 5);
    assert_eq!(fake.rejected().len(), 2);
}

#[tokio::test]
async fn send_message_json_is_recorded() {
    let fake = FakeTelegram::start().await;
    let (status, _, body) = send_json(
        &fake,
        json!({
            "chat_id": -1001234567890_i64,
            "text": "<b>Disk</b> at 95% &amp; rising",
            "parse_mode": "HTML",
            "disable_notification": true,
            "message_thread_id": 7,
            "link_preview_options": {"is_disabled": true},
            "reply_markup": {"inline_keyboard": [[{"text": "Ack", "callback_data": "ack:42"}]]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    let result = &body["result"];
    assert_eq!(result["message_id"], 1);
    assert_eq!(result["chat"]["id"], -1001234567890_i64);
    assert_eq!(result["text"], "Disk at 95% & rising");
    assert!(result["date"].as_i64().is_some_and(|d| d > 1_600_000_000));

    let (_, _, second) = send_json(&fake, json!({"chat_id": "@alerts", "text": "two"})).await;
    assert_eq!(second["result"]["message_id"], 2, "ids increase");

    let messages = fake.messages();
    assert_eq!(messages.len(), 2);
    let first = &messages[0];
    assert_eq!(first.token, DEFAULT_TOKEN);
    assert_eq!(first.chat_id, "-1001234567890");
    assert_eq!(first.text, "<b>Disk</b> at 95% &amp; rising");
    assert_eq!(first.plain, "Disk at 95% & rising");
    assert_eq!(first.parse_mode.as_deref(), Some("HTML"));
    assert!(first.disable_notification);
    assert_eq!(first.message_thread_id, Some(7));
    assert!(first.link_preview_disabled);
    assert_eq!(
        first.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        "ack:42"
    );
    assert_eq!(messages[1].chat_id, "@alerts");
    assert!(!messages[1].disable_notification);
}

#[tokio::test]
async fn form_and_query_bodies_are_accepted() {
    let fake = FakeTelegram::start().await;
    let form = "chat_id=5&text=hello%20*world*&parse_mode=MarkdownV2\
                &link_preview_options=%7B%22is_disabled%22%3Atrue%7D";
    let request = client()
        .post(method_url(&fake, "sendmessage"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let (status, _, body) = send(request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], "hello world");

    let url = format!(
        "{}?chat_id=6&text=q&disable_web_page_preview=true",
        method_url(&fake, "sendMessage")
    );
    let (status, _, _) = send(client().get(url)).await;
    assert_eq!(status, 200);

    let messages = fake.messages();
    assert_eq!(messages[0].parse_mode.as_deref(), Some("MarkdownV2"));
    assert!(messages[0].link_preview_disabled);
    assert_eq!(messages[1].chat_id, "6");
    assert!(messages[1].link_preview_disabled);
}

#[tokio::test]
async fn invalid_requests_get_telegram_errors() {
    let fake = FakeTelegram::start().await;
    let cases = [
        (json!({"text": "x"}), "Bad Request: chat_id is empty"),
        (
            json!({"chat_id": "", "text": "x"}),
            "Bad Request: chat_id is empty",
        ),
        (json!({"chat_id": 1}), "Bad Request: message text is empty"),
        (
            json!({"chat_id": 1, "text": ""}),
            "Bad Request: message text is empty",
        ),
        (
            json!({"chat_id": 1, "text": "<b> </b>", "parse_mode": "HTML"}),
            "Bad Request: message text is empty",
        ),
        (
            json!({"chat_id": 1, "text": "x".repeat(MAX_TEXT_UTF16 + 1)}),
            "Bad Request: message is too long",
        ),
        // 2049 emoji are 2049 characters but 4098 UTF-16 code units.
        (
            json!({"chat_id": 1, "text": "🚨".repeat(2049)}),
            "Bad Request: message is too long",
        ),
        (
            json!({"chat_id": 1, "text": "x", "parse_mode": "rst"}),
            "Bad Request: unsupported parse_mode",
        ),
        (
            json!({"chat_id": 1, "text": "a < b", "parse_mode": "html"}),
            "Bad Request: can't parse entities: Unsupported start tag \"\" at byte offset 2",
        ),
        (
            json!({"chat_id": 1, "text": "<b>bold", "parse_mode": "HTML"}),
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
        ),
        (
            json!({"chat_id": 1, "text": "Disk at 95.5%", "parse_mode": "MarkdownV2"}),
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
        ),
        (
            json!({"chat_id": 1, "text": "*bold", "parse_mode": "MarkdownV2"}),
            "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0",
        ),
    ];
    for (request, description) in cases {
        let (status, _, body) = send_json(&fake, request.clone()).await;
        assert_eq!(status, 400, "{request}");
        assert_eq!(
            body,
            json!({"ok": false, "error_code": 400, "description": description}),
            "{request}"
        );
    }
    let button =
        |b: Value| json!({"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[b]]}});
    for (markup, description) in [
        (
            button(json!({"text": "Ack", "callback_data": "a".repeat(65)})),
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            button(json!({"text": "Ack"})),
            "Bad Request: text buttons are unallowed in the inline keyboard",
        ),
        (
            json!({"chat_id": 1, "text": "x", "reply_markup": "{broken"}),
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
    ] {
        let (status, _, body) = send_json(&fake, markup).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some(description))
        );
    }
    // Exactly at the limit is fine (4096 UTF-16 units = 2048 emoji).
    let (status, _, _) = send_json(&fake, json!({"chat_id": 1, "text": "🚨".repeat(2048)})).await;
    assert_eq!(status, 200);

    let request = client()
        .post(method_url(&fake, "sendMessage"))
        .header("content-type", "application/json")
        .body("{not json");
    let (status, _, _) = send(request).await;
    assert_eq!(status, 400);
    assert!(
        fake.messages().len() == 1,
        "only the valid message is recorded"
    );
    assert!(fake.rejected().iter().all(|(status, _)| *status == 400));
}

#[tokio::test]
async fn chat_not_found_and_migration() {
    let fake = FakeTelegram::start().await;
    fake.chat_not_found(77);
    fake.chat_not_found("@Gone");
    fake.migrate(-100, -1001111);
    for chat in [json!(77), json!("77"), json!("@gone")] {
        let (status, _, body) = send_json(&fake, json!({"chat_id": chat, "text": "x"})).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some("Bad Request: chat not found"))
        );
    }
    let (status, _, body) = send_json(&fake, json!({"chat_id": -100, "text": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 400,
            "description": "Bad Request: group chat was migrated to a supergroup chat",
            "parameters": {"migrate_to_chat_id": -1001111}})
    );
    let (status, _, _) = send_json(&fake, json!({"chat_id": -1001111, "text": "x"})).await;
    assert_eq!(status, 200);
}

fn assert_429(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) -> u64 {
    assert_eq!(status, 429, "{body}");
    let retry_after = body["parameters"]["retry_after"]
        .as_u64()
        .expect("retry_after");
    assert!(retry_after >= 1);
    assert_eq!(
        body["description"],
        format!("Too Many Requests: retry after {retry_after}")
    );
    assert_eq!(body["error_code"], 429);
    assert_eq!(header(headers, "retry-after"), retry_after.to_string());
    retry_after
}

#[tokio::test]
async fn per_chat_burst_then_429() {
    let fake = FakeTelegram::start().await;
    for _ in 0..3 {
        let (status, _, _) = send_json(&fake, json!({"chat_id": 1, "text": "x"})).await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) = send_json(&fake, json!({"chat_id": 1, "text": "x"})).await;
    let retry_after = assert_429(status, &headers, &body);
    assert!(retry_after <= 3);
    // Another chat is not affected.
    let (status, _, _) = send_json(&fake, json!({"chat_id": 2, "text": "x"})).await;
    assert_eq!(status, 200);
    assert_eq!(fake.count_429(), 1);
    assert_eq!(fake.messages().len(), 4);
}

#[tokio::test]
async fn per_group_and_per_bot_limits() {
    let fake = FakeTelegram::start().await;
    fake.set_limits((100, Duration::from_secs(1)), 2, 100);
    for _ in 0..2 {
        assert_eq!(
            send_json(&fake, json!({"chat_id": -5, "text": "x"}))
                .await
                .0,
            200
        );
    }
    let (status, headers, body) = send_json(&fake, json!({"chat_id": -5, "text": "x"})).await;
    assert!(
        assert_429(status, &headers, &body) > 50,
        "the group window is a minute"
    );
    // Private chats are not groups.
    for _ in 0..3 {
        assert_eq!(
            send_json(&fake, json!({"chat_id": 5, "text": "x"})).await.0,
            200
        );
    }

    fake.set_limits((100, Duration::from_secs(1)), 100, 6);
    // 5 accepted so far within the last second (unless the machine is very slow): one more
    // fits, then the bot is over its per-second budget whatever the chat.
    let mut statuses = Vec::new();
    for chat in 10..13 {
        statuses.push(
            send_json(&fake, json!({"chat_id": chat, "text": "x"}))
                .await
                .0,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(fake.count_429() >= 2);
}

#[tokio::test]
async fn forced_retry_after_counts_early_requests() {
    let fake = FakeTelegram::start().await;
    fake.force_429(1);
    // getMe is not affected by a sendMessage flood-wait.
    assert_eq!(send(client().get(method_url(&fake, "getMe"))).await.0, 200);
    let (status, headers, body) = send_json(&fake, json!({"chat_id": 1, "text": "x"})).await;
    assert_eq!(assert_429(status, &headers, &body), 1);
    assert_eq!(fake.early_requests(), 0);
    let (status, _, _) = send_json(&fake, json!({"chat_id": 1, "text": "x"})).await;
    assert_eq!(status, 429);
    assert_eq!(fake.early_requests(), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = send_json(&fake, json!({"chat_id": 1, "text": "x"})).await;
    assert_eq!(status, 200);
    assert_eq!(fake.early_requests(), 1);
    assert_eq!(fake.count_429(), 2);
}

#[tokio::test]
async fn failure_injection() {
    let fake = FakeTelegram::start().await;
    fake.fail_next(2, 502);
    for _ in 0..2 {
        let (status, _, body) = send_json(&fake, json!({"chat_id": 1, "text": "x"})).await;
        assert_eq!(status, 502);
        assert_eq!(
            body,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
        );
    }
    assert_eq!(
        send_json(&fake, json!({"chat_id": 1, "text": "x"})).await.0,
        200
    );

    fake.set_fail(FailMode::Status(429));
    let (status, headers, body) = send_json(&fake, json!({"chat_id": 2, "text": "x"})).await;
    assert_eq!(assert_429(status, &headers, &body), 1);

    fake.set_fail(FailMode::Slow(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(
        send_json(&fake, json!({"chat_id": 3, "text": "x"})).await.0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    fake.set_fail(FailMode::None);
    assert_eq!(
        send_json(&fake, json!({"chat_id": 4, "text": "x"})).await.0,
        200
    );
    assert_eq!(
        fake.rejected(),
        vec![
            (502, "Bad Gateway".to_owned()),
            (502, "Bad Gateway".to_owned()),
            (429, "Too Many Requests: retry after 1".to_owned()),
        ]
    );
}

fn upload(field: &str, name: &str, bytes: Vec<u8>) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("image/png")
        .expect("a valid type");
    reqwest::multipart::Form::new()
        .text("chat_id", "5")
        .part(field.to_owned(), part)
}

async fn send_form(
    fake: &FakeTelegram,
    method: &str,
    form: reqwest::multipart::Form,
) -> (u16, Value) {
    let (status, _, body) = send(client().post(method_url(fake, method)).multipart(form)).await;
    (status, body)
}

#[tokio::test]
async fn uploads_are_multipart_and_recorded() {
    let fake = FakeTelegram::start().await;
    let form = upload("photo", "c.png", vec![1, 2, 3])
        .text("caption", "<b>Chart</b> &amp; more")
        .text("parse_mode", "HTML")
        .text("message_thread_id", "9")
        .text("disable_notification", "true");
    let (status, body) = send_form(&fake, "sendPhoto", form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["caption"], "Chart & more");
    assert_eq!(body["result"]["photo"][0]["file_size"], 3);
    let (status, body) = send_form(
        &fake,
        "senddocument",
        upload("document", "r.pdf", vec![9; 10]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["document"]["file_name"], "r.pdf");

    let files = fake.files();
    assert_eq!(files.len(), 2);
    let photo = &files[0];
    assert_eq!(
        (
            photo.method.as_str(),
            photo.chat_id.as_str(),
            photo.filename.as_deref()
        ),
        ("sendPhoto", "5", Some("c.png"))
    );
    assert_eq!(photo.content_type.as_deref(), Some("image/png"));
    assert_eq!(photo.bytes, [1, 2, 3]);
    assert_eq!(photo.caption_plain.as_deref(), Some("Chart & more"));
    assert_eq!(photo.message_thread_id, Some(9));
    assert!(photo.disable_notification);
    assert_eq!(files[1].method, "sendDocument");
    assert_eq!(files[1].caption, None);
    assert!(fake.messages().is_empty(), "files are not text messages");
}

#[tokio::test]
async fn invalid_uploads_get_telegram_errors() {
    let fake = FakeTelegram::start().await;
    let cases = [
        (
            "sendPhoto",
            reqwest::multipart::Form::new().text("chat_id", "5"),
            400,
            "Bad Request: there is no photo in the request",
        ),
        (
            "sendDocument",
            reqwest::multipart::Form::new()
                .text("chat_id", "5")
                .text("document", "https://example.com/a.pdf"),
            400,
            "Bad Request: wrong file identifier/HTTP URL specified",
        ),
        (
            "sendDocument",
            upload("document", "empty.txt", Vec::new()),
            400,
            "Bad Request: file must be non-empty",
        ),
        (
            "sendPhoto",
            upload("photo", "c.png", vec![1]).text("caption", "é".repeat(MAX_CAPTION_UTF16 + 1)),
            400,
            "Bad Request: message caption is too long",
        ),
        (
            "sendPhoto",
            upload("photo", "c.png", vec![1])
                .text("caption", "<b>open")
                .text("parse_mode", "HTML"),
            400,
            "Bad Request: can't parse entities: ",
        ),
        (
            "sendPhoto",
            upload("photo", "big.png", vec![0; MAX_PHOTO_BYTES + 1]),
            413,
            "Request Entity Too Large",
        ),
        (
            "sendDocument",
            upload("document", "big.bin", vec![0; MAX_DOCUMENT_BYTES + 1]),
            413,
            "Request Entity Too Large",
        ),
    ];
    for (method, form, code, description) in cases {
        let (status, body) = send_form(&fake, method, form).await;
        assert_eq!(status, code, "{body}");
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .starts_with(description),
            "{body}"
        );
    }
    // Files are uploads: a JSON body cannot carry one.
    let (status, _, body) = send(
        client()
            .post(method_url(&fake, "sendPhoto"))
            .json(&json!({"chat_id": 5, "photo": "AgAD"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        "Bad Request: wrong file identifier/HTTP URL specified"
    );
    // A caption exactly at the limit is fine.
    let form = upload("photo", "c.png", vec![1]).text("caption", "é".repeat(MAX_CAPTION_UTF16));
    assert_eq!(send_form(&fake, "sendPhoto", form).await.0, 200);
    assert_eq!(fake.files().len(), 1);
}

#[tokio::test]
async fn uploads_share_the_message_rate_limits() {
    let fake = FakeTelegram::start().await;
    fake.set_limits((2, Duration::from_secs(3)), 100, 100);
    let (status, _, _) = send_json(&fake, json!({"chat_id": 5, "text": "x"})).await;
    assert_eq!(status, 200);
    let (status, _) = send_form(&fake, "sendPhoto", upload("photo", "c.png", vec![1])).await;
    assert_eq!(status, 200);
    let (status, body) = send_form(&fake, "sendDocument", upload("document", "d", vec![1])).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["parameters"]["retry_after"].as_u64().is_some());

    fake.force_429(2);
    let (status, _) = send_form(&fake, "sendPhoto", upload("photo", "c.png", vec![1])).await;
    assert_eq!(status, 429);
    let (status, _, _) = send_json(&fake, json!({"chat_id": 6, "text": "x"})).await;
    assert_eq!(status, 429, "a flood wait holds every send");
    assert_eq!(fake.early_requests(), 1);
}
