//! Virtual keys and teams. A key is stored only as the SHA-256 of its secret, plus a
//! short prefix to recognise it by.

use super::{Store, StoreError};
use crate::limits::spec::{KeyPolicy, TeamPolicy};

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    pub hash: String,
    /// The secret's first characters, for lists (`sk-sy-3fa9…`).
    pub prefix: String,
    pub policy: KeyPolicy,
    /// A JSON object, the admin's own.
    pub metadata: serde_json::Value,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct TeamRecord {
    pub id: String,
    pub policy: TeamPolicy,
}

type KeyRow = (String, String, Option<String>, String, String, String, String, Option<i64>, Option<i64>, i64);

const KEY_COLUMNS: &str = "id, name, team, key_hash, prefix, policy, metadata, expires_at, revoked_at, created_at";

fn key_from_row(row: KeyRow) -> Result<KeyRecord, StoreError> {
    let (id, name, team, hash, prefix, policy, metadata, expires_at, revoked_at, created_at) = row;
    Ok(KeyRecord {
        policy: serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(format!("key {id} policy: {e}")))?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::Corrupt(format!("key {id} metadata: {e}")))?,
        id,
        name,
        team,
        hash,
        prefix,
        expires_at,
        revoked_at,
        created_at,
    })
}

impl Store {
    pub async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let policy = serde_json::to_string(&key.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(&format!("INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.team)
            .bind(&key.hash)
            .bind(&key.prefix)
            .bind(policy)
            .bind(key.metadata.to_string())
            .bind(key.expires_at)
            .bind(key.revoked_at)
            .bind(key.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(key_from_row).transpose()
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<KeyRow> = sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(key_from_row).transpose()
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(key_from_row).collect()
    }

    /// Marks a key revoked; `false` when there is no such live key.
    pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a live key a new secret; the old one stops working.
    pub async fn rotate_key(&self, id: &str, hash: &str, prefix: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET key_hash = $1, prefix = $2 WHERE id = $3 AND revoked_at IS NULL")
            .bind(hash)
            .bind(prefix)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn upsert_team(&self, team: &TeamRecord, at: i64) -> Result<(), StoreError> {
        let policy = serde_json::to_string(&team.policy).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM teams WHERE id = $1").bind(&team.id).execute(&mut *transaction).await?;
        sqlx::query("INSERT INTO teams (id, policy, created_at) VALUES ($1, $2, $3)")
            .bind(&team.id)
            .bind(policy)
            .bind(at)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn team(&self, id: &str) -> Result<Option<TeamRecord>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT id, policy FROM teams WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.map(|(id, policy)| {
            let policy = serde_json::from_str(&policy).map_err(|e| StoreError::Corrupt(format!("team {id}: {e}")))?;
            Ok(TeamRecord { id, policy })
        })
        .transpose()
    }
}
