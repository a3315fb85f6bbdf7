//! The one list of API endpoints. The router is built from it and every
//! entry names what it requires ([`Access`]), so an endpoint cannot exist
//! without a declared permission; the role test walks the same list.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::auth::{self, Access};
use super::permission::Permission::*;
use super::ServerState;
use super::{
    activation, administrators, assignments, audit, components, devices, directories, events,
    filters, groups, openapi, policies, software, statistics, sync, users, wireless,
};
use crate::db::models::it_policy::ItPolicy;
use crate::db::models::software::SoftwareConfiguration;

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
    /// The JSON body it reads, for the OpenAPI description.
    pub request: Option<SchemaOf>,
    /// The JSON body it answers with, for the OpenAPI description.
    pub response: Option<SchemaOf>,
    /// Its status when it succeeds: 200, 201 (created), 202 (accepted, to
    /// be done) or 204 (nothing to answer).
    pub success: u16,
    /// What it answers with when that is not JSON (a stream, a file).
    pub media: &'static [&'static str],
    /// The error statuses its handler answers with. Those that come from
    /// how it is declared are added by the description: 400 for a body or
    /// query that is not understood, 401 and 403 from its [`Access`], 404
    /// for a number in the path that is not one, 500 and 503 when the
    /// database fails.
    pub errors: &'static [u16],
    /// Whether it reads the database (or its guard does): then it can fail
    /// with 500 or 503.
    pub uses_database: bool,
    pub route: MethodRouter<ServerState>,
}

/// Writes the JSON Schema of one Rust type (derived with `schemars`).
pub type SchemaOf = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
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

    /// Declares the request body's type.
    fn reads<T: JsonSchema>(mut self) -> Endpoint {
        self.request = Some(schema_of::<T>);
        self
    }

    /// Declares the response body's type.
    fn answers<T: JsonSchema>(mut self) -> Endpoint {
        self.response = Some(schema_of::<T>);
        self
    }

    /// It answers 201 when it has created something.
    fn created(mut self) -> Endpoint {
        self.success = 201;
        self
    }

    /// It answers 202: the work is handed to a component and goes on.
    fn accepted(mut self) -> Endpoint {
        self.success = 202;
        self
    }

    /// It answers 204 with no body.
    fn no_content(mut self) -> Endpoint {
        self.success = 204;
        self
    }

    /// It answers with these media types instead of JSON.
    fn sends(mut self, media: &'static [&'static str]) -> Endpoint {
        self.media = media;
        self
    }

    /// The error statuses its handler answers with (see [`Endpoint::errors`]).
    fn fails(mut self, statuses: &'static [u16]) -> Endpoint {
        self.errors = statuses;
        self
    }

    /// It reads nothing from the database.
    fn without_database(mut self) -> Endpoint {
        self.uses_database = false;
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
        request: None,
        response: None,
        success: 200,
        media: &[],
        errors: &[],
        uses_database: true,
        route: on(filter, handler),
    }
}

