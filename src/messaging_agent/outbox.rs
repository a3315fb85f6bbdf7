//! Mail written on devices, submitted by SMTP (seed: "the BlackBerry
//! Messaging Agent ... sends the email message to the messaging server").
//!
//! A message from a device is stored in the outbox first (the device is
//! told "accepted"), then submitted; if the SMTP server is down or answers
//! "try later", it stays and is tried again every `smtp_retry_secs`, so
//! nothing is lost; a permanent refusal fails it (the device is told, with
//! the server's words). After submission a copy is filed in the user's Sent
//! folder when the user's setting says so. A reply or forward names the
//! original by RefID; its text is read from the mailbox and added here.
//!
//! Once the SMTP server has accepted a message it is never submitted again:
//! if recording the submission fails (a full disk, a database busy past its
//! timeout), the entry is kept in memory as [`Accepted`] and only the record
//! is tried again each `smtp_retry_secs`, while the entry, still in the
//! outbox table, is passed over. The memory lasts as long as the process:
//! an entry whose record never succeeded before the server stopped is sent
//! again after the restart (the one case left where a copy can repeat).

use std::sync::Arc;
use std::time::Duration;

use bramble_proto::cmime::{Cmime, Compose, SendState};
use lettre::message::header::ContentType as MimeType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db::models::mailbox::{MailItem, MailboxState, OutboxEntry};
use crate::db::models::message::{Direction, Hop, Message, MessageStatus, NewMessage};
use crate::db::models::statistics::{Counter, Statistics};
use crate::db::models::user::User;
use crate::db::now;

use super::requests::{fetch_raw, reply};
use super::settings::{MailSettings, Security};
use super::{imap, mime, Shared};

