"""TLS to the broker: a CA and certificates made here, Mosquitto with a TLS listener (and,
for `edged ask`, a password file)."""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import hashlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.helpers import ROOT, Daemon, free_port, mosquitto_binary

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.timezone.utc)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(d: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(d / name, cert, key)
    return cert, key


def make_leaf(
    d: Path,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    expired: bool = False,
    server: bool = True,
) -> Path:
    key = _key()
    start, end = (
        (NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=1))
        if expired
        else (NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=30))
    )
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if server:
        import ipaddress

        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    _write(d / name, b.sign(ca[1], hashes.SHA256()), key)
    return d / name


def password_line(user: str, password: str) -> str:
    """A Mosquitto password file line (the ``$6$`` form: SHA-512 of password then salt)."""
    salt = secrets.token_bytes(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


class TlsBroker:
    def __init__(
        self,
        d: Path,
        server: Path,
        ca: Path,
        require_client_cert: bool,
        users: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        conf = d / f"mosq-{self.port}.conf"
        auth = "allow_anonymous true\n"
        if users:  # only these users, with these passwords
            pw = d / f"mosq-{self.port}.passwd"
            pw.write_text("".join(password_line(u, p) for u, p in users.items()))
            auth = f"allow_anonymous false\npassword_file {pw}\n"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{auth}"
            f"cafile {ca.with_suffix('.pem')}\ncertfile {server.with_suffix('.pem')}\n"
            f"keyfile {server.with_suffix('.key')}\n"
            f"require_certificate {'true' if require_client_cert else 'false'}\n"
            f"user {getpass.getuser()}\n"
        )
        log_path = d / f"mosq-{self.port}.log"
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10  # listening, however long that takes on a busy machine
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                assert self.proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "mosquitto (TLS) did not start listening"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def tls_client(port: int, ca: Path, cert: Path) -> paho.Client:
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"tls-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    ctx = ssl.create_default_context(cafile=str(ca.with_suffix(".pem")))
    ctx.load_cert_chain(str(cert.with_suffix(".pem")), str(cert.with_suffix(".key")))
    c.tls_set_context(ctx)
    c.connect("127.0.0.1", port)
    return c


def tls_env(ca: Path, client: Path | None) -> dict[str, str]:
    """The ``EDGED_*`` settings for TLS with this CA and, optionally, client certificate."""
    env = {"EDGED_MQTT__TLS": "true", "EDGED_MQTT__CA_FILE": str(ca.with_suffix(".pem"))}
    if client is not None:
        env["EDGED_MQTT__CERT_FILE"] = str(client.with_suffix(".pem"))
        env["EDGED_MQTT__KEY_FILE"] = str(client.with_suffix(".key"))
    return env


def daemon(
    tmp_path: Path, port: int, ca: Path, client: Path | None, name: str, **extra: str
) -> Daemon:
    env = {"EDGED_LOCAL__BACKEND": "fake", **tls_env(ca, client), **extra}
    d = Daemon(
        broker_port=port,
        device_id=f"tls{uuid.uuid4().hex[:6]}",
        log_path=tmp_path / f"{name}.log",
        extra_env=env,
    )
    d.start(wait_online=False)
    return d


def wait_log(d: Daemon, needle: str, timeout_s: float = 15.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if needle in d.logs():
            return True
        time.sleep(0.1)
    return False


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    make_ca(tmp_path, "other-ca")  # a CA that did not sign the broker's certificate
    server = make_leaf(tmp_path, "server", ca)
    expired = make_leaf(tmp_path, "expired", ca, expired=True)
    client = make_leaf(tmp_path, "client", ca, server=False)
    good = TlsBroker(tmp_path, server, tmp_path / "ca", require_client_cert=True)
    old = TlsBroker(tmp_path, expired, tmp_path / "ca", require_client_cert=False)
    daemons = []
    try:
        d = daemon(tmp_path, good.port, tmp_path / "ca", client, "good")
        daemons.append(d)
        assert wait_log(d, "event=mqtt_connected"), d.logs()
        # a request over TLS is answered (the fake backend echoes)
        got: list[dict[str, object]] = []
        c = tls_client(good.port, tmp_path / "ca", client)
        c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
        c.loop_start()
        c.subscribe(f"edged/{d.device_id}/response/t1", qos=1)
        time.sleep(0.3)
        c.publish(
            f"edged/{d.device_id}/request", json.dumps({"id": "t1", "prompt": "over tls"}), qos=1
        )
        end = time.monotonic() + 10
        while time.monotonic() < end and not any(m.get("type") == "result" for m in got):
            time.sleep(0.05)
        c.loop_stop()
        c.disconnect()
        assert [m["text"] for m in got if m.get("type") == "result"] == ["over tls"]
        # no client certificate, where the broker requires one: refused
        d2 = daemon(tmp_path, good.port, tmp_path / "ca", None, "nocert")
        daemons.append(d2)
        assert wait_log(d2, "event=mqtt_connect_failed"), d2.logs()
        assert "event=mqtt_connected" not in d2.logs()
        # the wrong CA: the broker's certificate is refused
        d3 = daemon(tmp_path, good.port, tmp_path / "other-ca", client, "wrongca")
        daemons.append(d3)
        assert wait_log(d3, "CERTIFICATE_VERIFY_FAILED"), d3.logs()
        assert "event=mqtt_connected" not in d3.logs()
        # an expired broker certificate: refused
        d4 = daemon(tmp_path, old.port, tmp_path / "ca", None, "expired")
        daemons.append(d4)
        assert wait_log(d4, "certificate has expired"), d4.logs()
        assert "event=mqtt_connected" not in d4.logs()
    finally:
        for x in daemons:
            x.stop()
        good.stop()
        old.stop()


EDGED = Path(sys.executable).parent / "edged"  # the console script of this venv


def edged_ask(
    port: int, device: str, prompt: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``edged ask`` as a user runs it, configured only through the environment."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EDGED_") and k != "CREDENTIALS_DIRECTORY"
    }
    return subprocess.run(
        [str(EDGED), "ask", "--timeout-s", "20", prompt],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**clean, "EDGED_DEVICE_ID": device, "EDGED_MQTT__PORT": str(port), **env},
    )


