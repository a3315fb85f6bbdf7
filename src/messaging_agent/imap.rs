//! IMAP towards the messaging server (async-imap): connecting with TLS or
//! STARTTLS, logging in to a user's mailbox (service account or the user's
//! own password), and the few commands the Messaging Agent needs.

use std::collections::HashMap;
use std::pin::Pin as StdPin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::TryStreamExt;
use openssl::ssl::{SslConnector, SslMethod};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::settings::{MailSettings, Security};

/// Why a mailbox cannot be used, in words for an administrator.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MailError {
    #[error("no IMAP server is configured: set [mail] imap in the settings file")]
    NotConfigured,
    #[error("cannot reach the IMAP server at {addr} ({reason}); check [mail] imap and that the server is running. Bramble keeps trying")]
    Unreachable { addr: String, reason: String },
    #[error("TLS with the IMAP server at {addr} failed ({reason}); check [mail] imap_security and tls_ca_file")]
    Tls { addr: String, reason: String },
    #[error("the IMAP server refused the login `{login}` ({reason}); check [mail] service_login and service_password (or the user's entry in [mail] user_passwords) and that the mailbox exists on the server")]
    LoginRefused { login: String, reason: String },
    #[error("the folder `{folder}` cannot be opened ({reason})")]
    Folder { folder: String, reason: String },
    #[error(
        "the mailbox was deleted and recreated (or renumbered) on the server; reading it again"
    )]
    Renumbered,
    #[error("the IMAP server did not connect and accept the login within {0} s ([mail] connect_timeout_secs)")]
    ConnectTimeout(u64),
    #[error("the IMAP server did not finish a command within {0} s ([mail] command_timeout_secs); for a slow server lower [mail] fetch_batch_bytes or raise command_timeout_secs")]
    Timeout(u64),
    #[error("the IMAP connection failed: {0}")]
    Protocol(String),
}

impl From<async_imap::error::Error> for MailError {
    fn from(e: async_imap::error::Error) -> Self {
        MailError::Protocol(e.to_string())
    }
}

