"""Passwords and tokens, without a server."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import jwt
import pytest
from argon2 import PasswordHasher, profiles

from auth.security import ALGORITHM, InvalidToken, Passwords, Tokens, load_or_create_secret

pytestmark = pytest.mark.unit

SECRET = "s" * 48


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords("cheapest")


def test_hashes_are_argon2id_and_verify(passwords):
    stored = passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert passwords.verify(stored, "correct horse") == (True, None)
    assert passwords.verify(stored, "wrong horse") == (False, None)


def test_the_same_password_hashes_differently_each_time(passwords):
    assert passwords.hash("pw123456") != passwords.hash("pw123456")


def test_a_hash_made_with_other_parameters_is_upgraded_on_login(passwords):
    old = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY).hash("pw123456")
    ok, new_hash = passwords.verify(old, "pw123456")
    assert ok and new_hash is not None and new_hash != old
    assert passwords.verify(new_hash, "pw123456") == (True, None)


def test_unknown_user_and_garbage_hash_never_verify(passwords):
    assert passwords.verify(None, "anything") == (False, None)
    assert passwords.verify("not-a-hash", "anything") == (False, None)


def test_production_profile_is_rfc_9106_low_memory():
    stored = Passwords().hash("pw123456")
    assert "m=65536,t=3,p=4" in stored


def test_token_round_trip_carries_user_version_and_times():
    tokens = Tokens(SECRET, ttl_seconds=86400)
    claims = tokens.decode(tokens.issue(42, 3))
    assert (claims.user_id, claims.token_version) == (42, 3)
    assert claims.expires_at - claims.issued_at == 86400
    header = json.loads(base64.urlsafe_b64decode(tokens.issue(1, 0).split(".")[0] + "=="))
    assert header["alg"] == "HS256"


def test_expired_token_is_rejected():
    tokens = Tokens(SECRET, ttl_seconds=60)
    stale = tokens.issue(1, 0, now=time.time() - 3600)
    with pytest.raises(InvalidToken):
        tokens.decode(stale)


def test_token_signed_with_another_secret_is_rejected():
    forged = Tokens("x" * 48).issue(1, 0)
    with pytest.raises(InvalidToken):
        Tokens(SECRET).decode(forged)


def test_alg_none_token_is_rejected():
    now = int(time.time())
    unsigned = jwt.encode({"sub": "1", "ver": 0, "iat": now, "exp": now + 60}, key=None, algorithm="none")
    with pytest.raises(InvalidToken):
        Tokens(SECRET).decode(unsigned)


def test_hs_rs_confusion_is_rejected():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    rs_token = jwt.encode({"sub": "1", "ver": 0, "iat": now, "exp": now + 60}, key, algorithm="RS256")
    with pytest.raises(InvalidToken):
        Tokens(SECRET).decode(rs_token)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    # The classic confusion: an HS256 token "signed" with the public key as the HMAC secret.
    with pytest.raises(InvalidToken):
        Tokens(SECRET).decode(
            jwt.api_jws.PyJWS().encode(
                json.dumps({"sub": "1", "iat": now, "exp": now + 60}).encode(),
                public_pem.encode()[:64],
                algorithm=ALGORITHM,
            )
        )


def test_token_missing_required_claims_is_rejected():
    token = jwt.encode({"sub": "1"}, SECRET, algorithm=ALGORITHM)
    with pytest.raises(InvalidToken):
        Tokens(SECRET).decode(token)


def test_short_secret_is_refused():
    with pytest.raises(ValueError):
        Tokens("short")


def test_secret_is_created_once_with_0600_and_reused(tmp_path):
    first = load_or_create_secret(tmp_path)
    assert len(first) >= 48
    assert stat.S_IMODE(os.stat(tmp_path / "jwt_secret").st_mode) == 0o600
    assert load_or_create_secret(tmp_path) == first
