//! `bramble relay`, `bramble srp …` and `bramble device …`: the wireless
//! side on the command line, for pilots and for watching messages by hand.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use bramble::config::Settings;
use bramble::db::models::srp_connection::{SrpConnection, SrpKey, SrpSettings};
use bramble::db::Database;
use bramble_device::{Device, DeviceConfig, DeviceFile, KeyStore, Path};
use bramble_proto::cmime::{Cmime, Compose};
use bramble_proto::envelope::TransportKey;
use bramble_proto::{ContentType, Pin, RefId};
use bramble_relay::{RelayConfig, SrpAccount};
use clap::{Args, Subcommand};

use crate::Failure;

#[derive(Args)]
pub struct RelayArgs {
    /// Relay settings (TOML): listen addresses, SRP accounts, TLS, store limits.
    #[arg(long, value_name = "FILE")]
    relay_config: Option<PathBuf>,
    /// Where enterprise servers connect (TLS + SRP). Default 127.0.0.1:3101.
    #[arg(long)]
    server_listen: Option<SocketAddr>,
    /// Where devices connect. Default 127.0.0.1:3102.
    #[arg(long)]
    device_listen: Option<SocketAddr>,
    /// Add an SRP account (with --srp-key).
    #[arg(long, requires = "srp_key")]
    srp_id: Option<String>,
    #[arg(long, requires = "srp_id")]
    srp_key: Option<String>,
    /// Write the relay's certificate here (PEM), for servers to pin.
    #[arg(long, value_name = "FILE")]
    write_certificate: Option<PathBuf>,
}

pub fn relay(args: RelayArgs) -> Result<(), Failure> {
    let mut config = match &args.relay_config {
        Some(path) => {
            RelayConfig::load(path).map_err(|e| Failure::new("RELAY_CONFIG_INVALID", e))?
        }
        None => RelayConfig {
            server_listen: SocketAddr::from(([127, 0, 0, 1], 3101)),
            device_listen: SocketAddr::from(([127, 0, 0, 1], 3102)),
            ..RelayConfig::default()
        },
    };
    if let Some(addr) = args.server_listen {
        config.server_listen = addr;
    }
    if let Some(addr) = args.device_listen {
        config.device_listen = addr;
    }
    if let (Some(id), Some(key)) = (args.srp_id, args.srp_key) {
        config
            .srp_accounts
            .push(SrpAccount::new(id, key.into_bytes()));
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::new("RUNTIME_FAILED", e))?;
    runtime.block_on(async move {
        let handle = bramble_relay::Relay::start(config)
            .await
            .map_err(|e| Failure::new("RELAY_START_FAILED", e))?;
        if let Some(path) = &args.write_certificate {
            std::fs::write(path, handle.certificate_pem()).map_err(|e| {
                Failure::new("CERTIFICATE_UNWRITABLE", format!("{}: {e}", path.display()))
            })?;
        }
        println!(
            "relay running: servers on {} (certificate SHA-256 {}), devices on {}",
            handle.server_addr(),
            handle.certificate_fingerprint(),
            handle.device_addr()
        );
        crate::shutdown_signal().await;
        handle.shutdown().await;
        Ok(())
    })
}

#[derive(Subcommand)]
pub enum SrpCommand {
    /// Set this server's connection to the wireless network.
    Set {
        #[arg(long)]
        srp_id: String,
        /// The relay, HOST:PORT (port 3101 usually).
        #[arg(long)]
        relay: String,
        /// Client access licences.
        #[arg(long, default_value_t = 0)]
        licences: i32,
        /// Read the SRP authentication key from standard input.
        #[arg(long)]
        key_stdin: bool,
    },
    /// Show the connection (never the key).
    Show,
}

