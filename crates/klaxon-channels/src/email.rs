//! Email over SMTP (`mailto://`, `mailtos://`, PRODUCT.md §6) with lettre: one pooled
//! transport per channel, STARTTLS required unless the URL says `tls=no`, one message per
//! notification to every `To`, `Cc` and `Bcc` recipient.
//!
//! SMTP reply classes map onto verdicts the way HTTP statuses do elsewhere: 4xx is transient
//! (retry), 5xx permanent (reject), and a lost connection is retried. A certificate the client
//! will not trust is a configuration problem, so it is rejected with the fix in the reason.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use klaxon_core::channel_url::{EmailSpec, SmtpTls};
use klaxon_core::limit::{LimitKey, Rate};
use klaxon_core::render::email::{EmailBody, render_content};
use klaxon_core::secret::redact;
use klaxon_core::template::Markup;
use klaxon_core::{Notification, Secret, Verdict};
use lettre::address::{Address, Envelope};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Message, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::{Channel, Health, SendContext, SendReport, http};

/// Microsoft 365 documents 30 messages a minute per mailbox and Amazon SES starts accounts at
/// one a second; Gmail does not publish a rate but throttles bursts. 30/min satisfies all of
/// them, stretched 3 % for jitter like every provider default. An alert inbox that needs more
/// than one mail every two seconds wants a digest, which grouping gives.
pub const PER_SERVER: Rate = Rate::new(30, Duration::from_millis(61_800), 1);
/// Microsoft 365 refuses a fourth concurrent SMTP connection per mailbox; fewer parked
/// connections also keeps us polite to small self-hosted relays.
const POOL_MAX: u32 = 3;
/// Servers may close an idle session after 5 minutes (RFC 5321 §4.5.3.2.7), many sooner;
/// a shorter idle time means we rarely pick up a connection the server already dropped.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// What can go wrong before or while talking to the server. Classified by variant.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("`{field}` address `{value}` is not valid: {reason}")]
    Address {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("TLS set-up failed: {0}")]
    TlsSetup(String),
    #[error("attachment `{filename}` is not valid base64: {source}")]
    Attachment {
        filename: String,
        source: base64::DecodeError,
    },
    #[error("the message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The whole exchange took longer than the channel's timeout.
    #[error("no answer within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    /// The send task ended without an answer (the runtime is shutting down).
    #[error("the SMTP send was interrupted: {0}")]
    Interrupted(String),
}

/// Addresses and TLS settings, checked once when the channel is built.
struct Prepared {
    /// With the display name (`?name=`): what the inbox shows as the sender.
    from: Mailbox,
    /// The `To` and `Cc` headers, as the recipients see them.
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    /// `To`, `Cc` and `Bcc`: Bcc recipients live only here, never in a header.
    envelope: Envelope,
    /// Domain for `Message-ID`s: the sender's, so they look like the sender's own.
    id_domain: String,
    /// Kept to build the transport on first use, and again after a timeout.
    builder: AsyncSmtpTransportBuilder,
}

pub struct Email {
    /// Templates for the title and body.
    words: crate::Words,
    /// The channel's name, for logs.
    name: String,
    /// Server, TLS mode and recipients as configured; the password stays a `Secret` here.
    spec: EmailSpec,
    /// A configuration error found at build time is reported by every send and check, so the
    /// channel's status says what to fix instead of the service refusing to start.
    prepared: Result<Prepared, String>,
    /// The pooled transport, built on first use (lettre's pool spawns a task, which needs
    /// the runtime) and dropped after a timeout so the next send starts a fresh pool.
    transport: Arc<Mutex<Option<Transport>>>,
    /// For the whole SMTP exchange: lettre itself bounds only the TCP connect.
    timeout: Duration,
}

type Transport = AsyncSmtpTransport<Tokio1Executor>;

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("host", &self.spec.host)
            .field("port", &self.spec.port)
            .field("tls", &self.spec.tls)
            .field("user", &self.spec.user)
            .field("password", &self.spec.password)
            .finish_non_exhaustive()
    }
}

fn mailbox(field: &'static str, value: &str, name: Option<&str>) -> Result<Mailbox, EmailError> {
    let address: Address =
        value
            .parse()
            .map_err(|e: lettre::address::AddressError| EmailError::Address {
                field,
                value: value.to_string(),
                reason: e.to_string(),
            })?;
    Ok(Mailbox::new(name.map(str::to_string), address))
}

