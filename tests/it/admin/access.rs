//! Who may call what: every role against every endpoint, and the
//! OpenAPI document built from the same list.

use super::*;

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
