"""`blockhost web serve|export`: only our files, a config.json of public facts, a status
endpoint that reveals no secret, one-line failures."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from listener.cli.main import main
from listener.devkit.devenv import DevEnv
from listener.ops.web import PAGES, pages_dir
from tests.web.pages import served

SECRET_RPC_ENV = "BLOCKHOST_CHAIN__RPC_URLS"


def _config_json(env: DevEnv) -> dict[str, object]:
    return {
        "chainId": 31337,
        "subscriptionContract": env.deployment["subscriptions"],
        "nftContract": env.deployment["nft"],
        "stablecoin": env.deployment["stablecoin"],
        "serverPublicKey": "0x" + env.server_public_key.hex(),
        "rpcUrl": env.anvil.url,
    }


def test_export_writes_pages_and_public_config(dev_env: DevEnv, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # the operator's RPC carries an API key; it must not reach the pages
    monkeypatch.setenv(SECRET_RPC_ENV, dev_env.anvil.url + "/?apikey=SECRETKEY")
    out = tmp_path / "site"
    assert main(["--config", str(dev_env.config_path), "web", "export", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*PAGES, "config.json"])
    for name in PAGES:
        assert (out / name).read_bytes() == (pages_dir() / name).read_bytes()
    text = (out / "config.json").read_text()
    assert "SECRETKEY" not in text
    assert json.loads(text) == _config_json(dev_env)


def test_export_names_what_is_missing(dev_env: DevEnv, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BLOCKHOST_CHAIN__NFT_CONTRACT", "")
    assert main(["--config", str(dev_env.config_path), "web", "export",
                 "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "chain.nft_contract" in err and err.count("\n") == 1


def test_server_serves_only_its_files(dev_env: DevEnv) -> None:
    with served(dev_env) as base:
        config = requests.get(base + "config.json", timeout=10)
        assert config.status_code == 200 and config.headers["Cache-Control"] == "no-store"
        assert config.json() == {**_config_json(dev_env), "statusUrl": "status"}
        page = requests.get(base + "signup.html", timeout=10)
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.content == (pages_dir() / "signup.html").read_bytes()
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        root = requests.get(base, timeout=10, allow_redirects=False)
        assert root.status_code == 302 and root.headers["Location"] == "signup.html"
        host, port = base.removeprefix("http://").strip("/").split(":")
        for path in ("web.py", "../signup.html", "%2e%2e/etc/passwd", "blockhost_data/",
                     "signup.html/", "style.css", "build.mjs", ".."):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("GET", "/" + path)  # sent as is (no client-side normalising)
            assert connection.getresponse().status == 404, path
            connection.close()
        assert requests.post(base + "signup.html", timeout=10).status_code == 501


def test_status_endpoint(dev_env: DevEnv) -> None:
    with served(dev_env) as base:
        for query in ("", "?subscription=x", "?subscription=0", "?subscription=1&subscription=2"):
            response = requests.get(base + "status" + query, timeout=10)
            assert response.status_code == 400, query
        unknown = requests.get(base + "status?subscription=7", timeout=10)
        assert unknown.status_code == 404
        assert unknown.json() == {"subscription": 7, "state": "unknown", "vm_running": False}


def test_serve_command_runs_and_fails_in_one_line(dev_env: DevEnv) -> None:
    cli = [sys.executable, "-m", "listener.cli", "--config", str(dev_env.config_path), "web",
           "serve"]
    bad = subprocess.run([*cli, "--listen", "nowhere"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "HOST:PORT" in bad.stderr
    with served(dev_env) as base:  # a port that is taken
        port = base.rsplit(":", 1)[1].strip("/")
        taken = subprocess.run([*cli, "--listen", f"127.0.0.1:{port}"], capture_output=True,
                               text=True, timeout=60, check=False)
        assert taken.returncode == 1 and "cannot listen on" in taken.stderr
    process = subprocess.Popen([*cli, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving the signup page on http://127.0.0.1:"), line
        url = line.split()[5]
        assert requests.get(url, timeout=10).content == (pages_dir() / "signup.html").read_bytes()
    finally:
        process.terminate()
        process.wait(timeout=30)


def _serve_https(cli: list[str], cert: Path, key: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*cli, "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
                             "--tls-key", str(key)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_serve_over_https_with_the_operators_certificate(dev_env: DevEnv,
                                                          tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "web.crt", tmp_path / "web.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    cli = [sys.executable, "-m", "listener.cli", "--config", str(dev_env.config_path), "web",
           "serve"]

    def refused(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, "--listen", "127.0.0.1:0", *args], capture_output=True,
                              text=True, timeout=60, check=False)

    half = refused("--tls-cert", str(cert))
    assert half.returncode == 2 and "go together" in half.stderr and half.stderr.count("\n") == 1
    key.chmod(0o644)
    loose = refused("--tls-cert", str(cert), "--tls-key", str(key))
    assert loose.returncode == 1 and f"chmod 600 {key}" in loose.stderr
    key.chmod(0o600)
    wrong = refused("--tls-cert", str(ca_file), "--tls-key", str(key))  # not the key's cert
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
    assert "check that both are PEM" in wrong.stderr

    process = _serve_https(cli, cert, key)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("serving the signup page on https://127.0.0.1:"), line
        url = line.split()[5]
        host, port = url.removeprefix("https://").split("/")[0].split(":")
        # a client that connects and never says hello holds one thread, not the server
        silent = socket.create_connection((host, int(port)), timeout=10)
        page = requests.get(url, timeout=10, verify=str(ca_file))  # TLS verified against the CA
        silent.close()
        assert page.content == (pages_dir() / "signup.html").read_bytes()
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=10)  # an unknown CA is refused: the server is real TLS
        # plain HTTP to the TLS port gets nowhere, and the server keeps serving
        plain = http.client.HTTPConnection(host, int(port), timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.request("GET", "/signup.html")
            plain.getresponse()
        plain.close()
        context = ssl.create_default_context(cafile=str(ca_file))
        old = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
        old.request("GET", "/config.json")
        assert old.getresponse().status == 200
        old.close()
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "Traceback" not in err, err[-2000:]
