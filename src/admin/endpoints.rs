//! The one list of API endpoints. The router is built from it and every
//! entry names what it requires ([`Access`]), so an endpoint cannot exist
//! without a declared permission; the role test walks the same list.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};

use super::auth::{self, Access};
use super::permission::Permission::*;
use super::{administrators, audit, events, groups, users};
use crate::server::ServerState;

/// One endpoint of the API.
pub struct Endpoint {
    pub method: Method,
    /// axum path syntax: `/api/users/{id}`.
    pub path: &'static str,
    pub access: Access,
    pub route: MethodRouter<ServerState>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

fn endpoint<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Endpoint
where
    H: Handler<T, ServerState>,
    T: 'static,
{
    let filter = match method {
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    };
    Endpoint {
        method,
        path,
        access,
        route: on(filter, handler),
    }
}

/// Every `/api` endpoint.
pub fn all() -> Vec<Endpoint> {
    use Access::{Permission as Needs, Public, Session};
    use Method as M;
    vec![
        endpoint(M::GET, "/api/setup", Public, auth::setup_state),
        endpoint(
            M::POST,
            "/api/setup",
            Public,
            auth::create_first_administrator,
        ),
        endpoint(M::POST, "/api/session", Public, auth::sign_in),
        endpoint(M::GET, "/api/session", Session, auth::whoami),
        endpoint(M::DELETE, "/api/session", Session, auth::sign_out),
        endpoint(M::GET, "/api/permissions", Session, auth::permissions),
        endpoint(M::GET, "/api/events", Session, events::stream),
        endpoint(M::GET, "/api/users", Needs(UsersRead), users::list),
        endpoint(M::POST, "/api/users", Needs(UsersWrite), users::create),
        endpoint(M::GET, "/api/users/{id}", Needs(UsersRead), users::get),
        endpoint(M::PUT, "/api/users/{id}", Needs(UsersWrite), users::update),
        endpoint(
            M::DELETE,
            "/api/users/{id}",
            Needs(UsersWrite),
            users::delete,
        ),
        endpoint(
            M::GET,
            "/api/users/{id}/groups",
            Needs(UsersRead),
            users::groups,
        ),
        endpoint(
            M::PUT,
            "/api/users/{id}/groups",
            Needs(UsersWrite),
            users::set_groups,
        ),
        endpoint(M::GET, "/api/groups", Needs(GroupsRead), groups::list),
        endpoint(M::POST, "/api/groups", Needs(GroupsWrite), groups::create),
        endpoint(M::GET, "/api/groups/{id}", Needs(GroupsRead), groups::get),
        endpoint(
            M::DELETE,
            "/api/groups/{id}",
            Needs(GroupsWrite),
            groups::delete,
        ),
        endpoint(
            M::PUT,
            "/api/groups/{id}/members/{user_id}",
            Needs(GroupsWrite),
            groups::add_member,
        ),
        endpoint(
            M::DELETE,
            "/api/groups/{id}/members/{user_id}",
            Needs(GroupsWrite),
            groups::remove_member,
        ),
        endpoint(
            M::GET,
            "/api/administrators",
            Needs(AdministratorsRead),
            administrators::list,
        ),
        endpoint(
            M::POST,
            "/api/administrators",
            Needs(AdministratorsWrite),
            administrators::create,
        ),
        endpoint(
            M::PUT,
            "/api/administrators/{id}",
            Needs(AdministratorsWrite),
            administrators::update,
        ),
        endpoint(
            M::GET,
            "/api/roles",
            Needs(AdministratorsRead),
            administrators::roles,
        ),
        endpoint(
            M::POST,
            "/api/roles",
            Needs(AdministratorsWrite),
            administrators::create_role,
        ),
        endpoint(
            M::DELETE,
            "/api/roles/{id}",
            Needs(AdministratorsWrite),
            administrators::delete_role,
        ),
        endpoint(
            M::GET,
            "/api/administrator-groups",
            Needs(AdministratorsRead),
            administrators::groups,
        ),
        endpoint(
            M::POST,
            "/api/administrator-groups",
            Needs(AdministratorsWrite),
            administrators::create_group,
        ),
        endpoint(
            M::DELETE,
            "/api/administrator-groups/{id}",
            Needs(AdministratorsWrite),
            administrators::delete_group,
        ),
        endpoint(M::GET, "/api/audit", Needs(AuditRead), audit::list),
        endpoint(M::GET, "/api/audit/export", Needs(AuditRead), audit::export),
        endpoint(M::GET, "/api/audit/verify", Needs(AuditRead), audit::verify),
    ]
}
