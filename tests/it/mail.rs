//! The Messaging Agent against the real testbed (Dovecot IMAP + LMTP,
//! Postfix SMTP) with reference devices on the LAN path: mail reaches the
//! device with its RefID after filters, statistics follow, "More" and
//! attachments on request, mail from the device is submitted and filed in
//! Sent, read/deleted state is reconciled both ways, and faults (servers
//! down then back, wrong passwords, bad MIME, a 50 MB message) lose
//! nothing and send nothing twice.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bramble::config::Settings;
use bramble::db::ids::UserId;
use bramble::db::models::mailbox::{MailboxState, OutboxEntry, WatchState};
use bramble::db::models::message::{Message, MessageStatus};
use bramble::db::models::message_filter::{Condition, FilterAction, NewMessageFilter};
use bramble::db::models::statistics::Statistics;
use bramble::db::Database;
use bramble::server::Listeners;
use bramble::{Server, ServerHandle};
use bramble_device::{Connection, Device, DeviceConfig, KeyStore};
use bramble_proto::cmime::{Cmime, Compose, MailItem, SendState};
use bramble_proto::envelope::TransportKey;
use bramble_proto::{ContentType, Pin, RefId};
use bramble_testbed::lmtp::Lmtp;
use bramble_testbed::{pilot, send_mail, Testbed, TestbedInfo, TestbedOptions};
use diesel::RunQueryDsl;
use futures::TryStreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Guards against a hang; never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) struct Bed {
    _dir: tempfile::TempDir,
    testbed: Testbed,
    /// Relays in front of IMAP and SMTP that can be cut (when asked for).
    cuts: Option<(Cut, Cut)>,
    pub(crate) server: ServerHandle,
    pub(crate) users: Vec<(UserId, Pin)>,
    pub(crate) keys: Vec<TransportKey>,
    /// The server's settings, to start it again.
    pub(crate) settings: Settings,
}

impl Bed {
    pub(crate) fn info(&self) -> &TestbedInfo {
        self.testbed.info()
    }

    pub(crate) fn db(&self) -> &Database {
        &self.server.state().db
    }

    async fn phone(&self, n: usize) -> Connection {
        let (_, pin) = self.users[n];
        let device = Device::new(DeviceConfig::new(pin), KeyStore::new(self.keys[n].clone()));
        let conn = crate::fixture::plug_in(&self.server, &device, PATIENCE).await;
        conn
    }

    async fn wait_state(&self, n: usize, want: WatchState) -> MailboxState {
        let user = self.users[n].0;
        let db = self.db().clone();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let state = db
                    .run(move |conn| MailboxState::find(conn, user))
                    .await
                    .unwrap();
                if state.state == want {
                    return state;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let last = self
                .db()
                .run_blocking(move |conn| MailboxState::find(conn, user))
                .ok();
            panic!("mailbox of user {n} never reached {want:?}: {last:?}")
        })
    }

    pub(crate) async fn stats(&self, n: usize) -> Statistics {
        let user = self.users[n].0;
        self.db()
            .run(move |conn| Statistics::find_by_user(conn, user))
            .await
            .unwrap()
    }

    /// Waits until user `n`'s statistics satisfy `ok`.
    async fn wait_stats(&self, n: usize, ok: impl Fn(&Statistics) -> bool) -> Statistics {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let s = self.stats(n).await;
                if ok(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("statistics never matched"))
    }

    async fn deliver(&self, n: usize, raw: &str) {
        let mut lmtp = Lmtp::connect(self.info().lmtp_addr()).await.unwrap();
        let to = self.info().users[n].address.clone();
        lmtp.deliver("sender@example.org", &to, raw.as_bytes())
            .await
            .unwrap();
    }

    pub(crate) async fn stop(self) {
        self.server.shutdown().await.unwrap();
        drop(self.testbed);
    }
}

/// A testbed with `users` users, all enrolled with devices, and a server
/// whose Messaging Agent reaches the testbed (after `tweak`).
pub(crate) async fn bed(users: usize, tweak: impl FnOnce(&mut Settings)) -> Bed {
    bed_with(users, false, tweak).await
}

