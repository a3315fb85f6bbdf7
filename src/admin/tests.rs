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
use crate::db::models::it_policy::ItPolicy;
use crate::db::models::message_filter::{Condition, FilterAction, NewMessageFilter};
use crate::db::models::session::Session;
use crate::db::models::software::SoftwareConfiguration;
use crate::db::models::user::NewUser;
use crate::server::{Listeners, Server, ServerHandle};

struct Fixture {
    _dir: tempfile::TempDir,
    handle: ServerHandle,
    app: Router,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(Vec::new()).await
    }

    async fn start_with(
        components: Vec<std::sync::Arc<dyn crate::controller::component::Component>>,
    ) -> Fixture {
        Fixture::start_custom(components, |_| {}).await
    }

    async fn start_custom(
        components: Vec<std::sync::Arc<dyn crate::controller::component::Component>>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::load_from(None, &[]).unwrap().settings;
        settings.data_dir = dir.path().to_path_buf();
        settings.admin.listen = "127.0.0.1:0".parse().unwrap();
        settings.router.lan_listen = None;
        tweak(&mut settings);
        let listeners = Listeners {
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            lan: None,
        };
        let handle = Server::start_with(settings, listeners, components)
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
        ("GET", "/api/users/{id}/policy") => Needs(PoliciesRead),
        ("PUT", "/api/users/{id}/activation-password") => Needs(UsersActivation),
        ("GET", p) if p.starts_with("/api/policies") || p == "/api/policy-rules" => {
            Needs(PoliciesRead)
        }
        (_, p) if p.starts_with("/api/policies") => Needs(PoliciesWrite),
        ("GET", p) if p.starts_with("/api/software") => Needs(SoftwareRead),
        (_, p) if p.starts_with("/api/software") => Needs(SoftwareWrite),
        ("GET", p) if p.starts_with("/api/filters") => Needs(FiltersRead),
        (_, p) if p.starts_with("/api/filters") => Needs(FiltersWrite),
        ("GET", "/api/wireless" | "/api/sync") => Needs(ServersRead),
        ("PUT", "/api/sync/{database}") => Needs(ServersWrite),
        ("PUT", "/api/wireless") => Needs(ServersWrite),
        ("GET", p) if p.starts_with("/api/directories") || p == "/api/statistics" => {
            Needs(ServersRead)
        }
        (_, p) if p.starts_with("/api/directories") || p.starts_with("/api/components") => {
            Needs(ServersWrite)
        }
        ("POST", "/api/devices/{id}/commands") => Needs(DevicesWrite),
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
    let (user, throwaway_role, throwaway_group, (policy, assignment, filter, software)) = f
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
            let policy = ItPolicy::create(conn, "Standard", "")?;
            let assignment = ItPolicy::assign_to_group(conn, policy.id, group.id, 1)?;
            let filter = NewMessageFilter {
                user_id: None,
                name: "Newsletters".into(),
                enabled: true,
                conditions: vec![Condition::SubjectContains {
                    text: "newsletter".into(),
                }],
                action: FilterAction::DoNotForward,
            }
            .save(conn)?;
            let software = SoftwareConfiguration::create(conn, "Field staff", "")?;
            Ok((
                (user.id, group.id),
                throwaway_role.id,
                throwaway_group.id,
                (policy.id.0, assignment.id.0, filter.id.0, software.id.0),
            ))
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
        let id = if path.starts_with("/api/policies") {
            policy
        } else if path.starts_with("/api/filters") {
            filter
        } else if path.starts_with("/api/software") {
            software
        } else if path.starts_with("/api/users") {
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
            .replace("{assignment_id}", &assignment.to_string())
            .replace("{name}", "corp")
            .replace("{database}", "contacts")
            .replace("{key}", "policy_service")
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
    let (cert, key) = super::tls::generated_paths(&settings.console());
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
    use crate::db::models::device::Device;
    use crate::db::models::message::{Direction, Hop, Message, MessageStatus, NewMessage, RefId};
    let f = Fixture::start().await;
    let junior = f.administrator("junior", &["Junior Helpdesk"]);
    let token = f.session(junior);
    let t = Some(token.as_str());
    let device = f
        .db()
        .run_blocking(|conn| {
            let (user, device) = dana_and_her_device(conn)?;
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

/// A Security Administrator's session.
async fn security_admin(f: &Fixture) -> String {
    let admin = f.administrator("sec", &["Security Administrator"]);
    f.session(admin)
}

#[tokio::test]
async fn it_policies_rule_editor_assignments_and_the_resolved_policy() {
    let f = Fixture::start().await;
    let token = security_admin(&f).await;
    let t = Some(token.as_str());

    let (status, rules, _) = f.call(Method::GET, "/api/policy-rules", t, None).await;
    assert_eq!(status, StatusCode::OK);
    let length = rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "MinimumPasswordLength")
        .unwrap();
    assert_eq!(
        (length["min"].as_i64(), length["max"].as_i64()),
        (Some(4), Some(14))
    );
    assert_eq!(length["kind"], "int");

    // Out of range: refused with the rule's name and range; nothing created.
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/policies",
            t,
            Some(json!({"name": "Executives", "rules": {"PasswordRequired": true, "MinimumPasswordLength": 20}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert_eq!(doc["code"], "POLICY_RULE_OUT_OF_RANGE");
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.contains("Minimum Password Length must be between 4 and 14; got 20"),
        "{message}"
    );
    let (_, list, _) = f.call(Method::GET, "/api/policies", t, None).await;
    assert_eq!(list, json!([]), "the refused policy was not created");
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/policies",
            t,
            Some(json!({"name": "X", "rules": {"NoSuchRule": 1}})),
        )
        .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("POLICY_RULE_UNKNOWN"))
    );

    let (status, strict, _) = f
        .call(
            Method::POST,
            "/api/policies",
            t,
            Some(json!({"name": "Executives", "rules": {"PasswordRequired": true, "MinimumPasswordLength": 10}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{strict}");
    let strict_id = strict["id"].as_i64().unwrap();
    let (_, standard, _) = f
        .call(
            Method::POST,
            "/api/policies",
            t,
            Some(json!({"name": "Standard", "is_default": true, "rules": {"MinimumPasswordLength": 6}})),
        )
        .await;
    assert_eq!(standard["is_default"], true);

    // Edit: the rules become exactly the ones sent; a bad value changes nothing.
    let (status, doc, _) = f
        .call(
            Method::PUT,
            &format!("/api/policies/{strict_id}"),
            t,
            Some(json!({"name": "Executives", "rules": {"MaximumSecurityTimeout": 5}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("between 10 and 480"),
        "{doc}"
    );
    let (status, edited, _) = f
        .call(
            Method::PUT,
            &format!("/api/policies/{strict_id}"),
            t,
            Some(json!({"name": "Executives", "description": "board", "rules": {"PasswordRequired": true, "MinimumPasswordLength": 12}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(
        edited["rules"],
        json!({"PasswordRequired": true, "MinimumPasswordLength": 12})
    );

    // Assignment: a user in a group; the default applies until then.
    let (_, alice, _) = f
        .call(
            Method::POST,
            "/api/users",
            t,
            Some(json!({"display_name": "Alice", "email": "alice@example.com"})),
        )
        .await;
    let alice_id = alice["id"].as_i64().unwrap();
    let (_, board, _) = f
        .call(
            Method::POST,
            "/api/groups",
            t,
            Some(json!({"name": "Board"})),
        )
        .await;
    let board_id = board["id"].as_i64().unwrap();
    f.call(
        Method::PUT,
        &format!("/api/groups/{board_id}/members/{alice_id}"),
        t,
        None,
    )
    .await;

    let policy_path = format!("/api/users/{alice_id}/policy");
    async fn resolved_of(f: &Fixture, path: &str, token: &str) -> Value {
        f.call(Method::GET, path, Some(token), None).await.1
    }
    let rule = |doc: &Value, name: &str| {
        doc["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let before = resolved_of(&f, &policy_path, &token).await;
    assert_eq!(before["policies"][0]["via"], "default");
    assert_eq!(rule(&before, "MinimumPasswordLength")["value"], 6);
    assert_eq!(
        rule(&before, "MinimumPasswordLength")["policy_name"],
        "Standard"
    );
    assert_eq!(rule(&before, "DisableCamera")["policy_name"], Value::Null);

    let (status, doc, _) = f
        .call(
            Method::POST,
            &format!("/api/policies/{strict_id}/assignments"),
            t,
            Some(json!({"group_id": board_id, "rank": 0})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "rank 0 is refused for a group: {doc}"
    );
    let (status, assigned, _) = f
        .call(
            Method::POST,
            &format!("/api/policies/{strict_id}/assignments"),
            t,
            Some(json!({"group_id": board_id, "rank": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{assigned}");
    assert_eq!(
        (assigned["name"].as_str(), assigned["rank"].as_i64()),
        (Some("Board"), Some(2))
    );
    let after = resolved_of(&f, &policy_path, &token).await;
    assert_eq!(after["policies"][0]["via"], "group");
    assert_eq!(after["policies"][0]["group_name"], "Board");
    assert_eq!(rule(&after, "MinimumPasswordLength")["value"], 12);
    assert_eq!(
        rule(&after, "MinimumPasswordLength")["policy_name"],
        "Executives"
    );

    // The user's own policy wins over the group's.
    let standard_id = standard["id"].as_i64().unwrap();
    let (status, own, _) = f
        .call(
            Method::POST,
            &format!("/api/policies/{standard_id}/assignments"),
            t,
            Some(json!({"user_id": alice_id})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        resolved_of(&f, &policy_path, &token).await["policies"][0]["via"],
        "user"
    );
    let (status, _, _) = f
        .call(
            Method::DELETE,
            &format!("/api/policies/{standard_id}/assignments/{}", own["id"]),
            t,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        resolved_of(&f, &policy_path, &token).await["policies"][0]["via"],
        "group"
    );

    let (_, detail, _) = f
        .call(Method::GET, &format!("/api/policies/{strict_id}"), t, None)
        .await;
    assert_eq!(detail["assignments"].as_array().map(Vec::len), Some(1));

    // Every change is in the audit log, with the rules before and after.
    let (_, audit, _) = f.call(Method::GET, "/api/audit?per_page=50", t, None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "policy.create",
        "policy.update",
        "policy.assign",
        "policy.unassign",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let update = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "policy.update")
        .unwrap();
    assert_eq!(update["before"]["rules"]["MinimumPasswordLength"], 10);
    assert_eq!(update["after"]["rules"]["MinimumPasswordLength"], 12);

    // Deleting the default policy leaves users with the catalog defaults.
    let (status, _, _) = f
        .call(
            Method::DELETE,
            &format!("/api/policies/{strict_id}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, doc, _) = f
        .call(Method::GET, &format!("/api/policies/{strict_id}"), t, None)
        .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    f.stop().await;
}

#[tokio::test]
async fn activation_password_set_or_generated_never_in_the_audit_log() {
    let f = Fixture::start().await;
    let sec = security_admin(&f).await;
    let junior = f.administrator("junior", &["Junior Helpdesk"]);
    let junior = f.session(junior);
    let (_, bob, _) = f
        .call(
            Method::POST,
            "/api/users",
            Some(&sec),
            Some(json!({"display_name": "Bob", "email": "bob@example.com"})),
        )
        .await;
    let id = bob["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/activation-password");

    let (status, doc, _) = f
        .call(
            Method::GET,
            &format!("/api/users/{id}/activation"),
            Some(&junior),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (doc["status"].as_str(), &doc["password"]),
        (Some("not_activated"), &Value::Null)
    );

    let (status, doc, _) = f
        .call(
            Method::PUT,
            &path,
            Some(&junior),
            Some(json!({"lifetime_hours": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["code"], "ACTIVATION_LIFETIME_INVALID");
    assert!(doc["message"].as_str().unwrap().contains("720"), "{doc}");
    let (status, doc, _) = f
        .call(
            Method::PUT,
            &path,
            Some(&junior),
            Some(json!({"password": "abc"})),
        )
        .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ACTIVATION_PASSWORD_LENGTH"))
    );

    // A Junior Helpdesk may set one (users.activation), with a lifetime.
    let (status, doc, _) = f
        .call(
            Method::PUT,
            &path,
            Some(&junior),
            Some(json!({"password": "chosen-secret", "lifetime_hours": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["generated_password"], Value::Null);
    assert_eq!(doc["activation"]["status"], "initializing");
    assert_eq!(doc["activation"]["password"]["attempts_left"], 5);
    assert_eq!(doc["activation"]["password"]["expired"], false);
    let created = time::OffsetDateTime::parse(
        doc["activation"]["password"]["created_at"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        doc["activation"]["password"]["expires_at"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((expires - created).whole_hours(), 2);

    // Generated: shown once, 8 characters by default.
    let (status, doc, _) = f
        .call(Method::PUT, &path, Some(&sec), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let generated = doc["generated_password"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 8);
    let (_, user, _) = f
        .call(Method::GET, &format!("/api/users/{id}"), Some(&sec), None)
        .await;
    assert_eq!(user["activation_status"], "initializing");

    let (_, export, _) = f
        .call(
            Method::GET,
            "/api/audit/export?format=json",
            Some(&sec),
            None,
        )
        .await;
    let text = export.to_string();
    assert!(text.contains("user.activation_password.set"));
    assert!(
        !text.contains("chosen-secret") && !text.contains(&generated),
        "no password in the audit log"
    );

    // Without users.activation: refused.
    let helpdesk = f.administrator("server-only", &["Server Only"]);
    let helpdesk = f.session(helpdesk);
    let (status, _, _) = f
        .call(Method::PUT, &path, Some(&helpdesk), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    f.stop().await;
}

#[tokio::test]
async fn global_message_filters_are_checked_ordered_and_audited() {
    let f = Fixture::start().await;
    let token = security_admin(&f).await;
    let t = Some(token.as_str());
    let (status, doc, _) = f
        .call(Method::POST, "/api/filters", t, Some(json!({"name": "x", "conditions": [{"field": "size", "text": "1"}], "action": "forward"})))
        .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_FILTER"))
    );
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("`size` is not a condition"));
    let (status, doc, _) = f
        .call(Method::POST, "/api/filters", t, Some(json!({"name": "x", "conditions": [{"field": "from", "text": "a"}], "action": "drop"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("forward_priority"));

    let mut ids = Vec::new();
    for (name, condition, action) in [
        (
            "Boss",
            json!({"field": "from", "text": "ceo@example.com"}),
            "forward_priority",
        ),
        (
            "Newsletters",
            json!({"field": "subject", "text": "newsletter"}),
            "do_not_forward",
        ),
        (
            "Urgent",
            json!({"field": "importance", "importance": "high"}),
            "forward",
        ),
    ] {
        let (status, doc, _) = f
            .call(
                Method::POST,
                "/api/filters",
                t,
                Some(json!({"name": name, "conditions": [condition], "action": action})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{doc}");
        ids.push(doc["id"].as_i64().unwrap());
    }
    let (_, list, _) = f.call(Method::GET, "/api/filters", t, None).await;
    let names = |list: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&list), ["Boss", "Newsletters", "Urgent"]);
    assert_eq!(
        list[2]["conditions"][0],
        json!({"field": "importance", "text": null, "importance": "high"})
    );

    let (status, list, _) = f
        .call(
            Method::PUT,
            "/api/filters/order",
            t,
            Some(json!({"ids": [ids[2], ids[0], ids[1]]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["Urgent", "Boss", "Newsletters"]);
    let (status, _, _) = f
        .call(
            Method::PUT,
            "/api/filters/order",
            t,
            Some(json!({"ids": [ids[0]]})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an order must list every filter"
    );

    let (status, doc, _) = f
        .call(Method::PUT, &format!("/api/filters/{}", ids[1]), t, Some(json!({"name": "Newsletters", "enabled": false, "conditions": [{"field": "to", "text": "list@"}], "action": "do_not_forward"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["enabled"], false);
    let (status, _, _) = f
        .call(Method::DELETE, &format!("/api/filters/{}", ids[0]), t, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list, _) = f.call(Method::GET, "/api/filters", t, None).await;
    assert_eq!(names(&list), ["Urgent", "Newsletters"]);

    let (_, audit, _) = f.call(Method::GET, "/api/audit", t, None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "filter.create",
        "filter.reorder",
        "filter.update",
        "filter.delete",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    f.stop().await;
}

#[tokio::test]
async fn an_administrator_restarts_a_component_through_the_controller() {
    let f = Fixture::start_with(vec![std::sync::Arc::new(
        crate::policy::PolicyService::default(),
    )])
    .await;
    let token = security_admin(&f).await;
    let t = Some(token.as_str());
    let status = |f: &Fixture| {
        f.handle
            .state()
            .status
            .get(crate::controller::component::ComponentId::PolicyService)
            .unwrap()
    };
    let waited = std::time::Instant::now();
    while status(&f).state != crate::controller::ComponentState::Running {
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
        if now.restarts == 1 && now.state == crate::controller::ComponentState::Running {
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
async fn the_openapi_document_describes_new_bodies_with_schemas() {
    let f = Fixture::start().await;
    let (status, doc, _) = f.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let create = &doc["paths"]["/api/policies"]["post"];
    let request = &create["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(request, "#/components/schemas/PolicyForm");
    let form = &doc["components"]["schemas"]["PolicyForm"];
    assert!(form["properties"]["rules"].is_object(), "{form}");
    assert_eq!(form["required"], json!(["name"]));
    let answer = &create["responses"]["2XX"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(answer, "#/components/schemas/PolicyDetail");
    assert!(doc["components"]["schemas"]["PolicyDetail"]["properties"]["assignments"].is_object());
    let rules = &doc["paths"]["/api/policy-rules"]["get"]["responses"]["2XX"]["content"]
        ["application/json"]["schema"];
    assert_eq!(rules["type"], "array");
    let users = &doc["paths"]["/api/users"]["get"]["responses"]["2XX"]["content"]
        ["application/json"]["schema"]["$ref"];
    let page = users.as_str().unwrap().rsplit('/').next().unwrap();
    let items = &doc["components"]["schemas"][page]["properties"]["items"];
    assert_eq!(
        items["items"]["$ref"], "#/components/schemas/UserView",
        "{items}"
    );
    let name = &doc["paths"]["/api/directories/{name}"]["get"]["parameters"][0];
    assert_eq!(name["schema"]["type"], "string");
    // Every $ref points at a schema the document holds.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{name} is referenced but missing"
        );
    }
    f.stop().await;
}

#[tokio::test]
async fn statistics_show_the_server_and_the_busiest_users() {
    use crate::db::models::statistics::{Counter, Statistics};
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
async fn software_configurations_list_applications_and_assignments() {
    let f = Fixture::start().await;
    let token = security_admin(&f).await;
    let t = Some(token.as_str());
    let (status, doc, _) = f
        .call(Method::POST, "/api/software", t, Some(json!({"name": "Sales", "applications": [{"name": "CRM", "disposition": "mandatory"}]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("use required, optional or disallowed"),
        "{doc}"
    );
    let (_, list, _) = f.call(Method::GET, "/api/software", t, None).await;
    assert_eq!(list, json!([]), "nothing created");

    let (status, sales, _) = f
        .call(
            Method::POST,
            "/api/software",
            t,
            Some(json!({"name": "Sales", "applications": [
                {"name": "CRM", "version": "2.1", "disposition": "required"},
                {"name": "Games", "disposition": "disallowed"}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sales}");
    let id = sales["id"].as_i64().unwrap();
    assert_eq!(
        sales["applications"][0],
        json!({"name": "CRM", "version": "2.1", "disposition": "required"})
    );
    let (status, doc, _) = f
        .call(
            Method::POST,
            "/api/software",
            t,
            Some(json!({"name": "Sales"})),
        )
        .await;
    assert_eq!(
        (status, doc["code"].as_str()),
        (StatusCode::CONFLICT, Some("SOFTWARE_CONFIGURATION_EXISTS"))
    );

    let (status, edited, _) = f
        .call(
            Method::PUT,
            &format!("/api/software/{id}"),
            t,
            Some(json!({"name": "Sales", "applications": [{"name": "CRM", "version": "2.2", "disposition": "optional"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(
        edited["applications"],
        json!([{"name": "CRM", "version": "2.2", "disposition": "optional"}])
    );

    let (_, group, _) = f
        .call(
            Method::POST,
            "/api/groups",
            t,
            Some(json!({"name": "Field"})),
        )
        .await;
    let (status, assigned, _) = f
        .call(
            Method::POST,
            &format!("/api/software/{id}/assignments"),
            t,
            Some(json!({"group_id": group["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{assigned}");
    assert_eq!(assigned["name"], "Field");
    let (_, detail, _) = f
        .call(Method::GET, &format!("/api/software/{id}"), t, None)
        .await;
    assert_eq!(detail["assignments"].as_array().map(Vec::len), Some(1));
    let (status, _, _) = f
        .call(
            Method::DELETE,
            &format!("/api/software/{id}/assignments/{}", assigned["id"]),
            t,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = f
        .call(Method::DELETE, &format!("/api/software/{id}"), t, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (_, audit, _) = f.call(Method::GET, "/api/audit", t, None).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "software.create",
        "software.update",
        "software.assign",
        "software.unassign",
        "software.delete",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    f.stop().await;
}

/// A mail server that accepts one message and hands its SMTP transcript
/// over.
async fn one_message_smtp() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut transcript = String::new();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            transcript.push_str(&line);
            transcript.push('\n');
            let answer: &[u8] = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                b"250 queued\r\n"
            } else if line.starts_with("DATA") {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            write.write_all(answer).await.unwrap();
            if answer.starts_with(b"250 queued") {
                break;
            }
        }
        let _ = tx.send(transcript);
    });
    (addr, rx)
}

#[tokio::test]
async fn an_activation_password_is_e_mailed_to_the_user_through_the_mail_server() {
    let (smtp, transcript) = one_message_smtp().await;
    let f = Fixture::start_custom(Vec::new(), |s| {
        s.mail.smtp = Some(smtp.to_string());
        s.mail.smtp_security = crate::messaging_agent::settings::Security::None;
        s.admin.mail_from = Some("it@example.com".into());
    })
    .await;
    let token = security_admin(&f).await;
    let t = Some(token.as_str());
    let (_, carol, _) = f
        .call(
            Method::POST,
            "/api/users",
            t,
            Some(json!({"display_name": "Carol", "email": "carol@example.com"})),
        )
        .await;
    let path = format!("/api/users/{}/activation-password", carol["id"]);
    let (status, doc, _) = f
        .call(Method::PUT, &path, t, Some(json!({"email_user": true})))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(
        doc["email"],
        json!({"to": "carol@example.com", "sent": true, "error": null})
    );
    let password = doc["generated_password"].as_str().unwrap();
    let transcript = transcript.await.unwrap();
    assert!(
        transcript.contains("MAIL FROM:<it@example.com>"),
        "{transcript}"
    );
    assert!(
        transcript.contains("RCPT TO:<carol@example.com>"),
        "{transcript}"
    );
    assert!(
        transcript.contains(&format!("Activation password: {password}")),
        "{transcript}"
    );
    assert!(
        transcript.contains("E-mail address:      carol@example.com"),
        "{transcript}"
    );
    let (_, audit, _) = f.call(Method::GET, "/api/audit", t, None).await;
    assert_eq!(
        audit["items"][0]["action"],
        "user.activation_password.email"
    );

    // The mail server gone: the password is still set, and the answer says
    // why the mail did not leave.
    let (status, doc, _) = f
        .call(Method::PUT, &path, t, Some(json!({"email_user": true})))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["email"]["sent"], false);
    assert!(
        doc["email"]["error"]
            .as_str()
            .unwrap()
            .contains("mail server"),
        "{doc}"
    );
    assert_eq!(doc["activation"]["status"], "initializing");
    f.stop().await;
}

#[tokio::test]
async fn resending_the_policy_or_books_needs_an_activated_device_and_is_audited() {
    use crate::db::models::device_key::{DeviceKey, KeyMaterial, KeySlot};
    use crate::dispatcher::{DeliveryEvent, Resend};
    let f = Fixture::start().await;
    let senior = f.administrator("senior", &["Senior Helpdesk"]);
    let token = f.session(senior);
    let t = Some(token.as_str());
    let (user, device) = f
        .db()
        .run_blocking(|conn| {
            let (user, device) = dana_and_her_device(conn)?;
            Ok((user.id.0, device.id))
        })
        .unwrap();
    let path = format!("/api/users/{user}/resend");

    let (status, doc, _) = f
        .call(Method::POST, &path, t, Some(json!({"what": "policy"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{doc}");
    assert_eq!(doc["code"], "NO_DEVICE");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("Dana Device has no activated device"),
        "{doc}"
    );
    let (status, doc, _) = f
        .call(Method::POST, &path, t, Some(json!({"what": "everything"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}");
    assert!(doc["message"].as_str().unwrap().contains("service_books"));

    f.db()
        .write_sealed(move |conn, sealer| {
            DeviceKey::save_slot(
                conn,
                sealer,
                device,
                KeySlot::Current,
                7,
                &KeyMaterial::new(vec![1; 32]),
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let (_, devices, _) = f
        .call(Method::GET, &format!("/api/users/{user}/devices"), t, None)
        .await;
    assert_eq!(devices[0]["activated"], true, "{devices}");

    let mut events = f.handle.state().dispatcher.subscribe();
    for (what, resend) in [
        ("policy", Resend::Policy),
        ("service_books", Resend::ServiceBooks),
    ] {
        let (status, doc, _) = f
            .call(Method::POST, &path, t, Some(json!({ "what": what })))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        assert_eq!(doc["pin"], "2A3B4C5D");
        assert_eq!(doc["what"], what);
        let asked = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let Ok(DeliveryEvent::ResendRequested { what, .. }) = events.recv().await {
                    return what;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(asked, resend);
    }
    let admin = security_admin(&f).await;
    let (_, audit, _) = f
        .call(Method::GET, "/api/audit?per_page=5", Some(&admin), None)
        .await;
    let resends: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "user.resend")
        .collect();
    assert_eq!(resends.len(), 2, "{audit}");
    assert_eq!(resends[0]["actor"], "senior");
    assert_eq!(resends[0]["after"]["what"], "service_books");
    assert_eq!(resends[0]["after"]["pin"], "2A3B4C5D");
    f.stop().await;
}

#[tokio::test]
async fn the_wireless_connection_is_set_without_ever_showing_the_key() {
    use crate::db::models::srp_connection::SrpConnection;
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
    use crate::db::models::sync::{SyncItemError, SyncState};
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
                crate::db::models::sync::ErrorSide::Server,
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

/// User "Dana Device" <dana@example.com> with her 9700, PIN 2A3B4C5D.
fn dana_and_her_device(
    conn: &mut crate::db::Conn,
) -> crate::db::DbResult<(
    crate::db::models::user::User,
    crate::db::models::device::Device,
)> {
    use crate::db::models::device::{parse_pin, Device, NewDevice};
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
    Ok((user, device))
}
