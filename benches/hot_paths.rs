//! The request path's CPU work, without the network: what a change to parsing or
//! stream forwarding costs per request or per chunk. `cargo bench`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;

use switchyard::audit::{AuditEntry, Field, Journal};
use switchyard::config::{DataFile, UpstreamTimeouts};
use switchyard::protocol::parse;
use switchyard::providers::framing::SseDecoder;
use switchyard::providers::openai::sse_frame;
use switchyard::providers::{Registry, catalog};
use switchyard::routing::health::Health;
use switchyard::routing::pii::PiiDetector;
use switchyard::routing::{Caller, NoBudgets, RouteInput, Router, policy};

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

const PROVIDERS: &[(&str, &str)] = &[
    ("openai.toml", include_str!("../providers/openai.toml")),
    ("deepseek.toml", include_str!("../providers/deepseek.toml")),
    ("groq.toml", include_str!("../providers/groq.toml")),
    ("ollama.toml", include_str!("../providers/ollama.toml")),
];

/// 100 rules over the shipped catalogs, none of which matches the benchmark request until
/// the last: the planner's worst case. Most test who is asking, a few scan the text.
fn hundred_rules() -> String {
    let mut policy = String::from(include_str!("../policies/default.toml"));
    for i in 0..97 {
        let condition = match i % 4 {
            0 => format!("model = [\"team-{i}-*\"]"),
            1 => format!("user = [\"bot-{i}-*\"]"),
            2 => format!("tags = [\"tag-{i}\"]"),
            _ => format!(
                "team = [\"team-{i}\"], time = {{ from = \"01:00\", to = \"01:01\", timezone = \"Europe/Kyiv\" }}"
            ),
        };
        policy
            .push_str(&format!("\n[[rules]]\nname = \"rule-{i}\"\nwhen = {{ {condition} }}\ntargets = [\"cheap\"]\n"));
    }
    policy.push_str("\n[[rules]]\nname = \"translate\"\nwhen = { last_user_message = \"(?i)^translate\" }\ntargets = [\"private\"]\n");
    policy.push_str("\n[[rules]]\nname = \"smart-for-tools\"\npriority = -1\nwhen = { needs = [\"tools\"] }\ntargets = [\"smart\"]\n");
    policy
}

fn planning(c: &mut Criterion) {
    let timeouts = UpstreamTimeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(1),
        stream_idle: Duration::from_secs(1),
    };
    // Keys make every cloud provider available, as in production.
    for key in ["OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GROQ_API_KEY"] {
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var(key, "sk-bench") };
    }
    let files: Vec<DataFile> =
        PROVIDERS.iter().map(|(name, text)| DataFile { path: (*name).into(), text: (*text).into() }).collect();
    let mut problems = Vec::new();
    let registry = Registry::new(catalog::parse_all(&files, timeouts, &mut problems));
    assert!(problems.is_empty(), "{problems:?}");
    let health = Arc::new(Health::default());
    let policy_files = [DataFile { path: "bench.toml".into(), text: hundred_rules() }];
    let policy = policy::compile(&policy_files, &registry, &health).expect("bench policy compiles");
    assert_eq!(policy.rules.len(), 102);
    let router = Router::new(policy, health, Arc::new(NoBudgets));
    let request = parse::chat_request(CHAT_BODY.replace("openai/gpt-5.6-luna", "auto").as_bytes()).unwrap();
    let caller = Caller { end_user: Some("user-42"), ..Caller::default() };

    let mut group = c.benchmark_group("routing");
    group.bench_function("plan against 100 rules", |b| {
        b.iter(|| {
            let input = RouteInput::chat(black_box(&request), &caller);
            router.plan(&registry, &input, None).expect("planned").attempts.len()
        })
    });
    let prompt = pii_prompt_8kb();
    let detector = PiiDetector::default();
    assert_eq!(detector.scan(&prompt).len(), 6, "the prompt holds six PII values");
    group.throughput(Throughput::Bytes(prompt.len() as u64));
    group.bench_function("PII scan 8 KB", |b| b.iter(|| detector.scan(black_box(&prompt)).len()));
    group.finish();
}

