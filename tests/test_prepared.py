"""`lightning-llm prepare` and training that streams the prepared folder: the manifest, a rerun that does
nothing, a changed corpus refused, exact resume, and two DDP ranks that see disjoint windows of the data."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cli_runner import error_line, run_cli
from lm_helpers import finish, lm_fit_args, start_processes, step_losses, wait_for_step, write_tiny_corpus

from lightning_llm.cli import main
from lightning_llm.data.prepared import MANIFEST
from lightning_llm.tokenizers import BPETokenizer, tokenizer_from_json

pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A tiny corpus in three files, prepared by the real command with two workers."""
    root = tmp_path_factory.mktemp("prepared")
    corpus = root / "corpus"
    corpus.mkdir()
    text = write_tiny_corpus(root / "whole.txt").read_text()
    for index in range(3):  # three files: the split falls in the last one, the workers share the ranges
        (corpus / f"part{index}.txt").write_text(text[index::3] if index else text)
    done = run_cli(["prepare", "--data.path", str(corpus), "--output_dir", "out", "--workers", "2"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "encoding: 100%" in done.stderr and "B/s]" in done.stderr  # the progress bar, with its rate
    return root


def test_the_manifest_counts_the_tokens_and_a_rerun_does_nothing(prepared: Path):
    manifest = json.loads((prepared / "out" / MANIFEST).read_text())
    index = json.loads((prepared / "out" / "train" / "index.json").read_text())
    counts = {
        "train": sum(chunk["dim"] for chunk in index["chunks"]),
        "val": (prepared / "out" / "val.bin").stat().st_size // 2,  # char ids: 2 bytes each
    }
    assert manifest["tokens"] == counts and counts["train"] > 8 * counts["val"] > 0
    assert manifest["tokenizer"] == "char" and (prepared / "out" / "tokenizer.json").is_file()
    again = run_cli(["prepare", "--data.path", "corpus", "--output_dir", "out", "--workers", "2"], prepared)
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_a_changed_corpus_or_tokenizer_is_refused(prepared: Path, tmp_path: Path):
    changed = shutil.copytree(prepared / "corpus", tmp_path / "corpus")
    (changed / "part1.txt").write_text((changed / "part1.txt").read_text() + "one more line\n")
    before = sorted(path.stat().st_mtime_ns for path in (prepared / "out").rglob("*"))
    line = error_line(run_cli(["prepare", "--data.path", str(changed), "--output_dir", "out"], prepared))
    assert "out was prepared from another corpus" in line and "new --output_dir" in line
    line = error_line(
        run_cli(
            ["prepare", "--data.path", "corpus", "--data.tokenizer", "bpe", "--output_dir", "out"], prepared
        )
    )
    assert "tokenizer" in line
    assert sorted(path.stat().st_mtime_ns for path in (prepared / "out").rglob("*")) == before


def test_streaming_training_resumes_with_the_uninterrupted_losses(prepared: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # max_epochs makes the schedule ask for the run's length before the checkpoint is restored, which loses
    # Lightning's own record of the loader (pytorch-lightning #20550): the data module keeps it instead
    stream = ["--data.path", f"prepared:{prepared / 'out'}", "--trainer.max_epochs", "5"]
    main([*lm_fit_args(prepared / "whole.txt", 16, "straight"), *stream])
    straight = step_losses(Path("logs/gpt-shakespeare-char/straight"))
    main([*lm_fit_args(prepared / "whole.txt", 10, "interrupted"), *stream])  # its last.ckpt is from step 8
    main([*lm_fit_args(prepared / "whole.txt", 16, "interrupted"), *stream, "--ckpt_path", "last"])
    resumed = step_losses(Path("logs/gpt-shakespeare-char/interrupted"))
    assert len(straight) == 16
    for step in range(8, 16):
        assert resumed[step] == straight[step], f"step {step}: {resumed[step]} != {straight[step]}"


@pytest.fixture
def object_store(monkeypatch) -> str:
    """An S3-compatible store served here (moto), with boto3 and litdata pointed at it by the usual settings."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    boto3.client("s3").create_bucket(Bucket="corpora")
    yield "s3://corpora"
    server.stop()


def test_a_folder_in_object_storage_trains_like_the_local_one(
    prepared: Path, object_store: str, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    url = f"{object_store}/tiny"
    prepare = ["prepare", "--data.path", str(prepared / "corpus"), "--output_dir", url, "--workers", "2"]
    done = run_cli(prepare, tmp_path)
    assert done.returncode == 0 and f"--data.path prepared:{url}" in done.stderr, done.stderr[-3000:]
    assert "nothing to do" in run_cli(prepare, tmp_path).stderr
    import boto3

    boto3.client("s3").put_object(Bucket="corpora", Key="notes/readme.txt", Body=b"not a prepared folder")
    line = error_line(run_cli([*prepare[:-4], "--output_dir", f"{object_store}/notes"], tmp_path))
    assert "notes exists and is not a prepared folder" in line

    def fit(version: str, folder, steps: int, *extra: str) -> None:
        stream = ["--data.path", f"prepared:{folder}", "--trainer.max_epochs", "5"]
        main([*lm_fit_args(prepared / "whole.txt", steps, version), *stream, *extra])

    fit("local", prepared / "out", 8)
    fit("remote", url, 4)  # then resumed from its checkpoint of step 4, with its copies in another cache
    fit("remote", url, 8, "--ckpt_path", "last", "--data.cache_dir", "another-cache")
    remote = step_losses(Path("logs/gpt-shakespeare-char/remote"))
    assert len(remote) == 8 and remote == step_losses(Path("logs/gpt-shakespeare-char/local"))
    manifest = boto3.client("s3").get_object(Bucket="corpora", Key=f"tiny/{MANIFEST}")["Body"].read()
    boto3.client("s3").put_object(
        Bucket="corpora", Key=f"tiny/{MANIFEST}", Body=manifest + b"\n"
    )  # a new version
    capsys.readouterr()
    with pytest.raises(SystemExit):
        fit("remote", url, 12, "--ckpt_path", "last")
    assert f"{url} was prepared again since the checkpoint streamed it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(
            [
                *lm_fit_args(prepared / "whole.txt", 4, "missing"),
                "--data.path",
                f"prepared:{object_store}/nothing",
            ]
        )
    assert exited.value.code == 2
    assert (
        f"{object_store}/nothing is not a folder written by `lightning-llm prepare`"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_two_ddp_processes_killed_together_resume_with_the_uninterrupted_losses(
    prepared: Path, tmp_path, monkeypatch
):
    """The checkpoint (rank 0's) holds the stream's position; both ranks restart from it after a kill -9."""
    monkeypatch.chdir(tmp_path)
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    stream = ["--data.path", f"prepared:{prepared / 'out'}", "--trainer.max_epochs", "5", *ddp]
    finish(start_processes([*lm_fit_args(prepared / "whole.txt", 16, "straight"), *stream]))
    straight = step_losses(Path("logs/gpt-shakespeare-char/straight"))
    run_dir = Path("logs/gpt-shakespeare-char/killed")
    process = start_processes([*lm_fit_args(prepared / "whole.txt", 16, "killed"), *stream])
    wait_for_step(process, run_dir, 9)  # past the checkpoint of step 8
    os.killpg(process.pid, signal.SIGKILL)  # both processes at once, as a lost machine
    process.wait()
    assert max(step_losses(run_dir)) < 15  # killed before the end
    resume = start_processes(
        [*lm_fit_args(prepared / "whole.txt", 16, "killed"), *stream, "--ckpt_path", "last"]
    )
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in finish(resume)
    resumed = step_losses(run_dir)
    assert len(straight) == 16 and max(resumed) == 15
    for step in range(8, 16):
        assert resumed[step] == straight[step], f"step {step}: {resumed[step]} != {straight[step]}"


def test_a_prepared_folder_decides_what_is_left_unset_and_refuses_what_differs(
    prepared: Path, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    bpe = run_cli(
        ["prepare", "--data.path", str(prepared / "corpus"), "--data.tokenizer", "bpe"]
        + ["--data.bpe_vocab_size", "300", "--data.val_fraction", "0.2", "--output_dir", "bpe"],
        tmp_path,
    )
    assert bpe.returncode == 0, bpe.stderr[-3000:]
    # the recipe's config says `tokenizer: char`; null leaves it to the folder, as does the unset val_fraction
    args = [*lm_fit_args(prepared / "whole.txt", 2, "bpe"), "--data.path", "prepared:bpe"]
    main([*args, "--data.tokenizer", "null"])
    checkpoint = torch.load("logs/gpt-shakespeare-char/bpe/checkpoints/last.ckpt", weights_only=True)
    assert isinstance(tokenizer_from_json(checkpoint["tokenizer"]), BPETokenizer)
    assert checkpoint["hyper_parameters"]["model"]["init_args"]["vocab_size"] == 300
    for typed, says in (
        (["--data.tokenizer", "char"], "data.tokenizer is 'char', but"),
        (["--data.tokenizer", "null", "--data.val_fraction", "0.1"], "data.val_fraction is 0.1, but"),
    ):
        with pytest.raises(SystemExit) as exited:
            main([*args, *typed, "--trainer.logger.init_args.version", "refused"])
        assert exited.value.code == 2
        assert says in capsys.readouterr().err


def _windows_of_rank(rank: int, world_size: int, folder: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    from lightning_llm.data.streaming import training_loader

    seen = [
        tuple(row.tolist())
        for x, _ in training_loader(f"{folder}/train", 16, 4, seed=7, num_workers=0)
        for row in x
    ]
    torch.save(seen, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ddp_ranks_stream_disjoint_windows_that_cover_the_data(prepared: Path, tmp_path: Path):
    from lightning_llm.data.streaming import training_loader

    everything = [
        tuple(row.tolist())
        for x, _ in training_loader(str(prepared / "out" / "train"), 16, 4, 7, 0)
        for row in x
    ]
    mp.spawn(_windows_of_rank, args=(2, str(prepared / "out"), 29517, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2))
    assert len(first) == len(second) > 0  # the same number of windows on each rank
    # as multisets (a repetitive text repeats windows): no window taken twice, and all but a last batch taken
    assert not (Counter(first) + Counter(second)) - Counter(everything)
    assert len(first) + len(second) >= len(everything) - 2 * 4


def test_a_resume_with_another_seed_is_one_error(prepared: Path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    stream = ["--data.path", f"prepared:{prepared / 'out'}"]
    main([*lm_fit_args(prepared / "whole.txt", 4, "seeded"), *stream])
    with pytest.raises(SystemExit) as exited:
        main(
            [
                *lm_fit_args(prepared / "whole.txt", 8, "seeded"),
                *stream,
                "--data.seed",
                "5",
                "--ckpt_path",
                "last",
            ]
        )
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "with data.seed 1337" in error and "resume with --data.seed 1337" in error
