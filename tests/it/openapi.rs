//! `/api/openapi.json` tells the truth: against the real server core, every
//! answer to a broad set of requests — successes and failures (signed out,
//! forbidden, not found, conflicts, bodies the server refuses, a throttled
//! sign-in) — has a status the description lists for that operation, and
//! its body validates against the schema given for that status. Bodies the
//! server accepts validate against the request schema; bodies it refuses
//! for a word it does not know are refused by the schema too.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bramble::config::Settings;
use bramble::server::{Listeners, Server};
use serde_json::{json, Map, Value};

use crate::fixture::http_request;

/// The description and what has been checked against it.
struct Described {
    addr: SocketAddr,
    doc: Value,
    /// (method, path template, status) of every answer checked.
    seen: BTreeSet<(String, String, u16)>,
}

/// A validator for `schema`, whose references point into the description's
/// `components`.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = match schema {
        Value::Object(map) => map.clone(),
        Value::Bool(b) => {
            let mut map = Map::new();
            if !b {
                map.insert("not".into(), json!({}));
            }
            map
        }
        other => panic!("not a schema: {other}"),
    };
    root.insert("components".into(), doc["components"].clone());
    jsonschema::draft202012::new(&Value::Object(root)).expect("the schema compiles")
}

/// The path template of the description that `path` is an instance of;
/// literal segments win over parameters (`/api/filters/order`).
fn template<'a>(doc: &'a Value, path: &str) -> &'a str {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(&str, usize)> = None;
    for candidate in doc["paths"].as_object().expect("paths").keys() {
        let parts: Vec<&str> = candidate.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let fits = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') {
                !s.is_empty()
            } else {
                literal += 1;
                t == s
            }
        });
        if fits && best.is_none_or(|(_, l)| literal > l) {
            best = Some((candidate.as_str(), literal));
        }
    }
    best.unwrap_or_else(|| panic!("no operation describes {path}"))
        .0
}

impl Described {
    /// Sends a request and checks the answer against the description;
    /// returns its status and JSON body (null when there is none).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = http_request(self.addr, method, path, token, body.as_ref()).await;
        let template = template(&self.doc, path).to_owned();
        let lower = method.to_lowercase();
        let operation = self.doc["paths"][&template][&lower].clone();
        assert!(
            operation.is_object(),
            "{method} {template} is not described"
        );
        let documented: Vec<&String> = operation["responses"]
            .as_object()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        let response = &operation["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which its description does not list \
             ({documented:?}): {text}"
        );
        let answer: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        match response["content"].as_object() {
            None => assert!(
                text.is_empty(),
                "{method} {path} answered {status} with a body its description does not give: {text}"
            ),
            Some(content) => {
                if let Some(schema) = content.get("application/json").map(|c| &c["schema"]) {
                    if content.len() == 1 {
                        let checked = validator(&self.doc, schema);
                        let errors: Vec<String> = checked
                            .iter_errors(&answer)
                            .map(|e| format!("{} at {}", e, e.instance_path()))
                            .collect();
                        assert!(
                            errors.is_empty(),
                            "{method} {path} answered {status} with a body its schema refuses: \
                             {errors:?}\n{text}"
                        );
                    }
                }
            }
        }
        if (200..300).contains(&status) {
            if let Some(sent) = &body {
                let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
                assert!(
                    validator(&self.doc, schema).is_valid(sent),
                    "the server accepted a body for {method} {template} that its schema refuses: {sent}"
                );
            }
        }
        self.seen.insert((lower, template, status));
        (status, answer)
    }

    /// Checks that the request schema of `method path` refuses `body`, as
    /// the server does.
    fn schema_refuses(&self, method: &str, path: &str, body: &Value) {
        let template = template(&self.doc, path);
        let schema = &self.doc["paths"][template][method.to_lowercase()]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert!(
            !validator(&self.doc, schema).is_valid(body),
            "the server refuses this body for {method} {template}, its schema does not: {body}"
        );
    }
}

