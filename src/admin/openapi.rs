//! `GET /api/openapi.json`: an OpenAPI 3.1 description generated from the
//! endpoint list, so it always names every endpoint and the permission it
//! needs (`x-bramble-permission`). Request and response bodies whose Rust
//! types are declared in the list (`reads` / `answers`) are described by
//! JSON Schemas derived from those types (`schemars`) under
//! `components/schemas`; a type read in a laxer form than it is written
//! (fields with defaults) is described twice, the read form as
//! `{Name}Input`.
//!
//! Each operation lists the statuses it answers with: its success (200,
//! 201, 202 or 204) and every error, each with the `Error` body — those its
//! handler declares in the list and those that follow from how it is
//! declared ([`error_statuses`]). The session cookie and the bearer token
//! are the security schemes every operation but the public ones names.
//! `tests/it/openapi.rs` checks real answers against all of this.
//!
//! The description is also committed as [`COMMITTED`]: the console's
//! TypeScript types are generated from that file, and a test here fails
//! when it no longer matches [`describe`].

use axum::Json;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use super::auth::{Access, COOKIE};
use super::endpoints;

/// Where the description is committed, for the console's generated types.
pub const COMMITTED: &str = "ui/src/api/openapi.json";

/// The description as a JSON document.
pub fn describe() -> Value {
    let settings = || {
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into())
    };
    // What the server reads and what it writes can differ (defaults,
    // skipped fields): one generator for each.
    let mut requests = SchemaGenerator::new(settings().for_deserialize());
    let mut responses_gen = SchemaGenerator::new(settings().for_serialize());
    let mut paths = Map::new();
    for endpoint in endpoints::all() {
        let mut parameters: Vec<Value> = endpoint
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                // Ids are numbers; names (a directory's) and RefIDs are text.
                let kind = if is_id(name) { "integer" } else { "string" };
                json!({"name": name, "in": "path", "required": true, "schema": {"type": kind}})
            })
            .collect();
        parameters.extend(endpoint.query.iter().map(|name| {
            json!({"name": name, "in": "query", "required": false, "schema": query_schema(name)})
        }));
        let mut responses = Map::new();
        let mut done = json!({"description": success_description(endpoint.success)});
        if !endpoint.media.is_empty() {
            let media: Map<String, Value> = endpoint
                .media
                .iter()
                .map(|m| (m.to_string(), json!({})))
                .collect();
            done["content"] = Value::Object(media);
        } else if let Some(schema) = endpoint.response {
            done["content"] = json!({"application/json": {"schema": schema(&mut responses_gen)}});
        }
        // Earlier descriptions gave every success as `2XX`; clients of
        // those still find it, the same as the one status it stands for.
        let mut earlier = done.clone();
        earlier["description"] = json!(format!(
            "the same as {}: the only success it answers with",
            endpoint.success
        ));
        responses.insert("2XX".into(), earlier);
        responses.insert(endpoint.success.to_string(), done);
        for status in error_statuses(&endpoint) {
            responses.insert(
                status.to_string(),
                json!({
                    "description": error_description(status),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }),
            );
        }
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(endpoint.summary));
        operation.insert(
            "operationId".into(),
            json!(format!(
                "{} {}",
                endpoint.method.as_str().to_lowercase(),
                endpoint.path
            )),
        );
        match endpoint.access {
            Access::Public => {
                operation.insert("security".into(), json!([]));
            }
            Access::Session | Access::Permission(_) => {
                operation.insert("security".into(), json!([{"session": []}, {"bearer": []}]));
            }
        }
        if let Access::Permission(p) = endpoint.access {
            operation.insert("x-bramble-permission".into(), json!(p.as_str()));
            operation.insert(
                "description".into(),
                json!(format!(
                    "Needs the permission `{}` ({}).",
                    p.as_str(),
                    p.describe()
                )),
            );
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(schema) = endpoint.request {
            operation.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema(&mut requests)}}}),
            );
        }
        operation.insert("responses".into(), Value::Object(responses));
        let item = paths
            .entry(endpoint.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(
                endpoint.method.as_str().to_lowercase(),
                Value::Object(operation),
            );
        }
    }
    let mut schemas = responses_gen.take_definitions(true);
    let mut reads = requests.take_definitions(true);
    // A type both read and written whose read form differs (a field with a
    // default may be left out) is described twice: the read form as
    // `{Name}Input`, referred to from request bodies.
    let inputs = read_forms_that_differ(&reads, &schemas);
    for schema in reads.values_mut() {
        rename_refs(schema, &inputs);
    }
    for item in paths.values_mut() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            if let Some(body) = operation.get_mut("requestBody") {
                rename_refs(body, &inputs);
            }
        }
    }
    for (name, schema) in reads {
        if inputs.contains(&name) {
            schemas.insert(format!("{name}Input"), schema);
        } else {
            schemas.entry(name).or_insert(schema);
        }
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, e.g. PERMISSION_DENIED"},
                "message": {"type": "string", "description": "what happened and what to do, for an administrator"},
            },
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Bramble Administration Service",
            "version": crate::VERSION,
            "description": "The console's HTTP JSON API. Sign in with POST /api/session; send the session cookie or `Authorization: Bearer TOKEN`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": schemas,
        },
    })
}

