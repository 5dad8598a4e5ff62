//! Phase 6: what a request used and cost, recorded exactly once, when its answer is
//! complete: a usage row, the limits settled with the real figures, the audit record,
//! metrics and the trace's closing attributes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::time::Instant;

use super::FrameStream;
use super::answer::{Answer, Summary};
use crate::audit::{AuditEntry, Auditor, ContentCapture, FailedAttempt, Field};
use crate::limits::Admission;
use crate::protocol::Usage;
use crate::protocol::parse;
use crate::providers::{EventStream, ProviderError, StreamEvent};
use crate::routing::health::CallSlot;
use crate::routing::pii::PiiDetector;
use crate::routing::{Caller, RouteInput, Target, privacy};
use crate::store::{UsageRow, UsageWriter};
use crate::telemetry::metrics::{Metrics, Settled};
use crate::telemetry::trace::RequestTrace;

/// How a request ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Completed,
    Failed(String),
}

/// What was asked, kept (by reference count) for content capture and usage estimates.
pub(super) struct Asked {
    pub body: Bytes,
    pub embeddings: bool,
}

/// Settled when a complete answer is sent, or when a stream ends, fails or is dropped by
/// a departing client (`Drop` does the recording).
pub(super) struct Settlement {
    pub request_id: String,
    pub target: Target,
    /// When the first upstream attempt started.
    pub started: Instant,
    /// Until the answer (for a stream: its first content) arrived.
    pub first_byte: Duration,
    pub usage: Option<Usage>,
    /// `None` while a stream is running; still `None` when it is dropped means the
    /// client went away.
    pub outcome: Option<Outcome>,
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub end_user: Option<String>,
    /// The caller's and the deployment's limits, settled with the real usage.
    pub admissions: Vec<Admission>,
    pub usage_writer: Arc<UsageWriter>,
    pub metrics: Arc<Metrics>,
    /// The request's audit record, completed and journaled when the answer is.
    pub audit: Option<(AuditEntry, Arc<Auditor>)>,
    pub capture: ContentCapture,
    pub detector: Arc<PiiDetector>,
    pub attempts: u32,
    pub failed_attempts: Vec<FailedAttempt>,
    pub trace: RequestTrace,
    pub asked: Asked,
    pub answer: Answer,
    /// The deployment stays busy until the answer is settled.
    pub slot: Option<CallSlot>,
}

impl Settlement {
    /// Records now (`Drop` does it), for a whole answer.
    pub fn settle(self) {}

    fn record(&mut self) {
        let _span = self.trace.span("settle");
        let stream = matches!(self.answer, Answer::Frames { .. });
        let wants_text = self.capture != ContentCapture::Off;
        let summary = (wants_text
            || self.trace.is_recording()
            || (self.usage.is_none() && !self.asked.embeddings)
            || (self.audit.is_some() && self.answer.mentions_tool_calls()))
        .then(|| self.answer.summary());
        let estimated = self.usage.is_none();
        let usage = match self.usage.take() {
            Some(usage) => usage,
            None => self.estimate_usage(summary.as_ref()),
        };
        let (input, output) = (usage.prompt_tokens, usage.completion_tokens);
        let cost_usd = self.target.spec().map_or(0.0, |spec| spec.cost_usd(input, output));
        let outcome = match &self.outcome {
            Some(Outcome::Completed) => "completed",
            Some(Outcome::Failed(_)) => "failed",
            None => "cancelled",
        };
        let error = match &self.outcome {
            Some(Outcome::Failed(error)) => Some(error.as_str()),
            _ => None,
        };
        let elapsed = self.started.elapsed();
        tracing::debug!(
            request_id = %self.request_id,
            target = %self.target.name(),
            input_tokens = input,
            output_tokens = output,
            cost_usd,
            usage_estimated = estimated,
            elapsed_ms = elapsed.as_millis() as u64,
            error = error.unwrap_or_default(),
            "{outcome}"
        );
        // An answer that ended normally is charged what it used (reported or counted).
        // One cut short without a report may have cost more upstream than was sent on:
        // its whole reservation counts, so a budget is never overspent on a guess.
        let known = !estimated || matches!(self.outcome, Some(Outcome::Completed));
        for admission in self.admissions.drain(..) {
            if known {
                admission.settle(input + output, cost_usd);
            } else {
                admission.keep_reservation();
            }
        }
        let key = self.key_id.as_deref().unwrap_or("master");
        self.metrics.llm_settled(
            &self.target,
            key,
            &Settled {
                outcome,
                duration: elapsed,
                time_to_first_token: stream.then_some(self.first_byte),
                input_tokens: input,
                output_tokens: output,
                cost_usd,
            },
        );
        self.trace_attributes(&usage, summary.as_ref(), error);
        let target = self.target.name();
        if let Some((mut record, auditor)) = self.audit.take() {
            record.set(Field::Target(&target));
            record.set(Field::Attempts(self.attempts));
            if !self.failed_attempts.is_empty() {
                record.set(Field::FailedAttempts(&self.failed_attempts));
            }
            record.set(Field::Status(200));
            record.set(Field::LatencyMs(elapsed.as_millis() as u64));
            record.set(Field::TtfbMs(self.first_byte.as_millis() as u64));
            record.set(Field::InputTokens(input));
            record.set(Field::OutputTokens(output));
            if estimated {
                record.set(Field::UsageEstimated(true));
            }
            record.set(Field::CostUsd(cost_usd));
            record.set(Field::Outcome(outcome));
            if let Some(error) = error {
                record.set(Field::Error(error));
            }
            if let Some(summary) = summary.as_ref().filter(|summary| !summary.tools.is_empty()) {
                let tools: Vec<&str> = summary.tools.iter().map(String::as_str).collect();
                record.set(Field::Tools(&tools));
            }
            if wants_text {
                if let Some(prompt) = self.captured_prompt() {
                    record.set(Field::Prompt(&prompt));
                }
                if let Some(summary) = summary {
                    let response = match self.capture {
                        ContentCapture::Redacted => privacy::redacted(&summary.text, &self.detector),
                        _ => summary.text,
                    };
                    record.set(Field::Response(&response));
                }
            }
            auditor.record(record);
        }
        self.usage_writer.record(UsageRow {
            at: jiff::Timestamp::now().as_second(),
            key_id: self.key_id.take(),
            team: self.team.take(),
            end_user: self.end_user.take(),
            model: target,
            input_tokens: input as i64,
            output_tokens: output as i64,
            cost_usd,
        });
        self.slot.take();
    }

