"""Where API keys are kept, on real parts: Secrets on the real API server (two API replicas'
watches), SQLite in a data folder. A revocation reaches every reader within seconds."""

import datetime
import functools
from pathlib import Path

import pytest
from kubernetes import client

from stemkube_api.auth import keys
from stemkube_api.auth.store import KeyStore
from stemkube_api.kubernetes.keys import KEY_LABEL, SecretKeyStore, secret_name
from stemkube_api.local.keys import SqliteKeyStore
from tests.harness.fixtures import Cluster
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


def seen(store: KeyStore, key_id: str) -> bool:
    return store.lookup(key_id) is not None


def unseen(store: KeyStore, key_id: str) -> bool:
    return store.lookup(key_id) is None


def exercise(writer: KeyStore, readers: list[KeyStore]) -> None:
    assert not writer.any_keys()
    ci = keys.create("ci", "acme", "user", NOW, quotas=keys.Quotas(requests_per_minute=5))
    ops = keys.create("ops", "acme", "admin", NOW, expires=NOW + datetime.timedelta(days=30))
    writer.add(ci.record)
    writer.add(ops.record)
    for reader in readers:
        # Each Secret is its own watch event: wait for the later one too.
        for new in (ci, ops):
            wait_for(functools.partial(seen, reader, new.record.key_id), 10, "the key seen")
        assert reader.lookup(ci.record.key_id) == ci.record
        assert reader.lookup(ops.record.key_id) == ops.record
        assert reader.any_keys()
    assert [r.name for r in writer.records()] == ["ci", "ops"]
    assert [r.name for r in writer.revoke("ci")] == ["ci"]
    for reader in readers:
        wait_for(functools.partial(unseen, reader, ci.record.key_id), 10, "the revocation seen")
    assert [r.name for r in writer.revoke(ops.record.key_id)] == ["ops"]
    assert writer.revoke("nobody") == []


def test_secrets_hold_hashes_and_every_replica_sees_a_revocation(
    cluster: Cluster, stemkube_namespace: str
) -> None:
    replicas = [SecretKeyStore(cluster.api, stemkube_namespace) for _ in range(2)]
    for replica in replicas:
        replica.start()
    cli = SecretKeyStore(cluster.api, stemkube_namespace, watch=False)  # keys create/revoke
    try:
        for replica in replicas:
            assert replica.wait_synced(10)
        exercise(cli, list(replicas))
        # What a Secret holds: the hash and the record, never the key.
        new = keys.create("audit", "acme", "user", NOW)
        cli.add(new.record)
        secret = client.CoreV1Api(cluster.api).read_namespaced_secret(
            secret_name(new.record.key_id), stemkube_namespace
        )
        assert secret.metadata.labels[KEY_LABEL] == "true"
        secret_part = keys.split(new.plaintext)[1]  # type: ignore[index]
        assert secret_part not in str(secret.data)
        assert new.plaintext not in str(secret.data)
        cli.revoke("audit")
    finally:
        for replica in replicas:
            replica.stop()


def test_sqlite_store_is_read_on_every_lookup(tmp_path: Path) -> None:
    server, command_line = SqliteKeyStore(tmp_path), SqliteKeyStore(tmp_path)
    try:
        exercise(command_line, [server])
        assert (tmp_path / "keys.sqlite3").stat().st_mode & 0o077 == 0
    finally:
        server.close()
        command_line.close()
