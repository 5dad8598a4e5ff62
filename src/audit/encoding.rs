//! The journal's form of an audit record. A request writes it field by field as it
//! learns each one ([`super::AuditEntry`]), so the end of a request copies one small
//! buffer instead of reading back a dozen strings gone cold since the request began. It
//! is built to be cheap to write: a tag byte per field, no names, no escaping and no
//! number formatting. The writer decodes it and stores the record as JSON, the form
//! every reader (and the hash chain) sees.
//!
//! - a field: its [`Tag`], then its value; fields in any order, a later one replacing an
//!   earlier one of the same tag; an absent field is `None`, `false`, `0` or empty;
//! - integers: LEB128 varints (`at_ms` and the cost as 8 bytes, little-endian);
//! - strings: a varint byte length, then UTF-8; lists: a varint count, then the values;
//! - the captured prompt: its JSON text, as a string;
//! - [`Tag::End`] last: a record cut short is an error, never a shorter record.
//!
//! The first byte is [`VERSION`]: a journal written by another format is refused, not
//! misread.

use std::net::IpAddr;

use super::{AuditRecord, FailedAttempt};

/// The format's version; change it with any change to the tags or encodings.
const VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the record ends early")]
    Truncated,
    #[error("journal format {0}, not {VERSION}")]
    Version(u8),
    #[error("a string is not UTF-8")]
    Utf8,
    #[error("an unknown marker {0}")]
    Marker(u8),
    #[error("the captured prompt is not JSON: {0}")]
    Prompt(serde_json::Error),
    #[error("{0} bytes after the record")]
    Trailing(usize),
}

