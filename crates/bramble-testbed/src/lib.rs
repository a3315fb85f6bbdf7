//! # bramble-testbed — Bramble against real peers, outside the server
//!
//! What tests, benchmarks and pilots need around a Bramble server, kept out
//! of the server library so none of it is compiled into `bramble serve`:
//! real mail, directory and organizer servers on loopback, reference
//! devices given transport keys directly, and the benchmarks behind
//! `bramble bench …`. The `bramble` command (`crates/bramble-cli`) and the
//! integration tests (`tests/it`) use it.
//!
//! Layout:
//! - this module: the [`Testbed`] — real Dovecot (IMAP with IDLE, LMTP),
//!   real Postfix (SMTP that hands mail to Dovecot over LMTP), a real
//!   OpenLDAP slapd and a real Radicale (CalDAV/CardDAV, [`radicale`])
//!   holding the same users, run from one folder without systemd.
//! - [`slapd`], [`radicale`]: one server each, also started alone by tests
//!   and benchmarks; [`lmtp`]: delivery into the testbed's Dovecot.
//! - [`pilot`]: a Bramble beside a testbed — settings that reach its
//!   servers, its sample users enrolled with devices.
//! - [`provision`]: transport keys given to reference devices without
//!   wireless activation (`bramble device provision`, tests, benchmarks).
//! - [`bench`](mod@bench): the benchmarks, each printing a figure beside its limit.
//!
//! [`Testbed::start`] writes the configurations into the folder, starts the
//! servers, waits until their ports accept, and writes `testbed.toml` (ports,
//! users, the master user, the directory's bind DN, the organizer server's
//! URL and service account) and `bramble.toml` (a settings file pointing at
//! the folder, with a `[[directories]]` entry and a `[sync]` section).
//! Dropping the [`Testbed`] or calling [`Testbed::stop`] stops the servers;
//! [`Testbed::detach`] leaves them running for `bramble testbed up`, and
//! [`stop_dir`] stops them again later (`bramble testbed down`).
//!
//! The mail servers drop privileges (Dovecot delivers as `nobody`, Postfix
//! runs as `postfix`), so starting a testbed needs root. [`slapd`] also
//! starts lone directories for tests and benchmarks.

pub mod bench;
pub mod provision;
pub mod radicale;
pub mod slapd;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod lmtp;
pub mod pilot;

use self::radicale::Radicale;
use self::slapd::{Slapd, SlapdError, SlapdOptions, SUFFIX};

/// The mail domain of the sample users.
pub const DOMAIN: &str = "example.com";
/// Login of the Dovecot master user (the service account).
pub const MASTER_LOGIN: &str = "bramble";
/// Joins a user's login and the master login: `user2*bramble`.
pub const MASTER_SEPARATOR: &str = "*";
/// How to get the servers on Debian.
pub const INSTALL_HINT: &str = "apt-get install dovecot-imapd dovecot-lmtpd postfix slapd radicale";
/// Login of the organizer server's service account.
pub const DAV_SERVICE_LOGIN: &str = "bramble";
/// The directory's read-only account for the MailStore Service.
pub const DIRECTORY_BIND_DN: &str = "cn=bramble,ou=services,dc=example,dc=com";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("`{binary}` is not installed; install it with: {INSTALL_HINT}")]
    MissingServer { binary: String },
    #[error("a testbed is already running in {dir} (Dovecot PID {pid}); stop it with `bramble testbed down --dir {dir}`")]
    AlreadyRunning { dir: String, pid: u32 },
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Command { what: String },
    #[error("{server} did not accept on {addr} within {secs} s; last lines of {log}:\n{tail}")]
    NotReady {
        server: &'static str,
        addr: SocketAddr,
        secs: u64,
        log: String,
        tail: String,
    },
    #[error("{server} exited while starting ({status}); last lines of {log}:\n{tail}")]
    Exited {
        server: &'static str,
        status: String,
        log: String,
        tail: String,
    },
    #[error("{server} (PID {pid}) did not stop within {secs} s")]
    StopTimeout {
        server: &'static str,
        pid: u32,
        secs: u64,
    },
    #[error("{path} is not a readable testbed description: {message}")]
    BadDescription { path: String, message: String },
}

