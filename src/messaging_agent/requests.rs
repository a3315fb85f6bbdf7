//! What devices ask of the Messaging Agent (CMIME from the Dispatcher):
//! mail to send, "More", attachments, and read/deleted changes made on the
//! smartphone (wireless reconciliation, device to mailbox).

use std::sync::Arc;

use base64::Engine;
use bramble_proto::cmime::{self, Cmime, SendState};
use bramble_proto::{ContentType, Pin, RefId};
use tracing::{debug, info, warn};

use crate::db::models::device::Device;
use crate::db::models::mailbox::{MailItem, OutboxEntry};
use crate::db::models::message::{Direction, Message, MessageStatus};
use crate::db::models::user::User;
use crate::dispatcher::{Inbound, Outgoing};

use super::{imap, mime, Shared};

/// A request that could not be served, for the device.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

pub(crate) async fn reply(shared: &Shared, pin: Pin, message: Cmime) {
    let out = Outgoing {
        pin,
        content_type: ContentType::Cmime,
        plaintext: message.to_bytes(),
        priority: false,
        ref_id: None,
    };
    if let Err(e) = shared.dispatcher.send(out).await {
        warn!(target: "bramble::messaging_agent", %pin, "cannot answer the device: {e}");
    }
}

/// Serves one message from a device. A message the server has had before
/// ([`Inbound::repeated`]) is acted on only if it is a `compose`, which is
/// answered with what became of it, never submitted twice.
pub(crate) async fn handle(shared: Arc<Shared>, inbound: Inbound) {
    let pin = inbound.pin;
    let request = match Cmime::from_bytes(&inbound.plaintext) {
        Ok(request @ Cmime::Compose(_)) => request,
        Ok(_) | Err(_) if inbound.repeated => {
            debug!(target: "bramble::messaging_agent", %pin, ref_id = %inbound.ref_id, "a request received before; not served again");
            return;
        }
        Ok(request) => request,
        Err(e) => {
            warn!(target: "bramble::messaging_agent", %pin, ref_id = %inbound.ref_id, "ignored a device message that is not CMIME: {e}");
            reply(
                &shared,
                pin,
                Cmime::Failed {
                    of: inbound.ref_id,
                    code: "CMIME_MALFORMED".into(),
                    message: "The server could not read this message from the device.".into(),
                },
            )
            .await;
            return;
        }
    };
    let of = inbound.ref_id;
    if let Err(refusal) = serve(&shared, pin, inbound.ref_id, request).await {
        warn!(target: "bramble::messaging_agent", %pin, ref_id = %of, code = refusal.code, "{}", refusal.message);
        reply(
            &shared,
            pin,
            Cmime::Failed {
                of,
                code: refusal.code.into(),
                message: refusal.message,
            },
        )
        .await;
    }
}

/// What the server knew of a `compose`'s RefID when it arrived.
enum Stored {
    /// Stored now, to be submitted.
    New,
    /// Stored before, not yet submitted.
    Waiting,
    /// Submitted before (sent, or refused for good).
    Done(MessageStatus),
}

async fn owner(shared: &Shared, pin: Pin) -> Result<User, Refusal> {
    let found = shared
        .db
        .run(move |conn| Ok(Device::find_with_owner(conn, &pin)?.map(|(_, user)| user)))
        .await
        .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
    found.ok_or_else(|| {
        Refusal::new(
            "UNKNOWN_DEVICE",
            format!("device {pin} belongs to no user on this server"),
        )
    })
}

/// The mailbox item of `of`, checked to belong to `user`.
async fn item_of(shared: &Shared, user: &User, of: RefId) -> Result<MailItem, Refusal> {
    let item = shared
        .db
        .run(move |conn| MailItem::find_by_ref_id(conn, of))
        .await
        .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
    match item {
        Some(item) if item.user_id == user.id => Ok(item),
        _ => Err(Refusal::new(
            "UNKNOWN_MESSAGE",
            format!("message {of} is not in this user's mailbox"),
        )),
    }
}

/// A session on the inbox that holds `item`, checked to still number
/// messages as it did when the item was recorded.
async fn open_inbox(
    shared: &Shared,
    mailbox_login: &str,
    item: &MailItem,
) -> Result<imap::Session, Refusal> {
    let settings = &shared.settings;
    let unavailable = |e: imap::MailError| Refusal::new("MAILBOX_UNAVAILABLE", e.to_string());
    let mut session = imap::login(settings, mailbox_login)
        .await
        .map_err(unavailable)?;
    let (uid_validity, _) = imap::select(&mut session, &settings.inbox)
        .await
        .map_err(unavailable)?;
    if i64::from(uid_validity) != item.uid_validity {
        return Err(Refusal::new(
            "MESSAGE_GONE",
            "the mailbox was renumbered; the message can no longer be found",
        ));
    }
    Ok(session)
}

/// The raw message of `item`, fetched from the mailbox.
pub(crate) async fn fetch_raw(
    shared: &Shared,
    mailbox_login: &str,
    item: &MailItem,
) -> Result<(Vec<u8>, u32), Refusal> {
    let mut session = open_inbox(shared, mailbox_login, item).await?;
    let fetched = imap::fetch_uid(
        &mut session,
        item.uid as u32,
        shared.settings.per_message_bytes(),
    )
    .await
    .map_err(|e| Refusal::new("MAILBOX_UNAVAILABLE", e.to_string()))?;
    let _ = session.logout().await;
    fetched.map(|f| (f.raw, f.size)).ok_or_else(|| {
        Refusal::new(
            "MESSAGE_GONE",
            "the message is no longer in the mailbox (deleted on the server)",
        )
    })
}

