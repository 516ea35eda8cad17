"""A checkpoint behind an HTTP endpoint: `lightning-llm serve --ckpt_path <file> [--port 8000]`.

Served by LitServe, the Lightning ecosystem's model server: dynamic batching of concurrent requests
(`--max_batch_size`, `--batch_timeout`), inference worker processes and a health route are built in.

What the checkpoint holds decides the API, `POST /predict` with a JSON object:
- a classifier: `{"texts": ["a fine film", ...]}` (plus `"pairs": [...]` when it was trained on sentence pairs)
  -> `{"predictions": [{"label": "1", "probability": 0.93}, ...]}`, one per text (regression: `{"score": 2.4}`),
  the labels and probabilities of `lightning-llm predict`; concurrent requests share one padded forward;
- a language model: `{"prompt": "def ", "max_new_tokens": 50, "temperature": 0.8, "top_k": 200, "top_p": null,
  "seed": 1}` (only `prompt` is required) -> `{"text": "..."}`, the prompt and its continuation, the text of
  `lightning-llm generate` with the same options and seed (no seed: a new sample each time).
`GET /health` answers 200 `ok` once the model is loaded (503 `not ready` before).

A bad request gets `{"detail": "<one line>"}` and the server goes on serving: 400 a body that is not a JSON
object, 413 a body, a text or a list of texts over the server's limits, 422 a missing, unknown or wrongly typed
field, an empty list or a sampling option out of range.
"""

# No `from __future__ import annotations`: LitServe reads `decode_request`'s annotation as the body's type.

import math
import os
import signal
import socket
import sys
from typing import Any, Literal

import torch

from lightning_llm.checkpoint_files import model_description, read_checkpoint
from lightning_llm.cli_help import run_command
from lightning_llm.data.text_batches import PadToLongest
from lightning_llm.errors import UserError
from lightning_llm.generate import check_device
from lightning_llm.models.quantize import check_quantize, quantize_int8
from lightning_llm.models.sampling import MAX_NEW_TOKENS
from lightning_llm.models.text_encoding import UnencodableText
from lightning_llm.serve_requests import (
    CLASSIFY_EXAMPLE,
    GENERATE_EXAMPLE,
    BadRequest,
    ClassifyRequest,
    GenerateRequest,
    Rejected,
    RequestLimits,
    classify_request,
    generate_request,
    json_type,
)

try:
    from fastapi import FastAPI, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from litserve import LitAPI, LitServer
    from starlette.exceptions import HTTPException  # what FastAPI raises, a parent of fastapi's own
except ImportError:  # the `serve` extra; `serve` says how to install it
    LitAPI, LitServer = object, None

Kind = Literal["classifier", "language_model"]
# The APIs. A bad request is not raised: LitServe fails every request batched with one that raises, so it
# travels as a Rejected and encode_response answers it alone.


