//! The schema, as numbered steps applied once each. The same SQL runs on SQLite and
//! PostgreSQL: TEXT, BIGINT and DOUBLE PRECISION only, timestamps as Unix seconds.

use sqlx::AnyPool;

const STEPS: &[&str] = &[
    "CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        team TEXT,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        policy TEXT NOT NULL,
        metadata TEXT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT,
        created_at BIGINT NOT NULL
    )",
    // Usage is kept per minute and per (key, team, end user, model): budgets and reports
    // need sums, and one row per request would cost a write per request at full load.
    // Absent key, team or end user is '' (a NULL would never match the primary key).
    "CREATE TABLE usage_minutes (
        minute BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        team TEXT NOT NULL,
        end_user TEXT NOT NULL,
        model TEXT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (minute, key_id, team, end_user, model)
    )",
    "CREATE INDEX usage_by_key ON usage_minutes (key_id, minute)",
    "CREATE INDEX usage_by_team ON usage_minutes (team, minute)",
    // The audit log: one hash chain per instance (`chain`), `record` is the JSON text the
    // hash covers; the other columns are copies for filtering.
    "CREATE TABLE audit_log (
        chain TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        record TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        id TEXT NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT,
        team TEXT,
        end_user TEXT,
        model TEXT,
        target TEXT,
        status BIGINT NOT NULL,
        PRIMARY KEY (chain, seq)
    )",
    "CREATE INDEX audit_by_time ON audit_log (at_ms, chain, seq)",
    "CREATE INDEX audit_by_key ON audit_log (key_id, at_ms)",
    "CREATE TABLE audit_chains (
        chain TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        journal_generation BIGINT NOT NULL,
        journal_offset BIGINT NOT NULL
    )",
];

pub async fn apply(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_steps (step BIGINT PRIMARY KEY)").execute(pool).await?;
    let done: Vec<(i64,)> = sqlx::query_as("SELECT step FROM schema_steps").fetch_all(pool).await?;
    for (index, step) in STEPS.iter().enumerate() {
        let number = index as i64 + 1;
        if done.iter().any(|(d,)| *d == number) {
            continue;
        }
        if let Err(error) = apply_step(pool, number, step).await {
            // Another instance starting at the same moment may have applied it first.
            let applied: Option<(i64,)> = sqlx::query_as("SELECT step FROM schema_steps WHERE step = $1")
                .bind(number)
                .fetch_optional(pool)
                .await?;
            if applied.is_none() {
                return Err(error);
            }
        }
    }
    Ok(())
}

async fn apply_step(pool: &AnyPool, number: i64, step: &str) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query(step).execute(&mut *transaction).await?;
    sqlx::query("INSERT INTO schema_steps (step) VALUES ($1)").bind(number).execute(&mut *transaction).await?;
    transaction.commit().await
}
