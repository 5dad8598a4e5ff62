//! Placeholder redaction of detected PII (`[EMAIL_1]`, `[PHONE_2]`) and restoration of the originals in the answer,
//! whole or streamed in pieces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::pii::{Finding, PiiClass};

/// Placeholders for one request: the same original value always gets the same placeholder, numbered per class in
/// order of first appearance: `[EMAIL_1]`, `[EMAIL_2]`, `[PHONE_1]`…
#[derive(Default)]
pub struct Redactions {
    /// Placeholder → original value; ordered so that a streamed fragment can be looked up as a prefix.
    originals: BTreeMap<String, String>,
    /// Original value → placeholder.
    placeholders: HashMap<String, String>,
    /// Placeholders issued per tag. Counting per tag rather than per class keeps placeholders unique when custom
    /// names share a tag (`order-id` and `order_id` are both `ORDER_ID`).
    issued: HashMap<String, usize>,
    classes: BTreeSet<PiiClass>,
    longest_placeholder: usize,
}

/// Shows placeholders and classes only: the originals are the very values kept out of logs.
impl fmt::Debug for Redactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactions")
            .field("placeholders", &self.originals.keys())
            .field("classes", &self.classes)
            .finish()
    }
}

impl Redactions {
    pub fn new() -> Self {
        Self::default()
    }

    /// `text` with each finding (from `PiiDetector::scan` on this same text) replaced by its placeholder. Findings
    /// that are out of order, overlapping or not on char boundaries are left in place rather than trusted.
    pub fn redact(&mut self, text: &str, findings: &[Finding]) -> String {
        let mut redacted = String::with_capacity(text.len());
        let mut copied = 0;
        for finding in findings {
            let Some(original) = text.get(finding.range.clone()) else { continue };
            if finding.range.start < copied || original.is_empty() {
                continue;
            }
            redacted.push_str(&text[copied..finding.range.start]);
            redacted.push_str(self.placeholder_for(&finding.class, original));
            copied = finding.range.end;
        }
        redacted.push_str(&text[copied..]);
        redacted
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// Every placeholder in `text` replaced by its original value (unknown placeholder-like text left alone).
    pub fn restore(&self, text: &str) -> String {
        let mut restored = String::with_capacity(text.len());
        let mut copied = 0;
        for open in memchr::memchr_iter(b'[', text.as_bytes()) {
            if open < copied {
                continue;
            }
            if let Some((placeholder, original)) = self.placeholder_at(text, open) {
                restored.push_str(&text[copied..open]);
                restored.push_str(original);
                copied = open + placeholder.len();
            }
        }
        restored.push_str(&text[copied..]);
        restored
    }

    fn placeholder_for(&mut self, class: &PiiClass, original: &str) -> &str {
        if !self.classes.contains(class) {
            self.classes.insert(class.clone());
        }
        if !self.placeholders.contains_key(original) {
            let tag = class.tag();
            let number = self.issued.entry(tag.clone()).or_default();
            *number += 1;
            let placeholder = format!("[{tag}_{number}]");
            self.longest_placeholder = self.longest_placeholder.max(placeholder.len());
            self.originals.insert(placeholder.clone(), original.to_owned());
            self.placeholders.insert(original.to_owned(), placeholder);
        }
        &self.placeholders[original]
    }

    /// The placeholder starting at the `[` at `open`, with its original.
    fn placeholder_at(&self, text: &str, open: usize) -> Option<(&str, &str)> {
        let window = &text.as_bytes()[open..];
        let close = memchr::memchr(b']', &window[..window.len().min(self.longest_placeholder)])?;
        let (placeholder, original) = self.originals.get_key_value(&text[open..=open + close])?;
        Some((placeholder, original))
    }

    /// Where a trailing fragment that could still grow into a placeholder starts (`text.len()` when there is none).
    /// Only the last `[` can start one, as placeholders hold no other `[`; the fragment must be a proper prefix of an
    /// issued placeholder, which is the first one at or after it in sorted order if any is.
    fn unfinished_placeholder_start(&self, text: &str) -> usize {
        let Some(open) = memchr::memrchr(b'[', text.as_bytes()) else { return text.len() };
        let fragment = &text[open..];
        let next = self.originals.range::<str, _>((Bound::Included(fragment), Bound::Unbounded)).next();
        let grows = next
            .is_some_and(|(placeholder, _)| placeholder.len() > fragment.len() && placeholder.starts_with(fragment));
        if grows { open } else { text.len() }
    }
}

/// Restores placeholders in text that arrives in pieces (an SSE stream's content deltas), where a placeholder may be
/// split across pieces (`"[EMA"`, `"IL_1] thanks"`). It holds back only a trailing fragment that is still the start
/// of an issued placeholder, so everything else is released as soon as it arrives.
pub struct Restorer {
    redactions: Arc<Redactions>,
    held: String,
}

impl Restorer {
    pub fn new(redactions: Arc<Redactions>) -> Self {
        Restorer { redactions, held: String::new() }
    }

    /// The restored text that can be released now.
    pub fn push(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        let release = self.redactions.unfinished_placeholder_start(&self.held);
        let restored = self.redactions.restore(&self.held[..release]);
        self.held.drain(..release);
        restored
    }

