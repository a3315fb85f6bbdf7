//! The Administration Service's API against a real server core and a real
//! database, through the same router `bramble serve` runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::auth::{self, Access};
use super::endpoints;
use super::permission::Permission::{self, *};
use crate::config::Settings;
use crate::db::ids::{AdministratorId, RoleId};
use crate::db::models::administrator::{Administrator, NewAdministrator, Role};
use crate::db::models::administrator_group::AdministratorGroup;
use crate::db::models::group::Group;
use crate::db::models::session::Session;
use crate::db::models::user::NewUser;
use crate::server::{Listeners, Server, ServerHandle};

struct Fixture {
    _dir: tempfile::TempDir,
    handle: ServerHandle,
    app: Router,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load_from(None, &[]).unwrap().settings;
        settings.data_dir = dir.path().to_path_buf();
        settings.admin.listen = "127.0.0.1:0".parse().unwrap();
        settings.router.lan_listen = None;
        let listeners = Listeners {
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            lan: None,
        };
        let handle = Server::start_with(settings, listeners, Vec::new())
            .await
            .unwrap();
        let app = super::router(handle.state().clone());
        Fixture {
            _dir: dir,
            handle,
            app,
        }
    }

    fn db(&self) -> &crate::db::Database {
        &self.handle.state().db
    }

    /// An administrator holding exactly `roles` (by name).
    fn administrator(&self, login: &str, roles: &[&str]) -> AdministratorId {
        self.db()
            .run_blocking(|conn| {
                let admin = NewAdministrator {
                    login: login.into(),
                    display_name: login.into(),
                    password: "long enough password".into(),
                }
                .save(conn)?;
                for name in roles {
                    let role = Role::find_by_name(conn, name)?.unwrap();
                    Administrator::add_role(conn, admin.id, role.id)?;
                }
                Ok(admin.id)
            })
            .unwrap()
    }

    fn session(&self, admin: AdministratorId) -> String {
        let lifetime = auth::lifetime(&self.handle.state().settings);
        self.db()
            .run_blocking(|conn| Session::create(conn, admin, lifetime))
            .unwrap()
            .0
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, axum::http::HeaderMap) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let is_stream = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if is_stream {
            return (status, Value::Null, headers);
        }
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value, headers)
    }

    async fn stop(self) {
        self.handle.shutdown().await.unwrap();
    }
}

/// What each built-in BES role may do, written out independently of the
/// roles' stored grants so that a change to either shows here.
fn bes_role_permissions(role: &str) -> BTreeSet<Permission> {
    let all: BTreeSet<Permission> = Permission::ALL.iter().copied().collect();
    match role {
        "Security Administrator" => all,
        "Enterprise Administrator" => all
            .into_iter()
            .filter(|p| *p != AdministratorsWrite)
            .collect(),
        "Senior Helpdesk" => [
            UsersRead,
            UsersWrite,
            UsersActivation,
            DevicesRead,
            DevicesWrite,
            GroupsRead,
            PoliciesRead,
        ]
        .into(),
        "Junior Helpdesk" => [UsersRead, UsersActivation, DevicesRead].into(),
        "Server Only" => [ServersRead, ServersWrite].into(),
        "User Only" => [
            UsersRead,
            UsersWrite,
            UsersActivation,
            DevicesRead,
            DevicesWrite,
        ]
        .into(),
        other => panic!("no expectation for role {other}"),
    }
}