fn prepare(spec: &EmailSpec, timeout: Duration) -> Result<Prepared, EmailError> {
    let from = mailbox("from", &spec.from, spec.from_name.as_deref())?;
    let list = |field, list: &[String]| -> Result<Vec<Mailbox>, EmailError> {
        list.iter().map(|a| mailbox(field, a, None)).collect()
    };
    let (to, cc, bcc) = (
        list("to", &spec.to)?,
        list("cc", &spec.cc)?,
        list("bcc", &spec.bcc)?,
    );
    let recipients = to.iter().chain(&cc).chain(&bcc).map(|m| m.email.clone());
    let envelope = Envelope::new(Some(from.email.clone()), recipients.collect()).map_err(|e| {
        EmailError::Address {
            field: "to",
            value: String::new(),
            reason: e.to_string(),
        }
    })?;
    let tls = match spec.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::StartTls | SmtpTls::Implicit => {
            let params = TlsParameters::builder(spec.host.clone())
                .dangerous_accept_invalid_certs(!spec.verify)
                .dangerous_accept_invalid_hostnames(!spec.verify)
                .build_rustls()
                .map_err(|e| EmailError::TlsSetup(e.to_string()))?;
            if spec.tls == SmtpTls::StartTls {
                // `Required`, not `Opportunistic`: a server (or a man in the middle) that
                // leaves STARTTLS out must not get the password in clear.
                Tls::Required(params)
            } else {
                Tls::Wrapper(params)
            }
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(spec.host.clone())
        .port(spec.port)
        .tls(tls)
        .timeout(Some(timeout))
        .pool_config(PoolConfig::new().max_size(POOL_MAX).idle_timeout(POOL_IDLE));
    if let (Some(user), Some(password)) = (&spec.user, &spec.password) {
        builder = builder
            .credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    Ok(Prepared {
        id_domain: from.email.domain().to_string(),
        from,
        to,
        cc,
        envelope,
        builder,
    })
}

impl Email {
    pub fn new(name: &str, spec: EmailSpec, timeout: Duration) -> Self {
        let prepared = prepare(&spec, timeout).map_err(|e| {
            let secrets: Vec<&Secret> = spec.password.iter().collect();
            let reason = http::short(&redact(&format!("channel `{name}`: {e}"), &secrets));
            tracing::error!(channel = %name, error = %reason, "email channel misconfigured");
            reason
        });
        Email {
            words: crate::Words::defaults(name),
            name: name.to_string(),
            spec,
            prepared,
            transport: Arc::new(Mutex::new(None)),
            timeout,
        }
    }

    /// Words messages with these templates (the built-in ones otherwise).
    pub fn words(mut self, words: crate::Words) -> Self {
        self.words = words;
        self
    }

    fn secret_list(&self) -> Vec<&Secret> {
        self.spec.password.iter().collect()
    }

    fn transport(&self, p: &Prepared) -> Transport {
        let mut slot = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert_with(|| p.builder.clone().build())
            .clone()
    }

    /// Runs one SMTP exchange on a task of its own, bounded by the channel's timeout. Its own
    /// task, so that an attempt the engine abandons still ends the dialogue cleanly instead of
    /// leaving a connection stopped halfway through DATA.
    async fn exchange<T, F, Fut>(&self, p: &Prepared, op: F) -> Result<T, EmailError>
    where
        F: FnOnce(Transport) -> Fut,
        Fut: Future<Output = Result<T, lettre::transport::smtp::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let slot = Arc::clone(&self.transport);
        let limit = self.timeout;
        let fut = op(self.transport(p));
        let task = tokio::spawn(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r.map_err(EmailError::from),
                Err(_) => {
                    // The connection cut mid-dialogue goes back to lettre's pool looking
                    // healthy; dropping the whole pool keeps the next send off it.
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    Err(EmailError::Timeout(limit))
                }
            }
        });
        task.await
            .unwrap_or_else(|e| Err(EmailError::Interrupted(e.to_string())))
    }

    /// The MIME message for `n`: `multipart/alternative` (text, HTML), wrapped in
    /// `multipart/mixed` with the attachments when there are any.
    fn message(
        &self,
        p: &Prepared,
        n: &Notification,
        cx: &SendContext,
        body: EmailBody,
    ) -> Result<Message, EmailError> {
        let mut b = Message::builder()
            .from(p.from.clone())
            .subject(body.subject)
            // Derived from the delivery id, which is the same on every retry, so a client
            // that got the first try drops the repeat as the same message.
            .message_id(Some(format!("<{}@{}>", cx.delivery_id, p.id_domain)))
            .envelope(p.envelope.clone());
        for m in &p.to {
            b = b.to(m.clone());
        }
        for m in &p.cc {
            b = b.cc(m.clone());
        }
        let alternative = MultiPart::alternative_plain_html(body.text, body.html);
        if n.attachments.is_empty() {
            return Ok(b.multipart(alternative)?);
        }
        let mut mixed = MultiPart::mixed().multipart(alternative);
        for a in &n.attachments {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.content_base64.trim())
                .map_err(|source| EmailError::Attachment {
                    filename: a.filename.clone(),
                    source,
                })?;
            // An unparsable type is the sender's typo, not a reason to drop the alert.
            let content_type = ContentType::parse(&a.content_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid"));
            mixed = mixed.singlepart(Attachment::new(a.filename.clone()).body(bytes, content_type));
        }
        Ok(b.multipart(mixed)?)
    }

    fn verdict(&self, e: &EmailError) -> Verdict {
        let secrets = self.secret_list();
        let clean = |text: String| http::short(&redact(&text, &secrets));
        match e {
            EmailError::Smtp(e) => classify(e, &self.spec, &secrets),
            EmailError::Timeout(_) | EmailError::Interrupted(_) => Verdict::retry(clean(format!(
                "SMTP {}:{}: {e}",
                self.spec.host, self.spec.port
            ))),
            EmailError::Address { .. }
            | EmailError::TlsSetup(_)
            | EmailError::Attachment { .. }
            | EmailError::Build(_) => Verdict::reject(clean(e.to_string())),
        }
    }
}

