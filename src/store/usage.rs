//! One row per settled request: who, which model, tokens and cost. Budgets are
//! re-read from here after a restart; `/admin/usage` reports from here.

use serde::Serialize;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct UsageRow {
    pub request_id: String,
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
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
}

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
    /// Inserts rows in one transaction; a request id seen before is left as it is
    /// (settlement is at most once, and a retried batch must not double-count).
    pub async fn record_usage_batch(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO usage (request_id, at, key_id, team, end_user, model, input_tokens, output_tokens, cost_usd)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (request_id) DO NOTHING",
            )
            .bind(&row.request_id)
            .bind(row.at)
            .bind(&row.key_id)
            .bind(&row.team)
            .bind(&row.end_user)
            .bind(&row.model)
            .bind(row.input_tokens)
            .bind(row.output_tokens)
            .bind(row.cost_usd)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Totals of the matching rows, grouped or not.
    pub async fn usage(&self, filter: &UsageFilter, group: Option<UsageGroup>) -> Result<Vec<UsageTotal>, StoreError> {
        let mut conditions = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        for (column, value) in [
            ("key_id", &filter.key_id),
            ("team", &filter.team),
            ("end_user", &filter.end_user),
            ("model", &filter.model),
        ] {
            if let Some(value) = value {
                texts.push(value);
                conditions.push(format!("{column} = ${}", texts.len()));
            }
        }
        let mut numbers = Vec::new();
        for (comparison, value) in [("at >=", filter.since), ("at <", filter.until)] {
            if let Some(value) = value {
                numbers.push(value);
                conditions.push(format!("{comparison} ${}", texts.len() + numbers.len()));
            }
        }
        let where_clause =
            if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let (select_group, group_by) = match group {
            Some(group) => (group.column(), format!(" GROUP BY {0} ORDER BY {0}", group.column())),
            None => ("NULL", String::new()),
        };
        let sql = format!(
            "SELECT {select_group}, COUNT(*), CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), SUM(cost_usd) FROM usage{where_clause}{group_by}"
        );
        let mut query = sqlx::query_as::<_, TotalRow>(&sql);
        for text in texts {
            query = query.bind(text);
        }
        for number in numbers {
            query = query.bind(number);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(group, requests, input, output, cost)| UsageTotal {
                group,
                requests,
                input_tokens: input.unwrap_or(0),
                output_tokens: output.unwrap_or(0),
                cost_usd: cost.unwrap_or(0.0),
            })
            .collect())
    }
}
