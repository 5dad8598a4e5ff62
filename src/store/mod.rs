//! Durable state: virtual keys, teams and usage. SQLite (a file under the data directory)
//! by default, PostgreSQL when `database_url` is set. Both run the same SQL through
//! sqlx's `Any` driver, so they behave the same; the schema is applied on start.

mod audit;
mod filter;
mod keys;
mod schema;
mod usage;
mod writer;

use std::path::Path;
use std::str::FromStr;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use audit::{AuditColumns, AuditFilter, ChainHead, StoredAudit};
pub use keys::{KeyRecord, TeamRecord};
pub use usage::{UsageCell, UsageFilter, UsageGroup, UsageRow, UsageSum, UsageTotal};
pub use writer::UsageWriter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The `(…), (…)` of a multi-row `VALUES` for `rows` rows of `columns` columns. SQLite
/// gets positional `?`: with numbered `$N` it looks each parameter up by name, which at
/// hundreds of parameters per statement topped a CPU profile. PostgreSQL needs `$N`.
fn values(backend: Backend, rows: usize, columns: usize) -> String {
    let row = |index: usize| {
        let params: Vec<String> = (1..=columns)
            .map(|column| match backend {
                Backend::Sqlite => "?".to_owned(),
                Backend::Postgres => format!("${}", index * columns + column),
            })
            .collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// Multi-row statements for 0..=`max_rows` rows, built once per backend by `build`.
struct Statements {
    sqlite: std::sync::OnceLock<Vec<String>>,
    postgres: std::sync::OnceLock<Vec<String>>,
}

impl Statements {
    const fn new() -> Self {
        Statements { sqlite: std::sync::OnceLock::new(), postgres: std::sync::OnceLock::new() }
    }

    fn get(&self, backend: Backend, rows: usize, max_rows: usize, build: impl Fn(Backend, usize) -> String) -> &str {
        let cell = match backend {
            Backend::Sqlite => &self.sqlite,
            Backend::Postgres => &self.postgres,
        };
        let statements = cell.get_or_init(|| (0..=max_rows).map(|count| build(backend, count)).collect());
        &statements[rows.min(max_rows)]
    }
}

/// A connection pool to the configured database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the database and applies the schema. `database_url`
    /// empty: SQLite at `<data_dir>/switchyard.db`.
    pub async fn open(database_url: &str, data_dir: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if database_url.trim().is_empty() {
            std::fs::create_dir_all(data_dir)
                .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
            let file = data_dir.join("switchyard.db");
            (format!("sqlite://{}?mode=rwc", file.display()), Backend::Sqlite)
        } else if database_url.starts_with("sqlite:") {
            (database_url.to_owned(), Backend::Sqlite)
        } else {
            (database_url.to_owned(), Backend::Postgres)
        };
        let options = sqlx::any::AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time; more connections only wait on its lock.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor as _;
                        // WAL with NORMAL sync: readers never block the writer, and a crash
                        // loses at most the last commits, never the database.
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store { pool, backend };
        schema::apply(&store.pool).await?;
        Ok(store)
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
