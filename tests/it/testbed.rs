//! The testbed: real Dovecot, Postfix, slapd and Radicale on loopback. A message sent
//! by SMTP reaches the user's INBOX over LMTP and is found over IMAP by the
//! master user; a directory sync against the testbed's slapd, with the
//! settings it wrote, imports the mailbox users; stopping closes every
//! port. Needs root and
//! `apt-get install dovecot-imapd dovecot-lmtpd postfix slapd radicale` (scripts/test.sh).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bramble::config::Settings;
use bramble::db::models::group::Group;
use bramble::db::models::user::User;
use bramble::db::Database;
use bramble::mailstore::{self, Progress};
use bramble_testbed::{send_mail, Testbed, TestbedInfo, TestbedOptions};

use crate::fixture::{bramble_bin, text};

struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next: u32,
}

impl Imap {
    fn connect(addr: SocketAddr) -> Imap {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            next: 1,
        };
        let greeting = imap.line();
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        imap
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "IMAP connection closed");
        line
    }

    /// Sends a command; returns the untagged lines and the tagged status line.
    fn command(&mut self, command: &str) -> (Vec<String>, String) {
        let tag = format!("a{}", self.next);
        self.next += 1;
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .unwrap();
        let mut untagged = Vec::new();
        loop {
            let line = self.line();
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                return (untagged, status.trim_end().to_owned());
            }
            untagged.push(line);
        }
    }
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn login(info: &TestbedInfo, login: &str, password: &str) -> (Imap, String) {
    let mut imap = Imap::connect(info.imap_addr());
    let (_, status) = imap.command(&format!("LOGIN {} {}", quoted(login), quoted(password)));
    (imap, status)
}

fn assert_closed(addr: SocketAddr) {
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "{addr} still accepts after stop"
    );
}

#[test]
fn testbed_delivers_smtp_mail_to_imap_for_the_master_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut testbed = Testbed::start(TestbedOptions::new(dir.path())).unwrap();
    let info = testbed.info().clone();
    assert_eq!(info.users.len(), 3);
    assert!(dir.path().join("testbed.toml").is_file());
    assert!(dir.path().join("bramble.toml").is_file());
    let loaded = TestbedInfo::load(dir.path()).unwrap();
    assert_eq!(loaded.imap_port, info.imap_port);
    assert_eq!(loaded.master_password, info.master_password);

    let subject = format!("testbed probe {}", std::process::id());
    send_mail(
        info.smtp_addr(),
        "sender@example.org",
        "user2@example.com",
        &format!(
            "From: sender@example.org\nTo: user2@example.com\nSubject: {subject}\n\nHello from the testbed.\n"
        ),
    )
    .unwrap();

    // The master user reaches user2's mailbox; delivery is queued, so poll.
    let (mut imap, status) = login(
        &info,
        &info.master_login_for("user2"),
        &info.master_password,
    );
    assert!(status.starts_with("OK"), "master login: {status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let (_, status) = imap.command("SELECT INBOX");
        assert!(status.starts_with("OK"), "SELECT: {status}");
        let (lines, status) = imap.command(&format!("SEARCH SUBJECT {}", quoted(&subject)));
        assert!(status.starts_with("OK"), "SEARCH: {status}");
        let hits: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("* SEARCH ") && l.trim_end().len() > "* SEARCH".len())
            .collect();
        if !hits.is_empty() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        found,
        "message not in user2's INBOX; postfix.log:\n{}",
        bramble_testbed::log_tail(&dir.path().join("postfix.log"), 20)
    );
    let (_, status) = imap.command("LOGOUT");
    assert!(status.starts_with("OK"), "LOGOUT: {status}");

    // The user's own password works; wrong passwords are refused.
    let (_, status) = login(&info, "user2", "pass2");
    assert!(status.starts_with("OK"), "user login: {status}");
    let (_, status) = login(&info, &info.master_login_for("user2"), "wrong");
    assert!(status.starts_with("NO"), "wrong master password: {status}");
    let (_, status) = login(&info, "user2", "wrong");
    assert!(status.starts_with("NO"), "wrong user password: {status}");

    // The directory holds the same users: a sync with the settings the
    // testbed wrote imports exactly the mailbox users, in group staff.
    let loaded = Settings::load(Some(&dir.path().join("bramble.toml"))).unwrap();
    let directory = &loaded.settings.directories[0];
    assert_eq!(directory.name, "testbed");
    assert_eq!(directory.url, info.ldap_url);
    let data = tempfile::tempdir().unwrap();
    let db = Database::open_path(&data.path().join("bramble.db"), 2, 5_000).unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(Progress::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(mailstore::sync(&db, directory, false, &tx))
        .unwrap();
    assert_eq!(report.run.created, 4, "3 users and group staff: {report:?}");
    let (users, staff) = db
        .run_blocking(|conn| {
            let (users, _) = User::search(conn, "", 0, 10)?;
            let staff = Group::find_by_name(conn, "staff")?.unwrap();
            Ok((users, Group::find_member_ids(conn, staff.id)?))
        })
        .unwrap();
    let mut imported: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.email.clone(), u.mailbox_login.clone()))
        .collect();
    imported.sort();
    let mailboxes: Vec<(String, String)> = info
        .users
        .iter()
        .map(|u| (u.address.clone(), u.login.clone()))
        .collect();
    assert_eq!(imported, mailboxes);
    assert_eq!(staff.len(), 3);

    testbed.stop().unwrap();
    testbed.stop().unwrap();
    assert_closed(info.imap_addr());
    assert_closed(info.lmtp_addr());
    assert_closed(info.smtp_addr());
    assert_closed(info.ldap_addr());
}

#[test]
fn testbed_cli_up_leaves_servers_running_and_down_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("bed");
    let d_str = d.to_str().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bramble_bin())
            .env("BRAMBLE_DATA_DIR", dir.path().join("data"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["testbed", "up", "--dir", d_str, "--users", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let info = TestbedInfo::load(&d).unwrap();
    assert_eq!(info.users.len(), 2);
    assert!(
        text(&out).contains(&info.imap_addr().to_string()),
        "{}",
        text(&out)
    );
    let (_, status) = login(
        &info,
        &info.master_login_for("user1"),
        &info.master_password,
    );
    assert!(status.starts_with("OK"), "master login: {status}");
    assert!(TcpStream::connect(info.smtp_addr()).is_ok());
    assert!(TcpStream::connect(info.radicale_addr()).is_ok());

    // `directory sync` with the testbed's settings file finds its users.
    let config = d.join("bramble.toml");
    let out = crate::fixture::bramble(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "directory", "sync"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Directory testbed: full sync succeeded")
            && text(&out).contains("created 3,"),
        "2 users and group staff: {}",
        text(&out)
    );
    let out = crate::fixture::bramble(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "directory",
            "lookup",
            "user2",
        ],
    );
    assert!(
        text(&out).contains("User 2 <user2@example.com> (user2)"),
        "{}",
        text(&out)
    );

    let again = run(&["testbed", "up", "--dir", d_str]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("error[TESTBED_ALREADY_RUNNING]"),
        "{}",
        text(&again)
    );

    let out = run(&["testbed", "down", "--dir", d_str]);
    assert!(out.status.success(), "{}", text(&out));
    assert_closed(info.imap_addr());
    assert_closed(info.lmtp_addr());
    assert_closed(info.smtp_addr());
    assert_closed(info.ldap_addr());
    assert_closed(info.radicale_addr());
    let out = run(&["testbed", "down", "--dir", d_str]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("No testbed running"), "{}", text(&out));
}
