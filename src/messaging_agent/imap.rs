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

/// How long connecting and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may take (a 50 MB fetch included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

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
    #[error("the IMAP server did not answer within {0} s")]
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

pub type Session = async_imap::Session<MailStream>;

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
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| MailError::Timeout(CONNECT_TIMEOUT.as_secs()))?
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, MailError>>,
) -> Result<T, MailError> {
    tokio::time::timeout(COMMAND_TIMEOUT, f)
        .await
        .map_err(|_| MailError::Timeout(COMMAND_TIMEOUT.as_secs()))?
}

/// Selects `folder`; returns its UIDVALIDITY and UIDNEXT.
pub async fn select(session: &mut Session, folder: &str) -> Result<(u32, u32), MailError> {
    let mailbox = timed(async {
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
    /// At most `max_fetch_bytes` of it.
    pub raw: Vec<u8>,
    /// When the server received it (Unix seconds), if it says.
    pub received: Option<i64>,
}

fn is_seen(fetch: &async_imap::types::Fetch) -> bool {
    fetch
        .flags()
        .any(|f| matches!(f, async_imap::types::Flag::Seen))
}

/// Messages with a UID above `after`, in UID order (at most `limit`).
pub async fn fetch_after(
    session: &mut Session,
    after: u32,
    max_bytes: u32,
    limit: usize,
) -> Result<Vec<Fetched>, MailError> {
    let query = format!("(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]<0.{max_bytes}>)");
    let range = format!("{}:*", after.saturating_add(1));
    let mut out: Vec<Fetched> = timed(async {
        let stream = session.uid_fetch(&range, &query).await?;
        let fetches: Vec<_> = stream.try_collect().await?;
        Ok(fetches
            .iter()
            .filter_map(|f| {
                let uid = f.uid?;
                (uid > after).then(|| Fetched {
                    uid,
                    seen: is_seen(f),
                    size: f.size.unwrap_or(0),
                    raw: f.body().map(<[u8]>::to_vec).unwrap_or_default(),
                    received: f.internal_date().map(|d| d.timestamp()),
                })
            })
            .collect())
    })
    .await?;
    out.sort_by_key(|f| f.uid);
    out.truncate(limit);
    Ok(out)
}

/// UIDs of the messages `query` (IMAP SEARCH syntax) finds, ascending.
pub async fn search_uids(session: &mut Session, query: &str) -> Result<Vec<u32>, MailError> {
    let found = timed(async { Ok(session.uid_search(query).await?) }).await?;
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
    let query = format!("(UID FLAGS RFC822.SIZE BODY.PEEK[]<0.{max_bytes}>)");
    timed(async {
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
    timed(async {
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
    let op = if seen {
        "+FLAGS.SILENT"
    } else {
        "-FLAGS.SILENT"
    };
    timed(async {
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
    timed(async {
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
    timed(async {
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
