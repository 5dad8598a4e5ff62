//! Table-driven tests of the planner: every condition, action and strategy, over a
//! registry built from catalog text, plus a property test of `local_only`.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::explain::Trace;
use super::health::Health;
use super::policy::{self, Privacy};
use super::{BudgetView, Caller, NoBudgets, Plan, RouteInput, Router, RoutingError};
use crate::config::{DataFile, UpstreamTimeouts};
use crate::protocol::ChatCompletionRequest;
use crate::providers::{Registry, catalog};

const CLOUD: &str = r#"
id = "cloud"
wire = "openai"
base_url = "http://127.0.0.1:9/v1"
[[models]]
id = "big"
context_window = 128000
max_output_tokens = 4096
input_price = 2.0
output_price = 8.0
capabilities = ["tools", "json_schema", "vision", "streaming"]
[[models]]
id = "small"
context_window = 1000
max_output_tokens = 500
input_price = 0.1
output_price = 0.4
capabilities = ["tools", "streaming"]
[[models]]
id = "plain"
context_window = 8000
max_output_tokens = 1000
input_price = 0.05
output_price = 0.1
capabilities = ["streaming"]
"#;

const HOME: &str = r#"
id = "home"
wire = "ollama"
base_url = "http://127.0.0.1:9"
locality = "local"
[[models]]
id = "llama"
context_window = 8000
max_output_tokens = 2000
input_price = 0.0
output_price = 0.0
capabilities = ["tools", "streaming"]
[[models]]
id = "embed"
context_window = 8000
max_output_tokens = 0
input_price = 0.0
output_price = 0.0
capabilities = ["embeddings"]
"#;

fn registry() -> Registry {
    let files = [
        DataFile { path: "cloud.toml".into(), text: CLOUD.into() },
        DataFile { path: "home.toml".into(), text: HOME.into() },
    ];
    let timeouts = UpstreamTimeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(1),
        stream_idle: Duration::from_secs(1),
    };
    let mut problems = Vec::new();
    let specs = catalog::parse_all(&files, timeouts, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    Registry::new(specs)
}

struct Setup {
    registry: Registry,
    router: Router,
}

