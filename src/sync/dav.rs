//! A CalDAV/CardDAV client: just the WebDAV the Synchronization Service
//! needs, on reqwest (HTTP, TLS through OpenSSL) and quick-xml (the
//! multistatus answers).
//!
//! Change detection, best first:
//! - WebDAV sync (RFC 6578): `sync-collection` with the last sync token
//!   returns what changed and what was removed since, with the data.
//! - Otherwise the collection's CTag (`getctag`): when it moved, the ETags
//!   of every member are listed and compared with the ones kept, and the
//!   changed members fetched with a multiget.
//!
//! Writes are conditional: `If-Match` with the ETag last seen (a record
//! changed on the server meanwhile answers 412, which is a conflict), or
//! `If-None-Match: *` for a new record.

use std::sync::Arc;
use std::time::Duration;

use bramble_proto::sync::OrganizerDatabase;
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::Reader;
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;

/// What went wrong talking to the organizer server, in words for an
/// administrator.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DavError {
    #[error("the organizer server at {url} cannot be reached ({message}); check that it runs and that [sync] url is right")]
    Unreachable { url: String, message: String },
    #[error("the organizer server refused the service account `{login}` (HTTP 401); check [sync] service_login and service_password")]
    Unauthorized { login: String },
    #[error("the service account `{login}` may not use {path} on the organizer server (HTTP 403); give it read and write access to every user's collections")]
    Forbidden { login: String, path: String },
    #[error("{path} does not exist on the organizer server (HTTP 404); create the user's collection or correct the collection paths in [sync]")]
    NotFound { path: String },
    #[error("{path} changed on the organizer server since it was last read")]
    Changed { path: String },
    #[error("the organizer server no longer accepts the sync token of {path}; the collection is listed again")]
    TokenExpired { path: String },
    #[error("the organizer server refused {method} {path} (HTTP {status}): {body}")]
    Refused {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("the organizer server's answer to {method} {path} is longer than {} ([sync] max_response_bytes); it was cut off there and not used. Raise the setting if the collection is really that large", size_in_words(*.limit))]
    TooLarge {
        method: String,
        path: String,
        limit: u64,
    },
    #[error("the organizer server's answer to {method} {path} is not understood: {message}")]
    BadAnswer {
        method: String,
        path: String,
        message: String,
    },
}

impl DavError {
    pub fn code(&self) -> &'static str {
        match self {
            DavError::Unreachable { .. } => "SYNC_SERVER_UNREACHABLE",
            DavError::Unauthorized { .. } => "SYNC_SERVER_LOGIN_REFUSED",
            DavError::Forbidden { .. } => "SYNC_SERVER_FORBIDDEN",
            DavError::NotFound { .. } => "SYNC_COLLECTION_MISSING",
            DavError::Changed { .. } => "SYNC_ITEM_CHANGED",
            DavError::TokenExpired { .. } => "SYNC_TOKEN_EXPIRED",
            DavError::Refused { .. } => "SYNC_SERVER_REFUSED",
            DavError::TooLarge { .. } => "SYNC_ANSWER_TOO_LARGE",
            DavError::BadAnswer { .. } => "SYNC_SERVER_ANSWER",
        }
    }

    /// Whether the whole server is out of reach (retry later), rather
    /// than one request or one record being wrong.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DavError::Unreachable { .. })
    }
}

/// One member of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub href: String,
    pub etag: String,
    /// The vCard or iCalendar text, when asked for.
    pub data: Option<String>,
}

/// What `sync-collection` reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub token: String,
    pub changed: Vec<Resource>,
    pub removed: Vec<String>,
}

/// The change markers a collection offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Markers {
    pub sync_token: Option<String>,
    pub ctag: Option<String>,
}

/// How a write is conditioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// Only if the record is still at this ETag.
    IfMatch(&'a str),
    /// Only if no record is there yet.
    IfNoneMatch,
    /// Whatever is there (the device's version won a conflict).
    Overwrite,
}

/// Whether a collection holds vCards or iCalendar objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Card,
    Calendar,
}

impl Kind {
    pub fn of(database: OrganizerDatabase) -> Kind {
        match database {
            OrganizerDatabase::Contacts => Kind::Card,
            _ => Kind::Calendar,
        }
    }

    fn data_prop(self) -> &'static str {
        match self {
            Kind::Card => "<CR:address-data/>",
            Kind::Calendar => "<C:calendar-data/>",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Card => "text/vcard; charset=utf-8",
            Kind::Calendar => "text/calendar; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Kind::Card => "vcf",
            Kind::Calendar => "ics",
        }
    }
}