/// What each endpoint should require, kept apart from the router's list:
/// an endpoint added, removed or given another permission there fails
/// [`every_role_against_every_endpoint`] until this table agrees.
fn expected_access(method: &Method, path: &str) -> Access {
    use Access::{Permission as Needs, Public, Session};
    match (method.as_str(), path) {
        ("GET" | "POST", "/api/setup")
        | ("POST", "/api/session")
        | ("GET", "/api/openapi.json") => Public,
        ("GET" | "DELETE", "/api/session") | ("GET", "/api/permissions" | "/api/events") => Session,
        ("GET", "/api/users/{id}/devices") => Needs(DevicesRead),
        ("GET", p) if p.starts_with("/api/devices") || p.starts_with("/api/messages") => {
            Needs(DevicesRead)
        }
        ("GET", p) if p.starts_with("/api/users") => Needs(UsersRead),
        (_, p) if p.starts_with("/api/users") => Needs(UsersWrite),
        ("GET", p) if p.starts_with("/api/groups") => Needs(GroupsRead),
        (_, p) if p.starts_with("/api/groups") => Needs(GroupsWrite),
        ("GET", "/api/administrators" | "/api/roles" | "/api/administrator-groups") => {
            Needs(AdministratorsRead)
        }
        (_, p)
            if p.starts_with("/api/administrators")
                || p.starts_with("/api/roles")
                || p.starts_with("/api/administrator-groups") =>
        {
            Needs(AdministratorsWrite)
        }
        ("GET", p) if p.starts_with("/api/audit") => Needs(AuditRead),
        _ => panic!("no expected access for {method} {path}: add it to expected_access"),
    }
}

#[tokio::test]
async fn every_role_against_every_endpoint() {
    let f = Fixture::start().await;
    // Who calls: each built-in role alone, a custom role, a union through
    // an administrator group, and an administrator with no role at all.
    let mut callers: Vec<(String, AdministratorId, BTreeSet<Permission>)> = Vec::new();
    for role in [
        "Security Administrator",
        "Enterprise Administrator",
        "Senior Helpdesk",
        "Junior Helpdesk",
        "Server Only",
        "User Only",
    ] {
        let login = role.to_lowercase().replace(' ', "-");
        callers.push((
            role.to_owned(),
            f.administrator(&login, &[role]),
            bes_role_permissions(role),
        ));
    }
    let auditor = f.administrator("auditor", &[]);
    let night_shift = f.administrator("night-shift", &["Junior Helpdesk"]);
    let nobody = f.administrator("no-role", &[]);
    let (user, throwaway_role, throwaway_group) = f
        .db()
        .run_blocking(|conn| {
            let auditing = Role::create(conn, "Auditor", &["audit.read"])?;
            Administrator::add_role(conn, auditor, auditing.id)?;
            let servers = Role::find_by_name(conn, "Server Only")?.unwrap();
            let ops = AdministratorGroup::create(conn, "Operations", "")?;
            AdministratorGroup::set_roles(conn, ops.id, &[servers.id])?;
            AdministratorGroup::set_members(conn, ops.id, &[night_shift])?;
            let user = NewUser {
                display_name: "Alice Example".into(),
                email: "alice@example.com".into(),
                mailbox_login: "alice".into(),
            }
            .save(conn)?;
            let group = Group::create(conn, "Sales", "")?;
            Group::add_member(conn, group.id, user.id)?;
            let throwaway_role = Role::create(conn, "Throwaway", &["users.read"])?;
            let throwaway_group = AdministratorGroup::create(conn, "Throwaway", "")?;
            Ok(((user.id, group.id), throwaway_role.id, throwaway_group.id))
        })
        .unwrap();
    callers.push(("custom role Auditor".into(), auditor, [AuditRead].into()));
    let mut union = bes_role_permissions("Junior Helpdesk");
    union.extend(bes_role_permissions("Server Only"));
    callers.push((
        "Junior Helpdesk + group with Server Only".into(),
        night_shift,
        union,
    ));
    callers.push(("no role".into(), nobody, BTreeSet::new()));

    let concrete = |path: &str| -> String {
        let id = if path.starts_with("/api/users") {
            user.0 .0
        } else if path.starts_with("/api/groups") {
            user.1 .0
        } else if path.starts_with("/api/administrators/") {
            nobody.0
        } else if path.starts_with("/api/roles/") {
            throwaway_role.0
        } else {
            throwaway_group.0
        };
        path.replace("{id}", &id.to_string())
            .replace("{user_id}", &user.0 .0.to_string())
            .replace("{ref_id}", "00000000000000AB")
    };

    let endpoints = endpoints::all();
    let mut seen = BTreeSet::new();
    for endpoint in &endpoints {
        assert!(
            seen.insert((endpoint.method.to_string(), endpoint.path)),
            "{endpoint:?} is listed twice"
        );
        assert_eq!(
            endpoint.access,
            expected_access(&endpoint.method, endpoint.path),
            "{endpoint:?} declares another access than expected"
        );
        let path = concrete(endpoint.path);
        let body = matches!(endpoint.method, Method::POST | Method::PUT).then(|| json!({}));

        let (status, doc, _) = f
            .call(endpoint.method.clone(), &path, None, body.clone())
            .await;
        if endpoint.access == Access::Public {
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{endpoint:?} without a session: {status} {doc}"
            );
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{endpoint:?}: {doc}");
            assert_eq!(doc["code"], "SESSION_REQUIRED", "{endpoint:?}");
        }

        for (who, admin, granted) in &callers {
            let token = f.session(*admin);
            let (status, doc, _) = f
                .call(endpoint.method.clone(), &path, Some(&token), body.clone())
                .await;
            let allowed = match endpoint.access {
                Access::Public | Access::Session => true,
                Access::Permission(p) => granted.contains(&p),
            };
            if allowed {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{who} should reach {endpoint:?} but got {status}: {doc}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{who} should be refused {endpoint:?}: {doc}"
                );
                assert_eq!(doc["code"], "PERMISSION_DENIED");
                let Access::Permission(p) = endpoint.access else {
                    unreachable!()
                };
                assert!(
                    doc["message"].as_str().unwrap().contains(p.as_str()),
                    "{doc}"
                );
            }
            if status.is_client_error() || status.is_server_error() {
                assert!(
                    doc["code"].is_string() && doc["message"].is_string(),
                    "{who} {endpoint:?}: {status} without {{code, message}}: {doc}"
                );
            }
            assert!(
                !status.is_server_error(),
                "{who} {endpoint:?}: {status} {doc}"
            );
        }
    }
    f.stop().await;
}

