"""`tinyllm serve` on a free port, talked to with the official `openai` client."""

import codecs
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_run):
    run = tiny_run(tmp_path_factory.mktemp("serve") / "tiny", seq_len=64)
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tinyllm",
            "serve",
            str(run),
            "--port",
            str(port),
            "--block-size",
            "4",
            "--num-blocks",
            "256",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/v1/models", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.1)
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    yield client, run, base
    proc.terminate()
    proc.wait(timeout=10)


def expected(run, prompt, n):
    """Greedy text from the model's own generate(): the independent path."""
    import tinyllm
    from tinyllm.cli.sample_cmd import load_run

    model, _, token_bytes, encode = load_run(run)
    ids = encode(prompt)
    out = model.generate(tinyllm.tensor(np.array([ids])), n, temperature=0).data[0, len(ids) :]
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(dec.decode(token_bytes(int(t))) for t in out) + dec.decode(b"", final=True)


def test_models_and_greedy_completion(server):
    client, run, _ = server
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0)
    assert r.choices[0].text == expected(run, "Hello", 6)
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 6
    assert r.usage.total_tokens == 11 and r.choices[0].finish_reason == "length"


def test_streamed_chat_equals_the_unstreamed_one(server):
    client, _, _ = server
    msgs = [{"role": "user", "content": "hi"}]
    full = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True
        )
    ]
    assert "".join(pieces) == full.choices[0].message.content
    assert full.choices[0].message.role == "assistant"


def test_n_and_seed(server):
    client, _, _ = server
    a = client.completions.create(model="tiny", prompt="ab", max_tokens=8, n=2, seed=3)
    b = client.completions.create(model="tiny", prompt="ab", max_tokens=8, n=2, seed=3)
    assert len(a.choices) == 2 and [c.index for c in a.choices] == [0, 1]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # seeded
    assert a.usage.completion_tokens == 16


def test_stop_string(server):
    client, run, _ = server
    full = expected(run, "The", 12)
    stop = full[3]
    cut = client.completions.create(
        model="tiny", prompt="The", max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_sixteen_concurrent_clients(server):
    client, run, _ = server
    prompts = [f"client {i}: " for i in range(16)]

    def ask(p):
        return client.completions.create(model="tiny", prompt=p, max_tokens=5, temperature=0)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, prompts))
    for p, a in zip(prompts, answers):
        assert a.choices[0].text == expected(run, p, 5)


def test_errors(server):
    client, _, base = server
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="tiny", prompt="x" * 60, max_tokens=10)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=5)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="tiny", messages=[], max_tokens=2)
    req = urllib.request.Request(
        base + "/v1/completions",
        data=b"{not json",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req)
    assert info.value.code == 400


def full_forward_logprobs(run, ids):
    """log_softmax of the model's uncached forward over ``ids``: the independent path."""
    import tinyllm
    from tinyllm.cli.sample_cmd import load_run

    model, *_ = load_run(run)
    with tinyllm.no_grad():
        z = model(tinyllm.tensor(np.array([ids]))).data[0].astype(np.float64)
    return (
        z
        - z.max(-1, keepdims=True)
        - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    )


def test_completion_logprobs_in_openai_shape(server):
    client, run, _ = server
    r = client.completions.create(
        model="tiny", prompt="Hello", max_tokens=5, temperature=0, logprobs=3
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert lp.text_offset == list(np.cumsum([0] + [len(t) for t in lp.tokens[:-1]]))
    import tinyllm
    from tinyllm.cli.sample_cmd import load_run

    model, _, _, encode = load_run(run)
    prompt = encode("Hello")
    gen = model.generate(tinyllm.tensor(np.array([prompt])), 5, temperature=0).data[0].tolist()
    ref = full_forward_logprobs(run, gen[:-1])  # row t predicts token t + 1
    want = [ref[len(prompt) - 1 + i, gen[len(prompt) + i]] for i in range(5)]
    # float32 model: the cached decode and the full forward agree to ~1e-6 in log p
    np.testing.assert_allclose(lp.token_logprobs, want, atol=1e-4)
    for i, top in enumerate(lp.top_logprobs):
        row = np.sort(ref[len(prompt) - 1 + i])[::-1][:3]
        np.testing.assert_allclose(sorted(top.values(), reverse=True), row, atol=1e-4)
        assert len(top) == 3 and max(top.values()) == lp.token_logprobs[i]  # greedy: argmax
    streamed = [c.choices[0].logprobs for c in client.completions.create(
        model="tiny", prompt="Hello", max_tokens=5, temperature=0, logprobs=3, stream=True)
        if c.choices[0].logprobs is not None]  # fmt: skip
    assert [t for c in streamed for t in c.token_logprobs] == lp.token_logprobs
    assert [o for c in streamed for o in c.text_offset] == lp.text_offset
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model="tiny", prompt="x", max_tokens=2, logprobs=-1)
    with pytest.raises(openai.BadRequestError, match="completions only"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, logprobs=True
        )
