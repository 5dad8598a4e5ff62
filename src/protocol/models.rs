use serde::{Deserialize, Serialize};

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

/// The body of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

impl Model {
    pub fn new(id: String, created: u64, owned_by: &str) -> Self {
        Model { id, object: "model".into(), created, owned_by: owned_by.into() }
    }
}