/// An 8 KB support request in mixed English and Ukrainian with six PII values (email, phone, card, IBAN, IPv4
/// address, API key) among ordinary numbers that must not match: dates, times, versions, prices, order numbers.
fn pii_prompt_8kb() -> String {
    const SIZE: usize = 8 * 1024;
    const WITH_PII: [&str; 6] = [
        "Hi team, this is Olena from the Kyiv office. Please reply to olena.kovalenko@example.com when you can.\n",
        "Якщо щось термінове, телефонуйте мені на +380 50 123 45 67 після 14:00 за київським часом.\n",
        "The refund should go to the card I used, 4111 1111 1111 1111, not to the company account.\n",
        "Для юридичної особи рахунок такий: UA21 3223 1300 0002 6007 2335 6600 1 (ПриватБанк).\n",
        "Our gateway runs at 10.20.30.40 behind the VPN, version 2.14.3 of the proxy.\n",
        "I accidentally pasted our key sk-proj-Xy7Qm2Lp9Rt4Vw8Zb3Nc6Hd1Jf5Kg0Ae in the previous ticket, \
         please rotate it.\n",
    ];
    const FILLER: [&str; 4] = [
        "On 2026-11-22 at 09:45 we noticed that order #48213 was charged twice: once for 1 299,99 грн and once for \
         $54.20. The invoice INV-2026-0042 shows version 3.1.4 of the billing service, and the retry happened at \
         10:15:30. We have 12 users on the Team plan and expect about 350 requests per minute at peak.\n",
        "Ми помітили, що звіт за жовтень формується дуже повільно: у середньому 45 секунд замість звичних 5. \
         Учора, 21.11.2026, було близько 1 500 запитів, і приблизно 3% з них завершилися помилкою 504. \
         Чи можете ви перевірити журнали за цей період і підказати, що саме змінилося після оновлення?\n",
        "Could you also explain how the rate limits work for the embeddings endpoint? The docs mention 3,000 RPM \
         and 1,000,000 TPM for tier 2, but we hit 429 errors at roughly 800 RPM. We batch 64 inputs per call, \
         each around 512 tokens, and run 4 workers in parallel from a single region (eu-central-1).\n",
        "Також хочу уточнити щодо договору: ми підписали його 15 березня, термін дії — 12 місяців, \
         оплата щомісяця до 5 числа. У рахунку за листопад сума 24 000 грн, хоча в договорі зазначено 20 000 грн \
         без ПДВ. Будь ласка, надішліть виправлений рахунок або поясніть різницю.\n",
    ];
    let mut prompt = String::with_capacity(SIZE + 512);
    // Each PII line sits between two filler paragraphs, so the values are spread through the prompt.
    for (index, line) in WITH_PII.iter().enumerate() {
        prompt.push_str(FILLER[index % FILLER.len()]);
        prompt.push_str(line);
    }
    let mut next_filler = WITH_PII.len();
    while prompt.len() < SIZE {
        prompt.push_str(FILLER[next_filler % FILLER.len()]);
        next_filler += 1;
    }
    let end = (0..=SIZE).rev().find(|&end| prompt.is_char_boundary(end)).unwrap_or(0);
    prompt.truncate(end);
    prompt
}

/// The audit log's share of a request: the record filled in as the pipeline does for a
/// routed chat completion, and journaled.
fn audit_record(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = Journal::open(dir.path()).expect("journal");
    let client_ip = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    c.bench_function("audit record: fill and journal", |b| {
        b.iter(|| {
            let mut record = AuditEntry::new("chat", "/v1/chat/completions", "req_ipnyCQXBJSuSJzHaV8tcO6ZN", client_ip);
            record.set(Field::KeyId("key_XwO3jCHYLtUzuuFXLDfxazF8"));
            record.set(Field::RequestedModel("bench/mock"));
            record.set(Field::Rule("default"));
            record.set(Field::Target("bench/mock"));
            record.set(Field::Attempts(1));
            record.set(Field::Status(200));
            record.set(Field::LatencyMs(1));
            record.set(Field::TtfbMs(1));
            record.set(Field::InputTokens(12));
            record.set(Field::OutputTokens(20));
            record.set(Field::CostUsd(0.0000138));
            record.set(Field::Outcome("completed"));
            journal.append(black_box(&record.finish())).expect("append");
        })
    });
}

criterion_group!(benches, parse_and_serialize, sse_forwarding, planning, audit_record);
criterion_main!(benches);
