//! The `bramble` command line, including what it does with bad input: a
//! clear error naming the file or port, a non-zero exit, no panic, and no
//! data touched.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::Connection;

use crate::fixture::{bramble, bramble_bin, digest, http_get, text};

fn assert_refused(output: &std::process::Output, code: &str, mentions: &str) {
    let all = text(output);
    assert!(!output.status.success(), "expected failure: {all}");
    assert!(
        all.contains(&format!("error[{code}]")),
        "expected {code}: {all}"
    );
    assert!(
        all.contains(mentions),
        "expected mention of {mentions}: {all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn version() {
    let dir = tempfile::tempdir().unwrap();
    let out = bramble(dir.path(), &["--version"]);
    assert!(out.status.success());
    assert!(text(&out).contains(bramble::VERSION));
}

#[test]
fn migrate_creates_the_database_and_check_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let out = bramble(&data, &["db", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("No Configuration Database"),
        "{}",
        text(&out)
    );

    let out = bramble(&data, &["db", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(data.join("bramble.db").is_file());
    assert!(
        data.join("bramble.db.key").is_file(),
        "master key for sealed secrets"
    );

    let out = bramble(&data, &["db", "check"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("healthy and up to date"),
        "{}",
        text(&out)
    );

    // Migrating again is harmless.
    let out = bramble(&data, &["db", "migrate"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn unwritable_data_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"a file where the data folder should be").unwrap();
    let data = blocker.join("data");
    let out = bramble(&data, &["db", "migrate"]);
    assert_refused(&out, "DATA_DIR_UNWRITABLE", &blocker.display().to_string());
}

#[test]
fn a_file_that_is_not_sqlite_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bramble.db");
    std::fs::write(&db, b"quarterly report, definitely not a database\n").unwrap();
    let before = digest(&db);
    let out = bramble(dir.path(), &["db", "migrate"]);
    assert_refused(&out, "DB_NOT_SQLITE", &db.display().to_string());
    assert_eq!(digest(&db), before);
    assert!(!dir.path().join("bramble.db.key").exists());
}

#[test]
fn a_damaged_database_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(bramble(&data, &["db", "migrate"]).status.success());
    let db = data.join("bramble.db");
    // Overwrite the middle of the file, past the header page.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "database has several pages");
    for b in &mut bytes[4096..8192] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = digest(&db);
    let out = bramble(&data, &["db", "migrate"]);
    assert_refused(&out, "DB_CORRUPT", &db.display().to_string());
    assert_eq!(digest(&db), before);
    let out = bramble(&data, &["serve"]);
    assert_refused(&out, "DB_CORRUPT", "backup");
    assert_eq!(digest(&db), before);
}

/// A data folder whose database holds a sealed secret, as every server
/// that ever started has (its domain signing key).
fn data_with_a_sealed_secret(data: &std::path::Path) -> std::path::PathBuf {
    use diesel::RunQueryDsl;
    let db_path = data.join("bramble.db");
    let db = bramble::db::Database::open_path(&db_path, 1, 5_000).unwrap();
    let sealed = db.sealer().seal("domain_keys/1", b"private key").unwrap();
    db.run_blocking(|conn| {
        diesel::sql_query(
            "INSERT INTO domain_keys (id, public_key, sealed_private_key, created_at) VALUES (1, x'00', ?, CURRENT_TIMESTAMP)",
        )
        .bind::<diesel::sql_types::Binary, _>(sealed)
        .execute(conn)?;
        Ok(())
    })
    .unwrap();
    db_path
}

#[test]
fn a_lost_master_key_stops_start_up_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data_with_a_sealed_secret(&data);
    let key = data.join("bramble.db.key");
    std::fs::remove_file(&key).unwrap();
    let before = digest(&db);
    let out = bramble(&data, &["serve"]);
    assert_refused(&out, "DB_KEY_MISSING", &key.display().to_string());
    assert!(text(&out).contains("backup"), "{}", text(&out));
    assert!(!key.exists(), "no new key replaces the lost one");
    assert_eq!(digest(&db), before, "the database is unchanged");
}

#[cfg(unix)]
#[test]
fn a_master_key_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    data_with_a_sealed_secret(&data);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data folder is its owner's only");
    let key = data.join("bramble.db.key");
    assert_eq!(mode(&key), 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bramble(&data, &["serve"]);
    assert_refused(&out, "DB_KEY_EXPOSED", "chmod 600");
    assert_eq!(mode(&key), 0o644, "refused, not silently changed");
}

#[cfg(unix)]
#[test]
fn a_password_file_others_may_read_stops_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("imap.pw");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = dir.path().join("bramble.toml");
    std::fs::write(
        &file,
        format!("[mail]\nimap = \"127.0.0.1:1\"\nservice_password_file = {password:?}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = bramble(&data, &["--config", file.to_str().unwrap(), "serve"]);
    assert_refused(
        &out,
        "SETTINGS_SECRET_FILE_EXPOSED",
        &password.display().to_string(),
    );
    assert!(!text(&out).contains("s3cret"), "{}", text(&out));
    assert!(!data.join("bramble.db").exists(), "nothing was started");
}

#[tokio::test]
async fn a_service_password_set_from_stdin_is_sealed_and_used_when_the_settings_give_none() {
    let dir = tempfile::tempdir().unwrap();
    let set = |name: &str, value: &str| {
        let mut child = Command::new(bramble_bin())
            .args(["secret", "set", name])
            .env_remove("BRAMBLE_CONFIG")
            .env("BRAMBLE_DATA_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{value}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = set("pop3", "nope");
    assert_refused(&out, "SECRET_NAME_UNKNOWN", "imap, smtp, dav or ldap/");
    let out = set("imap", "imap-Sealed-42");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("imap-Sealed-42"));
    let out = bramble(dir.path(), &["secret", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "imap");

    // Not in clear anywhere in the database.
    let db_path = dir.path().join("bramble.db");
    let bytes = std::fs::read(&db_path).unwrap();
    let wal = std::fs::read(dir.path().join("bramble.db-wal")).unwrap_or_default();
    for file in [bytes, wal] {
        assert!(!file.windows(14).any(|w| w == b"imap-Sealed-42"));
    }

    let mut settings = bramble::config::Settings::load_from(None, &[])
        .unwrap()
        .settings;
    settings.data_dir = dir.path().to_path_buf();
    settings.mail.imap = Some("127.0.0.1:143".into());
    let filled = bramble::Server::with_stored_secrets(settings.clone())
        .await
        .unwrap();
    assert_eq!(filled.mail.service_password, "imap-Sealed-42");
    settings.mail.service_password = "from-the-settings".into();
    let kept = bramble::Server::with_stored_secrets(settings)
        .await
        .unwrap();
    assert_eq!(kept.mail.service_password, "from-the-settings");

    // The change is audited, without the value.
    let db = bramble::db::Database::open_path(&db_path, 1, 5_000).unwrap();
    let (entries, _) = db
        .run_blocking(|conn| bramble::db::models::audit::find_page(conn, 0, 10))
        .unwrap();
    assert_eq!(entries[0].action, "service_secret.set");
    assert_eq!(entries[0].target, "service_secret/imap");
    drop(db);
    let out = bramble(dir.path(), &["secret", "delete", "imap"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = bramble(dir.path(), &["secret", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
}

#[test]
fn another_applications_database_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bramble.db");
    {
        let mut conn = diesel::SqliteConnection::establish(&db.to_string_lossy()).unwrap();
        conn.batch_execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5);")
            .unwrap();
    }
    let before = digest(&db);
    let out = bramble(dir.path(), &["db", "migrate"]);
    assert_refused(&out, "DB_FOREIGN", &db.display().to_string());
    assert_eq!(digest(&db), before);
    let out = bramble(dir.path(), &["db", "check"]);
    assert_refused(&out, "DB_FOREIGN", "another application");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(bramble(dir.path(), &["db", "migrate"]).status.success());
    let db = dir.path().join("bramble.db");
    {
        let mut conn = diesel::SqliteConnection::establish(&db.to_string_lossy()).unwrap();
        conn.batch_execute(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('29991231000000');",
        )
        .unwrap();
    }
    let before = digest(&db);
    let out = bramble(dir.path(), &["db", "migrate"]);
    assert_refused(&out, "DB_TOO_NEW", "newer Bramble");
    assert_eq!(digest(&db), before);
}

#[test]
fn malformed_settings_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bramble.toml");
    std::fs::write(&file, "[admin]\nlisten = \"127.0.0.1:3180\"\n[controller\n").unwrap();
    let out = bramble(dir.path(), &["--config", file.to_str().unwrap(), "serve"]);
    assert_refused(&out, "SETTINGS_MALFORMED", &file.display().to_string());
    assert!(!dir.path().join("bramble.db").exists(), "nothing started");
}

#[test]
fn unknown_setting_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bramble.toml");
    std::fs::write(&file, "[controller]\nmax_restart_per_day = 3\n").unwrap();
    let out = bramble(
        dir.path(),
        &["--config", file.to_str().unwrap(), "db", "migrate"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("controller.max_restart_per_day"),
        "{}",
        text(&out)
    );
}

#[test]
fn port_in_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = bramble(dir.path(), &["serve", "--listen", &addr]);
    assert_refused(&out, "PORT_IN_USE", &addr);
}

#[test]
fn admin_create_makes_a_security_administrator() {
    let dir = tempfile::tempdir().unwrap();
    let run = |password: &str| {
        let mut child = Command::new(bramble_bin())
            .args([
                "admin",
                "create",
                "--login",
                "firstadmin",
                "--password-stdin",
            ])
            .env_remove("BRAMBLE_CONFIG")
            .env("BRAMBLE_DATA_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("long enough password");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Security Administrator `firstadmin`"),
        "{}",
        text(&out)
    );
    // The creation is in the audit log, and the chain holds.
    let db = bramble::db::Database::open_path(&dir.path().join("bramble.db"), 1, 5_000).unwrap();
    db.run_blocking(|conn| {
        let (entries, total) = bramble::db::models::audit::find_page(conn, 0, 10)?;
        assert_eq!(total, 1);
        assert_eq!(entries[0].action, "administrator.create");
        assert_eq!(entries[0].actor, "bramble admin create");
        assert_eq!(entries[0].after.as_ref().unwrap()["login"], "firstadmin");
        assert_eq!(bramble::db::models::audit::verify_chain(conn)?, Ok(()));
        Ok(())
    })
    .unwrap();
    drop(db);
    let out = run("another password");
    assert_refused(&out, "INVALID_INPUT", "already exists");
    let out = {
        let other = tempfile::tempdir().unwrap();
        bramble(
            other.path(),
            &["admin", "create", "--login", "x", "--password-stdin"],
        )
    };
    assert_refused(&out, "INVALID_INPUT", "at least 8 characters");
}

#[test]
fn activation_passwords_are_set_generated_and_audited() {
    use bramble::db::models::activation_password::{ActivationPassword, Verification};
    use bramble::db::models::user::{ActivationStatus, NewUser, User};

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("bramble.db");
    let alice = {
        let db = bramble::db::Database::open_path(&db_path, 1, 5_000).unwrap();
        db.run_blocking(|conn| {
            NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)
        })
        .unwrap()
    };
    let set = |args: &[&str], password: &str| {
        let mut child = Command::new(bramble_bin())
            .args(["user", "activation-password", "set"])
            .args(args)
            .env_remove("BRAMBLE_CONFIG")
            .env("BRAMBLE_DATA_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let check = |candidate: &str| {
        let db = bramble::db::Database::open_path(&db_path, 1, 5_000).unwrap();
        db.run_blocking(|conn| {
            ActivationPassword::verify(conn, alice.id, candidate, bramble::db::now())
        })
        .unwrap()
    };

    let out = bramble(
        dir.path(),
        &[
            "user",
            "activation-password",
            "generate",
            "--email",
            "alice@example.com",
            "--length",
            "10",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let generated = String::from_utf8(out.stdout.clone()).unwrap();
    let generated = generated.trim();
    assert_eq!(generated.len(), 10, "{}", text(&out));
    assert!(text(&out).contains("shown only now"), "{}", text(&out));
    assert_eq!(
        check("wrong-guess"),
        Verification::Wrong { attempts_left: 4 }
    );

    let out = set(
        &["--email", "alice@example.com", "--hours", "72"],
        "kx7m2qpa",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("initializing"), "{}", text(&out));
    assert_eq!(
        check(generated),
        Verification::Wrong { attempts_left: 4 },
        "the new password replaced the generated one and its attempts"
    );
    assert_eq!(check("kx7m2qpa"), Verification::Accepted);
    assert_eq!(check("kx7m2qpa"), Verification::NoPassword, "used once");

    let out = set(
        &["--email", "alice@example.com", "--hours", "721"],
        "kx7m2qpa",
    );
    assert_refused(&out, "ACTIVATION_LIFETIME_INVALID", "at most 720 hours");
    let out = set(&["--email", "bob@example.com"], "kx7m2qpa");
    assert_refused(&out, "USER_NOT_FOUND", "bob@example.com");
    let out = set(&["--email", "alice@example.com"], "abc");
    assert_refused(&out, "ACTIVATION_PASSWORD_LENGTH", "between 4 and 64");

    let db = bramble::db::Database::open_path(&db_path, 1, 5_000).unwrap();
    db.run_blocking(|conn| {
        assert!(ActivationPassword::find_by_user(conn, alice.id)?.is_none());
        assert_eq!(
            User::find_by_id(conn, alice.id)?.unwrap().activation_status,
            ActivationStatus::Activating
        );
        let (entries, total) = bramble::db::models::audit::find_page(conn, 0, 10)?;
        assert_eq!(total, 2, "only the two that succeeded");
        let actions: Vec<_> = entries.iter().map(|e| e.action.as_str()).collect();
        assert!(
            actions.contains(&"activation_password.generate"),
            "{actions:?}"
        );
        assert!(actions.contains(&"activation_password.set"), "{actions:?}");
        for entry in &entries {
            let after = entry.after.as_ref().unwrap().to_string();
            assert!(
                !after.contains("kx7m2qpa") && !after.contains(generated),
                "{after}"
            );
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn user_policy_shows_each_rule_and_its_source() {
    use bramble::db::models::group::Group;
    use bramble::db::models::it_policy::ItPolicy;
    use bramble::db::models::user::NewUser;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    {
        let db =
            bramble::db::Database::open_path(&dir.path().join("bramble.db"), 1, 5_000).unwrap();
        db.run_blocking(|conn| {
            let alice = NewUser {
                display_name: "Alice".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            let sales = Group::create(conn, "Sales", "")?;
            Group::add_member(conn, sales.id, alice.id)?;
            let strict = ItPolicy::create(conn, "Strict", "")?;
            ItPolicy::set_rule(conn, strict.id, "MinimumPasswordLength", &json!(10))?;
            let lax = ItPolicy::create(conn, "Lax", "")?;
            ItPolicy::set_rule(conn, lax.id, "MaximumSecurityTimeout", &json!(30))?;
            ItPolicy::assign_to_group(conn, strict.id, sales.id, 1)?;
            ItPolicy::assign_to_user(conn, lax.id, alice.id)?;
            Ok(())
        })
        .unwrap();
    }
    let args = ["user", "policy", "--email", "alice@example.com"];
    let out = bramble(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    let line = |rule: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(rule))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("MaximumSecurityTimeout").contains("30"), "{shown}");
    assert!(
        line("MaximumSecurityTimeout").contains("`Lax` (assigned to the user)"),
        "{shown}"
    );
    assert!(
        line("MinimumPasswordLength").contains("rule default"),
        "{shown}"
    );

    let out = bramble(dir.path(), &[&args[..], &["--merge", "--json"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let merged: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(merged["mode"], "most_restrictive");
    assert_eq!(merged["rules"]["MinimumPasswordLength"]["value"], 10);
    assert_eq!(
        merged["rules"]["MinimumPasswordLength"]["source"]["policy_name"],
        "Strict"
    );

    let out = bramble(
        dir.path(),
        &["user", "policy", "--email", "bob@example.com"],
    );
    assert_refused(&out, "USER_NOT_FOUND", "bob@example.com");
}

#[tokio::test]
async fn serve_answers_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bramble_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("BRAMBLE_CONFIG")
        .env("BRAMBLE_DATA_DIR", dir.path())
        .env("BRAMBLE_ROUTER__LAN_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        lines.find_map(|l| l.ok().filter(|l| l.contains("console at")))
    })
    .await
    .unwrap()
    .expect("serve prints where the console is");
    let url = line.rsplit(' ').next().unwrap();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    let mut doc = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = http_get(addr, "/health").await;
        assert_eq!(status, 200);
        doc = serde_json::from_str(&body).unwrap();
        if doc["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["components"].as_array().unwrap().len(), 4);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .collect();
    assert_eq!(logs.len(), 1, "one daily log file");
}
