"""Real S3 clients against the cluster, unchanged: the aws cli, rclone, s3cmd, curl."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lib.config import Config
from tests.probe.conftest import s3_endpoint


def _tree(root: Path, files: int) -> dict[str, bytes]:
    made = {}
    for i in range(files):
        relative = f"d{i % 7}/sub{i % 3}/f{i:04d}.bin"
        data = os.urandom(i * 37 % 5000)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made[relative] = data
    return made


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)


@pytest.fixture
def aws(cluster, tmp_path):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": Config.s3_access_key,
           "AWS_SECRET_ACCESS_KEY": Config.s3_secret_key, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_endpoint(cluster), "AWS_CONFIG_FILE": str(tmp_path / "cfg"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "creds"), "AWS_MAX_ATTEMPTS": "1"}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "awscli", *args], env=env,
                              capture_output=True, text=True, timeout=300)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    return run


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_aws_cli_mb_cp_ls_sync_rm(aws, tmp_path):
    bucket = f"cli-{uuid.uuid4().hex[:8]}"
    aws("s3", "mb", f"s3://{bucket}")
    big = tmp_path / "big.bin"
    # 1 GiB passes too (TESSERA_AWS_CLI_MIB=1024, about 4 minutes here); the suite's
    # default keeps its time budget.  Multipart either way (the cli's 8 MiB parts).
    size = int(os.environ.get("TESSERA_AWS_CLI_MIB", "256")) * (1 << 20) + 3
    expected = _write_random(big, size)
    aws("s3", "cp", str(big), f"s3://{bucket}/big.bin")
    big.unlink()
    aws("s3", "cp", f"s3://{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert _sha256_file(tmp_path / "back.bin") == expected
    (tmp_path / "back.bin").unlink()
    assert "big.bin" in aws("s3", "ls", f"s3://{bucket}/").stdout
    head = aws("s3api", "head-object", "--bucket", bucket, "--key", "big.bin").stdout
    assert f'"ContentLength": {size}' in head
    source = tmp_path / "tree"
    _tree(source, 1000)
    aws("s3", "sync", str(source), f"s3://{bucket}/tree")
    target = tmp_path / "again"
    aws("s3", "sync", f"s3://{bucket}/tree", str(target))
    assert _same_tree(source, target)
    aws("s3", "rm", f"s3://{bucket}", "--recursive")
    aws("s3", "rb", f"s3://{bucket}")
    assert bucket not in aws("s3", "ls").stdout


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is installed by "
                    "scripts/setup.sh (Debian package rclone)")
def test_rclone_copy_and_check(cluster, s3, tmp_path):
    bucket = f"rc-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    source = tmp_path / "tree"
    _tree(source, 60)
    (source / "large.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    # rclone cannot combine AWS_CA_BUNDLE with its own transport; plain http needs none.
    env = {**{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
           "RCLONE_CONFIG_TS_TYPE": "s3", "RCLONE_CONFIG_TS_PROVIDER": "Other",
           "RCLONE_CONFIG_TS_ENDPOINT": s3_endpoint(cluster),
           "RCLONE_CONFIG_TS_ACCESS_KEY_ID": Config.s3_access_key,
           "RCLONE_CONFIG_TS_SECRET_ACCESS_KEY": Config.s3_secret_key,
           "RCLONE_CONFIG_TS_REGION": "us-east-1", "RCLONE_CONFIG": str(tmp_path / "rc.conf")}
    for args in (["copy", str(source), f"ts:{bucket}/t", "--s3-chunk-size", "5M",
                  "--s3-upload-cutoff", "5M"],
                 ["check", str(source), f"ts:{bucket}/t"],
                 ["copy", f"ts:{bucket}/t", str(tmp_path / "back")]):
        done = subprocess.run(["rclone", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (args, done.stderr[-3000:])
    assert _same_tree(source, tmp_path / "back")
    subprocess.run(["rclone", "purge", f"ts:{bucket}"], env=env, capture_output=True,
                   timeout=300, check=True)


@pytest.mark.skipif(shutil.which("s3cmd") is None, reason="s3cmd is installed by "
                    "scripts/setup.sh (Debian package s3cmd)")
def test_s3cmd_put_get_ls_multipart(cluster, s3, tmp_path):
    bucket = f"sc-{uuid.uuid4().hex[:8]}"
    host = cluster.api[0].env["S3_LISTEN_ADDRESS"]
    config = tmp_path / "s3cfg"
    config.write_text(f"[default]\naccess_key = {Config.s3_access_key}\n"
                      f"secret_key = {Config.s3_secret_key}\nhost_base = {host}\n"
                      f"host_bucket = {host}\nuse_https = False\nbucket_location = us-east-1\n"
                      "signature_v2 = False\n")

    def s3cmd(*args: str) -> str:
        done = subprocess.run(["s3cmd", "-c", str(config), *args], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    s3cmd("mb", f"s3://{bucket}")
    small, large = tmp_path / "small.txt", tmp_path / "large.bin"
    small.write_text("s3cmd says hello\n")
    large.write_bytes(os.urandom(16 * 1024 * 1024 + 5))
    s3cmd("put", str(small), f"s3://{bucket}/small.txt")
    s3cmd("put", "--multipart-chunk-size-mb=5", str(large), f"s3://{bucket}/large.bin")
    listing = s3cmd("ls", f"s3://{bucket}/")
    assert "small.txt" in listing and "large.bin" in listing
    s3cmd("get", f"s3://{bucket}/large.bin", str(tmp_path / "large.back"))
    assert (tmp_path / "large.back").read_bytes() == large.read_bytes()
    s3cmd("del", f"s3://{bucket}/small.txt", f"s3://{bucket}/large.bin")
    s3cmd("rb", f"s3://{bucket}")


def test_curl_aws_sigv4(cluster, s3, tmp_path):
    bucket = f"curl-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    source = tmp_path / "hello.txt"
    source.write_text("signed by curl\n")
    common = ["curl", "-sS", "--fail-with-body", "--aws-sigv4", "aws:amz:us-east-1:s3",
              "--user", f"{Config.s3_access_key}:{Config.s3_secret_key}"]
    url = f"{s3_endpoint(cluster)}/{bucket}/hello.txt"
    # curl 7.88 signs the empty payload's hash for uploads unless told otherwise.
    put = subprocess.run(common + ["-T", str(source), "-H",
                                   "x-amz-content-sha256: UNSIGNED-PAYLOAD", url],
                         capture_output=True, text=True, timeout=60)
    assert put.returncode == 0, put.stdout + put.stderr
    got = subprocess.run(common + [url], capture_output=True, text=True, timeout=60)
    assert got.stdout == "signed by curl\n", got.stderr
    s3.delete_object(Bucket=bucket, Key="hello.txt")
    s3.delete_bucket(Bucket=bucket)
