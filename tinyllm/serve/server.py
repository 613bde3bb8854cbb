"""An OpenAI-compatible HTTP server (FastAPI + uvicorn) on the continuous-batching engine.

Routes, in OpenAI's request and response shapes (what vLLM's server answers):

    GET  /v1/models                 the one served model
    POST /v1/completions            prompt -> text; stream=true sends server-sent events
    POST /v1/chat/completions       messages -> assistant message (a plain chat template:
                                    "role: content" lines, then "assistant:")

Parameters: max_tokens, temperature, top_p, stop (str or list), n (one prefill, samples
forked copy-on-write), seed, stream, frequency_penalty, presence_penalty, and on
/v1/completions ``logprobs`` = k (OpenAI's legacy object per choice or streamed chunk:
tokens, token_logprobs, top_logprobs of the k likeliest tokens, text_offset; log
probabilities of the model's distribution, before temperature and truncation, as vLLM
reports them by default); ``usage`` counts prompt and completion tokens.
Malformed requests get 400 with a message, an unknown model 404, a prompt plus max_tokens
over the context length 400. One engine thread runs ``LLMEngine.step()`` while requests are
pending; each HTTP request waits on its own queue, so many clients share every batch.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations at runtime

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable

from tinyllm.serve.engine import LLMEngine, SamplingParams


class EngineThread:
    """Runs the engine in a background thread; results go to per-request asyncio queues."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.lock = threading.Condition()
        self.queues: dict = {}
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="tinyllm-engine")
        self.thread.start()

    def submit(self, prompt, params, loop) -> list[asyncio.Queue]:
        """Queue a request of ``params.n`` samples; one asyncio queue per sample."""
        with self.lock:
            rid = self.engine.add_request(prompt, params)  # raises ValueError on bad input
            queues = []
            for req in self.engine.samples(rid):
                queue: asyncio.Queue = asyncio.Queue()
                self.queues[req.id] = (queue, loop)
                queues.append(queue)
            self.lock.notify()
        return queues

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.stop and not self.engine.has_unfinished():
                    self.lock.wait()
                if self.stop:
                    return
                try:
                    outs = self.engine.step()
                    error = None
                except Exception as exc:  # noqa: BLE001 - reported to every waiting client
                    outs, error = [], exc
                items = []
                for req in outs:
                    queue, loop = self.queues[req.id]
                    lp = req.logprobs[-1] if req.logprobs else None  # this step's token
                    items.append((queue, loop, (req.new_text, req.finished, req.finish_reason,
                                                lp)))  # fmt: skip
                    if req.finished:
                        del self.queues[req.id]
                        del self.engine.requests[req.id]
                if error is not None:
                    for queue, loop in self.queues.values():
                        items.append((queue, loop, error))
                    self.queues.clear()
            for queue, loop, item in items:
                loop.call_soon_threadsafe(queue.put_nowait, item)

    def shutdown(self) -> None:
        with self.lock:
            self.stop = True
            self.lock.notify()
        self.thread.join(timeout=5)


MAX_LOGPROBS = 20  # vLLM's default max_logprobs (OpenAI's legacy API allowed 5)