class ClassifierAPI(LitAPI):
    """Texts -> labels and probabilities; the texts of a batch of requests run as padded forwards."""

    def __init__(self, ckpt_path: str, limits: RequestLimits, quantize: str | None, **batching: Any) -> None:
        super().__init__(**batching)
        self.ckpt_path, self.limits, self.quantize = ckpt_path, limits, quantize
        # Rows per forward: all the texts of a full batch of one-text requests, or of one full request.
        self.rows_per_forward = max(limits.max_texts, self.max_batch_size)

    def setup(self, device: str) -> None:
        self.module = load_classifier(self.ckpt_path, device, self.quantize)
        self.max_length, self.takes_pairs = classifier_data(read_checkpoint(self.ckpt_path), self.module)

    def decode_request(self, request: dict) -> ClassifyRequest | Rejected:
        try:
            return classify_request(request, self.limits, self.takes_pairs)
        except BadRequest as error:
            return error.rejected

    def predict(self, inputs: Any) -> Any:
        if self.max_batch_size > 1:
            return self.predict_batch(inputs)
        return self.predict_batch([inputs])[0]

    def predict_batch(self, requests: list[ClassifyRequest | Rejected]) -> list[list[dict] | Rejected]:
        results: list[Any] = list(requests)  # a Rejected stays; a request becomes its predictions
        items, owners = [], []  # one item per text, and the index of the request it came from
        for index, request in enumerate(requests):
            if isinstance(request, Rejected):
                continue
            try:
                encoded = self.module.tokenizer.encode(request.texts, request.pairs, self.max_length)
            except UnencodableText as error:  # an empty text or an unknown character, for a GPT backbone
                results[index] = Rejected(422, " ".join(str(error).split()))
                continue
            results[index] = []
            for row, ids in enumerate(encoded.input_ids):
                item = {"input_ids": ids}
                if encoded.token_type_ids is not None:  # sentence pairs, for backbones with segment ids
                    item["token_type_ids"] = encoded.token_type_ids[row]
                items.append(item)
                owners.append(index)
        collate = PadToLongest(self.module.tokenizer.pad_token_id)
        for start in range(0, len(items), self.rows_per_forward):
            end = start + self.rows_per_forward
            batch = collate(items[start:end])
            with torch.inference_mode():
                out = self.module.predict_step({k: v.to(self.module.device) for k, v in batch.items()}, 0)
            keys = [key for key in ("label", "probability", "score") if key in out]
            for owner, *values in zip(owners[start:end], *(out[key] for key in keys), strict=True):
                results[owner].append(dict(zip(keys, values, strict=True)))
        return results

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output):  # unannotated: LitServe would take an annotation for the reply's type
        return output.response() if isinstance(output, Rejected) else {"predictions": output}


class GeneratorAPI(LitAPI):
    """Prompt -> prompt and continuation; the requests of a batch are sampled one after the other."""

    def __init__(self, ckpt_path: str, limits: RequestLimits, quantize: str | None, **batching: Any) -> None:
        super().__init__(**batching)
        self.ckpt_path, self.limits, self.quantize = ckpt_path, limits, quantize

    def setup(self, device: str) -> None:
        self.module = load_language_model(self.ckpt_path, device, self.quantize)

    def decode_request(self, request: dict) -> GenerateRequest | Rejected:
        try:
            return generate_request(request, self.limits)
        except BadRequest as error:
            return error.rejected

    def predict(self, inputs: Any) -> Any:
        if self.max_batch_size > 1:
            return [self.sample(request) for request in inputs]
        return self.sample(inputs)

    def sample(self, request: GenerateRequest | Rejected) -> str | Rejected:
        if isinstance(request, Rejected):
            return request
        try:
            with torch.inference_mode():
                return self.module.generate_text(
                    request.prompt,
                    request.max_new_tokens,
                    request.temperature,
                    request.top_k,
                    request.top_p,
                    seed=request.seed,
                )
        except UserError as error:  # a prompt the tokenizer cannot encode (a character it never saw)
            return Rejected(422, f"'prompt' {' '.join(str(error).split())}")

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output):  # unannotated: LitServe would take an annotation for the reply's type
        return output.response() if isinstance(output, Rejected) else {"text": output}


# Loading: the same module, merged and quantized as `predict` and `generate` do.


def load_classifier(ckpt_path: str, device: str, quantize: str | None) -> Any:
    from lightning_llm.checkpoints import load_module
    from lightning_llm.lit.classifier import SequenceClassifier

    module = load_module(SequenceClassifier, ckpt_path, map_location=device).eval()
    backbone = module.merged_backbone()  # LoRA folded in, as `lightning-llm predict` runs it
    module.network = quantize_int8(backbone) if quantize else backbone
    return module


def load_language_model(ckpt_path: str, device: str, quantize: str | None) -> Any:
    from lightning_llm.checkpoints import load_module
    from lightning_llm.lit.language_model import LanguageModel

    module = load_module(LanguageModel, ckpt_path, map_location=device).eval()
    if quantize:
        module.network = quantize_int8(module.network)
    if module.tokenizer is None:
        raise UserError(
            f"checkpoint {ckpt_path} carries no tokenizer; use a checkpoint written by `lightning-llm fit`"
        )
    return module


