"""An upstream MCP server nobody on this project wrote the framework of: the official SDK's
MCPServer (formerly FastMCP). Over stdio by default; `--http PORT` serves Streamable HTTP
at http://127.0.0.1:PORT/mcp. With UPSTREAM_PID_FILE set, it writes its pid there, so a
test can kill it."""

import os
import sys

from mcp.server import MCPServer

server = MCPServer("calculator")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Repeat the text."""
    return text


@server.tool(name="tell.time")
def tell_time_dotted() -> str:
    """A name with a dot, which the gateway must rename for clients."""
    return "noon"


@server.tool(name="tell_time")
def tell_time() -> str:
    """Collides with tell.time once that is renamed: the gateway must keep both apart."""
    return "twelve"


if __name__ == "__main__":
    pid_file = os.environ.get("UPSTREAM_PID_FILE")
    if pid_file:
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
