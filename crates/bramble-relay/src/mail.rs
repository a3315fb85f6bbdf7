//! Forwarding a device's activation request by e-mail (seed: "Activating a
//! BlackBerry smartphone over the wireless network", step 5: "the wireless
//! network … sends the activation request to the email address").
//!
//! A device that has no enterprise server yet sends `send_mail {to,
//! subject, attachment_name, attachment}` on its link; the relay builds a
//! MIME message with the attachment (lettre) and submits it to the
//! configured `smtp` server. The device gets `mail_sent {to}`, or an error
//! packet `MAIL_NOT_SENT` whose message says why in words for its user.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use lettre::message::{header::ContentType as MimeType, Attachment, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Largest attachment forwarded.
pub const MAX_ATTACHMENT: usize = 8 * 1024;

/// Why a request was not forwarded, for the device's user.
pub fn send_error(text: impl Into<String>) -> String {
    text.into()
}

/// Builds and submits the request. `smtp` is `host:port`.
pub async fn forward(
    smtp: &str,
    from: &str,
    to: &str,
    subject: &str,
    attachment_name: &str,
    attachment_b64: &str,
) -> Result<(), String> {
    let attachment = base64::engine::general_purpose::STANDARD
        .decode(attachment_b64)
        .map_err(|_| send_error("the activation request is damaged (not base64)"))?;
    if attachment.len() > MAX_ATTACHMENT {
        return Err(send_error(format!(
            "the activation request is too large ({} bytes, at most {MAX_ATTACHMENT})",
            attachment.len()
        )));
    }
    let to_mailbox = to
        .trim()
        .parse()
        .map_err(|_| send_error(format!("`{to}` is not an e-mail address")))?;
    let from_mailbox = from
        .parse()
        .map_err(|_| send_error(format!("the relay's sender `{from}` is not an address")))?;
    let message = Message::builder()
        .from(from_mailbox)
        .to(to_mailbox)
        .subject(subject)
        .header(ActivationHeader)
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(
                    "This message carries a device's enterprise activation request. \
                     The enterprise server removes it from the mailbox."
                        .to_owned(),
                ))
                .singlepart(Attachment::new(attachment_name.to_owned()).body(
                    attachment,
                    MimeType::parse("application/octet-stream").map_err(|e| e.to_string())?,
                )),
        )
        .map_err(|e| send_error(format!("the activation request cannot be built: {e}")))?;
    let transport = transport(smtp)?;
    transport.send(message).await.map(|_| ()).map_err(|e| {
        send_error(format!(
            "the mail server did not accept the activation request for {to}: {e}"
        ))
    })
}

/// The transport for an SMTP server, one per `host:port` for the life of
/// the process: its connections are pooled (lettre's pool), so a burst of
/// activation requests does not open a connection for each.
fn transport(smtp: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    static TRANSPORTS: OnceLock<Mutex<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>> =
        OnceLock::new();
    let mut transports = TRANSPORTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(transport) = transports.get(smtp) {
        return Ok(transport.clone());
    }
    let (host, port) = match smtp.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse::<u16>().map_err(|_| {
                send_error(format!(
                    "the relay's smtp setting `{smtp}` has no valid port"
                ))
            })?,
        ),
        None => (smtp.to_owned(), 25),
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(30)))
        .pool_config(
            PoolConfig::new()
                .max_size(8)
                .idle_timeout(Duration::from_secs(30)),
        )
        .build();
    transports.insert(smtp.to_owned(), transport.clone());
    Ok(transport)
}

/// `X-Bramble-Activation: 1`, so a server recognizes the request even if
/// the attachment's name is changed on the way.
#[derive(Clone)]
struct ActivationHeader;

impl lettre::message::header::Header for ActivationHeader {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("X-Bramble-Activation")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ActivationHeader)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "1".to_owned())
    }
}