def logprobs_block(entries, token_text: Callable[[int], str], offset: int = 0) -> dict:
    """OpenAI's legacy completions ``logprobs`` object for (token, logprob, top) entries;
    text offsets are character positions in the completion text, from ``offset``."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, lp, top in entries:
        text = token_text(token)
        out["tokens"].append(text)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append({token_text(i): v for i, v in top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


class BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def _number(body, name, default, lo, hi, kind=float):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise BadRequest(
            400, f"'{name}' must be a {'number' if kind is float else 'integer'}", name
        )
    if not lo <= value <= hi:
        raise BadRequest(400, f"'{name}' must be in [{lo}, {hi}], got {value}", name)
    return kind(value)


def parse_params(body: dict, max_len: int) -> tuple[SamplingParams, int]:
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest(400, "'stop' must be a non-empty string or a list of them", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(400, "'seed' must be an integer", "seed")
    n = _number(body, "n", 1, 1, 16, int)
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                 or not 0 <= logprobs <= MAX_LOGPROBS):  # fmt: skip
        raise BadRequest(400, f"'logprobs' must be an integer in [0, {MAX_LOGPROBS}] "
                         "(/v1/completions; chat logprobs are not supported)",
                         "logprobs")  # fmt: skip
    params = SamplingParams(
        max_tokens=_number(body, "max_tokens", 16, 1, max_len, int),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        stop=stop,
        seed=seed,
        logprobs=logprobs,
    )
    return params, n


def chat_prompt(messages) -> str:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "'messages' must be a non-empty list", "messages")
    lines = []
    for m in messages:
        roles = ("system", "user", "assistant")
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("content"), str)
            or m.get("role") not in roles
        ):
            raise BadRequest(400, "each message needs a role (system|user|assistant) and "
                             "string content", "messages")  # fmt: skip
        lines.append(f"{m['role']}: {m['content']}\n")
    return "".join(lines) + "assistant:"


def build_app(engine: LLMEngine, model_name: str, encode: Callable[[str], list[int]]):
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    runner: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        runner["engine"] = EngineThread(engine)
        yield
        runner["engine"].shutdown()  # Ctrl-C: uvicorn ends the lifespan, the thread stops

    app = FastAPI(title="tinyllm", lifespan=lifespan)

    def error(status, message, param=None):
        kind = "invalid_request_error" if status == 400 else "not_found_error"
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": param, "code": None}},
            status_code=status,
        )

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "tinyllm",
             "max_model_len": engine.max_len}]}  # fmt: skip

    async def handle(request: Request, chat: bool):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "the request body is not valid JSON")
        try:
            if not isinstance(body, dict):
                raise BadRequest(400, "the request body must be a JSON object")
            if "model" not in body:
                raise BadRequest(400, "'model' is required", "model")
            if body["model"] != model_name:
                raise BadRequest(404, f"The model '{body['model']}' does not exist", "model")
            if chat:
                if body.get("logprobs"):
                    raise BadRequest(400, "'logprobs' is supported on /v1/completions only",
                                     "logprobs")  # fmt: skip
                body = {k: v for k, v in body.items() if k not in ("logprobs", "top_logprobs")}
                text = chat_prompt(body.get("messages"))
            else:
                text = body.get("prompt")
                if isinstance(text, list) and len(text) == 1:
                    text = text[0]
                if not isinstance(text, str) or not text:
                    raise BadRequest(400, "'prompt' must be a non-empty string", "prompt")
            params, n = parse_params(body, engine.max_len)
            prompt = encode(text)
            if len(prompt) + params.max_tokens > engine.max_len:
                raise BadRequest(400, f"This model's maximum context length is {engine.max_len}"
                                 f" tokens; the prompt has {len(prompt)} and max_tokens is "
                                 f"{params.max_tokens}", "max_tokens")  # fmt: skip
            loop = asyncio.get_running_loop()
            # n samples as one group: the prompt is prefilled once and shared copy-on-write;
            # sample i draws from seed + i when a seed is given
            p = SamplingParams(**{**params.__dict__, "n": n, "stop": list(params.stop)})
            subs = runner["engine"].submit(prompt, p, loop)
        except BadRequest as exc:
            return error(exc.status, exc.message, exc.param)
        except ValueError as exc:
            return error(400, str(exc))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        want_logprobs = params.logprobs is not None
        if body.get("stream"):
            return StreamingResponse(
                stream(subs, rid, created, chat, want_logprobs), media_type="text/event-stream"
            )
        choices, completion_tokens = [], 0
        for i, queue in enumerate(subs):
            text, reason, count, entries = "", None, 0, []
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    return error(500, f"engine error: {item}")
                piece, done, finish, lp = item
                text, count = text + piece, count + 1
                if lp is not None:
                    entries.append(lp)
                if done:
                    reason = finish
                    break
            completion_tokens += count
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text},
                                "finish_reason": reason, "logprobs": None})  # fmt: skip
            else:
                lps = logprobs_block(entries, token_text) if want_logprobs else None
                choices.append({"index": i, "text": text, "finish_reason": reason,
                                "logprobs": lps})  # fmt: skip
        usage = {"prompt_tokens": len(prompt), "completion_tokens": completion_tokens,
                 "total_tokens": len(prompt) + completion_tokens}  # fmt: skip
        return {"id": rid, "object": obj, "created": created, "model": model_name,
                "choices": choices, "usage": usage}  # fmt: skip

    def token_text(token: int) -> str:
        """The token's text, or OpenAI's "bytes:\\xNN" form for a part of a UTF-8 character
        (distinct tokens keep distinct keys in top_logprobs)."""
        raw = engine.token_bytes(token)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    async def stream(subs, rid, created, chat, want_logprobs):
        obj = "chat.completion.chunk" if chat else "text_completion"
        offsets = [0] * len(subs)  # per sample: characters of token text streamed so far

        def chunk(i, piece, finish, lp=None):
            if chat:
                delta = {"content": piece} if piece is not None else {"role": "assistant"}
                choice = {"index": i, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                lps = None
                if want_logprobs and lp is not None:
                    lps = logprobs_block([lp], token_text, offsets[i])
                    offsets[i] += len(lps["tokens"][0])
                choice = {"index": i, "text": piece or "", "finish_reason": finish,
                          "logprobs": lps}  # fmt: skip
            data = {"id": rid, "object": obj, "created": created, "model": model_name,
                    "choices": [choice]}  # fmt: skip
            return f"data: {json.dumps(data)}\n\n"

        if chat:
            for i in range(len(subs)):
                yield chunk(i, None, None)
        pending = {i: asyncio.ensure_future(q.get()) for i, q in enumerate(subs)}
        while pending:
            done, _ = await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
            for i, fut in list(pending.items()):
                if fut not in done:
                    continue
                item = fut.result()
                if isinstance(item, Exception):
                    yield f"data: {json.dumps({'error': {'message': str(item)}})}\n\n"
                    return
                piece, finished, reason, lp = item
                if piece or finished or (want_logprobs and lp is not None):
                    yield chunk(i, piece, reason if finished else None, lp)
                if finished:
                    del pending[i]
                else:
                    pending[i] = asyncio.ensure_future(subs[i].get())
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    return app
