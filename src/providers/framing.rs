//! Splitting upstream byte streams into events: SSE for OpenAI-format providers,
//! NDJSON for Ollama. Both tolerate events split across reads and CRLF line ends.

use bytes::{Buf, Bytes, BytesMut};

/// Incremental Server-Sent Events decoder that yields each event's `data`.
#[derive(Default)]
pub struct SseDecoder {
    buffer: BytesMut,
    /// `data:` lines of the event being read, joined by `\n` as the SSE spec says.
    data: Option<BytesMut>,
}

impl SseDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event's data, if one is buffered. Comments (`: ping`) and
    /// fields other than `data` are skipped.
    pub fn next_event(&mut self) -> Option<Bytes> {
        while let Some(end) = memchr::memchr(b'\n', &self.buffer) {
            let mut line = self.buffer.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    return Some(data.freeze());
                }
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match memchr::memchr(b':', &line) {
                Some(colon) => {
                    let mut value = line.split_off(colon);
                    value.advance(1);
                    if value.first() == Some(&b' ') {
                        value.advance(1);
                    }
                    (line, value)
                }
                None => (line, BytesMut::new()),
            };
            if &field[..] == b"data" {
                match &mut self.data {
                    Some(data) => {
                        data.extend_from_slice(b"\n");
                        data.extend_from_slice(&value);
                    }
                    None => self.data = Some(value),
                }
            }
        }
        None
    }

    /// At end of stream: an event that lacked its final blank line.
    pub fn finish(&mut self) -> Option<Bytes> {
        if !self.buffer.is_empty() {
            self.buffer.extend_from_slice(b"\n\n");
            return self.next_event();
        }
        self.data.take().map(BytesMut::freeze)
    }
}

/// Incremental newline-delimited JSON decoder; yields non-empty lines.
#[derive(Default)]
pub struct LineDecoder {
    buffer: BytesMut,
}

impl LineDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    pub fn next_line(&mut self) -> Option<Bytes> {
        while let Some(end) = memchr::memchr(b'\n', &self.buffer) {
            let mut line = self.buffer.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(line.freeze());
            }
        }
        None
    }

    /// At end of stream: a last line without its newline.
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.buffer);
        (!rest.iter().all(u8::is_ascii_whitespace)).then(|| rest.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[&[u8]]) -> Vec<String> {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        for piece in input {
            decoder.push(piece);
            while let Some(event) = decoder.next_event() {
                out.push(String::from_utf8(event.to_vec()).unwrap());
            }
        }
        out.extend(decoder.finish().map(|e| String::from_utf8(e.to_vec()).unwrap()));
        out
    }

    #[test]
    fn sse_events_split_across_reads() {
        assert_eq!(events(&[b"data: {\"a\"", b":1}\n", b"\ndata: [DONE]\n\n"]), vec!["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn sse_crlf_comments_and_multiline_data() {
        let input: &[u8] = b": keep-alive\r\n\r\nevent: x\r\ndata:one\r\ndata: two\r\n\r\ndata: last";
        assert_eq!(events(&[input]), vec!["one\ntwo", "last"]);
    }

    #[test]
    fn ndjson_lines() {
        let mut decoder = LineDecoder::default();
        decoder.push(b"{\"a\":1}\r\n\n{\"b\"");
        assert_eq!(decoder.next_line().unwrap(), &b"{\"a\":1}"[..]);
        assert!(decoder.next_line().is_none());
        decoder.push(b":2}");
        assert_eq!(decoder.finish().unwrap(), &b"{\"b\":2}"[..]);
    }
}