impl TestbedError {
    pub fn code(&self) -> &'static str {
        match self {
            TestbedError::MissingServer { .. } => "TESTBED_MISSING_SERVER",
            TestbedError::AlreadyRunning { .. } => "TESTBED_ALREADY_RUNNING",
            TestbedError::Setup { .. } | TestbedError::Command { .. } => "TESTBED_SETUP_FAILED",
            TestbedError::NotReady { .. } | TestbedError::Exited { .. } => "TESTBED_NOT_READY",
            TestbedError::StopTimeout { .. } => "TESTBED_STOP_FAILED",
            TestbedError::BadDescription { .. } => "TESTBED_UNREADABLE",
        }
    }
}

impl From<SlapdError> for TestbedError {
    fn from(e: SlapdError) -> Self {
        match e {
            SlapdError::Missing { tool, .. } => TestbedError::MissingServer {
                binary: tool.to_owned(),
            },
            SlapdError::Io(source) => TestbedError::Setup {
                what: "setting up slapd".to_owned(),
                source,
            },
            other => TestbedError::Command {
                what: format!("starting slapd: {other}"),
            },
        }
    }
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> TestbedError {
    let what = what.to_string();
    move |source| TestbedError::Setup { what, source }
}

/// Ports to listen on; `None` picks a free loopback port.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestbedPorts {
    pub imap: Option<u16>,
    pub lmtp: Option<u16>,
    pub smtp: Option<u16>,
    pub ldap: Option<u16>,
    pub radicale: Option<u16>,
}

#[derive(Debug, Clone, Default)]
pub struct TestbedOptions {
    /// The folder everything lives in (created if missing).
    pub dir: PathBuf,
    /// How many sample users (`user1..userN`); 0 means 3.
    pub users: usize,
    pub ports: TestbedPorts,
}