/// [`bed`], optionally reaching IMAP and SMTP through cuttable relays.
async fn bed_with(users: usize, with_cuts: bool, tweak: impl FnOnce(&mut Settings)) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let tb_dir = dir.path().join("testbed");
    let testbed = tokio::task::spawn_blocking(move || {
        let mut options = TestbedOptions::new(tb_dir);
        options.users = users;
        Testbed::start(options)
    })
    .await
    .unwrap()
    .unwrap();
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().join("data");
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.router.lan_listen = Some("127.0.0.1:0".parse().unwrap());
    settings.mail = pilot::mail_settings(testbed.info());
    let cuts = if with_cuts {
        let imap = Cut::new(testbed.info().imap_addr()).await;
        let smtp = Cut::new(testbed.info().smtp_addr()).await;
        settings.mail.imap = Some(imap.addr.to_string());
        settings.mail.smtp = Some(smtp.addr.to_string());
        Some((imap, smtp))
    } else {
        None
    };
    tweak(&mut settings);
    let kept = settings.clone();
    let db = Database::open(&settings.database()).unwrap();
    let enrolled = pilot::enroll(&db, &testbed.info().users, 0x2000_0001).unwrap();
    drop(db);
    let listeners = Listeners::bind(&settings).await.unwrap();
    let components = Server::default_components(&settings);
    let server = Server::start_with(settings, listeners, components)
        .await
        .unwrap();
    let keys: Vec<TransportKey> = (0..enrolled.len())
        .map(|_| TransportKey::generate(1).unwrap())
        .collect();
    bramble_testbed::provision::into_server(
        &server,
        enrolled
            .iter()
            .zip(&keys)
            .map(|((_, pin), key)| (*pin, key.clone()))
            .collect(),
    )
    .await
    .unwrap();
    Bed {
        _dir: dir,
        testbed,
        cuts,
        server,
        users: enrolled,
        keys,
        settings: kept,
    }
}

/// The next CMIME message on the device (skipping none).
pub(crate) async fn next(conn: &Connection) -> (RefId, Cmime) {
    let m = tokio::time::timeout(PATIENCE, conn.recv())
        .await
        .expect("no message reached the device")
        .expect("the device's link closed");
    assert_eq!(m.content_type, ContentType::Cmime);
    (m.ref_id, Cmime::from_bytes(&m.plaintext).unwrap())
}

/// The next new mail on the device, skipping other CMIME messages.
async fn next_mail(conn: &Connection) -> (RefId, MailItem) {
    loop {
        if let (ref_id, Cmime::Mail(item)) = next(conn).await {
            return (ref_id, item);
        }
    }
}

async fn send(conn: &Connection, message: &Cmime) -> RefId {
    let ref_id = RefId::random();
    conn.send(ContentType::Cmime, ref_id, &message.to_bytes())
        .await
        .unwrap();
    ref_id
}

