//! IT policies, global message filters and software configurations.

use super::*;

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