pub fn srp(settings: &Settings, command: SrpCommand) -> Result<(), Failure> {
    let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
    match command {
        SrpCommand::Set {
            srp_id,
            relay,
            licences,
            key_stdin,
        } => {
            let (host, port) = relay
                .rsplit_once(':')
                .and_then(|(h, p)| p.parse::<i32>().ok().map(|p| (h.to_owned(), p)))
                .ok_or_else(|| {
                    Failure::new(
                        "INVALID_INPUT",
                        format!("`{relay}` is not HOST:PORT, e.g. relay.example.com:3101"),
                    )
                })?;
            let key = if key_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::new("KEY_UNREADABLE", e))?;
                text.trim().to_owned()
            } else {
                rpassword::prompt_password("SRP authentication key: ")
                    .map_err(|e| Failure::new("KEY_UNREADABLE", e))?
            };
            let settings = SrpSettings {
                srp_id,
                srp_key: SrpKey::new(key),
                relay_host: host,
                relay_port: port,
                cal_licences: licences,
            };
            let saved = db
                .run_blocking(|conn| SrpConnection::save(conn, db.sealer(), &settings))
                .map_err(|e| Failure::new(e.code(), &e))?;
            println!(
                "Wireless network connection set: SRP ID {} via {}:{}. A running server uses it at its next attempt to connect (within 15 seconds if none was set); set it in the console to apply it at once.",
                saved.srp_id, saved.relay_host, saved.relay_port
            );
        }
        SrpCommand::Show => {
            let current = db
                .run_blocking(|conn| SrpConnection::find_current(conn, db.sealer()))
                .map_err(|e| Failure::new(e.code(), &e))?;
            match current {
                Some(c) => println!(
                    "SRP ID {} via {}:{} ({} licences; key set)",
                    c.srp_id, c.relay_host, c.relay_port, c.cal_licences
                ),
                None => println!("No wireless network connection is set; use `bramble srp set`."),
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Enterprise activation over the wireless network: e-mails an
    /// activation request through the relay, runs the key exchange with the
    /// server, takes the IT policy and service books, and writes the
    /// device's key file.
    Activate {
        #[arg(long)]
        pin: Pin,
        /// The user's e-mail address.
        #[arg(long)]
        email: String,
        /// The activation password (or --password-stdin).
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        /// The relay's device port.
        #[arg(long, default_value = "127.0.0.1:3102")]
        relay: SocketAddr,
        /// Where to write the device's key file.
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// TEST PATH until wireless activation exists: give a device a transport
    /// key directly — stored (sealed) in this server's database and written
    /// to the device's key file.
    Provision {
        #[arg(long)]
        pin: Pin,
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
        /// The user the device belongs to (created if missing, with the
        /// address's local part as mailbox login); its mailbox is then
        /// watched by the Messaging Agent.
        #[arg(long)]
        email: Option<String>,
    },
    /// Queue an IT administration command for one device (--pin) or every
    /// device of a group (--group); the running server sends it and tracks
    /// each device's acknowledgement.
    Command {
        #[arg(long, conflicts_with = "group")]
        pin: Option<Pin>,
        #[arg(long)]
        group: Option<String>,
        /// Destructive commands (wipe, wipe-work) need the PIN or group
        /// name repeated here.
        #[arg(long)]
        confirm: Option<String>,
        #[command(subcommand)]
        command: ItCommand,
    },
    /// Where the IT administration commands of a device stand.
    Commands {
        #[arg(long)]
        pin: Pin,
    },
    /// Connect and print each message received (one JSON line each),
    /// confirming delivery, until interrupted or `--count` messages.
    Listen {
        #[command(flatten)]
        link: LinkArgs,
        #[arg(long)]
        count: Option<usize>,
    },
    /// Send one e-mail from the device (CMIME), submitted by the server.
    Send {
        #[command(flatten)]
        link: LinkArgs,
        /// Recipient addresses.
        #[arg(long, required = true)]
        to: Vec<String>,
        #[arg(long, default_value = "")]
        subject: String,
        #[arg(long)]
        text: String,
        /// Reply to this message (its RefID); the server adds the original.
        #[arg(long)]
        reply_to: Option<RefId>,
    },
    /// Address lookup (the ALP service book): search the organization's
    /// directory through the server; at most 20 people are shown.
    Lookup {
        #[command(flatten)]
        link: LinkArgs,
        /// Part of a name, e-mail address or login (2 characters or more).
        query: String,
        /// Give up waiting for the answer after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
}

/// An IT administration command.
#[derive(Subcommand, Clone)]
pub enum ItCommand {
    /// Set a device password and lock the device.
    Lock {
        #[arg(long)]
        password: String,
    },
    /// Delete all device data and remove the device from its user.
    Wipe {
        /// Wait this long before sending the command.
        #[arg(long, default_value_t = 0)]
        delay_secs: u64,
    },
    /// Delete only work data; the device stays activated.
    WipeWork,
    /// Generate a new transport key.
    NewKey,
}

#[derive(Args)]
pub struct LinkArgs {
    /// The device's key file (from `bramble device provision`).
    #[arg(long, value_name = "FILE")]
    keys: PathBuf,
    /// Connect through the relay's device port…
    #[arg(long, conflicts_with = "lan")]
    relay: Option<SocketAddr>,
    /// …or directly to the Router's LAN path.
    #[arg(long)]
    lan: Option<SocketAddr>,
    /// The SRP ID of the device's server, so the relay routes its traffic.
    #[arg(long)]
    srp_id: Option<String>,
}

impl LinkArgs {
    fn open(&self) -> Result<(Device, Path), Failure> {
        let file = DeviceFile::load(&self.keys).map_err(|e| Failure::new("KEY_FILE_INVALID", e))?;
        let pin = file.pin;
        let path = match (self.relay, self.lan) {
            (Some(addr), _) => Path::Relay(addr),
            (None, Some(addr)) => Path::Lan(addr),
            (None, None) => Path::Relay(SocketAddr::from(([127, 0, 0, 1], 3102))),
        };
        let mut config = DeviceConfig::new(pin);
        config.srp_id = self.srp_id.clone();
        // Keys, domain key, service books and the signed documents already
        // acted on, so a command played again after a restart is refused.
        let device = Device::from_file(config, file);
        Ok((device, path))
    }
}

pub fn device(settings: &Settings, command: DeviceCommand) -> Result<(), Failure> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::new("RUNTIME_FAILED", e))?;
    runtime.block_on(async move {
        match command {
            DeviceCommand::Activate { pin, email, password, password_stdin, relay, keys, timeout_secs } => {
                let password = match (password, password_stdin) {
                    (Some(p), _) => p,
                    (None, true) => {
                        let mut text = String::new();
                        std::io::stdin()
                            .read_to_string(&mut text)
                            .map_err(|e| Failure::new("PASSWORD_UNREADABLE", e))?;
                        text.trim_end_matches(['\r', '\n']).to_owned()
                    }
                    (None, false) => crate::read_password(false)
                        .map_err(|e| Failure::new("PASSWORD_UNREADABLE", format!("{e:#}")))?,
                };
                let limit = std::time::Duration::from_secs(timeout_secs);
                let device = Device::new(DeviceConfig::new(pin), KeyStore::default());
                let conn = device
                    .activate(relay, &email, &password, limit, |step| eprintln!("{step}"))
                    .await
                    .map_err(|e| match e {
                        bramble_device::DeviceError::Activation { code, message } => Failure::new(code, message),
                        other => Failure::new("DEVICE_CONNECT_FAILED", other),
                    })?;
                device
                    .keys()
                    .save(pin, &keys)
                    .map_err(|e| Failure::new("KEY_FILE_UNWRITABLE", e))?;
                let services = tokio::time::timeout(limit, async {
                    while let Some(m) = conn.recv().await {
                        match m.content_type {
                            ContentType::ItPolicy => eprintln!("IT policy applied (domain key {})", device.domain_key().unwrap_or_default()),
                            ContentType::ServiceBook => {
                                return bramble_proto::policy::ServiceBooks::from_bytes(&m.plaintext).ok();
                            }
                            _ => {}
                        }
                    }
                    None
                })
                .await;
                device
                    .save(&keys)
                    .map_err(|e| Failure::new("KEY_FILE_UNWRITABLE", e))?;
                match services {
                    Ok(Some(books)) => {
                        let cids: Vec<&str> = books.books.iter().map(|b| b.cid.as_str()).collect();
                        println!("{}", books.enabled_message());
                        eprintln!("service books: {}; key file {}", cids.join(", "), keys.display());
                        if cids.contains(&"SYNC") {
                            // Seed steps 13–15: the configuration, then the
                            // slow sync of every enabled database.
                            let client = bramble_device::organizer::SyncClient::new(
                                bramble_device::organizer::Organizer::new(),
                            );
                            let synced = async {
                                client.request_config(&conn).await?;
                                client.slow_sync(&conn).await
                            }
                            .await
                            .map_err(|e| Failure::new("SYNC_FAILED", e))?;
                            println!("Synchronization complete ({} databases).", synced.len());
                        }
                    }
                    _ => {
                        return Err(Failure::new(
                            "SERVICES_NOT_RECEIVED",
                            format!("encryption is verified and the key file is {}, but no service books arrived within {timeout_secs}s", keys.display()),
                        ))
                    }
                }
                conn.close().await;
            }
            DeviceCommand::Command { pin, group, confirm, command } => {
                queue_command(settings, pin, group, confirm, command)?;
            }
            DeviceCommand::Commands { pin } => {
                let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
                let targets = db
                    .run_blocking(|conn| {
                        let Some(device) = bramble::db::models::device::Device::find_by_pin(conn, &pin)? else {
                            return Ok(None);
                        };
                        bramble::db::models::admin_command::AdminCommand::targets_for_device(conn, device.id, 50).map(Some)
                    })
                    .map_err(|e| Failure::new(e.code(), &e))?
                    .ok_or_else(|| Failure::new("DEVICE_NOT_FOUND", format!("there is no device {pin}")))?;
                if targets.is_empty() {
                    println!("No IT administration commands for device {pin}.");
                }
                for t in targets {
                    println!(
                        "command {} {}: {} at {}{}",
                        t.command_id,
                        t.kind.as_str(),
                        t.state.as_str(),
                        t.updated_at,
                        if t.detail.is_empty() { String::new() } else { format!(" ({})", t.detail) }
                    );
                }
            }
            DeviceCommand::Provision { pin, keys, email } => {
                let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
                if let Some(email) = email {
                    let login = email.split('@').next().unwrap_or(&email).to_owned();
                    let user = bramble_testbed::TestUser { login, address: email, password: String::new() };
                    bramble_testbed::pilot::enroll(&db, &[user], pin.0).map_err(|e| Failure::new(e.code(), &e))?;
                }
                let key = TransportKey::generate(1).map_err(|e| Failure::new("KEY_GENERATION_FAILED", e))?;
                bramble_testbed::provision::into_database(&db, vec![(pin, key.clone())])
                    .await
                    .map_err(|e| Failure::new(e.code(), &e))?;
                KeyStore::new(key)
                    .save(pin, &keys)
                    .map_err(|e| Failure::new("KEY_FILE_UNWRITABLE", e))?;
                println!("Device {pin} has a transport key (test path); its key file is {}.", keys.display());
            }
            DeviceCommand::Listen { link, count } => {
                let (device, path) = link.open()?;
                let conn = device.connect(path).await.map_err(|e| Failure::new("DEVICE_CONNECT_FAILED", e))?;
                eprintln!("device {} connected via {:?}", device.pin(), path);
                let mut seen = 0;
                loop {
                    tokio::select! {
                        _ = crate::shutdown_signal() => break,
                        message = conn.recv() => {
                            let Some(m) = message else {
                                return Err(Failure::new("DEVICE_DISCONNECTED", "the link closed"));
                            };
                            let line = match Cmime::from_bytes(&m.plaintext) {
                                Ok(cmime) => serde_json::json!({
                                    "ref_id": m.ref_id.to_string(),
                                    "content_type": m.content_type,
                                    "cmime": cmime,
                                }),
                                Err(_) => serde_json::json!({
                                    "ref_id": m.ref_id.to_string(),
                                    "content_type": m.content_type,
                                    "text": String::from_utf8_lossy(&m.plaintext),
                                }),
                            };
                            println!("{line}");
                            seen += 1;
                            if count.is_some_and(|c| seen >= c) {
                                break;
                            }
                        }
                        error = conn.next_error() => {
                            if let Some((ref_id, report)) = error {
                                eprintln!("error about {ref_id}: {} — {}", report.code, report.message);
                            }
                        }
                    }
                }
                conn.close().await;
                // What the device applied meanwhile (policies, commands, a
                // new key) is kept for its next run.
                device
                    .save(&link.keys)
                    .map_err(|e| Failure::new("KEY_FILE_UNWRITABLE", e))?;
            }
            DeviceCommand::Send { link, to, subject, text, reply_to } => {
                let (device, path) = link.open()?;
                let conn = device.connect(path).await.map_err(|e| Failure::new("DEVICE_CONNECT_FAILED", e))?;
                let ref_id = RefId::random();
                let compose = Cmime::Compose(Compose { to, subject, text, reply_to, ..Compose::default() });
                conn.send(ContentType::Cmime, ref_id, &compose.to_bytes())
                    .await
                    .map_err(|e| Failure::new("DEVICE_SEND_FAILED", e))?;
                // Give an error report a moment to come back before closing.
                if let Ok(Some((about, report))) =
                    tokio::time::timeout(std::time::Duration::from_secs(2), conn.next_error()).await
                {
                    if about == ref_id {
                        return Err(Failure::new("MESSAGE_REFUSED", format!("{}: {}", report.code, report.message)));
                    }
                }
                // The server says "accepted" once the message is safely stored.
                let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    while let Some(m) = conn.recv().await {
                        if let Ok(Cmime::SendStatus { of, status, error }) = Cmime::from_bytes(&m.plaintext) {
                            if of == ref_id {
                                return Some((status, error));
                            }
                        }
                    }
                    None
                })
                .await;
                match accepted {
                    Ok(Some((status, None))) => println!("sent {ref_id}: {status:?}"),
                    Ok(Some((status, Some(error)))) => {
                        return Err(Failure::new("MESSAGE_REFUSED", format!("{status:?}: {error}")))
                    }
                    _ => println!("sent {ref_id}; no answer from the server yet (it is kept until one comes)"),
                }
                conn.close().await;
            }
            DeviceCommand::Lookup { link, query, timeout_secs } => {
                let (device, path) = link.open()?;
                // Refused before connecting when the device has no ALP book.
                if !device
                    .service_books()
                    .is_some_and(|b| b.books.iter().any(|b| b.cid == "ALP"))
                {
                    return Err(Failure::new(
                        "NO_SERVICE_BOOK",
                        format!(
                            "device {} has no Address lookup (ALP) service book in {}; activate it (bramble device activate) to receive its service books",
                            device.pin(),
                            link.keys.display()
                        ),
                    ));
                }
                let conn = device.connect(path).await.map_err(|e| Failure::new("DEVICE_CONNECT_FAILED", e))?;
                let found = device
                    .lookup(&conn, &query, std::time::Duration::from_secs(timeout_secs))
                    .await;
                conn.close().await;
                let reply = found.map_err(|e| match e {
                    bramble_device::DeviceError::Lookup { code, message } => {
                        use bramble_proto::lookup::codes;
                        let known = [
                            codes::MALFORMED,
                            codes::QUERY_TOO_SHORT,
                            codes::QUERY_TOO_LONG,
                            codes::DISABLED,
                            codes::NO_USER,
                            codes::DIRECTORY_FAILED,
                            codes::SERVER_ERROR,
                            "TIMEOUT",
                        ];
                        match known.into_iter().find(|k| *k == code) {
                            Some(code) => Failure::new(code, message),
                            None => Failure::new("LOOKUP_REFUSED", format!("{code}: {message}")),
                        }
                    }
                    other => Failure::new("DEVICE_LOOKUP_FAILED", other),
                })?;
                print!("{}", lookup_table(&reply));
            }
        }
        Ok(())
    })
}