/// An IMAP session on `login`'s mailbox as the master user.
async fn imap(info: &TestbedInfo, login: &str) -> async_imap::Session<TcpStream> {
    let tcp = TcpStream::connect(info.imap_addr()).await.unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    client
        .login(info.master_login_for(login), &info.master_password)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

/// Raw messages in `folder` of `login`'s mailbox (empty if it is missing).
pub(crate) async fn folder(info: &TestbedInfo, login: &str, name: &str) -> Vec<String> {
    let mut s = imap(info, login).await;
    if s.select(name).await.is_err() {
        return Vec::new();
    }
    let fetches: Vec<_> = s
        .fetch("1:*", "BODY.PEEK[]")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap_or_default();
    fetches
        .iter()
        .filter_map(|f| f.body().map(|b| String::from_utf8_lossy(b).into_owned()))
        .collect()
}

pub(crate) async fn wait_folder(
    info: &TestbedInfo,
    login: &str,
    name: &str,
    want: usize,
) -> Vec<String> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let messages = folder(info, login, name).await;
            if messages.len() >= want {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{login}'s {name} never held {want} messages"))
}

fn message(from: &str, subject: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: user1@example.com\r\nSubject: {subject}\r\nMessage-ID: <{}@example.org>\r\n{extra_headers}\r\n{body}\r\n",
        RefId::random()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_flows_both_ways_with_filters_statistics_and_reconciliation() {
    let bed = bed(3, |_| {}).await;
    let user = bed.users[0].0;
    bed.db()
        .run(move |conn| {
            NewMessageFilter {
                user_id: None,
                name: "CEO first".into(),
                enabled: true,
                conditions: vec![Condition::FromContains {
                    text: "ceo@".into(),
                }],
                action: FilterAction::ForwardPriority,
            }
            .save(conn)?;
            NewMessageFilter {
                user_id: Some(user),
                name: "No newsletters".into(),
                enabled: true,
                conditions: vec![Condition::SubjectContains {
                    text: "newsletter".into(),
                }],
                action: FilterAction::DoNotForward,
            }
            .save(conn)
        })
        .await
        .unwrap();
    let phone = bed.phone(0).await;
    bed.wait_state(0, WatchState::Watching).await;

    // Into the mailbox: over SMTP (Postfix → LMTP → Dovecot) like real mail.
    let long = format!(
        "First line.\n{}Last line.",
        "All work and no play.\n".repeat(300)
    );
    let with_attachment = format!(
        "From: alice@example.org\r\nTo: user1@example.com\r\nSubject: Report\r\nMessage-ID: <report@example.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n{long}\r\n\
--B\r\nContent-Type: application/octet-stream; name=data.bin\r\nContent-Disposition: attachment; filename=data.bin\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--B--\r\n"
    );
    let smtp = bed.info().smtp_addr();
    let to = bed.info().users[0].address.clone();
    let newsletter = message("news@example.org", "Weekly newsletter", "", "Buy things.");
    let ceo = message("ceo@example.com", "Budget", "", "Please review.");
    tokio::task::spawn_blocking(move || {
        send_mail(smtp, "alice@example.org", &to, &with_attachment).unwrap();
        send_mail(smtp, "news@example.org", &to, &newsletter).unwrap();
        send_mail(smtp, "ceo@example.com", &to, &ceo).unwrap();
    })
    .await
    .unwrap();

    // Postfix delivers separate messages in any order; the newsletter is
    // filtered, so two arrive.
    let mut arrived = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let (ref_id, item) = next_mail(&phone).await;
        arrived.insert(item.subject.clone(), (ref_id, item));
    }
    let subjects: Vec<&str> = arrived.keys().map(String::as_str).collect();
    assert_eq!(subjects, ["Budget", "Report"]);
    let (report_ref, report) = arrived.remove("Report").unwrap();
    let (ceo_ref, ceo) = arrived.remove("Budget").unwrap();
    assert_eq!(report.from, "alice@example.org");
    assert!(!report.priority);
    assert_eq!(report.text.len(), 2048, "the first part is 2 KB");
    assert!(report.more && report.text.starts_with("First line."));
    assert_eq!(report.attachments.len(), 1);
    assert_eq!(report.attachments[0].name, "data.bin");
    assert!(
        ceo.priority,
        "the global filter forwards the CEO with priority"
    );

    // The RefIDs on the device are the server's records.
    for (ref_id, subject) in [(report_ref, "Report"), (ceo_ref, "Budget")] {
        let m = bed
            .db()
            .run(move |conn| Message::find_by_ref_id(conn, &ref_id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.subject, subject);
    }
    let stats = bed
        .wait_stats(0, |s| s.delivered == 2 && s.filtered == 1)
        .await;
    assert_eq!(
        (
            stats.forwarded,
            stats.filtered,
            stats.pending,
            stats.delivered
        ),
        (2, 1, 0, 2),
        "{stats:?}"
    );
    let newsletter_rows = bed
        .db()
        .run(move |conn| Message::find_by_user(conn, user, 0, 10))
        .await
        .unwrap()
        .0;
    assert!(newsletter_rows
        .iter()
        .any(|m| m.subject == "Weekly newsletter" && m.status == MessageStatus::Filtered));

    // "More" and the attachment, on request.
    send(
        &phone,
        &Cmime::MoreRequest {
            of: report_ref,
            offset: 2048,
        },
    )
    .await;
    let (_, more) = next(&phone).await;
    let Cmime::More {
        of, offset, text, ..
    } = more
    else {
        panic!("expected More, got {more:?}")
    };
    assert_eq!((of, offset), (report_ref, 2048));
    assert_eq!(
        text.as_str(),
        &long.replace('\n', "\r\n")[2048..][..text.len()]
    );
    send(
        &phone,
        &Cmime::AttachmentRequest {
            of: report_ref,
            index: 0,
        },
    )
    .await;
    let (_, attachment) = next(&phone).await;
    let Cmime::Attachment {
        name, data_base64, ..
    } = attachment
    else {
        panic!("expected the attachment, got {attachment:?}")
    };
    assert_eq!(name, "data.bin");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data_base64)
            .unwrap(),
        (0u8..10).collect::<Vec<_>>()
    );

    // From the device: a reply; the server adds the original text.
    let compose = Cmime::Compose(Compose {
        to: vec![bed.info().users[1].address.clone()],
        subject: "Re: Report".into(),
        text: "Thanks, looks good.".into(),
        reply_to: Some(report_ref),
        ..Compose::default()
    });
    let sent_ref = send(&phone, &compose).await;
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        if let (_, Cmime::SendStatus { of, status, .. }) = next(&phone).await {
            assert_eq!(of, sent_ref);
            statuses.push(status);
        }
    }
    assert_eq!(statuses, vec![SendState::Accepted, SendState::Sent]);
    let received = wait_folder(bed.info(), "user2", "INBOX", 1).await;
    assert!(received[0].contains("Thanks, looks good."));
    assert!(received[0].contains("-----Original Message-----"));
    assert!(received[0].contains("All work and no play."));
    assert!(received[0].contains("In-Reply-To: <report@example.org>"));
    let sent = wait_folder(bed.info(), "user1", "Sent", 1).await;
    assert!(sent[0].contains("Thanks, looks good."));
    bed.wait_stats(0, |s| s.sent == 1).await;

    // Read on the device → \Seen in the mailbox.
    send(
        &phone,
        &Cmime::State {
            of: report_ref,
            read: Some(true),
            deleted: false,
        },
    )
    .await;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let mut s = imap(bed.info(), "user1").await;
            s.select("INBOX").await.unwrap();
            let seen: Vec<_> = s
                .uid_search("SEEN SUBJECT Report")
                .await
                .unwrap()
                .into_iter()
                .collect();
            if !seen.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();

    // Read, then deleted, in the mailbox → told to the device.
    let mut s = imap(bed.info(), "user1").await;
    s.select("INBOX").await.unwrap();
    let budget: Vec<u32> = s
        .uid_search("SUBJECT Budget")
        .await
        .unwrap()
        .into_iter()
        .collect();
    let _: Vec<_> = s
        .uid_store(budget[0].to_string(), "+FLAGS (\\Seen)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let state = loop {
        if let (_, m @ Cmime::State { .. }) = next(&phone).await {
            break m;
        }
    };
    assert_eq!(
        state,
        Cmime::State {
            of: ceo_ref,
            read: Some(true),
            deleted: false
        }
    );
    let _: Vec<_> = s
        .uid_store(budget[0].to_string(), "+FLAGS (\\Deleted)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let _: Vec<_> = s.expunge().await.unwrap().try_collect().await.unwrap();
    let state = loop {
        if let (_, m @ Cmime::State { .. }) = next(&phone).await {
            break m;
        }
    };
    assert_eq!(
        state,
        Cmime::State {
            of: ceo_ref,
            read: None,
            deleted: true
        }
    );

    phone.close().await;
    bed.stop().await;
}

