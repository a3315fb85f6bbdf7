//! The BlackBerry Configuration Database.
//!
//! diesel over an r2d2 pool of SQLite connections (bundled SQLite, so no
//! system library is needed on Windows or macOS). Every connection gets WAL,
//! `synchronous = FULL`, `busy_timeout` and foreign keys when the pool hands
//! it out. FULL because a commit is what a device or an administrator is
//! told "accepted" on (a message in the outbox, a queued command, a console
//! change): in WAL mode NORMAL may lose the last commits on power loss,
//! FULL syncs the log at every commit so an acknowledged write survives it
//! (`docs/operations.md`, "The Configuration Database"). Queries run
//! off the async threads through [`Database::run`]. Migrations live in
//! `migrations/sqlite/`, are embedded in the binary and run at start-up.
//!
//! Before anything is written the file is checked: a file that is not
//! SQLite, fails SQLite's own consistency check, belongs to another
//! application or was created by a newer Bramble is refused with an error
//! naming the file — and is left exactly as it was.
//!
//! Secrets (device transport keys, the SRP key, the domain signing key,
//! service passwords, lock command passwords) are sealed with a local
//! master key kept beside the database ([`seal`]); a missing key file
//! beside sealed data stops the open (`DB_KEY_MISSING`) instead of being
//! replaced, and a key file others may read is refused (`DB_KEY_EXPOSED`).
//! The audit log's chain is keyed with a second key beside it
//! ([`seal::AuditKey`]), registered on every pooled connection. The
//! domain signing key is made by the Policy Service's signing code, called
//! when the server starts; this module stores it sealed.
//!
//! This is the ground floor of the server core: it imports nothing from the
//! components, the console or the settings file (`docs/architecture.md`).
//!
//! Tables and their typed functions are in [`models`]; the data model is
//! described in `docs/data-model.md`.