def classifier_data(checkpoint: dict[str, Any], module: Any) -> tuple[int, bool | None]:
    """The token limit texts are cut to and whether they come in pairs, as the data module of the run that
    wrote the checkpoint had them (else the backbone's limit, and pairs optional)."""
    data = checkpoint.get("datamodule_hyper_parameters")
    limit = module.tokenizer.max_length
    if not isinstance(data, dict) or "text_pair_column" not in data:
        return limit, None
    max_length = data.get("max_length")
    if isinstance(max_length, int):
        limit = min(limit, max_length)
    return limit, data["text_pair_column"] is not None


def checkpoint_kind(ckpt_path: str) -> Kind:
    hparams = model_description(read_checkpoint(ckpt_path), ckpt_path)
    module = str(hparams.get("_class_path") or "").rpartition(".")[2]
    if module == "SequenceClassifier":
        return "classifier"
    if module == "LanguageModel":
        return "language_model"
    raise UserError(
        f"checkpoint {ckpt_path} holds a {module or 'module of unknown class'}; serve takes a fine-tuned "
        "classifier or a language model written by `lightning-llm fit`"
    )


# The command.


def serve(
    ckpt_path: str | None = None,
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 16,
    batch_timeout: float = 0.01,
    max_texts: int = 64,
    max_chars: int = 2000,
    max_new_tokens_limit: int = 1000,
    quantize: str | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
    workers: int = 1,
) -> None:
    """Serve a checkpoint over HTTP: POST /predict (JSON; the API follows the checkpoint), GET /health.

    Args:
        ckpt_path: A checkpoint written by `lightning-llm fit`: a fine-tuned classifier or a language model.
        host: The interface to listen on: 127.0.0.1 (this machine only), 0.0.0.0 or :: (every interface).
        port: The port to listen on (1024 to 65535).
        max_batch_size: Requests run together at most (dynamic batching); 1 runs each request alone.
        batch_timeout: Seconds to wait for more requests to fill a batch once one request is waiting.
        max_texts: Texts one classify request may hold.
        max_chars: Characters one text or prompt may have.
        max_new_tokens_limit: Tokens one generate request may ask for.
        quantize: int8: the Linear layers in int8 (dynamic quantization, CPU only), faster on a CPU.
        device: Where the model runs: cpu, or cuda (the first GPU).
        workers: Inference worker processes, each with its own copy of the model.
    """
    if LitServer is None:
        raise UserError("serve needs LitServe: pip install 'lightning-llm[serve]' (or pip install litserve)")
    if not ckpt_path:
        raise UserError("name a checkpoint: --ckpt_path logs/<run>/version_<n>/checkpoints/last.ckpt")
    limits = check_options(
        port, max_batch_size, batch_timeout, max_texts, max_chars, max_new_tokens_limit, workers
    )
    check_device(device)
    check_quantize(quantize, device)
    check_port_free(host, port)
    kind = checkpoint_kind(ckpt_path)
    # Loaded here once, so that a checkpoint that does not load ends with one error line before any worker starts.
    module = (
        load_classifier(ckpt_path, "cpu", None)
        if kind == "classifier"
        else load_language_model(ckpt_path, "cpu", None)
    )
    what = (
        f"a classifier (labels {', '.join(module.label_names)})"
        if kind == "classifier"
        else "a language model"
    )
    del module
    api_class = ClassifierAPI if kind == "classifier" else GeneratorAPI
    api = api_class(ckpt_path, limits, quantize, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    # Every valid request fits in this body size (12 bytes per character: a JSON escape of an emoji).
    body_limit = 12 * max_chars * (2 * max_texts if kind == "classifier" else 1) + 2**16
    server = LitServer(
        api,
        accelerator=device,
        devices=1,
        workers_per_device=workers,
        max_payload_size=body_limit,
    )
    answer_bad_bodies_in_one_line(server.app, CLASSIFY_EXAMPLE if kind == "classifier" else GENERATE_EXAMPLE)
    print(
        f"serving {ckpt_path}, {what}: POST http://{'[::]' if host == '::' else host}:{port}/predict, "
        "GET /health",
        file=sys.stderr,
        flush=True,
    )
    stop_gracefully_on_sigterm()
    server.run(host=host, port=port, generate_client_file=False)


def check_options(
    port: int,
    max_batch_size: int,
    batch_timeout: float,
    max_texts: int,
    max_chars: int,
    max_new_tokens_limit: int,
    workers: int,
) -> RequestLimits:
    if not 1024 <= port <= 65535:
        raise UserError(f"--port is {port}: use a port from 1024 to 65535 (LitServe refuses the others)")
    for name, value in (
        ("max_batch_size", max_batch_size),
        ("max_texts", max_texts),
        ("max_chars", max_chars),
        ("workers", workers),
    ):
        if value < 1:
            raise UserError(f"--{name} is {value}: it must be 1 or more")
    if not 0.0 <= batch_timeout < math.inf:
        raise UserError(f"--batch_timeout is {batch_timeout}: it must be 0 or more seconds")
    if not 0 <= max_new_tokens_limit <= MAX_NEW_TOKENS:
        raise UserError(
            f"--max_new_tokens_limit is {max_new_tokens_limit}: it must be between 0 and {MAX_NEW_TOKENS:,}"
        )
    return RequestLimits(max_texts, max_chars, max_new_tokens_limit)


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"--port {port} on {host}: {error.strerror}; pass another --port") from None


