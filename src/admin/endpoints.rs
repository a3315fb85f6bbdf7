//! The one list of API endpoints. The router is built from it and every
//! entry names what it requires ([`Access`]), so an endpoint cannot exist
//! without a declared permission; the role test walks the same list.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};

use super::auth::{self, Access};
use super::permission::Permission::*;
use super::{administrators, audit, devices, events, groups, openapi, users};
use crate::server::ServerState;

/// One endpoint of the API.
pub struct Endpoint {
    pub method: Method,
    /// axum path syntax: `/api/users/{id}`.
    pub path: &'static str,
    pub access: Access,
    /// One line for the OpenAPI description.
    pub summary: &'static str,
    /// Query parameters it reads.
    pub query: &'static [&'static str],
    pub route: MethodRouter<ServerState>,
}

impl Endpoint {
    fn summary(mut self, summary: &'static str) -> Endpoint {
        self.summary = summary;
        self
    }

    fn query(mut self, names: &'static [&'static str]) -> Endpoint {
        self.query = names;
        self
    }
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
        summary: "",
        query: &[],
        route: on(filter, handler),
    }
}

/// Every `/api` endpoint.
pub fn all() -> Vec<Endpoint> {
    use Access::{Permission as Needs, Public, Session};
    use Method as M;
    vec![
        endpoint(M::GET, "/api/setup", Public, auth::setup_state)
            .summary("Whether the first administrator still has to be created"),
        endpoint(
            M::POST,
            "/api/setup",
            Public,
            auth::create_first_administrator,
        )
        .summary("Create the first Security Administrator (only while there is none) and sign in"),
        endpoint(M::POST, "/api/session", Public, auth::sign_in).summary("Sign in"),
        endpoint(M::GET, "/api/session", Session, auth::whoami)
            .summary("Who is signed in, with roles and permissions"),
        endpoint(M::DELETE, "/api/session", Session, auth::sign_out).summary("Sign out"),
        endpoint(M::GET, "/api/permissions", Session, auth::permissions)
            .summary("Every permission with its meaning"),
        endpoint(M::GET, "/api/events", Session, events::stream)
            .summary("Live statuses as server-sent events"),
        endpoint(M::GET, "/api/openapi.json", Public, openapi::document)
            .summary("This description of the API"),
        endpoint(M::GET, "/api/users", Needs(UsersRead), users::list)
            .summary("One page of users, searched and sorted")
            .query(&["search", "page", "per_page", "sort"]),
        endpoint(M::POST, "/api/users", Needs(UsersWrite), users::create).summary("Create a user"),
        endpoint(M::GET, "/api/users/{id}", Needs(UsersRead), users::get).summary("One user"),
        endpoint(M::PUT, "/api/users/{id}", Needs(UsersWrite), users::update)
            .summary("Change a user"),
        endpoint(
            M::DELETE,
            "/api/users/{id}",
            Needs(UsersWrite),
            users::delete,
        )
        .summary("Delete a user"),
        endpoint(
            M::GET,
            "/api/users/{id}/groups",
            Needs(UsersRead),
            users::groups,
        )
        .summary("The groups of a user"),
        endpoint(
            M::PUT,
            "/api/users/{id}/groups",
            Needs(UsersWrite),
            users::set_groups,
        )
        .summary("Set the groups of a user"),
        endpoint(
            M::GET,
            "/api/users/{id}/devices",
            Needs(DevicesRead),
            devices::of_user,
        )
        .summary("The devices of a user"),
        endpoint(M::GET, "/api/devices", Needs(DevicesRead), devices::find)
            .summary("The device with a PIN (a list of zero or one)")
            .query(&["pin"]),
        endpoint(
            M::GET,
            "/api/devices/{id}",
            Needs(DevicesRead),
            devices::get,
        )
        .summary("One device: diagnostics, its user's statistics and recent messages"),
        endpoint(
            M::GET,
            "/api/messages/{ref_id}",
            Needs(DevicesRead),
            devices::trace,
        )
        .summary("The trace of one message by RefID: each hop with its time"),
        endpoint(M::GET, "/api/groups", Needs(GroupsRead), groups::list)
            .summary("Every group with its number of members"),
        endpoint(M::POST, "/api/groups", Needs(GroupsWrite), groups::create)
            .summary("Create a group"),
        endpoint(M::GET, "/api/groups/{id}", Needs(GroupsRead), groups::get)
            .summary("One group with its members"),
        endpoint(
            M::DELETE,
            "/api/groups/{id}",
            Needs(GroupsWrite),
            groups::delete,
        )
        .summary("Delete a group"),
        endpoint(
            M::PUT,
            "/api/groups/{id}/members/{user_id}",
            Needs(GroupsWrite),
            groups::add_member,
        )
        .summary("Add a user to a group"),
        endpoint(
            M::DELETE,
            "/api/groups/{id}/members/{user_id}",
            Needs(GroupsWrite),
            groups::remove_member,
        )
        .summary("Remove a user from a group"),
        endpoint(
            M::GET,
            "/api/administrators",
            Needs(AdministratorsRead),
            administrators::list,
        )
        .summary("Every administrator with roles and groups"),
        endpoint(
            M::POST,
            "/api/administrators",
            Needs(AdministratorsWrite),
            administrators::create,
        )
        .summary("Create an administrator"),
        endpoint(
            M::PUT,
            "/api/administrators/{id}",
            Needs(AdministratorsWrite),
            administrators::update,
        )
        .summary("Change an administrator (name, disabled, roles)"),
        endpoint(
            M::GET,
            "/api/roles",
            Needs(AdministratorsRead),
            administrators::roles,
        )
        .summary("Every role with its grants"),
        endpoint(
            M::POST,
            "/api/roles",
            Needs(AdministratorsWrite),
            administrators::create_role,
        )
        .summary("Create a custom role"),
        endpoint(
            M::DELETE,
            "/api/roles/{id}",
            Needs(AdministratorsWrite),
            administrators::delete_role,
        )
        .summary("Delete a custom role"),
        endpoint(
            M::GET,
            "/api/administrator-groups",
            Needs(AdministratorsRead),
            administrators::groups,
        )
        .summary("Every administrator group"),
        endpoint(
            M::POST,
            "/api/administrator-groups",
            Needs(AdministratorsWrite),
            administrators::create_group,
        )
        .summary("Create an administrator group"),
        endpoint(
            M::DELETE,
            "/api/administrator-groups/{id}",
            Needs(AdministratorsWrite),
            administrators::delete_group,
        )
        .summary("Delete an administrator group"),
        endpoint(M::GET, "/api/audit", Needs(AuditRead), audit::list)
            .summary("One page of the audit log, newest first")
            .query(&["page", "per_page"]),
        endpoint(M::GET, "/api/audit/export", Needs(AuditRead), audit::export)
            .summary("The whole audit log as a CSV or JSON file")
            .query(&["format"]),
        endpoint(M::GET, "/api/audit/verify", Needs(AuditRead), audit::verify)
            .summary("Check the audit log hash chain"),
    ]
}
