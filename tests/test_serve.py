"""`lightning-llm serve`: a real server in a subprocess, spoken to over HTTP, answers what `predict` and
`generate` print, batches concurrent requests, and refuses bad ones with a 4xx and a one-line reason."""

# Fixtures imported from other modules come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bert_fixtures import classifier_overrides, tiny_bert, write_sst_like  # noqa: F401
from gpt_fixtures import gpt_checkpoints  # noqa: F401

from lightning_llm.cli import main

requests = pytest.importorskip("requests")
pytest.importorskip("litserve")

STARTUP_S = 120  # two model loads and a spawned worker on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def wait_until_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while True:
            ended = self.process.poll()
            assert ended is None, f"the server ended with {ended}:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no /health in {STARTUP_S} s:\n{self.log.read_text()[-3000:]}"
            )
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.3)


@contextlib.contextmanager
def started_server(ckpt: Path, folder: Path, *options: str) -> Iterator[Server]:
    """`python -m lightning_llm serve` on a free port; afterwards, whatever happened, the server and every
    process it started are stopped."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "lightning_llm", "serve", "--ckpt_path", str(ckpt), "--port", str(port)]
    with open(log, "w") as output:
        process = subprocess.Popen(
            [*args, *options],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log)
    finally:
        process.send_signal(signal.SIGTERM)  # the graceful shutdown: it stops its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):  # anything left of the session it was started in
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# A classifier fine-tuned for a few steps, and what `lightning-llm predict` wrote for its dev texts.


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, tiny_bert) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("serve_classifier")
    with contextlib.chdir(folder):
        args = classifier_overrides(write_sst_like(folder / "sst"), tiny_bert)
        args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        main(["fit", *args, "--trainer.max_steps", "4", "--model.init_args.learning_rate", "1e-2"])
        checkpoint = folder / "logs/minilm-sst2/version_0/checkpoints/last.ckpt"
        main(["predict", *args, "--data.predict", "dev.tsv", "--ckpt_path", str(checkpoint)])
        with open("predictions/minilm-sst2.csv", encoding="utf-8", newline="") as file:
            return checkpoint, list(csv.DictReader(file))


@pytest.fixture(scope="module")
def servers(classifier_run, gpt_checkpoints, tmp_path_factory) -> Iterator[dict[str, str]]:
    """A classifier server (small limits, batches of up to 8) and a char-GPT one, started side by side."""
    folder = tmp_path_factory.mktemp("serve_logs")
    classifier_options = ["--max_batch_size", "8", "--batch_timeout", "0.05", "--max_texts", "12"]
    gpt_options = ["--max_batch_size", "4", "--max_new_tokens_limit", "40"]
    with (
        started_server(classifier_run[0], folder, *classifier_options, "--max_chars", "100") as classifier,
        started_server(gpt_checkpoints["char"], folder, *gpt_options) as gpt,
    ):
        classifier.wait_until_healthy()
        gpt.wait_until_healthy()
        yield {"classifier": classifier.url, "gpt": gpt.url}


@pytest.fixture
def classifier_url(servers) -> str:
    return servers["classifier"]


@pytest.fixture
def gpt_url(servers) -> str:
    return servers["gpt"]


def classify(url: str, texts: list[str]) -> list[dict]:
    reply = requests.post(f"{url}/predict", json={"texts": texts}, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["predictions"]


def assert_same_predictions(answered: list[dict], predicted: list[dict]) -> None:
    assert [row["label"] for row in answered] == [row["label"] for row in predicted]
    probabilities = [float(row["probability"]) for row in predicted]
    assert [row["probability"] for row in answered] == pytest.approx(probabilities, abs=1e-5)


def test_health_answers(classifier_url):
    reply = requests.get(f"{classifier_url}/health", timeout=10)
    assert (reply.status_code, reply.text) == (200, "ok")


def test_classify_answers_what_predict_wrote(classifier_url, classifier_run):
    _, predicted = classifier_run
    answered = classify(classifier_url, [row["text"] for row in predicted])
    assert_same_predictions(answered, predicted)
    assert len({row["probability"] for row in predicted}) > 1  # a head that tells the texts apart


def test_concurrent_requests_are_each_answered_right(classifier_url, classifier_run):
    _, predicted = classifier_run
    # 16 requests of 1 to 3 texts from 8 threads, batched by the server; one bad request among them
    chunks = [predicted[i % 12 : i % 12 + 1 + i % 3] for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        bad = pool.submit(requests.post, f"{classifier_url}/predict", json={"texts": [7]}, timeout=60)
        answers = list(pool.map(lambda rows: classify(classifier_url, [row["text"] for row in rows]), chunks))
    for answered, rows in zip(answers, chunks, strict=True):
        assert_same_predictions(answered, rows)
    assert bad.result().status_code == 422  # refused alone: the requests batched with it were answered


BAD_CLASSIFY_REQUESTS = [  # (body, status, words of the reason)
    ('{"texts": ["a good film"', 400, "not valid JSON"),
    (b'{"texts": ["caf\xe9"]}', 400, "the body is not UTF-8 text (invalid continuation byte at byte 15)"),
    ("[" * 3_000 + "]" * 3_000, 400, "nests arrays or objects too deep"),  # past json's recursion limit
    ("", 400, "the body is empty"),
    ('["a good film"]', 400, "the body is an array, not a JSON object"),
    ("{}", 422, "missing field 'texts'"),
    ('{"text": ["a good film"]}', 422, "unknown field 'text'; did you mean 'texts'?"),
    ('{"texts": "a good film"}', 422, "'texts' must be an array of strings, not a string"),
    ('{"texts": []}', 422, "'texts' is empty"),
    ('{"texts": ["fine", null]}', 422, "texts[1] is null, not a string"),
    ('{"texts": ["\\ud800"]}', 422, "lone surrogate"),
    ('{"texts": ["fine"], "pairs": ["ok"]}', 422, "trained on single texts"),
    (json.dumps({"texts": ["fun"] * 13}), 413, "at most 12 per request (--max_texts)"),
    (
        json.dumps({"texts": ["fun", "a" * 101]}),
        413,
        "texts[1] has 101 characters; this server takes at most 100",
    ),
    (json.dumps({"texts": ["a" * 10**6]}), 413, ""),  # over the body limit: refused before it is read whole
]


@pytest.mark.parametrize(("body", "status", "reason"), BAD_CLASSIFY_REQUESTS)
def test_a_bad_request_gets_a_4xx_and_the_server_goes_on(classifier_url, body, status, reason):
    headers = {"Content-Type": "application/json"}
    data = body if isinstance(body, bytes) else body.encode()
    reply = requests.post(f"{classifier_url}/predict", data=data, headers=headers, timeout=60)
    assert reply.status_code == status, reply.text
    detail = reply.json()["detail"]
    assert reason in detail and "\n" not in detail
    assert len(classify(classifier_url, ["a good film"])) == 1


def test_a_batch_answers_each_request_as_if_it_came_alone(classifier_run, monkeypatch):
    """In process: requests batched together, some refused, their texts split over several forwards."""
    from lightning_llm.models.text_encoding import UnencodableText
    from lightning_llm.serve import ClassifierAPI, RequestLimits

    checkpoint, predicted = classifier_run
    api = ClassifierAPI(str(checkpoint), RequestLimits(3, 100, 0), None, max_batch_size=2)
    api.setup("cpu")
    assert api.rows_per_forward == 3  # so the texts of one request straddle two forwards
    encode = api.module.tokenizer.encode

    def encode_unless_odd(texts, pairs, max_length):  # what a GPT backbone does with a character it never saw
        if "\u2603" in texts:
            raise UnencodableText(texts.index("\u2603"), "\u2603", "cannot be encoded: an unknown character")
        return encode(texts, pairs, max_length)

    monkeypatch.setattr(api.module.tokenizer, "encode", encode_unless_odd)
    texts = [row["text"] for row in predicted]
    bodies = [
        {"texts": texts[:2]},
        {"texts": [7]},
        {"texts": texts[2:5]},
        {"texts": ["\u2603"]},
        {"texts": texts[5:6]},
    ]
    replies = [api.encode_response(out) for out in api.predict([api.decode_request(body) for body in bodies])]
    assert_same_predictions(replies[0]["predictions"] + replies[2]["predictions"], predicted[:5])
    assert_same_predictions(replies[4]["predictions"], predicted[5:6])
    assert (replies[1].status_code, replies[3].status_code) == (422, 422)
    assert b"unknown character" in replies[3].body


def test_int8_serves_what_float32_does(classifier_run, gpt_checkpoints):
    from lightning_llm.serve import ClassifierAPI, GeneratorAPI, RequestLimits

    checkpoint, predicted = classifier_run
    classifier = ClassifierAPI(str(checkpoint), RequestLimits(12, 100, 0), "int8", max_batch_size=1)
    classifier.setup("cpu")  # one request at a time: predict takes the request itself, not a list
    reply = classifier.encode_response(
        classifier.predict(classifier.decode_request({"texts": ["a good film"]}))
    )
    expected = next(float(row["probability"]) for row in predicted if row["text"] == "a good film")
    assert reply["predictions"][0]["probability"] == pytest.approx(expected, abs=0.05)
    generator = GeneratorAPI(str(gpt_checkpoints["char"]), RequestLimits(1, 100, 8), "int8", max_batch_size=2)
    generator.setup("cpu")
    batch = [generator.decode_request({"prompt": "the", "max_new_tokens": 8, "seed": 1})] * 2
    replies = [generator.encode_response(out) for out in generator.predict(batch)]
    assert replies[0] == replies[1] and replies[0]["text"].startswith("the")


def test_pairs_are_required_exactly_when_the_classifier_was_trained_on_them():
    from lightning_llm.serve import BadRequest, RequestLimits, classify_request

    limits = RequestLimits(4, 50, 0)
    assert classify_request({"texts": ["a"], "pairs": ["b"]}, limits, takes_pairs=True).pairs == ["b"]
    assert classify_request({"texts": ["a"]}, limits, takes_pairs=None).pairs is None
    with pytest.raises(BadRequest, match="trained on sentence pairs: send 'pairs'"):
        classify_request({"texts": ["a"]}, limits, takes_pairs=True)
    with pytest.raises(BadRequest, match="'pairs' holds 2 texts but 'texts' 1"):
        classify_request({"texts": ["a"], "pairs": ["b", "c"]}, limits, takes_pairs=None)


def test_a_body_not_sent_as_json_is_refused(classifier_url):
    reply = requests.post(
        f"{classifier_url}/predict", data=b'{"texts": ["fun"]}', timeout=60
    )  # no Content-Type
    assert reply.status_code == 400 and "not sent as JSON (Content-Type: application/json)" in reply.text


# A language model: the text `lightning-llm generate` prints for the same prompt, options and seed.


@pytest.mark.parametrize(
    "options",
    [{"temperature": 0.0, "top_k": None}, {"temperature": 0.9, "top_k": 20, "top_p": 0.9}],
    ids=["greedy", "sampled"],
)
def test_generate_answers_what_generate_prints(gpt_url, gpt_checkpoints, options):
    from lightning_llm.generate import generate

    request = {"prompt": "the quick", "max_new_tokens": 24, "seed": 7, **options}
    reply = requests.post(f"{gpt_url}/predict", json=request, timeout=60)
    assert reply.status_code == 200, reply.text
    expected = generate(str(gpt_checkpoints["char"]), **request)[0]
    assert reply.json() == {"text": expected}


BAD_GENERATE_REQUESTS = [
    ({"max_new_tokens": 5}, "missing field 'prompt'"),
    ({"prompt": "the", "max_new_tokens": 41}, "at most 40 per request (--max_new_tokens_limit)"),
    ({"prompt": "the", "max_new_tokens": 5.5}, "'max_new_tokens' must be a whole number, not a number"),
    ({"prompt": "the", "temperature": -1}, "temperature is -1.0: it must be 0 (greedy) or a positive number"),
    ({"prompt": "the", "top_p": 2}, "top_p is 2.0: it must lie in (0, 1]"),
    ({"prompt": "the", "top_k": True}, "'top_k' must be a whole number or null, not a boolean"),
    ({"prompt": "the", "seed": -1}, "'seed' is -1"),
    ({"prompt": "the", "temprature": 0}, "did you mean 'temperature'?"),
    ({"prompt": "\u4e2d\u6587"}, "'prompt'"),  # characters the char tokenizer never saw
]


def test_bad_generate_requests_get_a_422(gpt_url):
    for request, reason in BAD_GENERATE_REQUESTS:
        reply = requests.post(f"{gpt_url}/predict", json={"max_new_tokens": 2, **request}, timeout=60)
        assert reply.status_code == 422, (request, reply.text)
        assert reason in reply.json()["detail"], (request, reply.text)
    reply = requests.post(f"{gpt_url}/predict", json={"prompt": "the", "max_new_tokens": 3}, timeout=60)
    assert reply.status_code == 200 and reply.json()["text"].startswith("the")


# Bad arguments end before any server starts: exit status 2 and one `error:` line.


def test_bad_arguments_end_with_one_error_line(classifier_run, tmp_path, capsys):
    ckpt = str(classifier_run[0])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cases = [
            ([], "name a checkpoint"),
            (["--ckpt_path", "missing.ckpt"], "does not exist"),
            (["--ckpt_path", "notes.ckpt"], "truncated or corrupt"),
            (["--ckpt_path", ckpt, "--port", "80"], "--port is 80: use a port from 1024 to 65535"),
            (["--ckpt_path", ckpt, "--port", str(busy)], f"--port {busy} on 127.0.0.1"),
            (["--ckpt_path", ckpt, "--max_batch_size", "0"], "--max_batch_size is 0: it must be 1 or more"),
            (["--ckpt_path", ckpt, "--batch_timeout", "-1"], "--batch_timeout is -1.0"),
            (["--ckpt_path", ckpt, "--max_new_tokens_limit", "-3"], "--max_new_tokens_limit is -3"),
            (["--ckpt_path", ckpt, "--quantize", "int4"], "--quantize is 'int4'"),
            (["--ckpt_path", ckpt, "--host", "localhost"], "host"),
        ]
        for args, reason in cases:
            with pytest.raises(SystemExit) as exited:
                main(["serve", *args] + ([] if "--port" in args else ["--port", str(free_port())]))
            assert exited.value.code == 2, args
            errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and reason in errors[0], (args, errors)
