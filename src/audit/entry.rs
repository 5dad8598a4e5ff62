//! An audit record as a request fills it in: already in its journal form, each field
//! written when the request learns it, while what it is copied from is still in cache.
//! Recording it at the end is then one copy of one small buffer into the journal. Filling
//! a struct of strings and encoding it at the end read each string back from memory gone
//! cold during the request: that was most of the audit log's cost per request.

use std::net::IpAddr;

use super::encoding::{self, Field};

pub struct AuditEntry {
    bytes: Vec<u8>,
}

/// Room for a typical record (~170 bytes), so filling one rarely grows it.
const TYPICAL: usize = 256;

impl AuditEntry {
    /// An entry for a request that has just arrived; the pipeline adds the rest.
    pub fn new(kind: &'static str, endpoint: &'static str, request_id: &str, client_ip: Option<IpAddr>) -> AuditEntry {
        let mut bytes = Vec::with_capacity(TYPICAL);
        let at_ms = jiff::Timestamp::now().as_millisecond();
        let request_id = Some(request_id).filter(|id| !id.is_empty());
        // No id: the writer gives one from the record's place in its chain.
        encoding::begin(&mut bytes, at_ms, kind, endpoint, request_id, client_ip);
        AuditEntry { bytes }
    }

    /// Adds a field; a field set twice keeps its last value.
    pub fn set(&mut self, field: Field<'_>) {
        encoding::put(&mut self.bytes, field);
    }

    /// Who asked.
    pub fn set_principal(&mut self, principal: &crate::auth::Principal) {
        if principal.is_admin() {
            self.set(Field::Admin(true));
        }
        if let Some(key) = principal.key() {
            self.set(Field::KeyId(&key.record.id));
            if let Some(team) = &key.record.team {
                self.set(Field::Team(team));
            }
        }
    }

    /// The finished journal form.
    pub fn finish(mut self) -> Vec<u8> {
        encoding::end(&mut self.bytes);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::FailedAttempt;

    #[test]
    fn an_entry_decodes_to_the_record_its_fields_describe() {
        let client_ip = Some(IpAddr::from([10, 0, 0, 7]));
        let mut entry = AuditEntry::new("chat", "/v1/chat/completions", "req_1", client_ip);
        entry.set(Field::KeyId("key_1"));
        entry.set(Field::Status(502));
        let failed = [FailedAttempt { target: "openai/gpt".into(), error: "timeout".into() }];
        entry.set(Field::FailedAttempts(&failed));
        entry.set(Field::PiiClasses(&["email", "phone"]));
        entry.set(Field::CostUsd(0.25));
        // Set again later in the request: the last value is the record's.
        entry.set(Field::Status(200));
        let record = encoding::decode(&entry.finish()).unwrap();
        assert_eq!(record.id, "", "the writer gives the id");
        assert!(record.at_ms > 1_700_000_000_000);
        assert_eq!((record.kind.as_ref(), record.endpoint.as_ref()), ("chat", "/v1/chat/completions"));
        assert_eq!((record.request_id.as_deref(), record.client_ip), (Some("req_1"), client_ip));
        assert_eq!((record.key_id.as_deref(), record.team.as_deref()), (Some("key_1"), None));
        assert_eq!(record.status, 200);
        assert_eq!(record.failed_attempts, failed);
        assert_eq!(record.pii_classes, ["email", "phone"]);
        assert_eq!(record.cost_usd, Some(0.25));
        assert_eq!((record.admin, record.latency_ms, record.outcome), (false, None, None));
    }

    #[test]
    fn an_empty_request_id_is_none() {
        let record = encoding::decode(&AuditEntry::new("admin", "policies", "", None).finish()).unwrap();
        assert_eq!((record.request_id, record.client_ip), (None, None));
    }
}