/// The names of types read and written whose read form differs from the
/// written one, directly or through a type they contain.
fn read_forms_that_differ(
    reads: &Map<String, Value>,
    writes: &Map<String, Value>,
) -> std::collections::BTreeSet<String> {
    let mut differ: std::collections::BTreeSet<String> = reads
        .iter()
        .filter(|(name, read)| writes.get(*name).is_some_and(|written| written != *read))
        .map(|(name, _)| name.clone())
        .collect();
    loop {
        let more: Vec<String> = reads
            .iter()
            .filter(|(name, read)| {
                writes.contains_key(*name)
                    && !differ.contains(*name)
                    && differ.iter().any(|d| refers_to(read, d))
            })
            .map(|(name, _)| name.clone())
            .collect();
        if more.is_empty() {
            return differ;
        }
        differ.extend(more);
    }
}

fn reference(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn refers_to(schema: &Value, name: &str) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(key, value)| {
            (key == "$ref" && value.as_str() == Some(&reference(name))) || refers_to(value, name)
        }),
        Value::Array(items) => items.iter().any(|item| refers_to(item, name)),
        _ => false,
    }
}

/// Points references to the types in `names` at their `{Name}Input` forms.
fn rename_refs(schema: &mut Value, names: &std::collections::BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "$ref" {
                    let input = value
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .filter(|name| names.contains(*name))
                        .map(|name| reference(&format!("{name}Input")));
                    if let Some(input) = input {
                        *value = Value::String(input);
                    }
                } else {
                    rename_refs(value, names);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rename_refs(item, names)),
        _ => {}
    }
}

/// What a query parameter takes: pages are counted, the export names its
/// format, the rest is text.
fn query_schema(name: &str) -> Value {
    match name {
        "page" | "per_page" => json!({"type": "integer", "format": "int64"}),
        "format" => json!({"type": "string", "enum": ["csv", "json"]}),
        _ => json!({"type": "string"}),
    }
}

/// Whether a path parameter is an id (a number); names, keys and RefIDs are
/// text.
fn is_id(name: &str) -> bool {
    name == "id" || (name.ends_with("_id") && name != "ref_id")
}

