"""Upstream MCP servers through the gateway, driven by the official `mcp` SDK: their
tools aggregated as server__tool, filtered per key, a forbidden one refused, and a
crashed stdio server restarted while the others keep working. Run by tests/it/mcp.rs.

Env: SWITCHYARD_MCP_URL, SWITCHYARD_API_KEY (a key allowed `calc__*` only),
SWITCHYARD_MASTER_KEY, UPSTREAM_PID_FILE (the stdio server's pid).
"""

import asyncio
import os
import signal
import time

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

URL = os.environ["SWITCHYARD_MCP_URL"]


def connect(key):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=60))
    return Client(streamable_http_client(URL, http_client=client))


async def names(client):
    return [tool.name for tool in (await client.list_tools(cache_mode="refresh")).tools]


async def wait_for(client, name, present=True, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (name in await names(client)) == present:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} {'never appeared' if present else 'never went away'}")


async def main():
    async with connect(os.environ["SWITCHYARD_MASTER_KEY"]) as admin:
        await wait_for(admin, "calc__add")
        await wait_for(admin, "web__add")
        listed = await names(admin)
        upstream = [name for name in listed if "__" in name]
        assert upstream == sorted(upstream), f"a stable order: {listed}"
        assert "calc__tell_time" in listed and "calc__tell_time_2" in listed, listed
        dotted = await admin.call_tool("calc__tell_time", {})
        assert dotted.structured_content["result"] == "noon", dotted
        assert (await admin.call_tool("web__add", {"a": 40, "b": 2})).structured_content["result"] == 42

    async with connect(os.environ["SWITCHYARD_API_KEY"]) as client:
        listed = await names(client)
        assert "calc__add" in listed and "chat" in listed, listed
        assert not any(name.startswith("web__") for name in listed), f"web tools are not this key's: {listed}"
        result = await client.call_tool("calc__add", {"a": 2, "b": 3})
        assert result.structured_content["result"] == 5, result
        try:
            await client.call_tool("web__add", {"a": 1, "b": 1})
            raise AssertionError("a forbidden tool was called")
        except AssertionError:
            raise
        except Exception as error:
            assert "may not use tool" in str(error), error
        # rpm_per_key = 3 on calc: a key's fourth call to one tool within the minute is refused.
        for _ in range(3):
            assert not (await client.call_tool("calc__echo", {"text": "x"})).is_error
        limited = await client.call_tool("calc__echo", {"text": "x"})
        assert limited.is_error and "rate limit" in limited.content[0].text, limited
        print("upstream tools: aggregated, filtered, forbidden one refused, rate-limited per key and tool")

    async with connect(os.environ["SWITCHYARD_MASTER_KEY"]) as admin:
        with open(os.environ["UPSTREAM_PID_FILE"]) as f:
            first_pid = int(f.read())
        os.kill(first_pid, signal.SIGKILL)
        await wait_for(admin, "calc__add", present=False)
        down = await admin.call_tool("calc__add", {"a": 1, "b": 1})
        assert down.is_error, down
        assert (await admin.call_tool("web__echo", {"text": "still here"})).structured_content["result"] == "still here"
        await wait_for(admin, "calc__add", present=True)
        with open(os.environ["UPSTREAM_PID_FILE"]) as f:
            assert int(f.read()) != first_pid, "a new process"
        assert (await admin.call_tool("calc__add", {"a": 1, "b": 1})).structured_content["result"] == 2
        print("a killed stdio server came back; the others kept working")
    print("all upstream checks passed")


if __name__ == "__main__":
    asyncio.run(main())
