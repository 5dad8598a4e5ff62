//! PII detection over request text in any language: emails, phone numbers, payment cards, IBANs, IP addresses,
//! API secrets and admin-defined patterns. Every range is a byte range on char boundaries.
//!
//! Only secrets and custom classes use regexes. The other classes are found by hand-written scans anchored on a
//! byte (`@`, `:`, ASCII digits) and then validated (Luhn, mod-97, octet ranges, `Ipv6Addr` parsing), which keeps an
//! 8 KB prompt in the low microseconds and leaves the boundary rules (never inside a longer word or number) explicit.

use std::net::Ipv6Addr;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiClass {
    Email,
    Phone,
    PaymentCard,
    Iban,
    IpAddress,
    Secret,
    Custom(Arc<str>),
}

impl PiiClass {
    /// All built-in names, for validation messages.
    pub const BUILTIN_NAMES: &'static [&'static str] =
        &["email", "phone", "payment_card", "iban", "ip_address", "secret"];

    /// Name used in policies and in error messages.
    pub fn name(&self) -> &str {
        match self {
            PiiClass::Email => "email",
            PiiClass::Phone => "phone",
            PiiClass::PaymentCard => "payment_card",
            PiiClass::Iban => "iban",
            PiiClass::IpAddress => "ip_address",
            PiiClass::Secret => "secret",
            PiiClass::Custom(name) => name,
        }
    }

    /// Built-in class by its policy name.
    pub fn builtin(name: &str) -> Option<PiiClass> {
        Some(match name {
            "email" => PiiClass::Email,
            "phone" => PiiClass::Phone,
            "payment_card" => PiiClass::PaymentCard,
            "iban" => PiiClass::Iban,
            "ip_address" => PiiClass::IpAddress,
            "secret" => PiiClass::Secret,
            _ => return None,
        })
    }

    /// Tag inside placeholders. A custom name is uppercased, and any char outside `[A-Z0-9_]` becomes `_` so that
    /// every placeholder stays recognisable in a stream.
    pub fn tag(&self) -> String {
        match self {
            PiiClass::Email => "EMAIL".into(),
            PiiClass::Phone => "PHONE".into(),
            PiiClass::PaymentCard => "CARD".into(),
            PiiClass::Iban => "IBAN".into(),
            PiiClass::IpAddress => "IP".into(),
            PiiClass::Secret => "SECRET".into(),
            PiiClass::Custom(name) => {
                name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub class: PiiClass,
    pub range: Range<usize>,
}

/// Finds PII in text; built once per policy and shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct PiiDetector {
    custom: Vec<(Arc<str>, Regex)>,
}

impl PiiDetector {
    /// `custom`: admin-defined classes (name, compiled regex); a custom match is a finding of `Custom(name)`.
    pub fn new(custom: Vec<(String, Regex)>) -> PiiDetector {
        PiiDetector { custom: custom.into_iter().map(|(name, regex)| (name.into(), regex)).collect() }
    }

    /// Findings sorted by start, non-overlapping: of two overlapping findings the earlier-starting one is kept, then
    /// the longer one; on the same span a secret wins over other classes.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut findings = Vec::new();
        scan_secrets(text, &mut findings);
        scan_emails(text, &mut findings);
        scan_numbers(text, &mut findings);
        scan_ipv6(text, &mut findings);
        for (name, regex) in &self.custom {
            let matches = regex.find_iter(text).filter(|m| !m.is_empty());
            findings.extend(matches.map(|m| Finding { class: PiiClass::Custom(name.clone()), range: m.range() }));
        }
        findings.sort_unstable_by(|a, b| {
            let rank = |f: &Finding| (f.range.start, std::cmp::Reverse(f.range.end), f.class != PiiClass::Secret);
            rank(a).cmp(&rank(b)).then_with(|| a.class.cmp(&b.class))
        });
        let mut kept_end = 0;
        findings.retain(|finding| {
            let keep = finding.range.start >= kept_end;
            if keep {
                kept_end = finding.range.end;
            }
            keep
        });
        findings
    }
}

/// API keys and tokens by their documented prefixes. Every alternative starts with a literal, so the regex engine
/// skips through prose with a SIMD prefilter and text without any prefix costs almost nothing.
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"sk-[A-Za-z0-9_-]{20,}",      // OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
        r"|gsk_[A-Za-z0-9]{20,}",      // Groq
        r"|(?:AKIA|ASIA)[A-Z0-9]{16}", // AWS access key ids
        r"|eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", // JWT: header.payload.signature
        r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", // PEM private key; the rest of the block is found in code
    ))
    .expect("secret pattern is valid")
});