const NAMESPACES: &str = r#"xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CS="http://calendarserver.org/ns/""#;

/// Requests a client has open at the same time unless told otherwise.
pub const DEFAULT_CONNECTIONS: usize = 8;

/// The longest answer a client reads unless told otherwise (64 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// A client for one organizer server, as the service account. Cheap to
/// clone; clones share its limit on requests open at once, so a burst of
/// slow syncs waits its turn here instead of timing out at a busy server.
#[derive(Debug, Clone)]
pub struct DavClient {
    http: reqwest::Client,
    base: reqwest::Url,
    login: String,
    password: String,
    permits: Arc<Semaphore>,
    max_response_bytes: u64,
}

impl DavClient {
    pub fn new(
        url: &str,
        login: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<DavClient, DavError> {
        let bad = |message: String| DavError::BadAnswer {
            method: "configure".into(),
            path: url.into(),
            message,
        };
        let base = reqwest::Url::parse(url)
            .map_err(|e| bad(format!("[sync] url `{url}` is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| bad(format!("cannot set up the HTTP client: {e}")))?;
        Ok(DavClient {
            http,
            base,
            login: login.to_owned(),
            password: password.to_owned(),
            permits: Arc::new(Semaphore::new(DEFAULT_CONNECTIONS)),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Reads at most `bytes` of any answer (at least 1 KiB): a longer one
    /// is cut off there and is an error ([`DavError::TooLarge`]).
    pub fn with_max_response_bytes(mut self, bytes: u64) -> DavClient {
        self.max_response_bytes = bytes.max(1024);
        self
    }

    /// At most `connections` requests open at once (at least one).
    pub fn with_connections(mut self, connections: usize) -> DavClient {
        self.permits = Arc::new(Semaphore::new(connections.max(1)));
        self
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, DavError> {
        self.base.join(path).map_err(|e| DavError::BadAnswer {
            method: "join".into(),
            path: path.into(),
            message: e.to_string(),
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, String), DavError> {
        let m = Method::from_bytes(method.as_bytes()).map_err(|e| DavError::BadAnswer {
            method: method.into(),
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut request = self
            .http
            .request(m, self.url(path)?)
            .basic_auth(&self.login, Some(&self.password));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        // The time spent waiting for a turn does not count towards the
        // request's timeout, which starts with the request.
        let _turn = self
            .permits
            .acquire()
            .await
            .map_err(|_| DavError::Unreachable {
                url: self.base.to_string(),
                message: "the client is shutting down".into(),
            })?;
        let response = request.send().await.map_err(|e| DavError::Unreachable {
            url: self.base.to_string(),
            message: error_chain(&e),
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = self.read_body(method, path, response).await?;
        match status {
            StatusCode::UNAUTHORIZED => Err(DavError::Unauthorized {
                login: self.login.clone(),
            }),
            StatusCode::FORBIDDEN if !text.contains("valid-sync-token") => {
                Err(DavError::Forbidden {
                    login: self.login.clone(),
                    path: path.into(),
                })
            }
            StatusCode::PRECONDITION_FAILED => Err(DavError::Changed { path: path.into() }),
            _ => Ok((status, headers, text)),
        }
    }

    /// The answer's body as text, read up to `max_response_bytes`: a
    /// longer one is cut off there (the connection is dropped, so the rest
    /// is never read).
    async fn read_body(
        &self,
        method: &str,
        path: &str,
        mut response: reqwest::Response,
    ) -> Result<String, DavError> {
        let limit = self.max_response_bytes;
        let too_large = || DavError::TooLarge {
            method: method.into(),
            path: path.into(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| DavError::Unreachable {
            url: self.base.to_string(),
            message: error_chain(&e),
        })? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn refused(method: &str, path: &str, status: StatusCode, body: &str) -> DavError {
        let mut body: String = body.trim().chars().take(300).collect();
        if body.is_empty() {
            body = status
                .canonical_reason()
                .unwrap_or("no reason given")
                .into();
        }
        DavError::Refused {
            method: method.into(),
            path: path.into(),
            status: status.as_u16(),
            body,
        }
    }

    /// The collection's sync token and CTag, when it has them.
    pub async fn markers(&self, path: &str) -> Result<Markers, DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propfind {NAMESPACES}><D:prop><D:sync-token/><CS:getctag/></D:prop></D:propfind>"#
        );
        let (status, _, text) = self
            .request(
                "PROPFIND",
                path,
                &[("Depth", "0"), ("Content-Type", "application/xml")],
                Some(body),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(DavError::NotFound { path: path.into() });
        }
        if status != StatusCode::MULTI_STATUS {
            return Err(Self::refused("PROPFIND", path, status, &text));
        }
        let parsed = parse_multistatus(&text).map_err(|message| DavError::BadAnswer {
            method: "PROPFIND".into(),
            path: path.into(),
            message,
        })?;
        Ok(parsed
            .responses
            .into_iter()
            .next()
            .map(|r| Markers {
                sync_token: r.sync_token.filter(|t| !t.is_empty()),
                ctag: r.ctag.filter(|t| !t.is_empty()),
            })
            .unwrap_or_default())
    }

    /// RFC 6578 `sync-collection` from `token` (none: everything), with the
    /// data of each changed member.
    pub async fn sync_collection(
        &self,
        path: &str,
        token: Option<&str>,
        kind: Kind,
    ) -> Result<SyncReport, DavError> {
        let token = token.map(|t| escape(t).into_owned()).unwrap_or_default();
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:sync-collection {NAMESPACES}><D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/>{}</D:prop></D:sync-collection>"#,
            kind.data_prop()
        );
        let (status, _, text) = self
            .request(
                "REPORT",
                path,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                Some(body),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(DavError::NotFound { path: path.into() });
        }
        if (status == StatusCode::FORBIDDEN || status == StatusCode::CONFLICT)
            && text.contains("valid-sync-token")
        {
            return Err(DavError::TokenExpired { path: path.into() });
        }
        if status != StatusCode::MULTI_STATUS {
            return Err(Self::refused("REPORT", path, status, &text));
        }
        let parsed = parse_multistatus(&text).map_err(|message| DavError::BadAnswer {
            method: "REPORT".into(),
            path: path.into(),
            message,
        })?;
        let mut report = SyncReport {
            token: parsed.sync_token.unwrap_or_default(),
            ..SyncReport::default()
        };
        let collection = normalize_href(path);
        for r in parsed.responses {
            let href = normalize_href(&r.href);
            if href == collection {
                continue;
            }
            if r.status_404 && r.etag.is_none() {
                report.removed.push(href);
            } else if let Some(etag) = r.etag {
                report.changed.push(Resource {
                    href,
                    etag,
                    data: r.data,
                });
            }
        }
        Ok(report)
    }

    /// Every member's href and ETag (Depth 1 PROPFIND).
    pub async fn list(&self, path: &str) -> Result<Vec<(String, String)>, DavError> {
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><D:propfind {NAMESPACES}><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>"#
        );
        let (status, _, text) = self
            .request(
                "PROPFIND",
                path,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                Some(body),
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(DavError::NotFound { path: path.into() });
        }
        if status != StatusCode::MULTI_STATUS {
            return Err(Self::refused("PROPFIND", path, status, &text));
        }
        let parsed = parse_multistatus(&text).map_err(|message| DavError::BadAnswer {
            method: "PROPFIND".into(),
            path: path.into(),
            message,
        })?;
        let collection = normalize_href(path);
        Ok(parsed
            .responses
            .into_iter()
            .filter_map(|r| {
                let href = normalize_href(&r.href);
                (href != collection && !r.is_collection).then_some((href, r.etag?))
            })
            .collect())
    }

    /// The data and ETag of the given members (addressbook-multiget or
    /// calendar-multiget); members gone meanwhile are left out.
    pub async fn multiget(
        &self,
        path: &str,
        hrefs: &[String],
        kind: Kind,
    ) -> Result<Vec<Resource>, DavError> {
        if hrefs.is_empty() {
            return Ok(Vec::new());
        }
        let report = match kind {
            Kind::Card => "CR:addressbook-multiget",
            Kind::Calendar => "C:calendar-multiget",
        };
        let mut body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><{report} {NAMESPACES}><D:prop><D:getetag/>{}</D:prop>"#,
            kind.data_prop()
        );
        for href in hrefs {
            body.push_str(&format!("<D:href>{}</D:href>", escape(href.as_str())));
        }
        body.push_str(&format!("</{report}>"));
        let (status, _, text) = self
            .request(
                "REPORT",
                path,
                &[("Depth", "1"), ("Content-Type", "application/xml")],
                Some(body),
            )
            .await?;
        if status != StatusCode::MULTI_STATUS {
            return Err(Self::refused("REPORT", path, status, &text));
        }
        let parsed = parse_multistatus(&text).map_err(|message| DavError::BadAnswer {
            method: "REPORT".into(),
            path: path.into(),
            message,
        })?;
        Ok(parsed
            .responses
            .into_iter()
            .filter_map(|r| {
                Some(Resource {
                    href: normalize_href(&r.href),
                    etag: r.etag?,
                    data: r.data,
                })
            })
            .collect())
    }

    /// One member's data and ETag; none if it does not exist.
    pub async fn get(&self, href: &str) -> Result<Option<(String, String)>, DavError> {
        let (status, headers, text) = self.request("GET", href, &[], None).await?;
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Self::refused("GET", href, status, &text));
        }
        let etag = header(&headers, "etag").unwrap_or_default();
        Ok(Some((text, etag)))
    }

    /// Writes one member; returns its new ETag.
    pub async fn put(
        &self,
        href: &str,
        data: String,
        kind: Kind,
        precondition: Precondition<'_>,
    ) -> Result<String, DavError> {
        let mut headers = vec![("Content-Type", kind.content_type())];
        match precondition {
            Precondition::IfMatch(etag) => headers.push(("If-Match", etag)),
            Precondition::IfNoneMatch => headers.push(("If-None-Match", "*")),
            Precondition::Overwrite => {}
        }
        let (status, response_headers, text) =
            self.request("PUT", href, &headers, Some(data)).await?;
        if !status.is_success() {
            return Err(Self::refused("PUT", href, status, &text));
        }
        match header(&response_headers, "etag") {
            Some(etag) => Ok(etag),
            // Some servers change what was written and give no ETag: read it.
            None => Ok(self
                .get(href)
                .await?
                .map(|(_, etag)| etag)
                .unwrap_or_default()),
        }
    }

    /// Removes one member; one already gone is not an error.
    pub async fn delete(&self, href: &str, if_match: Option<&str>) -> Result<(), DavError> {
        let headers: Vec<(&str, &str)> = if_match.map(|e| ("If-Match", e)).into_iter().collect();
        let (status, _, text) = self.request("DELETE", href, &headers, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::refused("DELETE", href, status, &text))
        }
    }

    /// Creates a collection (address book or calendar) if it is missing;
    /// for the testbed and benchmarks.
    pub async fn ensure_collection(&self, path: &str, kind: Kind) -> Result<(), DavError> {
        if self.markers(path).await.is_ok() {
            return Ok(());
        }
        let (method, body) = match kind {
            Kind::Card => (
                "MKCOL",
                format!(
                    r#"<?xml version="1.0" encoding="utf-8"?><D:mkcol {NAMESPACES}><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"#
                ),
            ),
            Kind::Calendar => (
                "MKCALENDAR",
                format!(
                    r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar {NAMESPACES}><D:set><D:prop><C:supported-calendar-component-set><C:comp name="VEVENT"/><C:comp name="VTODO"/><C:comp name="VJOURNAL"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
                ),
            ),
        };
        let (status, _, text) = self
            .request(
                method,
                path,
                &[("Content-Type", "application/xml")],
                Some(body),
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::refused(method, path, status, &text))
        }
    }
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error and its causes on one line ("error sending request: … refused").
/// A size for an administrator: "64 MiB", "512 KiB", "100 bytes".
fn size_in_words(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The path of an href (servers may answer with full URLs) without a
/// trailing slash difference for collections.
pub fn normalize_href(href: &str) -> String {
    let path = match href.find("://") {
        Some(i) => href[i + 3..]
            .find('/')
            .map(|j| &href[i + 3 + j..])
            .unwrap_or("/"),
        None => href,
    };
    path.trim().to_owned()
}

#[derive(Debug, Default)]
struct Multistatus {
    sync_token: Option<String>,
    responses: Vec<ResponseProps>,
}

#[derive(Debug, Default)]
struct ResponseProps {
    href: String,
    etag: Option<String>,
    data: Option<String>,
    sync_token: Option<String>,
    ctag: Option<String>,
    is_collection: bool,
    /// The response (not a propstat) says 404: the member was removed.
    status_404: bool,
}

/// Reads a `multistatus` document by local element names (prefixes vary
/// between servers).
fn parse_multistatus(xml: &str) -> Result<Multistatus, String> {
    let mut reader = Reader::from_str(xml);
    let mut out = Multistatus::default();
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut current: Option<ResponseProps> = None;
    // Values of the propstat being read; kept only if its status is 2xx.
    let mut propstat = ResponseProps::default();
    let mut propstat_ok = true;
    loop {
        let event = reader.read_event().map_err(|e| e.to_string())?;
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_owned();
                match name.as_str() {
                    "response" => current = Some(ResponseProps::default()),
                    "propstat" => {
                        propstat = ResponseProps::default();
                        propstat_ok = true;
                    }
                    _ => {}
                }
                stack.push(name);
                text.clear();
            }
            Event::Empty(e)
                if e.local_name().as_ref() == "collection"
                    && stack.iter().any(|s| s == "resourcetype") =>
            {
                propstat.is_collection = true;
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else if let Some(s) =
                    quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                {
                    text.push_str(s);
                }
            }
            Event::End(_) => {
                let Some(name) = stack.pop() else {
                    return Err("an element closes that was never opened".into());
                };
                let parent = stack.last().map(String::as_str);
                let value = std::mem::take(&mut text);
                match (name.as_str(), parent) {
                    ("href", Some("response")) => {
                        if let Some(r) = current.as_mut() {
                            r.href = value.trim().to_owned();
                        }
                    }
                    ("status", Some("response")) => {
                        if let Some(r) = current.as_mut() {
                            r.status_404 = value.contains(" 404");
                        }
                    }
                    ("status", Some("propstat")) => {
                        propstat_ok = value.contains(" 2");
                    }
                    ("getetag", _) => propstat.etag = Some(value.trim().to_owned()),
                    ("address-data" | "calendar-data", _) => propstat.data = Some(value),
                    ("sync-token", Some("multistatus")) => {
                        out.sync_token = Some(value.trim().to_owned())
                    }
                    ("sync-token", _) => propstat.sync_token = Some(value.trim().to_owned()),
                    ("getctag", _) => propstat.ctag = Some(value.trim().to_owned()),
                    ("propstat", _) if propstat_ok => {
                        if let Some(r) = current.as_mut() {
                            let p = std::mem::take(&mut propstat);
                            r.etag = r.etag.take().or(p.etag);
                            r.data = r.data.take().or(p.data);
                            r.sync_token = r.sync_token.take().or(p.sync_token);
                            r.ctag = r.ctag.take().or(p.ctag);
                            r.is_collection |= p.is_collection;
                        }
                    }
                    ("response", _) => {
                        if let Some(r) = current.take() {
                            out.responses.push(r);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sync_collection_answer_with_changes_and_removals() {
        let xml = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><sync-token>http://radicale.org/ns/sync/8ae9</sync-token><response><href>/user1/contacts/b.vcf</href><propstat><prop><getetag>"409e"</getetag><CR:address-data>BEGIN:VCARD
FN:Bad &quot;quote &amp; more&#33;
END:VCARD
</CR:address-data></prop><status>HTTP/1.1 200 OK</status></propstat></response><response><href>/user1/contacts/gone.vcf</href><status>HTTP/1.1 404 Not Found</status></response></multistatus>"#;
        let parsed = parse_multistatus(xml).unwrap();
        assert_eq!(
            parsed.sync_token.as_deref(),
            Some("http://radicale.org/ns/sync/8ae9")
        );
        assert_eq!(parsed.responses.len(), 2);
        let first = &parsed.responses[0];
        assert_eq!(first.href, "/user1/contacts/b.vcf");
        assert_eq!(first.etag.as_deref(), Some("\"409e\""));
        assert!(first
            .data
            .as_deref()
            .unwrap()
            .contains("FN:Bad \"quote & more!"));
        assert!(parsed.responses[1].status_404);
    }

    #[test]
    fn properties_not_found_are_ignored() {
        let xml = r#"<D:multistatus xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/"><D:response><D:href>http://h:1/u/c/</D:href><D:propstat><D:prop><D:sync-token>t1</D:sync-token><CS:getctag>"c1"</CS:getctag><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat><D:propstat><D:prop><D:getetag/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat></D:response></D:multistatus>"#;
        let parsed = parse_multistatus(xml).unwrap();
        let r = &parsed.responses[0];
        assert_eq!(normalize_href(&r.href), "/u/c/");
        assert_eq!(r.sync_token.as_deref(), Some("t1"));
        assert_eq!(r.ctag.as_deref(), Some("\"c1\""));
        assert_eq!(r.etag, None);
        assert!(r.is_collection);
        assert!(parse_multistatus("<a><b></a>").is_err());
    }
}
