"""Who may call the API (issue 5, "Access"): API keys kept as digests, Bearer credentials, the
per-key upload rate, and requests visible only to the key id that made them."""

from __future__ import annotations

import hashlib

import pytest

from local_profile import apikeys
from shared.config import ConfigError, Settings, parse_api_keys, parse_rate
from shared.domain.access import (
    KEY_PREFIX,
    AccessDenied,
    ApiKeyring,
    bearer_token,
    key_digest,
    new_api_key,
)
from shared.entrypoints import http_api as api
from tests.fakes import FakeWorld, fake_world

ALICE = new_api_key("alice")
BOB = new_api_key("bob")
CSV = b"Serial Number,Product Name,Input Image Urls\n1,Lamp,https://img.test/a.jpg\n"


def keyed_world(rate: tuple[int, float] | None = (2, 60.0)) -> FakeWorld:
    return fake_world(
        Settings(
            api_keys=parse_api_keys(f"{ALICE.entry},{BOB.entry}"),
            upload_rate_limit=rate,
        )
    )


def bearer(key: str) -> str:
    return f"Bearer {key}"


# --- keys and their digests -------------------------------------------------------------------


def test_a_new_key_is_random_and_its_entry_holds_only_the_digest() -> None:
    made = new_api_key("alice")
    assert made.key.startswith(KEY_PREFIX)
    assert len(made.key) >= len(KEY_PREFIX) + 43  # 32 random bytes
    assert made.entry == f"alice:{hashlib.sha256(made.key.encode()).hexdigest()}"
    assert made.key not in made.entry
    assert new_api_key("alice").key != made.key


def test_api_keys_setting_is_parsed_into_ids_and_digests() -> None:
    digest = key_digest("k")
    settings = Settings.from_env({"API_KEYS": f" alice:{digest} , bob:{digest.upper()},"})
    assert settings.api_keys == (("alice", digest), ("bob", digest))


@pytest.mark.parametrize(
    "value",
    [
        "alice",  # no digest
        "alice:isk_rawkeypastedbymistake",  # a raw key instead of its digest
        f"alice:{'a' * 63}",
        f"al ice:{'a' * 64}",
        f":{'a' * 64}",
    ],
)
def test_a_malformed_api_keys_entry_stops_the_service_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"API_KEYS": value})
    assert "isk_rawkey" not in str(caught.value)
    assert "entry 1" in str(caught.value)


def test_upload_rate_setting() -> None:
    assert Settings().upload_rate_limit == (30, 60.0)
    assert parse_rate("5/1h") == (5, 3600.0)
    assert parse_rate("off") is None
    assert Settings.from_env({"UPLOAD_RATE_LIMIT": "0"}).upload_rate_limit is None
    for bad in ("x/1m", "5/", "-1/1m", "5/1parsec"):
        with pytest.raises(ConfigError):
            parse_rate(bad)


def test_the_cli_prints_the_key_once_and_the_entry_that_authenticates_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert apikeys.main(["new", "acme"]) == 0
    out = capsys.readouterr().out
    [key] = [w for w in out.split() if w.startswith(KEY_PREFIX)]
    [entry] = [w for w in out.split() if w.startswith("acme:")]
    assert out.count(key) == 1
    keyring = ApiKeyring(parse_api_keys(entry), open_access=False)
    assert keyring.identify(bearer(key)) == "acme"


def test_the_cli_refuses_a_name_that_cannot_be_a_key_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert apikeys.main(["new", "two words"]) == 2
    assert KEY_PREFIX not in capsys.readouterr().out


# --- the keyring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Basic YWxpY2U6cHc=", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_is_read_from_the_authorization_header(
    header: str | None, token: str | None
) -> None:
    assert bearer_token(header) == token


def test_each_key_is_known_by_its_id() -> None:
    keyring = ApiKeyring(parse_api_keys(f"{ALICE.entry},{BOB.entry}"), open_access=False)
    assert keyring.identify(bearer(ALICE.key)) == "alice"
    assert keyring.identify(bearer(BOB.key)) == "bob"


