"""The official `mcp` Python SDK against the real gateway: what Claude Desktop, Cursor and
other MCP clients do. Run by tests/it/mcp.rs, which starts the gateway and the mock LLM.

Env: SWITCHYARD_MCP_URL (http://host:port/mcp), SWITCHYARD_API_KEY (a virtual key),
SWITCHYARD_BINARY and SWITCHYARD_STDIO_CONFIG plus SWITCHYARD_STDIO_KEY (for `switchyard mcp`
in-process), SWITCHYARD_GATEWAY_URL (for `switchyard mcp` relaying to the gateway).
"""

import asyncio
import os
import sys

import httpx2
from mcp import Client, StdioServerParameters

URL = os.environ["SWITCHYARD_MCP_URL"]
KEY = os.environ["SWITCHYARD_API_KEY"]
GATEWAY_TOOLS = {"chat", "list_models", "explain_route", "usage"}


def http(key):
    from mcp.client.streamable_http import streamable_http_client

    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    return streamable_http_client(URL, http_client=client)


async def exercise(client, label):
    tools = {tool.name for tool in (await client.list_tools()).tools}
    assert GATEWAY_TOOLS <= tools, f"{label}: tools {tools}"
    answer = await client.call_tool("chat", {"prompt": "Say hello", "model": "mockai/gpt-mock"})
    assert not answer.is_error, f"{label}: {answer}"
    assert answer.content[0].text == "Hello from the mock!", f"{label}: {answer}"
    assert answer.structured_content["target"] == "mockai/gpt-mock", f"{label}: {answer.structured_content}"
    models = await client.call_tool("list_models", {})
    assert "mockai/gpt-mock" in models.structured_content["models"], f"{label}: {models.structured_content}"
    # A model outside the key's allowed list: the tool reports the refusal, it does not crash.
    refused = await client.call_tool("chat", {"prompt": "hi", "model": "local/llama-mock"})
    assert refused.is_error and "may not use model" in refused.content[0].text, f"{label}: {refused}"
    print(f"{label}: ok ({client.protocol_version})")


async def main():
    async with Client(http(KEY)) as client:  # the current revision, via server/discover
        await exercise(client, "streamable HTTP, auto")
        assert client.protocol_version == "2026-07-28", client.protocol_version
        usage = await client.call_tool("usage", {})
        assert usage.structured_content["key"]["name"] == "mcp-test", usage.structured_content
    async with Client(http(KEY), mode="legacy") as client:  # initialize, 2025-11-25
        await exercise(client, "streamable HTTP, legacy")
        assert client.protocol_version == "2025-11-25", client.protocol_version

    try:
        async with Client(http("sk-sy-not-a-key")) as client:
            await client.list_tools()
        raise AssertionError("a bad key was accepted")
    except AssertionError:
        raise
    except Exception as error:  # the SDK raises on HTTP 401
        print(f"bad key rejected: {type(error).__name__}")

    params = StdioServerParameters(
        command=os.environ["SWITCHYARD_BINARY"],
        args=["mcp", "--config", os.environ["SWITCHYARD_STDIO_CONFIG"]],
        env={**os.environ, "SWITCHYARD_API_KEY": os.environ["SWITCHYARD_STDIO_KEY"]},
    )
    async with Client(params) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert GATEWAY_TOOLS <= tools, tools
        answer = await client.call_tool("chat", {"messages": [{"role": "user", "content": "Hi"}], "model": "mockai/gpt-mock"})
        assert answer.content[0].text == "Hello from the mock!", answer
        print(f"stdio: ok ({client.protocol_version})")

    # `switchyard mcp` relaying to this gateway (SWITCHYARD_URL), as the virtual key.
    relay = StdioServerParameters(
        command=os.environ["SWITCHYARD_BINARY"],
        args=["mcp"],
        env={**os.environ, "SWITCHYARD_URL": os.environ["SWITCHYARD_GATEWAY_URL"], "SWITCHYARD_API_KEY": KEY},
    )
    async with Client(relay) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert GATEWAY_TOOLS <= tools, tools
        answer = await client.call_tool("chat", {"prompt": "Hi", "model": "mockai/gpt-mock"})
        assert answer.content[0].text == "Hello from the mock!", answer
        refused = await client.call_tool("chat", {"prompt": "hi", "model": "local/llama-mock"})
        assert refused.is_error, refused
        print(f"stdio relay to the gateway: ok ({client.protocol_version})")
    print("all MCP checks passed")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as error:
        print(f"FAILED: {error!r}", file=sys.stderr)
        raise