/// A TCP relay in front of a real server that can be cut and restored:
/// the "server down, then back" fault on a fixed address.
struct Cut {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    /// What clients sent through the relay.
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Cut {
    async fn new(target: SocketAddr) -> Cut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let rx = up.subscribe();
        let sent = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(Self::serve(listener, target, rx, sent.clone()));
        Cut { addr, up, sent }
    }

    async fn serve(
        mut listener: TcpListener,
        target: SocketAddr,
        mut up: watch::Receiver<bool>,
        sent: Arc<Mutex<Vec<u8>>>,
    ) {
        let addr = listener.local_addr().unwrap();
        let source = up.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((inbound, _)) = accepted else { continue };
                    let mut down = source.clone();
                    let sent = sent.clone();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else { return };
                        let (mut from_client, mut to_client) = inbound.into_split();
                        let (mut from_server, mut to_server) = outbound.into_split();
                        let upstream = async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = match from_client.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                sent.lock().unwrap().extend_from_slice(&buf[..n]);
                                if to_server.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = to_server.shutdown().await;
                        };
                        let downstream = async move {
                            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                            let _ = to_client.shutdown().await;
                        };
                        tokio::select! {
                            _ = async { tokio::join!(upstream, downstream) } => {}
                            _ = down.wait_for(|up| !*up) => {}
                        }
                    });
                }
                _ = up.wait_for(|up| !*up) => {}
            }
            if *up.borrow() {
                continue;
            }
            drop(listener);
            // Refused until restored, on the same port.
            if up.wait_for(|up| *up).await.is_err() {
                return;
            }
            listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
        }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// The lines clients sent since the last call.
    fn take_lines(&self) -> Vec<String> {
        let sent = std::mem::take(&mut *self.sent.lock().unwrap());
        String::from_utf8_lossy(&sent)
            .split("\r\n")
            .map(str::to_owned)
            .collect()
    }
}