#[tokio::test]
async fn first_run_sign_in_and_out() {
    let f = Fixture::start().await;
    let (status, doc, _) = f.call(Method::GET, "/api/setup", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["needs_first_administrator"], true);

    let (status, doc, headers) = f
        .call(
            Method::POST,
            "/api/setup",
            None,
            Some(json!({"login": "first", "display_name": "First Admin", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
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

#[tokio::test]
async fn users_changes_are_audited_and_the_chain_verifies() {
    let f = Fixture::start().await;
    let admin = f.administrator("sa", &["Security Administrator"]);
    let token = f.session(admin);
    let t = Some(token.as_str());

    for (name, email) in [
        ("Zoe Zimmer", "zoe@example.com"),
        ("Adam Apple", "adam@example.com"),
        ("Mia Maple", "mia@branch.example.org"),
    ] {
        let (status, doc, _) = f
            .call(
                Method::POST,
                "/api/users",
                t,
                Some(json!({"display_name": name, "email": email})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{doc}");
    }
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/users",
            t,
            Some(json!({"display_name": "Again", "email": "ZOE@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(doc["code"], "USER_EXISTS");
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/users",
            t,
            Some(json!({"display_name": "No Mail", "email": "not an address"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["code"], "INVALID_INPUT");

    // Search, sort and page on the server.
    let (_, doc, _) = f
        .call(
            Method::GET,
            "/api/users?search=EXAMPLE.COM&sort=name",
            t,
            None,
        )
        .await;
    assert_eq!(doc["total"], 2);
    let names: Vec<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Adam Apple", "Zoe Zimmer"]);
    let (_, doc, _) = f
        .call(
            Method::GET,
            "/api/users?sort=-name&page=2&per_page=1",
            t,
            None,
        )
        .await;
    assert_eq!(doc["total"], 3);
    assert_eq!(doc["items"][0]["display_name"], "Mia Maple");
    let (status, doc, _) = f
        .call(Method::GET, "/api/users?sort=shoe_size", t, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["code"], "INVALID_SORT");

    // Edit, groups, delete.
    let (_, doc, _) = f.call(Method::GET, "/api/users?search=zoe", t, None).await;
    let zoe = doc["items"][0]["id"].as_i64().unwrap();
    let (status, doc, _) = f
        .call(
            Method::PUT,
            &format!("/api/users/{zoe}"),
            t,
            Some(json!({"display_name": "Zoe Z. Zimmer", "email": "zoe@example.com", "account_status": "disabled"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["account_status"], "disabled");
    let (status, group, _) = f
        .call(
            Method::POST,
            "/api/groups",
            t,
            Some(json!({"name": "Sales"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, doc, _) = f
        .call(
            Method::PUT,
            &format!("/api/users/{zoe}/groups"),
            t,
            Some(json!({"group_ids": [group["id"]]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc[0]["name"], "Sales");
    let (status, _, _) = f
        .call(Method::DELETE, &format!("/api/users/{zoe}"), t, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, doc, _) = f
        .call(Method::GET, &format!("/api/users/{zoe}"), t, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(doc["message"].as_str().unwrap().contains("no user"));

    // The audit log holds each change, newest first, with before and after.
    let (_, doc, _) = f.call(Method::GET, "/api/audit?per_page=5", t, None).await;
    let actions: Vec<&str> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.delete",
            "user.groups",
            "group.create",
            "user.update",
            "user.create"
        ]
    );
    let update = &doc["items"][3];
    assert_eq!(update["actor"], "sa");
    assert_eq!(update["before"]["display_name"], "Zoe Zimmer");
    assert_eq!(update["after"]["display_name"], "Zoe Z. Zimmer");
    assert_eq!(doc["items"][0]["before"]["groups"], json!(["Sales"]));
    assert!(doc["items"][0]["after"].is_null());
    assert_eq!(
        doc["total"], 7,
        "3 creates (not the refused ones), update, group, groups, delete"
    );

    let (_, doc, _) = f.call(Method::GET, "/api/audit/verify", t, None).await;
    assert_eq!(doc["intact"], true, "{doc}");

    // Exports: CSV with a header and one line per entry, JSON oldest first.
    let request = Request::get("/api/audit/export?format=csv")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .unwrap()
        .to_str()
        .unwrap()
        .contains("bramble-audit-log.csv"));
    let csv = String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,at,actor,action,target,before,after,hash");
    assert_eq!(lines.len(), 8);
    assert!(lines[1].contains("\"user.create\""), "{}", lines[1]);
    assert!(
        lines[1].contains("\"\"display_name\"\""),
        "JSON quoted: {}",
        lines[1]
    );
    let (_, doc, _) = f
        .call(Method::GET, "/api/audit/export?format=json", t, None)
        .await;
    assert_eq!(doc.as_array().unwrap().len(), 7);
    assert_eq!(doc[0]["action"], "user.create");

    // Tampering with the database file shows.
    f.db()
        .run_blocking(|conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query("UPDATE audit_log SET actor = 'mallory' WHERE id = 4")
                .execute(conn)?;
            Ok(())
        })
        .unwrap();
    let (_, doc, _) = f.call(Method::GET, "/api/audit/verify", t, None).await;
    assert_eq!(doc["intact"], false);
    assert_eq!(doc["tampered_entry"], 4);
    f.stop().await;
}

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

/// One request over TLS, trusting only `ca` and checking the name
/// `localhost`; returns (status, Set-Cookie, body).
async fn https_request(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    request: Request<String>,
) -> (StatusCode, Option<String>, String) {
    use http_body_util::BodyExt;
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
    let (cert, key) = super::tls::generated_paths(&settings);
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

    let setup = Request::post("/api/setup")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(json!({"login": "sa", "password": "long enough password"}).to_string())
        .unwrap();
    let (status, cookie, body) = https_request(addr, &cert, setup).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(cookie.unwrap().contains("; Secure"));

    // Plain HTTP gets no HTTP answer.
    let (status, _) = crate::admin::tests::plain_get(addr).await;
    assert_eq!(status, None);
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
            crate::db::models::audit::append(conn, "sa", "test.change", "x/1", None, None)?;
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
async fn support_staff_find_a_device_by_pin_and_trace_a_message() {
    use crate::db::models::device::{parse_pin, Device, NewDevice};
    use crate::db::models::message::{Direction, Hop, Message, MessageStatus, NewMessage, RefId};
    let f = Fixture::start().await;
    let junior = f.administrator("junior", &["Junior Helpdesk"]);
    let token = f.session(junior);
    let t = Some(token.as_str());
    let device = f
        .db()
        .run_blocking(|conn| {
            let user = NewUser {
                display_name: "Dana Device".into(),
                email: "dana@example.com".into(),
                mailbox_login: "dana".into(),
            }
            .save(conn)?;
            let device = Device::create(
                conn,
                &NewDevice {
                    pin: parse_pin("2A3B4C5D")?,
                    user_id: Some(user.id),
                    model: "9700".into(),
                    os_version: "5.0.0.405".into(),
                    carrier: "Example Wireless".into(),
                },
            )?;
            Device::add_diagnostics(conn, device.id, &json!({"battery": 81}))?;
            let message = Message::create(
                conn,
                &NewMessage {
                    ref_id: RefId(0xAB),
                    user_id: Some(user.id),
                    device_id: Some(device.id),
                    direction: Direction::ToDevice,
                    status: MessageStatus::Pending,
                    subject: "Quarterly report".into(),
                },
            )?;
            Message::record_hop(conn, message.id, Hop::MessagingAgent, "from INBOX")?;
            Message::record_hop(conn, message.id, Hop::Dispatcher, "queued for 2A3B4C5D")?;
            crate::db::models::statistics::Statistics::increment(
                conn,
                Some(user.id),
                crate::db::models::statistics::Counter::Pending,
                1,
            )?;
            crate::db::models::mailbox::MailboxState::set_error(
                conn,
                user.id,
                "the IMAP server refused the login `dana*bramble`",
            )?;
            Ok(device)
        })
        .unwrap();

    let (status, doc, _) = f
        .call(Method::GET, "/api/devices?pin=2a3b4c5d", t, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc[0]["pin"], "2A3B4C5D");
    assert_eq!(doc[0]["model"], "9700");
    let (_, doc, _) = f
        .call(Method::GET, "/api/devices?pin=2A3B4C5E", t, None)
        .await;
    assert_eq!(doc, json!([]));
    let (status, doc, _) = f.call(Method::GET, "/api/devices?pin=bogus", t, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["code"], "INVALID_PIN");

    let (status, doc, _) = f
        .call(
            Method::GET,
            &format!("/api/devices/{}", device.id.0),
            t,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["user"]["email"], "dana@example.com");
    assert_eq!(doc["diagnostics"][0]["report"]["battery"], 81);
    assert_eq!(doc["pending_messages"], 1);
    assert_eq!(doc["mailbox"]["state"], "error");
    assert!(doc["mailbox"]["error"]
        .as_str()
        .unwrap()
        .contains("refused the login"));
    assert_eq!(doc["recent_messages"][0]["subject"], "Quarterly report");
    assert_eq!(doc["statistics"]["delivered"], 0);
    let user_id = doc["user"]["id"].as_i64().unwrap();
    let (_, doc, _) = f
        .call(
            Method::GET,
            &format!("/api/users/{user_id}/devices"),
            t,
            None,
        )
        .await;
    assert_eq!(doc[0]["pin"], "2A3B4C5D");

    let (status, doc, _) = f
        .call(Method::GET, "/api/messages/00000000000000ab", t, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["ref_id"], "00000000000000AB");
    assert_eq!(doc["status"], "pending");
    let hops: Vec<&str> = doc["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hop"].as_str().unwrap())
        .collect();
    assert_eq!(hops, ["messaging_agent", "dispatcher"]);
    assert!(doc["hops"][0]["at"].as_str().unwrap().ends_with('Z'));
    let (status, doc, _) = f
        .call(Method::GET, "/api/messages/00000000000000AC", t, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("00000000000000AC"));
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
    for _ in 0..super::throttle::FREE_FAILURES {
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
