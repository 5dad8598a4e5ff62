//! The journal's form of an audit record. A request thread writes it before its response
//! completes, so it is built to be cheap to write: fields in declaration order with no
//! names, no escaping and no number formatting. The writer decodes it and stores the
//! record as JSON, the form every reader (and the hash chain) sees.
//!
//! - integers: LEB128 varints (`at_ms` and the cost as 8 bytes, little-endian);
//! - strings: a varint byte length, then UTF-8;
//! - options and lists: a presence byte or a varint count, then the values;
//! - the captured prompt: its JSON text, as a string.
//!
//! The first byte is [`VERSION`]: a journal written by another format is refused, not
//! misread.

use std::net::IpAddr;

use super::{AuditRecord, FailedAttempt};

/// The format's version; change it with any change to the field order or encodings.
const VERSION: u8 = 1;

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

/// Appends `record`'s journal form to `out`.
pub fn encode(record: &AuditRecord, out: &mut Vec<u8>) {
    let mut out = Encoder(out);
    out.0.push(VERSION);
    out.str(&record.id);
    out.0.extend_from_slice(&record.at_ms.to_le_bytes());
    out.str(&record.kind);
    out.opt_str(&record.request_id);
    out.0.push(u8::from(record.admin));
    out.opt_str(&record.key_id);
    out.opt_str(&record.team);
    out.opt_str(&record.end_user);
    match record.client_ip {
        None => out.0.push(0),
        Some(IpAddr::V4(ip)) => {
            out.0.push(4);
            out.0.extend_from_slice(&ip.octets());
        }
        Some(IpAddr::V6(ip)) => {
            out.0.push(6);
            out.0.extend_from_slice(&ip.octets());
        }
    }
    out.str(&record.endpoint);
    out.opt_str(&record.requested_model);
    out.opt_str(&record.rule);
    out.opt_str(&record.target);
    out.varint(u64::from(record.attempts));
    out.varint(record.failed_attempts.len() as u64);
    for attempt in &record.failed_attempts {
        out.str(&attempt.target);
        out.str(&attempt.error);
    }
    out.varint(u64::from(record.status));
    out.opt_u64(record.latency_ms);
    out.opt_u64(record.ttfb_ms);
    out.opt_u64(record.input_tokens);
    out.opt_u64(record.output_tokens);
    out.0.push(u8::from(record.usage_estimated));
    out.opt(record.cost_usd, |out, cost| out.0.extend_from_slice(&cost.to_le_bytes()));
    out.strs(&record.tools);
    out.strs(&record.pii_classes);
    out.opt_str(&record.outcome);
    out.opt_str(&record.error);
    out.opt_str(&record.action);
    out.opt_str(&record.subject);
    out.opt(record.prompt.as_ref(), |out, prompt| out.str(&prompt.to_string()));
    out.opt_str(&record.response);
}

/// The record `bytes` (one whole journal entry) encodes.
pub fn decode(bytes: &[u8]) -> Result<AuditRecord, DecodeError> {
    let mut input = Decoder(bytes);
    let version = input.byte()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let record = AuditRecord {
        id: input.string()?,
        at_ms: i64::from_le_bytes(input.array()?),
        kind: input.string()?.into(),
        request_id: input.opt_string()?,
        admin: input.flag()?,
        key_id: input.opt_string()?,
        team: input.opt_string()?,
        end_user: input.opt_string()?,
        client_ip: match input.byte()? {
            0 => None,
            4 => Some(IpAddr::from(input.array::<4>()?)),
            6 => Some(IpAddr::from(input.array::<16>()?)),
            other => return Err(DecodeError::Marker(other)),
        },
        endpoint: input.string()?.into(),
        requested_model: input.opt_string()?,
        rule: input.opt_string()?,
        target: input.opt_string()?,
        attempts: input.varint()? as u32,
        failed_attempts: {
            let count = input.count()?;
            let mut attempts = Vec::with_capacity(count);
            for _ in 0..count {
                attempts.push(FailedAttempt { target: input.string()?, error: input.string()? });
            }
            attempts
        },
        status: input.varint()? as u16,
        latency_ms: input.opt_u64()?,
        ttfb_ms: input.opt_u64()?,
        input_tokens: input.opt_u64()?,
        output_tokens: input.opt_u64()?,
        usage_estimated: input.flag()?,
        cost_usd: input.opt(|input| Ok(f64::from_le_bytes(input.array()?)))?,
        tools: input.strings()?,
        pii_classes: input.strings()?,
        outcome: input.opt_string()?.map(Into::into),
        error: input.opt_string()?,
        action: input.opt_string()?,
        subject: input.opt_string()?,
        prompt: input.opt(|input| serde_json::from_str(&input.string()?).map_err(DecodeError::Prompt))?,
        response: input.opt_string()?,
    };
    match input.0.len() {
        0 => Ok(record),
        left => Err(DecodeError::Trailing(left)),
    }
}

struct Encoder<'a>(&'a mut Vec<u8>);

impl Encoder<'_> {
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

    /// A presence byte (0 or 1), then the value if there is one.
    fn opt<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.0.push(0),
            Some(value) => {
                self.0.push(1);
                write(self, value);
            }
        }
    }

    fn opt_str(&mut self, text: &Option<impl std::ops::Deref<Target = str>>) {
        self.opt(text.as_deref(), Self::str);
    }

    fn opt_u64(&mut self, value: Option<u64>) {
        self.opt(value, Self::varint);
    }

    fn strs(&mut self, texts: &[String]) {
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

    /// A presence byte, then the value `read` reads if it says there is one.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        match self.flag()? {
            false => Ok(None),
            true => read(self).map(Some),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>, DecodeError> {
        self.opt(Self::string)
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        self.opt(Self::varint)
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
        other_version[0] = 2;
        assert!(matches!(decode(&other_version), Err(DecodeError::Version(2))));
        // Every single-byte corruption decodes to something or fails; it never panics.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0xff;
            let _ = decode(&damaged);
        }
    }
}
