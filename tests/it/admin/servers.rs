//! The servers' side of the console: restarting a component, statistics,
//! the wireless connection and synchronization settings.

use super::*;

#[tokio::test]
async fn an_administrator_restarts_a_component_through_the_controller() {
    let f = Fixture::start_with(vec![std::sync::Arc::new(
        bramble::policy::PolicyService::default(),
    )])
    .await;
    let token = security_admin(&f).await;
    let t = Some(token.as_str());
    let status = |f: &Fixture| {
        f.handle
            .state()
            .status
            .get(bramble::controller::component::ComponentId::PolicyService)
            .unwrap()
    };
    let waited = std::time::Instant::now();
    while status(&f).state != bramble::controller::ComponentState::Running {
        assert!(waited.elapsed().as_secs() < 20, "{:?}", status(&f));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (code, doc, _) = f
        .call(Method::POST, "/api/components/nothing/restart", t, None)
        .await;
    assert_eq!(
        (code, doc["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("COMPONENT_UNKNOWN"))
    );

    let (code, doc, _) = f
        .call(
            Method::POST,
            "/api/components/policy_service/restart",
            t,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{doc}");
    assert_eq!(doc["name"], "Policy Service");
    let waited = std::time::Instant::now();
    loop {
        let now = status(&f);
        if now.restarts == 1 && now.state == bramble::controller::ComponentState::Running {
            assert!(now
                .detail
                .unwrap_or_default()
                .contains("restart requested by sec"));
            break;
        }
        assert!(waited.elapsed().as_secs() < 20, "not restarted: {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, audit, _) = f.call(Method::GET, "/api/audit", t, None).await;
    assert_eq!(audit["items"][0]["action"], "component.restart");
    assert_eq!(audit["items"][0]["target"], "component/policy_service");
    f.stop().await;
}

#[tokio::test]
async fn statistics_show_the_server_and_the_busiest_users() {
    use bramble::db::models::statistics::{Counter, Statistics};
    let f = Fixture::start().await;
    let token = f.session(f.administrator("ops", &["Server Only"]));
    let (quiet, busy) = f
        .db()
        .run_blocking(|conn| {
            let mut ids = Vec::new();
            for name in ["quiet", "busy"] {
                let user = NewUser {
                    display_name: name.into(),
                    email: format!("{name}@example.com"),
                    mailbox_login: name.into(),
                }
                .save(conn)?;
                ids.push(user.id);
            }
            Statistics::increment(conn, Some(ids[0]), Counter::Forwarded, 2)?;
            Statistics::increment(conn, Some(ids[1]), Counter::Forwarded, 5)?;
            Statistics::increment(conn, Some(ids[1]), Counter::Sent, 3)?;
            Statistics::increment(conn, None, Counter::Filtered, 4)?;
            Ok((ids[0], ids[1]))
        })
        .unwrap();
    let (status, doc, _) = f
        .call(Method::GET, "/api/statistics", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["global"]["forwarded"], 7);
    assert_eq!(doc["global"]["sent"], 3);
    assert_eq!(doc["global"]["filtered"], 4);
    let busiest: Vec<i64> = doc["busiest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_i64().unwrap())
        .collect();
    assert_eq!(busiest, [busy.0, quiet.0]);
    assert_eq!(doc["busiest"][0]["display_name"], "busy");
    assert_eq!(doc["busiest"][0]["forwarded"], 5);
    f.stop().await;
}

#[tokio::test]
async fn the_wireless_connection_is_set_without_ever_showing_the_key() {
    use bramble::db::models::srp_connection::SrpConnection;
    let f = Fixture::start().await;
    let servers = f.administrator("ops", &["Server Only"]);
    let token = f.session(servers);
    let t = Some(token.as_str());
    const KEY: &str = "very-secret-srp-key";

    let (status, doc, _) = f.call(Method::GET, "/api/wireless", t, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["configured"], false);
    assert_eq!(doc["key_set"], false);
    assert_eq!(doc["relay_port"], 3101);

    // A new SRP ID needs its key.
    let form = json!({"srp_id": "S80001234", "relay_host": "relay.example.net", "relay_port": 3101, "cal_licences": 25});
    let (status, doc, _) = f
        .call(Method::PUT, "/api/wireless", t, Some(form.clone()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("SRP ID S80001234"),
        "{doc}"
    );
    // The model's checks, in words.
    let mut bad = form.clone();
    bad["srp_key"] = json!(KEY);
    bad["relay_port"] = json!(0);
    let (status, doc, _) = f.call(Method::PUT, "/api/wireless", t, Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert!(
        doc["message"].as_str().unwrap().contains("not a TCP port"),
        "{doc}"
    );

    let mut with_key = form.clone();
    with_key["srp_key"] = json!(KEY);
    let (status, doc, _) = f
        .call(Method::PUT, "/api/wireless", t, Some(with_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["configured"], true);
    assert_eq!(doc["key_set"], true);
    assert_eq!(doc["srp_id"], "S80001234");
    assert_eq!(doc["cal_licences"], 25);
    assert_eq!(doc["licences_in_use"], 0);
    assert!(!doc.to_string().contains(KEY));

    // The key is kept when left out.
    let mut more = form.clone();
    more["cal_licences"] = json!(50);
    let (status, doc, _) = f.call(Method::PUT, "/api/wireless", t, Some(more)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["cal_licences"], 50);
    let stored = f
        .db()
        .run_blocking(|conn| SrpConnection::find_current(conn, f.db().sealer()))
        .unwrap()
        .unwrap();
    assert_eq!(stored.srp_key.expose(), KEY);
    assert_eq!(stored.cal_licences, 50);

    let admin = security_admin(&f).await;
    let (_, audit, _) = f
        .call(Method::GET, "/api/audit?per_page=10", Some(&admin), None)
        .await;
    assert!(!audit.to_string().contains(KEY), "no key in the audit log");
    let sets: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "wireless.set")
        .collect();
    assert_eq!(sets.len(), 2, "{audit}");
    assert_eq!(sets[0]["before"]["cal_licences"], 25);
    assert_eq!(sets[0]["after"]["cal_licences"], 50);
    assert_eq!(sets[0]["after"]["key_changed"], false);
    assert_eq!(sets[1]["before"], Value::Null);
    assert_eq!(sets[1]["actor"], "ops");
    f.stop().await;
}

#[tokio::test]
async fn synchronization_settings_are_changed_audited_and_users_states_listed() {
    use bramble::db::models::sync::{SyncItemError, SyncState};
    use bramble_proto::sync::OrganizerDatabase;
    let f = Fixture::start().await;
    let ops = f.administrator("ops", &["Server Only"]);
    let token = f.session(ops);
    let t = Some(token.as_str());
    f.db()
        .run_blocking(|conn| {
            let user = NewUser {
                display_name: "Sam Sync".into(),
                email: "sam@example.com".into(),
                mailbox_login: "sam".into(),
            }
            .save(conn)?;
            SyncState::start_slow_sync(conn, user.id, OrganizerDatabase::Contacts)?;
            SyncState::set_in_sync(conn, user.id, OrganizerDatabase::Contacts)?;
            SyncState::start_slow_sync(conn, user.id, OrganizerDatabase::Calendar)?;
            SyncState::set_error(
                conn,
                user.id,
                OrganizerDatabase::Calendar,
                "the organizer server refused the login",
            )?;
            SyncItemError::record(
                conn,
                user.id,
                OrganizerDatabase::Contacts,
                "/sam/contacts/broken.vcf",
                bramble::db::models::sync::ErrorSide::Server,
                "not a vCard",
            )?;
            Ok(())
        })
        .unwrap();

    let (status, doc, _) = f.call(Method::GET, "/api/sync", t, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["settings"].as_array().unwrap().len(), 4, "{doc}");
    assert_eq!(doc["settings"][0]["database"], "contacts");
    assert_eq!(doc["counts"]["users"], 1, "{doc}");
    assert_eq!(doc["counts"]["in_sync"], 1);
    assert_eq!(doc["counts"]["error"], 1);
    assert_eq!(doc["counts"]["item_errors"], 1);
    let sam = &doc["users"]["items"][0];
    assert_eq!(sam["email"], "sam@example.com");
    assert_eq!(sam["databases"][1]["state"], "error");
    assert!(sam["databases"][1]["error"]
        .as_str()
        .unwrap()
        .contains("refused the login"));
    assert_eq!(sam["item_errors"][0]["message"], "not a vCard");

    let (status, doc, _) = f
        .call(
            Method::PUT,
            "/api/sync/tasks",
            t,
            Some(json!({"enabled": false, "conflict": "device_wins"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["enabled"], false);
    assert_eq!(doc["conflict"], "device_wins");
    assert_eq!(doc["direction"], "bidirectional");
    let (status, doc, _) = f
        .call(
            Method::PUT,
            "/api/sync/tasks",
            t,
            Some(json!({"direction": "sideways"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert!(doc["message"].as_str().unwrap().contains("bidirectional"));
    let (status, doc, _) = f
        .call(
            Method::PUT,
            "/api/sync/notes",
            t,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");

    let admin = security_admin(&f).await;
    let (_, audit, _) = f
        .call(Method::GET, "/api/audit?per_page=5", Some(&admin), None)
        .await;
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "sync.setting", "{audit}");
    assert_eq!(entry["target"], "sync/tasks");
    assert_eq!(entry["actor"], "ops");
    assert_eq!(entry["before"]["enabled"], true);
    assert_eq!(entry["after"]["enabled"], false);
    f.stop().await;
}
