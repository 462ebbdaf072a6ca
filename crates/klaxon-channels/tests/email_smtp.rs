//! The email channel against a real SMTP server (aiosmtpd, `tests/smtp/server.py`) with
//! STARTTLS and AUTH required: what arrives is parsed as MIME and checked field by field, and
//! every reply class the server can give is driven through a real SMTP dialogue.
//!
//! The server (`klaxon_fakes::smtp`) runs on the interpreter named by `KLAXON_TEST_SMTP_PYTHON`
//! (`.ci/run` makes a venv from `crates/klaxon-fakes/smtp/requirements.txt`). Without it these tests say so and pass, unless
//! `KLAXON_REQUIRE_SERVICES=1`, as in CI, where a missing server is a failure.

use std::time::Duration;

use base64::Engine as _;
use klaxon_channels::email::Email;
use klaxon_channels::{Channel, HealthState, SendContext};
use klaxon_core::channel_url::{EmailSpec, SmtpTls};
use klaxon_core::model::Attachment;
use klaxon_core::render::email::subject;
use klaxon_core::{Notification, Secret, Severity, Verdict};
use klaxon_fakes::smtp::{ReceivedMail, SmtpMode as Mode, SmtpServer, python};
use mailparse::{MailHeaderMap, ParsedMail, parse_mail};
use uuid::Uuid;

const USER: &str = "alerts-bot";
const PASSWORD: &str = "Tr0ub4dor&3-smtp-secret";
const TIMEOUT: Duration = Duration::from_secs(10);

/// The test server as this file uses it: the test user, and a spec to reach it.
struct Server(SmtpServer);

impl Server {
    fn start(python: &str, mode: Mode) -> Server {
        Server(SmtpServer::start(python, mode, USER, PASSWORD))
    }

    fn spec(&self, tls: SmtpTls) -> EmailSpec {
        let mut spec = spec_at(self.0.port(), tls);
        spec.from_name = Some("Klaxon Alerts".into());
        // The test certificate is self-signed; `verify_on_self_signed_cert_rejects_with_hint`
        // covers the verifying path.
        spec.verify = false;
        spec
    }

    fn received(&self) -> Vec<ReceivedMail> {
        self.0.received()
    }
}

/// A channel to 127.0.0.1:`port` as the test user, verifying certificates.
fn spec_at(port: u16, tls: SmtpTls) -> EmailSpec {
    EmailSpec {
        host: "127.0.0.1".into(),
        port,
        tls,
        user: Some(USER.into()),
        password: Some(Secret::new(PASSWORD)),
        from: "alerts@example.com".into(),
        from_name: None,
        to: vec!["ops@example.com".into()],
        cc: vec![],
        bcc: vec![],
        verify: true,
    }
}

fn cx(delivery_id: Uuid) -> SendContext {
    SendContext {
        delivery_id,
        target: None,
        attempt: 1,
    }
}

/// The password must not reach a verdict, a health detail or any `Debug` output.
fn assert_no_leak(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} leaks the password: {text}"
    );
}

fn assert_verdict_clean(v: &Verdict) {
    assert_no_leak("verdict reason", v.reason().unwrap_or(""));
    assert_no_leak("verdict Debug", &format!("{v:?}"));
}

