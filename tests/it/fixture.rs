//! Shared helpers: temporary data folders, the `bramble` binary, a
//! minimal HTTP GET for talking to the Administration Service, a reference
//! device plugged in on the LAN path, and [`wait_until`] for tests that
//! wait on a condition rather than for a fixed time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `bramble` executable built for these tests.
pub fn bramble_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bramble"))
}

/// Runs `bramble ARGS` with its data folder in `data_dir` and no settings
/// file from the environment.
pub fn bramble(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(bramble_bin())
        .args(args)
        .env_remove("BRAMBLE_CONFIG")
        .env("BRAMBLE_DATA_DIR", data_dir)
        .env("BRAMBLE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("BRAMBLE_ROUTER__LAN_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run bramble")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `GET path` over HTTP/1.1; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, None).await
}

/// `METHOD path` over HTTP/1.1 with an optional bearer token and JSON
/// body; returns (status, body).
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// SHA-256 of a file, to prove a command left it untouched.
pub fn digest(path: &Path) -> Vec<u8> {
    openssl::sha::sha256(&std::fs::read(path).expect("read file")).to_vec()
}

/// Connects `device` to `server` on the LAN path and waits (at most
/// `patience`) until the server's Router has it there.
pub async fn plug_in(
    server: &bramble::ServerHandle,
    device: &bramble_device::Device,
    patience: std::time::Duration,
) -> bramble_device::Connection {
    let pin = device.pin();
    let conn = device
        .connect(bramble_device::Path::Lan(server.lan_addr().unwrap()))
        .await
        .unwrap();
    tokio::time::timeout(patience, async {
        while !server.dispatcher().router().lan_devices().contains(&pin) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server did not see the device on the LAN path");
    conn
}

/// Polls `condition` every 20 ms until it holds; fails the test, naming
/// `what` was awaited, once `patience` has passed.
pub async fn wait_until<F, Fut>(patience: std::time::Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + patience;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up after {patience:?} waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
