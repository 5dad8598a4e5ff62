//! The audit log's tables: one row per record with the columns filters need, the record's
//! JSON text and its hash links; and each chain's head (last seq and hash, and how far the
//! writer has read that instance's journal).

use super::filter::Where;
use super::{Backend, Statements, Store, StoreError, values};

/// Where a chain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
    pub journal_generation: i64,
    pub journal_offset: i64,
}

/// A record as stored: the JSON text is what the hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    pub chain: String,
    pub seq: i64,
    pub at_ms: i64,
    pub record: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The indexed columns of a record, taken from it when it is written.
#[derive(Debug, Clone, Default)]
pub struct AuditColumns {
    pub id: String,
    pub kind: String,
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub end_user: Option<String>,
    pub model: Option<String>,
    pub target: Option<String>,
    pub status: i64,
}

/// `GET /admin/audit` filters; unset fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub end_user: Option<String>,
    pub model: Option<String>,
    /// The provider part of the target.
    pub provider: Option<String>,
    pub status: Option<i64>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

type HeadRow = (String, i64, String, i64, i64);
type AuditRow = (String, i64, i64, String, String, String);

const AUDIT_COLUMNS: &str = "chain, seq, at_ms, record, prev_hash, hash";

impl Store {
    pub async fn chain_heads(&self) -> Result<Vec<ChainHead>, StoreError> {
        let rows: Vec<HeadRow> = sqlx::query_as(
            "SELECT chain, seq, hash, journal_generation, journal_offset FROM audit_chains ORDER BY chain",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(head_from_row).collect())
    }

    pub async fn chain_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError> {
        let row: Option<HeadRow> = sqlx::query_as(
            "SELECT chain, seq, hash, journal_generation, journal_offset FROM audit_chains WHERE chain = $1",
        )
        .bind(chain)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(head_from_row))
    }

    /// Writes records and moves the chain's head, in one transaction: either both happen
    /// or neither, so the journal offset never runs ahead of what is stored.
    pub async fn append_audit(&self, rows: &[(StoredAudit, AuditColumns)], head: &ChainHead) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut query = sqlx::query(insert_statement(self.backend, chunk.len()));
            for (row, columns) in chunk {
                query = query
                    .bind(&row.chain)
                    .bind(row.seq)
                    .bind(row.at_ms)
                    .bind(&row.record)
                    .bind(&row.prev_hash)
                    .bind(&row.hash)
                    .bind(&columns.id)
                    .bind(&columns.kind)
                    .bind(&columns.key_id)
                    .bind(&columns.team)
                    .bind(&columns.end_user)
                    .bind(&columns.model)
                    .bind(&columns.target)
                    .bind(columns.status);
            }
            query.execute(&mut *transaction).await?;
        }
        sqlx::query(
            "INSERT INTO audit_chains (chain, seq, hash, journal_generation, journal_offset) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
             journal_generation = excluded.journal_generation, journal_offset = excluded.journal_offset",
        )
        .bind(&head.chain)
        .bind(head.seq)
        .bind(&head.hash)
        .bind(head.journal_generation)
        .bind(head.journal_offset)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// One chain's records after `after_seq`, in order, for verification.
    pub async fn audit_chain_page(
        &self,
        chain: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredAudit>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(chain)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(audit_from_row).collect())
    }

    /// Matching records in time order, after the cursor `(at_ms, chain, seq)`.
    pub async fn audit_query(
        &self,
        filter: &AuditFilter,
        after: Option<(i64, String, i64)>,
        limit: i64,
    ) -> Result<Vec<StoredAudit>, StoreError> {
        let mut filters = Where::default();
        filters.equals("key_id", filter.key_id.as_deref());
        filters.equals("team", filter.team.as_deref());
        filters.equals("end_user", filter.end_user.as_deref());
        filters.equals("model", filter.model.as_deref());
        if let Some(provider) = &filter.provider {
            let pattern = filters.text(format!("{provider}/%"));
            filters.condition(format!("target LIKE {pattern}"));
        }
        filters.compare("status =", filter.status);
        filters.compare("at_ms >=", filter.since_ms);
        filters.compare("at_ms <", filter.until_ms);
        if let Some((at_ms, chain, seq)) = after {
            let (at, chain, seq) = (filters.number(at_ms), filters.text(chain), filters.number(seq));
            filters.condition(format!(
                "(at_ms > {at} OR (at_ms = {at} AND (chain > {chain} OR (chain = {chain} AND seq > {seq}))))"
            ));
        }
        let limit = filters.number(limit);
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log{} ORDER BY at_ms, chain, seq LIMIT {limit}",
            filters.clause()
        );
        let rows = filters.bind(sqlx::query_as::<_, AuditRow>(&sql)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(audit_from_row).collect())
    }

    /// Deletes records older than `before_ms` (retention); returns how many.
    pub async fn delete_audit_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE at_ms < $1").bind(before_ms).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

fn head_from_row((chain, seq, hash, journal_generation, journal_offset): HeadRow) -> ChainHead {
    ChainHead { chain, seq, hash, journal_generation, journal_offset }
}

fn audit_from_row((chain, seq, at_ms, record, prev_hash, hash): AuditRow) -> StoredAudit {
    StoredAudit { chain, seq, at_ms, record, prev_hash, hash }
}

/// Records per INSERT: 14 parameters each stays below both databases' limits.
const ROWS_PER_STATEMENT: usize = 64;

fn insert_statement(backend: Backend, rows: usize) -> &'static str {
    static STATEMENTS: Statements = Statements::new();
    STATEMENTS.get(backend, rows, ROWS_PER_STATEMENT, |backend, count| {
        format!(
            "INSERT INTO audit_log (chain, seq, at_ms, record, prev_hash, hash, id, kind, key_id, team, end_user, \
             model, target, status) VALUES {}",
            values(backend, count, 14)
        )
    })
}