    /// Whatever is still held back, restored (end of stream).
    pub fn finish(&mut self) -> String {
        let restored = self.redactions.restore(&self.held);
        self.held.clear();
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::super::pii::PiiDetector;
    use super::*;

    const SAMPLE: &str = "Олена (олена@example.com, +380 50 123 45 67) asked: pay 4111 1111 1111 1111, \
                          mail bob@example.org and олена@example.com again; call +380 50 123 45 67.";

    fn redacted(redactions: &mut Redactions, text: &str) -> String {
        redactions.redact(text, &PiiDetector::default().scan(text))
    }

    #[test]
    fn numbers_placeholders_per_class_and_reuses_them_for_the_same_value() {
        let mut redactions = Redactions::new();
        assert!(redactions.is_empty());
        assert_eq!(
            redacted(&mut redactions, SAMPLE),
            "Олена ([EMAIL_1], [PHONE_1]) asked: pay [CARD_1], mail [EMAIL_2] and [EMAIL_1] again; call [PHONE_1]."
        );
        // Later texts of the same request continue the numbering and reuse known values.
        assert_eq!(redacted(&mut redactions, "cc bob@example.org, eve@example.net"), "cc [EMAIL_2], [EMAIL_3]");
        assert!(!redactions.is_empty());
        assert_eq!(
            redactions.classes.iter().cloned().collect::<Vec<_>>(),
            [PiiClass::Email, PiiClass::Phone, PiiClass::PaymentCard]
        );
        assert!(!format!("{redactions:?}").contains("example"), "Debug output leaks originals");
    }

    #[test]
    fn custom_tags_that_collide_stay_unique() {
        let classes = [PiiClass::Custom("order-id".into()), PiiClass::Custom("order_id".into())];
        let findings: Vec<Finding> =
            classes.into_iter().zip([0..3, 4..7]).map(|(class, range)| Finding { class, range }).collect();
        let mut redactions = Redactions::new();
        let text = "A-1 B-2";
        let redacted = redactions.redact(text, &findings);
        assert_eq!(redacted, "[ORDER_ID_1] [ORDER_ID_2]");
        assert_eq!(redactions.restore(&redacted), text);
    }

    #[test]
    fn ignores_findings_that_do_not_fit_the_text() {
        let finding = |start, end| Finding { class: PiiClass::Secret, range: start..end };
        let text = "ключ abc";
        let mut redactions = Redactions::new();
        // 1..3 splits "к", 2..2 is empty, 4..8 overlaps 4..6 ("ю"), 9..20 runs past the end.
        let findings = [finding(1, 3), finding(2, 2), finding(4, 6), finding(4, 8), finding(9, 20)];
        assert_eq!(redactions.redact(text, &findings), "кл[SECRET_1]ч abc");
    }

    #[test]
    fn restore_round_trips_and_leaves_unknown_placeholders() {
        let mut redactions = Redactions::new();
        let text = redacted(&mut redactions, SAMPLE);
        assert_eq!(redactions.restore(&text), SAMPLE);
        let answer = "Sent to [EMAIL_2] [EMAIL_9] [email_1] [EMAIL_1 [[PHONE_1]] [] [CARD_1][CARD_1]";
        assert_eq!(
            redactions.restore(answer),
            "Sent to bob@example.org [EMAIL_9] [email_1] [EMAIL_1 [+380 50 123 45 67] [] \
             4111 1111 1111 11114111 1111 1111 1111"
        );
        assert_eq!(Redactions::new().restore(answer), answer);
    }

    fn sample_answer() -> (Arc<Redactions>, String) {
        let mut redactions = Redactions::new();
        let text = redacted(&mut redactions, SAMPLE);
        let answer = format!("Готово: {text} [EMAIL_] [PHONE_12] [[CARD_1]] [EMAIL_1");
        (Arc::new(redactions), answer)
    }

    fn streamed(redactions: &Arc<Redactions>, pieces: &[&str]) -> String {
        let mut restorer = Restorer::new(redactions.clone());
        let mut out: String = pieces.iter().map(|piece| restorer.push(piece)).collect();
        out.push_str(&restorer.finish());
        out
    }

    #[test]
    fn restorer_matches_restore_for_every_split() {
        let (redactions, answer) = sample_answer();
        let whole = redactions.restore(&answer);
        assert!(whole.contains("олена@example.com") && whole.ends_with("[EMAIL_1"));
        let boundaries: Vec<usize> = (0..=answer.len()).filter(|&i| answer.is_char_boundary(i)).collect();
        for &i in &boundaries {
            assert_eq!(streamed(&redactions, &[&answer[..i], &answer[i..]]), whole, "split at {i}");
        }
        for (n, &i) in boundaries.iter().enumerate() {
            for &j in &boundaries[n..] {
                assert_eq!(streamed(&redactions, &[&answer[..i], &answer[i..j], &answer[j..]]), whole, "at {i}, {j}");
            }
        }
        let chars: Vec<String> = answer.chars().map(String::from).collect();
        assert_eq!(streamed(&redactions, &chars.iter().map(String::as_str).collect::<Vec<_>>()), whole);
    }

    #[test]
    fn restorer_holds_back_only_a_possible_placeholder() {
        let (redactions, _) = sample_answer();
        let mut restorer = Restorer::new(redactions);
        assert_eq!(restorer.push("Hi [EMA"), "Hi ");
        assert_eq!(restorer.push("IL_1] and [x"), "олена@example.com and [x");
        assert_eq!(restorer.push(" [EMAIL_3"), " [EMAIL_3"); // no third email was issued
        assert_eq!(restorer.push(" [PHONE_1"), " ");
        assert_eq!(restorer.push("]"), "+380 50 123 45 67");
        assert_eq!(restorer.push("[CARD_"), "");
        assert_eq!(restorer.finish(), "[CARD_");
        assert_eq!(restorer.finish(), "");
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Redactions>();
        assert_send_sync::<Restorer>();
    }
}
