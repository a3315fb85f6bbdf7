//! One user's mailbox: forward what arrives, reconcile what changes.
//!
//! A watcher logs in to the mailbox, selects the inbox, and loops: forward
//! every message above the last UID handled, reconcile read/deleted state
//! of the messages already on the device, then IDLE until the server says
//! something changed (or `idle_secs` pass). A lost connection is retried
//! with a growing delay; the next scan starts from the last UID handled, so
//! whatever arrived meanwhile is forwarded then ("re-scan after a gap").
//!
//! No message is forwarded twice: the queue write in the Dispatcher, the
//! message's record and the new last UID are one database transaction
//! ([`Dispatcher::send_recorded`](crate::dispatcher::Dispatcher::send_recorded)).

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use bramble_proto::cmime::Cmime;
use bramble_proto::{ContentType, RefId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::db::models::mailbox::{MailItem, MailboxState, Watched};
use crate::db::models::message::{Direction, Hop, Message, MessageStatus, NewMessage};
use crate::db::models::message_filter::{FilterAction, MessageFilter};
use crate::db::models::statistics::{Counter, Statistics};
use crate::dispatcher::Outgoing;

use super::imap::{self, MailError, Session};
use super::{activation, filters, mime, Shared};

/// Most messages fetched in one IMAP command (and recorded in one database
/// transaction); `[mail] fetch_batch_bytes` bounds their size.
const SCAN_BATCH: usize = 200;
/// Most messages listed (UID and size) at a time; a longer backlog is
/// listed again after these.
const LIST_LIMIT: usize = 10_000;

/// Watches `mailbox` until `cancel`.
pub(crate) async fn watch(shared: Arc<Shared>, mailbox: Watched, cancel: CancellationToken) {
    let min = Duration::from_millis(shared.settings.reconnect_min_ms.max(1));
    let max = Duration::from_millis(shared.settings.reconnect_max_ms.max(1)).max(min);
    let mut delay = min;
    let mut last_error: Option<MailError> = None;
    loop {
        let mut connected = false;
        let result = session(&shared, &mailbox, &cancel, &mut connected).await;
        if cancel.is_cancelled() {
            return;
        }
        if connected {
            delay = min;
        }
        let error = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if last_error.as_ref() != Some(&error) {
            warn!(target: "bramble::messaging_agent", user = %mailbox.email, "mailbox unavailable: {error}");
            let text = error.to_string();
            let user = mailbox.user_id;
            if let Err(e) = shared
                .db
                .write(move |conn| MailboxState::set_error(conn, user, &text))
                .await
            {
                warn!(target: "bramble::messaging_agent", "cannot record the mailbox error: {e}");
            }
            last_error = Some(error);
        } else {
            debug!(target: "bramble::messaging_agent", user = %mailbox.email, "still unavailable: {error}");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max);
    }
}

/// One connection's life. `Ok` only when cancelled.
async fn session(
    shared: &Arc<Shared>,
    mailbox: &Watched,
    cancel: &CancellationToken,
    connected: &mut bool,
) -> Result<(), MailError> {
    let settings = &shared.settings;
    let mut session = imap::login(settings, &mailbox.mailbox_login).await?;
    let (uid_validity, uid_next) = imap::select(&mut session, &settings.inbox).await?;
    *connected = true;
    let user = mailbox.user_id;
    let state = shared
        .db
        .run(move |conn| MailboxState::find(conn, user))
        .await
        .map_err(db_error)?;
    // Mail received before this moment was seen already (or is backlog).
    let mut not_before: Option<i64> = None;
    let mut last = match state.uid_validity {
        Some(v) if v == uid_validity => state.last_uid,
        Some(old) => {
            // The mailbox was recreated or renumbered: its UIDs start
            // again. Forward what arrived since the agent last had it in
            // view; what is older was forwarded under the old numbers.
            warn!(target: "bramble::messaging_agent", user = %mailbox.email, old, new = uid_validity, "the mailbox was recreated or renumbered on the server (new UIDVALIDITY); forwarding what arrived since it was last seen");
            not_before = Some(state.updated_at.assume_utc().unix_timestamp() - 60);
            0
        }
        None => {
            // First watch: start with what arrives from now on rather
            // than the whole backlog.
            uid_next.saturating_sub(1)
        }
    };
    // Shown as watching once the position it starts from is recorded.
    let renumbered = state.uid_validity != Some(uid_validity);
    shared
        .db
        .write(move |conn| {
            crate::db::write_transaction(conn, |conn| {
                if renumbered {
                    MailboxState::set_position(conn, user, uid_validity, last)?;
                }
                MailboxState::set_watching(conn, user)
            })
        })
        .await
        .map_err(db_error)?;
    if mailbox.device.is_none() {
        // Waiting for a device's activation request: one may have arrived
        // before the mailbox came into view (the server searches, so the
        // rest of the mailbox is not read).
        let earlier: Vec<u32> = imap::search_uids(&mut session, "HEADER X-Bramble-Activation \"\"")
            .await?
            .into_iter()
            .filter(|uid| *uid <= last)
            .collect();
        let mut requests = Vec::new();
        for uid in earlier {
            if let Some(f) =
                imap::fetch_uid(&mut session, uid, settings.per_message_bytes()).await?
            {
                if let Some(etp) = mime::parse(&f.raw).activation_request {
                    requests.push((uid, etp));
                }
            }
        }
        answer_requests(shared, mailbox, &mut session, requests).await?;
    }
    info!(target: "bramble::messaging_agent", user = %mailbox.email, uid_validity, last_uid = last, "watching the mailbox");
    let recheck = Duration::from_secs(settings.idle_secs.max(1));
    let mut checked = tokio::time::Instant::now();
    loop {
        while scan(
            shared,
            mailbox,
            &mut session,
            uid_validity,
            &mut last,
            not_before,
        )
        .await?
        {}
        not_before = None;
        reconcile(shared, mailbox, &mut session, uid_validity).await?;
        // The server may have said "new mail" or "flags changed" while the
        // scan ran (or while IDLE was being set up): look again at once
        // rather than wait for a notice that has already come.
        if changed(&session.unsolicited_responses) {
            continue;
        }
        let unsolicited = session.unsolicited_responses.clone();
        let timeout = session.timeout();
        let mut idle = session.into_inner().idle();
        idle.init().await?;
        let woke = if changed(&unsolicited) {
            Some(Ok(IdleResponse::ManualInterrupt))
        } else {
            let (wait, stop) =
                idle.wait_with_timeout(Duration::from_secs(settings.idle_secs.max(1)));
            tokio::select! {
                r = wait => Some(r),
                _ = cancel.cancelled() => { drop(stop); None }
            }
        };
        let quiet = match woke {
            None => return Ok(()),
            Some(r) => matches!(r?, IdleResponse::Timeout),
        };
        session = Session::new(idle.done().await?, timeout);
        if quiet || checked.elapsed() >= recheck {
            // Nothing for `idle_secs`, or that long since the last look:
            // make sure the mailbox is still the one being watched (a
            // mailbox deleted and recreated on the server tells its old
            // IDLE connections nothing, or keeps waking them with news of
            // the old one, so quiet alone is not enough).
            let (now, _) = imap::select(&mut session, &settings.inbox).await?;
            if now != uid_validity {
                return Err(MailError::Renumbered);
            }
            checked = tokio::time::Instant::now();
        }
    }
}

/// Empties the channel of responses the server sent outside a command's
/// own; true if any says the mailbox changed.
fn changed(unsolicited: &async_channel::Receiver<UnsolicitedResponse>) -> bool {
    let mut changed = false;
    while let Ok(response) = unsolicited.try_recv() {
        changed |= match response {
            UnsolicitedResponse::Exists(_)
            | UnsolicitedResponse::Recent(_)
            | UnsolicitedResponse::Expunge(_) => true,
            UnsolicitedResponse::Other(data) => {
                matches!(data.parsed(), async_imap::imap_proto::Response::Fetch(..))
            }
            _ => false,
        };
    }
    changed
}

fn db_error(e: crate::db::DbError) -> MailError {
    MailError::Protocol(format!("the Configuration Database failed: {e}"))
}

fn dispatch_error(e: crate::dispatcher::DispatchError) -> MailError {
    MailError::Protocol(format!("the Dispatcher could not queue the message: {e}"))
}

/// Forwards (or files as filtered) the messages above `last`, fetched in
/// batches of at most `[mail] fetch_batch_bytes` and [`SCAN_BATCH`]
/// messages; `last` moves on after each batch, so a lost connection starts
/// again from the batch it was in. True when more messages were listed
/// than [`LIST_LIMIT`] (scan again).
async fn scan(
    shared: &Arc<Shared>,
    mailbox: &Watched,
    session: &mut Session,
    uid_validity: u32,
    last: &mut u32,
    not_before: Option<i64>,
) -> Result<bool, MailError> {
    let (listed, more) = imap::list_after(session, *last, LIST_LIMIT).await?;
    let per_message = shared.settings.per_message_bytes();
    let batch_bytes = u64::from(shared.settings.batch_bytes());
    for batch in imap::batches(&listed, per_message, batch_bytes, SCAN_BATCH) {
        let uids: Vec<u32> = batch.iter().map(|(uid, _)| *uid).collect();
        let fetched = imap::fetch_uids(session, &uids, per_message).await?;
        // The batch's last UID, even when its messages were deleted
        // meanwhile: they are not listed again.
        let top = uids.last().copied().unwrap_or(*last).max(*last);
        forward(
            shared,
            mailbox,
            session,
            uid_validity,
            fetched,
            top,
            not_before,
        )
        .await?;
        *last = top;
    }
    Ok(more)
}

/// Forwards (or files as filtered) one batch of fetched messages and
/// records `top` as the last UID handled, in one transaction.
async fn forward(
    shared: &Arc<Shared>,
    mailbox: &Watched,
    session: &mut Session,
    uid_validity: u32,
    fetched: Vec<imap::Fetched>,
    top: u32,
    not_before: Option<i64>,
) -> Result<(), MailError> {
    let max = shared.settings.per_message_bytes();
    let user = mailbox.user_id;
    let filters = shared
        .db
        .run(move |conn| MessageFilter::find_applicable(conn, user))
        .await
        .map_err(db_error)?;
    let mut outgoing = Vec::new();
    let mut records = Vec::new();
    let mut requests = Vec::new();
    for f in fetched {
        if let (Some(limit), Some(received)) = (not_before, f.received) {
            if received < limit {
                continue;
            }
        }
        let raw = f.raw;
        let parsed = if raw.len() > 1024 * 1024 {
            tokio::task::spawn_blocking(move || mime::parse(&raw))
                .await
                .map_err(|e| MailError::Protocol(e.to_string()))?
        } else {
            mime::parse(&raw)
        };
        if let Some(etp) = parsed.activation_request {
            // A device's activation request: answered by the agent, never
            // forwarded to the user (seed step 6).
            requests.push((f.uid, etp));
            continue;
        }
        let Some((_, pin)) = mailbox.device else {
            // No activated device yet: nothing else is forwarded.
            continue;
        };
        let (action, by) = filters::decide(&filters, &parsed);
        let cut = (f.size > max).then_some(u64::from(f.size));
        if cut.is_some() {
            info!(target: "bramble::messaging_agent", user = %mailbox.email, uid = f.uid, "a message of {} is longer than [mail] max_fetch_bytes or fetch_batch_bytes allow; the device gets its first {} and can ask for more", mib(f.size), mib(max));
        }
        let ref_id = RefId::random();
        if action == FilterAction::DoNotForward {
            debug!(target: "bramble::messaging_agent", user = %mailbox.email, uid = f.uid, filter = by.unwrap_or(""), "kept in the mailbox by a filter");
        } else {
            let priority = action == FilterAction::ForwardPriority;
            let item = parsed.item(priority, f.seen, cut);
            outgoing.push(Outgoing {
                pin,
                content_type: ContentType::Cmime,
                plaintext: Cmime::Mail(item).to_bytes(),
                priority,
                ref_id: Some(ref_id),
            });
        }
        records.push((
            ref_id,
            f.uid,
            f.seen,
            action,
            parsed.subject,
            parsed.message_id,
        ));
    }
    answer_requests(shared, mailbox, session, requests).await?;
    let device = mailbox.device.map(|(id, _)| id);
    shared
        .dispatcher
        .send_recorded(outgoing, move |conn, _| {
            for (ref_id, uid, seen, action, subject, message_id) in records {
                let filtered = action == FilterAction::DoNotForward;
                let message = Message::create(
                    conn,
                    &NewMessage {
                        ref_id,
                        user_id: Some(user),
                        device_id: device,
                        direction: Direction::ToDevice,
                        status: if filtered {
                            MessageStatus::Filtered
                        } else {
                            MessageStatus::Forwarded
                        },
                        subject,
                    },
                )?;
                if filtered {
                    Statistics::increment(conn, Some(user), Counter::Filtered, 1)?;
                    continue;
                }
                Message::record_hop(conn, message.id, Hop::MessagingAgent, "forwarded")?;
                Message::record_hop(conn, message.id, Hop::Dispatcher, "queued")?;
                MailItem::create(
                    conn,
                    &MailItem {
                        message_id: message.id,
                        user_id: user,
                        uid_validity: i64::from(uid_validity),
                        uid: i64::from(uid),
                        message_id_header: message_id,
                        seen,
                        deleted: false,
                    },
                )?;
                Statistics::increment(conn, Some(user), Counter::Forwarded, 1)?;
                Statistics::increment(conn, Some(user), Counter::Pending, 1)?;
            }
            MailboxState::set_position(conn, user, uid_validity, top)
        })
        .await
        .map_err(dispatch_error)?;
    Ok(())
}

/// A size in words: "3.2 MiB".
fn mib(bytes: u32) -> String {
    format!("{:.1} MiB", f64::from(bytes) / (1024.0 * 1024.0))
}

/// Answers activation requests found in the mailbox
/// ([`super::activation::answer_request`]) and removes them from the
/// mailbox (seed step 6). An unreadable one is removed too, with a log
/// line: it can never activate anything.
async fn answer_requests(
    shared: &Arc<Shared>,
    mailbox: &Watched,
    session: &mut Session,
    requests: Vec<(u32, Vec<u8>)>,
) -> Result<(), MailError> {
    use bramble_proto::activation::EtpRequest;
    for (uid, etp) in requests {
        match EtpRequest::from_bytes(&etp) {
            Ok(request) => {
                info!(target: "bramble::messaging_agent", user = %mailbox.email, pin = %request.pin, "activation request found in the mailbox; answering it");
                activation::answer_request(shared, &mailbox.email, etp).await;
            }
            Err(e) => {
                warn!(target: "bramble::messaging_agent", user = %mailbox.email, uid, "an activation request in the mailbox cannot be read ({e}); removed")
            }
        }
        imap::delete(session, uid).await?;
    }
    Ok(())
}

/// Tells the device about messages read, unread or deleted in the mailbox
/// since it got them.
async fn reconcile(
    shared: &Arc<Shared>,
    mailbox: &Watched,
    session: &mut Session,
    uid_validity: u32,
) -> Result<(), MailError> {
    let Some((_, pin)) = mailbox.device else {
        return Ok(());
    };
    let user = mailbox.user_id;
    let window = shared.settings.reconcile_window;
    let tracked = shared
        .db
        .run(move |conn| MailItem::find_tracked(conn, user, uid_validity, window))
        .await
        .map_err(db_error)?;
    let (Some(low), Some(high)) = (
        tracked.iter().map(|(i, _)| i.uid).min(),
        tracked.iter().map(|(i, _)| i.uid).max(),
    ) else {
        return Ok(());
    };
    let flags = imap::seen_flags(session, low as u32, high as u32).await?;
    let mut outgoing = Vec::new();
    let mut changes = Vec::new();
    for (item, ref_id) in tracked {
        let change = match flags.get(&(item.uid as u32)) {
            None => Some((None, true)),
            Some(&seen) if seen != item.seen => Some((Some(seen), false)),
            Some(_) => None,
        };
        if let Some((read, deleted)) = change {
            outgoing.push(Outgoing {
                pin,
                content_type: ContentType::Cmime,
                plaintext: Cmime::State {
                    of: ref_id,
                    read,
                    deleted,
                }
                .to_bytes(),
                priority: false,
                ref_id: None,
            });
            changes.push((item.message_id, read, deleted));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    debug!(target: "bramble::messaging_agent", user = %mailbox.email, changes = changes.len(), "reconciling with the device");
    shared
        .dispatcher
        .send_recorded(outgoing, move |conn, _| {
            for (message, read, deleted) in changes {
                if deleted {
                    MailItem::set_deleted(conn, message)?;
                } else if let Some(seen) = read {
                    MailItem::set_seen(conn, message, seen)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(dispatch_error)?;
    Ok(())
}
