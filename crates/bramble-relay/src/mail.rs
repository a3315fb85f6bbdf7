//! Forwarding a device's activation request by e-mail (seed: "Activating a
//! BlackBerry smartphone over the wireless network", step 5: "the wireless
//! network … sends the activation request to the email address").
//!
//! A device that has no enterprise server yet sends `send_mail {to,
//! subject, attachment_name, attachment}` on its link; the relay builds a
//! MIME message with the attachment (lettre) and submits it to the
//! configured `smtp` server. The device gets `mail_sent {to}`, or an error
//! packet `MAIL_NOT_SENT` whose message says why in words for its user.
//!
//! The device port is open to anyone, so the relay sends only what it is
//! for ([`check_request`]): the attachment must be an activation request
//! (`etp.dat`, [`EtpRequest`]) for the device's own PIN, addressed to the
//! e-mail address inside it; the subject and attachment name are the
//! relay's own. [`MailGate`] bounds the requests per source address and
//! per connection within `mail_window`, the requests being sent at once,
//! and those accepted and not answered yet (beyond that a request is
//! refused, not queued).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bramble_proto::activation::{EtpRequest, ETP_FILE, REQUEST_SUBJECT};
use bramble_proto::Pin;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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

/// Most source addresses whose recent requests are remembered at once.
const MAX_TRACKED_ADDRESSES: usize = 4096;

/// A request that may be e-mailed: the decoded attachment.
#[derive(Debug)]
pub struct Checked {
    pub attachment: Vec<u8>,
}

/// Checks that a device's `send_mail` is an activation request the relay
/// may forward: base64 of at most [`MAX_ATTACHMENT`] bytes, readable as
/// [`EtpRequest`], for `pin` (the device's own), and addressed to the
/// e-mail address in the request. The message says why not, for the
/// device's user.
pub fn check_request(pin: Pin, to: &str, attachment_b64: &str) -> Result<Checked, String> {
    if attachment_b64.len() > MAX_ATTACHMENT.div_ceil(3) * 4 + 4 {
        return Err(send_error(format!(
            "the activation request is too large (at most {MAX_ATTACHMENT} bytes)"
        )));
    }
    let attachment = base64::engine::general_purpose::STANDARD
        .decode(attachment_b64.trim())
        .map_err(|_| send_error("the activation request is damaged (not base64)"))?;
    if attachment.len() > MAX_ATTACHMENT {
        return Err(send_error(format!(
            "the activation request is too large ({} bytes, at most {MAX_ATTACHMENT})",
            attachment.len()
        )));
    }
    let request = EtpRequest::from_bytes(&attachment).map_err(|e| {
        send_error(format!(
            "the relay only e-mails activation requests, and this attachment is not one ({e})"
        ))
    })?;
    if request.pin != pin {
        return Err(send_error(format!(
            "the activation request is for PIN {}, not for this device's PIN {pin}",
            request.pin
        )));
    }
    if !request.email.trim().eq_ignore_ascii_case(to.trim()) {
        return Err(send_error(format!(
            "the activation request names {}, but it was to be sent to {to}; \
             an activation request goes only to the address in it",
            request.email.trim()
        )));
    }
    Ok(Checked { attachment })
}

/// The bounds on activation mail (see the crate documentation).
#[derive(Debug, Clone, Copy)]
pub struct MailLimits {
    /// Requests e-mailed per source address within `window`.
    pub per_address: u32,
    /// Requests e-mailed per device connection (over its whole life).
    pub per_connection: u32,
    pub window: Duration,
    /// Requests being sent at once.
    pub concurrent: usize,
    /// Requests accepted but not answered yet (being sent or waiting their
    /// turn); beyond it a request is refused, not queued.
    pub queued: usize,
}

/// Where activation requests go, and the bounds on them.
#[derive(Debug)]
pub struct MailGate {
    pub smtp: Option<String>,
    pub from: String,
    limits: MailLimits,
    recent: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// Places among the requests accepted and not answered yet.
    queue: Arc<Semaphore>,
    /// Turns to talk to the SMTP server.
    sending: Arc<Semaphore>,
}

/// A request's place in the queue; [`Queued::turn`] waits for its turn to
/// be sent. Both are given back when dropped.
#[derive(Debug)]
pub struct Queued {
    _place: OwnedSemaphorePermit,
    sending: Arc<Semaphore>,
}

impl Queued {
    /// Waits until fewer than `mail_concurrency` requests are being sent.
    pub async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        self.sending.clone().acquire_owned().await.ok()
    }
}