/// What a request tells its audit record, one field at a time: each is a field of
/// [`AuditRecord`] (`at_ms`, `kind`, `endpoint`, `request_id` and `client_ip` are set
/// when the entry begins; the writer gives the `id`).
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Admin(bool),
    KeyId(&'a str),
    Team(&'a str),
    EndUser(&'a str),
    RequestedModel(&'a str),
    Rule(&'a str),
    Target(&'a str),
    Attempts(u32),
    FailedAttempts(&'a [FailedAttempt]),
    Status(u16),
    LatencyMs(u64),
    TtfbMs(u64),
    InputTokens(u64),
    OutputTokens(u64),
    UsageEstimated(bool),
    CostUsd(f64),
    Tools(&'a [&'a str]),
    PiiClasses(&'a [&'a str]),
    Outcome(&'a str),
    Error(&'a str),
    Action(&'a str),
    Subject(&'a str),
    Prompt(&'a serde_json::Value),
    Response(&'a str),
}

/// The byte before each field's value. Numbers are the format: never reuse one. A request
/// writes no `Id` (the writer gives each record its id from its place in the chain);
/// the tag lets a whole record, id included, round-trip through the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    End = 0,
    Id = 1,
    AtMs = 2,
    Kind = 3,
    RequestId = 4,
    Admin = 5,
    KeyId = 6,
    Team = 7,
    EndUser = 8,
    ClientIp = 9,
    Endpoint = 10,
    RequestedModel = 11,
    Rule = 12,
    Target = 13,
    Attempts = 14,
    FailedAttempts = 15,
    Status = 16,
    LatencyMs = 17,
    TtfbMs = 18,
    InputTokens = 19,
    OutputTokens = 20,
    UsageEstimated = 21,
    CostUsd = 22,
    Tools = 23,
    PiiClasses = 24,
    Outcome = 25,
    Error = 26,
    Action = 27,
    Subject = 28,
    Prompt = 29,
    Response = 30,
}

impl Tag {
    const ALL: [Tag; 31] = [
        Tag::End,
        Tag::Id,
        Tag::AtMs,
        Tag::Kind,
        Tag::RequestId,
        Tag::Admin,
        Tag::KeyId,
        Tag::Team,
        Tag::EndUser,
        Tag::ClientIp,
        Tag::Endpoint,
        Tag::RequestedModel,
        Tag::Rule,
        Tag::Target,
        Tag::Attempts,
        Tag::FailedAttempts,
        Tag::Status,
        Tag::LatencyMs,
        Tag::TtfbMs,
        Tag::InputTokens,
        Tag::OutputTokens,
        Tag::UsageEstimated,
        Tag::CostUsd,
        Tag::Tools,
        Tag::PiiClasses,
        Tag::Outcome,
        Tag::Error,
        Tag::Action,
        Tag::Subject,
        Tag::Prompt,
        Tag::Response,
    ];
}

/// Writes the fields an entry begins with: the version, then what arrived when.
pub fn begin(
    out: &mut Vec<u8>,
    at_ms: i64,
    kind: &str,
    endpoint: &str,
    request_id: Option<&str>,
    client_ip: Option<IpAddr>,
) {
    out.push(VERSION);
    let mut out = Encoder(out);
    out.tag(Tag::AtMs);
    out.0.extend_from_slice(&at_ms.to_le_bytes());
    out.tagged_str(Tag::Kind, kind);
    out.tagged_str(Tag::Endpoint, endpoint);
    if let Some(request_id) = request_id {
        out.tagged_str(Tag::RequestId, request_id);
    }
    if let Some(ip) = client_ip {
        out.tag(Tag::ClientIp);
        match ip {
            IpAddr::V4(ip) => {
                out.0.push(4);
                out.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.0.push(6);
                out.0.extend_from_slice(&ip.octets());
            }
        }
    }
}

/// Appends one field.
pub fn put(out: &mut Vec<u8>, field: Field<'_>) {
    let mut out = Encoder(out);
    match field {
        Field::Admin(admin) => out.tagged_flag(Tag::Admin, admin),
        Field::KeyId(text) => out.tagged_str(Tag::KeyId, text),
        Field::Team(text) => out.tagged_str(Tag::Team, text),
        Field::EndUser(text) => out.tagged_str(Tag::EndUser, text),
        Field::RequestedModel(text) => out.tagged_str(Tag::RequestedModel, text),
        Field::Rule(text) => out.tagged_str(Tag::Rule, text),
        Field::Target(text) => out.tagged_str(Tag::Target, text),
        Field::Attempts(count) => out.tagged_varint(Tag::Attempts, u64::from(count)),
        Field::FailedAttempts(attempts) => {
            out.tag(Tag::FailedAttempts);
            out.varint(attempts.len() as u64);
            for attempt in attempts {
                out.str(&attempt.target);
                out.str(&attempt.error);
            }
        }
        Field::Status(status) => out.tagged_varint(Tag::Status, u64::from(status)),
        Field::LatencyMs(ms) => out.tagged_varint(Tag::LatencyMs, ms),
        Field::TtfbMs(ms) => out.tagged_varint(Tag::TtfbMs, ms),
        Field::InputTokens(tokens) => out.tagged_varint(Tag::InputTokens, tokens),
        Field::OutputTokens(tokens) => out.tagged_varint(Tag::OutputTokens, tokens),
        Field::UsageEstimated(estimated) => out.tagged_flag(Tag::UsageEstimated, estimated),
        Field::CostUsd(cost) => {
            out.tag(Tag::CostUsd);
            out.0.extend_from_slice(&cost.to_le_bytes());
        }
        Field::Tools(names) => out.tagged_strs(Tag::Tools, names),
        Field::PiiClasses(names) => out.tagged_strs(Tag::PiiClasses, names),
        Field::Outcome(text) => out.tagged_str(Tag::Outcome, text),
        Field::Error(text) => out.tagged_str(Tag::Error, text),
        Field::Action(text) => out.tagged_str(Tag::Action, text),
        Field::Subject(text) => out.tagged_str(Tag::Subject, text),
        Field::Prompt(prompt) => out.tagged_str(Tag::Prompt, &prompt.to_string()),
        Field::Response(text) => out.tagged_str(Tag::Response, text),
    }
}

/// Closes a record: nothing may follow.
pub fn end(out: &mut Vec<u8>) {
    out.push(Tag::End as u8);
}

/// A whole record's journal form, as a request would have written it.
#[cfg(test)]
pub fn encode(record: &AuditRecord, out: &mut Vec<u8>) {
    begin(out, record.at_ms, &record.kind, &record.endpoint, record.request_id.as_deref(), record.client_ip);
    // Requests leave the id to the writer; records read back from the store have one.
    if !record.id.is_empty() {
        Encoder(out).tagged_str(Tag::Id, &record.id);
    }
    put_text(out, &record.key_id, |text| Field::KeyId(text));
    put_text(out, &record.team, |text| Field::Team(text));
    put_text(out, &record.end_user, |text| Field::EndUser(text));
    put_text(out, &record.requested_model, |text| Field::RequestedModel(text));
    put_text(out, &record.rule, |text| Field::Rule(text));
    put_text(out, &record.target, |text| Field::Target(text));
    put_text(out, &record.error, |text| Field::Error(text));
    put_text(out, &record.action, |text| Field::Action(text));
    put_text(out, &record.subject, |text| Field::Subject(text));
    put_text(out, &record.response, |text| Field::Response(text));
    if let Some(outcome) = &record.outcome {
        put(out, Field::Outcome(outcome));
    }
    put_number(out, record.latency_ms, Field::LatencyMs);
    put_number(out, record.ttfb_ms, Field::TtfbMs);
    put_number(out, record.input_tokens, Field::InputTokens);
    put_number(out, record.output_tokens, Field::OutputTokens);
    if let Some(cost) = record.cost_usd {
        put(out, Field::CostUsd(cost));
    }
    put(out, Field::Admin(record.admin));
    put(out, Field::Attempts(record.attempts));
    put(out, Field::FailedAttempts(&record.failed_attempts));
    put(out, Field::Status(record.status));
    put(out, Field::UsageEstimated(record.usage_estimated));
    let tools: Vec<&str> = record.tools.iter().map(String::as_str).collect();
    put(out, Field::Tools(&tools));
    let classes: Vec<&str> = record.pii_classes.iter().map(String::as_str).collect();
    put(out, Field::PiiClasses(&classes));
    if let Some(prompt) = &record.prompt {
        put(out, Field::Prompt(prompt));
    }
    end(out);
}

#[cfg(test)]
fn put_text(out: &mut Vec<u8>, text: &Option<String>, field: fn(&str) -> Field<'_>) {
    if let Some(text) = text {
        put(out, field(text));
    }
}

#[cfg(test)]
fn put_number(out: &mut Vec<u8>, number: Option<u64>, field: fn(u64) -> Field<'static>) {
    if let Some(number) = number {
        put(out, field(number));
    }
}

/// The record `bytes` (one whole journal entry) encodes.
pub fn decode(bytes: &[u8]) -> Result<AuditRecord, DecodeError> {
    let mut input = Decoder(bytes);
    let version = input.byte()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let mut record = AuditRecord::default();
    loop {
        let marker = input.byte()?;
        let tag = *Tag::ALL.get(usize::from(marker)).ok_or(DecodeError::Marker(marker))?;
        match tag {
            Tag::End => break,
            Tag::Id => record.id = input.string()?,
            Tag::AtMs => record.at_ms = i64::from_le_bytes(input.array()?),
            Tag::Kind => record.kind = input.string()?.into(),
            Tag::RequestId => record.request_id = Some(input.string()?),
            Tag::Admin => record.admin = input.flag()?,
            Tag::KeyId => record.key_id = Some(input.string()?),
            Tag::Team => record.team = Some(input.string()?),
            Tag::EndUser => record.end_user = Some(input.string()?),
            Tag::ClientIp => {
                record.client_ip = Some(match input.byte()? {
                    4 => IpAddr::from(input.array::<4>()?),
                    6 => IpAddr::from(input.array::<16>()?),
                    other => return Err(DecodeError::Marker(other)),
                })
            }
            Tag::Endpoint => record.endpoint = input.string()?.into(),
            Tag::RequestedModel => record.requested_model = Some(input.string()?),
            Tag::Rule => record.rule = Some(input.string()?),
            Tag::Target => record.target = Some(input.string()?),
            Tag::Attempts => record.attempts = input.varint()? as u32,
            Tag::FailedAttempts => {
                let count = input.count()?;
                record.failed_attempts = Vec::with_capacity(count);
                for _ in 0..count {
                    let attempt = FailedAttempt { target: input.string()?, error: input.string()? };
                    record.failed_attempts.push(attempt);
                }
            }
            Tag::Status => record.status = input.varint()? as u16,
            Tag::LatencyMs => record.latency_ms = Some(input.varint()?),
            Tag::TtfbMs => record.ttfb_ms = Some(input.varint()?),
            Tag::InputTokens => record.input_tokens = Some(input.varint()?),
            Tag::OutputTokens => record.output_tokens = Some(input.varint()?),
            Tag::UsageEstimated => record.usage_estimated = input.flag()?,
            Tag::CostUsd => record.cost_usd = Some(f64::from_le_bytes(input.array()?)),
            Tag::Tools => record.tools = input.strings()?,
            Tag::PiiClasses => record.pii_classes = input.strings()?,
            Tag::Outcome => record.outcome = Some(input.string()?.into()),
            Tag::Error => record.error = Some(input.string()?),
            Tag::Action => record.action = Some(input.string()?),
            Tag::Subject => record.subject = Some(input.string()?),
            Tag::Prompt => record.prompt = Some(serde_json::from_str(&input.string()?).map_err(DecodeError::Prompt)?),
            Tag::Response => record.response = Some(input.string()?),
        }
    }
    match input.0.len() {
        0 => Ok(record),
        left => Err(DecodeError::Trailing(left)),
    }
}

struct Encoder<'a>(&'a mut Vec<u8>);

impl Encoder<'_> {
    fn tag(&mut self, tag: Tag) {
        self.0.push(tag as u8);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn str(&mut self, text: &str) {
        self.varint(text.len() as u64);
        self.0.extend_from_slice(text.as_bytes());
    }

    fn tagged_varint(&mut self, tag: Tag, value: u64) {
        self.tag(tag);
        self.varint(value);
    }

    fn tagged_str(&mut self, tag: Tag, text: &str) {
        self.tag(tag);
        self.str(text);
    }

    fn tagged_flag(&mut self, tag: Tag, flag: bool) {
        self.tag(tag);
        self.0.push(u8::from(flag));
    }

    fn tagged_strs(&mut self, tag: Tag, texts: &[&str]) {
        self.tag(tag);
        self.varint(texts.len() as u64);
        for text in texts {
            self.str(text);
        }
    }
}

struct Decoder<'a>(&'a [u8]);

impl Decoder<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], DecodeError> {
        if count > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Marker(other)),
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Marker(0x80))
    }

    /// A length or count: never more than the bytes left, so garbage cannot ask for a
    /// huge allocation.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let count = self.varint()?;
        if count > self.0.len() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(count as usize)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let length = self.count()?;
        let bytes = self.take(length)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::Utf8)
    }

    fn strings(&mut self) -> Result<Vec<String>, DecodeError> {
        let count = self.count()?;
        let mut strings = Vec::with_capacity(count);
        for _ in 0..count {
            strings.push(self.string()?);
        }
        Ok(strings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_record() -> AuditRecord {
        AuditRecord {
            id: "aud_1".into(),
            at_ms: 1_790_000_000_123,
            kind: "chat".into(),
            request_id: Some("req_1".into()),
            admin: false,
            key_id: Some("key_1".into()),
            team: Some("support".into()),
            end_user: Some("tg:42 é".into()),
            client_ip: Some("2001:db8::1".parse().unwrap()),
            endpoint: "/v1/chat/completions".into(),
            requested_model: Some("smart".into()),
            rule: Some("cheap-first".into()),
            target: Some("groq/llama".into()),
            attempts: 2,
            failed_attempts: vec![FailedAttempt { target: "openai/gpt".into(), error: "429 \"slow down\"\n".into() }],
            status: 200,
            latency_ms: Some(300),
            ttfb_ms: Some(u64::MAX),
            input_tokens: Some(0),
            output_tokens: Some(129),
            usage_estimated: true,
            cost_usd: Some(0.000_123_4),
            tools: vec!["get_weather".into(), "search".into()],
            pii_classes: vec!["email".into()],
            outcome: Some("completed".into()),
            error: None,
            action: Some("key.create".into()),
            subject: Some("key_2".into()),
            prompt: Some(serde_json::json!([{"role": "user", "content": "hi \u{0}"}])),
            response: Some(String::new()),
        }
    }

    #[test]
    fn every_field_comes_back_as_it_went_in() {
        for record in [
            full_record(),
            AuditRecord::default(),
            AuditRecord { client_ip: Some([10, 0, 0, 7].into()), ..full_record() },
        ] {
            let mut bytes = Vec::new();
            encode(&record, &mut bytes);
            assert_eq!(decode(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn every_tag_decodes_as_its_own_number() {
        for (number, tag) in Tag::ALL.iter().enumerate() {
            assert_eq!(*tag as usize, number);
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut bytes = Vec::new();
        encode(&full_record(), &mut bytes);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(DecodeError::Trailing(1))));
        let mut other_version = bytes.clone();
        other_version[0] = 1;
        assert!(matches!(decode(&other_version), Err(DecodeError::Version(1))));
        // Every single-byte corruption decodes to something or fails; it never panics.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            let _ = decode(&damaged);
        }
    }
}
