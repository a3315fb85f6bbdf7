//! The Administration Service's API against a real server core and a real
//! database, through the same router `bramble serve` runs; one module per
//! part of the console.

mod access;
mod administrators;
mod policies;
mod servers;
mod sign_in;
mod users;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use bramble::admin::auth::{self, Access};
use bramble::admin::endpoints;
use bramble::admin::permission::Permission::{self, *};
use bramble::config::Settings;
use bramble::db::ids::{AdministratorId, RoleId};
use bramble::db::models::administrator::{Administrator, NewAdministrator, Role};
use bramble::db::models::administrator_group::AdministratorGroup;
use bramble::db::models::group::Group;
use bramble::db::models::it_policy::ItPolicy;
use bramble::db::models::message_filter::{Condition, FilterAction, NewMessageFilter};
use bramble::db::models::session::Session;
use bramble::db::models::software::SoftwareConfiguration;
use bramble::db::models::user::NewUser;
use bramble::server::{Listeners, Server, ServerHandle};

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
        components: Vec<std::sync::Arc<dyn bramble::controller::component::Component>>,
    ) -> Fixture {
        Fixture::start_custom(components, |_| {}).await
    }

    async fn start_custom(
        components: Vec<std::sync::Arc<dyn bramble::controller::component::Component>>,
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
        let app = bramble::admin::router(handle.state().clone());
        Fixture {
            _dir: dir,
            handle,
            app,
        }
    }

    fn db(&self) -> &bramble::db::Database {
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

/// A Security Administrator's session.
async fn security_admin(f: &Fixture) -> String {
    let admin = f.administrator("sec", &["Security Administrator"]);
    f.session(admin)
}

/// User "Dana Device" <dana@example.com> with her 9700, PIN 2A3B4C5D.
fn dana_and_her_device(
    conn: &mut bramble::db::Conn,
) -> bramble::db::DbResult<(
    bramble::db::models::user::User,
    bramble::db::models::device::Device,
)> {
    use bramble::db::models::device::{parse_pin, Device, NewDevice};
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
