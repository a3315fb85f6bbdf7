//! Roles and the last Security Administrator.

use super::*;

#[tokio::test]
async fn roles_and_the_last_security_administrator() {
    let f = Fixture::start().await;
    let admin = f.administrator("sa", &["Security Administrator"]);
    let token = f.session(admin);
    let t = Some(token.as_str());

    let (status, doc, _) = f
        .call(
            Method::PUT,
            &format!("/api/administrators/{}", admin.0),
            t,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("no enabled Security Administrator"));

    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/roles",
            t,
            Some(json!({"name": "Auditor", "permissions": ["audit.read", "users.*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let auditor_role = doc["id"].as_i64().unwrap();
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/roles",
            t,
            Some(json!({"name": "Bad", "permissions": ["audit.write"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["code"], "UNKNOWN_PERMISSION");

    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/administrators",
            t,
            Some(json!({"login": "aud", "password": "long enough password", "role_ids": [auditor_role]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(doc["roles"], json!(["Auditor"]));
    let aud = AdministratorId(doc["id"].as_i64().unwrap());
    let aud_token = f.session(aud);
    let (status, doc, _) = f
        .call(Method::GET, "/api/session", Some(&aud_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("users.write")));
    assert!(!doc["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("groups.read")));

    // Built-in roles stay.
    let builtin: RoleId = f
        .db()
        .run_blocking(|conn| Ok(Role::find_by_name(conn, "Junior Helpdesk")?.unwrap().id))
        .unwrap();
    let (status, _, _) = f
        .call(
            Method::DELETE,
            &format!("/api/roles/{}", builtin.0),
            t,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A second Security Administrator through a group: now the first may go.
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/administrator-groups",
            t,
            Some(json!({"name": "Security", "role_ids": [1], "administrator_ids": [aud.0]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    let (status, doc, _) = f
        .call(
            Method::PUT,
            &format!("/api/administrators/{}", admin.0),
            t,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let (status, _, _) = f.call(Method::GET, "/api/session", t, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "disabling ends sessions");
    f.stop().await;
}