def assert_fails_cleanly(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, nothing on stdout, one ``edged ask: ...`` line on stderr naming the cause."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "", r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edged ask: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_ask_over_tls_with_a_password(tmp_path: Path) -> None:
    assert EDGED.is_file(), f"{EDGED}: install edged in the venv (pip install -e .)"
    ca = make_ca(tmp_path, "ca")
    make_ca(tmp_path, "other-ca")
    server = make_leaf(tmp_path, "server", ca)
    client = make_leaf(tmp_path, "client", ca, server=False)
    broker = TlsBroker(
        tmp_path, server, tmp_path / "ca", require_client_cert=True, users={"edged": "s3cret pass"}
    )
    d = daemon(
        tmp_path,
        broker.port,
        tmp_path / "ca",
        client,
        "ask-daemon",
        EDGED_MQTT__USERNAME="edged",
        EDGED_MQTT_PASSWORD="s3cret pass",
        EDGED_LOG__LEVEL="debug",
    )
    try:
        assert wait_log(d, "event=mqtt_connected"), d.logs()
        good = {**tls_env(tmp_path / "ca", client), "EDGED_MQTT__USERNAME": "edged"}

        # the password from $EDGED_MQTT_PASSWORD: answered (the fake backend echoes)
        r = edged_ask(
            broker.port, d.device_id, "over tls", {**good, "EDGED_MQTT_PASSWORD": "s3cret pass"}
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "over tls"
        assert "route=local" in r.stderr and "Traceback" not in r.stderr

        # ... and from the systemd credential, as the service has it
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "mqtt-password").write_text("s3cret pass\n")
        r = edged_ask(
            broker.port,
            d.device_id,
            "from the credential",
            {**good, "CREDENTIALS_DIRECTORY": str(creds)},
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "from the credential"

        # a wrong password: the login is refused
        r = edged_ask(broker.port, d.device_id, "x", {**good, "EDGED_MQTT_PASSWORD": "wrong"})
        assert_fails_cleanly(r, "refused the login", "EDGED_MQTT_PASSWORD")
        # no password at all: said so
        r = edged_ask(broker.port, d.device_id, "x", good)
        assert_fails_cleanly(r, "refused the login", "no password")

        # the wrong CA: the broker's certificate is not trusted
        wrong_ca = {
            **good,
            **tls_env(tmp_path / "other-ca", client),
            "EDGED_MQTT_PASSWORD": "s3cret pass",
        }
        r = edged_ask(broker.port, d.device_id, "x", wrong_ca)
        assert_fails_cleanly(r, "TLS", "not trusted", f"127.0.0.1:{broker.port}")

        # no client certificate where the broker requires one: the broker hangs up
        no_cert = {
            **tls_env(tmp_path / "ca", None),
            "EDGED_MQTT__USERNAME": "edged",
            "EDGED_MQTT_PASSWORD": "s3cret pass",
        }
        r = edged_ask(broker.port, d.device_id, "x", no_cert)
        assert_fails_cleanly(r, f"127.0.0.1:{broker.port} (TLS)", "client certificate")

        # a CA file that is not there: named before any connection
        r = edged_ask(
            broker.port,
            d.device_id,
            "x",
            {**good, "EDGED_MQTT__CA_FILE": str(tmp_path / "nope.pem")},
        )
        assert_fails_cleanly(r, "cannot set up TLS", "nope.pem")

        # without TLS, to the TLS listener: no answer either, and no traceback
        plain = {"EDGED_MQTT__USERNAME": "edged", "EDGED_MQTT_PASSWORD": "s3cret pass"}
        r = edged_ask(broker.port, d.device_id, "x", plain)
        assert_fails_cleanly(r, f"127.0.0.1:{broker.port}")

        # the refused clients did not disturb the daemon: it still answers
        r = edged_ask(
            broker.port, d.device_id, "still here", {**good, "EDGED_MQTT_PASSWORD": "s3cret pass"}
        )
        assert r.returncode == 0 and r.stdout.strip() == "still here", r.stderr
        assert "s3cret" not in d.logs()  # the password is never logged
    finally:
        d.stop()
        broker.stop()