/// Every error status an endpoint can answer with: those of its handler
/// and those that follow from how it is declared.
pub fn error_statuses(endpoint: &endpoints::Endpoint) -> std::collections::BTreeSet<u16> {
    let mut statuses: std::collections::BTreeSet<u16> = endpoint.errors.iter().copied().collect();
    if endpoint.request.is_some() || !endpoint.query.is_empty() {
        // The body or query could not be read.
        statuses.insert(400);
    }
    match endpoint.access {
        Access::Public => {}
        Access::Session => {
            statuses.insert(401);
        }
        Access::Permission(_) => {
            statuses.extend([401, 403]);
        }
    }
    if endpoint
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .any(is_id)
    {
        // An id that is not a number names nothing.
        statuses.insert(404);
    }
    if endpoint.uses_database {
        statuses.extend([500, 503]);
    }
    statuses
}

fn success_description(status: u16) -> &'static str {
    match status {
        201 => "created",
        202 => "accepted: the component concerned does the rest",
        204 => "done; nothing to answer",
        _ => "done",
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "the request was not understood or is not acceptable; the message says what to change"
        }
        401 => "no valid session (sign in), or the sign-in was refused",
        403 => "the caller's roles lack the permission (first run: the setup code is wrong)",
        404 => "there is no such item",
        409 => "it conflicts with what exists (a name taken, work already under way)",
        429 => {
            "too many failed sign-ins from this address or for this login; wait as the message says"
        }
        500 => "the server failed; its log says more",
        503 => "the database is not available, or too many sign-ins are being checked; try again",
        _ => "failed",
    }
}

/// `GET /api/openapi.json`
pub async fn document() -> Json<Value> {
    Json(describe())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    /// The console's API types are generated from this file
    /// (`npm run ui:generate`), so it must say what the server says.
    #[test]
    fn the_committed_description_is_the_servers() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
        let now = format!(
            "{}\n",
            serde_json::to_string_pretty(&describe()).expect("a JSON value prints")
        );
        if std::env::var_os("BRAMBLE_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &now).expect("the committed description is writable");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == now,
            "{COMMITTED} differs from what the server describes now. Rewrite it with \
             `BRAMBLE_UPDATE_OPENAPI=1 cargo test --lib admin::openapi`, then regenerate the \
             console's types with `npm run ui:generate` and commit both."
        );
    }

    #[test]
    fn describes_every_endpoint_with_its_permission() {
        let doc = describe();
        let endpoints = endpoints::all();
        for endpoint in &endpoints {
            let op = &doc["paths"][endpoint.path][endpoint.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{endpoint:?} missing");
            assert!(
                !op["summary"].as_str().unwrap_or_default().is_empty(),
                "{endpoint:?} has no summary"
            );
            match endpoint.access {
                Access::Permission(p) => {
                    assert_eq!(op["x-bramble-permission"], p.as_str());
                    assert!(op["responses"]["403"].is_object());
                }
                Access::Session => assert!(op["responses"]["401"].is_object()),
                Access::Public => assert_eq!(op["security"], json!([])),
            }
        }
        let users = &doc["paths"]["/api/users/{id}"]["put"];
        assert_eq!(users["parameters"][0]["name"], "id");
        let list = &doc["paths"]["/api/users"]["get"]["parameters"];
        assert_eq!(list.as_array().map(Vec::len), Some(4));
    }

    #[test]
    fn names_each_status_an_operation_answers_with() {
        let doc = describe();
        let statuses = |path: &str, method: &str| -> Vec<String> {
            doc["paths"][path][method]["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(
            statuses("/api/session", "post"),
            ["200", "2XX", "400", "401", "429", "500", "503"]
        );
        assert_eq!(
            statuses("/api/users/{id}", "delete"),
            ["204", "2XX", "401", "403", "404", "500", "503"]
        );
        assert_eq!(statuses("/api/openapi.json", "get"), ["200", "2XX"]);
        let error = &doc["paths"]["/api/users"]["post"]["responses"]["409"];
        assert_eq!(
            error["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        // A filter's conditions are read in a laxer form than written.
        let conditions = &doc["components"]["schemas"]["FilterForm"]["properties"]["conditions"];
        assert_eq!(
            conditions["items"]["$ref"],
            "#/components/schemas/ConditionViewInput"
        );
    }
}