impl TestbedOptions {
    pub fn new(dir: impl Into<PathBuf>) -> TestbedOptions {
        TestbedOptions {
            dir: dir.into(),
            users: 3,
            ports: TestbedPorts::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestUser {
    pub login: String,
    pub address: String,
    pub password: String,
}

/// What `testbed.toml` holds: where the servers listen and who can log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestbedInfo {
    pub dir: PathBuf,
    pub host: String,
    pub imap_port: u16,
    pub lmtp_port: u16,
    pub smtp_port: u16,
    pub domain: String,
    pub master_login: String,
    pub master_password: String,
    pub master_separator: String,
    pub dovecot_pid: u32,
    pub postfix_pid: u32,
    pub users: Vec<TestUser>,
    /// The directory (slapd) with the same users, as `uid=userN,ou=people`.
    #[serde(default)]
    pub ldap_port: u16,
    #[serde(default)]
    pub ldap_url: String,
    #[serde(default)]
    pub ldap_bind_dn: String,
    #[serde(default)]
    pub ldap_bind_password: String,
    #[serde(default)]
    pub ldap_base_dn: String,
    #[serde(default)]
    pub slapd_pid: u32,
    /// Radicale (CalDAV/CardDAV): every user has `contacts`, `calendar`,
    /// `tasks` and `memos` collections under `/{login}/`.
    #[serde(default)]
    pub radicale_port: u16,
    #[serde(default)]
    pub dav_url: String,
    #[serde(default)]
    pub dav_service_login: String,
    #[serde(default)]
    pub dav_service_password: String,
    #[serde(default)]
    pub radicale_pid: u32,
}

impl TestbedInfo {
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.imap_port))
    }
    pub fn lmtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.lmtp_port))
    }
    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.smtp_port))
    }
    pub fn ldap_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ldap_port))
    }
    pub fn radicale_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.radicale_port))
    }
    /// The IMAP login that reaches `user`'s mailbox with the master password.
    pub fn master_login_for(&self, user: &str) -> String {
        format!("{user}{}{}", self.master_separator, self.master_login)
    }
    /// Reads `dir/testbed.toml`.
    pub fn load(dir: &Path) -> Result<TestbedInfo, TestbedError> {
        let path = dir.join("testbed.toml");
        let text = fs::read_to_string(&path).map_err(|e| TestbedError::BadDescription {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| TestbedError::BadDescription {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Running servers; dropping it stops them.
#[derive(Debug)]
pub struct Testbed {
    info: TestbedInfo,
    dovecot: Option<Child>,
    postfix: Option<Child>,
    slapd: Option<Slapd>,
    radicale: Option<Radicale>,
    running: bool,
}

impl Testbed {
    pub fn start(options: TestbedOptions) -> Result<Testbed, TestbedError> {
        let dovecot_bin = find_binary("dovecot")?;
        let postfix_bin = find_binary("postfix")?;
        for binary in ["slapd", "slapadd", "slaptest", "radicale"] {
            find_binary(binary)?;
        }
        for helper in ["imap", "lmtp"] {
            let path = Path::new("/usr/lib/dovecot").join(helper);
            if Path::new("/usr/lib/dovecot").is_dir() && !path.exists() {
                return Err(TestbedError::MissingServer {
                    binary: path.display().to_string(),
                });
            }
        }

        let users = if options.users == 0 { 3 } else { options.users };
        raise_inotify_instances(users);
        fs::create_dir_all(&options.dir)
            .map_err(setup(format!("creating {}", options.dir.display())))?;
        let dir = fs::canonicalize(&options.dir)
            .map_err(setup(format!("resolving {}", options.dir.display())))?;
        if let Ok(old) = TestbedInfo::load(&dir) {
            if process_alive(old.dovecot_pid, "dovecot") {
                return Err(TestbedError::AlreadyRunning {
                    dir: dir.display().to_string(),
                    pid: old.dovecot_pid,
                });
            }
        }

        let (imap_port, lmtp_port, smtp_port, ldap_port, radicale_port) =
            pick_ports(options.ports)?;
        let count = if options.users == 0 { 3 } else { options.users };
        let users = (1..=count)
            .map(|i| TestUser {
                login: format!("user{i}"),
                address: format!("user{i}@{DOMAIN}"),
                password: format!("pass{i}"),
            })
            .collect::<Vec<_>>();
        let mut info = TestbedInfo {
            dir: dir.clone(),
            host: "127.0.0.1".to_owned(),
            imap_port,
            lmtp_port,
            smtp_port,
            domain: DOMAIN.to_owned(),
            master_login: MASTER_LOGIN.to_owned(),
            master_password: random_password()?,
            master_separator: MASTER_SEPARATOR.to_owned(),
            dovecot_pid: 0,
            postfix_pid: 0,
            users,
            ldap_port,
            ldap_url: format!("ldap://127.0.0.1:{ldap_port}"),
            ldap_bind_dn: DIRECTORY_BIND_DN.to_owned(),
            ldap_bind_password: random_password()?,
            ldap_base_dn: SUFFIX.to_owned(),
            slapd_pid: 0,
            radicale_port,
            dav_url: format!("http://127.0.0.1:{radicale_port}/"),
            dav_service_login: DAV_SERVICE_LOGIN.to_owned(),
            dav_service_password: random_password()?,
            radicale_pid: 0,
        };
        write_files(&info)?;

        let mut testbed = Testbed {
            info: info.clone(),
            dovecot: None,
            postfix: None,
            slapd: None,
            radicale: None,
            running: true,
        };

        // The directory first: it is ready in a fraction of a second.
        let slapd = Slapd::start_in(
            &dir.join("slapd"),
            &directory_ldif(&info),
            &SlapdOptions {
                port: Some(ldap_port),
                root_password: Some(random_password()?),
                ..SlapdOptions::default()
            },
        )?;
        testbed.info.slapd_pid = slapd.pid();
        testbed.slapd = Some(slapd);
        write_info(&testbed.info)?;

        // The organizer server: ready in about half a second.
        let radicale = Radicale::start_in(
            &dir.join("radicale"),
            radicale_port,
            &testbed.info.users,
            &testbed.info.dav_service_login,
            &testbed.info.dav_service_password,
        )?;
        testbed.info.radicale_pid = radicale.pid();
        testbed.radicale = Some(radicale);
        write_info(&testbed.info)?;

        let dovecot_log = dir.join("dovecot.log");
        let child = Command::new(&dovecot_bin)
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("dovecot.out"))?)
            .stderr(log_file(&dir.join("dovecot.out"))?)
            .spawn()
            .map_err(setup(format!("starting {}", dovecot_bin.display())))?;
        info.dovecot_pid = child.id();
        testbed.info.dovecot_pid = child.id();
        testbed.dovecot = Some(child);
        write_text(&dir.join("dovecot.pid"), &format!("{}\n", info.dovecot_pid))?;
        write_info(&testbed.info)?;

        let postfix_log = dir.join("postfix.log");
        let child = Command::new(&postfix_bin)
            .arg("-c")
            .arg(dir.join("etc"))
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(log_file(&postfix_log)?)
            .stderr(log_file(&postfix_log)?)
            .spawn()
            .map_err(setup(format!("starting {}", postfix_bin.display())))?;
        testbed.info.postfix_pid = child.id();
        testbed.postfix = Some(child);
        write_info(&testbed.info)?;

        let deadline = Instant::now() + READY_TIMEOUT;
        for (server, addr, log) in [
            ("Dovecot IMAP", testbed.info.imap_addr(), &dovecot_log),
            ("Dovecot LMTP", testbed.info.lmtp_addr(), &dovecot_log),
            ("Postfix SMTP", testbed.info.smtp_addr(), &postfix_log),
        ] {
            let child = if server.starts_with("Dovecot") {
                testbed.dovecot.as_mut()
            } else {
                testbed.postfix.as_mut()
            };
            wait_ready(server, addr, log, child, deadline)?;
        }
        Ok(testbed)
    }

    pub fn info(&self) -> &TestbedInfo {
        &self.info
    }

    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// Stops Radicale only (the organizer server goes down), for tests.
    pub fn stop_radicale(&mut self) {
        if let Some(r) = self.radicale.as_mut() {
            r.stop();
        }
    }

    /// Starts Radicale again on its port after [`Testbed::stop_radicale`].
    pub fn restart_radicale(&mut self) -> Result<(), TestbedError> {
        match self.radicale.as_mut() {
            Some(r) => {
                r.restart()?;
                self.info.radicale_pid = r.pid();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Whether Postfix has handed on every message it accepted: no queue
    /// file is left waiting, being delivered or deferred. Tests that check
    /// a message arrived only once count after this holds.
    pub fn mail_queue_is_empty(&self) -> bool {
        fn holds_a_file(dir: &Path) -> bool {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        holds_a_file(&path)
                    } else {
                        true
                    }
                })
        }
        let spool = self.info.dir.join("spool");
        !["maildrop", "incoming", "active", "deferred", "hold"]
            .iter()
            .any(|queue| holds_a_file(&spool.join(queue)))
    }

    /// Stops both servers and waits until they have exited. Idempotent.
    pub fn stop(&mut self) -> Result<(), TestbedError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        // Dropping the Slapd or the Radicale kills it and waits.
        self.slapd = None;
        self.radicale = None;
        let postfix = stop_postfix(&self.info.dir, self.postfix.take());
        let dovecot = stop_dovecot(self.info.dovecot_pid, self.dovecot.take());
        postfix.and(dovecot)
    }

    /// Leaves the servers running (for `bramble testbed up`); `stop_dir`
    /// stops them later.
    pub fn detach(mut self) -> TestbedInfo {
        self.running = false;
        self.dovecot = None;
        self.postfix = None;
        if let Some(slapd) = self.slapd.take() {
            slapd.detach();
        }
        if let Some(radicale) = self.radicale.take() {
            radicale.detach();
        }
        self.info.clone()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("testbed: stopping the servers: {e}");
        }
    }
}

