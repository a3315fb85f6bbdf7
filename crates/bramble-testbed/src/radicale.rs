//! Radicale, the testbed's CalDAV/CardDAV server (organizer data for the
//! Synchronization Service): loopback only, its own folder, the testbed's
//! users in a plain htpasswd file plus a service account that may read and
//! write every user's collections (as Dovecot's master user reaches every
//! mailbox). Each user gets an address book (`contacts`) and three
//! calendars (`calendar`, `tasks`, `memos`).
//!
//! [`Radicale::start_in`] writes the configuration, starts the server in
//! the foreground (the PID started is the one listening), waits until it
//! accepts and creates the collections; [`Radicale::stop`] and
//! [`Radicale::restart`] let tests take it down and bring it back on the
//! same port.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use super::{find_binary, log_file, log_tail, setup, write_text, TestUser, TestbedError};

/// The collections made for every user: name and whether it is an address book.
pub const COLLECTIONS: [(&str, bool); 4] = [
    ("contacts", true),
    ("calendar", false),
    ("tasks", false),
    ("memos", false),
];

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Radicale; dropping it stops the server.
#[derive(Debug)]
pub struct Radicale {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Radicale {
    /// Sets up `dir` for `users` and the service account, starts Radicale
    /// on `127.0.0.1:port` and creates every user's collections.
    pub fn start_in(
        dir: &Path,
        port: u16,
        users: &[TestUser],
        service_login: &str,
        service_password: &str,
    ) -> Result<Radicale, TestbedError> {
        find_binary("radicale")?;
        fs::create_dir_all(dir.join("collections")).map_err(setup(format!(
            "creating {}",
            dir.join("collections").display()
        )))?;
        let mut htpasswd = format!("{service_login}:{service_password}\n");
        for u in users {
            htpasswd.push_str(&format!("{}:{}\n", u.login, u.password));
        }
        write_text(&dir.join("users"), &htpasswd)?;
        write_text(
            &dir.join("rights"),
            &format!(
                "# The service account reads and writes every collection.
[service]
user: {service}
collection: .*
permissions: RrWw

# Everyone may see the root; each user owns their own collections.
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {{user}}
permissions: RW

[collections]
user: .+
collection: {{user}}/[^/]+
permissions: rw
",
                service = regex_literal(service_login)
            ),
        )?;
        let d = dir.display();
        write_text(
            &dir.join("config"),
            &format!(
                "[server]
hosts = 127.0.0.1:{port}
[auth]
type = htpasswd
htpasswd_filename = {d}/users
htpasswd_encryption = plain
delay = 0
[rights]
type = from_file
file = {d}/rights
[storage]
filesystem_folder = {d}/collections
[logging]
level = warning
"
            ),
        )?;
        let mut radicale = Radicale {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        radicale.restart()?;
        for u in users {
            radicale.create_collections(&u.login, &u.password)?;
        }
        Ok(radicale)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Starts the server (again) on the same port and waits until it accepts.
    pub fn restart(&mut self) -> Result<(), TestbedError> {
        if self.child.is_some() {
            return Ok(());
        }
        let bin = find_binary("radicale")?;
        let log = self.dir.join("radicale.log");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(self.dir.join("config"))
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()
            .map_err(setup(format!("starting {}", bin.display())))?;
        write_text(&self.dir.join("radicale.pid"), &format!("{}\n", child.id()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = self.addr();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(TestbedError::Exited {
                        server: "Radicale",
                        status: status.to_string(),
                        log: log.display().to_string(),
                        tail: log_tail(&log, 20),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::NotReady {
                    server: "Radicale",
                    addr,
                    secs: READY_TIMEOUT.as_secs(),
                    log: log.display().to_string(),
                    tail: log_tail(&log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server and waits until it has exited. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves the server running (for `bramble testbed up`).
    pub fn detach(mut self) {
        self.child = None;
    }

    /// The user's principal collection, an address book and three calendars.
    fn create_collections(&self, login: &str, password: &str) -> Result<(), TestbedError> {
        let auth = (login, password);
        // Radicale makes a user's principal collection on first sight.
        self.request(
            "PROPFIND",
            &format!("/{login}/"),
            auth,
            &[("Depth", "0")],
            "",
        )?;
        for (name, address_book) in COLLECTIONS {
            let path = format!("/{login}/{name}/");
            let (method, body) = if address_book {
                (
                    "MKCOL",
                    r#"<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype><D:displayname>Contacts</D:displayname></D:prop></D:set></D:mkcol>"#.to_owned(),
                )
            } else {
                (
                    "MKCALENDAR",
                    format!(
                        r#"<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>{name}</D:displayname><C:supported-calendar-component-set><C:comp name="VEVENT"/><C:comp name="VTODO"/><C:comp name="VJOURNAL"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#
                    ),
                )
            };
            let status = self.request(
                method,
                &path,
                auth,
                &[("Content-Type", "application/xml")],
                &body,
            )?;
            // 405: it exists already (a testbed started again in its folder).
            if !(200..300).contains(&status) && status != 405 {
                return Err(TestbedError::Command {
                    what: format!("Radicale answered {method} {path} with HTTP {status}"),
                });
            }
        }
        Ok(())
    }

    /// One HTTP/1.1 request; returns the status code.
    fn request(
        &self,
        method: &str,
        path: &str,
        (login, password): (&str, &str),
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<u16, TestbedError> {
        let addr = self.addr();
        let io = setup(format!("{method} {path} on Radicale at {addr}"));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        let io = setup(format!("{method} {path} on Radicale at {addr}"));
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut answer = Vec::new();
        let io = setup(format!("reading Radicale's answer to {method} {path}"));
        stream.read_to_end(&mut answer).map_err(io)?;
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| TestbedError::Command {
                what: format!("Radicale's answer to {method} {path} is not HTTP"),
            })
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Radicale's rights file matches users with regular expressions.
fn regex_literal(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    format!("^{out}$")
}
