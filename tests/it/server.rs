//! The server core as `bramble serve` and the desktop run it.

use std::time::Duration;

use bramble::config::Settings;
use bramble::Server;

use crate::fixture::http_get;

fn settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.to_path_buf();
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.router.lan_listen = Some("127.0.0.1:0".parse().unwrap());
    settings
}

async fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn starts_reports_health_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let handle = Server::start(settings(dir.path())).await.unwrap();
    let addr = handle.admin_addr();

    // Components beat as soon as they start; give the real clock a moment.
    let mut doc = health(addr).await;
    for _ in 0..100 {
        if doc["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        doc = health(addr).await;
    }
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["version"], bramble::VERSION);
    let components = doc["components"].as_array().unwrap();
    let mut names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "MailStore Service",
            "Messaging Agent",
            "Policy Service",
            "Synchronization Service"
        ]
    );
    for component in components {
        assert_eq!(component["state"], "running", "{component}");
        assert!(component["last_heartbeat"].is_string(), "{component}");
        assert_eq!(component["restarts"], 0);
    }

    // The console's API answers errors as {code, message}.
    let (status, body) = http_get(addr, "/api/no-such-thing").await;
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["code"], "NOT_FOUND");

    // The database and the log folder are in the data folder.
    assert!(dir.path().join("bramble.db").is_file());

    // The domain signing key exists from the server's first start.
    let stored = handle
        .state()
        .db
        .run(bramble::db::models::domain_key::StoredDomainKey::find)
        .await
        .unwrap();
    assert!(stored.is_some(), "the server made the domain signing key");

    handle.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the console port is closed after shutdown"
    );
}

#[tokio::test]
async fn two_servers_side_by_side() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let one = Server::start(settings(a.path())).await.unwrap();
    let two = Server::start(settings(b.path())).await.unwrap();
    assert_ne!(one.admin_addr(), two.admin_addr());
    assert_eq!(
        health(one.admin_addr()).await["components"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        health(two.admin_addr()).await["components"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

#[tokio::test]
async fn port_in_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = settings(dir.path());
    s.admin.listen = taken.local_addr().unwrap();
    let err = Server::start(s).await.unwrap_err();
    assert_eq!(err.code(), "PORT_IN_USE");
    assert!(err
        .to_string()
        .contains(&taken.local_addr().unwrap().to_string()));
}

#[tokio::test]
async fn an_audit_log_altered_while_stopped_is_reported_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    {
        let db = bramble::db::Database::open(&s.database()).unwrap();
        db.run_blocking(|conn| {
            use diesel::RunQueryDsl;
            for n in 0..3 {
                bramble::db::models::audit::append(
                    conn,
                    "admin",
                    "user.update",
                    &format!("user/{n}"),
                    None,
                    Some(serde_json::json!({"n": n})),
                )?;
            }
            // Someone with the database but not the audit key.
            diesel::sql_query("UPDATE audit_log SET actor = 'nobody' WHERE id = 2")
                .execute(conn)?;
            Ok(())
        })
        .unwrap();
    }
    let handle = Server::start(s).await.unwrap();
    let addr = handle.admin_addr();
    // The check runs as the server starts; wait for its outcome.
    let mut doc = health(addr).await;
    while doc.get("audit_alarm").is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        doc = health(addr).await;
    }
    assert_eq!(doc["audit_alarm"]["id"], 2, "{doc}");
    assert_eq!(doc["status"], "degraded", "{doc}");
    assert_eq!(handle.state().db.audit_alarm().map(|t| t.id.0), Some(2));
    handle.shutdown().await.unwrap();
}

/// Sends `bytes` to the console at `addr`, then nothing more; returns what
/// the server answered before it closed the connection.
async fn stall_after(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    // Guards against a hang only: the server must close the connection.
    let read = tokio::time::timeout(Duration::from_secs(120), tcp.read_to_end(&mut answer))
        .await
        .expect("the console kept a stalled connection open");
    if let Err(e) = read {
        // Closed with unread data: a reset is a close too.
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    answer
}

#[tokio::test]
async fn a_client_that_stalls_is_disconnected_by_the_console() {
    // Half a request header, then nothing: closed after
    // [admin] header_read_timeout_secs (the idle limit is far away).
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.admin.header_read_timeout_secs = 1;
    s.admin.idle_timeout_secs = 3600;
    let handle = Server::start(s).await.unwrap();
    let addr = handle.admin_addr();
    let answer = stall_after(addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ").await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
    // A keep-alive connection left unused after an answer goes the same way.
    let answer = stall_after(addr, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // Others are still served.
    assert_eq!(health(addr).await["version"], bramble::VERSION);
    handle.shutdown().await.unwrap();

    // A request body that stalls: closed after [admin] idle_timeout_secs
    // (the header limit is far away), with no answer.
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.admin.header_read_timeout_secs = 3600;
    s.admin.idle_timeout_secs = 1;
    let handle = Server::start(s).await.unwrap();
    let addr = handle.admin_addr();
    let answer = stall_after(
        addr,
        b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"login\":",
    )
    .await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(health(addr).await["version"], bramble::VERSION);
    handle.shutdown().await.unwrap();
}