/// Stops the servers of the testbed in `dir` (`bramble testbed down`).
/// Returns whether anything was running; a folder without a testbed, or with
/// one already stopped, is not an error.
pub fn stop_dir(dir: &Path) -> Result<bool, TestbedError> {
    let dovecot_pid = fs::read_to_string(dir.join("dovecot.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    let dovecot_running = dovecot_pid.is_some_and(|pid| process_alive(pid, "dovecot"));
    let postfix_running = postfix_master_pid(dir).is_some_and(|pid| process_alive(pid, ""));
    // slapd writes its own pidfile.
    let slapd_pid = fs::read_to_string(dir.join("slapd/slapd.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|pid| process_alive(*pid, "slapd"));
    let postfix = stop_postfix(dir, None);
    let dovecot = match dovecot_pid {
        Some(pid) => stop_dovecot(pid, None),
        None => Ok(()),
    };
    let slapd = match slapd_pid {
        Some(pid) => stop_server("slapd", pid, "slapd", None),
        None => Ok(()),
    };
    let radicale_pid = fs::read_to_string(dir.join("radicale/radicale.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|pid| process_alive(*pid, "radicale"));
    let radicale = match radicale_pid {
        Some(pid) => stop_server("Radicale", pid, "radicale", None),
        None => Ok(()),
    };
    postfix.and(dovecot).and(slapd).and(radicale)?;
    Ok(dovecot_running || postfix_running || slapd_pid.is_some() || radicale_pid.is_some())
}

/// The directory's entries: the service account, the sample users (with
/// their mail passwords) under `ou=people` and a group `staff` of them all.
fn directory_ldif(info: &TestbedInfo) -> String {
    let mut ldif = format!(
        "dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {DIRECTORY_BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: bramble\nuserPassword: {}\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n",
        info.ldap_bind_password
    );
    for (i, user) in info.users.iter().enumerate() {
        ldif.push_str(&format!(
            "dn: uid={login},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {login}\ncn: User {n}\nsn: {n}\nmail: {address}\nuserPassword: {password}\n\n",
            login = user.login,
            n = i + 1,
            address = user.address,
            password = user.password,
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=staff,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: staff\n"
    ));
    for user in &info.users {
        ldif.push_str(&format!("member: uid={},ou=people,{SUFFIX}\n", user.login));
    }
    ldif
}

/// A server's binary on PATH or in the sbin folders (often not on a
/// user's PATH).
fn locate(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn find_binary(name: &str) -> Result<PathBuf, TestbedError> {
    locate(name).ok_or_else(|| TestbedError::MissingServer {
        binary: name.to_owned(),
    })
}

/// A loopback address with a port free a moment ago.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn pick_ports(given: TestbedPorts) -> Result<(u16, u16, u16, u16, u16), TestbedError> {
    // Hold all listeners at once so the picks differ.
    let mut held = Vec::new();
    let mut pick = |port: Option<u16>| -> Result<u16, TestbedError> {
        if let Some(port) = port {
            return Ok(port);
        }
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(setup("picking a free loopback port"))?;
        let port = listener
            .local_addr()
            .map_err(setup("picking a free loopback port"))?
            .port();
        held.push(listener);
        Ok(port)
    };
    let ports = (
        pick(given.imap)?,
        pick(given.lmtp)?,
        pick(given.smtp)?,
        pick(given.ldap)?,
        pick(given.radicale)?,
    );
    drop(held);
    Ok(ports)
}

fn random_password() -> Result<String, TestbedError> {
    let mut bytes = [0u8; 12];
    openssl::rand::rand_bytes(&mut bytes).map_err(|e| TestbedError::Command {
        what: format!("generating the master password: {e}"),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_text(path: &Path, text: &str) -> Result<(), TestbedError> {
    fs::write(path, text).map_err(setup(format!("writing {}", path.display())))
}

fn log_file(path: &Path) -> Result<fs::File, TestbedError> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(setup(format!("opening {}", path.display())))
}

fn run(program: &str, args: &[&str]) -> Result<(), TestbedError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(setup(format!("running {program}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Command {
            what: format!(
                "`{program} {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

fn chmod(path: &Path, mode: u32) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(setup(format!("chmod {mode:o} {}", path.display())))
}

fn write_info(info: &TestbedInfo) -> Result<(), TestbedError> {
    let text = toml::to_string(info).map_err(|e| TestbedError::Command {
        what: format!("writing testbed.toml: {e}"),
    })?;
    write_text(
        &info.dir.join("testbed.toml"),
        &format!("# Written by `bramble testbed up`; the servers of this folder.\n{text}"),
    )
}

fn write_files(info: &TestbedInfo) -> Result<(), TestbedError> {
    let dir = &info.dir;
    let d = dir.display();
    chmod(dir, 0o755)?;
    let users: String = info
        .users
        .iter()
        .map(|u| format!("{}:{{PLAIN}}{}\n", u.login, u.password))
        .collect();
    write_text(&dir.join("users"), &users)?;
    write_text(
        &dir.join("masters"),
        &format!("{}:{{PLAIN}}{}\n", info.master_login, info.master_password),
    )?;
    let mail = dir.join("mail");
    fs::create_dir_all(&mail).map_err(setup(format!("creating {}", mail.display())))?;
    let mail_str = mail.display().to_string();
    run("chown", &["nobody:nogroup", &mail_str])?;

    write_text(
        &dir.join("dovecot.conf"),
        &format!(
            "instance_name = bramble-testbed
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
auth_failure_delay = 0
auth_master_user_separator = {sep}
mail_location = maildir:~/Maildir
mail_uid = nobody
mail_gid = nogroup
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/masters
  master = yes
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = home={d}/mail/%n
}}
# Room for thousands of watched mailboxes (one IDLE connection, so one
# imap process, each); a few login processes serve all connections.
default_client_limit = 20000
mailbox_idle_check_interval = 5 secs
service imap {{
  process_limit = 6000
}}
service imap-login {{
  service_count = 0
  client_limit = 10000
  process_limit = 4
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
",
            sep = info.master_separator,
            imap = info.imap_port,
            lmtp = info.lmtp_port,
        ),
    )?;

    let etc = dir.join("etc");
    fs::create_dir_all(&etc).map_err(setup(format!("creating {}", etc.display())))?;
    let spool = dir.join("spool");
    fs::create_dir_all(&spool).map_err(setup(format!("creating {}", spool.display())))?;
    let data = dir.join("data");
    fs::create_dir_all(&data).map_err(setup(format!("creating {}", data.display())))?;
    let data_str = data.display().to_string();
    run("chown", &["postfix", &data_str])?;
    write_text(
        &etc.join("main.cf"),
        &format!(
            "compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = localhost
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {domain}
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = /dev/stdout
",
            domain = info.domain,
            lmtp = info.lmtp_port,
        ),
    )?;
    let stock = fs::read_to_string("/etc/postfix/master.cf")
        .map_err(setup("reading /etc/postfix/master.cf"))?;
    write_text(&etc.join("master.cf"), &master_cf(&stock, info.smtp_port))?;

    let bramble_data = dir.join("bramble-data");
    fs::create_dir_all(&bramble_data)
        .map_err(setup(format!("creating {}", bramble_data.display())))?;
    write_text(&dir.join("bramble.toml"), &bramble_toml(info))?;
    write_info(info)
}

/// Debian's `master.cf` with chroot off and `smtpd` on a loopback port.
fn master_cf(stock: &str, smtp_port: u16) -> String {
    let mut out = String::new();
    for line in stock.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"smtp") && fields.get(1) == Some(&"inet") {
            out.push_str(&format!("127.0.0.1:{smtp_port} inet n - n - - smtpd\n"));
        } else if line.starts_with(|c: char| c.is_ascii_lowercase()) && fields.len() >= 8 {
            let mut fields = fields;
            fields[4] = "n";
            out.push_str(&fields.join(" "));
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn bramble_toml(info: &TestbedInfo) -> String {
    let data_dir = info.dir.join("bramble-data").display().to_string();
    format!(
        "# Written by `bramble testbed up`: a Bramble beside the testbed's mail servers.
data_dir = {data_dir}

[admin]
listen = \"127.0.0.1:0\"

[router]
lan_listen = \"127.0.0.1:0\"

# The mail servers, for the Messaging Agent (plain TCP: loopback only).
# Mail for the sample users ({domain}) can be delivered over LMTP at {lmtp}.
[mail]
imap = \"{imap}\"
imap_security = \"none\"
smtp = \"{smtp}\"
smtp_security = \"none\"
service_login = {master}
service_password = {password}
master_separator = {sep}

# The testbed's organizer server (Radicale), for the Synchronization
# Service: every user has contacts, calendar, tasks and memos collections.
[sync]
url = {dav_url}
service_login = {dav_login}
service_password = {dav_password}

# The testbed's directory, for the MailStore Service.
[[directories]]
name = \"testbed\"
url = {ldap_url}
bind_dn = {bind_dn}
bind_password = {bind_password}
base_dn = {base_dn}
",
        data_dir = toml_string(&data_dir),
        imap = info.imap_addr(),
        smtp = info.smtp_addr(),
        lmtp = info.lmtp_addr(),
        domain = toml_string(&info.domain),
        master = toml_string(&info.master_login),
        password = toml_string(&info.master_password),
        sep = toml_string(&info.master_separator),
        ldap_url = toml_string(&info.ldap_url),
        bind_dn = toml_string(&info.ldap_bind_dn),
        bind_password = toml_string(&info.ldap_bind_password),
        base_dn = toml_string(&info.ldap_base_dn),
        dav_url = toml_string(&info.dav_url),
        dav_login = toml_string(&info.dav_service_login),
        dav_password = toml_string(&info.dav_service_password),
    )
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// Each watched mailbox is an imap process (all running as `nobody`) with
/// its own inotify instance; beyond the kernel's per-user limit (128 by
/// default) Dovecot falls back to checking every `mailbox_idle_check_interval`
/// and new mail is noticed late. Raise the limit when a testbed needs more,
/// as a mail server would be tuned (best effort; logged when it cannot).
fn raise_inotify_instances(users: usize) {
    let wanted = (users * 2 + 256) as u64;
    let current = fs::read_to_string(INOTIFY_INSTANCES)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    if let Some(current) = current {
        if current < wanted {
            match fs::write(INOTIFY_INSTANCES, wanted.to_string()) {
                Ok(()) => {
                    tracing::info!(target: "bramble::testbed", from = current, to = wanted, "raised fs.inotify.max_user_instances for the testbed's IMAP processes")
                }
                Err(e) => {
                    tracing::warn!(target: "bramble::testbed", "cannot raise fs.inotify.max_user_instances to {wanted} ({e}); new mail may be noticed up to mailbox_idle_check_interval late")
                }
            }
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            let tail = all[start..].join("\n");
            if tail.is_empty() {
                "(empty)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("({e})"),
    }
}

fn wait_ready(
    server: &'static str,
    addr: SocketAddr,
    log: &Path,
    mut child: Option<&mut Child>,
    deadline: Instant,
) -> Result<(), TestbedError> {
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if let Some(child) = child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(TestbedError::Exited {
                    server,
                    status: status.to_string(),
                    log: log.display().to_string(),
                    tail: log_tail(log, 20),
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(TestbedError::NotReady {
                server,
                addr,
                secs: READY_TIMEOUT.as_secs(),
                log: log.display().to_string(),
                tail: log_tail(log, 20),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Whether `pid` is a live (not zombie) process whose command line contains
/// `name` (empty: any).
fn process_alive(pid: u32, name: &str) -> bool {
    if pid == 0 {
        return false;
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return false;
    }
    if name.is_empty() {
        return true;
    }
    let mut cmdline = String::new();
    match fs::File::open(proc_dir.join("cmdline")) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            if f.read_to_end(&mut bytes).is_ok() {
                cmdline = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        Err(_) => return false,
    }
    cmdline.contains(name)
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_exit(pid: u32, child: &mut Option<Child>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let gone = match child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => !process_alive(pid, ""),
        };
        if gone {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

fn stop_dovecot(pid: u32, child: Option<Child>) -> Result<(), TestbedError> {
    stop_server("Dovecot", pid, "dovecot", child)
}

/// SIGTERM, then SIGKILL if `pid` (whose command line names `name`) has
/// not exited in time; SIGKILL on Dovecot's master takes its children.
fn stop_server(
    server: &'static str,
    pid: u32,
    name: &str,
    mut child: Option<Child>,
) -> Result<(), TestbedError> {
    let ours = child.is_some();
    if !ours && !process_alive(pid, name) {
        return Ok(());
    }
    signal(pid, "TERM");
    if wait_exit(pid, &mut child, STOP_TIMEOUT) {
        return Ok(());
    }
    signal(pid, "KILL");
    if wait_exit(pid, &mut child, Duration::from_secs(5)) {
        return Ok(());
    }
    Err(TestbedError::StopTimeout {
        server,
        pid,
        secs: STOP_TIMEOUT.as_secs(),
    })
}

fn postfix_master_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("spool/pid/master.pid"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

fn stop_postfix(dir: &Path, mut child: Option<Child>) -> Result<(), TestbedError> {
    let etc = dir.join("etc");
    if !etc.join("main.cf").exists() {
        return Ok(());
    }
    let master = postfix_master_pid(dir).filter(|pid| process_alive(*pid, ""));
    if master.is_some() {
        if let Ok(bin) = find_binary("postfix") {
            let _ = Command::new(bin)
                .arg("-c")
                .arg(&etc)
                .arg("stop")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    if let Some(pid) = master {
        let mut none = None;
        if !wait_exit(pid, &mut none, STOP_TIMEOUT) {
            signal(pid, "KILL");
            if !wait_exit(pid, &mut none, Duration::from_secs(5)) {
                return Err(TestbedError::StopTimeout {
                    server: "Postfix",
                    pid,
                    secs: STOP_TIMEOUT.as_secs(),
                });
            }
        }
    }
    if let Some(c) = child.as_mut() {
        let pid = c.id();
        if !wait_exit(pid, &mut child, Duration::from_secs(5)) {
            if let Some(c) = child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    Ok(())
}

/// Reads an SMTP or LMTP reply (all lines); returns its code and text.
pub fn read_reply(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut text = String::new();
    let mut byte = [0u8; 1];
    let mut line = Vec::new();
    loop {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed after {text:?}"),
            ));
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            let l = String::from_utf8_lossy(&line).into_owned();
            text.push_str(&l);
            line.clear();
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                let code = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, text));
            }
        }
    }
}

/// Sends one message by SMTP (a plain dialogue, no TLS, no auth): enough for
/// tests and benchmarks against the testbed's Postfix.
pub fn send_mail(
    addr: SocketAddr,
    from: &str,
    to: &str,
    message: &str,
) -> Result<(), TestbedError> {
    let fail = |what: String| TestbedError::Command { what };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(setup(format!("connecting to {addr}")))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let expect = |stream: &mut TcpStream, send: Option<String>, want: u16| {
        if let Some(line) = send {
            stream
                .write_all(line.as_bytes())
                .map_err(setup(format!("writing to {addr}")))?;
        }
        let (code, text) = read_reply(stream).map_err(setup(format!("reading from {addr}")))?;
        if code == want {
            Ok(())
        } else {
            Err(fail(format!("SMTP server {addr} answered {}", text.trim())))
        }
    };
    expect(&mut stream, None, 220)?;
    expect(&mut stream, Some("EHLO localhost\r\n".to_owned()), 250)?;
    expect(&mut stream, Some(format!("MAIL FROM:<{from}>\r\n")), 250)?;
    expect(&mut stream, Some(format!("RCPT TO:<{to}>\r\n")), 250)?;
    expect(&mut stream, Some("DATA\r\n".to_owned()), 354)?;
    let mut body = String::new();
    for line in message.lines() {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    expect(&mut stream, Some(body), 250)?;
    expect(&mut stream, Some("QUIT\r\n".to_owned()), 221)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn missing_server_names_the_packages() {
        let e = TestbedError::MissingServer {
            binary: "dovecot".to_owned(),
        };
        assert_eq!(e.code(), "TESTBED_MISSING_SERVER");
        assert!(e.to_string().ends_with(
            "install it with: apt-get install dovecot-imapd dovecot-lmtpd postfix slapd radicale"
        ));
    }

    #[test]
    fn missing_slapd_tools_name_the_packages() {
        let e = TestbedError::from(SlapdError::Missing {
            tool: "slapadd",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        });
        assert_eq!(e.code(), "TESTBED_MISSING_SERVER");
        assert_eq!(
            e.to_string(),
            "`slapadd` is not installed; install it with: apt-get install dovecot-imapd dovecot-lmtpd postfix slapd radicale"
        );
    }

    #[test]
    fn master_cf_turns_chroot_off_and_moves_smtpd() {
        let stock = "# comment\nsmtp      inet  n       -       y       -       -       smtpd\npickup    unix  n       -       y       60      1       pickup\n  -o x=y\n";
        let out = master_cf(stock, 2526);
        assert_eq!(
            out,
            "# comment\n127.0.0.1:2526 inet n - n - - smtpd\npickup unix n - n 60 1 pickup\n  -o x=y\n"
        );
    }
}