    /// Usage the upstream did not report, counted with the o200k tokenizer: the prompt
    /// as sent, the answer as far as it got (a stream longer than the retention is
    /// scaled up by its size).
    fn estimate_usage(&self, summary: Option<&Summary>) -> Usage {
        let caller = Caller::default();
        let prompt = if self.asked.embeddings {
            parse::embeddings_request(&self.asked.body)
                .map(|request| RouteInput::embeddings(&request, &caller).prompt_tokens(true))
        } else {
            parse::chat_request(&self.asked.body).map(|request| RouteInput::chat(&request, &caller).prompt_tokens(true))
        };
        let output = summary.map_or(0, |summary| {
            let counted = crate::routing::tokens::count_text(&summary.text) as f64;
            (counted / self.answer.retained_share()).round() as u64
        });
        Usage::new(prompt.unwrap_or(0), output)
    }

    /// The request's messages (or embedding input), PII replaced under `redacted`.
    fn captured_prompt(&self) -> Option<serde_json::Value> {
        let redact = self.capture == ContentCapture::Redacted;
        if self.asked.embeddings {
            let mut request = parse::embeddings_request(&self.asked.body).ok()?;
            if redact {
                privacy::redact_embeddings(&mut request, &self.detector);
            }
            serde_json::to_value(&request.input).ok()
        } else {
            let mut request = parse::chat_request(&self.asked.body).ok()?;
            if redact {
                privacy::redact_chat(&mut request, &self.detector);
            }
            serde_json::to_value(&request.messages).ok()
        }
    }

    /// The GenAI semantic-convention attributes known only at the end.
    fn trace_attributes(&self, usage: &Usage, summary: Option<&Summary>, error: Option<&str>) {
        if !self.trace.is_recording() {
            return;
        }
        let trace = &self.trace;
        trace.set("gen_ai.usage.input_tokens", usage.prompt_tokens);
        trace.set("gen_ai.usage.output_tokens", usage.completion_tokens);
        trace.set("gen_ai.provider.name", self.target.provider.id().to_owned());
        trace.set("gen_ai.system", self.target.provider.id().to_owned());
        let model = summary.and_then(|summary| summary.model.clone()).unwrap_or_else(|| self.target.model.clone());
        trace.set("gen_ai.response.model", model);
        if let Some(summary) = summary.filter(|summary| !summary.finish_reasons.is_empty()) {
            trace.set("gen_ai.response.finish_reasons", summary.finish_reasons.clone());
        }
        trace.set("switchyard.target", self.target.name());
        trace.set("switchyard.attempts", self.attempts);
        if let Some(error) = error {
            trace.fail(error);
        }
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.record();
    }
}

/// Passes a stream's frames on, keeps its usage and a copy of its frames, and settles
/// when it ends. `deadline` (the rule's total timeout) cuts a stream that runs too long.
pub(super) fn settle_stream(events: EventStream, record: Settlement, deadline: Option<Instant>) -> FrameStream {
    Box::pin(stream::unfold(Some((events, record)), move |state| async move {
        let (mut events, mut record) = state?;
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(next) => next,
                    Err(_) => Some(Err(ProviderError::Timeout {
                        provider: record.target.provider.id().to_owned(),
                        after: deadline.duration_since(record.started).max(Duration::ZERO),
                    })),
                },
                None => events.next().await,
            };
            match next {
                Some(Ok(StreamEvent::Usage(usage))) => record.usage = Some(usage),
                Some(Ok(StreamEvent::Frame(frame))) => {
                    record.answer.push(&frame);
                    return Some((Ok(frame), Some((events, record))));
                }
                Some(Err(error)) => {
                    record.outcome = Some(Outcome::Failed(error.to_string()));
                    return Some((Err(error), None));
                }
                None => {
                    record.outcome = Some(Outcome::Completed);
                    return None;
                }
            }
        }
    }))
}