/// The UIDs of an IMAP sequence set of UIDs (`3:5,9`).
fn uids_of(set: &str) -> Vec<u32> {
    set.split(',')
        .flat_map(|part| match part.split_once(':') {
            Some((a, b)) => (a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()).collect(),
            None => vec![part.parse::<u32>().unwrap()],
        })
        .collect()
}

/// The test process's peak resident memory, from the kernel.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_fetched_in_batches_no_larger_than_the_setting() {
    // A backlog of COUNT messages of at least SIZE bytes each, fetched with
    // [mail] fetch_batch_bytes = BATCH: every message reaches the device,
    // and no fetch asks for more than BATCH (so for more than BATCH / SIZE
    // messages).
    const COUNT: usize = 60;
    const SIZE: usize = 256 * 1024;
    const BATCH: u32 = 1024 * 1024;
    let bed = bed_with(1, true, |s| s.mail.fetch_batch_bytes = BATCH).await;
    let (imap_cut, _) = bed.cuts.as_ref().unwrap();
    let phone = bed.phone(0).await;
    bed.wait_state(0, WatchState::Watching).await;
    imap_cut.set(false);
    bed.wait_state(0, WatchState::Error).await;
    let line = "0123456789abcdef".repeat(4) + "\r\n";
    let body = line.repeat(SIZE / line.len() + 1);
    for i in 0..COUNT {
        bed.deliver(
            0,
            &message("a@example.org", &format!("Backlog {i:03}"), "", &body),
        )
        .await;
    }
    imap_cut.take_lines();
    imap_cut.set(true);
    let mut arrived = std::collections::BTreeSet::new();
    for _ in 0..COUNT {
        let (_, item) = next_mail(&phone).await;
        assert!(
            arrived.insert(item.subject.clone()),
            "forwarded twice: {}",
            item.subject
        );
    }
    let want: std::collections::BTreeSet<String> =
        (0..COUNT).map(|i| format!("Backlog {i:03}")).collect();
    assert_eq!(arrived, want);

    let fetches: Vec<(Vec<u32>, u32)> = imap_cut
        .take_lines()
        .iter()
        .filter(|l| l.contains("UID FETCH") && l.contains("BODY.PEEK[]"))
        .map(|l| {
            let rest = l.split("UID FETCH ").nth(1).unwrap();
            let (set, query) = rest.split_once(' ').unwrap();
            let asked = query
                .split("BODY.PEEK[]<0.")
                .nth(1)
                .and_then(|t| t.split('>').next())
                .unwrap()
                .parse::<u32>()
                .unwrap();
            (uids_of(set), asked)
        })
        .collect();
    let mut fetched = std::collections::BTreeSet::new();
    for (uids, asked) in &fetches {
        assert!(
            *asked <= BATCH,
            "one message's fetch asked for {asked} bytes"
        );
        assert!(
            uids.len() * SIZE <= BATCH as usize,
            "a fetch asked for {} messages of at least {SIZE} bytes: {uids:?}",
            uids.len()
        );
        fetched.extend(uids.iter().copied());
    }
    assert_eq!(fetched.len(), COUNT, "every message fetched: {fetches:?}");
    assert!(
        fetches.len() >= COUNT * SIZE / BATCH as usize,
        "{} fetches for {COUNT} messages",
        fetches.len()
    );
    eprintln!(
        "{COUNT} messages of {} KiB in {} fetches (batch {} KiB); peak RSS of the test process: {:?} KiB",
        SIZE / 1024,
        fetches.len(),
        BATCH / 1024,
        peak_rss_kib()
    );

    phone.close().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_down_then_back_lose_nothing_and_send_nothing_twice() {
    let bed = bed_with(2, true, |_| {}).await;
    let (imap_cut, smtp_cut) = bed.cuts.as_ref().unwrap();
    let phone = bed.phone(0).await;
    bed.wait_state(0, WatchState::Watching).await;

    // IMAP down: mail keeps arriving in the mailbox meanwhile.
    imap_cut.set(false);
    let down = bed.wait_state(0, WatchState::Error).await;
    assert!(
        down.error.as_deref().unwrap_or("").contains("IMAP"),
        "the error says what is wrong: {down:?}"
    );
    bed.deliver(0, &message("a@example.org", "While down 1", "", "one"))
        .await;
    bed.deliver(0, &message("a@example.org", "While down 2", "", "two"))
        .await;
    imap_cut.set(true);
    let (_, first) = next_mail(&phone).await;
    let (_, second) = next_mail(&phone).await;
    assert_eq!(
        (first.subject.as_str(), second.subject.as_str()),
        ("While down 1", "While down 2")
    );
    bed.wait_state(0, WatchState::Watching).await;

    // A malformed message, an unknown charset and a 50 MB message all arrive.
    bed.deliver(
        0,
        "Subject: broken\r\nContent-Type: multipart/mixed; boundary=\"nope\r\n\r\n--x\r\nno end",
    )
    .await;
    bed.deliver(
        0,
        "Subject: odd charset\r\nContent-Type: text/plain; charset=x-unknown-42\r\n\r\nreadable words\r\n",
    )
    .await;
    let big_line = "0123456789abcdef".repeat(4) + "\r\n";
    let big = format!(
        "Subject: huge\r\nContent-Type: text/plain\r\n\r\nThe start.\r\n{}",
        big_line.repeat(50 * 1024 * 1024 / big_line.len())
    );
    bed.deliver(0, &big).await;
    // Each arrives exactly once; the order of separate deliveries is not
    // what is being tested here.
    let mut arrived = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let (_, item) = next_mail(&phone).await;
        let previous = arrived.insert(item.subject.clone(), item);
        assert!(previous.is_none(), "forwarded twice: {previous:?}");
    }
    let subjects: Vec<&str> = arrived.keys().map(String::as_str).collect();
    assert_eq!(subjects, ["broken", "huge", "odd charset"]);
    let odd = &arrived["odd charset"];
    assert!(odd.text.contains("readable words"), "{odd:?}");
    let huge = &arrived["huge"];
    assert!(huge.text.starts_with("The start.") && huge.more && huge.text_len > 50_000_000);

    // SMTP down: the device's message waits in the outbox, and is sent once
    // when the server is back, even though the device sent it twice.
    smtp_cut.set(false);
    let compose = Cmime::Compose(Compose {
        to: vec![bed.info().users[1].address.clone()],
        subject: "Sent while SMTP was down".into(),
        text: "exactly once".into(),
        ..Compose::default()
    });
    let ref_id = RefId::random();
    for _ in 0..2 {
        phone
            .send(ContentType::Cmime, ref_id, &compose.to_bytes())
            .await
            .unwrap();
    }
    let db = bed.db().clone();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let waiting = db
                .run(|conn| {
                    OutboxEntry::find_due(conn, bramble::db::now() + time::Duration::hours(1), 10)
                })
                .await
                .unwrap();
            if waiting
                .iter()
                .any(|e| e.attempts > 0 && e.last_error.as_deref().unwrap_or("").contains("SMTP"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the outbox never recorded the SMTP failure");
    smtp_cut.set(true);
    let delivered = wait_folder(bed.info(), "user2", "INBOX", 1).await;
    assert!(delivered[0].contains("exactly once"));
    bed.wait_stats(0, |s| s.sent == 1).await;
    // Count once nothing is left that could still bring a duplicate: the
    // outbox holds nothing more to send and Postfix has delivered all it
    // accepted.
    crate::fixture::wait_until(
        PATIENCE,
        "the outbox and Postfix's queue are empty",
        || async {
            db.run(OutboxEntry::count).await.unwrap() == 0 && bed.testbed.mail_queue_is_empty()
        },
    )
    .await;
    assert_eq!(
        folder(bed.info(), "user2", "INBOX").await.len(),
        1,
        "sent exactly once"
    );
    assert_eq!(db.run(OutboxEntry::count).await.unwrap(), 0);

    phone.close().await;
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_imap_password_read_from_a_private_file_opens_the_mailboxes() {
    let secrets = tempfile::tempdir().unwrap();
    let bed = bed(1, |s| {
        let file = secrets.path().join("imap.pw");
        std::fs::write(&file, format!("{}\n", s.mail.service_password)).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // Only the file knows the password now.
        s.mail.service_password = String::new();
        s.mail.service_password_file = Some(file);
        s.resolve_secret_sources(&[]).unwrap();
    })
    .await;
    let state = bed.wait_state(0, WatchState::Watching).await;
    assert_eq!(state.error, None);
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_service_password_is_a_visible_per_user_error() {
    let bed = bed(1, |s| s.mail.service_password = "wrong".into()).await;
    let state = bed.wait_state(0, WatchState::Error).await;
    let error = state.error.unwrap();
    assert!(
        error.contains("refused the login `user1*bramble`"),
        "{error}"
    );
    assert!(error.contains("service_password"), "{error}");
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_deleted_on_the_server_is_watched_again_when_it_returns() {
    // A recreated mailbox is noticed when IDLE is renewed.
    let bed = bed(1, |s| s.mail.idle_secs = 2).await;
    let phone = bed.phone(0).await;
    let before = bed.wait_state(0, WatchState::Watching).await;
    bed.deliver(0, &message("a@example.org", "Before", "", "first"))
        .await;
    assert_eq!(next_mail(&phone).await.1.subject, "Before");

    // The mailbox disappears from the server (its folder removed), then
    // mail arrives for the user again: the server recreates the mailbox
    // with new UIDs (a new UIDVALIDITY).
    let maildir = bed.testbed.dir().join("mail").join("user1");
    // Dovecot numbers a new mailbox by the second it was created in: wait
    // until the old mailbox's second has passed so the recreated one is
    // told apart, as it would be.
    let old_validity = i64::from(before.uid_validity.unwrap_or_default());
    crate::fixture::wait_until(
        PATIENCE,
        "the old mailbox's UIDVALIDITY second has passed",
        || async { time::OffsetDateTime::now_utc().unix_timestamp() > old_validity },
    )
    .await;
    // Moved away in one step (Dovecot may be writing into it meanwhile).
    std::fs::rename(&maildir, maildir.with_extension("deleted")).unwrap();
    // Dovecot may answer "451 Mailbox was deleted under us" while it
    // notices; a mail server tries a temporary refusal again, so does this.
    let after = message("a@example.org", "After", "", "second");
    let to = bed.info().users[0].address.clone();
    let mut tries = 0;
    loop {
        let mut lmtp = Lmtp::connect(bed.info().lmtp_addr()).await.unwrap();
        match lmtp
            .deliver("sender@example.org", &to, after.as_bytes())
            .await
        {
            Ok(()) => break,
            Err(bramble_testbed::lmtp::LmtpError::Refused(answer))
                if answer.starts_with('4') && tries < 20 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the recreated mailbox refused mail: {e:?}"),
        }
    }
    let (_, after) = next_mail(&phone).await;
    assert_eq!(after.subject, "After");
    let user = bed.users[0].0;
    let state = bed
        .db()
        .run(move |conn| MailboxState::find(conn, user))
        .await
        .unwrap();
    assert_ne!(
        state.uid_validity, before.uid_validity,
        "the recreated mailbox is followed under its new UIDVALIDITY"
    );
    phone.close().await;
    bed.stop().await;
}

/// How often the Messaging Agent has logged, per RefID, that mail the SMTP
/// server accepted was not recorded: the line an administrator sees while
/// the database refuses writes.
fn unrecorded_reports() -> &'static std::sync::Mutex<std::collections::HashMap<String, usize>> {
    use tracing_subscriber::layer::SubscriberExt;

    static REPORTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, usize>>,
    > = std::sync::OnceLock::new();

    #[derive(Default)]
    struct Fields {
        message: String,
        ref_id: String,
    }
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            match field.name() {
                "message" => self.message = format!("{value:?}"),
                "ref_id" => self.ref_id = format!("{value:?}"),
                _ => {}
            }
        }
    }
    struct Count;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        // Only the agent's warnings: the rest of the binary logs nothing.
        fn enabled(
            &self,
            metadata: &tracing::Metadata<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) -> bool {
            metadata.target() == "bramble::messaging_agent"
                && *metadata.level() <= tracing::Level::WARN
        }

        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() != "bramble::messaging_agent" {
                return;
            }
            let mut fields = Fields::default();
            event.record(&mut fields);
            if fields.message.contains("not recorded") {
                if let Some(reports) = REPORTS.get() {
                    *reports.lock().unwrap().entry(fields.ref_id).or_default() += 1;
                }
            }
        }
    }

    REPORTS.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Count));
        std::sync::Mutex::new(std::collections::HashMap::new())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_mail_whose_record_fails_leaves_once() {
    let reports = unrecorded_reports();
    let bed = bed(2, |s| s.mail.smtp_retry_secs = 1).await;
    let phone = bed.phone(0).await;
    let db = bed.db().clone();
    // The fault a real server cannot be made to produce on demand: the
    // database refuses the write that records a submitted message (as on
    // a full disk), every time, until the trigger is dropped.
    db.run(|conn| {
        diesel::sql_query(
            "CREATE TRIGGER record_fails BEFORE DELETE ON mail_outbox \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        .execute(conn)?;
        Ok(())
    })
    .await
    .unwrap();

    let ref_id = send(
        &phone,
        &Cmime::Compose(Compose {
            to: vec![bed.info().users[1].address.clone()],
            subject: "Recorded late".into(),
            text: "one copy only".into(),
            ..Compose::default()
        }),
    )
    .await;
    // The device is told it was sent: the SMTP server took it.
    loop {
        match next(&phone).await {
            (
                _,
                Cmime::SendStatus {
                    status: SendState::Accepted,
                    ..
                },
            ) => continue,
            (_, Cmime::SendStatus { of, status, .. }) => {
                assert_eq!((of, status), (ref_id, SendState::Sent));
                break;
            }
            _ => continue,
        }
    }
    // The first failed record and three retry periods after it.
    let key = ref_id.to_string();
    crate::fixture::wait_until(PATIENCE, "the record failed four times", || async {
        reports.lock().unwrap().get(&key).copied().unwrap_or(0) >= 4
    })
    .await;
    db.run(|conn| {
        diesel::sql_query("DROP TRIGGER record_fails").execute(conn)?;
        Ok(())
    })
    .await
    .unwrap();

    // Count once nothing is left that could still bring a copy: the
    // outbox is empty (recorded at last) and Postfix has delivered all it
    // accepted.
    crate::fixture::wait_until(
        PATIENCE,
        "the outbox and Postfix's queue are empty",
        || async {
            db.run(OutboxEntry::count).await.unwrap() == 0 && bed.testbed.mail_queue_is_empty()
        },
    )
    .await;
    let inbox = wait_folder(bed.info(), "user2", "INBOX", 1).await;
    assert_eq!(inbox.len(), 1, "sent exactly once: {inbox:?}");
    assert!(inbox[0].contains("one copy only"));
    let recorded = db
        .run(move |conn| Message::find_by_ref_id(conn, &ref_id))
        .await
        .unwrap()
        .expect("the message is recorded once the database takes writes");
    assert_eq!(recorded.status, MessageStatus::Sent);
    assert_eq!(bed.stats(0).await.sent, 1);

    phone.close().await;
    bed.stop().await;
}