/// Every `/api` endpoint.
pub fn all() -> Vec<Endpoint> {
    use Access::{Permission as Needs, Public, Session};
    use Method as M;
    vec![
        endpoint(M::GET, "/api/setup", Public, auth::setup_state)
            .summary("Whether the first administrator still has to be created")
            .answers::<auth::SetupState>(),
        endpoint(
            M::POST,
            "/api/setup",
            Public,
            auth::create_first_administrator,
        )
        .summary("Create the first Security Administrator (only while there is none) and sign in")
        .reads::<auth::FirstAdministrator>()
        .answers::<auth::Whoami>()
            .fails(&[403, 409, 429]),
        endpoint(M::POST, "/api/session", Public, auth::sign_in).summary("Sign in")
            .reads::<auth::SignIn>()
            .answers::<auth::Whoami>()
            .fails(&[401, 429]),
        endpoint(M::GET, "/api/session", Session, auth::whoami)
            .summary("Who is signed in, with roles and permissions")
            .answers::<auth::Whoami>(),
        endpoint(M::DELETE, "/api/session", Session, auth::sign_out).summary("Sign out")
            .no_content(),
        endpoint(M::GET, "/api/permissions", Session, auth::permissions)
            .summary("Every permission with its meaning")
            .answers::<Vec<auth::PermissionInfo>>(),
        endpoint(M::GET, "/api/events", Session, events::stream)
            .summary("Live statuses as server-sent events")
            .sends(&["text/event-stream"]),
        endpoint(M::GET, "/api/openapi.json", Public, openapi::document)
            .summary("This description of the API")
            .answers::<serde_json::Value>()
            .without_database(),
        endpoint(M::GET, "/api/users", Needs(UsersRead), users::list)
            .summary("One page of users, searched and sorted")
            .answers::<super::Page<users::UserView>>()
            .query(&["search", "page", "per_page", "sort"])
            .fails(&[400]),
        endpoint(M::POST, "/api/users", Needs(UsersWrite), users::create)
            .summary("Create a user")
            .reads::<users::UserForm>()
            .answers::<users::UserView>()
            .created()
            .fails(&[400, 409]),
        endpoint(M::GET, "/api/users/{id}", Needs(UsersRead), users::get)
            .summary("One user")
            .answers::<users::UserView>()
            .fails(&[404]),
        endpoint(M::PUT, "/api/users/{id}", Needs(UsersWrite), users::update)
            .summary("Change a user")
            .reads::<users::UserForm>()
            .answers::<users::UserView>()
            .fails(&[400, 404, 409]),
        endpoint(
            M::DELETE,
            "/api/users/{id}",
            Needs(UsersWrite),
            users::delete,
        )
        .summary("Delete a user")
            .no_content()
            .fails(&[404]),
        endpoint(
            M::GET,
            "/api/users/{id}/groups",
            Needs(UsersRead),
            users::groups,
        )
        .summary("The groups of a user")
        .answers::<Vec<groups::GroupView>>()
            .fails(&[404]),
        endpoint(
            M::PUT,
            "/api/users/{id}/groups",
            Needs(UsersWrite),
            users::set_groups,
        )
        .summary("Set the groups of a user")
        .reads::<users::UserGroups>()
        .answers::<Vec<groups::GroupView>>()
            .fails(&[400, 404]),
        endpoint(
            M::GET,
            "/api/users/{id}/devices",
            Needs(DevicesRead),
            devices::of_user,
        )
        .summary("The devices of a user")
        .answers::<Vec<devices::DeviceView>>()
            .fails(&[404]),
        endpoint(M::GET, "/api/devices", Needs(DevicesRead), devices::find)
            .summary("The device with a PIN (a list of zero or one)")
            .answers::<Vec<devices::DeviceView>>()
            .query(&["pin"])
            .fails(&[400]),
        endpoint(
            M::GET,
            "/api/devices/{id}",
            Needs(DevicesRead),
            devices::get,
        )
        .summary("One device: diagnostics, its user's statistics and recent messages")
        .answers::<devices::DeviceDetail>()
            .fails(&[404]),
        endpoint(
            M::POST,
            "/api/devices/{id}/commands",
            Needs(DevicesWrite),
            devices::command,
        )
        .summary("Queue an IT admin command (lock, wipe_all, wipe_work, new_key); wipes need the PIN typed again")
        .reads::<devices::CommandForm>()
        .answers::<devices::CommandView>()
            .accepted()
            .fails(&[400, 404]),
        endpoint(
            M::GET,
            "/api/devices/{id}/commands",
            Needs(DevicesRead),
            devices::commands,
        )
        .summary("The device's IT admin commands and where each stands")
        .answers::<Vec<devices::CommandView>>()
            .fails(&[404]),
        endpoint(
            M::GET,
            "/api/messages/{ref_id}",
            Needs(DevicesRead),
            devices::trace,
        )
        .summary("The trace of one message by RefID: each hop with its time")
        .answers::<devices::MessageTrace>()
            .fails(&[400, 404]),
        endpoint(M::GET, "/api/groups", Needs(GroupsRead), groups::list)
            .summary("Every group with its number of members")
            .answers::<Vec<groups::GroupSummary>>(),
        endpoint(M::POST, "/api/groups", Needs(GroupsWrite), groups::create)
            .summary("Create a group")
            .reads::<groups::GroupForm>()
            .answers::<groups::GroupView>()
            .created()
            .fails(&[400, 409]),
        endpoint(M::GET, "/api/groups/{id}", Needs(GroupsRead), groups::get)
            .summary("One group with its members")
            .answers::<groups::GroupDetail>()
            .fails(&[404]),
        endpoint(
            M::DELETE,
            "/api/groups/{id}",
            Needs(GroupsWrite),
            groups::delete,
        )
        .summary("Delete a group")
            .no_content()
            .fails(&[404]),
        endpoint(
            M::PUT,
            "/api/groups/{id}/members/{user_id}",
            Needs(GroupsWrite),
            groups::add_member,
        )
        .summary("Add a user to a group")
            .no_content()
            .fails(&[400, 404]),
        endpoint(
            M::DELETE,
            "/api/groups/{id}/members/{user_id}",
            Needs(GroupsWrite),
            groups::remove_member,
        )
        .summary("Remove a user from a group")
            .no_content()
            .fails(&[400, 404]),
        endpoint(
            M::GET,
            "/api/administrators",
            Needs(AdministratorsRead),
            administrators::list,
        )
        .summary("Every administrator with roles and groups")
        .answers::<Vec<administrators::AdministratorView>>(),
        endpoint(
            M::POST,
            "/api/administrators",
            Needs(AdministratorsWrite),
            administrators::create,
        )
        .summary("Create an administrator")
        .reads::<administrators::NewAdministratorForm>()
        .answers::<administrators::AdministratorView>()
            .created()
            .fails(&[400]),
        endpoint(
            M::PUT,
            "/api/administrators/{id}",
            Needs(AdministratorsWrite),
            administrators::update,
        )
        .summary("Change an administrator (name, disabled, roles)")
        .reads::<administrators::AdministratorEdit>()
        .answers::<administrators::AdministratorView>()
            .fails(&[400, 404]),
        endpoint(
            M::GET,
            "/api/roles",
            Needs(AdministratorsRead),
            administrators::roles,
        )
        .summary("Every role with its grants")
        .answers::<Vec<administrators::RoleView>>(),
        endpoint(
            M::POST,
            "/api/roles",
            Needs(AdministratorsWrite),
            administrators::create_role,
        )
        .summary("Create a custom role")
        .reads::<administrators::RoleForm>()
        .answers::<administrators::RoleView>()
            .created()
            .fails(&[400, 409]),
        endpoint(
            M::DELETE,
            "/api/roles/{id}",
            Needs(AdministratorsWrite),
            administrators::delete_role,
        )
        .summary("Delete a custom role")
            .no_content()
            .fails(&[400, 404]),
        endpoint(
            M::GET,
            "/api/administrator-groups",
            Needs(AdministratorsRead),
            administrators::groups,
        )
        .summary("Every administrator group")
        .answers::<Vec<administrators::AdministratorGroupView>>(),
        endpoint(
            M::POST,
            "/api/administrator-groups",
            Needs(AdministratorsWrite),
            administrators::create_group,
        )
        .summary("Create an administrator group")
        .reads::<administrators::AdministratorGroupForm>()
        .answers::<administrators::AdministratorGroupView>()
            .created()
            .fails(&[400]),
        endpoint(
            M::DELETE,
            "/api/administrator-groups/{id}",
            Needs(AdministratorsWrite),
            administrators::delete_group,
        )
        .summary("Delete an administrator group")
            .no_content()
            .fails(&[404]),
        endpoint(
            M::POST,
            "/api/users/{id}/resend",
            Needs(UsersWrite),
            users::resend,
        )
        .summary("Send the user's IT policy or service books again to the user's activated device")
        .reads::<users::ResendForm>()
        .answers::<users::ResendView>()
            .accepted()
            .fails(&[400, 404, 409]),
        endpoint(
            M::GET,
            "/api/users/{id}/policy",
            Needs(PoliciesRead),
            policies::resolved,
        )
        .summary(
            "The IT policy that applies to a user, rule by rule, with where each value comes from",
        )
        .answers::<policies::ResolvedView>()
            .fails(&[404]),
        endpoint(
            M::GET,
            "/api/users/{id}/activation",
            Needs(UsersRead),
            activation::get,
        )
        .summary("A user's activation: status, activation password (expiry, attempts) and steps")
        .answers::<activation::ActivationView>()
            .fails(&[404]),
        endpoint(
            M::PUT,
            "/api/users/{id}/activation-password",
            Needs(UsersActivation),
            activation::set_password,
        )
        .summary("Set or generate a user's activation password (the user becomes Initializing)")
        .reads::<activation::PasswordForm>()
        .answers::<activation::PasswordSet>()
            .fails(&[400, 404]),
        endpoint(
            M::GET,
            "/api/policy-rules",
            Needs(PoliciesRead),
            policies::rules,
        )
        .summary("The IT policy rule catalog with each rule's type, range and default")
        .answers::<Vec<policies::RuleInfo>>(),
        endpoint(M::GET, "/api/policies", Needs(PoliciesRead), policies::list)
            .summary("Every IT policy with its number of rules and assignments")
            .answers::<Vec<policies::PolicySummary>>(),
        endpoint(
            M::POST,
            "/api/policies",
            Needs(PoliciesWrite),
            policies::create,
        )
        .summary("Create an IT policy (rules out of range are refused, naming the range)")
        .reads::<policies::PolicyForm>()
        .answers::<policies::PolicyDetail>()
            .created()
            .fails(&[400]),
        endpoint(
            M::GET,
            "/api/policies/{id}",
            Needs(PoliciesRead),
            policies::get,
        )
        .summary("One IT policy with its rules and assignments")
        .answers::<policies::PolicyDetail>()
            .fails(&[404]),
        endpoint(
            M::PUT,
            "/api/policies/{id}",
            Needs(PoliciesWrite),
            policies::update,
        )
        .summary("Change an IT policy: name, description, rules, default")
        .reads::<policies::PolicyForm>()
        .answers::<policies::PolicyDetail>()
            .fails(&[400, 404, 409]),
        endpoint(
            M::DELETE,
            "/api/policies/{id}",
            Needs(PoliciesWrite),
            policies::delete,
        )
        .summary("Delete an IT policy with its rules and assignments")
            .no_content()
            .fails(&[404]),
        endpoint(
            M::POST,
            "/api/policies/{id}/assignments",
            Needs(PoliciesWrite),
            assignments::assign::<ItPolicy>,
        )
        .summary("Assign an IT policy to a user, or to a group with a rank")
        .reads::<policies::AssignmentForm>()
        .answers::<policies::AssignmentView>()
            .created()
            .fails(&[400, 404]),
        endpoint(
            M::DELETE,
            "/api/policies/{id}/assignments/{assignment_id}",
            Needs(PoliciesWrite),
            assignments::unassign::<ItPolicy>,
        )
        .summary("Remove an IT policy's assignment")
            .no_content()
            .fails(&[400, 404]),
        endpoint(M::GET, "/api/software", Needs(SoftwareRead), software::list)
            .summary("Every software configuration with its number of applications and assignments")
            .answers::<Vec<software::SoftwareSummary>>(),
        endpoint(
            M::POST,
            "/api/software",
            Needs(SoftwareWrite),
            software::create,
        )
        .summary("Create a software configuration")
        .reads::<software::SoftwareForm>()
        .answers::<software::SoftwareDetail>()
            .created()
            .fails(&[400, 409]),
        endpoint(
            M::GET,
            "/api/software/{id}",
            Needs(SoftwareRead),
            software::get,
        )
        .summary("One software configuration with its applications and assignments")
        .answers::<software::SoftwareDetail>()
            .fails(&[404]),
        endpoint(
            M::PUT,
            "/api/software/{id}",
            Needs(SoftwareWrite),
            software::update,
        )
        .summary("Change a software configuration: name, description, applications")
        .reads::<software::SoftwareForm>()
        .answers::<software::SoftwareDetail>()
            .fails(&[400, 404, 409]),
        endpoint(
            M::DELETE,
            "/api/software/{id}",
            Needs(SoftwareWrite),
            software::delete,
        )
        .summary("Delete a software configuration with its applications and assignments")
            .no_content()
            .fails(&[404]),
        endpoint(
            M::POST,
            "/api/software/{id}/assignments",
            Needs(SoftwareWrite),
            assignments::assign::<SoftwareConfiguration>,
        )
        .summary("Assign a software configuration to a user or a group")
        .reads::<software::SoftwareAssignmentForm>()
        .answers::<software::SoftwareAssignmentView>()
            .created()
            .fails(&[400, 404]),
        endpoint(
            M::DELETE,
            "/api/software/{id}/assignments/{assignment_id}",
            Needs(SoftwareWrite),
            assignments::unassign::<SoftwareConfiguration>,
        )
        .summary("Remove a software configuration's assignment")
            .no_content()
            .fails(&[400, 404]),
        endpoint(M::GET, "/api/filters", Needs(FiltersRead), filters::list)
            .summary("The global message filters, in the order they are tried")
            .answers::<Vec<filters::FilterView>>(),
        endpoint(
            M::POST,
            "/api/filters",
            Needs(FiltersWrite),
            filters::create,
        )
        .summary("Add a global message filter after the others")
        .reads::<filters::FilterForm>()
        .answers::<filters::FilterView>()
            .created()
            .fails(&[400]),
        endpoint(
            M::PUT,
            "/api/filters/order",
            Needs(FiltersWrite),
            filters::reorder,
        )
        .summary("Put the global message filters in a new order")
        .reads::<filters::FilterOrder>()
        .answers::<Vec<filters::FilterView>>()
            .fails(&[400]),
        endpoint(
            M::PUT,
            "/api/filters/{id}",
            Needs(FiltersWrite),
            filters::update,
        )
        .summary("Change a global message filter")
        .reads::<filters::FilterForm>()
        .answers::<filters::FilterView>()
            .fails(&[400, 404]),
        endpoint(
            M::DELETE,
            "/api/filters/{id}",
            Needs(FiltersWrite),
            filters::delete,
        )
        .summary("Delete a global message filter")
            .no_content()
            .fails(&[404]),
        endpoint(
            M::GET,
            "/api/directories",
            Needs(ServersRead),
            directories::list,
        )
        .summary("The configured directories with their recent sync runs")
        .answers::<Vec<directories::DirectoryView>>(),
        endpoint(
            M::GET,
            "/api/directories/{name}",
            Needs(ServersRead),
            directories::get,
        )
        .summary("One directory: its sync runs and the progress of a sync started from the console")
        .answers::<directories::DirectoryView>()
            .fails(&[404]),
        endpoint(
            M::POST,
            "/api/directories/{name}/sync",
            Needs(ServersWrite),
            directories::start_sync,
        )
        .summary("Start a sync of a directory (incremental, or full); answers at once")
        .reads::<directories::SyncForm>()
        .answers::<directories::DirectoryView>()
            .accepted()
            .fails(&[404, 409]),
        endpoint(
            M::POST,
            "/api/components/{key}/restart",
            Needs(ServersWrite),
            components::restart,
        )
        .summary("Restart a server component through the Controller")
        .answers::<components::RestartRequested>()
            .accepted()
            .fails(&[404]),
        endpoint(M::GET, "/api/sync", Needs(ServersRead), sync::overview)
            .summary("Synchronization: the per-database settings, counts, and one page of users' sync states")
            .answers::<sync::SyncOverview>()
            .query(&["page", "per_page"]),
        endpoint(M::PUT, "/api/sync/{database}", Needs(ServersWrite), sync::set)
            .summary("Change how one organizer database is synchronized (on, direction, conflict resolution)")
            .reads::<sync::SyncSettingForm>()
            .answers::<sync::SyncSettingView>()
            .fails(&[400, 404]),
        endpoint(M::GET, "/api/wireless", Needs(ServersRead), wireless::get)
            .summary("The wireless network connection (never the SRP key), licences in use and the SRP link")
            .answers::<wireless::WirelessView>(),
        endpoint(M::PUT, "/api/wireless", Needs(ServersWrite), wireless::set)
            .summary("Set the wireless network connection; the SRP link opens again with it")
            .reads::<wireless::WirelessForm>()
            .answers::<wireless::WirelessView>()
            .fails(&[400]),
        endpoint(
            M::GET,
            "/api/statistics",
            Needs(ServersRead),
            statistics::report,
        )
        .summary("Message statistics: the server's counters and the busiest users'")
        .answers::<statistics::StatisticsReport>(),
        endpoint(M::GET, "/api/audit", Needs(AuditRead), audit::list)
            .summary("One page of the audit log, newest first")
            .answers::<super::Page<audit::AuditView>>()
            .query(&["page", "per_page"]),
        endpoint(M::GET, "/api/audit/export", Needs(AuditRead), audit::export)
            .summary("The whole audit log as a CSV or JSON file")
            .query(&["format"])
            .sends(&["text/csv", "application/json"])
            .fails(&[400]),
        endpoint(M::GET, "/api/audit/verify", Needs(AuditRead), audit::verify)
            .summary("Check the audit log hash chain")
            .answers::<audit::Verification>(),
    ]
}