pub mod ids;
pub mod models;
pub mod schema;
pub mod seal;
pub mod settings;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sql_types::{Integer, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use seal::{AuditKey, Sealer};
pub use settings::DatabaseSettings;

/// The connection type every model function takes.
pub type Conn = SqliteConnection;

/// Migrations compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// `PRAGMA application_id` of a Bramble database ("BRMB").
pub const APPLICATION_ID: i32 = 0x4252_4D42;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Everything that can go wrong with the Configuration Database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the data folder {path} cannot be written ({source}). Choose a folder you can write to with `data_dir` in the settings file or BRAMBLE_DATA_DIR; nothing was changed.")]
    DataDirUnwritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Bramble Configuration Database (it is not an SQLite file at all). Move it aside or point `[database] path` at another file; Bramble did not change it.")]
    NotSqlite { path: PathBuf },
    #[error("{path} is damaged: SQLite's consistency check reports \"{report}\". Restore it from a backup or move it aside to start with an empty database; Bramble did not change it.")]
    Corrupt { path: PathBuf, report: String },
    /// Another program (or another Bramble) held the file locked for longer
    /// than `[database] busy_timeout_ms` while it was being checked or
    /// opened. Not damage: the file is fine and was not changed.
    #[error("{path} is locked by another program ({report}) for longer than {waited_ms} ms; stop that program or wait for it to finish and try again, or raise `[database] busy_timeout_ms`. Bramble did not change it.")]
    Locked {
        path: PathBuf,
        report: String,
        waited_ms: u32,
    },
    #[error("{path} is an SQLite database of another application (application id {application_id:#x}, {tables} tables). Point `[database] path` at a Bramble database or an empty location; Bramble did not change it.")]
    Foreign {
        path: PathBuf,
        application_id: i32,
        tables: i64,
    },
    #[error("{path} was written by a newer Bramble (schema versions {unknown:?} are unknown to {version}). Upgrade Bramble; this version will not touch the file.")]
    TooNew {
        path: PathBuf,
        unknown: Vec<String>,
        version: &'static str,
    },
    #[error("cannot open the Configuration Database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the Configuration Database could not apply its schema updates: {0}")]
    Migration(String),
    #[error("no database connection is free ({0}); the database may be locked by another program")]
    Pool(#[from] r2d2::Error),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("the database task stopped unexpectedly: {0}")]
    Task(String),
    #[error("cannot seal or unseal a stored secret: {0}")]
    Seal(#[from] seal::SealError),
    /// Input a model refuses to store (an empty name, a duplicate, a value
    /// out of range), in words for whoever gave it. Only the models raise
    /// it; a layer above refuses in its own error type.
    #[error("{0}")]
    Invalid(String),
    /// A stored value that does not read back as any version of Bramble
    /// writes it.
    #[error("stored data is damaged: {0}. Restore the Configuration Database from a backup or delete the damaged item.")]
    Damaged(String),
    /// Hashing, random numbers, key derivation or encoding for storage
    /// failed in the library that does it.
    #[error("cannot {what}: {message}")]
    Encoding { what: &'static str, message: String },
}

impl DbError {
    /// Stable code for administrators and the console.
    pub fn code(&self) -> &'static str {
        match self {
            DbError::DataDirUnwritable { .. } => "DATA_DIR_UNWRITABLE",
            DbError::NotSqlite { .. } => "DB_NOT_SQLITE",
            DbError::Corrupt { .. } => "DB_CORRUPT",
            DbError::Locked { .. } => "DB_LOCKED",
            DbError::Foreign { .. } => "DB_FOREIGN",
            DbError::TooNew { .. } => "DB_TOO_NEW",
            DbError::Open { .. } => "DB_OPEN_FAILED",
            DbError::Migration(_) => "DB_MIGRATION_FAILED",
            DbError::Pool(_) => "DB_BUSY",
            DbError::Query(diesel::result::Error::NotFound) => "NOT_FOUND",
            DbError::Query(_) => "DB_QUERY_FAILED",
            DbError::Task(_) => "DB_TASK_FAILED",
            DbError::Seal(seal::SealError::KeyMissing { .. }) => "DB_KEY_MISSING",
            DbError::Seal(seal::SealError::KeyExposed { .. }) => "DB_KEY_EXPOSED",
            DbError::Seal(seal::SealError::AuditKeyMissing { .. }) => "DB_AUDIT_KEY_MISSING",
            DbError::Seal(_) => "DB_SEAL_FAILED",
            DbError::Invalid(_) => "INVALID_INPUT",
            DbError::Damaged(_) => "DB_DAMAGED",
            DbError::Encoding { .. } => "DB_ENCODING_FAILED",
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// What [`Database::check`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub path: PathBuf,
    pub exists: bool,
    pub applied: Vec<String>,
    pub pending: Vec<String>,
}

/// A pool of connections to the Configuration Database plus the sealer for
/// its secrets. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool<ConnectionManager<SqliteConnection>>,
    sealer: Arc<Sealer>,
    path: PathBuf,
    /// Writers of this process queue here (in order, without holding a
    /// thread) rather than in SQLite's busy handler, which sleeps.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Where the last check of the audit chain found it broken, if it did.
    audit_alarm: Arc<std::sync::Mutex<Option<models::audit::AuditTamper>>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish()
    }
}

#[derive(Debug)]
struct Pragmas {
    busy_timeout_ms: u32,
    audit_key: Arc<AuditKey>,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
            self.busy_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)?;
        models::audit::register_mac(conn, self.audit_key.clone())
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

#[derive(QueryableByName)]
struct IntRow {
    #[diesel(sql_type = Integer)]
    value: i32,
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    value: i64,
}

impl Database {
    /// Opens (creating if needed) the database the settings name, refuses
    /// foreign or damaged files, and applies pending migrations. The
    /// settings' `path` is resolved by whoever assembled them (unset here:
    /// `bramble.db` in the working folder).
    pub fn open(settings: &DatabaseSettings) -> DbResult<Database> {
        let path = settings
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("bramble.db"));
        Self::open_path(&path, settings.pool_size, settings.busy_timeout_ms)
    }

    /// [`Database::open`] for an explicit file.
    pub fn open_path(path: &Path, pool_size: u32, busy_timeout_ms: u32) -> DbResult<Database> {
        let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        ensure_writable_folder(&folder)?;
        inspect(path, busy_timeout_ms)?;
        // The master key before anything is written: a database holding
        // sealed secrets whose key is gone (or exposed) is left untouched.
        let sealed = holds_sealed_secrets(path, busy_timeout_ms)?;
        let sealer = Sealer::open(&key_path(path), !sealed)?;
        // The audit key: required once the log was keyed; made otherwise,
        // keying the entries from the next one on.
        let (keyed, next_entry) = audit_keying(path, busy_timeout_ms)?;
        let audit_key = Arc::new(AuditKey::open(
            &audit_key_path(path),
            (!keyed).then_some(next_entry),
        )?);
        let manager = ConnectionManager::<SqliteConnection>::new(path.to_string_lossy());
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(Duration::from_secs(30))
            .connection_customizer(Box::new(Pragmas {
                busy_timeout_ms,
                audit_key: audit_key.clone(),
            }))
            .build(manager)
            .map_err(|e| {
                let message = e.to_string();
                if is_locked(&message) {
                    locked(path, message, busy_timeout_ms)
                } else {
                    DbError::Open {
                        path: path.to_path_buf(),
                        message,
                    }
                }
            })?;
        {
            let mut conn = pool.get()?;
            conn.run_pending_migrations(MIGRATIONS).map_err(|e| {
                let message = e.to_string();
                if is_locked(&message) {
                    locked(path, message, busy_timeout_ms)
                } else {
                    DbError::Migration(message)
                }
            })?;
            diesel::sql_query("INSERT OR IGNORE INTO audit_keying (id, keyed_from) VALUES (1, ?)")
                .bind::<diesel::sql_types::BigInt, _>(audit_key.keyed_from())
                .execute(&mut conn)
                .map_err(|e| lock_or(path, busy_timeout_ms, e.into()))?;
        }
        tracing::info!(target: "bramble::db", path = %path.display(), "Configuration Database ready");
        Ok(Database {
            pool,
            sealer: Arc::new(sealer),
            path: path.to_path_buf(),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            audit_alarm: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Reports on a database without changing it: whether it exists, which
    /// migrations are applied and which are pending. Fails as `open` would
    /// for a foreign, damaged or too-new file, and waits up to
    /// `busy_timeout_ms` for a lock another program holds.
    pub fn check(path: &Path, busy_timeout_ms: u32) -> DbResult<Health> {
        if !path.exists() {
            return Ok(Health {
                path: path.to_path_buf(),
                exists: false,
                applied: Vec::new(),
                pending: migration_versions(),
            });
        }
        inspect(path, busy_timeout_ms)?;
        let mut conn = establish(path, busy_timeout_ms)?;
        let applied = applied_versions(&mut conn).map_err(|e| lock_or(path, busy_timeout_ms, e))?;
        let pending = migration_versions()
            .into_iter()
            .filter(|v| !applied.contains(v))
            .collect();
        Ok(Health {
            path: path.to_path_buf(),
            exists: true,
            applied,
            pending,
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals and unseals stored secrets.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The sealer, for work that outlives a borrow of the database.
    pub fn shared_sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> DbResult<T> + Send + 'static,
    {
        self.run_as(f).await
    }

    /// [`Database::run`] for a layer with an error type of its own (the
    /// console's, the Dispatcher's): `f` may fail in that layer's terms,
    /// and a database failure becomes one of them.
    pub async fn run_as<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    {
        let pool = self.pool.clone();
        match tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            f(&mut conn)
        })
        .await
        {
            Ok(result) => result,
            Err(e) => Err(DbError::Task(e.to_string()).into()),
        }
    }

    /// [`Database::run`] for work that writes: one writer of this process
    /// at a time, the others waiting their turn in order. SQLite allows one
    /// writer anyway; queueing here keeps busy writers from sleeping in
    /// SQLite's busy handler and from holding pooled connections and
    /// threads while they wait.
    pub async fn write<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> DbResult<T> + Send + 'static,
    {
        let _turn = self.write_lock.lock().await;
        self.run(f).await
    }

    /// [`Database::write`] with the sealer too.
    pub async fn write_sealed<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn, &Sealer) -> DbResult<T> + Send + 'static,
    {
        let _turn = self.write_lock.lock().await;
        self.run_sealed(f).await
    }

    /// [`Database::write_sealed`] for a layer with an error type of its own
    /// (see [`Database::run_as`]).
    pub async fn write_sealed_as<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&mut Conn, &Sealer) -> Result<T, E> + Send + 'static,
    {
        let _turn = self.write_lock.lock().await;
        let sealer = self.sealer.clone();
        self.run_as(move |conn| f(conn, &sealer)).await
    }

    /// Like [`Database::run`] with the sealer too, for models with secrets.
    pub async fn run_sealed<T, F>(&self, f: F) -> DbResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn, &Sealer) -> DbResult<T> + Send + 'static,
    {
        let sealer = self.sealer.clone();
        self.run(move |conn| f(conn, &sealer)).await
    }

    /// Runs `f` on the calling thread; for the CLI and tests.
    pub fn run_blocking<T>(&self, f: impl FnOnce(&mut Conn) -> DbResult<T>) -> DbResult<T> {
        let mut conn = self.pool.get()?;
        f(&mut conn)
    }

    /// Walks the audit chain ([`models::audit::verify_chain`]) and
    /// remembers the outcome ([`Database::audit_alarm`]). A broken chain
    /// is logged as an error with the code `AUDIT_CHAIN_BROKEN` under
    /// `bramble::audit`, naming the first altered entry; a chain that
    /// verifies clears an earlier alarm. Returns the outcome and the number
    /// of entries.
    pub async fn check_audit_log(&self) -> DbResult<(Result<(), models::audit::AuditTamper>, i64)> {
        let (outcome, entries) = self
            .run(|conn| {
                let outcome = models::audit::verify_chain(conn)?;
                let (_, total) = models::audit::find_page(conn, 0, 0)?;
                Ok((outcome, total))
            })
            .await?;
        match &outcome {
            Ok(()) => {
                tracing::info!(target: "bramble::audit", entries, "the audit log's {entries} entries are intact")
            }
            Err(tamper) => {
                tracing::error!(target: "bramble::audit", code = "AUDIT_CHAIN_BROKEN", entry = tamper.id.0, "{tamper}. Compare the database with its backups to find what was changed, and keep this copy as evidence.")
            }
        }
        if let Ok(mut alarm) = self.audit_alarm.lock() {
            *alarm = outcome.clone().err();
        }
        Ok((outcome, entries))
    }

    /// Where the last check of the audit chain found it broken, if it did.
    pub fn audit_alarm(&self) -> Option<models::audit::AuditTamper> {
        self.audit_alarm.lock().ok().and_then(|a| a.clone())
    }

    /// A round trip to the database: is it reachable and answering?
    pub async fn ping(&self) -> DbResult<()> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1 AS value").get_result::<IntRow>(conn)?;
            Ok(())
        })
        .await
    }
}