type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Builds the SMTP transport from `[mail]`.
pub fn transport(settings: &MailSettings) -> Result<Transport, String> {
    let addr = settings
        .smtp
        .as_deref()
        .ok_or("no SMTP server is configured: set [mail] smtp in the settings file")?;
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("[mail] smtp `{addr}` has no valid port"))?,
        ),
        None => (addr, 587),
    };
    let params = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(host.to_owned());
        if let Some(ca) = &settings.tls_ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read tls_ca_file {}: {e}", ca.display()))?;
            b = b.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| e.to_string())?);
        }
        b.build().map_err(|e| e.to_string())
    };
    let tls = match settings.smtp_security {
        Security::None => Tls::None,
        Security::Starttls => Tls::Required(params()?),
        Security::Tls => Tls::Wrapper(params()?),
    };
    let mut builder = Transport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(60)));
    if let (Some(login), Some(password)) = (&settings.smtp_login, &settings.smtp_password) {
        builder = builder.credentials(Credentials::new(login.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// Submits due outbox entries until `cancel`.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let transport = match transport(&shared.settings) {
        Ok(t) => t,
        Err(e) => {
            warn!(target: "bramble::messaging_agent", "mail from devices cannot be sent: {e}");
            cancel.cancelled().await;
            return;
        }
    };
    let retry = Duration::from_secs(shared.settings.smtp_retry_secs.max(1));
    // Accepted by the SMTP server, record not yet written.
    let mut unrecorded: Vec<Accepted> = Vec::new();
    loop {
        for accepted in std::mem::take(&mut unrecorded) {
            if let Some(again) = finish(&shared, accepted).await {
                unrecorded.push(again);
            }
        }
        let due = shared
            .db
            .run(|conn| OutboxEntry::find_due(conn, now(), 50))
            .await;
        match due {
            Ok(entries) => {
                for entry in entries {
                    if cancel.is_cancelled() {
                        return;
                    }
                    if unrecorded.iter().any(|a| a.id == entry.id) {
                        continue;
                    }
                    if let Some(again) = submit(&shared, &transport, entry).await {
                        unrecorded.push(again);
                    }
                }
            }
            Err(e) => warn!(target: "bramble::messaging_agent", "cannot read the outbox: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.outbox_wake.notified() => {}
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// A message the SMTP server took, with what its record needs.
struct Accepted {
    id: i64,
    ref_id: bramble_proto::RefId,
    user: User,
    subject: String,
    raw: Vec<u8>,
}

/// Records an accepted message and files its copy in Sent. Gives it back
/// when the record could not be written, to be recorded (never sent)
/// again.
async fn finish(shared: &Arc<Shared>, accepted: Accepted) -> Option<Accepted> {
    let (id, ref_id, user_id) = (accepted.id, accepted.ref_id, accepted.user.id);
    let subject = accepted.subject.clone();
    let recorded = shared
        .db
        .write(move |conn| {
            crate::db::write_transaction(conn, |conn| {
                OutboxEntry::delete(conn, id)?;
                let message = match Message::find_by_ref_id(conn, &ref_id)? {
                    Some(m) => m,
                    None => Message::create(
                        conn,
                        &NewMessage {
                            ref_id,
                            user_id: Some(user_id),
                            device_id: None,
                            direction: Direction::FromDevice,
                            status: MessageStatus::Sent,
                            subject,
                        },
                    )?,
                };
                Message::record_hop(conn, message.id, Hop::Smtp, "submitted")?;
                Statistics::increment(conn, Some(user_id), Counter::Sent, 1)?;
                MailboxState::find(conn, user_id).map(|s| s.save_sent)
            })
        })
        .await;
    let save_sent = match recorded {
        Ok(save) => save,
        Err(e) => {
            warn!(target: "bramble::messaging_agent", %ref_id, "sent, but not recorded: {e}; the record is tried again in {}s and the message is not sent again", shared.settings.smtp_retry_secs.max(1));
            return Some(accepted);
        }
    };
    if save_sent {
        if let Err(e) = file_sent(
            &shared.settings,
            &accepted.user.mailbox_login,
            &accepted.raw,
        )
        .await
        {
            warn!(target: "bramble::messaging_agent", user = %accepted.user.email, %ref_id, "sent, but no copy filed in {}: {e}", shared.settings.sent_folder);
        }
    }
    None
}

enum Outcome {
    Sent(Vec<u8>),
    /// Try again later.
    Later(String),
    /// Never: tell the device.
    Refused(String),
}

/// Sends one due entry; gives back a message the SMTP server accepted but
/// whose record could not be written.
async fn submit(
    shared: &Arc<Shared>,
    transport: &Transport,
    entry: OutboxEntry,
) -> Option<Accepted> {
    let user_id = entry.user_id;
    let user = match shared
        .db
        .run(move |conn| User::find_by_id(conn, user_id))
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => {
            let id = entry.id;
            let _ = shared
                .db
                .run(move |conn| OutboxEntry::delete(conn, id))
                .await;
            return None;
        }
        Err(e) => {
            warn!(target: "bramble::messaging_agent", "cannot read the user of outgoing mail: {e}");
            return None;
        }
    };
    let compose = serde_json::from_str::<Compose>(&entry.compose);
    let outcome = match &compose {
        Ok(compose) => build_and_send(shared, transport, &user, compose).await,
        Err(e) => Outcome::Refused(format!("the stored message cannot be read: {e}")),
    };
    let (ref_id, pin, id) = (entry.ref_id, entry.pin, entry.id);
    match outcome {
        Outcome::Sent(raw) => {
            info!(target: "bramble::messaging_agent", user = %user.email, %ref_id, "mail from the device sent");
            let accepted = Accepted {
                id,
                ref_id,
                user,
                subject: compose.map(|c| c.subject).unwrap_or_default(),
                raw,
            };
            let unrecorded = finish(shared, accepted).await;
            reply(
                shared,
                pin,
                Cmime::SendStatus {
                    of: ref_id,
                    status: SendState::Sent,
                    error: None,
                },
            )
            .await;
            unrecorded
        }
        Outcome::Later(reason) => {
            warn!(target: "bramble::messaging_agent", user = %user.email, %ref_id, attempts = entry.attempts + 1, "mail from the device waits in the outbox: {reason}");
            let next =
                now() + time::Duration::seconds(shared.settings.smtp_retry_secs.max(1) as i64);
            let _ = shared
                .db
                .write(move |conn| OutboxEntry::defer(conn, id, next, &reason))
                .await;
            None
        }
        Outcome::Refused(reason) => {
            warn!(target: "bramble::messaging_agent", user = %user.email, %ref_id, "mail from the device refused: {reason}");
            let text = reason.clone();
            let _ = shared
                .db
                .write(move |conn| {
                    crate::db::write_transaction(conn, |conn| {
                        OutboxEntry::delete(conn, id)?;
                        if Message::find_by_ref_id(conn, &ref_id)?.is_none() {
                            Message::create(
                                conn,
                                &NewMessage {
                                    ref_id,
                                    user_id: Some(user_id),
                                    device_id: None,
                                    direction: Direction::FromDevice,
                                    status: MessageStatus::Failed,
                                    subject: String::new(),
                                },
                            )?;
                        }
                        Statistics::increment(conn, Some(user_id), Counter::Failed, 1)
                    })
                })
                .await;
            reply(
                shared,
                pin,
                Cmime::SendStatus {
                    of: ref_id,
                    status: SendState::Failed,
                    error: Some(text),
                },
            )
            .await;
            None
        }
    }
}

fn mailboxes(list: &[String]) -> Result<Vec<Mailbox>, String> {
    list.iter()
        .map(|a| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("`{a}` is not a valid e-mail address ({e})"))
        })
        .collect()
}

/// The original's text for a reply or forward, quoted.
async fn original(
    shared: &Shared,
    user: &User,
    compose: &Compose,
) -> Result<Option<(String, String)>, Outcome> {
    let Some(of) = compose.reply_to.or(compose.forward_of) else {
        return Ok(None);
    };
    let item = shared
        .db
        .run(move |conn| MailItem::find_by_ref_id(conn, of))
        .await
        .map_err(|e| Outcome::Later(e.to_string()))?;
    let Some(item) = item.filter(|i| i.user_id == user.id) else {
        return Ok(Some((
            String::new(),
            format!("\n\n[The original message {of} is not known to the server.]"),
        )));
    };
    match fetch_raw(shared, &user.mailbox_login, &item).await {
        Ok((raw, _)) => {
            let p = mime::parse(&raw);
            let quoted = format!(
                "\n\n-----Original Message-----\nFrom: {}\nSent: {}\nTo: {}\nSubject: {}\n\n{}",
                p.from,
                p.date.unwrap_or_default(),
                p.to.join(", "),
                p.subject,
                p.text
            );
            Ok(Some((item.message_id_header, quoted)))
        }
        Err(r) if r.code == "MESSAGE_GONE" => Ok(Some((
            item.message_id_header,
            "\n\n[The original message is no longer in the mailbox.]".to_owned(),
        ))),
        Err(r) => Err(Outcome::Later(r.message)),
    }
}

async fn build_and_send(
    shared: &Shared,
    transport: &Transport,
    user: &User,
    compose: &Compose,
) -> Outcome {
    let from = match format!("{} <{}>", user.display_name, user.email).parse::<Mailbox>() {
        Ok(m) => m,
        Err(e) => {
            return Outcome::Refused(format!(
                "the user's address {} is not valid ({e})",
                user.email
            ))
        }
    };
    let (to, cc, bcc) = match (
        mailboxes(&compose.to),
        mailboxes(&compose.cc),
        mailboxes(&compose.bcc),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Outcome::Refused(e),
    };
    let (in_reply_to, quoted) = match original(shared, user, compose).await {
        Ok(Some((id, quoted))) => (Some(id).filter(|i| !i.is_empty()), quoted),
        Ok(None) => (None, String::new()),
        Err(later) => return later,
    };
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(compose.subject.clone())
        .header(MimeType::TEXT_PLAIN);
    for m in to {
        builder = builder.to(m);
    }
    for m in cc {
        builder = builder.cc(m);
    }
    for m in bcc {
        builder = builder.bcc(m);
    }
    if let (Some(id), Some(_)) = (&in_reply_to, compose.reply_to) {
        let id = format!("<{}>", id.trim_matches(|c| c == '<' || c == '>'));
        builder = builder.in_reply_to(id.clone()).references(id);
    }
    let message = match builder.body(format!("{}{quoted}", compose.text)) {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(format!("the message cannot be built: {e}")),
    };
    match transport.send(message.clone()).await {
        Ok(_) => Outcome::Sent(message.formatted()),
        Err(e) if e.is_permanent() => Outcome::Refused(format!("the mail server refused it: {e}")),
        Err(e) => Outcome::Later(format!(
            "the SMTP server at {} did not take it ({e}); it will be tried again",
            shared.settings.smtp.as_deref().unwrap_or("?")
        )),
    }
}

async fn file_sent(
    settings: &MailSettings,
    mailbox_login: &str,
    raw: &[u8],
) -> Result<(), imap::MailError> {
    let mut session = imap::login(settings, mailbox_login).await?;
    imap::append(&mut session, &settings.sent_folder, raw).await?;
    let _ = session.logout().await;
    Ok(())
}
