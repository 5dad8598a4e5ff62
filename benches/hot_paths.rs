//! The request path's CPU work, without the network: what a change to parsing or
//! stream forwarding costs per request or per chunk. `cargo bench`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::protocol::parse;
use switchyard::providers::framing::SseDecoder;
use switchyard::providers::openai::sse_frame;

/// A typical agent turn: system prompt, history, a tool definition and a tool result.
const CHAT_BODY: &str = r#"{"model":"openai/gpt-5.6-luna","messages":[
{"role":"system","content":"You are a helpful assistant for an online shop. Answer briefly and use tools when stock or prices are asked."},
{"role":"user","content":"Do you have the X-9 in stock, and what does it cost?"},
{"role":"assistant","content":null,"tool_calls":[{"id":"call_a1","type":"function","function":{"name":"lookup_stock","arguments":"{\"sku\":\"X-9\"}"}}]},
{"role":"tool","tool_call_id":"call_a1","content":"{\"qty\":4,\"price_eur\":129.0}"},
{"role":"user","content":"Great, reserve one please."}],
"tools":[{"type":"function","function":{"name":"lookup_stock","description":"Find stock for a SKU","parameters":{"type":"object","properties":{"sku":{"type":"string"}},"required":["sku"]}}},
{"type":"function","function":{"name":"reserve","description":"Reserve items","parameters":{"type":"object","properties":{"sku":{"type":"string"},"qty":{"type":"integer"}},"required":["sku","qty"]}}}],
"tool_choice":"auto","temperature":0.3,"max_completion_tokens":512,"stream":true,"stream_options":{"include_usage":true},"user":"user-42","metadata":{"channel":"telegram"}}"#;

const CHUNK: &str = r#"data: {"id":"chatcmpl-9xYz","object":"chat.completion.chunk","created":1718000000,"model":"gpt-5.6-luna","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}

"#;

fn parse_and_serialize(c: &mut Criterion) {
    let body = CHAT_BODY.as_bytes();
    let mut group = c.benchmark_group("chat request");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse + serialize", |b| {
        b.iter(|| {
            let request = parse::chat_request(black_box(body)).expect("valid body");
            serde_json::to_vec(&request).expect("serialisable")
        })
    });
    group.finish();
}

fn sse_forwarding(c: &mut Criterion) {
    // 20 chunks arriving in one read, as a fast upstream delivers them.
    let input = CHUNK.repeat(20);
    let mut group = c.benchmark_group("sse forwarding");
    group.throughput(Throughput::Elements(20));
    group.bench_function("decode + frame 20 chunks", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::default();
            decoder.push(black_box(input.as_bytes()));
            let mut frames = 0;
            while let Some(data) = decoder.next_event() {
                black_box(sse_frame(&data));
                frames += 1;
            }
            frames
        })
    });
    group.finish();
}

criterion_group!(benches, parse_and_serialize, sse_forwarding);
criterion_main!(benches);