static PRIVATE_KEY_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("-----END [A-Z0-9 ]*PRIVATE KEY-----").expect("END line pattern is valid"));

fn scan_secrets(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    // Set once a search for an END line fails: no later key block has one either, so the search is not repeated.
    let mut no_end_line = false;
    while let Some(found) = SECRET.find_at(text, from) {
        from = found.end();
        let range = if bytes[found.start()] == b'-' {
            // A private key block is one finding through its END line, or through its base64 lines when cut off.
            let end_line = if no_end_line { None } else { PRIVATE_KEY_END.find_at(text, found.end()) };
            no_end_line = end_line.is_none();
            found.start()..end_line.map_or_else(|| base64_lines_end(bytes, found.end()), |line| line.end())
        } else {
            // A prefix glued to a longer token (`task-…`, `XAKIA…`) is not a key, and nothing inside that token is.
            let glued_before = found.start() > 0 && is_token_byte(bytes[found.start() - 1]);
            if glued_before || bytes.get(found.end()).is_some_and(u8::is_ascii_alphanumeric) {
                continue;
            }
            found.range()
        };
        from = range.end;
        out.push(Finding { class: PiiClass::Secret, range });
    }
}

/// The end of the base64 lines (16 chars or more each) right after `pos`.
fn base64_lines_end(bytes: &[u8], mut pos: usize) -> usize {
    loop {
        let newline = match &bytes[pos..] {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            _ => return pos,
        };
        let is_base64 = |b: &&u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        let line = bytes[pos + newline..].iter().take_while(is_base64).count();
        if line < 16 {
            return pos;
        }
        pos += newline + line;
    }
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_char_before(text: &str, pos: usize) -> bool {
    text[..pos].chars().next_back().is_some_and(is_word_char)
}

fn word_char_at(text: &str, pos: usize) -> bool {
    text[pos..].chars().next().is_some_and(is_word_char)
}

/// RFC 5321 limits, which also bound the walk around each `@`.
const MAX_LOCAL_CHARS: usize = 64;
const MAX_DOMAIN_BYTES: usize = 255;

fn scan_emails(text: &str, out: &mut Vec<Finding>) {
    let mut from = 0;
    for at in memchr::memchr_iter(b'@', text.as_bytes()) {
        if at >= from
            && let Some(range) = email_around(text, at)
        {
            from = range.end;
            out.push(Finding { class: PiiClass::Email, range });
        }
    }
}

/// The address around the `@` at `at`: a local part of letters or digits of any script and `._%+-`, then a domain of
/// at least two labels whose last label is alphabetic (any script) or punycode.
fn email_around(text: &str, at: usize) -> Option<Range<usize>> {
    let mut start = at;
    let local = text[..at].char_indices().rev().take_while(|&(_, c)| c.is_alphanumeric() || "._%+-".contains(c));
    for (count, (index, _)) in local.enumerate() {
        if count == MAX_LOCAL_CHARS {
            return None;
        }
        start = index;
    }
    // Punctuation at the front belongs to the sentence: "(-jane@x.com", "…jane@x.com".
    start += text[start..at].find(|c: char| c.is_alphanumeric() || c == '_')?;

    let domain_start = at + 1;
    let mut domain_end = domain_start;
    for (index, c) in text[domain_start..].char_indices() {
        if !(c.is_alphanumeric() || c == '-' || c == '.') {
            break;
        }
        domain_end = domain_start + index + c.len_utf8();
        if domain_end - domain_start > MAX_DOMAIN_BYTES {
            return None;
        }
    }
    let domain = text[domain_start..domain_end].trim_end_matches(['.', '-']);
    valid_domain(domain).then(|| start..domain_start + domain.len())
}

fn valid_domain(domain: &str) -> bool {
    let mut labels = 0;
    let mut last = "";
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return false;
        }
        labels += 1;
        last = label;
    }
    let alphabetic_tld = last.chars().count() >= 2 && last.chars().all(char::is_alphabetic);
    labels >= 2 && (alphabetic_tld || last.starts_with("xn--"))
}

/// Longest digit count of any numeric class (a 19-digit card); bounds the spans tried within a run.
const MAX_NUMERIC_DIGITS: usize = 19;

/// What joins a digit group to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joint {
    Start,
    Space,
    Dash,
    Dot,
    /// Right after a closing parenthesis, as in `(0)20`.
    Adjacent,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    /// The digits, without parentheses.
    start: usize,
    end: usize,
    joint: Joint,
    parens: bool,
}

impl Group {
    fn len(self) -> usize {
        self.end - self.start
    }