impl MailGate {
    pub fn new(smtp: Option<String>, from: String, limits: MailLimits) -> MailGate {
        MailGate {
            smtp,
            from,
            limits,
            queue: Arc::new(Semaphore::new(limits.queued)),
            sending: Arc::new(Semaphore::new(limits.concurrent)),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more request from `ip`, on a connection that has had
    /// `on_connection` e-mailed already, may be sent now; counts it if so.
    pub fn admit(&self, ip: IpAddr, on_connection: u32, now: Instant) -> Result<Queued, String> {
        let ip = crate::limits::source(ip);
        let limits = self.limits;
        if on_connection >= limits.per_connection {
            return Err(send_error(format!(
                "this connection has sent {} activation requests already, as many as the relay \
                 sends for one connection",
                limits.per_connection
            )));
        }
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let prune = |times: &mut VecDeque<Instant>| {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= limits.window)
            {
                times.pop_front();
            }
        };
        if !recent.contains_key(&ip) && recent.len() >= MAX_TRACKED_ADDRESSES {
            recent.retain(|_, times| {
                prune(times);
                !times.is_empty()
            });
            if recent.len() >= MAX_TRACKED_ADDRESSES {
                return Err(send_error(
                    "the relay is sending many activation requests now; try again later",
                ));
            }
        }
        let times = recent.entry(ip).or_default();
        prune(times);
        if times.len() >= limits.per_address as usize {
            let wait = times
                .front()
                .map(|t| limits.window.saturating_sub(now.duration_since(*t)))
                .unwrap_or(limits.window);
            return Err(send_error(format!(
                "{} activation requests came from this address within {}; try again in {} s",
                limits.per_address,
                crate::config::duration_text::format(limits.window),
                wait.as_secs().max(1)
            )));
        }
        let place = self.queue.clone().try_acquire_owned().map_err(|_| {
            send_error("the relay is sending many activation requests now; try again in a minute")
        })?;
        times.push_back(now);
        Ok(Queued {
            _place: place,
            sending: self.sending.clone(),
        })
    }
}

/// Builds and submits a checked request with the relay's own subject and
/// attachment name. `smtp` is `host:port`.
pub async fn forward_checked(
    smtp: &str,
    from: &str,
    to: &str,
    request: Checked,
) -> Result<(), String> {
    send_message(
        smtp,
        from,
        to,
        REQUEST_SUBJECT,
        ETP_FILE,
        request.attachment,
    )
    .await
}

async fn send_message(
    smtp: &str,
    from: &str,
    to: &str,
    subject: &str,
    attachment_name: &str,
    attachment: Vec<u8>,
) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const LIMITS: MailLimits = MailLimits {
        per_address: 2,
        per_connection: 5,
        window: Duration::from_secs(60),
        concurrent: 1,
        queued: 2,
    };

    #[tokio::test]
    async fn the_queue_is_bounded_and_addresses_are_counted_apart() {
        let now = Instant::now();
        let gate = MailGate::new(None, "relay@example.com".into(), LIMITS);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(a, 0, now).unwrap();
        let second = gate.admit(b, 0, now).unwrap();
        // Two accepted and unanswered: a third is refused, not queued.
        let err = gate.admit(b, 1, now).unwrap_err();
        assert!(err.contains("sending many"), "{err}");
        // One is sent at a time.
        let turn = first.turn().await.unwrap();
        assert!(gate.sending.clone().try_acquire_owned().is_err());
        drop((turn, first));
        drop(second.turn().await);
        drop(second);
        // The refused one did not count against b.
        gate.admit(b, 1, now).unwrap();
        let err = gate.admit(b, 2, now).unwrap_err();
        assert!(err.contains("from this address"), "{err}");
        // Per connection.
        let err = gate.admit(a, 5, now).unwrap_err();
        assert!(err.contains("for one connection"), "{err}");
        // The window passes.
        gate.admit(b, 0, now + LIMITS.window).unwrap();
    }

    #[test]
    fn only_activation_requests_pass() {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let request = EtpRequest {
            format: bramble_proto::activation::ETP_FORMAT.into(),
            pin: Pin(7),
            email: "Alice@Example.com".into(),
            relay: "relay".into(),
            model: String::new(),
            os_version: String::new(),
            device_key: "00".into(),
            spake: "00".into(),
        };
        let good = b64(&request.to_bytes());
        assert!(check_request(Pin(7), " alice@example.com", &good).is_ok());
        for (pin, to, attachment, needle) in [
            (Pin(7), "alice@example.com", b64(b"hello"), "not one"),
            (Pin(7), "alice@example.com", "%%%".to_owned(), "not base64"),
            (
                Pin(8),
                "alice@example.com",
                good.clone(),
                "not for this device",
            ),
            (Pin(7), "bob@example.com", good.clone(), "address in it"),
            (
                Pin(7),
                "alice@example.com",
                b64(&[b'{'; MAX_ATTACHMENT + 1]),
                "too large",
            ),
        ] {
            let err = check_request(pin, to, &attachment).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
