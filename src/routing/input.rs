//! What routing reads from a request: the requested model, who is asking, the text to
//! scan and count, and what the request needs from a model. Token counts and PII
//! findings are computed on first use and at most once per request.

use std::borrow::Cow;
use std::cell::OnceCell;

use super::Purpose;
use super::pii::{PiiClass, PiiDetector};
use super::tokens;
use crate::protocol::{ChatCompletionRequest, EmbeddingInput, EmbeddingsRequest, MessageContent, Role};

/// What the request needs from a model; only targets whose catalog capabilities fit are
/// candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tools: bool,
    pub json_schema: bool,
    pub vision: bool,
}

/// Who is asking, beyond the request body.
#[derive(Debug, Clone, Default)]
pub struct Caller<'a> {
    pub key_id: Option<&'a str>,
    pub team: Option<&'a str>,
    /// The `x-switchyard-user` header; the body's `user` field when absent.
    pub end_user: Option<&'a str>,
    /// The `x-switchyard-tags` header, comma-separated.
    pub tags_header: Option<&'a str>,
}

pub struct RouteInput<'a> {
    pub requested: &'a str,
    pub purpose: Purpose,
    pub key_id: Option<&'a str>,
    pub team: Option<&'a str>,
    pub end_user: Option<&'a str>,
    pub tags: Vec<&'a str>,
    /// Every text the request sends: message contents, tool-call arguments, embedding inputs.
    pub texts: Vec<&'a str>,
    pub last_user_message: Option<Cow<'a, str>>,
    pub needs: Needs,
    pub max_output_tokens: Option<u32>,
    pub now: jiff::Timestamp,
    exact_tokens: OnceCell<u64>,
    estimated_tokens: OnceCell<u64>,
    pii: OnceCell<Vec<PiiClass>>,
}

impl<'a> RouteInput<'a> {
    pub fn chat(request: &'a ChatCompletionRequest, caller: &Caller<'a>) -> Self {
        let mut texts = Vec::with_capacity(request.messages.len());
        let mut vision = false;
        for message in &request.messages {
            match &message.content {
                Some(MessageContent::Text(text)) => texts.push(text.as_str()),
                Some(MessageContent::Parts(parts)) => {
                    for part in parts {
                        texts.extend(part.text.as_deref());
                        vision |= part.image_url.is_some();
                    }
                }
                None => {}
            }
            for call in message.tool_calls.iter().flatten() {
                texts.extend(call.function.as_ref().map(|f| f.arguments.as_str()));
            }
        }
        let last_user_message = request.messages.iter().rev().find(|m| m.role == Role::User).and_then(|m| {
            m.content.as_ref().map(|content| match content {
                MessageContent::Text(text) => Cow::Borrowed(text.as_str()),
                parts => Cow::Owned(parts.text()),
            })
        });
        let needs = Needs {
            tools: request.tools.as_ref().is_some_and(|tools| !tools.is_empty()),
            json_schema: request.response_format.as_ref().is_some_and(|f| f.kind == "json_schema"),
            vision,
        };
        let metadata_tags = request.metadata.as_ref().and_then(|m| m.get("tags")).and_then(|t| t.as_str());
        let mut input = Self::new(request.model.as_str(), Purpose::Chat, caller, request.user.as_deref(), texts);
        input.tags.extend(split_tags(metadata_tags));
        input.last_user_message = last_user_message;
        input.needs = needs;
        input.max_output_tokens = request.max_output_tokens();
        input
    }

    pub fn embeddings(request: &'a EmbeddingsRequest, caller: &Caller<'a>) -> Self {
        let texts = match &request.input {
            EmbeddingInput::Text(text) => vec![text.as_str()],
            EmbeddingInput::Texts(texts) => texts.iter().map(String::as_str).collect(),
            // Pre-tokenized input carries no text to scan.
            _ => Vec::new(),
        };
        Self::new(request.model.as_str(), Purpose::Embeddings, caller, request.user.as_deref(), texts)
    }

    fn new(
        requested: &'a str,
        purpose: Purpose,
        caller: &Caller<'a>,
        body_user: Option<&'a str>,
        texts: Vec<&'a str>,
    ) -> Self {
        RouteInput {
            requested,
            purpose,
            key_id: caller.key_id,
            team: caller.team,
            end_user: caller.end_user.or(body_user).filter(|u| !u.is_empty()),
            tags: split_tags(caller.tags_header).collect(),
            texts,
            last_user_message: None,
            needs: Needs::default(),
            max_output_tokens: None,
            now: jiff::Timestamp::now(),
            exact_tokens: OnceCell::new(),
            estimated_tokens: OnceCell::new(),
            pii: OnceCell::new(),
        }
    }

    /// Prompt tokens: exact (o200k_base) or the byte estimate, see [`tokens`].
    pub fn prompt_tokens(&self, exact: bool) -> u64 {
        if exact {
            *self.exact_tokens.get_or_init(|| tokens::count_o200k(self.texts.iter().copied()))
        } else {
            *self.estimated_tokens.get_or_init(|| tokens::estimate(self.texts.iter().copied()))
        }
    }

    /// The PII classes found anywhere in the request, sorted, each once.
    pub fn pii_classes(&self, detector: &PiiDetector) -> &[PiiClass] {
        self.pii.get_or_init(|| {
            let mut classes: Vec<PiiClass> =
                self.texts.iter().flat_map(|text| detector.scan(text)).map(|finding| finding.class).collect();
            classes.sort();
            classes.dedup();
            classes
        })
    }
}

fn split_tags(raw: Option<&str>) -> impl Iterator<Item = &str> {
    raw.into_iter().flat_map(|tags| tags.split(',')).map(str::trim).filter(|tag| !tag.is_empty())
}