/// The innermost rustls error of a failed connection, if the failure was TLS's.
fn rustls_error(e: &lettre::transport::smtp::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // `io::Error::source` skips the error it wraps; tokio-rustls puts rustls's there.
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// What lettre's error chain says, without its own generic first words.
fn detail(e: &lettre::transport::smtp::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// SMTP error → verdict. Reply codes decide where there is one (RFC 5321 §4.2.1: 4yz is
/// transient, 5yz permanent); otherwise the kind of failure does.
pub fn classify(
    e: &lettre::transport::smtp::Error,
    spec: &EmailSpec,
    secrets: &[&Secret],
) -> Verdict {
    let clean = |text: String| http::short(&redact(&text, secrets));
    let server = format!("{}:{}", spec.host, spec.port);
    if let Some(code) = e.status() {
        let status = code.to_string().parse::<u16>().ok();
        // 535 is RFC 4954's "credentials invalid": the one fix is in the configuration.
        let hint = if status == Some(535) {
            " (check the channel's SMTP user and password)"
        } else {
            ""
        };
        let reason = clean(format!("SMTP {code} from {server}: {}{hint}", detail(e)));
        return if e.is_permanent() {
            Verdict::Reject {
                reason,
                status,
                disable_channel: false,
            }
        } else {
            Verdict::Retry {
                reason,
                status,
                after: None,
                throttled: false,
            }
        };
    }
    if e.is_timeout() {
        return Verdict::retry(clean(format!("SMTP {server} timed out: {}", detail(e))));
    }
    if let Some(rustls::Error::InvalidCertificate(why)) = rustls_error(e) {
        return Verdict::reject(clean(format!(
            "SMTP {server}: the server's TLS certificate is not trusted ({why:?}); install a \
             certificate valid for `{}`, or add `verify=no` to the channel URL to accept it anyway",
            spec.host
        )));
    }
    if e.is_client() || e.is_tls() {
        // Our side cannot go on: STARTTLS or AUTH not offered, an address the server cannot
        // take. The same message will fail the same way.
        let hint = if spec.tls == SmtpTls::None && spec.user.is_some() {
            " (servers commonly offer AUTH only over TLS: remove `tls=no`)"
        } else {
            ""
        };
        return Verdict::reject(clean(format!("SMTP {server}: {e}{hint}")));
    }
    Verdict::retry(clean(format!("SMTP {server}: {e}")))
}

#[async_trait]
impl Channel for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn limits(&self, _target: Option<&str>) -> Vec<LimitKey> {
        vec![LimitKey {
            key: format!("email:{}", self.spec.host),
            rate: PER_SERVER,
        }]
    }

    async fn send(&self, n: &Notification, cx: &SendContext) -> SendReport {
        // One template serves both parts; its failure is reported once.
        let (text, note) = self.words.content(n, "email", Markup::Plain);
        let html = self.words.quiet(n, "email", Markup::Html);
        let body = render_content(n, &text, &html);
        let report: SendReport = async {
        let p = match &self.prepared {
            Ok(p) => p,
            Err(reason) => return Verdict::reject(reason.clone()).into(),
        };
        let message = match self.message(p, n, cx, body) {
            Ok(m) => m,
            Err(e) => return self.verdict(&e).into(),
        };
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        let result = self
            .exchange(p, |t| async move { t.send_raw(&envelope, &bytes).await })
            .await;
        match result {
            Ok(response) => http::delivered(
                response
                    .message()
                    .next()
                    .map(|line| http::short(&redact(line, &self.secret_list()))),
            )
            .into(),
            Err(e) => {
                let verdict = self.verdict(&e);
                tracing::debug!(channel = %self.name, reason = ?verdict.reason(), "email not delivered");
                verdict.into()
            }
        }
        }
        .await;
        report.also(note)
    }

    fn secrets(&self) -> Vec<&Secret> {
        self.secret_list()
    }

    async fn check(&self) -> Health {
        let p = match &self.prepared {
            Ok(p) => p,
            Err(reason) => return Health::failed(reason.clone()),
        };
        match self
            .exchange(p, |t| async move { t.test_connection().await })
            .await
        {
            Ok(true) => Health::ok("SMTP server answered"),
            Ok(false) => Health::failed(format!(
                "SMTP {}:{} did not answer NOOP",
                self.spec.host, self.spec.port
            )),
            Err(e) => Health::failed(self.verdict(&e).reason().unwrap_or("failed").to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn spec() -> EmailSpec {
        EmailSpec {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            user: Some("bot@example.com".into()),
            password: Some(Secret::new("hunter2-smtp-password")),
            from: "bot@example.com".into(),
            from_name: None,
            to: vec!["ops@example.com".into()],
            cc: vec![],
            bcc: vec![],
            verify: true,
        }
    }

    fn cx() -> SendContext {
        SendContext {
            delivery_id: Uuid::now_v7(),
            target: None,
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn an_unusable_address_rejects_every_send_and_fails_the_check() {
        let mut s = spec();
        s.cc = vec!["risk@exa mple.com".into()];
        let email = Email::new("ops-email", s, Duration::from_secs(1));
        let v = email.send(&Notification::new("x"), &cx()).await.verdict;
        let Verdict::Reject { reason, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(
            reason.contains("`cc` address `risk@exa mple.com`"),
            "{reason}"
        );
        let health = email.check().await;
        assert_eq!(health.detail, *reason);
    }

    #[test]
    fn debug_and_limits_never_show_the_password() {
        let email = Email::new("ops-email", spec(), Duration::from_secs(1));
        let debug = format!("{email:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("smtp.example.com"));
        assert_eq!(email.secrets()[0].expose(), "hunter2-smtp-password");
        let limits = email.limits(None);
        assert_eq!(limits.len(), 1);
        assert_eq!(limits[0].key, "email:smtp.example.com");
        assert_eq!(limits[0].rate, PER_SERVER);
    }

    #[tokio::test]
    async fn an_undecodable_attachment_is_rejected_by_name() {
        let email = Email::new("ops-email", spec(), Duration::from_secs(1));
        let mut n = Notification::new("x");
        n.attachments.push(klaxon_core::model::Attachment {
            filename: "chart.png".into(),
            content_type: "image/png".into(),
            content_base64: "not base64!".into(),
        });
        // Rejected while building the message, before any connection is tried.
        let v = email.send(&n, &cx()).await.verdict;
        let Verdict::Reject { reason, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(reason.contains("attachment `chart.png`"), "{reason}");
    }
}
