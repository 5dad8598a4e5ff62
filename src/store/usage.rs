//! Usage per minute and per key, team, end user and model: requests, tokens and cost.
//! Budgets are re-read from here after a restart; `/admin/usage` reports from here.
//! (Per-request records are the audit log's job.)

use serde::Serialize;

use super::filter::Where;
use super::{Backend, Statements, Store, StoreError, values};

/// One settled request's usage.
#[derive(Debug, Clone)]
pub struct UsageRow {
    /// Unix seconds.
    pub at: i64,
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub end_user: Option<String>,
    /// `provider/model`
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// Which rows to count; unset fields match everything.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub end_user: Option<String>,
    pub model: Option<String>,
    /// Unix seconds, inclusive (counted by whole minutes).
    pub since: Option<i64>,
    /// Unix seconds, exclusive (counted by whole minutes).
    pub until: Option<i64>,
}

/// Usage summed over one minute for one (key, team, end user, model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSum {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// (minute start in Unix seconds, key id, team, end user, model); absent parts are ''.
pub type UsageCell = (i64, String, String, String, String);

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UsageTotal {
    /// The group's value (a key id, team, end user or model); absent for a plain total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// What `/admin/usage` can group by: a column name, never user text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Key,
    Team,
    EndUser,
    Model,
}

impl UsageGroup {
    pub fn parse(name: &str) -> Option<UsageGroup> {
        Some(match name {
            "key" => UsageGroup::Key,
            "team" => UsageGroup::Team,
            "end_user" | "user" => UsageGroup::EndUser,
            "model" => UsageGroup::Model,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            UsageGroup::Key => "key_id",
            UsageGroup::Team => "team",
            UsageGroup::EndUser => "end_user",
            UsageGroup::Model => "model",
        }
    }
}

type TotalRow = (Option<String>, i64, Option<i64>, Option<i64>, Option<f64>);

impl Store {
    /// Adds per-minute sums in one transaction, many rows per statement.
    pub async fn add_usage(&self, cells: &[(UsageCell, UsageSum)]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        for chunk in cells.chunks(ROWS_PER_STATEMENT) {
            let mut query = sqlx::query(upsert_statement(self.backend, chunk.len()));
            for ((minute, key_id, team, end_user, model), sum) in chunk {
                query = query
                    .bind(*minute)
                    .bind(key_id)
                    .bind(team)
                    .bind(end_user)
                    .bind(model)
                    .bind(sum.requests)
                    .bind(sum.input_tokens)
                    .bind(sum.output_tokens)
                    .bind(sum.cost_usd);
            }
            query.execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Totals of the matching rows, grouped or not.
    pub async fn usage(&self, filter: &UsageFilter, group: Option<UsageGroup>) -> Result<Vec<UsageTotal>, StoreError> {
        let mut filters = Where::default();
        // Absent parts are stored as '', so a filter on them never matches a real value.
        filters.equals("key_id", filter.key_id.as_deref());
        filters.equals("team", filter.team.as_deref());
        filters.equals("end_user", filter.end_user.as_deref());
        filters.equals("model", filter.model.as_deref());
        let minute = |at: i64| at.div_euclid(60) * 60;
        filters.compare("minute >=", filter.since.map(minute));
        filters.compare("minute <", filter.until.map(minute));
        let where_clause = filters.clause();
        let (select_group, group_by) = match group {
            Some(group) => (group.column(), format!(" GROUP BY {0} ORDER BY {0}", group.column())),
            None => ("NULL", String::new()),
        };
        let sql = format!(
            "SELECT {select_group}, CAST(COALESCE(SUM(requests), 0) AS BIGINT), CAST(SUM(input_tokens) AS BIGINT), \
             CAST(SUM(output_tokens) AS BIGINT), SUM(cost_usd) FROM usage_minutes{where_clause}{group_by}"
        );
        let rows = filters.bind(sqlx::query_as::<_, TotalRow>(&sql)).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(group, requests, input, output, cost)| UsageTotal {
                group: group.filter(|group| !group.is_empty()),
                requests,
                input_tokens: input.unwrap_or(0),
                output_tokens: output.unwrap_or(0),
                cost_usd: cost.unwrap_or(0.0),
            })
            .collect())
    }
}

/// Rows per INSERT: 9 parameters each stays far below SQLite's and PostgreSQL's limits.
const ROWS_PER_STATEMENT: usize = 100;

/// `INSERT … ON CONFLICT … DO UPDATE` adding to existing sums, for `rows` rows.
fn upsert_statement(backend: Backend, rows: usize) -> &'static str {
    static STATEMENTS: Statements = Statements::new();
    STATEMENTS.get(backend, rows, ROWS_PER_STATEMENT, |backend, count| {
        format!(
            "INSERT INTO usage_minutes \
             (minute, key_id, team, end_user, model, requests, input_tokens, output_tokens, cost_usd) \
             VALUES {} ON CONFLICT (minute, key_id, team, end_user, model) DO UPDATE SET \
             requests = usage_minutes.requests + excluded.requests, \
             input_tokens = usage_minutes.input_tokens + excluded.input_tokens, \
             output_tokens = usage_minutes.output_tokens + excluded.output_tokens, \
             cost_usd = usage_minutes.cost_usd + excluded.cost_usd",
            values(backend, count, 9)
        )
    })
}
