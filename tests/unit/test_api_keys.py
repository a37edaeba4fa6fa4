"""API keys: their form, hashing, and who a request's headers say is calling."""

import datetime

import pytest

from stemkube_api.auth import caller, keys

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


def lookup_of(*records: keys.KeyRecord) -> caller.Lookup:
    table = {r.key_id: r for r in records}
    return table.get


def test_a_key_is_random_recognisable_and_stored_only_as_a_hash() -> None:
    one, two = keys.create("ci", "acme", "user", NOW), keys.create("ci", "acme", "user", NOW)
    assert one.plaintext.startswith(keys.PREFIX)
    assert one.plaintext != two.plaintext
    key_id, secret = keys.split(one.plaintext) or ("", "")
    assert key_id == one.record.key_id
    assert len(secret) >= 43  # 32 random bytes
    assert secret not in repr(one.record)
    assert keys.matches(one.record, secret)
    assert not keys.matches(one.record, secret[:-1] + ("A" if secret[-1] != "A" else "B"))


@pytest.mark.parametrize(
    "text",
    ["", "stk_", "stk_abc_def", "sk_0123456789ab_" + "a" * 43, "stk_0123456789AB_" + "a" * 43],
)
def test_malformed_keys_do_not_split(text: str) -> None:
    assert keys.split(text) is None


def test_names_tenants_roles_and_expiry_are_checked() -> None:
    with pytest.raises(ValueError, match="tenant"):
        keys.create("ci", "Acme Corp", "user", NOW)
    with pytest.raises(ValueError, match="key name"):
        keys.create("", "acme", "user", NOW)
    with pytest.raises(ValueError, match="role"):
        keys.create("ci", "acme", "root", NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="past"):
        keys.create("ci", "acme", "user", NOW, expires=NOW - datetime.timedelta(seconds=1))


def test_the_caller_comes_from_either_header() -> None:
    new = keys.create("ci", "acme", "admin", NOW)
    lookup = lookup_of(new.record)
    for headers in (
        {"authorization": f"Bearer {new.plaintext}"},
        {"authorization": f"bearer  {new.plaintext} "},
        {"x-api-key": new.plaintext},
    ):
        who = caller.identify(headers, lookup, NOW)
        assert (who.tenant, who.role, who.key_name, who.admin) == ("acme", "admin", "ci", True)


def test_every_bad_key_is_the_same_401_but_an_expired_one_says_so() -> None:
    new = keys.create("ci", "acme", "user", NOW, expires=NOW + datetime.timedelta(days=1))
    other = keys.create("other", "acme", "user", NOW)
    lookup = lookup_of(new.record)
    wrong_secret = f"{keys.PREFIX}{new.record.key_id}_{keys.split(other.plaintext)[1]}"  # type: ignore[index]
    messages = set()
    for headers in (
        {"authorization": f"Bearer {other.plaintext}"},  # unknown (or revoked)
        {"authorization": f"Bearer {wrong_secret}"},
        {"x-api-key": "not-a-key"},
    ):
        with pytest.raises(caller.UnauthenticatedError) as raised:
            caller.identify(headers, lookup, NOW)
        messages.add(str(raised.value))
    assert len(messages) == 1
    with pytest.raises(caller.UnauthenticatedError, match="required"):
        caller.identify({}, lookup, NOW)
    later = NOW + datetime.timedelta(days=2)
    with pytest.raises(caller.UnauthenticatedError, match="expired"):
        caller.identify({"x-api-key": new.plaintext}, lookup, later)


def test_a_caller_sees_its_own_tenant_and_an_admin_sees_all() -> None:
    user = caller.Caller("acme", "user", "ci", "id")
    assert user.sees("acme")
    assert not user.sees("globex")
    assert not user.sees(None)
    assert caller.Caller("acme", "admin", "ops", "id").sees("globex")
