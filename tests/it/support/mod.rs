pub mod gateway;
pub mod mock;
pub mod services;

use serde_json::Value;

pub use gateway::{Gateway, MASTER_KEY, UPSTREAM_KEY};
pub use mock::MockUpstream;

/// A client that never retries, so each test sees exactly what the gateway answered.
pub fn client() -> reqwest::Client {
    switchyard::providers::install_tls_provider();
    reqwest::Client::builder().build().unwrap()
}

/// A started mock plus a gateway in front of it.
pub async fn setup() -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    (mock, gateway)
}

/// A started mock plus a gateway whose `policies/test.toml` is `policy`.
pub async fn setup_with_policy(policy: &str) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start_with_policy(&mock.url, policy);
    (mock, gateway)
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The chunks of a stream that completed: every `data:` event parsed, and the stream
    /// must end with `data: [DONE]`.
    pub fn stream_chunks(&self) -> Vec<Value> {
        let data = self.sse_data();
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "a stream must end with [DONE]: {data:?}");
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect()
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        self.text
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| {
                event.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE data event: {event:?}")).to_owned()
            })
            .collect()
    }
}

/// POSTs JSON with the master key and reads the whole answer.
pub async fn post(gateway: &Gateway, path: &str, body: &Value) -> Reply {
    send(client().post(format!("{}{path}", gateway.url)).bearer_auth(MASTER_KEY).body(body.to_string())).await
}

/// The first page of audit records (up to 1000), polled every 100 ms for up to a minute
/// until `done` says they are all there: the writer runs in the idle scheduling class,
/// so on a machine busy with other tests it may take a while. Returns the last page seen.
pub async fn audit_records_until(gateway: &Gateway, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut records = Vec::new();
    for _ in 0..600 {
        records = get(gateway, "/admin/audit?limit=1000").await.json()["data"].as_array().cloned().unwrap_or_default();
        if done(&records) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    records
}

pub async fn get(gateway: &Gateway, path: &str) -> Reply {
    send(client().get(format!("{}{path}", gateway.url)).bearer_auth(MASTER_KEY)).await
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request to the gateway");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply { status, headers, text }
}

/// Asserts OpenAI's error envelope and returns its `error` object.
pub fn error_of(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "unexpected status; body: {}", reply.text);
    let body = reply.json();
    let error = body["error"].clone();
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "error envelope lacks `{key}`: {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    error
}
