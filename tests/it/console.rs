//! The Administration Service as the `bramble` executable runs it.

use crate::fixture::{bramble, text};

/// `bramble bench console` ends with one JSON line of its figures, found
/// over HTTP against the real server core.
#[test]
fn bench_console_prints_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = bramble(
        dir.path(),
        &["bench", "console", "--users", "500", "--requests", "12"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "only the JSON line on standard output: {stdout}"
    );
    let figures: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(figures["users"], 500);
    assert_eq!(figures["requests"], 12);
    for key in ["p50_ms", "p99_ms", "limit_ms"] {
        assert!(figures[key].as_f64().unwrap() > 0.0, "{key}: {figures}");
    }
    assert!(
        figures["matches_p50"].as_f64().unwrap() > 0.0,
        "the searches found users: {figures}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("500 users written"));
}

/// "Sync now" from the console against a real slapd: the answer comes at
/// once, the progress is polled to the end, the run is recorded with its
/// figures and the people become users; a refused bind is reported with
/// its code and the setting to fix; only `servers.write` may start one.
#[tokio::test]
async fn a_directory_sync_started_from_the_console_reports_progress_and_errors() {
    use bramble::admin::auth;
    use bramble::config::Settings;
    use bramble::db::models::administrator::{Administrator, NewAdministrator, Role};
    use bramble::db::models::session::Session;
    use bramble::mailstore::DirectorySettings;
    use bramble::server::{Listeners, Server};
    use bramble_testbed::slapd::{Slapd, SUFFIX};
    use serde_json::{json, Value};

    use crate::fixture::http_request;

    let mut ldif =
        format!("dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n");
    for i in 1..=30 {
        ldif.push_str(&format!(
            "dn: uid=staff{i},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: staff{i}\ncn: Staff {i}\nsn: {i}\nmail: staff{i}@example.com\n\n"
        ));
    }
    let slapd = Slapd::start(&ldif, "").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().to_path_buf();
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.router.lan_listen = None;
    let corp = DirectorySettings {
        name: "corp".into(),
        url: slapd.url(),
        bind_dn: format!("cn=admin,{SUFFIX}"),
        bind_password: slapd.root_password().to_owned(),
        base_dn: SUFFIX.into(),
        page_size: 7,
        timeout_secs: 5,
        ..DirectorySettings::default()
    };
    let wrong = DirectorySettings {
        name: "wrong".into(),
        bind_password: "not the password".into(),
        ..corp.clone()
    };
    settings.directories = vec![corp, wrong];
    let listeners = Listeners::bind(&settings).await.unwrap();
    // No components: only the console starts syncs here.
    let server = Server::start_with(settings, listeners, Vec::new())
        .await
        .unwrap();
    let addr = server.admin_addr();
    let lifetime = auth::lifetime(&server.state().settings);
    let session = |login: &str, role: &str| {
        let (login, role) = (login.to_owned(), role.to_owned());
        server
            .state()
            .db
            .run_blocking(move |conn| {
                let admin = NewAdministrator {
                    login: login.clone(),
                    display_name: login,
                    password: "long enough password".into(),
                }
                .save(conn)?;
                let role = Role::find_by_name(conn, &role)?.unwrap();
                Administrator::add_role(conn, admin.id, role.id)?;
                Session::create(conn, admin.id, lifetime)
            })
            .unwrap()
            .0
    };
    let enterprise = session("ent", "Enterprise Administrator");
    let helpdesk = session("help", "Senior Helpdesk");
    let call = |method: &'static str, path: String, token: String, body: Option<Value>| async move {
        let (status, text) = http_request(addr, method, &path, Some(&token), body.as_ref()).await;
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };

    let (status, list) = call("GET", "/api/directories".into(), enterprise.clone(), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["name"], "corp");
    assert_eq!(list[0]["runs"], json!([]));
    assert!(
        !list.to_string().contains(slapd.root_password()),
        "no password shown"
    );

    let (status, doc) = call(
        "POST",
        "/api/directories/corp/sync".into(),
        helpdesk,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );

    let (status, started) = call(
        "POST",
        "/api/directories/corp/sync".into(),
        enterprise.clone(),
        Some(json!({"full": true})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["sync"]["running"], true);
    assert_eq!(started["sync"]["started_by"], "ent");
    let mut percents = vec![started["sync"]["percent"].as_u64().unwrap()];
    let waited = std::time::Instant::now();
    let done = loop {
        let (_, now) = call(
            "GET",
            "/api/directories/corp".into(),
            enterprise.clone(),
            None,
        )
        .await;
        percents.push(now["sync"]["percent"].as_u64().unwrap());
        if now["sync"]["running"] == false {
            break now;
        }
        assert!(
            waited.elapsed().as_secs() < 30,
            "the sync did not end: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {percents:?}"
    );
    assert_eq!(done["sync"]["phase"], "done");
    assert_eq!(done["sync"]["percent"], 100);
    assert_eq!(done["sync"]["entries_read"], 30);
    assert_eq!(done["sync"]["error"], Value::Null);
    let run = &done["runs"][0];
    assert_eq!(
        (run["kind"].as_str(), run["outcome"].as_str()),
        (Some("full"), Some("succeeded"))
    );
    assert_eq!(
        (run["entries_read"].as_i64(), run["created"].as_i64()),
        (Some(30), Some(30))
    );
    let (_, users) = call(
        "GET",
        "/api/users?search=staff2".into(),
        enterprise.clone(),
        None,
    )
    .await;
    assert_eq!(users["total"], 11, "staff2 and staff20..29: {users}");

    let (status, _) = call(
        "POST",
        "/api/directories/wrong/sync".into(),
        enterprise.clone(),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 202);
    let waited = std::time::Instant::now();
    let failed = loop {
        let (_, now) = call(
            "GET",
            "/api/directories/wrong".into(),
            enterprise.clone(),
            None,
        )
        .await;
        if now["sync"]["running"] == false {
            break now;
        }
        assert!(
            waited.elapsed().as_secs() < 30,
            "the sync did not end: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(failed["sync"]["phase"], "failed");
    assert_eq!(failed["sync"]["error"]["code"], "DIRECTORY_BIND_FAILED");
    let message = failed["sync"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("check bind_dn and bind_password of directory wrong"),
        "{message}"
    );
    assert_eq!(failed["runs"][0]["outcome"], "failed", "{failed}");

    let (status, doc) = call(
        "GET",
        "/api/directories/nowhere".into(),
        enterprise.clone(),
        None,
    )
    .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (404, Some("DIRECTORY_UNKNOWN"))
    );
    let (_, audit) = call("GET", "/api/audit".into(), enterprise, None).await;
    let syncs = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "directory.sync")
        .count();
    assert_eq!(syncs, 2);
    server.shutdown().await.unwrap();
}