/// The file of the audit log's key, beside the master key.
pub fn audit_key_path(db_path: &Path) -> PathBuf {
    let mut name = db_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".audit-key");
    db_path.with_file_name(name)
}

/// Whether the audit log was keyed already (a key file must exist), and the
/// id the next entry will get. Reads only.
fn audit_keying(path: &Path, busy_timeout_ms: u32) -> DbResult<(bool, i64)> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > 0 => {}
        _ => return Ok((false, 1)),
    }
    let mut conn = establish(path, busy_timeout_ms)?;
    let mut count = |sql: &str| -> DbResult<i64> {
        Ok(diesel::sql_query(sql)
            .get_result::<CountRow>(&mut conn)
            .map_err(|e| lock_or(path, busy_timeout_ms, e.into()))?
            .value)
    };
    let keyed = count("SELECT count(*) AS value FROM sqlite_master WHERE type = 'table' AND name = 'audit_keying'")? > 0
        && count("SELECT count(*) AS value FROM audit_keying")? > 0;
    let has_log = count(
        "SELECT count(*) AS value FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
    )? > 0;
    let next = if has_log {
        count("SELECT coalesce(max(id), 0) + 1 AS value FROM audit_log")?
    } else {
        1
    };
    Ok((keyed, next))
}

/// The master key file sealing this database's secrets.
pub fn key_path(db_path: &Path) -> PathBuf {
    let mut name = db_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".key");
    db_path.with_file_name(name)
}