#[tokio::test]
async fn every_answer_is_described() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::load_from(None, &[]).unwrap().settings;
    settings.data_dir = dir.path().to_path_buf();
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.router.lan_listen = None;
    let listeners = Listeners::bind(&settings).await.unwrap();
    let server = Server::start_with(settings, listeners, Vec::new())
        .await
        .unwrap();
    let addr = server.admin_addr();

    let (status, text) = http_request(addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let mut api = Described {
        addr,
        doc,
        seen: BTreeSet::new(),
    };

    // First run, signing in and out, the throttle.
    let (_, setup) = api.call("GET", "/api/setup", None, None).await;
    assert_eq!(setup["needs_first_administrator"], true);
    let (status, _) = api.call("GET", "/api/users", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = api
        .call("POST", "/api/setup", None, Some(json!({"login": "first"})))
        .await;
    assert_eq!(status, 400);
    let (status, refused) = api
        .call(
            "POST",
            "/api/setup",
            None,
            Some(json!({"login": "first", "password": "long enough password", "setup_code": "WRONG"})),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    let code = server.state().setup.code().unwrap();
    let first = json!({"login": "first", "password": "long enough password", "bearer": true, "setup_code": code});
    let (status, who) = api
        .call("POST", "/api/setup", None, Some(first.clone()))
        .await;
    assert_eq!(status, 200, "{who}");
    let root = who["token"].as_str().unwrap().to_owned();
    let (status, _) = api.call("POST", "/api/setup", None, Some(first)).await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call("POST", "/api/session", None, Some(json!("not a form")))
        .await;
    assert_eq!(status, 400);
    let signed_in = json!({"login": "first", "password": "long enough password", "bearer": true});
    let (status, who) = api
        .call("POST", "/api/session", None, Some(signed_in))
        .await;
    assert_eq!(status, 200);
    let token = who["token"].as_str().unwrap().to_owned();
    let t = Some(token.as_str());
    api.call("GET", "/api/session", t, None).await;
    api.call("GET", "/api/permissions", t, None).await;

    // Administrators and roles; a helpdesk administrator is forbidden what
    // their role lacks.
    let (_, roles) = api.call("GET", "/api/roles", t, None).await;
    let helpdesk_role = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Senior Helpdesk")
        .unwrap()["id"]
        .clone();
    let builtin = roles[0]["id"].clone();
    let (status, helper) = api
        .call(
            "POST",
            "/api/administrators",
            t,
            Some(json!({"login": "help", "password": "long enough password", "role_ids": [helpdesk_role]})),
        )
        .await;
    assert_eq!(status, 201, "{helper}");
    let (status, _) = api
        .call(
            "POST",
            "/api/administrators",
            t,
            Some(json!({"login": "short", "password": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    let helper_id = helper["id"].as_i64().unwrap();
    api.call(
        "PUT",
        &format!("/api/administrators/{helper_id}"),
        t,
        Some(json!({"display_name": "Help Desk"})),
    )
    .await;
    let (status, _) = api
        .call(
            "PUT",
            "/api/administrators/999999",
            t,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 404);
    api.call("GET", "/api/administrators", t, None).await;
    let (_, help_who) = api
        .call(
            "POST",
            "/api/session",
            None,
            Some(json!({"login": "help", "password": "long enough password", "bearer": true})),
        )
        .await;
    let help = help_who["token"].as_str().unwrap().to_owned();
    let h = Some(help.as_str());
    let (status, _) = api
        .call("POST", "/api/policies", h, Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 403);
    let (status, _) = api.call("GET", "/api/audit", h, None).await;
    assert_eq!(status, 403);
    let (status, role) = api
        .call(
            "POST",
            "/api/roles",
            t,
            Some(json!({"name": "Readers", "permissions": ["users.read"]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            "POST",
            "/api/roles",
            t,
            Some(json!({"name": "Readers", "permissions": ["users.read"]})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call(
            "POST",
            "/api/roles",
            t,
            Some(json!({"name": "Odd", "permissions": ["no.such"]})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call("DELETE", &format!("/api/roles/{builtin}"), t, None)
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call("DELETE", &format!("/api/roles/{}", role["id"]), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("DELETE", &format!("/api/roles/{}", role["id"]), t, None)
        .await;
    assert_eq!(status, 404);
    let (status, admins) = api
        .call(
            "POST",
            "/api/administrator-groups",
            t,
            Some(json!({"name": "Night shift", "administrator_ids": [helper_id]})),
        )
        .await;
    assert_eq!(status, 201);
    api.call("GET", "/api/administrator-groups", t, None).await;
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/administrator-groups/{}", admins["id"]),
            t,
            None,
        )
        .await;
    assert_eq!(status, 204);

    // Users and groups.
    let (status, user) = api
        .call(
            "POST",
            "/api/users",
            t,
            Some(json!({"display_name": "Ann Example", "email": "ann@example.com"})),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let uid = user["id"].as_i64().unwrap();
    let (status, _) = api
        .call(
            "POST",
            "/api/users",
            t,
            Some(json!({"display_name": "Ann Again", "email": "ann@example.com"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call(
            "POST",
            "/api/users",
            t,
            Some(json!({"display_name": "No Mail"})),
        )
        .await;
    assert_eq!(status, 400);
    api.call("GET", "/api/users?search=ann&page=1&per_page=10", t, None)
        .await;
    let (status, _) = api.call("GET", "/api/users?sort=age", t, None).await;
    assert_eq!(status, 400);
    let (status, _) = api.call("GET", "/api/users?page=first", t, None).await;
    assert_eq!(status, 400);
    api.call("GET", &format!("/api/users/{uid}"), t, None).await;
    let (status, _) = api.call("GET", "/api/users/999999", t, None).await;
    assert_eq!(status, 404);
    let (status, _) = api.call("GET", "/api/users/ann", t, None).await;
    assert_eq!(status, 404);
    let renamed = json!({"display_name": "Ann Renamed", "email": "ann@example.com", "account_status": "disabled"});
    let (status, _) = api
        .call("PUT", &format!("/api/users/{uid}"), t, Some(renamed))
        .await;
    assert_eq!(status, 200);
    let odd =
        json!({"display_name": "Ann", "email": "ann@example.com", "account_status": "asleep"});
    let (status, _) = api
        .call("PUT", &format!("/api/users/{uid}"), t, Some(odd.clone()))
        .await;
    assert_eq!(status, 400);
    api.schema_refuses("PUT", &format!("/api/users/{uid}"), &odd);
    let (status, group) = api
        .call("POST", "/api/groups", t, Some(json!({"name": "Sales"})))
        .await;
    assert_eq!(status, 201);
    let gid = group["id"].as_i64().unwrap();
    let (status, _) = api
        .call("POST", "/api/groups", t, Some(json!({"name": "Sales"})))
        .await;
    assert_eq!(status, 409);
    api.call("GET", "/api/groups", t, None).await;
    api.call(
        "PUT",
        &format!("/api/users/{uid}/groups"),
        t,
        Some(json!({"group_ids": [gid]})),
    )
    .await;
    api.call("GET", &format!("/api/users/{uid}/groups"), t, None)
        .await;
    let (status, _) = api
        .call("PUT", &format!("/api/groups/{gid}/members/{uid}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("PUT", &format!("/api/groups/{gid}/members/999999"), t, None)
        .await;
    assert_eq!(status, 400);
    api.call("GET", &format!("/api/groups/{gid}"), t, None)
        .await;
    api.call("GET", &format!("/api/users/{uid}/devices"), t, None)
        .await;
    api.call("GET", &format!("/api/users/{uid}/activation"), t, None)
        .await;
    let (status, set) = api
        .call(
            "PUT",
            &format!("/api/users/{uid}/activation-password"),
            t,
            Some(json!({"lifetime_hours": 24})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let (status, _) = api
        .call(
            "PUT",
            &format!("/api/users/{uid}/activation-password"),
            t,
            Some(json!({"password": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/users/{uid}/resend"),
            t,
            Some(json!({"what": "policy"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/users/{uid}/resend"),
            t,
            Some(json!({"what": "everything"})),
        )
        .await;
    assert_eq!(status, 400);
    api.schema_refuses(
        "POST",
        &format!("/api/users/{uid}/resend"),
        &json!({"what": "everything"}),
    );

    // IT policies and their assignment.
    api.call("GET", "/api/policy-rules", t, None).await;
    let (status, policy) = api
        .call(
            "POST",
            "/api/policies",
            t,
            Some(json!({"name": "Strict", "rules": {"MinimumPasswordLength": 8}})),
        )
        .await;
    assert_eq!(status, 201, "{policy}");
    let pid = policy["id"].as_i64().unwrap();
    // A name taken: refused as input when creating, as a conflict when
    // renaming.
    let (status, _) = api
        .call("POST", "/api/policies", t, Some(json!({"name": "Strict"})))
        .await;
    assert_eq!(status, 400);
    let (status, other) = api
        .call(
            "POST",
            "/api/policies",
            t,
            Some(json!({"name": "Standard"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            "PUT",
            &format!("/api/policies/{}", other["id"]),
            t,
            Some(json!({"name": "Strict"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = api
        .call(
            "POST",
            "/api/policies",
            t,
            Some(json!({"name": "Loose", "rules": {"MinimumPasswordLength": 99}})),
        )
        .await;
    assert_eq!(status, 400);
    api.call("GET", "/api/policies", t, None).await;
    api.call("GET", &format!("/api/policies/{pid}"), t, None)
        .await;
    api.call(
        "PUT",
        &format!("/api/policies/{pid}"),
        t,
        Some(json!({"name": "Strict", "description": "for sales", "is_default": true})),
    )
    .await;
    let (status, mine) = api
        .call(
            "POST",
            &format!("/api/policies/{pid}/assignments"),
            t,
            Some(json!({"user_id": uid})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/policies/{pid}/assignments"),
            t,
            Some(json!({"group_id": gid, "rank": 0})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call(
            "POST",
            "/api/policies/999999/assignments",
            t,
            Some(json!({"group_id": gid})),
        )
        .await;
    assert_eq!(status, 404);
    api.call("GET", &format!("/api/users/{uid}/policy"), t, None)
        .await;
    let unassign = format!("/api/policies/{pid}/assignments/{}", mine["id"]);
    let (status, _) = api.call("DELETE", &unassign, t, None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call("DELETE", &unassign, t, None).await;
    assert_eq!(status, 400);

    // Software configurations and their assignment.
    let apps = json!([{"name": "Maps", "disposition": "required"}]);
    let (status, config) = api
        .call(
            "POST",
            "/api/software",
            t,
            Some(json!({"name": "Field kit", "applications": apps})),
        )
        .await;
    assert_eq!(status, 201, "{config}");
    let sid = config["id"].as_i64().unwrap();
    let odd =
        json!({"name": "Odd kit", "applications": [{"name": "Maps", "disposition": "maybe"}]});
    let (status, _) = api
        .call("POST", "/api/software", t, Some(odd.clone()))
        .await;
    assert_eq!(status, 400);
    api.schema_refuses("POST", "/api/software", &odd);
    let (status, _) = api
        .call(
            "PUT",
            &format!("/api/software/{sid}"),
            t,
            Some(json!({"name": "Field kit"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            "POST",
            "/api/software",
            t,
            Some(json!({"name": "Field kit"})),
        )
        .await;
    assert_eq!(status, 409);
    api.call("GET", "/api/software", t, None).await;
    let (status, assigned) = api
        .call(
            "POST",
            &format!("/api/software/{sid}/assignments"),
            t,
            Some(json!({"group_id": gid})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/software/{sid}/assignments"),
            t,
            Some(json!({"user_id": uid, "group_id": gid})),
        )
        .await;
    assert_eq!(status, 400);
    api.call("GET", &format!("/api/software/{sid}"), t, None)
        .await;
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/software/{sid}/assignments/{}", assigned["id"]),
            t,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("DELETE", &format!("/api/software/{sid}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("GET", &format!("/api/software/{sid}"), t, None)
        .await;
    assert_eq!(status, 404);

    // Global message filters.
    let filter = json!({"name": "Newsletters", "conditions": [{"field": "subject", "text": "news"}], "action": "do_not_forward"});
    let (status, made) = api
        .call("POST", "/api/filters", t, Some(filter.clone()))
        .await;
    assert_eq!(status, 201, "{made}");
    let fid = made["id"].as_i64().unwrap();
    let odd = json!({"name": "Odd", "conditions": [{"field": "subject", "text": "x"}], "action": "shred"});
    let (status, _) = api.call("POST", "/api/filters", t, Some(odd.clone())).await;
    assert_eq!(status, 400);
    api.schema_refuses("POST", "/api/filters", &odd);
    let important = json!({"name": "Important", "conditions": [{"field": "importance", "importance": "high"}], "action": "forward_priority"});
    let (status, _) = api
        .call("PUT", &format!("/api/filters/{fid}"), t, Some(important))
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call("PUT", "/api/filters/order", t, Some(json!({"ids": [fid]})))
        .await;
    assert_eq!(status, 200);
    api.call("GET", "/api/filters", t, None).await;
    let (status, _) = api
        .call("DELETE", &format!("/api/filters/{fid}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("PUT", &format!("/api/filters/{fid}"), t, Some(filter))
        .await;
    assert_eq!(status, 404);

    // Devices and messages: none yet.
    let (status, found) = api.call("GET", "/api/devices?pin=2A3B4C5D", t, None).await;
    assert_eq!((status, found), (200, json!([])));
    let (status, _) = api.call("GET", "/api/devices?pin=nonsense", t, None).await;
    assert_eq!(status, 400);
    let (status, _) = api.call("GET", "/api/devices/999999", t, None).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call(
            "POST",
            "/api/devices/999999/commands",
            t,
            Some(json!({"kind": "lock", "password": "1234"})),
        )
        .await;
    assert_eq!(status, 404);
    let odd = json!({"kind": "explode"});
    let (status, _) = api
        .call("POST", "/api/devices/999999/commands", t, Some(odd.clone()))
        .await;
    assert_eq!(status, 400);
    api.schema_refuses("POST", "/api/devices/999999/commands", &odd);
    let (status, _) = api.call("GET", "/api/messages/not-a-ref-id", t, None).await;
    assert!(status == 400 || status == 404);

    // Servers: directories, components, synchronization, wireless.
    api.call("GET", "/api/directories", t, None).await;
    let (status, _) = api.call("GET", "/api/directories/none", t, None).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call("POST", "/api/directories/none/sync", t, Some(json!({})))
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call("POST", "/api/components/nothing/restart", t, None)
        .await;
    assert_eq!(status, 404);
    api.call("GET", "/api/sync?page=1", t, None).await;
    let (status, _) = api
        .call(
            "PUT",
            "/api/sync/contacts",
            t,
            Some(json!({"enabled": true, "direction": "bidirectional"})),
        )
        .await;
    assert_eq!(status, 200);
    let odd = json!({"direction": "sideways"});
    let (status, _) = api
        .call("PUT", "/api/sync/contacts", t, Some(odd.clone()))
        .await;
    assert_eq!(status, 400);
    api.schema_refuses("PUT", "/api/sync/contacts", &odd);
    let (status, _) = api
        .call(
            "PUT",
            "/api/sync/recipes",
            t,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 404);
    api.call("GET", "/api/wireless", t, None).await;
    let (status, _) = api
        .call(
            "PUT",
            "/api/wireless",
            t,
            Some(json!({"srp_id": "", "relay_host": ""})),
        )
        .await;
    assert_eq!(status, 400);
    api.call("GET", "/api/statistics", t, None).await;

    // The audit log.
    api.call("GET", "/api/audit?page=1&per_page=5", t, None)
        .await;
    api.call("GET", "/api/audit/verify", t, None).await;
    let (status, _) = api
        .call("GET", "/api/audit/export?format=csv", t, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call("GET", "/api/audit/export?format=xml", t, None)
        .await;
    assert_eq!(status, 400);

    // Deletions, then signing out.
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/groups/{gid}/members/{uid}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("DELETE", &format!("/api/groups/{gid}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("DELETE", &format!("/api/groups/{gid}"), t, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call("DELETE", &format!("/api/policies/{pid}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("DELETE", &format!("/api/users/{uid}"), t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("DELETE", &format!("/api/users/{uid}"), t, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = api.call("DELETE", "/api/session", t, None).await;
    assert_eq!(status, 204);
    let (status, _) = api.call("GET", "/api/session", t, None).await;
    assert_eq!(status, 401);
    let (status, _) = api.call("GET", "/api/session", Some(&root), None).await;
    assert_eq!(status, 200);

    let operations: BTreeSet<(&String, &String)> =
        api.seen.iter().map(|(m, p, _)| (m, p)).collect();
    let errors = api.seen.iter().filter(|(_, _, s)| *s >= 400).count();
    assert!(
        operations.len() >= 60 && errors >= 40,
        "a broad set of operations and failures is checked: {} operations, {errors} kinds of failure",
        operations.len()
    );
    // Failed sign-ins make this address wait (last: nothing signs in after).
    for _ in 0..5 {
        let (status, _) = api
            .call(
                "POST",
                "/api/session",
                None,
                Some(json!({"login": "nobody", "password": "wrong password"})),
            )
            .await;
        assert_eq!(status, 401);
    }
    let (status, _) = api
        .call(
            "POST",
            "/api/session",
            None,
            Some(json!({"login": "nobody", "password": "wrong password"})),
        )
        .await;
    assert_eq!(status, 429);
    server.shutdown().await.unwrap();
}