/// A plain or TLS connection.
#[derive(Debug)]
pub enum MailStream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl AsyncRead for MailStream {
    fn poll_read(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => StdPin::new(s).poll_read(cx, buf),
            MailStream::Tls(s) => StdPin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(
        self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MailStream::Plain(s) => StdPin::new(s).poll_write(cx, buf),
            MailStream::Tls(s) => StdPin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => StdPin::new(s).poll_flush(cx),
            MailStream::Tls(s) => StdPin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: StdPin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => StdPin::new(s).poll_shutdown(cx),
            MailStream::Tls(s) => StdPin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A logged-in IMAP session, with the time each command may take
/// (`[mail] command_timeout_secs`).
pub struct Session {
    inner: async_imap::Session<MailStream>,
    timeout: Duration,
}

impl Session {
    pub fn new(inner: async_imap::Session<MailStream>, timeout: Duration) -> Session {
        Session { inner, timeout }
    }

    /// The session itself (to IDLE, which takes it over).
    pub fn into_inner(self) -> async_imap::Session<MailStream> {
        self.inner
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl std::ops::Deref for Session {
    type Target = async_imap::Session<MailStream>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

/// Wraps `tcp` in TLS for `host`, trusting `[mail] tls_ca_file` too.
pub async fn tls(
    settings: &MailSettings,
    host: &str,
    tcp: TcpStream,
) -> Result<SslStream<TcpStream>, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    if let Some(ca) = &settings.tls_ca_file {
        builder
            .set_ca_file(ca)
            .map_err(|e| format!("cannot read tls_ca_file {}: {e}", ca.display()))?;
    }
    let ssl = builder
        .build()
        .configure()
        .and_then(|c| c.into_ssl(host))
        .map_err(|e| e.to_string())?;
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
    StdPin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

async fn open_client(settings: &MailSettings) -> Result<async_imap::Client<MailStream>, MailError> {
    let addr = settings.imap.clone().ok_or(MailError::NotConfigured)?;
    let unreachable = |reason: String| MailError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let tls_failed = |reason: String| MailError::Tls {
        addr: addr.clone(),
        reason,
    };
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let host = host_of(&addr).to_owned();
    match settings.imap_security {
        Security::None => {
            let mut client = async_imap::Client::new(MailStream::Plain(tcp));
            greeting(&mut client, &addr).await?;
            Ok(client)
        }
        Security::Tls => {
            let stream = tls(settings, &host, tcp).await.map_err(tls_failed)?;
            let mut client = async_imap::Client::new(MailStream::Tls(Box::new(stream)));
            greeting(&mut client, &addr).await?;
            Ok(client)
        }
        Security::Starttls => {
            let mut client = async_imap::Client::new(MailStream::Plain(tcp));
            greeting(&mut client, &addr).await?;
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| tls_failed(format!("STARTTLS refused: {e}")))?;
            let MailStream::Plain(tcp) = client.into_inner() else {
                return Err(tls_failed("the connection was already encrypted".into()));
            };
            let stream = tls(settings, &host, tcp).await.map_err(tls_failed)?;
            Ok(async_imap::Client::new(MailStream::Tls(Box::new(stream))))
        }
    }
}

async fn greeting(
    client: &mut async_imap::Client<MailStream>,
    addr: &str,
) -> Result<(), MailError> {
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(MailError::Unreachable {
            addr: addr.to_owned(),
            reason: "the server closed the connection before greeting".into(),
        }),
        Err(e) => Err(MailError::Unreachable {
            addr: addr.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Opens `mailbox_login`'s mailbox (not yet a folder).
pub async fn login(settings: &MailSettings, mailbox_login: &str) -> Result<Session, MailError> {
    let (login, password) = settings.credentials(mailbox_login);
    let attempt = async {
        let client = open_client(settings).await?;
        client
            .login(&login, &password)
            .await
            .map_err(|(e, _)| MailError::LoginRefused {
                login: login.clone(),
                reason: e.to_string(),
            })
    };
    let limit = Duration::from_secs(settings.connect_timeout_secs.max(1));
    let session = tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| MailError::ConnectTimeout(limit.as_secs()))??;
    Ok(Session::new(
        session,
        Duration::from_secs(settings.command_timeout_secs.max(1)),
    ))
}

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, MailError>>,
) -> Result<T, MailError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| MailError::Timeout(limit.as_secs()))?
}

/// Selects `folder`; returns its UIDVALIDITY and UIDNEXT.
pub async fn select(session: &mut Session, folder: &str) -> Result<(u32, u32), MailError> {
    let limit = session.timeout();
    let mailbox = timed(limit, async {
        session.select(folder).await.map_err(|e| MailError::Folder {
            folder: folder.to_owned(),
            reason: e.to_string(),
        })
    })
    .await?;
    Ok((
        mailbox.uid_validity.unwrap_or(0),
        mailbox.uid_next.unwrap_or(1),
    ))
}

/// A message as fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: u32,
    pub seen: bool,
    /// The whole message's size.
    pub size: u32,
    /// At most [`MailSettings::per_message_bytes`] of it.
    pub raw: Vec<u8>,
    /// When the server received it (Unix seconds), if it says.
    pub received: Option<i64>,
}

fn is_seen(fetch: &async_imap::types::Fetch) -> bool {
    fetch
        .flags()
        .any(|f| matches!(f, async_imap::types::Flag::Seen))
}

/// UIDs and sizes of the messages with a UID above `after`, ascending (the
/// smallest `max_count` of them); true when there are more. The listing asks
/// for no message's content, so a long backlog costs a few bytes a message.
pub async fn list_after(
    session: &mut Session,
    after: u32,
    max_count: usize,
) -> Result<(Vec<(u32, u32)>, bool), MailError> {
    let limit = session.timeout();
    let range = format!("{}:*", after.saturating_add(1));
    let mut listed: Vec<(u32, u32)> = timed(limit, async {
        let mut stream = session.uid_fetch(&range, "(UID RFC822.SIZE)").await?;
        let mut listed = Vec::new();
        while let Some(f) = stream.try_next().await? {
            if let Some(uid) = f.uid.filter(|uid| *uid > after) {
                listed.push((uid, f.size.unwrap_or(0)));
            }
        }
        Ok(listed)
    })
    .await?;
    listed.sort_unstable();
    listed.dedup_by_key(|(uid, _)| *uid);
    let more = listed.len() > max_count;
    listed.truncate(max_count);
    Ok((listed, more))
}

/// Splits `listed` (UIDs and sizes, ascending) into batches to fetch: each
/// asks for at most `batch_bytes` (a message counting for its size, or
/// `per_message` when it is longer) and holds at most `max_count`
/// messages. A batch holds at least one message; `per_message` is never
/// more than `batch_bytes` ([`MailSettings::per_message_bytes`]).
pub fn batches(
    listed: &[(u32, u32)],
    per_message: u32,
    batch_bytes: u64,
    max_count: usize,
) -> Vec<Vec<(u32, u32)>> {
    let mut out: Vec<Vec<(u32, u32)>> = Vec::new();
    let mut current: Vec<(u32, u32)> = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in listed {
        let asks = u64::from(size.min(per_message));
        if !current.is_empty() && (bytes + asks > batch_bytes || current.len() >= max_count.max(1))
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push((uid, size));
        bytes += asks;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `uids` (ascending) as an IMAP sequence set: runs of consecutive UIDs as
/// ranges (`3:5,9`).
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// The messages `uids` (ascending) that are still there, in UID order, each
/// with at most `max_bytes` of its content: one command, so the batch is
/// chosen by [`batches`] to fit the command's time.
pub async fn fetch_uids(
    session: &mut Session,
    uids: &[u32],
    max_bytes: u32,
) -> Result<Vec<Fetched>, MailError> {
    let limit = session.timeout();
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let query = format!("(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]<0.{max_bytes}>)");
    let set = uid_set(uids);
    let mut out: Vec<Fetched> = timed(limit, async {
        let mut stream = session.uid_fetch(&set, &query).await?;
        let mut out = Vec::with_capacity(uids.len());
        while let Some(f) = stream.try_next().await? {
            let Some(uid) = f.uid.filter(|uid| uids.binary_search(uid).is_ok()) else {
                continue;
            };
            out.push(Fetched {
                uid,
                seen: is_seen(&f),
                size: f.size.unwrap_or(0),
                raw: f.body().map(<[u8]>::to_vec).unwrap_or_default(),
                received: f.internal_date().map(|d| d.timestamp()),
            });
        }
        Ok(out)
    })
    .await?;
    out.sort_by_key(|f| f.uid);
    out.dedup_by_key(|f| f.uid);
    Ok(out)
}

/// UIDs of the messages `query` (IMAP SEARCH syntax) finds, ascending.
pub async fn search_uids(session: &mut Session, query: &str) -> Result<Vec<u32>, MailError> {
    let limit = session.timeout();
    let found = timed(limit, async { Ok(session.uid_search(query).await?) }).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    Ok(uids)
}

/// One message by UID, if it is still there.
pub async fn fetch_uid(
    session: &mut Session,
    uid: u32,
    max_bytes: u32,
) -> Result<Option<Fetched>, MailError> {
    let limit = session.timeout();
    let query = format!("(UID FLAGS RFC822.SIZE BODY.PEEK[]<0.{max_bytes}>)");
    timed(limit, async {
        let stream = session.uid_fetch(uid.to_string(), &query).await?;
        let fetches: Vec<_> = stream.try_collect().await?;
        Ok(fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .map(|f| Fetched {
                uid,
                seen: is_seen(f),
                size: f.size.unwrap_or(0),
                raw: f.body().map(<[u8]>::to_vec).unwrap_or_default(),
                received: None,
            }))
    })
    .await
}

/// Read state of the messages with UIDs in `from..=to` that still exist.
pub async fn seen_flags(
    session: &mut Session,
    from: u32,
    to: u32,
) -> Result<HashMap<u32, bool>, MailError> {
    let limit = session.timeout();
    timed(limit, async {
        let stream = session
            .uid_fetch(format!("{from}:{to}"), "(UID FLAGS)")
            .await?;
        let fetches: Vec<_> = stream.try_collect().await?;
        Ok(fetches
            .iter()
            .filter_map(|f| f.uid.map(|uid| (uid, is_seen(f))))
            .filter(|(uid, _)| (from..=to).contains(uid))
            .collect())
    })
    .await
}

/// Marks a message read or unread.
pub async fn set_seen(session: &mut Session, uid: u32, seen: bool) -> Result<(), MailError> {
    let limit = session.timeout();
    let op = if seen {
        "+FLAGS.SILENT"
    } else {
        "-FLAGS.SILENT"
    };
    timed(limit, async {
        let stream = session
            .uid_store(uid.to_string(), format!("{op} (\\Seen)"))
            .await?;
        let _: Vec<_> = stream.try_collect().await?;
        Ok(())
    })
    .await
}

/// Deletes a message (flag, then expunge just that UID).
pub async fn delete(session: &mut Session, uid: u32) -> Result<(), MailError> {
    let limit = session.timeout();
    timed(limit, async {
        {
            let stream = session
                .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)")
                .await?;
            let _: Vec<_> = stream.try_collect().await?;
        }
        let stream = session.uid_expunge(uid.to_string()).await?;
        let _: Vec<_> = stream.try_collect().await?;
        Ok(())
    })
    .await
}

/// Files `raw` in `folder` as read, creating the folder when it is missing.
pub async fn append(session: &mut Session, folder: &str, raw: &[u8]) -> Result<(), MailError> {
    let limit = session.timeout();
    timed(limit, async {
        if session
            .append(folder, Some("(\\Seen)"), None, raw)
            .await
            .is_ok()
        {
            return Ok(());
        }
        // Most often the folder does not exist yet (TRYCREATE).
        let _ = session.create(folder).await;
        session
            .append(folder, Some("(\\Seen)"), None, raw)
            .await
            .map_err(|e| MailError::Folder {
                folder: folder.to_owned(),
                reason: e.to_string(),
            })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_the_byte_and_count_limits() {
        let mib = 1024 * 1024;
        let listed: Vec<(u32, u32)> = (1..=10).map(|uid| (uid, mib)).collect();
        let plan = batches(&listed, 4 * mib, 3 * u64::from(mib), 200);
        let sizes: Vec<usize> = plan.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let uids: Vec<u32> = plan.iter().flatten().map(|(uid, _)| *uid).collect();
        assert_eq!(
            uids,
            (1..=10).collect::<Vec<_>>(),
            "every message, in order"
        );

        // A message longer than a batch counts for what is asked of it (a
        // whole batch), so it is fetched alone.
        let listed = [(1, 100), (2, 50 * mib), (3, 100), (4, 100)];
        let plan = batches(&listed, 2 * mib, 2 * u64::from(mib), 200);
        let sizes: Vec<usize> = plan.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 2]);

        // The count limit holds for tiny messages.
        let listed: Vec<(u32, u32)> = (1..=450).map(|uid| (uid, 10)).collect();
        let plan = batches(&listed, mib, u64::from(mib), 200);
        let sizes: Vec<usize> = plan.iter().map(Vec::len).collect();
        assert_eq!(sizes, [200, 200, 50]);
        assert!(batches(&[], mib, 1, 1).is_empty());
    }

    #[test]
    fn uid_sets_are_ranges_of_consecutive_uids() {
        assert_eq!(uid_set(&[3, 4, 5, 9, 11, 12]), "3:5,9,11:12");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[]), "");
    }
}
