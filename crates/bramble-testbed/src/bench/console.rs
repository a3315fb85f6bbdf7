//! `bramble bench console`: the console's users list at scale.
//!
//! Fills a temporary Configuration Database with N users, starts the real
//! server core (the Administration Service on a loopback port, no
//! components), signs a Security Administrator in, and times R requests of
//! one page of the users list with a search term, over HTTP on one
//! keep-alive connection, as the console sends them. Terms vary between
//! requests (a surname matching about 1 user in 40, a first name, a
//! fragment of an e-mail address) and pages between the first few.
//!
//! Figures: `users`, `requests`, `p50_ms`, `p99_ms` (request sent to body
//! read), `matches_p50` (the `total` the server reported, to show the
//! searches found something), `limit_ms`: the same page and count queried
//! straight from SQLite in this process (the floor the HTTP path sits on).

use std::time::Instant;

use anyhow::{bail, Context};
use diesel::prelude::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use bramble::config::Settings;
use bramble::db::models::administrator::{Administrator, NewAdministrator};
use bramble::db::models::session::Session;
use bramble::db::models::user::{User, UserSort};
use bramble::db::schema::users;
use bramble::db::{now, Database};
use bramble::server::{Listeners, Server};

#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    pub users: usize,
    pub requests: usize,
    pub per_page: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsoleFigures {
    pub users: usize,
    pub requests: usize,
    pub per_page: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub matches_p50: f64,
    pub limit_ms: f64,
}

const FIRST: [&str; 20] = [
    "Alice", "Bob", "Carol", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Qin", "Rosa", "Sven", "Tara",
];
const LAST: [&str; 40] = [
    "Abbott",
    "Baker",
    "Castro",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Ueda",
    "Varga",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zhang",
    "Andersson",
    "Brown",
    "Costa",
    "Dimitrov",
    "Evans",
    "Fontaine",
    "Gomez",
    "Horvat",
    "Ito",
    "Jovanovic",
    "Kim",
    "Larsen",
    "Murphy",
    "Novak",
];

/// The search terms, cycled through by the requests.
fn terms() -> Vec<String> {
    let mut terms: Vec<String> = LAST.iter().map(|s| s.to_lowercase()).collect();
    terms.extend(FIRST.iter().take(10).map(|s| s.to_string()));
    terms.extend(["son@", "42@", "branch", "ez."].map(String::from));
    terms
}

fn fill(db: &Database, count: usize, progress: &dyn Fn(String)) -> anyhow::Result<()> {
    const BATCH: usize = 1000;
    let at = now();
    db.run_blocking(|conn| {
        conn.immediate_transaction::<_, bramble::db::DbError, _>(|conn| {
            let mut n = 0;
            while n < count {
                let rows: Vec<_> = (n..(n + BATCH).min(count))
                    .map(|i| {
                        let first = FIRST[i % FIRST.len()];
                        let last = LAST[(i / FIRST.len()) % LAST.len()];
                        let domain = if i % 7 == 0 {
                            "branch.example.org"
                        } else {
                            "example.com"
                        };
                        let login =
                            format!("{}.{}{}", first.to_lowercase(), last.to_lowercase(), i);
                        (
                            users::display_name.eq(format!("{first} {last} {i}")),
                            users::email.eq(format!("{login}@{domain}")),
                            users::mailbox_login.eq(login),
                            users::account_status.eq("active"),
                            users::activation_status.eq("not_activated"),
                            users::created_at.eq(at),
                            users::updated_at.eq(at),
                        )
                    })
                    .collect();
                diesel::insert_into(users::table)
                    .values(&rows)
                    .execute(conn)?;
                n += rows.len();
                if n % 20_000 == 0 || n == count {
                    progress(format!("{n} users written"));
                }
            }
            Ok(())
        })
    })
    .context("filling the database with users")?;
    Ok(())
}

pub async fn run(
    options: ConsoleOptions,
    progress: impl Fn(String),
) -> anyhow::Result<ConsoleFigures> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::load_from(None, &[])?.settings;
    settings.data_dir = dir.path().to_path_buf();
    settings.router.lan_listen = None;

    let token = {
        let db = Database::open(&settings.database())?;
        fill(&db, options.users, &progress)?;
        let lifetime = bramble::admin::auth::lifetime(&settings.console());
        db.run_blocking(|conn| {
            let admin = Administrator::create_security_administrator(
                conn,
                &NewAdministrator {
                    login: "bench".into(),
                    display_name: "Bench".into(),
                    password: "bench password".into(),
                },
            )?;
            Ok(Session::create(conn, admin.id, lifetime)?.0)
        })?
    };

    // The floor: the same queries straight from SQLite.
    let terms = terms();
    let per_page = options.per_page.clamp(1, 200) as i64;
    let limit_ms = {
        let db = Database::open(&settings.database())?;
        let mut times = Vec::new();
        for (i, term) in terms
            .iter()
            .enumerate()
            .cycle()
            .take(options.requests.min(100))
        {
            let term = term.clone();
            let started = Instant::now();
            db.run_blocking(|conn| {
                User::find_page(
                    conn,
                    &term,
                    UserSort::Name,
                    false,
                    (i as i64 % 3) * per_page,
                    per_page,
                )
            })?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        super::quantile(&times, 0.5)
    };

    let listeners = Listeners {
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        lan: None,
    };
    let handle = Server::start_with(settings, listeners, Vec::new()).await?;
    let addr = handle.admin_addr();
    progress(format!(
        "Administration Service on {addr}; {} requests",
        options.requests
    ));

    let outcome = measure(addr, &token, &terms, per_page, options.requests).await;
    handle
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("the server did not stop cleanly: {e}"))?;
    let (mut times, mut totals) = outcome?;
    times.sort_by(f64::total_cmp);
    totals.sort_by(f64::total_cmp);
    Ok(ConsoleFigures {
        users: options.users,
        requests: options.requests,
        per_page: per_page as usize,
        p50_ms: round(super::quantile(&times, 0.5)),
        p99_ms: round(super::quantile(&times, 0.99)),
        matches_p50: super::quantile(&totals, 0.5),
        limit_ms: round(limit_ms),
    })
}

fn round(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

async fn measure(
    addr: std::net::SocketAddr,
    token: &str,
    terms: &[String],
    per_page: i64,
    requests: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let mut times = Vec::with_capacity(requests);
    let mut totals = Vec::with_capacity(requests);
    for (i, term) in terms.iter().cycle().take(requests).enumerate() {
        let page = i % 3 + 1;
        let uri = format!("/api/users?search={term}&sort=name&page={page}&per_page={per_page}")
            .replace('@', "%40");
        let request = hyper::Request::get(uri)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())?;
        let started = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!(
                "the users list answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let doc: serde_json::Value = serde_json::from_slice(&body)?;
        totals.push(doc["total"].as_f64().unwrap_or(0.0));
    }
    drop(sender);
    driver.abort();
    Ok((times, totals))
}
