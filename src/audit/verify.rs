//! Recomputes every chain of the audit log and names the first broken link: an edited
//! record (its hash no longer matches), a deleted one (a gap in the sequence), a relinked
//! one (its `prev_hash` is not the hash before it) or a cut tail (the chain's head points
//! past the last record).

use super::{GENESIS, chain_hash};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("chain {chain}: record {seq} was edited (its hash does not match its content)")]
    Edited { chain: String, seq: i64 },
    #[error("chain {chain}: record {seq} does not link to the record before it")]
    Relinked { chain: String, seq: i64 },
    #[error("chain {chain}: records {after}..{next} are missing (deleted)")]
    Missing { chain: String, after: i64, next: i64 },
    #[error("chain {chain}: ends at record {last} but its head says {head} (records were deleted from the end)")]
    Truncated { chain: String, last: i64, head: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What was checked.
#[derive(Debug, Default)]
pub struct Verified {
    pub chains: usize,
    pub records: u64,
}

pub async fn verify(store: &Store) -> Result<Verified, Broken> {
    let mut verified = Verified::default();
    for head in store.chain_heads().await? {
        verified.chains += 1;
        let chain = head.chain.clone();
        let mut last: Option<(i64, String)> = None;
        loop {
            let page = store.audit_chain_page(&chain, last.as_ref().map_or(0, |(seq, _)| *seq), 1000).await?;
            if page.is_empty() {
                break;
            }
            for row in page {
                match &last {
                    Some((seq, _)) if row.seq != seq + 1 => {
                        return Err(Broken::Missing { chain, after: *seq, next: row.seq });
                    }
                    Some((_, hash)) if &row.prev_hash != hash => return Err(Broken::Relinked { chain, seq: row.seq }),
                    // The first record of a chain starts from the genesis hash; a later
                    // first record (older ones deleted by retention) anchors the chain.
                    None if row.seq == 1 && row.prev_hash != GENESIS => {
                        return Err(Broken::Relinked { chain, seq: row.seq });
                    }
                    _ => {}
                }
                if chain_hash(&row.prev_hash, &row.record) != row.hash {
                    return Err(Broken::Edited { chain, seq: row.seq });
                }
                verified.records += 1;
                last = Some((row.seq, row.hash));
            }
        }
        match last {
            Some((seq, hash)) if seq != head.seq || hash != head.hash => {
                return Err(Broken::Truncated { chain, last: seq, head: head.seq });
            }
            None if head.seq > 0 => return Err(Broken::Truncated { chain, last: 0, head: head.seq }),
            _ => {}
        }
    }
    Ok(verified)
}
