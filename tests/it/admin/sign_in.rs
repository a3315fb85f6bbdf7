//! Setting up the first administrator, signing in and out, the wait after
//! failed sign-ins, HTTPS with secure cookies, and the events stream.

use super::*;

#[tokio::test]
async fn first_run_sign_in_and_out() {
    let f = Fixture::start().await;
    let (status, doc, _) = f.call(Method::GET, "/api/setup", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["needs_first_administrator"], true);

    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/setup",
            None,
            Some(json!({"login": "first", "display_name": "First Admin", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no setup code: {doc}");
    assert_eq!(doc["code"], "SETUP_CODE_WRONG");
    let code = f.handle.state().setup.code().unwrap();
    let written = std::fs::read_to_string(f.handle.state().setup.path()).unwrap();
    assert_eq!(written.trim(), code, "the file holds the code");
    let (status, doc, headers) = f
        .call(
            Method::POST,
            "/api/setup",
            None,
            Some(json!({"login": "first", "display_name": "First Admin", "password": "correct horse", "setup_code": code.to_lowercase()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(
        !f.handle.state().setup.path().exists(),
        "the spent code's file is removed"
    );
    assert_eq!(doc["roles"], json!(["Security Administrator"]));
    assert!(
        doc.get("token").is_none(),
        "no token in the body unless asked"
    );
    let cookie = headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");

    // Only once.
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/setup",
            None,
            Some(json!({"login": "second", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(doc["code"], "FIRST_ADMINISTRATOR_EXISTS");
    let (_, doc, _) = f.call(Method::GET, "/api/setup", None, None).await;
    assert_eq!(doc["needs_first_administrator"], false);

    // The cookie is a session.
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("bramble_session=")
        .unwrap()
        .to_owned();
    let request = Request::get("/api/session")
        .header(
            header::COOKIE,
            format!("theme=dark; bramble_session={token}"),
        )
        .body(Body::empty())
        .unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Sign in: wrong password and unknown login read the same.
    for (login, password) in [("first", "wrong horse"), ("nobody", "correct horse")] {
        let (status, doc, _) = f
            .call(
                Method::POST,
                "/api/session",
                None,
                Some(json!({"login": login, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(doc["code"], "SIGN_IN_FAILED");
    }
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/session",
            None,
            Some(json!({"login": "FIRST", "password": "correct horse", "bearer": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let bearer = doc["token"].as_str().unwrap().to_owned();
    assert_eq!(
        doc["permissions"].as_array().unwrap().len(),
        Permission::ALL.len()
    );
    let (status, doc, _) = f
        .call(Method::GET, "/api/session", Some(&bearer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["login"], "first");

    let (status, _, headers) = f
        .call(Method::DELETE, "/api/session", Some(&bearer), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, doc, _) = f
        .call(Method::GET, "/api/session", Some(&bearer), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(doc["code"], "SESSION_UNKNOWN");

    // A disabled account's sessions end.
    let admin = f
        .db()
        .run_blocking(|conn| Administrator::find_by_login(conn, "first"))
        .unwrap()
        .unwrap();
    let token = f.session(admin.id);
    f.db()
        .run_blocking(|conn| {
            let mut a = admin.clone();
            a.disabled = true;
            a.save(conn)
        })
        .unwrap();
    let (status, doc, _) = f
        .call(Method::GET, "/api/session", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(doc["code"], "ACCOUNT_DISABLED");
    f.stop().await;
}

/// A TLS connection to the console at `addr`, trusting only `ca` and
/// checking the name `localhost`.
async fn tls_to_localhost(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
) -> tokio_openssl::SslStream<tokio::net::TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_ca_file(ca).unwrap();
    let ssl = connector
        .build()
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut stream).connect().await.unwrap();
    stream
}

/// Sends `bytes` over TLS, then nothing more; what came back before the
/// server closed the connection.
async fn https_stall(addr: std::net::SocketAddr, ca: &std::path::Path, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tls_to_localhost(addr, ca).await;
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    // Guards against a hang only. The server drops the connection without
    // a TLS close, which the client may report as an error: closed either way.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the console kept a stalled TLS connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

/// One request over TLS to `localhost` (see [`tls_to_localhost`]);
/// returns (status, Set-Cookie, body).
async fn https_request(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    request: Request<String>,
) -> (StatusCode, Option<String>, String) {
    use http_body_util::BodyExt;
    let stream = tls_to_localhost(addr, ca).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, cookie, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_with_a_generated_certificate_and_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().to_path_buf();
    settings.router.lan_listen = None;
    // Loopback, so TLS has to be asked for; any other address gets it unasked.
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    assert!(!settings.admin.tls_enabled());
    settings.admin.listen = "192.0.2.10:3180".parse().unwrap();
    assert!(settings.admin.tls_enabled());
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.admin.tls = Some(true);
    settings.admin.header_read_timeout_secs = 1;
    settings.admin.idle_timeout_secs = 3600;
    let (cert, key) = bramble::admin::tls::generated_paths(&settings.console());
    let listeners = Listeners {
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        lan: None,
    };
    let handle = Server::start_with(settings.clone(), listeners, Vec::new())
        .await
        .unwrap();
    let addr = handle.admin_addr();
    assert!(handle.admin_url().starts_with("https://"));
    assert!(cert.exists() && key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
    }

    let get = Request::get("/health")
        .header(header::HOST, "localhost")
        .body(String::new())
        .unwrap();
    let (status, _, body) = https_request(addr, &cert, get).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"components\""));

    let code = handle.state().setup.code().unwrap();
    let setup = Request::post("/api/setup")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(
            json!({"login": "sa", "password": "long enough password", "setup_code": code})
                .to_string(),
        )
        .unwrap();
    let (status, cookie, body) = https_request(addr, &cert, setup).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(cookie.unwrap().contains("; Secure"));

    // Plain HTTP gets no HTTP answer.
    let (status, _) = plain_get(addr).await;
    assert_eq!(status, None);

    // Half a header over TLS, then nothing: the connection is closed after
    // [admin] header_read_timeout_secs, as over plain HTTP.
    let answer = https_stall(
        addr,
        &cert,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Half: ",
    )
    .await;
    assert!(!answer.contains("200 OK"), "{answer}");
    handle.shutdown().await.unwrap();

    // The next start reuses the certificate.
    let before = std::fs::read(&cert).unwrap();
    let listeners = Listeners {
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        lan: None,
    };
    let handle = Server::start_with(settings.clone(), listeners, Vec::new())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    handle.shutdown().await.unwrap();

    // Half a configuration is refused at start.
    let mut half = settings;
    half.admin.tls_certificate = Some(cert);
    let listeners = Listeners {
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        lan: None,
    };
    let err = Server::start_with(half, listeners, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ADMIN_TLS_FAILED");
    assert!(err.to_string().contains("tls_key"), "{err}");
}

/// A plain-text HTTP GET; the status line's code, if an HTTP answer came.
async fn plain_get(addr: std::net::SocketAddr) -> (Option<u16>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, text)
}

#[tokio::test]
async fn events_stream_the_status_at_once() {
    use http_body_util::BodyExt;
    let f = Fixture::start().await;
    let admin = f.administrator("sa", &["Security Administrator"]);
    let token = f.session(admin);
    f.db()
        .run_blocking(|conn| {
            bramble::db::models::audit::append(conn, "sa", "test.change", "x/1", None, None)?;
            Ok(())
        })
        .unwrap();
    let request = Request::get("/api/events")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: status\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let status: Value = serde_json::from_str(data).unwrap();
    assert_eq!(status["audit_head"], 1);
    assert!(status["health"]["components"].is_array());
    drop(body);
    f.stop().await;
}

#[tokio::test]
async fn repeated_failed_sign_ins_make_the_login_wait() {
    let f = Fixture::start().await;
    f.administrator("target", &["Junior Helpdesk"]);
    let attempt = |password: &'static str| {
        f.call(
            Method::POST,
            "/api/session",
            None,
            Some(json!({"login": "target", "password": password})),
        )
    };
    // In-process calls carry no address: only the login counts here.
    for _ in 0..bramble::admin::throttle::FREE_LOGIN_FAILURES {
        let (status, doc, _) = attempt("wrong guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{doc}");
    }
    // Now even the right password waits.
    let (status, doc, _) = attempt("long enough password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(doc["code"], "TOO_MANY_SIGN_IN_ATTEMPTS");
    assert!(doc["message"].as_str().unwrap().contains("seconds"));
    // Other logins are not affected.
    f.administrator("bystander", &[]);
    let (status, _, _) = f
        .call(
            Method::POST,
            "/api/session",
            None,
            Some(json!({"login": "bystander", "password": "long enough password"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    f.stop().await;
}

/// A client of the console's real listener whose requests leave from
/// `source` (any 127.0.0.0/8 address: each is another client to the server).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().ok())
        .build()
        .unwrap()
}

async fn sign_in_from(
    client: &reqwest::Client,
    base: &str,
    login: &str,
    password: &str,
) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/session"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json!({"login": login, "password": password, "bearer": true}).to_string())
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Attack: 200 parallel guesses at one administrator's password from one
/// address, then strangers from twenty addresses trying to lock that
/// administrator out, then 40 sign-ins from 40 addresses to starve the
/// server, with the audit log watched for being flooded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sign_in_flood_gets_a_handful_of_checks_locks_out_no_one_and_starves_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let f = Fixture::start_custom(Vec::new(), |s| {
        s.admin.sign_in_audit_secs = 1;
        s.admin.sign_in_queue = 500;
    })
    .await;
    f.administrator("target", &["Security Administrator"]);
    let base = f.handle.admin_url();
    let gate = f.handle.state().sign_ins.clone();

    // The administrator signs in from their own workstation once.
    let home = client_from("127.0.0.1");
    let (status, who) = sign_in_from(&home, &base, "target", "long enough password").await;
    assert_eq!(status, 200, "{who}");
    let token = who["token"].as_str().unwrap().to_owned();
    let checks_before = gate.checks_run();

    // 200 parallel guesses from one address: a handful are checked.
    let attacker = client_from("127.0.0.2");
    let guesses = futures::future::join_all((0..200).map(|i| {
        sign_in_from(
            &attacker,
            &base,
            "target",
            if i % 2 == 0 { "guess" } else { "another guess" },
        )
    }))
    .await;
    let wrong = guesses.iter().filter(|(s, _)| *s == 401).count();
    let throttled = guesses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(wrong + throttled, 200, "only 401 and 429: {guesses:?}");
    assert!(
        wrong <= bramble::admin::throttle::FREE_FAILURES as usize,
        "{wrong} passwords were checked"
    );
    assert!(
        gate.checks_run() - checks_before <= u64::from(bramble::admin::throttle::FREE_FAILURES)
    );
    let (status, doc) = sign_in_from(&attacker, &base, "target", "long enough password").await;
    assert_eq!(
        status, 429,
        "the address waits, even with the right password: {doc}"
    );

    // Strangers at twenty more addresses make the login itself wait...
    for i in 1..=20 {
        let stranger = client_from(&format!("127.0.1.{i}"));
        for _ in 0..3 {
            sign_in_from(&stranger, &base, "target", "guess").await;
        }
    }
    let (status, doc) = sign_in_from(
        &client_from("127.0.1.200"),
        &base,
        "target",
        "long enough password",
    )
    .await;
    assert_eq!(status, 429, "{doc}");
    assert!(
        doc["message"].as_str().unwrap().contains("for this login"),
        "{doc}"
    );
    // ...but not at the address the administrator signs in from.
    let (status, doc) = sign_in_from(&home, &base, "target", "long enough password").await;
    assert_eq!(status, 200, "the administrator is not locked out: {doc}");

    // 40 sign-ins from 40 addresses keep the password checker busy; a
    // signed-in administrator's request that reads the database is
    // answered while they are still being checked.
    let answered = Arc::new(AtomicUsize::new(0));
    let flood_start = gate.checks_run();
    let flood: Vec<_> = (1..=40)
        .map(|i| {
            let (answered, base) = (answered.clone(), base.clone());
            tokio::spawn(async move {
                let client = client_from(&format!("127.0.2.{i}"));
                let outcome = sign_in_from(&client, &base, &format!("nobody{i}"), "guess").await;
                answered.fetch_add(1, Ordering::SeqCst);
                outcome
            })
        })
        .collect();
    crate::fixture::wait_until(
        std::time::Duration::from_secs(60),
        "the flood's passwords are being checked",
        || {
            let gate = gate.clone();
            async move { gate.checks_run() > flood_start + 2 }
        },
    )
    .await;
    let users = home
        .get(format!("{base}/api/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let answered_meanwhile = answered.load(Ordering::SeqCst);
    assert_eq!(users.status().as_u16(), 200);
    assert!(
        answered_meanwhile < 40,
        "the database was read while the flood was still being checked ({answered_meanwhile} of 40 answered)"
    );
    let (_, health) = answer(home.get(format!("{base}/health")).send().await.unwrap()).await;
    assert_eq!(health["database"]["status"], "ok", "{health}");
    for outcome in futures::future::join_all(flood).await {
        let (status, _) = outcome.unwrap();
        assert!(status == 401 || status == 503, "{status}");
    }

    // The audit log holds the failures counted, a few lines per login and
    // address, not one per attempt.
    let audited = || {
        let db = f.db().clone();
        async move {
            db.run(|conn| {
                let (entries, _) = bramble::db::models::audit::find_page(conn, 0, 10_000)?;
                Ok(entries
                    .into_iter()
                    .filter(|e| e.action == "session.sign_in_failed")
                    .filter_map(|e| e.after)
                    .collect::<Vec<Value>>())
            })
            .await
            .unwrap()
        }
    };
    let from_attacker = |entries: &[Value]| -> (usize, u64) {
        let lines: Vec<&Value> = entries
            .iter()
            .filter(|e| e["login"] == "target" && e["address"] == "127.0.0.2")
            .collect();
        let attempts = lines
            .iter()
            .map(|e| {
                e["wrong_passwords"].as_u64().unwrap() + e["refused_unchecked"].as_u64().unwrap()
            })
            .sum();
        (lines.len(), attempts)
    };
    crate::fixture::wait_until(
        std::time::Duration::from_secs(60),
        "the attacker's 201 attempts are in the audit log",
        || async { from_attacker(&audited().await).1 == 201 },
    )
    .await;
    let entries = audited().await;
    let (lines, _) = from_attacker(&entries);
    assert!(lines <= 20, "201 attempts were written as {lines} lines");
    assert!(
        entries.len() < 201 + 60 + 40,
        "{} audit lines for 302 failed sign-ins",
        entries.len()
    );
    f.stop().await;
}

/// Attack: a page on another site (DNS rebinding gives it the console's
/// address under its own name) or a foreign origin.
#[tokio::test]
async fn a_foreign_host_or_origin_is_refused() {
    let f = Fixture::start_custom(Vec::new(), |s| {
        s.admin.server_names = vec!["besadmin.example.com".into()];
    })
    .await;
    let base = f.handle.admin_url();
    let port = f.handle.admin_addr().port();
    let client = client_from("127.0.0.1");
    let get = |host: String, origin: Option<String>| {
        let mut request = client
            .get(format!("{base}/api/setup"))
            .header(reqwest::header::HOST, host);
        if let Some(origin) = origin {
            request = request.header(reqwest::header::ORIGIN, origin);
        }
        async move { answer(request.send().await.unwrap()).await }
    };
    let (status, doc) = get("evil.example".into(), None).await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (421, Some("HOST_NOT_ALLOWED")),
        "{doc}"
    );
    let (status, doc) = get(
        format!("evil.example:{port}"),
        Some(format!("http://evil.example:{port}")),
    )
    .await;
    assert_eq!(status, 421, "{doc}");
    let (status, doc) = get(
        format!("127.0.0.1:{port}"),
        Some("http://evil.example".into()),
    )
    .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (403, Some("ORIGIN_NOT_ALLOWED")),
        "{doc}"
    );
    let (status, _) = get(format!("127.0.0.1:{port}"), Some("null".into())).await;
    assert_eq!(status, 403);
    // The console's own names and origins, the desktop window, and clients
    // that send no Origin.
    for (host, origin) in [
        (format!("127.0.0.1:{port}"), None),
        (
            format!("localhost:{port}"),
            Some(format!("http://localhost:{port}")),
        ),
        (format!("BESADMIN.example.com:{port}"), None),
        ("[::1]".to_owned(), None),
        (
            format!("127.0.0.1:{port}"),
            Some("tauri://localhost".to_owned()),
        ),
    ] {
        let (status, doc) = get(host.clone(), origin.clone()).await;
        assert_eq!(status, 200, "{host} {origin:?}: {doc}");
    }
    let same_origin = client
        .get(format!("{base}/api/setup"))
        .header(reqwest::header::ORIGIN, base.trim_end_matches('/'))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status().as_u16(), 200);
    f.stop().await;
}