async fn serve(
    shared: &Arc<Shared>,
    pin: Pin,
    ref_id: RefId,
    request: Cmime,
) -> Result<(), Refusal> {
    let user = owner(shared, pin).await?;
    match request {
        Cmime::Compose(compose) => {
            if compose.to.is_empty() && compose.cc.is_empty() && compose.bcc.is_empty() {
                return Err(Refusal::new("NO_RECIPIENT", "the message has no recipient"));
            }
            let json = serde_json::to_string(&compose)
                .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
            let user_id = user.id;
            // The RefID is the message's identity: one sent before (the
            // device's resend, or a replay) is answered with its outcome
            // from the outbox or the message log, and never stored again.
            let stored = shared
                .db
                .write(move |conn| {
                    crate::db::write_transaction(conn, |conn| {
                        if let Some(message) = Message::find_by_ref_id(conn, &ref_id)? {
                            if message.direction == Direction::FromDevice
                                && message.user_id == Some(user_id)
                            {
                                return Ok(Stored::Done(message.status));
                            }
                        }
                        Ok(
                            match OutboxEntry::insert(conn, ref_id, user_id, pin, &json)? {
                                true => Stored::New,
                                false => Stored::Waiting,
                            },
                        )
                    })
                })
                .await
                .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
            let (status, error) = match stored {
                Stored::New => {
                    info!(target: "bramble::messaging_agent", user = %user.email, %ref_id, "mail from the device accepted for sending");
                    shared.outbox_wake.notify_one();
                    (SendState::Accepted, None)
                }
                Stored::Waiting => {
                    debug!(target: "bramble::messaging_agent", %ref_id, "the device sent this message again; it is sent once");
                    (SendState::Accepted, None)
                }
                Stored::Done(MessageStatus::Failed) => (
                    SendState::Failed,
                    Some("the mail server refused this message when it was submitted".to_owned()),
                ),
                Stored::Done(_) => {
                    debug!(target: "bramble::messaging_agent", %ref_id, "the device sent a message already submitted; answered, not sent again");
                    (SendState::Sent, None)
                }
            };
            reply(
                shared,
                pin,
                Cmime::SendStatus {
                    of: ref_id,
                    status,
                    error,
                },
            )
            .await;
            Ok(())
        }
        Cmime::MoreRequest { of, offset } => {
            let item = item_of(shared, &user, of).await?;
            let (raw, _) = fetch_raw(shared, &user.mailbox_login, &item).await?;
            let parsed = tokio::task::spawn_blocking(move || mime::parse(&raw))
                .await
                .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
            let (text, more) = cmime::part(&parsed.text, offset);
            reply(
                shared,
                pin,
                Cmime::More {
                    of,
                    offset,
                    text: text.to_owned(),
                    more,
                },
            )
            .await;
            Ok(())
        }
        Cmime::AttachmentRequest { of, index } => {
            let item = item_of(shared, &user, of).await?;
            let (raw, _) = fetch_raw(shared, &user.mailbox_login, &item).await?;
            let found = tokio::task::spawn_blocking(move || mime::attachment(&raw, index))
                .await
                .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
            let (info, data) = found.ok_or_else(|| {
                Refusal::new(
                    "NO_ATTACHMENT",
                    format!("message {of} has no attachment {index}"),
                )
            })?;
            let limit = shared.settings.max_attachment_bytes;
            if data.len() > limit {
                return Err(Refusal::new(
                    "ATTACHMENT_TOO_LARGE",
                    format!(
                        "the attachment {} is {} bytes; the server sends at most {limit} ([mail] max_attachment_bytes)",
                        info.name,
                        data.len()
                    ),
                ));
            }
            reply(
                shared,
                pin,
                Cmime::Attachment {
                    of,
                    index,
                    name: info.name,
                    content_type: info.content_type,
                    data_base64: base64::engine::general_purpose::STANDARD.encode(&data),
                },
            )
            .await;
            Ok(())
        }
        Cmime::State { of, read, deleted } => {
            let item = item_of(shared, &user, of).await?;
            let mut session = open_inbox(shared, &user.mailbox_login, &item).await?;
            // Record first what the device already knows, so the watcher's
            // reconciliation does not echo it back.
            let message = item.message_id;
            shared
                .db
                .write(move |conn| {
                    if deleted {
                        MailItem::set_deleted(conn, message)
                    } else if let Some(seen) = read {
                        MailItem::set_seen(conn, message, seen)
                    } else {
                        Ok(())
                    }
                })
                .await
                .map_err(|e| Refusal::new("SERVER_ERROR", e.to_string()))?;
            let uid = item.uid as u32;
            let done = if deleted {
                imap::delete(&mut session, uid).await
            } else if let Some(seen) = read {
                imap::set_seen(&mut session, uid, seen).await
            } else {
                Ok(())
            };
            let _ = session.logout().await;
            done.map_err(|e| Refusal::new("MAILBOX_UNAVAILABLE", e.to_string()))?;
            debug!(target: "bramble::messaging_agent", user = %user.email, %of, ?read, deleted, "mailbox updated from the device");
            Ok(())
        }
        other => Err(Refusal::new(
            "NOT_A_REQUEST",
            format!("a device cannot send {other:?}"),
        )),
    }
}
