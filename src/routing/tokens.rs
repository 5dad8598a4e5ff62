//! Prompt size before the call, for rules (`prompt_tokens`), context-window fit and
//! cost estimates.
//!
//! Providers whose catalog says `tokenizer = "o200k_base"` (OpenAI's GPT-4o and later,
//! gpt-oss) are counted exactly with tiktoken. Everything else gets a documented
//! estimate: one token per 4 bytes of UTF-8 (≈ 4 characters of English, ≈ 2 of
//! Cyrillic, where tokenizers also spend more tokens per character). Both add OpenAI's
//! per-message overhead of 3 tokens, plus 3 for the reply's priming.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

/// Exact o200k_base count of `texts` (one per message).
pub fn count_o200k<'a>(texts: impl Iterator<Item = &'a str>) -> u64 {
    let bpe = o200k();
    let mut total = REPLY_PRIMING;
    for text in texts {
        total += PER_MESSAGE + bpe.count_ordinary(text) as u64;
    }
    total
}

/// Exact o200k_base count of one text (an answer), without message overhead.
pub fn count_text(text: &str) -> u64 {
    o200k().count_ordinary(text) as u64
}

/// The byte-based estimate of `texts` (one per message).
pub fn estimate<'a>(texts: impl Iterator<Item = &'a str>) -> u64 {
    texts.map(|text| PER_MESSAGE + (text.len() as u64).div_ceil(4)).sum::<u64>() + REPLY_PRIMING
}

/// The tokenizer, loaded on first use (tens of milliseconds, once per process).
fn o200k() -> &'static CoreBPE {
    static BPE: OnceLock<&'static CoreBPE> = OnceLock::new();
    BPE.get_or_init(tiktoken_rs::o200k_base_singleton)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_estimated_counts() {
        // "Hello, world!" is 4 tokens in o200k_base: "Hello", ",", " world", "!".
        assert_eq!(count_o200k(["Hello, world!"].into_iter()), 4 + PER_MESSAGE + REPLY_PRIMING);
        assert_eq!(estimate(["Hello, world!"].into_iter()), 4 + PER_MESSAGE + REPLY_PRIMING);
        // Cyrillic: 2 bytes per character.
        assert_eq!(estimate(["Привіт"].into_iter()), 3 + PER_MESSAGE + REPLY_PRIMING);
        assert_eq!(estimate(std::iter::empty()), REPLY_PRIMING);
    }
}