def answer_bad_bodies_in_one_line(app: "FastAPI", example: str) -> None:
    """A body that is not a JSON object is refused by FastAPI before the API sees it: say so in one line."""

    async def bad_body(request: "Request", error: "RequestValidationError") -> "JSONResponse":
        problem = (error.errors() or [{}])[0]
        if problem.get("type") == "json_invalid":
            cause = (problem.get("ctx") or {}).get("error", "")
            reason = f"the body is not valid JSON ({cause})" if cause else "the body is not valid JSON"
        elif problem.get("type") == "missing":
            reason = "the body is empty"
        elif isinstance(problem.get("input"), bytes | str):  # FastAPI reads JSON only when the type says so
            reason = "the body was not sent as JSON (Content-Type: application/json)"
        else:
            reason = f"the body is {json_type(problem.get('input'))}, not a JSON object"
        return JSONResponse({"detail": f"{reason}; send a JSON object such as {example}"}, status_code=400)

    async def unreadable_body(request: "Request", error: "HTTPException") -> "JSONResponse":
        # FastAPI's own words for a body json.loads raised anything but a JSONDecodeError on, the cause kept
        if error.status_code != 400 or error.detail != "There was an error parsing the body":
            return await http_exception_handler(request, error)
        if isinstance(error.__cause__, UnicodeDecodeError):
            reason = f"the body is not UTF-8 text ({error.__cause__.reason} at byte {error.__cause__.start})"
        elif isinstance(error.__cause__, RecursionError):
            reason = "the body nests arrays or objects too deep to read"
        else:
            reason = "the body could not be read as JSON"
        return JSONResponse({"detail": f"{reason}; send a JSON object such as {example}"}, status_code=400)

    app.add_exception_handler(RequestValidationError, bad_body)
    app.add_exception_handler(HTTPException, unreadable_body)


def stop_gracefully_on_sigterm() -> None:
    """`kill`, `docker stop`: the shutdown Ctrl-C gets, which stops the workers too. Only in this process: the
    HTTP workers forked from it end on SIGTERM as uvicorn expects."""
    main_pid = os.getpid()

    def interrupt(signum: int, frame: Any) -> None:
        if os.getpid() == main_pid:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, interrupt)


def main(args: list[str] | None = None) -> None:
    run_command(serve, args)


if __name__ == "__main__":
    main()