fn header(m: &ParsedMail, name: &str) -> String {
    m.headers
        .get_first_value(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn alert() -> Notification {
    Notification::new("Drawdown 5.2% > 5% on <account 7>")
        .title("Risk breach")
        .severity(Severity::Critical)
        .event_type("risk.breach")
        .source("risk_monitor")
        .data("drawdown_pct", 5.2)
        .data("equity", 1234567.5)
}

#[tokio::test]
async fn starttls_delivers_mime_with_attachment_cc_and_hidden_bcc() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::StartTls);
    let mut spec = server.spec(SmtpTls::StartTls);
    spec.to = vec!["ops@example.com".into(), "desk@example.com".into()];
    spec.cc = vec!["risk@example.com".into()];
    spec.bcc = vec!["audit@example.com".into()];
    let email = Email::new("ops-email", spec, TIMEOUT);
    assert_eq!(email.kind(), "email");

    let pdf = b"%PDF-1.4 \x00\x01\xff binary report".to_vec();
    let mut n = alert();
    n.attachments.push(Attachment {
        filename: "report.pdf".into(),
        content_type: "application/pdf".into(),
        content_base64: base64::engine::general_purpose::STANDARD.encode(&pdf),
    });
    // A file name is user input in a header parameter: it must not end the header.
    let hostile = "q\"uote\r\nBcc: intruder@example.net; x.txt";
    n.attachments.push(Attachment {
        filename: hostile.into(),
        content_type: "text/plain; charset=utf-8".into(),
        content_base64: base64::engine::general_purpose::STANDARD.encode("hello"),
    });
    let id = Uuid::now_v7();
    let report = email.send(&n, &cx(id)).await;
    assert!(
        matches!(report.verdict, Verdict::Delivered { .. }),
        "{report:?}"
    );

    let got = server.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert!(r.tls, "the message went over a session without TLS");
    assert_eq!(r.login.as_deref(), Some(USER));
    assert_eq!(r.mail_from, "alerts@example.com");
    let mut rcpt = r.rcpt_tos.clone();
    rcpt.sort();
    assert_eq!(
        rcpt,
        [
            "audit@example.com",
            "desk@example.com",
            "ops@example.com",
            "risk@example.com"
        ]
    );

    let raw = r.bytes();
    let m = parse_mail(&raw).unwrap();
    let from = header(&m, "From");
    assert!(
        from.contains("Klaxon Alerts") && from.contains("<alerts@example.com>"),
        "{from}"
    );
    let to = header(&m, "To");
    assert!(
        to.contains("ops@example.com") && to.contains("desk@example.com"),
        "{to}"
    );
    assert_eq!(header(&m, "Cc"), "risk@example.com");
    assert!(m.headers.get_first_value("Bcc").is_none());
    assert!(
        !String::from_utf8_lossy(&raw).contains("audit@example.com"),
        "the Bcc address is in the message itself"
    );
    assert_eq!(header(&m, "Subject"), subject(&n));
    assert_eq!(header(&m, "Subject"), "🚨 [CRITICAL] Risk breach");
    assert_eq!(header(&m, "Message-ID"), format!("<{id}@example.com>"));

    assert_eq!(m.ctype.mimetype, "multipart/mixed");
    assert_eq!(m.subparts.len(), 3);
    let alt = &m.subparts[0];
    assert_eq!(alt.ctype.mimetype, "multipart/alternative");
    assert_eq!(alt.subparts.len(), 2);
    let (text, html) = (&alt.subparts[0], &alt.subparts[1]);
    assert_eq!(text.ctype.mimetype, "text/plain");
    assert_eq!(html.ctype.mimetype, "text/html");
    let text = text.get_body().unwrap();
    assert!(text.contains("Drawdown 5.2% > 5% on <account 7>"), "{text}");
    assert!(text.contains("equity: 1,234,567.5"), "{text}");
    let html = html.get_body().unwrap();
    assert!(
        html.contains("Drawdown 5.2% &gt; 5% on &lt;account 7&gt;"),
        "{html}"
    );
    assert!(html.contains(">1,234,567.5</td>"), "{html}");

    let att = &m.subparts[1];
    assert_eq!(att.ctype.mimetype, "application/pdf");
    let disposition = att.get_content_disposition();
    assert_eq!(
        disposition.disposition,
        mailparse::DispositionType::Attachment
    );
    assert_eq!(
        disposition.params.get("filename").map(String::as_str),
        Some("report.pdf")
    );
    assert_eq!(att.get_body_raw().unwrap(), pdf);
    let odd = &m.subparts[2];
    assert_eq!(
        odd.get_content_disposition()
            .params
            .get("filename")
            .map(String::as_str),
        Some(hostile),
        "the name arrives whole, encoded as a parameter (RFC 2231)"
    );
    assert_eq!(odd.get_body_raw().unwrap(), b"hello");
    assert!(m.headers.get_first_value("Bcc").is_none());
    assert!(odd.headers.get_first_value("Bcc").is_none());
    assert!(!r.rcpt_tos.iter().any(|a| a.contains("intruder")));

    // A retry of the same delivery carries the same Message-ID, so clients fold the repeat;
    // another delivery gets its own.
    email.send(&n, &cx(id)).await;
    let other = Uuid::now_v7();
    email.send(&n, &cx(other)).await;
    let got = server.received();
    assert_eq!(got.len(), 3);
    let ids: Vec<String> = got
        .iter()
        .map(|r| header(&parse_mail(&r.bytes()).unwrap(), "Message-ID"))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], format!("<{other}@example.com>"));
}

