"""Generated input against the service's own OpenAPI schema: no 5xx, whatever arrives, and no
operation that declares authentication answers without it.

Runs against a dedicated application on the ``sleep`` profile, authenticated as an admin so
every operation, admin-only ones included, is reached. The operations that could end the admin's
session (log-out, password changes) run with a fresh log-in of a user of their own for each
example instead, so no generated request revokes the credential the rest of the run uses, and no
operation is left out for that reason.

Then schemathesis's stateful phase, with identities it cannot lose (ordinary users, and an
administrator, whose log-ins no operation in the run can end): two users never reach each other's
objects, and what is deleted stays gone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth

from tests.conftest import sleep_app_args

# What would end the credential it is sent with: each example gets a session of its own.
SESSION_ENDING = {("POST", "/auth/change-password"), ("PUT", "/auth/me"), ("POST", "/auth/logout")}


@pytest.fixture(scope="session")
def fuzz_url(deploy_app, data_root) -> str:
    return deploy_app("fuzz", sleep_app_args(data_root, "fuzz", login_max_failures=0, login_max_failures_per_address=0))


def _log_in(url: str, username: str, password: str) -> dict[str, str]:
    response = httpx.post(url + "/auth/login", json={"username": username, "password": password}, timeout=60)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="session")
def fuzz_headers(fuzz_url) -> dict[str, str]:
    return _log_in(fuzz_url, "admin", "admin123")


@pytest.fixture(scope="session")
def throwaway_session(fuzz_url, fuzz_headers):
    """A user whose sessions the session-ending operations may end: a fresh log-in per call."""
    username, password = "fuzzed-" + uuid.uuid4().hex[:8], "fuzz-pass-" + uuid.uuid4().hex[:8]
    created = httpx.post(fuzz_url + "/auth/register", json={"username": username, "password": password}, timeout=60)
    assert created.status_code == 201, created.text
    return lambda: _log_in(fuzz_url, username, password)


def test_no_generated_input_causes_a_server_error_or_skips_authentication(fuzz_url, fuzz_headers, throwaway_session):
    schema = schemathesis.openapi.from_url(fuzz_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures = []
    for operation in operations:
        if operation.path.endswith("/events"):
            continue  # event streams stay open until their task ends (GET /tasks/events: never); test_events_api

        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        @given(case=operation.as_strategy())
        def exercise(case):
            ends_session = (case.method.upper(), case.path) in SESSION_ENDING
            headers = throwaway_session() if ends_session else fuzz_headers
            response = case.call(base_url=fuzz_url, headers=headers, timeout=60)
            # /v1 answers errors in OpenAI's body, everything else in the contract's {"detail"}.
            error_key = "error" if case.path.startswith("/v1/") else "detail"
            if response.status_code >= 500 or (response.status_code >= 400 and error_key not in response.json()):
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:200]))
            if ends_session:
                return  # the probes would replay it with a session this example may just have ended
            try:
                # A success is sent again without the credential and with a forged one: both must be refused.
                case.validate_response(
                    response,
                    checks=[ignored_auth],
                    headers=headers,
                    transport_kwargs={"base_url": fuzz_url, "headers": headers, "timeout": 60},
                )
            except FailureGroup as exc:  # what schemathesis raises for failed checks
                failures.append((case.method, case.formatted_path, "ignored auth", str(exc.exceptions[0])[:300]))

        exercise()
    assert not failures, failures[:5]


def test_the_schema_declares_authentication_on_every_operation_that_needs_it(fuzz_url):
    # ignored_auth probes only operations whose schema says they need a credential.
    public = {
        "/health",
        "/models",
        "/text-to-image/aspect-ratios",
        "/auth/login",
        "/auth/register",
        "/auth/session",
        "/v1/images/files/{task_id}/{filename}",
    }
    schema = httpx.get(fuzz_url + "/openapi.json", timeout=60).json()
    undeclared = [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, spec in item.items()
        if path not in public and not spec.get("security")
    ]
    assert not undeclared, undeclared


# --------------------------------------------------------------- stateful: several users, deletes

# Operations that would end the log-in a stateful run sends (the first test gives them throwaway ones).
SESSION_ENDING_PATHS = r"^/auth/(change-password|logout|me|session|sessions)$"
# Event streams stay open until their task ends (test_events_api covers them).
STREAMS = r"/events$"


def _registered(url: str, admin: dict[str, str], role: str) -> dict[str, str]:
    # The first test may have closed registration (PUT /admin/registration is among its operations).
    opened = httpx.put(url + "/admin/registration", headers=admin, json={"open": True}, timeout=60)
    assert opened.status_code == 200, opened.text
    username, password = f"{role}-" + uuid.uuid4().hex[:8], "pass-" + uuid.uuid4().hex[:12]
    created = httpx.post(url + "/auth/register", json={"username": username, "password": password}, timeout=60)
    assert created.status_code == 201, created.text
    return _log_in(url, username, password)


# ``DELETE /tasks/{task_id}`` cancels: the task stays readable as ``cancelled`` (contract § 5.4), so
# schemathesis would take every later read of it for a use after free. The stateful runs leave the
# cancel out (the first test above sends it generated input; test_tasks_api covers what it does).
# (One filter on the label: two include- keys would each select operations on their own.)
CANCEL_IS_NOT_DELETE = '\n[[operations]]\ninclude-name = "DELETE /tasks/{task_id}"\nenabled = false\n'


def _stateful_run(url: str, tmp_path, users: dict[str, dict[str, str]], checks: str) -> str:
    """Schemathesis's stateful phase (the ``st`` command) as ``users``: chains of calls built from
    the schema's links (``POST /text-to-image`` → ``GET /tasks/{task_id}`` → ``DELETE`` → …).
    Asserts it found nothing and returns its report."""
    (tmp_path / "users.json").write_text(
        json.dumps(
            {
                "auth": [
                    {"name": name, "fixedHeaders": [{"name": key, "value": value} for key, value in headers.items()]}
                    for name, headers in users.items()
                ]
            }
        )
    )
    peers = ", ".join(f'"{name}"' for name in users) if len(users) > 1 else ""
    (tmp_path / "schemathesis.toml").write_text(
        f'[auth.wfc]\npath = "{tmp_path / "users.json"}"\n'
        + (f"peers = [{peers}]\n" if peers else "")
        + "\n[phases.stateful]\nmax-steps = 20\n\n[phases.stateful.generation]\nmax-examples = 150\n"
        + CANCEL_IS_NOT_DELETE
    )
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(tmp_path / "schemathesis.toml")),
        *("run", url + "/openapi.json", "--url", url, "--phases", "stateful", "--checks", checks),
        *("--request-timeout", "60", "--exclude-path-regex", f"{STREAMS}|{SESSION_ENDING_PATHS}", "--no-color"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    covered = re.search(r"API Links:\s+(\d+) covered", report)
    # Chains, not single calls: the links of the schema (the 202's to the task routes, register →
    # the user routes, key creation → revocation) were followed (8 to 30-odd in runs here: how many
    # scenarios the run draws varies; a run that follows none reports 0).
    assert covered is not None and int(covered.group(1)) >= 5, report[-3000:]
    return report


def test_two_users_never_get_each_others_tasks_and_every_declared_credential_is_enforced(
    fuzz_url, fuzz_headers, tmp_path
):
    """Two ordinary users: every object one of them reads (its task, the task's record, result and
    webhook log, reached through the links of the 202) is read again as the other, who must not get
    it (``object_level_authorization``); each success is sent again without the credential
    (``ignored_auth``); and a 404 right after a create is a failure (``ensure_resource_availability``).

    ``use_after_free`` runs too; the cancel is left out (a cancelled task stays readable).
    """
    alice, bob = _registered(fuzz_url, fuzz_headers, "alice"), _registered(fuzz_url, fuzz_headers, "bob")
    report = _stateful_run(
        fuzz_url,
        tmp_path,
        {"alice": alice, "bob": bob},
        "object_level_authorization,ignored_auth,ensure_resource_availability,use_after_free,not_a_server_error",
    )
    assert "Object-level" not in report


def test_a_deleted_account_is_gone_from_every_route_that_names_it(fuzz_url, fuzz_headers, tmp_path):
    """As an administrator: after ``DELETE /auth/users/{user_id}`` of an account the run registered,
    every later call naming it (quota, toggles) is a 404 (``use_after_free``)."""
    admin = _log_in(fuzz_url, "admin", "admin123")
    _stateful_run(
        fuzz_url, tmp_path, {"admin": admin}, "use_after_free,ensure_resource_availability,not_a_server_error"
    )
