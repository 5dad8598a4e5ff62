"""Drives switchyard with the official `openai` Python SDK, the way users' programs do.

Run by tests/it/python_sdk.rs against the real binary and a mock upstream; expects
SWITCHYARD_BASE_URL (ending in /v1) and SWITCHYARD_API_KEY.
"""

import json
import os
import sys
import urllib.request

import openai
from openai import OpenAI

BASE_URL = os.environ["SWITCHYARD_BASE_URL"]
API_KEY = os.environ["SWITCHYARD_API_KEY"]
REPLY = "Hello from the mock!"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]
EXPECTED_CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]
MESSAGES = [{"role": "user", "content": "Hi"}]

client = OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20)


def check_chat(model):
    completion = client.chat.completions.create(model=model, messages=MESSAGES)
    assert completion.choices[0].message.content == REPLY, completion
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 17, completion.usage


def check_stream(model):
    text = ""
    usage = None
    with client.chat.completions.create(model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
    assert text == REPLY, text
    assert usage is not None and usage.completion_tokens == 5, usage


def check_tool_calls(model):
    completion = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS)
    calls = completion.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == EXPECTED_CALLS, calls
    assert completion.choices[0].finish_reason == "tool_calls"


def check_streamed_tool_calls(model):
    # The SDK's own accumulator merges deltas by index, concatenating strings: any repeated
    # id or name would show up here as "call_w1call_w1".
    with client.chat.completions.stream(model=model, messages=MESSAGES, tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == EXPECTED_CALLS, calls
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls), calls


def check_embeddings(model):
    # No encoding_format: the SDK asks for base64 and decodes it itself.
    response = client.embeddings.create(model=model, input=["alpha", "beta"])
    assert [d.embedding for d in response.data] == [[0.5, -1.0, 0.25], [1.5, -1.0, 0.25]], response
    response = client.embeddings.create(model=model, input="alpha", encoding_format="float")
    assert response.data[0].embedding == [0.5, -1.0, 0.25]


def check_models():
    ids = [m.id for m in client.models.list()]
    assert "mockai/gpt-mock" in ids and "local/llama-mock" in ids, ids
    assert client.models.retrieve("mockai/gpt-mock").id == "mockai/gpt-mock"


def expect(error_class, call, status):
    try:
        call()
    except error_class as error:
        assert error.status_code == status, (error.status_code, error)
        assert error.request_id, "x-request-id is exposed to the SDK"
        return error
    raise AssertionError(f"expected {error_class.__name__}")


def check_errors():
    bad_key = OpenAI(base_url=BASE_URL, api_key="sk-wrong", max_retries=0)
    expect(openai.AuthenticationError, lambda: bad_key.chat.completions.create(model="gpt-mock", messages=MESSAGES), 401)
    expect(openai.NotFoundError, lambda: client.chat.completions.create(model="no-such-model", messages=MESSAGES), 404)
    error = expect(openai.BadRequestError, lambda: client.chat.completions.create(model="gpt-mock", messages=MESSAGES, temperature="hot"), 400)
    assert error.param == "temperature", error.param
    expect(openai.BadRequestError, lambda: client.chat.completions.create(model="gpt-mock", messages=[]), 400)
    error = expect(openai.RateLimitError, lambda: client.chat.completions.create(model="mockai/fail-429", messages=MESSAGES), 429)
    assert error.code == "rate_limit_exceeded", error.code
    # A failure after the stream started reaches the SDK as an APIError, not silent truncation.
    try:
        for _ in client.chat.completions.create(model="mockai/error-mid-stream", messages=MESSAGES, stream=True):
            pass
    except openai.APIError as error:
        assert "crashed" in error.message, error.message
    else:
        raise AssertionError("a failed stream must raise")


def create_key(definition):
    """A virtual key, made with the master key through /admin/keys."""
    request = urllib.request.Request(
        BASE_URL.removesuffix("/v1") + "/admin/keys",
        data=json.dumps(definition).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["key"]


def check_virtual_key_limits():
    key = create_key({"name": "sdk", "limits": {"rpm": 2}})
    limited = OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, timeout=20)
    raw = limited.chat.completions.with_raw_response.create(model="mockai/gpt-mock", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "2", dict(raw.headers)
    assert raw.headers["x-ratelimit-remaining-requests"] == "1", dict(raw.headers)
    assert raw.parse().choices[0].message.content == REPLY
    limited.chat.completions.create(model="mockai/gpt-mock", messages=MESSAGES)
    error = expect(openai.RateLimitError, lambda: limited.chat.completions.create(model="mockai/gpt-mock", messages=MESSAGES), 429)
    assert error.code == "rate_limit_exceeded", error.code
    assert int(error.response.headers["retry-after"]) > 0, dict(error.response.headers)

    budgeted = OpenAI(base_url=BASE_URL, max_retries=0, timeout=20,
                      api_key=create_key({"name": "sdk-budget", "budgets": [{"amount": 20, "unit": "tokens", "period": "day"}]}))
    budgeted.chat.completions.create(model="mockai/gpt-mock", messages=MESSAGES, max_tokens=5)
    error = expect(openai.RateLimitError, lambda: budgeted.chat.completions.create(model="mockai/gpt-mock", messages=MESSAGES, max_tokens=5), 429)
    assert error.code == "insufficient_quota", error.code


CHECKS = [
    ("chat via openai wire", lambda: check_chat("mockai/gpt-mock")),
    ("chat via ollama wire", lambda: check_chat("local/llama-mock")),
    ("stream via openai wire", lambda: check_stream("mockai/gpt-mock")),
    ("stream via ollama wire", lambda: check_stream("local/llama-mock")),
    ("tool calls via openai wire", lambda: check_tool_calls("mockai/gpt-mock")),
    ("tool calls via ollama wire", lambda: check_tool_calls("local/llama-mock")),
    ("streamed tool calls via openai wire", lambda: check_streamed_tool_calls("mockai/gpt-mock")),
    ("streamed tool calls via ollama wire", lambda: check_streamed_tool_calls("local/llama-old")),
    ("embeddings via openai wire", lambda: check_embeddings("mockai/embed-mock")),
    ("embeddings via ollama wire", lambda: check_embeddings("local/embed-local")),
    ("models list and retrieve", check_models),
    ("errors map to SDK exceptions", check_errors),
    ("virtual key limits and budgets", check_virtual_key_limits),
]

failed = 0
for name, check in CHECKS:
    try:
        check()
        print(f"ok   {name}")
    except Exception as error:  # report every failing check, not just the first
        failed += 1
        print(f"FAIL {name}: {type(error).__name__}: {error}")
print(f"openai {openai.__version__}: {len(CHECKS) - failed} passed, {failed} failed")
if failed:
    sys.exit(1)
print("all SDK checks passed")