#[tokio::test]
async fn without_attachments_the_message_is_just_alternative() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::StartTls);
    let email = Email::new("e", server.spec(SmtpTls::StartTls), TIMEOUT);
    let n = Notification::new("BUY signal on MNQ").data("action", "BUY");
    let report = email.send(&n, &cx(Uuid::now_v7())).await;
    assert!(
        matches!(report.verdict, Verdict::Delivered { .. }),
        "{report:?}"
    );
    let got = server.received();
    let raw = got[0].bytes();
    let m = parse_mail(&raw).unwrap();
    assert_eq!(m.ctype.mimetype, "multipart/alternative");
    let kinds: Vec<&str> = m
        .subparts
        .iter()
        .map(|p| p.ctype.mimetype.as_str())
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);
    assert!(header(&m, "From").contains("Klaxon Alerts"));
    assert_eq!(header(&m, "To"), "ops@example.com");
}

#[tokio::test]
async fn a_session_without_tls_is_refused_by_the_server() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::StartTls);
    // `tls=no` against a server that requires STARTTLS: nothing may be delivered, and the
    // password must not have been offered in clear (aiosmtpd refuses AUTH before TLS).
    for creds in [true, false] {
        let mut spec = server.spec(SmtpTls::None);
        if !creds {
            spec.user = None;
            spec.password = None;
        }
        let email = Email::new("plain", spec, TIMEOUT);
        let report = email.send(&alert(), &cx(Uuid::now_v7())).await;
        assert!(
            matches!(report.verdict, Verdict::Reject { .. }),
            "creds={creds}: {report:?}"
        );
        assert_verdict_clean(&report.verdict);
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn starttls_is_never_skipped_when_the_server_lacks_it() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::Plain);
    let email = Email::new("e", server.spec(SmtpTls::StartTls), TIMEOUT);
    let v = email.send(&alert(), &cx(Uuid::now_v7())).await.verdict;
    let Verdict::Reject { reason, .. } = &v else {
        panic!("{v:?}")
    };
    assert!(reason.contains("STARTTLS"), "{reason}");
    assert_verdict_clean(&v);
    assert!(server.received().is_empty());

    // `tls=no` is the explicit way to use such a relay.
    let email = Email::new("relay", server.spec(SmtpTls::None), TIMEOUT);
    let report = email.send(&alert(), &cx(Uuid::now_v7())).await;
    assert!(
        matches!(report.verdict, Verdict::Delivered { .. }),
        "{report:?}"
    );
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert!(!got[0].tls);
    assert_eq!(got[0].login.as_deref(), Some(USER));
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::Implicit);
    let email = Email::new("smtps", server.spec(SmtpTls::Implicit), TIMEOUT);
    let report = email.send(&alert(), &cx(Uuid::now_v7())).await;
    assert!(
        matches!(report.verdict, Verdict::Delivered { .. }),
        "{report:?}"
    );
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].login.as_deref(), Some(USER));
    assert_eq!(email.check().await.state, HealthState::Ok);
}