/// Every sealed column (table, column), so that a database holding a
/// sealed value is never given a new master key.
const SEALED_SECRETS: &[(&str, &str)] = &[
    ("srp_connections", "srp_key_sealed"),
    ("device_keys", "sealed_key"),
    ("domain_keys", "sealed_private_key"),
    ("activation_passwords", "sealed_secret"),
    ("service_secrets", "sealed_value"),
    ("admin_commands", "sealed_password"),
];

/// Whether the database file holds any sealed secret (a missing or empty
/// file holds none). Reads only.
fn holds_sealed_secrets(path: &Path, busy_timeout_ms: u32) -> DbResult<bool> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > 0 => {}
        _ => return Ok(false),
    }
    let mut conn = establish(path, busy_timeout_ms)?;
    for (table, column) in SEALED_SECRETS {
        // A database of an older schema may lack the table or the column.
        let exists = diesel::sql_query(format!(
            "SELECT count(*) AS value FROM pragma_table_info('{table}') WHERE name = '{column}'"
        ))
        .get_result::<CountRow>(&mut conn)
        .map_err(|e| lock_or(path, busy_timeout_ms, e.into()))?
        .value;
        if exists == 0 {
            continue;
        }
        let rows = diesel::sql_query(format!(
            "SELECT count(*) AS value FROM (SELECT 1 FROM {table} WHERE {column} IS NOT NULL LIMIT 1)"
        ))
        .get_result::<CountRow>(&mut conn)
        .map_err(|e| lock_or(path, busy_timeout_ms, e.into()))?
        .value;
        if rows > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Creates `folder` (and any missing parent) readable by its owner only:
/// it holds the database, its master key and the logs.
pub fn create_private_dir(folder: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(folder)
}

fn ensure_writable_folder(folder: &Path) -> DbResult<()> {
    let unwritable = |source| DbError::DataDirUnwritable {
        path: folder.to_path_buf(),
        source,
    };
    create_private_dir(folder).map_err(unwritable)?;
    let probe = folder.join(".bramble-write-check");
    std::fs::write(&probe, b"ok").map_err(unwritable)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A connection of its own for the checks made before the pool exists. It
/// waits for locks as long as the pool's connections would: a server
/// starting beside a command (or a backup tool) holds the file briefly,
/// which is no reason to refuse it.
fn establish(path: &Path, busy_timeout_ms: u32) -> DbResult<SqliteConnection> {
    let mut conn =
        SqliteConnection::establish(&path.to_string_lossy()).map_err(|e| DbError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_timeout_ms};"))
        .map_err(|e| DbError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(conn)
}

/// Whether SQLite's words say the file was locked (`SQLITE_BUSY`,
/// `SQLITE_LOCKED`) rather than anything about its contents. diesel passes
/// on SQLite's message but not its result code; these messages are
/// SQLite's fixed texts for those two codes.
fn is_locked(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database table is locked")
}

fn locked(path: &Path, report: String, waited_ms: u32) -> DbError {
    DbError::Locked {
        path: path.to_path_buf(),
        report,
        waited_ms,
    }
}

/// A lock that outlasted the busy timeout, told as one; any other error
/// as it was.
fn lock_or(path: &Path, waited_ms: u32, e: DbError) -> DbError {
    match &e {
        DbError::Query(q) if is_locked(&q.to_string()) => locked(path, q.to_string(), waited_ms),
        _ => e,
    }
}

/// Refuses files that are not ours; touches nothing. Waits up to
/// `busy_timeout_ms` for another program's lock, and reports one that
/// outlasts it as [`DbError::Locked`], never as damage.
fn inspect(path: &Path, busy_timeout_ms: u32) -> DbResult<()> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(DbError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    };
    if len == 0 {
        return Ok(());
    }
    let mut header = [0u8; 16];
    {
        use std::io::Read;
        let mut file = std::fs::File::open(path).map_err(|e| DbError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if file.read_exact(&mut header).is_err() || &header != SQLITE_MAGIC {
            return Err(DbError::NotSqlite {
                path: path.to_path_buf(),
            });
        }
    }
    let mut conn = establish(path, busy_timeout_ms)?;
    let corrupt = |e: diesel::result::Error| {
        let report = e.to_string();
        if is_locked(&report) {
            locked(path, report, busy_timeout_ms)
        } else {
            DbError::Corrupt {
                path: path.to_path_buf(),
                report,
            }
        }
    };
    let report = diesel::sql_query("PRAGMA quick_check")
        .load::<QuickCheckRow>(&mut conn)
        .map_err(corrupt)?;
    let problems: Vec<String> = report
        .into_iter()
        .map(|r| r.quick_check)
        .filter(|line| line != "ok")
        .collect();
    if !problems.is_empty() {
        return Err(DbError::Corrupt {
            path: path.to_path_buf(),
            report: problems.join("; "),
        });
    }
    let application_id =
        diesel::sql_query("SELECT application_id AS value FROM pragma_application_id()")
            .get_result::<IntRow>(&mut conn)
            .map_err(corrupt)?
            .value;
    let tables = diesel::sql_query(
        "SELECT count(*) AS value FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != '__diesel_schema_migrations'",
    )
    .get_result::<CountRow>(&mut conn)
    .map_err(corrupt)?
    .value;
    if application_id != APPLICATION_ID && (application_id != 0 || tables > 0) {
        return Err(DbError::Foreign {
            path: path.to_path_buf(),
            application_id,
            tables,
        });
    }
    let known = migration_versions();
    let unknown: Vec<String> = applied_versions(&mut conn)
        .map_err(|e| lock_or(path, busy_timeout_ms, e))?
        .into_iter()
        .filter(|v| !known.contains(v))
        .collect();
    if !unknown.is_empty() {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            unknown,
            version: crate::VERSION,
        });
    }
    Ok(())
}

#[derive(QueryableByName)]
struct QuickCheckRow {
    #[diesel(sql_type = Text)]
    quick_check: String,
}

fn applied_versions(conn: &mut SqliteConnection) -> DbResult<Vec<String>> {
    let exists = diesel::sql_query(
        "SELECT count(*) AS value FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
    )
    .get_result::<CountRow>(conn)?
    .value;
    if exists == 0 {
        return Ok(Vec::new());
    }
    Ok(diesel::sql_query(
        "SELECT version AS value FROM __diesel_schema_migrations ORDER BY version",
    )
    .load::<TextRow>(conn)?
    .into_iter()
    .map(|r| r.value)
    .collect())
}

fn migration_versions() -> Vec<String> {
    use diesel::migration::MigrationSource;
    let migrations: Vec<Box<dyn diesel::migration::Migration<diesel::sqlite::Sqlite>>> =
        MigrationSource::<diesel::sqlite::Sqlite>::migrations(&MIGRATIONS).unwrap_or_default();
    migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect()
}

/// Runs `f` in a write transaction: `BEGIN IMMEDIATE` when the connection
/// is not in a transaction yet, so concurrent writers queue on SQLite's
/// lock instead of failing halfway; a savepoint inside the caller's
/// transaction otherwise, so the write commits or rolls back with the
/// change it belongs to.
pub fn write_transaction<T, E>(
    conn: &mut Conn,
    f: impl FnOnce(&mut Conn) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    let nested = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_some();
    if nested {
        conn.transaction(f)
    } else {
        conn.immediate_transaction(f)
    }
}

/// The current time in UTC, as stored in the database.
pub fn now() -> time::PrimitiveDateTime {
    let now = time::OffsetDateTime::now_utc();
    time::PrimitiveDateTime::new(now.date(), now.time())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A Bramble database left in SQLite's rollback-journal mode, the mode
    /// a fresh file is in while the first server sets it up: there a
    /// writer's exclusive lock keeps every reader out.
    fn rollback_mode_database(dir: &Path) -> PathBuf {
        let path = dir.join("bramble.db");
        drop(Database::open_path(&path, 1, 5_000).unwrap());
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        conn.batch_execute("PRAGMA journal_mode = DELETE;").unwrap();
        path
    }

    /// Another program's connection holding the whole file until `release`
    /// is called.
    fn hold_exclusive(path: &Path) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let holder = std::thread::spawn(move || {
            let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
            conn.batch_execute(
                "BEGIN EXCLUSIVE; UPDATE __diesel_schema_migrations SET run_on = run_on;",
            )
            .unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
            conn.batch_execute("COMMIT;").unwrap();
        });
        held_rx.recv().unwrap();
        (release_tx, holder)
    }

    /// A database holding a sealed secret (an SRP key), closed.
    fn database_with_a_sealed_secret(dir: &Path) -> PathBuf {
        let path = dir.join("data").join("bramble.db");
        let db = Database::open_path(&path, 1, 5_000).unwrap();
        let sealed = db.sealer().seal("test/1", b"secret").unwrap();
        db.run_blocking(|conn| {
            diesel::sql_query(
                "INSERT INTO domain_keys (id, public_key, sealed_private_key, created_at) VALUES (1, x'00', ?, CURRENT_TIMESTAMP)",
            )
            .bind::<diesel::sql_types::Binary, _>(sealed)
            .execute(conn)?;
            Ok(())
        })
        .unwrap();
        path
    }

    #[test]
    fn a_missing_master_key_beside_sealed_data_stops_the_open_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = database_with_a_sealed_secret(dir.path());
        std::fs::remove_file(key_path(&path)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = Database::open_path(&path, 1, 5_000).unwrap_err();
        assert_eq!(e.code(), "DB_KEY_MISSING", "{e}");
        let words = e.to_string();
        assert!(words.contains("bramble.db.key"), "{words}");
        assert!(words.contains("Restore"), "{words}");
        assert!(!key_path(&path).exists(), "no new key was made");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is unchanged"
        );
    }

    #[test]
    fn a_missing_audit_key_of_a_keyed_log_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bramble.db");
        drop(Database::open_path(&path, 1, 5_000).unwrap());
        let audit_key = audit_key_path(&path);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&audit_key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::remove_file(&audit_key).unwrap();
        let e = Database::open_path(&path, 1, 5_000).unwrap_err();
        assert_eq!(e.code(), "DB_AUDIT_KEY_MISSING", "{e}");
        assert!(e.to_string().contains("bramble.db.audit-key"), "{e}");
        assert!(!audit_key.exists(), "no new key was made");
    }

    #[tokio::test]
    async fn a_broken_audit_chain_raises_the_alarm_until_it_verifies_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_path(&dir.path().join("bramble.db"), 1, 5_000).unwrap();
        db.run_blocking(|conn| {
            models::audit::append(conn, "admin", "user.update", "user/1", None, None)?;
            models::audit::append(conn, "admin", "user.update", "user/2", None, None)?;
            Ok(())
        })
        .unwrap();
        let (outcome, entries) = db.check_audit_log().await.unwrap();
        assert_eq!((outcome, entries), (Ok(()), 2));
        assert_eq!(db.audit_alarm(), None);
        let alter = |actor: &'static str| {
            db.run_blocking(move |conn| {
                diesel::sql_query(format!(
                    "UPDATE audit_log SET actor = '{actor}' WHERE id = 2"
                ))
                .execute(conn)?;
                Ok(())
            })
            .unwrap()
        };
        alter("mallory");
        let (outcome, _) = db.check_audit_log().await.unwrap();
        assert_eq!(outcome.unwrap_err().id.0, 2);
        assert_eq!(db.audit_alarm().map(|t| t.id.0), Some(2));
        alter("admin");
        assert_eq!(db.check_audit_log().await.unwrap().0, Ok(()));
        assert_eq!(db.audit_alarm(), None, "cleared once intact again");
    }

    #[test]
    fn a_missing_master_key_is_made_for_a_database_without_sealed_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bramble.db");
        drop(Database::open_path(&path, 1, 5_000).unwrap());
        std::fs::remove_file(key_path(&path)).unwrap();
        drop(Database::open_path(&path, 1, 5_000).unwrap());
        assert!(key_path(&path).exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_data_folder_and_key_are_private_and_an_exposed_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = database_with_a_sealed_secret(dir.path());
        assert_eq!(mode(path.parent().unwrap()), 0o700, "the data folder");
        assert_eq!(mode(&key_path(&path)), 0o600, "the master key");
        std::fs::set_permissions(key_path(&path), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Database::open_path(&path, 1, 5_000).unwrap_err();
        assert_eq!(e.code(), "DB_KEY_EXPOSED", "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert_eq!(mode(&key_path(&path)), 0o644, "refused, not changed");
        std::fs::set_permissions(key_path(&path), std::fs::Permissions::from_mode(0o600)).unwrap();
        Database::open_path(&path, 1, 5_000).unwrap();
    }

    #[test]
    fn every_pooled_connection_syncs_each_commit() {
        #[derive(QueryableByName)]
        struct Synchronous {
            #[diesel(sql_type = Integer)]
            synchronous: i32,
        }
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_path(&dir.path().join("bramble.db"), 2, 5_000).unwrap();
        let level = db
            .run_blocking(|conn| {
                Ok(diesel::sql_query("PRAGMA synchronous").get_result::<Synchronous>(conn)?)
            })
            .unwrap();
        // 2 is FULL: the write-ahead log is flushed at every commit.
        assert_eq!(level.synchronous, 2);
    }

    #[test]
    fn a_lock_released_within_the_busy_timeout_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = rollback_mode_database(dir.path());
        let (release, holder) = hold_exclusive(&path);
        // Released while the opener waits; released earlier, the open would
        // succeed anyway, so the moment only decides whether waiting is
        // exercised, never the outcome.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = release.send(());
        });
        let health = Database::check(&path, 60_000).expect("check waits for the lock");
        assert!(health.exists && health.pending.is_empty());
        let db = Database::open_path(&path, 1, 60_000).expect("open waits for the lock");
        db.run_blocking(applied_versions).unwrap();
        releaser.join().unwrap();
        holder.join().unwrap();
    }

    #[test]
    fn a_lock_held_past_the_busy_timeout_is_reported_as_locked_not_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = rollback_mode_database(dir.path());
        let before = std::fs::read(&path).unwrap();
        let (release, holder) = hold_exclusive(&path);
        let opened = Database::open_path(&path, 1, 50).map(|_| ());
        let checked = Database::check(&path, 50).map(|_| ());
        release.send(()).unwrap();
        holder.join().unwrap();
        for result in [opened, checked] {
            let e = result.expect_err("the file is locked");
            assert_eq!(e.code(), "DB_LOCKED", "{e}");
            let words = e.to_string();
            assert!(words.contains("locked by another program"), "{words}");
            assert!(words.contains("did not change it"), "{words}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is unchanged"
        );
        // Once the other program is done, the same file opens.
        Database::open_path(&path, 1, 5_000).unwrap();
    }
}