def test_two_keys_may_share_an_id_so_a_client_can_rotate() -> None:
    old, new = new_api_key("alice"), new_api_key("alice")
    keyring = ApiKeyring(parse_api_keys(f"{old.entry},{new.entry}"), open_access=False)
    assert keyring.identify(bearer(old.key)) == keyring.identify(bearer(new.key)) == "alice"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, None),
        ("Basic YWxpY2U6cHc=", None),
        (bearer("isk_not-a-key"), "invalid_token"),
        # The digest itself is not a key: what is configured cannot be used to get in.
        (bearer(ALICE.entry.split(":")[1]), "invalid_token"),
        (bearer(ALICE.key + "x"), "invalid_token"),
    ],
)
def test_anything_but_a_known_key_is_denied(header: str | None, code: str | None) -> None:
    keyring = ApiKeyring(parse_api_keys(ALICE.entry), open_access=False)
    with pytest.raises(AccessDenied) as caught:
        keyring.identify(header)
    assert caught.value.code == code


def test_open_access_needs_no_keys_and_the_emulator() -> None:
    assert Settings(firestore_emulator_host="127.0.0.1:1").open_access
    # Against real Firestore (production) a missing API_KEYS locks everyone out.
    assert not Settings().open_access
    assert not Settings(firestore_emulator_host="h:1", api_keys=(("a", "0" * 64),)).open_access
    with pytest.raises(AccessDenied):
        ApiKeyring((), open_access=False).identify(bearer(ALICE.key))
    assert ApiKeyring((), open_access=True).identify(None) is None


# --- admission at the HTTP layer (shared.entrypoints.http_api.admit) ----------------------------


def test_no_key_is_401_with_a_bearer_challenge() -> None:
    answer = api.admit(keyed_world().services, None, uploading=False)
    assert isinstance(answer, api.ApiResponse)
    assert answer.status == 401
    assert answer.body["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="imgsvc"'


def test_a_wrong_key_is_401_invalid_token() -> None:
    answer = api.admit(keyed_world().services, bearer("isk_guess"), uploading=True)
    assert isinstance(answer, api.ApiResponse)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="imgsvc", error="invalid_token"'
    assert "isk_guess" not in str(answer.body)


def test_a_known_key_is_admitted_as_its_id() -> None:
    assert api.admit(keyed_world().services, bearer(ALICE.key), uploading=True) == api.Caller(
        "alice"
    )


def test_uploads_beyond_the_keys_rate_are_429_with_retry_after() -> None:
    w = keyed_world(rate=(2, 60.0))
    for _ in range(2):
        assert isinstance(api.admit(w.services, bearer(ALICE.key), uploading=True), api.Caller)
    refused = api.admit(w.services, bearer(ALICE.key), uploading=True)
    assert isinstance(refused, api.ApiResponse)
    assert refused.status == 429
    assert refused.body["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    # The limit is per key, and reading a status is not an upload.
    assert isinstance(api.admit(w.services, bearer(BOB.key), uploading=True), api.Caller)
    assert isinstance(api.admit(w.services, bearer(ALICE.key), uploading=False), api.Caller)
    w.upload_rate.new_window()
    assert isinstance(api.admit(w.services, bearer(ALICE.key), uploading=True), api.Caller)


def test_unauthenticated_uploads_do_not_use_up_a_keys_rate() -> None:
    w = keyed_world(rate=(1, 60.0))
    for _ in range(5):
        api.admit(w.services, bearer("isk_guess"), uploading=True)
    assert w.upload_rate.counts == {}


def test_no_rate_limit_when_turned_off() -> None:
    w = keyed_world(rate=None)
    for _ in range(10):
        assert isinstance(api.admit(w.services, bearer(ALICE.key), uploading=True), api.Caller)


def test_a_request_is_visible_only_to_the_key_id_that_made_it() -> None:
    w = keyed_world()
    accepted = api.upload(
        w.services,
        is_multipart=True,
        file=api.UploadedFile(CSV, "p.csv", "text/csv"),
        webhook_url=None,
        owner="alice",
    )
    request_id = accepted.body["request_id"]
    assert w.requests.records[request_id].owner == "alice"
    assert api.status(w.services, request_id, {}, owner="alice").status == 200
    for other in ("bob", None):
        answer = api.status(w.services, request_id, {}, owner=other)
        # The same answer as for an id that does not exist: nothing to learn by probing.
        unknown = api.status(w.services, "A" * 22, {}, owner=other)
        assert answer.status == unknown.status == 404
        assert answer.body["error"]["code"] == unknown.body["error"]["code"] == "not_found"