#[tokio::test]
async fn wrong_password_is_rejected_and_never_quoted() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::StartTls);
    let mut spec = server.spec(SmtpTls::StartTls);
    let wrong = "Wr0ng-pa55word-for-klaxon";
    spec.password = Some(Secret::new(wrong));
    let email = Email::new("e", spec, TIMEOUT);
    assert_eq!(
        email
            .secrets()
            .iter()
            .map(|s| s.expose())
            .collect::<Vec<_>>(),
        [wrong]
    );
    let report = email.send(&alert(), &cx(Uuid::now_v7())).await;
    let Verdict::Reject { reason, status, .. } = &report.verdict else {
        panic!("{report:?}")
    };
    assert_eq!(*status, Some(535), "{reason}");
    assert!(reason.contains("user and password"), "{reason}");
    for text in [reason.clone(), format!("{report:?}"), format!("{email:?}")] {
        assert!(!text.contains(wrong), "leak: {text}");
        assert_no_leak("wrong-password output", &text);
    }
    let health = email.check().await;
    assert_eq!(health.state, HealthState::Failed, "{health:?}");
    assert!(!health.detail.contains(wrong), "{}", health.detail);
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn reply_classes_drive_retry_and_reject() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::StartTls);
    let cases = [
        ("tempfail-1@example.com", "retry", 451, "4.3.0"),
        ("reject-1@example.com", "reject", 550, "5.1.1"),
    ];
    for (to, want, code, enhanced) in cases {
        let mut spec = server.spec(SmtpTls::StartTls);
        spec.to = vec![to.into()];
        let email = Email::new("e", spec, TIMEOUT);
        let v = email.send(&alert(), &cx(Uuid::now_v7())).await.verdict;
        let got = match &v {
            Verdict::Retry { .. } => "retry",
            Verdict::Reject { .. } => "reject",
            Verdict::Delivered { .. } => "delivered",
        };
        assert_eq!(got, want, "{to}: {v:?}");
        assert_eq!(v.status(), Some(code), "{v:?}");
        assert!(v.reason().unwrap().contains(enhanced), "{v:?}");
        assert_verdict_clean(&v);
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn verify_on_self_signed_cert_rejects_with_hint() {
    let Some(py) = python() else { return };
    for (mode, tls) in [
        (Mode::StartTls, SmtpTls::StartTls),
        (Mode::Implicit, SmtpTls::Implicit),
    ] {
        let server = Server::start(&py, mode);
        let mut spec = server.spec(tls);
        spec.verify = true;
        let email = Email::new("e", spec, TIMEOUT);
        let v = email.send(&alert(), &cx(Uuid::now_v7())).await.verdict;
        let Verdict::Reject { reason, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(reason.contains("certificate"), "{reason}");
        assert!(reason.contains("verify=no"), "{reason}");
        assert_verdict_clean(&v);
        let health = email.check().await;
        assert_eq!(health.state, HealthState::Failed);
        assert!(health.detail.contains("verify=no"), "{}", health.detail);
        assert!(server.received().is_empty());
    }
}

#[tokio::test]
async fn check_answers_ok_from_a_live_server() {
    let Some(py) = python() else { return };
    let server = Server::start(&py, Mode::StartTls);
    let email = Email::new("e", server.spec(SmtpTls::StartTls), TIMEOUT);
    let health = email.check().await;
    assert_eq!(health.state, HealthState::Ok, "{health:?}");
    assert_eq!(health.detail, "SMTP server answered");
    assert!(server.received().is_empty(), "a check must not send mail");
}

/// Needs no SMTP server, so it runs everywhere.
#[tokio::test]
async fn server_down_is_retried_and_check_fails() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = spec_at(port, SmtpTls::StartTls);
    let email = Email::new("down", spec, TIMEOUT);
    let v = email.send(&alert(), &cx(Uuid::now_v7())).await.verdict;
    assert!(matches!(v, Verdict::Retry { .. }), "{v:?}");
    assert!(v.reason().unwrap().contains(&format!("127.0.0.1:{port}")));
    assert_verdict_clean(&v);
    let health = email.check().await;
    assert_eq!(health.state, HealthState::Failed, "{health:?}");
    assert_no_leak("health detail", &health.detail);
    assert_no_leak("channel Debug", &format!("{email:?}"));
    assert_eq!(email.limits(None)[0].key, "email:127.0.0.1");
}

/// lettre bounds only the TCP connect; a server that accepts and never speaks must still
/// cost one timeout, not the server's idle limit. Needs no SMTP server.
#[tokio::test]
async fn a_silent_server_times_out_and_is_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let spec = spec_at(port, SmtpTls::StartTls);
    let email = Email::new("silent", spec, Duration::from_millis(500));
    let v = email.send(&alert(), &cx(Uuid::now_v7())).await.verdict;
    assert!(matches!(v, Verdict::Retry { .. }), "{v:?}");
    assert!(
        v.reason().unwrap().contains("no answer within 0.5s"),
        "{v:?}"
    );
    assert_verdict_clean(&v);
    let health = email.check().await;
    assert_eq!(health.state, HealthState::Failed, "{health:?}");
    held.abort();
}