/// The people found as a table, and a note when there were more.
fn lookup_table(reply: &bramble_proto::lookup::LookupReply) -> String {
    if reply.results.is_empty() {
        return "No one found.\n".to_owned();
    }
    let width = |f: fn(&bramble_proto::lookup::Person) -> &str, title: &str| {
        reply
            .results
            .iter()
            .map(|p| f(p).chars().count())
            .chain([title.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let (name_w, email_w) = (width(|p| &p.name, "NAME"), width(|p| &p.email, "E-MAIL"));
    let mut out = format!("{:name_w$}  {:email_w$}  LOGIN\n", "NAME", "E-MAIL");
    for p in &reply.results {
        out.push_str(&format!(
            "{:name_w$}  {:email_w$}  {}\n",
            p.name, p.email, p.login
        ));
    }
    out.push_str(&format!("{} found", reply.results.len()));
    if reply.truncated {
        out.push_str("; more people match: type more of the name to narrow the search");
    }
    out.push('\n');
    out
}

fn queue_command(
    settings: &Settings,
    pin: Option<Pin>,
    group: Option<String>,
    confirm: Option<String>,
    command: ItCommand,
) -> Result<(), Failure> {
    use bramble::db::models::admin_command::{AdminCommand, CommandKind};
    use bramble::db::models::device::Device as DeviceRow;
    use bramble::db::models::group::Group;
    let (kind, parameters) = match &command {
        ItCommand::Lock { password } => {
            if password.chars().count() < 4 {
                return Err(Failure::new(
                    "INVALID_INPUT",
                    "a device password needs at least 4 characters",
                ));
            }
            (
                CommandKind::Lock,
                serde_json::json!({ "password": password }),
            )
        }
        ItCommand::Wipe { delay_secs } => (
            CommandKind::WipeAll,
            serde_json::json!({ "delay_secs": delay_secs }),
        ),
        ItCommand::WipeWork => (CommandKind::WipeWork, serde_json::json!({})),
        ItCommand::NewKey => (CommandKind::NewKey, serde_json::json!({})),
    };
    let named = match (&pin, &group) {
        (Some(pin), _) => pin.to_string(),
        (None, Some(group)) => group.clone(),
        (None, None) => {
            return Err(Failure::new(
                "INVALID_INPUT",
                "name a device (--pin) or a group (--group)",
            ))
        }
    };
    let destructive = matches!(kind, CommandKind::WipeAll | CommandKind::WipeWork);
    if destructive && confirm.as_deref() != Some(named.as_str()) {
        return Err(Failure::new(
            "CONFIRMATION_NEEDED",
            format!("this deletes data on {named}; repeat --confirm {named} to go ahead"),
        ));
    }
    let db = Database::open(&settings.database()).map_err(|e| Failure::new(e.code(), &e))?;
    let now = bramble::clock::Clock::new().now_db();
    let sealer = db.shared_sealer();
    let (command, count) = db
        .run_blocking(|conn| {
            let devices = match (&pin, &group) {
                (Some(pin), _) => match DeviceRow::find_by_pin(conn, pin)? {
                    Some(d) => vec![d.id],
                    None => return Ok(Err(format!("there is no device {pin}"))),
                },
                (_, Some(name)) => {
                    let Some(g) = Group::find_by_name(conn, name)? else {
                        return Ok(Err(format!("there is no group {name}")));
                    };
                    let mut ids = Vec::new();
                    for user in Group::find_member_ids(conn, g.id)? {
                        ids.extend(DeviceRow::find_by_user(conn, user)?.into_iter().map(|d| d.id));
                    }
                    ids
                }
                _ => Vec::new(),
            };
            if devices.is_empty() {
                return Ok(Err(format!("{named} has no devices")));
            }
            let command = AdminCommand::create(conn, &sealer, kind, &parameters, "command line", &devices, now)?;
            bramble::db::models::audit::append(
                conn,
                "bramble device command",
                "admin_command.create",
                &format!("admin_command/{}", command.id),
                None,
                Some(serde_json::json!({ "kind": kind.as_str(), "target": named, "devices": devices.len() })),
            )?;
            Ok(Ok((command, devices.len())))
        })
        .map_err(|e| Failure::new(e.code(), &e))?
        .map_err(|e| Failure::new("DEVICE_NOT_FOUND", e))?;
    println!(
        "Command {} ({}) queued for {count} device(s); the server sends it and `bramble device commands --pin …` shows where it stands.",
        command.id,
        kind.as_str()
    );
    Ok(())
}