    fn outer_start(self) -> usize {
        self.start - usize::from(self.parens)
    }

    fn outer_end(self) -> usize {
        self.end + usize::from(self.parens)
    }
}

/// Finds runs of digit groups joined by single separators (`+1 (415) 555-0132`, `10.0.0.1 5`, `UA21 3223 …`) and
/// classifies them; a run glued to a word (`v1.2.3.4`, `abc123`) is skipped unless it is an IBAN.
fn scan_numbers(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let mut groups = Vec::new();
    let mut pos = 0;
    while let Some(offset) = bytes[pos..].iter().position(u8::is_ascii_digit) {
        let digit = pos + offset;
        if word_char_before(text, digit) {
            pos = match iban_at(text, digit) {
                Some((range, true)) => {
                    let end = range.end;
                    out.push(Finding { class: PiiClass::Iban, range });
                    end
                }
                // A mistyped IBAN's groups are not cards or phones either.
                Some((range, false)) => skip_word(bytes, range.end),
                None => skip_word(bytes, digit),
            };
            continue;
        }
        let start = run_start(text, digit);
        pos = read_run(bytes, start, &mut groups);
        classify_run(text, start, &groups, out);
    }
}

/// The end of the word-glued token at `pos`, including dotted or dashed continuations (`1.2.3.4` in `v1.2.3.4`).
fn skip_word(bytes: &[u8], mut pos: usize) -> usize {
    let is_word_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    while let Some(&byte) = bytes.get(pos) {
        let continues = matches!(byte, b'.' | b'-') && bytes.get(pos + 1).is_some_and(is_word_byte);
        if !(is_word_byte(&byte) || continues) {
            break;
        }
        pos += 1;
    }
    pos
}

/// Where the run holding the digit at `digit` begins: at a `+` or an area code's `(` right before it unless that is
/// glued to a word.
fn run_start(text: &str, digit: usize) -> usize {
    let bytes = text.as_bytes();
    let Some(before) = digit.checked_sub(1) else { return digit };
    let opens = match bytes[before] {
        b'+' => true,
        b'(' => group_at(bytes, before, Joint::Start).is_some(),
        _ => false,
    };
    if opens && !word_char_before(text, before) { before } else { digit }
}

/// Reads the run starting at `start` (a `+`, a `(` or a digit) into `groups`; returns where it ends.
fn read_run(bytes: &[u8], start: usize, groups: &mut Vec<Group>) -> usize {
    groups.clear();
    let mut pos = start + usize::from(bytes[start] == b'+');
    let mut joint = Joint::Start;
    while let Some(group) = group_at(bytes, pos, joint) {
        groups.push(group);
        let end = group.outer_end();
        (joint, pos) = match bytes.get(end) {
            Some(b' ') => (Joint::Space, end + 1),
            Some(b'-') => (Joint::Dash, end + 1),
            Some(b'.') => (Joint::Dot, end + 1),
            Some(b'0'..=b'9') if group.parens => (Joint::Adjacent, end),
            _ => return end,
        };
    }
    // The separator after the last group was not followed by another group.
    groups.last().map_or(pos, |group| group.outer_end())
}

/// The group at `pos`: digits, or 1–5 digits in parentheses (an area code) at the start or after a space.
fn group_at(bytes: &[u8], pos: usize, joint: Joint) -> Option<Group> {
    let digits_end = |from: usize| from + bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    if bytes.get(pos) == Some(&b'(') {
        let end = digits_end(pos + 1);
        let closed = (1..=5).contains(&(end - pos - 1)) && bytes.get(end) == Some(&b')');
        let after_space = matches!(joint, Joint::Start | Joint::Space);
        return (closed && after_space).then_some(Group { start: pos + 1, end, joint, parens: true });
    }
    let end = digits_end(pos);
    (end > pos).then_some(Group { start: pos, end, joint, parens: false })
}

