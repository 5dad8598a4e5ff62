//! Reading an answer back after it has been sent: its text, the tools the model called,
//! finish reasons and model, for the audit record, usage estimates and traces. Only done
//! when one of those needs it; the common path sends bytes without parsing them.

use bytes::Bytes;
use serde::Deserialize;

/// Most stream bytes kept for reading back; past this the rest of a (very long) answer
/// is counted by size, not read.
pub const RETAINED_STREAM_BYTES: usize = 1024 * 1024;

/// What an answer said.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub model: Option<String>,
    pub text: String,
    /// Function names, in call order.
    pub tools: Vec<String>,
    pub finish_reasons: Vec<String>,
}

/// An answer's bytes as the client got them.
pub enum Answer {
    /// A `chat.completion` or embeddings body.
    Complete(Bytes),
    /// A stream's frames, the first [`RETAINED_STREAM_BYTES`] of them.
    Frames { frames: Vec<Bytes>, retained: usize, total: usize },
}

impl Default for Answer {
    fn default() -> Self {
        Answer::Frames { frames: Vec::new(), retained: 0, total: 0 }
    }
}

impl Answer {
    /// Keeps a sent frame (a reference count, not a copy).
    pub fn push(&mut self, frame: &Bytes) {
        if let Answer::Frames { frames, retained, total } = self {
            *total += frame.len();
            if *retained + frame.len() <= RETAINED_STREAM_BYTES {
                *retained += frame.len();
                frames.push(frame.clone());
            }
        }
    }

    /// Whether the model called a tool (a byte search, no parsing).
    pub fn mentions_tool_calls(&self) -> bool {
        // Built once: building a searcher per call showed in the request path's profile.
        static TOOL_CALLS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"tool_calls\""));
        let found = |bytes: &[u8]| TOOL_CALLS.find(bytes).is_some();
        match self {
            Answer::Complete(body) => found(body),
            Answer::Frames { frames, .. } => frames.iter().any(|frame| found(frame)),
        }
    }

    /// Share of the answer that was kept (1 unless a stream outgrew the retention).
    pub fn retained_share(&self) -> f64 {
        match self {
            Answer::Frames { retained, total, .. } if *total > 0 => *retained as f64 / *total as f64,
            _ => 1.0,
        }
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        match self {
            Answer::Complete(body) => {
                if let Ok(completion) = serde_json::from_slice::<Completion>(body) {
                    summary.model = completion.model;
                    for choice in completion.choices {
                        summary.add(choice.message, choice.finish_reason);
                    }
                }
            }
            Answer::Frames { frames, .. } => {
                for frame in frames {
                    let Ok(text) = std::str::from_utf8(frame) else { continue };
                    for data in text.split("\n\n").filter_map(|event| event.trim().strip_prefix("data:")) {
                        let Ok(chunk) = serde_json::from_str::<Chunk>(data.trim()) else { continue };
                        if summary.model.is_none() {
                            summary.model = chunk.model;
                        }
                        for choice in chunk.choices {
                            summary.add(choice.delta, choice.finish_reason);
                        }
                    }
                }
            }
        }
        summary
    }
}

impl Summary {
    fn add(&mut self, message: Option<Message>, finish_reason: Option<String>) {
        if let Some(message) = message {
            if let Some(content) = message.content {
                self.text.push_str(&content);
            }
            // A streamed call names its function in its first delta only.
            let names = message.tool_calls.into_iter().flatten().filter_map(|call| call.function?.name);
            self.tools.extend(names.filter(|name| !name.is_empty()));
        }
        if let Some(reason) = finish_reason {
            self.finish_reasons.push(reason);
        }
    }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<CompletionChoice>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Message>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_complete_answer() {
        let body = r#"{"id":"x","model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
            "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5}}"#;
        let answer = Answer::Complete(Bytes::from(body));
        assert!(answer.mentions_tool_calls());
        let summary = answer.summary();
        assert_eq!(summary.model.as_deref(), Some("gpt-4o-2024"));
        assert_eq!(summary.tools, ["get_weather"]);
        assert_eq!(summary.finish_reasons, ["tool_calls"]);
    }

    #[test]
    fn reads_a_stream_split_into_frames() {
        let mut answer = Answer::default();
        for frame in [
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        ] {
            answer.push(&Bytes::from(frame));
        }
        let summary = answer.summary();
        assert_eq!(summary.text, "Hello");
        assert_eq!(summary.tools, ["lookup"]);
        assert_eq!(summary.finish_reasons, ["stop"]);
        assert_eq!(answer.retained_share(), 1.0);
    }

    #[test]
    fn a_long_stream_is_kept_up_to_the_retention() {
        let mut answer = Answer::default();
        let frame = Bytes::from(vec![b'x'; 1000]);
        for _ in 0..(2 * RETAINED_STREAM_BYTES / 1000) {
            answer.push(&frame);
        }
        let share = answer.retained_share();
        assert!((0.49..=0.51).contains(&share), "{share}");
    }
}
