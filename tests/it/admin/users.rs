//! Users, their devices and messages, activation passwords, and resending
//! the IT policy and service books, each change audited.

use super::*;

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
async fn support_staff_find_a_device_by_pin_and_trace_a_message() {
    use bramble::db::models::device::Device;
    use bramble::db::models::message::{Direction, Hop, Message, MessageStatus, NewMessage, RefId};
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
            bramble::db::models::statistics::Statistics::increment(
                conn,
                Some(user.id),
                bramble::db::models::statistics::Counter::Pending,
                1,
            )?;
            bramble::db::models::mailbox::MailboxState::set_error(
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
        s.mail.smtp_security = bramble::messaging_agent::settings::Security::None;
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
    use bramble::db::models::device_key::{DeviceKey, KeyMaterial, KeySlot};
    use bramble::dispatcher::{DeliveryEvent, Resend};
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
