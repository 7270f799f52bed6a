"""A fast stub of an OpenAI-compatible server (vLLM's API shape), with no model behind it.

One aiohttp process on one port answers under any path prefix, so one stub can stand in for
many replicas: ``http://127.0.0.1:PORT/r17`` is a replica of its own to the gateway (its own
URL, client session and connections) and is served here as ``/r17/v1/...``.

    GET  <prefix>/v1/models                      lists --served-model-name
    GET  <prefix>/health                         200
    POST <prefix>/v1/completions                 streamed (SSE): one chunk per requested token
    POST <prefix>/v1/chat/completions            (max_tokens, default 16), then a usage chunk when
                                                 stream_options.include_usage, then [DONE];
                                                 not streamed: one JSON answer

No delay between chunks unless --itl-ms. ``--port-count N`` listens on N consecutive ports
from --port, so N replicas can each have an address (and connections) of their own. Used by
bench/gateway_overhead.py --replicas.

    python bench/stub_openai.py --port 9000 [--port-count 1] [--served-model-name cato-tiny] [--itl-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

DEFAULT_MAX_TOKENS = 16


def make_app(served: str, itl_s: float) -> web.Application:
    models = json.dumps(
        {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "stub", "max_model_len": 1 << 20}]}
    ).encode()
    counter = [0]

    def chunk(rid: str, created: int, chat: bool, text: str, finish: str | None, usage: dict | None) -> bytes:
        if chat:
            choices = [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}]
        else:
            choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}]
        obj = {
            "id": rid,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": served,
            "choices": choices if usage is None else [],
        }
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method == "GET":
            if path.endswith("/v1/models"):
                return web.Response(body=models, content_type="application/json")
            if path.endswith("/health"):
                return web.Response()
            return web.Response(status=404)
        chat = path.endswith("/v1/chat/completions")
        if request.method != "POST" or not (chat or path.endswith("/v1/completions")):
            return web.Response(status=404)
        try:
            body = json.loads(await request.read())
            n = int(body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)
        except (ValueError, TypeError):
            return web.Response(status=400, text="bad JSON or max_tokens")
        prompt = body.get("prompt", "")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else max(1, len(str(prompt)) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
        counter[0] += 1
        rid, created = f"cmpl-stub-{counter[0]}", int(time.time())
        if not body.get("stream"):
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": " tok" * n}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": " tok" * n, "logprobs": None, "finish_reason": "length"}
            )
            obj = "chat.completion" if chat else "text_completion"
            answer = {"id": rid, "object": obj, "created": created, "model": served, "choices": [choice]}
            return web.json_response({**answer, "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        for i in range(n):
            if itl_s:
                await asyncio.sleep(itl_s)
            await resp.write(chunk(rid, created, chat, " tok", "length" if i == n - 1 else None, None))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(chunk(rid, created, chat, "", None, usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application(client_max_size=1 << 24)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--port-count", type=int, default=1, help="listen on this many consecutive ports from --port")
    ap.add_argument("--served-model-name", default="cato-tiny")
    ap.add_argument("--itl-ms", type=float, default=0.0, help="delay before each token chunk")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(make_app(args.served_model_name, args.itl_ms / 1e3), args.host, args.port, args.port_count))


async def serve(app: web.Application, host: str, port: int, count: int) -> None:
    """Serve ``app`` on ``count`` consecutive ports from ``port`` until killed."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for p in range(port, port + count):
        await web.TCPSite(runner, host, p, backlog=4096).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    main()