/// Looks for classes in spans of the run that start and end at spaces (or the run's ends), longest span first, so
/// `10.0.0.1 5` yields the address and `12 4111 1111 1111 1111` the card, while `1.2.3.4.5` yields nothing.
fn classify_run(text: &str, run_start: usize, groups: &[Group], out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let Some(run_end) = groups.last().map(|group| group.outer_end()) else { return };
    let context = RunContext {
        plus: bytes[run_start] == b'+',
        glued_after: word_char_at(text, run_end),
        time_after: bytes.get(run_end) == Some(&b':') && bytes.get(run_end + 1).is_some_and(u8::is_ascii_digit),
    };
    let mut first = 0;
    while first < groups.len() {
        if !matches!(groups[first].joint, Joint::Start | Joint::Space) {
            first += 1;
            continue;
        }
        let mut digit_total = 0;
        let fitting = groups[first..].iter().take_while(|g| {
            digit_total += g.len();
            digit_total <= MAX_NUMERIC_DIGITS
        });
        let last_end = first + fitting.count();
        let found = (first + 1..=last_end)
            .rev()
            .filter(|&end| end == groups.len() || groups[end].joint == Joint::Space)
            .find_map(|end| {
                classify(bytes, &groups[first..end], first == 0, end == groups.len(), &context).map(|c| (c, end))
            });
        match found {
            Some((class, end)) => {
                let start = if first == 0 { run_start } else { groups[first].outer_start() };
                out.push(Finding { class, range: start..groups[end - 1].outer_end() });
                first = end;
            }
            None => first += 1,
        }
    }
}

struct RunContext {
    /// The run starts with `+`.
    plus: bool,
    /// The run's last group continues into a word (`2026-11-22T…`).
    glued_after: bool,
    /// The run's last group is followed by `:` and a digit, like the hour of `2026-11-22 10:30`.
    time_after: bool,
}

fn classify(bytes: &[u8], span: &[Group], at_run_start: bool, at_run_end: bool, run: &RunContext) -> Option<PiiClass> {
    let plus = run.plus && at_run_start;
    if at_run_end && run.glued_after {
        None
    } else if !plus && is_ipv4(bytes, span) {
        Some(PiiClass::IpAddress)
    } else if !plus && is_card(bytes, span) {
        Some(PiiClass::PaymentCard)
    } else if at_run_start && is_phone(bytes, span, plus) && !(at_run_end && run.time_after) {
        Some(PiiClass::Phone)
    } else {
        None
    }
}

fn digits<'a>(bytes: &'a [u8], span: &'a [Group]) -> impl DoubleEndedIterator<Item = u8> + 'a {
    span.iter().flat_map(move |g| bytes[g.start..g.end].iter().map(|b| b - b'0'))
}

fn digit_count(span: &[Group]) -> usize {
    span.iter().map(|g| g.len()).sum()
}

/// Four dot-joined octets 0–255 without leading zeros; the span is a whole dotted run, so `1.2.3.4.5` never gets here.
fn is_ipv4(bytes: &[u8], span: &[Group]) -> bool {
    span.len() == 4
        && span.iter().enumerate().all(|(index, g)| {
            let octet = &bytes[g.start..g.end];
            (index == 0 || g.joint == Joint::Dot)
                && !g.parens
                && octet.len() <= 3
                && (octet.len() == 1 || octet[0] != b'0')
                && octet.iter().fold(0u32, |value, b| value * 10 + u32::from(b - b'0')) <= 255
        })
}

/// 13–19 digits, not starting with 0, either unbroken or as a 4-digit group and then groups of at most 6 joined by
/// one kind of separator (space or dash); Luhn-valid.
fn is_card(bytes: &[u8], span: &[Group]) -> bool {
    let separator = span.get(1).map(|g| g.joint);
    let grouped = span.len() == 1
        || (span[0].len() == 4
            && matches!(separator, Some(Joint::Space | Joint::Dash))
            && span[1..].iter().all(|g| Some(g.joint) == separator && g.len() <= 6));
    (13..=19).contains(&digit_count(span))
        && bytes[span[0].start] != b'0'
        && span.iter().all(|g| !g.parens)
        && grouped
        && luhn_valid(digits(bytes, span))
}

fn luhn_valid(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let doubled = |d: u32| if d * 2 > 9 { d * 2 - 9 } else { d * 2 };
    let sum: u32 = digits.rev().enumerate().map(|(i, d)| if i % 2 == 1 { doubled(d.into()) } else { d.into() }).sum();
    sum.is_multiple_of(10)
}

/// 9–15 digits. With a leading `+` any grouping goes. Without it the number must look like a national one, so that
/// dates, years, amounts and ids do not: separated groups of at least 2 digits, one separator style after the area
/// code, and an area code in parentheses, a leading trunk `0` but not `00` (`050 123 45 67`) or the US 3-3-4 shape.
/// Phones are only looked for from the start of a run, never from the middle of a longer list of numbers.
fn is_phone(bytes: &[u8], span: &[Group], plus: bool) -> bool {
    if !(9..=15).contains(&digit_count(span)) {
        return false;
    }
    if plus {
        return true;
    }
    let first = span[0];
    let nanp = span.len() == 3
        && span.iter().map(|g| g.len()).eq([3, 3, 4])
        && span[..2].iter().all(|g| (b'2'..=b'9').contains(&bytes[g.start]));
    span.len() >= 2
        && span.iter().all(|g| g.len() >= 2)
        && span.get(2..).unwrap_or_default().windows(2).all(|pair| pair[0].joint == pair[1].joint)
        && (first.parens || (bytes[first.start] == b'0' && bytes[first.start + 1] != b'0') || nanp)
}