fn setup_with(policy_text: &str, budgets: Arc<dyn BudgetView>) -> Setup {
    let registry = registry();
    let health = Arc::new(Health::default());
    let files = [DataFile { path: "p.toml".into(), text: policy_text.into() }];
    let policy = match policy::compile(&files, &registry, &health) {
        Ok(policy) => policy,
        Err(problems) => panic!("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
    };
    Setup { registry, router: Router::new(policy, health, budgets) }
}

fn setup(policy_text: &str) -> Setup {
    setup_with(policy_text, Arc::new(NoBudgets))
}

fn request(body: Value) -> ChatCompletionRequest {
    serde_json::from_value(body).unwrap()
}

fn chat(model: &str, text: &str) -> ChatCompletionRequest {
    request(json!({"model": model, "messages": [{"role": "user", "content": text}]}))
}

impl Setup {
    fn plan(&self, request: &ChatCompletionRequest, caller: &Caller) -> Result<Plan, RoutingError> {
        self.router.plan(&self.registry, &RouteInput::chat(request, caller), None)
    }

    fn targets(&self, request: &ChatCompletionRequest, caller: &Caller) -> Vec<String> {
        match self.plan(request, caller) {
            Ok(plan) => plan.attempts.iter().map(|t| t.name()).collect(),
            Err(error) => vec![format!("error {}: {error}", error.status())],
        }
    }

    /// The rule that decides, whether or not the plan then succeeds.
    fn rule(&self, request: &ChatCompletionRequest, caller: &Caller) -> String {
        let mut trace = Trace::default();
        let _ = self.router.plan(&self.registry, &RouteInput::chat(request, caller), Some(&mut trace));
        trace.matched_rule.unwrap_or_else(|| "default".into())
    }
}

#[test]
fn every_condition_matches_and_misses() {
    let s = setup(
        r#"
[[rules]]
name = "model"
when = { model = ["fancy-*"] }
[[rules]]
name = "key"
when = { key = ["key-1"] }
[[rules]]
name = "team"
when = { team = ["research"] }
[[rules]]
name = "user"
when = { user = ["tg-*"] }
[[rules]]
name = "tags"
when = { tags = ["batch"] }
[[rules]]
name = "long"
when = { prompt_tokens = { min = 200 } }
[[rules]]
name = "vision"
when = { needs = ["vision"] }
[[rules]]
name = "tools"
when = { needs = ["tools"] }
[[rules]]
name = "schema"
when = { needs = ["json_schema"] }
[[rules]]
name = "iban"
when = { pii = ["iban"] }
[[rules]]
name = "any-pii"
when = { pii = "any" }
[[rules]]
name = "always"
when = { time = { from = "00:00", to = "23:59:59", timezone = "Europe/Kyiv" } }
[[rules]]
name = "never"
when = { time = { from = "00:00", to = "00:00" } }
[[rules]]
name = "regex"
when = { last_user_message = "(?i)^переклади" }
"#,
    );
    let none = Caller::default();
    let plain = chat("cloud/big", "hello");
    let cases: Vec<(ChatCompletionRequest, Caller, &str)> = vec![
        (chat("fancy-model", "hi"), Caller::default(), "model"),
        (plain.clone(), Caller { key_id: Some("key-1"), ..Caller::default() }, "key"),
        (plain.clone(), Caller { team: Some("research"), ..Caller::default() }, "team"),
        (plain.clone(), Caller { end_user: Some("tg-42"), ..Caller::default() }, "user"),
        (
            request(json!({"model": "cloud/big", "user": "tg-7", "messages": [{"role": "user", "content": "hi"}]})),
            Caller::default(),
            "user",
        ),
        (plain.clone(), Caller { tags_header: Some("nightly, batch"), ..Caller::default() }, "tags"),
        (
            request(
                json!({"model": "cloud/big", "metadata": {"tags": "batch"}, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            Caller::default(),
            "tags",
        ),
        (chat("cloud/big", &"word ".repeat(300)), Caller::default(), "long"),
        (
            request(json!({"model": "cloud/big", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]})),
            Caller::default(),
            "vision",
        ),
        (
            request(
                json!({"model": "cloud/big", "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [{"role": "user", "content": "hi"}]}),
            ),
            Caller::default(),
            "tools",
        ),
        (
            request(
                json!({"model": "cloud/big", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, "messages": [{"role": "user", "content": "hi"}]}),
            ),
            Caller::default(),
            "schema",
        ),
        (chat("cloud/big", "pay to DE89 3704 0044 0532 0130 00"), Caller::default(), "iban"),
        (chat("cloud/big", "write to me@example.org"), Caller::default(), "any-pii"),
        (plain.clone(), Caller::default(), "always"),
    ];
    for (request, caller, expected) in &cases {
        assert_eq!(s.rule(request, caller), *expected, "{:?}", request.messages[0].content);
    }
    // The `never` window is empty and the regex rule comes after `always`: check them in
    // a policy of their own.
    let s = setup(
        r#"
[[rules]]
name = "never"
when = { time = { from = "00:00", to = "00:00" } }
[[rules]]
name = "regex"
when = { last_user_message = "(?i)^переклади" }
"#,
    );
    assert_eq!(s.rule(&chat("cloud/big", "Переклади: hello"), &none), "regex");
    assert_eq!(s.rule(&chat("cloud/big", "hello"), &none), "default");
}

#[test]
fn priority_orders_rules_and_first_match_wins() {
    let s = setup(
        r#"
[[rules]]
name = "low"
priority = 1
[[rules]]
name = "high"
priority = 5
when = { model = ["cloud/*"] }
[[rules]]
name = "also-high-but-later"
priority = 5
"#,
    );
    assert_eq!(s.rule(&chat("cloud/big", "x"), &Caller::default()), "high");
    assert_eq!(s.rule(&chat("home/llama", "x"), &Caller::default()), "also-high-but-later");
}

#[test]
fn actions_reject_block_cap_and_route() {
    let s = setup(
        r#"
[[rules]]
name = "teams-only"
when = { user = ["banned"] }
reject = { status = 403, message = "no" }
[[rules]]
name = "secrets"
when = { pii = ["secret"] }
privacy = "block"
[[rules]]
name = "capped"
when = { model = ["capped"] }
targets = ["cloud/small"]
max_tokens = 64
[[rules]]
name = "redacted"
when = { pii = ["email"] }
privacy = "redact"
"#,
    );
    let banned = Caller { end_user: Some("banned"), ..Caller::default() };
    assert!(matches!(s.plan(&chat("cloud/big", "x"), &banned), Err(RoutingError::Rejected { status: 403, .. })));
    match s.plan(&chat("cloud/big", "AKIAIOSFODNN7EXAMPLE"), &Caller::default()) {
        Err(RoutingError::PiiBlocked { classes, .. }) => assert_eq!(classes, ["secret"]),
        other => panic!("{:?}", other.map(|p| p.rule)),
    }
    let plan = s.plan(&chat("capped", "x"), &Caller::default()).unwrap();
    assert_eq!((plan.max_tokens, plan.attempts[0].name()), (Some(64), "cloud/small".into()));
    let plan = s.plan(&chat("cloud/big", "mail me@example.org"), &Caller::default()).unwrap();
    assert_eq!(plan.privacy, Some(Privacy::Redact));
    assert!(plan.redacts());
}

#[test]
fn strategies_order_candidates() {
    let s = setup(
        r#"
[aliases.chain]
targets = ["cloud/big", "cloud/small", "home/llama"]
[aliases.cheap]
targets = ["cloud/big", "cloud/small", "cloud/plain"]
strategy = "cheapest"
[aliases.fast]
targets = ["cloud/big", "cloud/small", "cloud/plain"]
strategy = "fastest"
[aliases.idle]
targets = ["cloud/big", "cloud/small"]
strategy = "least_busy"
[aliases.split]
targets = ["cloud/big", "cloud/small"]
strategy = "weighted"
weights = [90, 10]
"#,
    );
    let none = Caller::default();
    assert_eq!(s.targets(&chat("chain", "x"), &none), ["cloud/big", "cloud/small", "home/llama"]);
    assert_eq!(s.targets(&chat("cheap", "x"), &none), ["cloud/plain", "cloud/small", "cloud/big"]);
    // Capabilities filter: only big and small have tools.
    let tools = request(
        json!({"model": "cheap", "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(s.targets(&tools, &none), ["cloud/small", "cloud/big"]);
    // Context window: small takes 1000 tokens in all.
    assert_eq!(s.targets(&chat("cheap", &"word ".repeat(900)), &none), ["cloud/plain", "cloud/big"]);

    let deployment = |name: &str| s.router.health.deployment(name, None);
    let settings = s.router.policy().breaker;
    deployment("cloud/big").record(true, Duration::from_millis(50), &settings);
    deployment("cloud/small").record(true, Duration::from_millis(500), &settings);
    assert_eq!(s.targets(&chat("fast", "x"), &none), ["cloud/plain", "cloud/big", "cloud/small"], "unmeasured first");

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _busy = rt.block_on(deployment("cloud/big").acquire()).unwrap();
    assert_eq!(s.targets(&chat("idle", "x"), &none), ["cloud/small", "cloud/big"]);

    // Weighted: sticky per end user, and close to the weights over many users.
    let mut big = 0;
    for user in 0..1000 {
        let user = format!("user-{user}");
        let caller = Caller { end_user: Some(&user), ..Caller::default() };
        let first = s.targets(&chat("split", "x"), &caller);
        assert_eq!(first, s.targets(&chat("split", "x"), &caller), "sticky");
        assert_eq!(first.len(), 2, "the other target stays as a fallback");
        big += usize::from(first[0] == "cloud/big");
    }
    assert!((850..=950).contains(&big), "{big} of 1000 on the 90% target");
}

struct HalfSpent;

impl BudgetView for HalfSpent {
    fn spent_fraction(&self, key_id: Option<&str>) -> Option<f64> {
        (key_id == Some("spender")).then_some(0.9)
    }
}

#[test]
fn budget_downgrade_moves_to_the_cheaper_route() {
    let s = setup_with(
        r#"
[aliases.cheap]
targets = ["cloud/plain"]
[[rules]]
name = "smart"
when = { model = ["smart"] }
targets = ["cloud/big"]
downgrade = { budget_spent_percent = 80, to = ["cheap"] }
"#,
        Arc::new(HalfSpent),
    );
    let spender = Caller { key_id: Some("spender"), ..Caller::default() };
    assert_eq!(s.targets(&chat("smart", "x"), &Caller::default()), ["cloud/big"]);
    assert_eq!(s.targets(&chat("smart", "x"), &spender), ["cloud/plain"]);
}

#[test]
fn explain_records_every_step() {
    let s = setup("[[rules]]\nname = \"r\"\nwhen = { model = [\"nope\"] }\n");
    let request = chat("cloud/big", "mail me@example.org");
    let mut trace = Trace::default();
    s.router.plan(&s.registry, &RouteInput::chat(&request, &Caller::default()), Some(&mut trace)).unwrap();
    assert_eq!(trace.rules[0].reason.as_deref(), Some("the requested model is not in `when.model`"));
    assert_eq!(trace.pii_found, ["email"]);
    assert_eq!(trace.plan, ["cloud/big"]);
    assert!(trace.candidates[0].expected_cost_usd.unwrap() > 0.0);
}

#[test]
fn compile_errors_point_at_the_problem() {
    let registry = registry();
    let health = Health::default();
    let cases = [
        ("[aliases.a]\ntargets = [\"nowhere/x\"]\n", "p.toml:2:12: no provider is called \"nowhere\""),
        ("[aliases.a]\ntargets = [\"b\"]\n[aliases.b]\ntargets = [\"a\"]\n", "refers to itself"),
        ("[[rules]]\nname = \"r\"\nwhen = { pii = [\"dna\"] }\n", "unknown PII class \"dna\""),
        ("[[rules]]\nname = \"r\"\nwhen = { time = { from = \"25:00\", to = \"01:00\" } }\n", "HH:MM"),
        (
            "[[rules]]\nname = \"r\"\nwhen = { time = { from = \"01:00\", to = \"02:00\", timezone = \"Mars/Base\" } }\n",
            "time zone",
        ),
        ("[[rules]]\nname = \"r\"\nwhen = { last_user_message = \"(\" }\n", "not a valid regex"),
        ("[[rules]]\nname = \"r\"\n[[rules]]\nname = \"r\"\n", "used twice"),
        (
            "[aliases.a]\ntargets = [\"cloud/big\", \"cloud/*\"]\nstrategy = \"weighted\"\nweights = [1, 1]\n",
            "must name one",
        ),
        ("[[rules]]\nname = \"r\"\nreject = { status = 200, message = \"x\" }\n", "not 4xx/5xx"),
    ];
    for (text, expected) in cases {
        let files = [DataFile { path: "p.toml".into(), text: text.into() }];
        let problems = policy::compile(&files, &registry, &health).err().unwrap_or_default();
        let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(rendered.iter().any(|p| p.contains(expected)), "{text}\n{rendered:?}");
    }
}

const WORDS: &[&str] =
    &["hello", "привіт", "please", "summarise", "звіт", "the", "report", "дякую", "42", "2026-11-22"];
const PII: &[&str] = &[
    "olena@example.com",
    "+380 50 123 45 67",
    "4111 1111 1111 1111",
    "UA21 3223 1300 0002 6007 2335 6600 1",
    "192.168.10.7",
    "sk-proj-Abcdefghijklmnopqrstuvwxyz012345",
];
const MODELS: &[&str] = &["cloud/big", "cloud/small", "cloud/plain", "home/llama", "anywhere", "private", "fancy"];

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![4 => prop::sample::select(WORDS), 1 => prop::sample::select(PII)], 0..12)
        .prop_map(|words| words.join(" "))
}

/// Built once: the property runs hundreds of cases.
static LOCAL_ONLY: std::sync::LazyLock<Setup> = std::sync::LazyLock::new(|| {
    setup(
        r#"
[aliases.anywhere]
targets = ["cloud/*", "home/*"]
strategy = "cheapest"
[aliases.private]
targets = ["home/llama"]
[[rules]]
name = "private"
when = { model = ["private"] }
privacy = "local_only"
targets = ["private", "cloud/big"]
[[rules]]
name = "pii"
when = { pii = "any" }
privacy = "local_only"
"#,
    )
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Under `local_only`, whatever the request, the plan never holds a cloud target.
    #[test]
    fn local_only_never_plans_a_cloud_target(
        model in prop::sample::select(MODELS),
        texts in prop::collection::vec(text_strategy(), 1..4),
        tools in any::<bool>(),
        user in prop::option::of("[a-z]{1,6}"),
    ) {
        let s = &*LOCAL_ONLY;
        let mut body = json!({"model": model, "messages": texts.iter().map(|t| json!({"role": "user", "content": t})).collect::<Vec<_>>()});
        if tools {
            body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        }
        let request = request(body);
        let caller = Caller { end_user: user.as_deref(), ..Caller::default() };
        let input = RouteInput::chat(&request, &caller);
        let has_pii = !input.pii_classes(&s.router.policy().detector).is_empty();
        if let Ok(plan) = s.router.plan(&s.registry, &input, None)
            && (has_pii || model == "private")
        {
            prop_assert_eq!(plan.privacy, Some(Privacy::LocalOnly));
            for target in &plan.attempts {
                prop_assert!(target.is_local(), "{} planned for {model}", target.name());
            }
        }
    }
}
