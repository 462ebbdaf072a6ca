//! Attachments end to end: a notification posted to the real service with files reaches the
//! strict fake Telegram (text, then one upload per file, each its own delivery) and the fake
//! Discord (one multipart message), and every delivery is recorded as delivered.

mod common;

use std::time::Duration;

use common::TestServer;
use klaxon_fakes::discord::FakeDiscord;
use klaxon_fakes::telegram::FakeTelegram;
use serde_json::json;

const TOKEN: &str = "123456:TEST-token_abc";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";
const CSV: &[u8] = b"cpu,mem\n93,71\n";

#[tokio::test]
async fn files_reach_telegram_and_discord() {
    let tg = FakeTelegram::start().await;
    let dc = FakeDiscord::start().await;
    let cfg = format!(
        "[store]\nurl = \"{{db}}\"\n\n[channels.tg]\nurl = \"tgram://{TOKEN}/111\"\n\n\
         [channels.dc]\nurl = \"discord://123/abc\"\n"
    );
    let s = TestServer::start_env(
        &cfg,
        &[
            ("KLAXON_TELEGRAM_API", &tg.url()),
            ("KLAXON_DISCORD_API", &dc.url()),
        ],
    )
    .await;
    let (code, v) = s
        .post(
            "/api/v1/notifications",
            &json!({
                "title": "Host <db1> hot",
                "message": "CPU 93%",
                "channels": ["tg", "dc"],
                "attachments": [
                    {"filename": "cpu.png", "content_type": "image/png",
                     "content_base64": "iVBORw0KGgoAAAANSUhEUg=="},
                    {"filename": "top.csv", "content_type": "text/csv",
                     "content_base64": "Y3B1LG1lbQo5Myw3MQo="},
                ],
            }),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let v = s.wait_final(id, Duration::from_secs(30)).await;

    let mut got: Vec<(String, String, String)> = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap().to_string(),
                d["target"].as_str().unwrap_or("").to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String, String)> = [
        ("dc", ""),
        ("tg", "111"),
        ("tg", "111#att1"),
        ("tg", "111#att2"),
    ]
    .iter()
    .map(|(c, t)| (c.to_string(), t.to_string(), "delivered".to_string()))
    .collect();
    assert_eq!(got, want, "{v:#}");

    assert_eq!(tg.messages().len(), 1);
    let files = tg.files();
    assert_eq!(files.len(), 2, "{:?}", tg.rejected());
    let photo = files.iter().find(|f| f.method == "sendPhoto").unwrap();
    assert_eq!(photo.bytes, PNG);
    assert_eq!(
        photo.caption_plain.as_deref(),
        Some("ℹ️ Host <db1> hot\n📎 cpu.png")
    );
    let doc = files.iter().find(|f| f.method == "sendDocument").unwrap();
    assert_eq!(
        (doc.filename.as_deref(), doc.bytes.as_slice()),
        (Some("top.csv"), CSV)
    );
    assert_eq!(tg.count_429(), 0);

    let msgs = dc.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.body["embeds"][0]["title"], "ℹ️ Host <db1> hot");
    let names: Vec<&str> = m.files.iter().map(|f| f.filename.as_str()).collect();
    assert_eq!(names, ["cpu.png", "top.csv"]);
    assert_eq!(
        (m.files[0].bytes.as_slice(), m.files[1].bytes.as_slice()),
        (PNG, CSV)
    );
    s.stop().await;
}