/// The longest IBAN any country has.
const MAX_IBAN_CHARS: usize = 34;

/// IBAN lengths by country (SWIFT IBAN registry).
#[rustfmt::skip]
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16), ("BG", 22), ("BH", 22),
    ("BI", 27), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22), ("CY", 28), ("CZ", 24), ("DE", 22), ("DJ", 27),
    ("DK", 18), ("DO", 28), ("EE", 20), ("EG", 29), ("ES", 24), ("FI", 18), ("FK", 18), ("FO", 18), ("FR", 27),
    ("GB", 22), ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HN", 28), ("HR", 21), ("HU", 28),
    ("IE", 22), ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30), ("KW", 30), ("KZ", 20), ("LB", 28),
    ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20), ("LV", 21), ("LY", 25), ("MC", 27), ("MD", 24), ("ME", 22),
    ("MK", 19), ("MN", 20), ("MR", 27), ("MT", 31), ("MU", 30), ("NI", 28), ("NL", 18), ("NO", 15), ("OM", 23),
    ("PK", 24), ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22), ("RU", 33), ("SA", 24),
    ("SC", 31), ("SD", 18), ("SE", 24), ("SI", 19), ("SK", 24), ("SM", 27), ("SO", 23), ("ST", 25), ("SV", 28),
    ("TL", 23), ("TN", 24), ("TR", 26), ("UA", 29), ("VA", 22), ("VG", 24), ("XK", 20), ("YE", 30),
];

/// The IBAN-shaped token whose check digits start at `digit`, and whether it is a valid IBAN: a known country code
/// right before them, then exactly that country's length of uppercase letters and digits, compact or in
/// space-separated groups of four, with a valid mod-97 checksum.
fn iban_at(text: &str, digit: usize) -> Option<(Range<usize>, bool)> {
    let bytes = text.as_bytes();
    let start = digit.checked_sub(2)?;
    let country = &bytes[start..digit];
    let check_digits = bytes.get(digit..digit + 2)?;
    if !country.iter().all(u8::is_ascii_uppercase)
        || !check_digits.iter().all(u8::is_ascii_digit)
        || word_char_before(text, start)
    {
        return None;
    }
    let length = IBAN_LENGTHS.iter().find(|(code, _)| code.as_bytes() == country).map(|&(_, length)| length);
    let is_iban_byte = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let (mut chars, mut pos) = (4, digit + 2);
    while chars < length.unwrap_or(MAX_IBAN_CHARS) {
        match bytes.get(pos) {
            Some(b) if is_iban_byte(b) => (chars, pos) = (chars + 1, pos + 1),
            Some(b' ') if chars % 4 == 0 && bytes.get(pos + 1).is_some_and(is_iban_byte) => pos += 1,
            _ => break,
        }
    }
    let checksum_ok = || {
        // The country code and check digits move to the end; letters count as 10–35.
        let (head, bban) = bytes[start..pos].split_at(4);
        let remainder = bban.iter().chain(head).filter(|b| **b != b' ').fold(0u32, |acc, &b| match b {
            b'0'..=b'9' => (acc * 10 + u32::from(b - b'0')) % 97,
            _ => (acc * 100 + u32::from(b - b'A' + 10)) % 97,
        });
        remainder == 1
    };
    let valid = length == Some(chars) && !word_char_at(text, pos) && checksum_ok();
    Some((start..pos, valid))
}

