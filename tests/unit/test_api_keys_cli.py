"""``stemkube-api keys`` on local mode's store, and which auth mode a service starts in:
open on loopback until a key exists, required elsewhere, refused without a key."""

import argparse
import datetime
import json
from pathlib import Path

import pytest

from stemkube_api import cli, keys_cli
from stemkube_api.auth import admin, keys
from stemkube_api.auth.modes import is_loopback, kubernetes_mode, local_mode
from stemkube_api.local.keys import SqliteKeyStore

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("myhost.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_local_mode_is_open_only_on_loopback_before_the_first_key() -> None:
    assert local_mode("127.0.0.1", no_auth=False, has_keys=False) == "open-until-keys"
    assert local_mode("127.0.0.1", no_auth=False, has_keys=True) == "open-until-keys"
    assert local_mode("0.0.0.0", no_auth=False, has_keys=True) == "required"
    assert local_mode("0.0.0.0", no_auth=False, has_keys=False) is None  # refuse to start
    assert local_mode("0.0.0.0", no_auth=True, has_keys=False) == "off"
    assert kubernetes_mode("required", no_auth=False) == "required"
    assert kubernetes_mode("required", no_auth=True) == "off"


def _args(*argv: str) -> argparse.Namespace:
    return cli._parser().parse_args(["--local", *argv])


def test_local_mode_on_an_open_address_without_keys_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(cli.CliError) as refused:
        cli.local_keys(_args("--host", "0.0.0.0"), {}, tmp_path)
    message = str(refused.value)
    assert f"stemkube-api keys create --local --data-dir {tmp_path} --name NAME" in message
    assert "--no-auth" in message
    # The command line says it and exits 2, before anything listens.
    argv = ["--local", "--host", "0.0.0.0", f"--data-dir={tmp_path}", "--workers=1"]
    assert cli.main(argv) == 2
    assert "--no-auth" in capsys.readouterr().err
    store, mode = cli.local_keys(_args("--host", "0.0.0.0", "--no-auth"), {}, tmp_path)
    assert (store, mode) == (None, "off")
    assert cli.local_keys(_args("--host", "0.0.0.0"), {"STEMKUBE_AUTH": "off"}, tmp_path)[1] == (
        "off"
    )
    SqliteKeyStore(tmp_path).add(keys.create("ops", "ops", "admin", NOW).record)
    assert cli.local_keys(_args("--host", "0.0.0.0"), {}, tmp_path)[1] == "required"
    assert cli.local_keys(_args(), {}, tmp_path)[1] == "open-until-keys"


def test_the_metrics_port(tmp_path: Path) -> None:
    parser = cli._parser()
    assert cli.metrics_server(parser.parse_args([]), 9090) is not None
    assert cli.metrics_server(parser.parse_args(["--local"]), None) is None
    assert cli.metrics_server(parser.parse_args(["--metrics-port=0"]), 9090) is None
    chosen = cli.metrics_server(parser.parse_args(["--host=0.0.0.0", "--metrics-port=9100"]), None)
    assert chosen is not None
    assert (chosen.host, chosen.port) == ("0.0.0.0", 9100)
    with pytest.raises(cli.CliError, match="their own"):
        cli.metrics_server(parser.parse_args(["--port=9100", "--metrics-port=9100"]), None)


def test_expiries() -> None:
    assert admin.parse_expiry("30d", NOW) == NOW + datetime.timedelta(days=30)
    assert admin.parse_expiry("12h", NOW) == NOW + datetime.timedelta(hours=12)
    assert admin.parse_expiry("2w", NOW) == NOW + datetime.timedelta(weeks=2)
    assert admin.parse_expiry("2027-01-01T00:00:00Z", NOW) == datetime.datetime(
        2027, 1, 1, tzinfo=datetime.UTC
    )
    assert admin.parse_expiry("2027-01-01", NOW) == datetime.datetime(
        2027, 1, 1, tzinfo=datetime.UTC
    )
    for bad, words in (("0d", "positive"), ("soon", "a duration"), ("2020-01-01", "past")):
        with pytest.raises(ValueError, match=words):
            admin.parse_expiry(bad, NOW)


def keys_cmd(
    capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str
) -> tuple[int, str, str]:
    command, *rest = argv
    code = keys_cli.main([command, "--local", f"--data-dir={data_dir}", *rest], env={})
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_key_alone_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = keys_cmd(
        capsys,
        tmp_path,
        "create",
        "--name=ci",
        "--tenant=acme",
        "--expires=30d",
        "--requests-per-minute=60",
        "--max-active-jobs=2",
        "--audio-minutes-per-day=90",
        "--max-bytes-stored=10GB",
    )
    assert code == 0
    key = out.strip()
    assert out == f"{key}\n"  # KEY=$(stemkube-api keys create ...) gets the key and only it
    parts = keys.split(key)
    assert parts is not None
    assert "shown once" in err
    assert "ci" in err
    assert key not in err
    [record] = SqliteKeyStore(tmp_path).records()
    assert (record.name, record.tenant, record.role, record.key_id) == (
        "ci",
        "acme",
        "user",
        parts[0],
    )
    assert record.quotas == keys.Quotas(60, 2, 90.0, 10 * 1024**3)
    assert keys.matches(record, parts[1])
    assert parts[1] not in (tmp_path / "keys.sqlite3").read_bytes().decode(errors="replace")

    code, _, err = keys_cmd(capsys, tmp_path, "create", "--name=ci", "--tenant=acme")
    assert (code, "exists" in err) == (1, True)
    code, _, err = keys_cmd(capsys, tmp_path, "create", "--name=x", "--tenant=Acme Corp")
    assert (code, "tenant" in err) == (1, True)
    code, _, err = keys_cmd(capsys, tmp_path, "create", "--name=x", "--tenant=a", "--expires=x")
    assert (code, "--expires" in err) == (1, True)


def test_list_shows_everything_but_hashes_and_revoke_removes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_cmd(capsys, tmp_path, "create", "--name=ops", "--tenant=ops", "--role=admin")
    keys_cmd(capsys, tmp_path, "create", "--name=ci", "--tenant=acme", "--requests-per-minute=5")
    [ci, ops] = SqliteKeyStore(tmp_path).records()
    code, out, _ = keys_cmd(capsys, tmp_path, "list")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == ["NAME", "ID", "TENANT", "ROLE", "CREATED", "EXPIRES", "QUOTAS"]
    assert lines[0].split()[:4] == ["ci", ci.key_id, "acme", "user"]
    assert lines[0].split()[-2:] == ["never", "requests/min=5"]
    assert lines[1].split()[:4] == ["ops", ops.key_id, "ops", "admin"]
    assert ci.digest not in out
    code, out, _ = keys_cmd(capsys, tmp_path, "list", "--json")
    listed = json.loads(out)
    assert [k["name"] for k in listed] == ["ci", "ops"]
    assert listed[0]["quotas"] == {"requests_per_minute": 5}
    assert "sha256" not in out
    assert ci.digest not in out
    code, out, _ = keys_cmd(capsys, tmp_path, "revoke", ci.key_id)
    assert (code, f"revoked key 'ci' (id {ci.key_id}" in out) == (0, True)
    code, _, err = keys_cmd(capsys, tmp_path, "revoke", "ci")
    assert (code, "no key named or with id 'ci'" in err) == (1, True)
    assert [r.name for r in SqliteKeyStore(tmp_path).records()] == ["ops"]


def test_an_expired_key_is_listed_as_such() -> None:
    old = keys.create("old", "acme", "user", NOW, expires=NOW + datetime.timedelta(hours=1))
    text = admin.table([old.record], NOW + datetime.timedelta(hours=2))
    assert "2026-11-28T13:00:00Z (expired)" in text
    assert admin.describe(old.record, NOW)["expired"] is False


def test_the_keys_command_comes_before_the_servers_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["keys", "list", "--local", f"--data-dir={tmp_path}"])
    assert code == 0
    assert capsys.readouterr().out.split() == [
        "NAME",
        "ID",
        "TENANT",
        "ROLE",
        "CREATED",
        "EXPIRES",
        "QUOTAS",
    ]
    with pytest.raises(SystemExit):
        cli.main(["keys", "create", "--local", "--name=x"])  # --tenant is required