/// IPv6 addresses around each `:`. `Ipv6Addr` accepts code like `a::b` and `dead::beef`, so a candidate also needs
/// two colons, an ASCII digit and no word glued to either side (`std::net`, `u8::MAX` are skipped).
fn scan_ipv6(text: &str, out: &mut Vec<Finding>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = memchr::memchr(b':', &bytes[from..]) {
        let colon = from + offset;
        let start = colon - bytes[..colon].iter().rev().take_while(|b| b.is_ascii_hexdigit() || **b == b':').count();
        let end =
            colon + bytes[colon..].iter().take_while(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')).count();
        from = end;
        // Sentence punctuation after an address: "via fe80::1." or "fe80::1: unreachable".
        let candidate = text[start..end].trim_end_matches('.');
        let candidate = match candidate.strip_suffix(':') {
            Some(trimmed) if !trimmed.ends_with(':') => trimmed,
            _ => candidate,
        };
        let candidate_end = start + candidate.len();
        if memchr::memchr_iter(b':', candidate.as_bytes()).count() >= 2
            && candidate.bytes().any(|b| b.is_ascii_digit())
            && !word_char_before(text, start)
            && !word_char_at(text, candidate_end)
            && candidate.parse::<Ipv6Addr>().is_ok()
        {
            out.push(Finding { class: PiiClass::IpAddress, range: start..candidate_end });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(detector: &PiiDetector, text: &str) -> Vec<(PiiClass, String)> {
        let findings = detector.scan(text);
        for finding in &findings {
            let Range { start, end } = finding.range;
            assert!(start < end && text.is_char_boundary(start) && text.is_char_boundary(end), "{finding:?} in {text}");
        }
        assert!(findings.windows(2).all(|pair| pair[0].range.end <= pair[1].range.start), "{findings:?} overlap");
        findings.into_iter().map(|finding| (finding.class, text[finding.range].to_owned())).collect()
    }

    fn builtin_found(text: &str) -> Vec<(PiiClass, String)> {
        found(&PiiDetector::default(), text)
    }

    /// Each text holds exactly one finding, of this class, with this value.
    fn assert_single(cases: &[(&str, PiiClass, &str)]) {
        for (text, class, value) in cases {
            assert_eq!(builtin_found(text), vec![(class.clone(), value.to_string())], "in {text:?}");
        }
    }

    fn assert_none(texts: &[&str]) {
        for text in texts {
            assert_eq!(builtin_found(text), vec![], "in {text:?}");
        }
    }

    #[test]
    fn emails() {
        use PiiClass::Email;
        assert_single(&[
            ("write to jane.doe+test@example.co.uk today", Email, "jane.doe+test@example.co.uk"),
            ("(mail: ops_team@corp-mail.io).", Email, "ops_team@corp-mail.io"),
            ("пишіть на олена@приклад.укр, дякую", Email, "олена@приклад.укр"),
            ("…jane@example.com.", Email, "jane@example.com"),
            ("x@xn--80ak6aa92e.xn--p1ai", Email, "x@xn--80ak6aa92e.xn--p1ai"),
        ]);
        assert_none(&["user@localhost", "@mention in chat", "a@b.c", "ping @ 5pm", "name@-bad.com", "a@b..com"]);
    }

    #[test]
    fn phones() {
        use PiiClass::Phone;
        assert_single(&[
            ("call +380 44 123 45 67 now", Phone, "+380 44 123 45 67"),
            ("US: +1 (415) 555-0132.", Phone, "+1 (415) 555-0132"),
            ("UK +44 20 7946 0958", Phone, "+44 20 7946 0958"),
            ("UK +44 (0)20 7946 0958", Phone, "+44 (0)20 7946 0958"),
            ("Berlin +49-30-1234567", Phone, "+49-30-1234567"),
            ("tel:+380501234567", Phone, "+380501234567"),
            ("office (415) 555-0132", Phone, "(415) 555-0132"),
            ("office 415-555-0132", Phone, "415-555-0132"),
            ("office 415.555.0132", Phone, "415.555.0132"),
            ("мобільний 050 123 45 67", Phone, "050 123 45 67"),
            ("мобільний (050) 123-45-67", Phone, "(050) 123-45-67"),
            ("мобільний 050 123-45-67", Phone, "050 123-45-67"),
        ]);
        assert_none(&[
            "released 2026-11-22",
            "released 2026-11-22 10:30",
            "released 01.02.2026 10:30",
            "at 2026-11-22T10:30:00+02:00",
            "in 2024 2025 2026",
            "years 1990 2000 2010",
            "costs $1,299.99 or 1 299,99 грн",
            "budget 15 000 000 000 грн",
            "build 10.0.19045.2965",
            "unix time 1732233600",
            "call 555-0132",
            "+12 is not a phone",
            "ratio 0.5 0.25 0.125 0.0625",
            "C++11 and 2+2=4",
        ]);
    }

    #[test]
    fn payment_cards_need_luhn() {
        use PiiClass::PaymentCard;
        assert_single(&[
            ("card 4111 1111 1111 1111 exp 12/27", PaymentCard, "4111 1111 1111 1111"),
            ("card 4111-1111-1111-1111", PaymentCard, "4111-1111-1111-1111"),
            ("card 5555555555554444.", PaymentCard, "5555555555554444"),
            ("amex 3782 822463 10005", PaymentCard, "3782 822463 10005"),
            ("codes 12 34 4111 1111 1111 1111", PaymentCard, "4111 1111 1111 1111"),
            ("4111 1111 1111 1111 2026", PaymentCard, "4111 1111 1111 1111"),
        ]);
        assert_none(&[
            "card 4111 1111 1111 1112",
            "card 5555555555554445",
            "amex 3782 822463 10006",
            "mixed 4111 1111-1111 1111",
            "id ORD4111111111111111",
        ]);
    }

    #[test]
    fn ibans_need_checksum() {
        use PiiClass::Iban;
        assert_single(&[
            ("IBAN: UA21 3223 1300 0002 6007 2335 6600 1, дякую", Iban, "UA21 3223 1300 0002 6007 2335 6600 1"),
            ("to DE89370400440532013000.", Iban, "DE89370400440532013000"),
            ("to GB82 WEST 1234 5698 7654 32 now", Iban, "GB82 WEST 1234 5698 7654 32"),
            ("to NO9386011117947", Iban, "NO9386011117947"),
        ]);
        assert_none(&[
            "to UA21 3223 1300 0002 6007 2335 6600 2",
            "to DE88370400440532013000",
            "to GB82 WEST 1234 5698 7654 3",
            "to XX89370400440532013000",
            "to DE89370400440532013000X",
        ]);
    }

    #[test]
    fn ip_addresses() {
        use PiiClass::IpAddress;
        assert_single(&[
            ("server 192.168.1.10 is down", IpAddress, "192.168.1.10"),
            ("ssh 10.0.0.1:22", IpAddress, "10.0.0.1"),
            ("ping 10.0.0.1 5 times", IpAddress, "10.0.0.1"),
            ("net 10.0.0.0/8.", IpAddress, "10.0.0.0"),
            ("v6 2001:db8::1.", IpAddress, "2001:db8::1"),
            ("v6 [2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443", IpAddress, "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
            ("link fe80::1%eth0", IpAddress, "fe80::1"),
            ("mapped ::ffff:192.168.1.1 here", IpAddress, "::ffff:192.168.1.1"),
            ("адреса 2001:db8::1: недоступна", IpAddress, "2001:db8::1"),
        ]);
        assert_none(&[
            "version 1.2.3",
            "version v1.2.3.4",
            "run 1.2.3.4.5",
            "host 192.168.1.300",
            "ids 1.2.3.12345678901 and 99999999999.1.1.1",
            "octets 01.02.03.04",
            "use std::net::Ipv6Addr",
            "a::b and dead::beef",
            "at 10:30:45",
            "mac 00:1A:2B:3C:4D:5E",
            "u8::MAX",
        ]);
    }

    #[test]
    fn secrets() {
        use PiiClass::Secret;
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\n+380501234567/4111111111111111\n\
                   -----END RSA PRIVATE KEY-----";
        let crlf_pem =
            "-----BEGIN EC PRIVATE KEY-----\r\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBn\r\n-----END EC PRIVATE KEY-----";
        let truncated_pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7";
        assert_single(&[
            ("key=sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345 ok", Secret, "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345"),
            ("key sk-abcdefghijklmnopqrstuvwxyz", Secret, "sk-abcdefghijklmnopqrstuvwxyz"),
            ("ключ: sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_w-x", Secret, "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv_w-x"),
            ("GROQ_API_KEY=gsk_AbCdEfGhIjKlMnOpQrStUv1234", Secret, "gsk_AbCdEfGhIjKlMnOpQrStUv1234"),
            ("aws AKIAIOSFODNN7EXAMPLE,", Secret, "AKIAIOSFODNN7EXAMPLE"),
            (&format!("Authorization: Bearer {jwt}"), Secret, jwt),
            (&format!("key:\n{pem}\nthanks"), Secret, pem),
            (&format!("{crlf_pem}\r\n"), Secret, crlf_pem),
            (&format!("{truncated_pem}\nthat is all"), Secret, truncated_pem),
        ]);
        // Once one block has no END line, later ones are known to lack it too and are cut at their base64 lines.
        let two_truncated = format!("{truncated_pem}\nand again {truncated_pem}");
        assert_eq!(
            builtin_found(&two_truncated),
            [(Secret, truncated_pem.to_owned()), (Secret, truncated_pem.to_owned())]
        );
        assert_none(&[
            "key sk-short",
            "task-management-system-for-large-teams",
            "AKIAIOSFODNN7EXAMPL",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7EXAMPLEX",
            "eyJhbGciOiJIUzI1NiJ9 alone",
        ]);
    }

    #[test]
    fn hostile_input_is_scanned_in_linear_time() {
        // Quadratic rescanning of glued prefixes, unterminated key blocks or long number runs would take minutes here.
        let texts = [
            "ask-".repeat(50_000),
            "-----BEGIN PRIVATE KEY-----\n".repeat(20_000),
            "1 ".repeat(100_000),
            "a@".repeat(100_000),
            "1:".repeat(100_000),
        ];
        let started = std::time::Instant::now();
        for text in &texts {
            PiiDetector::default().scan(text);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn ukrainian_prompt() {
        let text = "Мій email: олена@example.com, телефон +380 50 123 45 67. \
                    Рахунок UA21 3223 1300 0002 6007 2335 6600 1, картка 4111 1111 1111 1111, \
                    сервер 192.168.0.7 — дякую!";
        assert_eq!(
            builtin_found(text),
            [
                (PiiClass::Email, "олена@example.com"),
                (PiiClass::Phone, "+380 50 123 45 67"),
                (PiiClass::Iban, "UA21 3223 1300 0002 6007 2335 6600 1"),
                (PiiClass::PaymentCard, "4111 1111 1111 1111"),
                (PiiClass::IpAddress, "192.168.0.7"),
            ]
            .map(|(class, value)| (class, value.to_owned()))
        );
    }

    #[test]
    fn custom_classes_and_overlaps() {
        let custom = |name: &str, pattern: &str| (name.to_owned(), Regex::new(pattern).unwrap());
        let detector = PiiDetector::new(vec![
            custom("employee_id", "EMP-[0-9]{6}"),
            custom("ticket", "#[a-z]+"),
            custom("first_name", "олена"),
            custom("key_copy", "sk-[a-z]{26}"),
            custom("card_half", "[0-9]{4} [0-9]{4}"),
            custom("empty_only", "Q*"), // matches the empty string everywhere: no findings
        ]);
        let text = "олена@example.com EMP-004211 sk-abcdefghijklmnopqrstuvwxyz 4111 1111 1111 1111";
        let employee = PiiClass::Custom("employee_id".into());
        let expected = [
            (PiiClass::Email, "олена@example.com"), // starts with the first_name match and is longer
            (employee, "EMP-004211"),
            (PiiClass::Secret, "sk-abcdefghijklmnopqrstuvwxyz"), // same span as key_copy
            (PiiClass::PaymentCard, "4111 1111 1111 1111"),      // starts with card_half and is longer
        ];
        assert_eq!(found(&detector, text), expected.map(|(class, value)| (class, value.to_owned())));
        // The earlier-starting finding wins even when shorter.
        assert_eq!(found(&detector, "see #jane@example.com"), [(PiiClass::Custom("ticket".into()), "#jane".into())]);
    }

    #[test]
    fn ranges_stay_on_char_boundaries_in_any_prefix_or_suffix() {
        let text = "Ім'я: Олена, олена@приклад.укр; тел. +380 50 123 45 67; IBAN UA21 3223 1300 0002 6007 2335 6600 1; \
                    IP 2001:db8::1 і 10.1.2.3; ключ sk-proj-ЖЖЖAbCdEfGhIjKlMnOpQrStUvWx; картка 4111 1111 1111 1111";
        for (index, _) in text.char_indices() {
            builtin_found(&text[..index]);
            builtin_found(&text[index..]);
        }
    }

    #[test]
    fn random_text_of_tricky_chars_never_breaks_the_invariants() {
        // Digits, separators and letters that the scanners branch on, in every mix a simple LCG comes up with.
        let alphabet: Vec<char> = "0123456789    --..()+::@@aAEKSUZ_фЖ\n/#sk-eyJ".chars().collect();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            let text: String = (0..40)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    alphabet[(state >> 33) as usize % alphabet.len()]
                })
                .collect();
            builtin_found(&text); // asserts char boundaries and no overlaps
        }
    }

    #[test]
    fn class_names_and_tags() {
        for name in PiiClass::BUILTIN_NAMES {
            assert_eq!(PiiClass::builtin(name).map(|class| class.name().to_owned()), Some(name.to_string()));
        }
        assert_eq!(PiiClass::builtin("ssn"), None);
        let tags: Vec<String> =
            PiiClass::BUILTIN_NAMES.iter().filter_map(|n| PiiClass::builtin(n)).map(|c| c.tag()).collect();
        assert_eq!(tags, ["EMAIL", "PHONE", "CARD", "IBAN", "IP", "SECRET"]);
        let custom = PiiClass::Custom("employee-id №".into());
        assert_eq!((custom.name(), custom.tag().as_str()), ("employee-id №", "EMPLOYEE_ID__"));
    }

    #[test]
    fn detector_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PiiDetector>();
    }
}
