"""Fuzz the whole REST API from its OpenAPI schema with schemathesis: no answer may be a 5xx.

Runs in-process against `portal.wsgi` (no server needed) on pytest-django's test database,
authenticated with a site administrator's API token (so every endpoint is reachable) over the
personas' vault `prod`. Outside `testpaths`, so `make test` does not run it; `make fuzz` does:

    .venv/bin/pytest scripts/api_fuzz.py -q -p no:cacheprovider

Two tests:

- `test_no_server_errors`: schemathesis' generated cases for every operation. Path parameters
  are either generated or the fixtures' real ones (the vault `prod`, its VM, recovery point,
  job...), so generated bodies get past the 404 of a made-up name to the code that reads them.
- `test_hostile_input`: every operation gets the inputs that broke the API before: bodies
  nested thousands of levels deep, integers beyond 64 bits, NUL characters, impossible dates,
  each put into every field of a valid body (one at a time), every query parameter and every
  path parameter. None may answer 5xx; an impossible date or a value outside a filter's
  choices must answer 400.

LIFEBOAT_FUZZ_EXAMPLES sets hypothesis' examples per operation (default 25). With
DATABASE_URL=postgres://... both run against PostgreSQL, which refuses NUL in text.
"""

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

EXAMPLES = int(os.environ.get("LIFEBOAT_FUZZ_EXAMPLES", "25"))
# The fixtures' real path parameters, by name (filled by the `real` fixture); REAL_UNDER: for
# paths under a prefix, names whose real value differs there (`name` is a host's under
# /hosts/ and a storage target's under /storage-targets/, where `job_id` is a Test's job).
REAL: dict[str, object] = {}
REAL_UNDER: dict[str, dict[str, object]] = {}


def real_params(path: str) -> dict[str, object]:
    """The real path parameters of an operation's path."""
    found = dict(REAL)
    for prefix, values in REAL_UNDER.items():
        if path.startswith(prefix):
            found.update(values)
    return found


@pytest.fixture
def api_schema(db):
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from portal.wsgi import application

    # As Django's test client does: the raw WSGI app would otherwise close the connection
    # that holds the test's transaction after every request (PostgreSQL).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def token(vault, item, rp, job, admin_user, settings):
    from portal.models import ApiToken

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    _, key = ApiToken.issue(admin_user, "fuzz")
    return key


@pytest.fixture
def real(token, vault, item, rp, job, host, admin_user, tmp_path):
    """Real rows for every kind of path parameter, and files a valid body can name."""
    from django.utils import timezone

    from jobs.models import Operation, Param, Status
    from jobs.runner import create_job
    from security import alerts, keys
    from security.models import Approval
    from tests import factories as f
    from vaults.models import FileRecoverySession, GuardApprover, Replication, StorageTarget

    key_files = []
    for n in (1, 2):
        key_files.append(tmp_path / f"fuzz-{n}.key")
        key_files[-1].write_bytes(bytes([n]) * 32)
    key = keys.register_key(by=admin_user, name="fuzzkey", path=str(key_files[0]))
    alert = alerts.fire(vault, "mua_disabled", message="fuzz", dedup_key="fuzz")
    session = FileRecoverySession.objects.create(
        vault=vault, recovery_point=rp, user=admin_user, expires_at=timezone.now() + timedelta(1)
    )
    spare = f.make_vm(host, name="fuzz-spare")
    free_disk = Path(host.allowed_roots[0]) / "fuzz-free.img"
    free_disk.write_bytes(b"\0" * 4096)
    # Storage targets for vaults on object storage, and a Test of one (answered: failed).
    s3 = StorageTarget.objects.create(
        name="fuzz-s3",
        kind="s3",
        endpoint="http://127.0.0.1:9",
        path_style=True,
        object_lock=True,
        credentials_env={"access_key_id": "FUZZ_NO_ID", "secret_access_key": "FUZZ_NO_KEY"},
    )
    StorageTarget.objects.create(
        name="fuzz-az",
        kind="azure",
        endpoint="http://127.0.0.1:9/devstoreaccount1",
        credentials_env={"account_name": "FUZZ_NO_ACCOUNT", "account_key": "FUZZ_NO_KEY"},
    )
    target_test = create_job(
        operation=Operation.TEST_TARGET,
        params={Param.TARGET: s3.pk, Param.LOCATION: "s3://fuzz-bucket/x"},
        status=Status.FAILED,
        deliver=False,
    )
    # A second copy that the recovery point has reached, so `source: secondary` restores get
    # past the first checks to the code that reads them.
    vault.secondary_location = str(tmp_path / "secondary")
    vault.save()
    rp.replication = Replication.REPLICATED
    rp.in_vault_tier = True
    rp.save()
    approval = Approval.objects.create(
        vault=vault,
        operation="vault.update",
        summary="vault.update: disable soft delete",
        reasons=["disable soft delete"],
        params={"soft_delete_days": 31},
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        expires_at=timezone.now() + timedelta(hours=24),
    )
    REAL.clear()
    REAL.update(
        vault_name=vault.name,
        vm_name=item.vm.name,
        rp_id=str(rp.pk),
        job_id=job.pk,
        host_id=host.pk,
        vm_id=item.vm.pk,
        policy_name=item.policy.name,
        key_name=key.name,
        member_id=vault.memberships.first().pk,
        approver_id=GuardApprover.objects.filter(vault=vault).first().pk,
        token_id=admin_user.api_tokens.first().pk,
        alert_id=alert.pk,
        session_id=str(session.pk),
        approval_id=approval.pk,
    )
    REAL_UNDER.clear()
    REAL_UNDER["/api/v1/hosts/"] = {"name": host.name}
    REAL_UNDER["/api/v1/storage-targets/"] = {"name": s3.name, "job_id": target_test.pk}
    return {
        "host": host.pk,
        "spare_vm": spare.pk,
        "free_disk": str(free_disk),
        "root": host.allowed_roots[0],
        "restores": host.allowed_roots[1],
        "key_file": str(key_files[1]),
    }


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    """The generated path parameters or the real ones: with made-up names every case would
    stop at a 404 before its body or query is read."""
    if not path_parameters:
        return st.just(path_parameters)
    known = real_params(context.operation.path) if context.operation else REAL
    real = {name: known[name] for name in path_parameters if name in known}
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, token, real):
    response = case.call(headers={"Authorization": f"Token {token}"})
    case.validate_response(response, checks=[not_a_server_error])


# -- hostile input ---------------------------------------------------------------------------

DEEP = 5000
# Raw, since no JSON encoder writes them: thousands of levels of arrays and of objects.
DEEP_BODIES = [b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP]
BAD_DATES = ["2020-02-30", "2020-01-01T24:00:00", "9999-12-31T23:59:59-23:59"]
HOSTILE_VALUES = ["a\x00b", 2**70, -(2**70), [2**70], {"k\x00": 1}, *BAD_DATES]
HOSTILE_PARAMS = ["a\x00b", str(2**70), "bogus", *BAD_DATES]
ITEM = "/api/v1/vaults/{vault_name}/protected-items/{vm_name}"


def valid_bodies(real: dict) -> dict[str, list[dict]]:
    """Bodies each POST accepts (or refuses only for the state it finds), so a hostile value
    put into one of their fields is the only thing wrong with them. Several where the
    operation takes different shapes (a vault in a directory or on object storage...)."""
    policy = {
        "name": "Fuzz",
        "schedule": {"frequency": "daily", "time": "02:00"},
        "retention": {"daily": {"days": 7}},
    }
    host = {"snapshot_root": real["root"], "allowed_roots": [real["root"]]}
    s3_env = {"access_key_id": "FUZZ_ID", "secret_access_key": "FUZZ_SECRET"}
    to_files = {"kind": "restore_disks", "target": {"host": real["host"], "path": real["restores"]}}
    return {
        "POST /api/v1/auth/token/": [{"username": "admin", "password": "wrong", "name": "fuzz"}],
        "POST /api/v1/hosts/": [
            {"name": "fuzz-host", **host},
            {
                "name": "fuzz-kvm",
                "connector": "libvirt",
                "libvirt_uri": "qemu+ssh://root@kvm1/system",
                "dedicated_worker": True,
                **host,
            },
        ],
        "POST /api/v1/vms/": [
            {
                "name": "fuzz-vm",
                "host": real["host"],
                "disks": [{"lun": -1, "path": real["free_disk"]}],
            }
        ],
        "POST /api/v1/keys/": [{"name": "fuzzkey2", "path": real["key_file"]}],
        "POST /api/v1/keys/{key_name}/rotate/": [{"path": real["key_file"]}],
        "POST /api/v1/storage-targets/": [
            {
                "name": "fuzz-minio",
                "kind": "s3",
                "endpoint": "http://127.0.0.1:9000",
                "region": "eu-west-1",
                "path_style": True,
                "object_lock": True,
                "credentials_env": s3_env,
            },
            {
                "name": "fuzz-blob",
                "kind": "azure",
                "endpoint": "http://127.0.0.1:10000/devstoreaccount1",
                "credentials_env": {"account_name": "FUZZ_ACCOUNT", "sas_token": "FUZZ_SAS"},
            },
            {
                "name": "fuzz-file",
                "kind": "s3",
                "credentials_source": "file",
                "credentials_file": "/etc/lifeboat/fuzz.json",
            },
        ],
        "POST /api/v1/storage-targets/{name}/test/": [{"location": "s3://fuzz-bucket/x"}, {}],
        "POST /api/v1/vaults/": [
            {"name": "fuzz-vault", "linked_hosts": [real["host"]]},
            {
                "name": "fuzz-geo",
                "store_location": "s3://fuzz-bucket/geo",
                "storage_target": "fuzz-s3",
                "secondary_location": "az://fuzz-container/geo",
                "secondary_target": "fuzz-az",
                "linked_hosts": [real["host"]],
            },
        ],
        "POST /api/v1/vaults/{vault_name}/members/": [{"user": "approver", "role": "reader"}],
        "POST /api/v1/vaults/{vault_name}/approvers/": [{"user": "owner"}],
        "POST /api/v1/vaults/{vault_name}/approvals/{approval_id}/approve/": [
            {"note": "ok"},
            {"note": "ok", "otp": "123456"},
        ],
        "PUT /api/v1/second-factor/": [{"second_factor_required": "nobody"}],
        "POST /api/v1/directories/": [
            {
                "name": "fuzz-sso",
                "kind": "oidc",
                "title": "Fuzz SSO",
                "issuer": "https://login.example.org/realms/fuzz",
                "client_id": "lifeboat",
                "secret_source": "env",
                "secret_name": "FUZZ_OIDC_SECRET",
            },
            {
                "name": "fuzz-ldap",
                "kind": "ldap",
                "title": "Fuzz LDAP",
                "server_uri": "ldap://ldap.example.org",
                "start_tls": True,
                "bind_dn": "cn=lifeboat,dc=example,dc=org",
                "secret_source": "file",
                "secret_name": "/etc/lifeboat/ldap-bind",
                "user_base": "ou=people,dc=example,dc=org",
                "group_base": "ou=groups,dc=example,dc=org",
            },
        ],
        # Refused only for the directory it names, which no request here leaves behind.
        "POST /api/v1/group-mappings/": [
            {"directory": "fuzz-sso", "group": "ops", "vault_pattern": "prod-*", "role": "operator"}
        ],
        "POST /api/v1/vaults/{vault_name}/approvals/{approval_id}/reject/": [{"note": "no"}],
        "POST /api/v1/vaults/{vault_name}/policies/": [policy],
        "PUT /api/v1/vaults/{vault_name}/policies/{policy_name}/": [policy],
        "POST /api/v1/vaults/{vault_name}/policies/simulate/": [
            {"policy": policy, "name": "DefaultPolicy", "item": "web-01", "months": 2}
        ],
        "POST /api/v1/vaults/{vault_name}/protected-items/": [
            {"vm": real["spare_vm"], "policy": "DefaultPolicy"}
        ],
        f"POST {ITEM}/backup/": [{"retain_until": "2031-01-31"}],
        f"POST {ITEM}/stop/": [{"mode": "retain_forever"}],
        f"POST {ITEM}/resume/": [{"policy": "DefaultPolicy"}],
        f"POST {ITEM}/recovery-points/{{rp_id}}/restore/": [
            to_files,
            {**to_files, "tier": "vault", "luns": [-1]},
            {**to_files, "source": "secondary"},
            {"kind": "replace_disks", "luns": [-1], "source": "secondary"},
        ],
        f"POST {ITEM}/recovery-points/{{rp_id}}/drill/": [{"tier": "auto"}, {"tier": "vault"}],
    }


def body_fields(api_schema, op) -> list[str]:
    """The writable top-level fields of the operation's JSON body, from the schema."""
    content = op.definition.raw.get("requestBody", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    if not ref:
        return []
    component = api_schema.raw_schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    props = component.get("properties", {})
    return [name for name, prop in props.items() if not prop.get("readOnly")]


def leaves(value, place=()):
    """Every place in `value` that holds a scalar, as a tuple of keys and indexes."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*place, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*place, index))
    else:
        yield place


def at(value, place):
    """What `value` holds at `place`, None when nothing."""
    for key in place:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def put(value, place, new):
    """A copy of `value` with `new` at `place` (a missing top-level key is added)."""
    if not place:
        return new
    copy = json.loads(json.dumps(value))
    holder = copy
    for key in place[:-1]:
        holder = holder[key]
    holder[place[-1]] = new
    return copy


def base_bodies(api_schema, op, path: dict, auth: dict, real: dict) -> list[dict]:
    """Valid bodies: written down for POSTs, what a GET answers for PATCH and PUT."""
    known = valid_bodies(real).get(f"{op.method.upper()} {op.path}")
    if known is not None:
        return known
    if op.method in ("patch", "put"):
        answer = api_schema[op.path]["GET"].Case(path_parameters=path).call(headers=auth)
        if answer.status_code == 200 and isinstance(answer.json(), dict):
            return [answer.json()]
    return [{}]


ANY = range(500)
CLIENT_ERROR = range(400, 500)
BAD_REQUEST = range(400, 401)
DATE_PARAMS = ("since", "until", "from", "to")
# Not a filter: DRF's content negotiation answers 404 to a format it does not render.
NEGOTIATED = ("format",)


def hostile_cases(api_schema, op, auth: dict, real: dict):
    """(what, case, the statuses it may answer) for every hostile input of `op`."""
    known = real_params(op.path)
    path = {p.name: known.get(p.name, 1) for p in op.path_parameters}
    for p in op.path_parameters:
        case = op.Case(path_parameters={**path, p.name: "a\x00b"})
        yield f"path {p.name} with NUL", case, BAD_REQUEST
    for q in op.query:
        # A date filter or one with choices refuses every hostile value, never ignores it.
        choices = "enum" in q.definition.get("schema", {}) and q.name not in NEGOTIATED
        strict = q.name in DATE_PARAMS or choices
        for value in HOSTILE_PARAMS:
            case = op.Case(path_parameters=path, query={q.name: value})
            expected = BAD_REQUEST if strict or "\x00" in value else ANY
            yield f"query {q.name}={value!r}", case, expected
    if not list(op.body):
        return
    for raw in DEEP_BODIES:
        case = op.Case(path_parameters=path, body=raw, media_type="application/json")
        yield f"a body nested {DEEP} levels deep", case, CLIENT_ERROR
    fields = body_fields(api_schema, op)
    for n, body in enumerate(base_bodies(api_schema, op, path, auth, real)):
        # The valid body itself: no 5xx either.
        case = op.Case(path_parameters=path, body=body, media_type="application/json")
        yield f"valid body {n}", case, ANY
        places = {(name,) for name in fields} | {p for p in leaves(body) if p and p[0] in fields}
        for place in sorted(places, key=str):
            current = at(body, place)
            # A NUL after a valid value (an absolute path...) gets past the checks of its form.
            own = [current + "\x00"] if isinstance(current, str) else []
            for value in [*HOSTILE_VALUES, *own]:
                hostile = put(body, place, value)
                case = op.Case(path_parameters=path, body=hostile, media_type="application/json")
                yield f"body {n} {'.'.join(map(str, place))}={value!r}", case, ANY


def test_every_post_with_a_body_has_a_valid_one(api_schema, real):
    """Without one, the hostile values of a new endpoint's fields stop at its first 400."""
    known = valid_bodies(real)
    missing = [
        op.label
        for op in (result.ok() for result in api_schema.get_all_operations())
        if op.method == "post" and body_fields(api_schema, op) and op.label not in known
    ]
    assert not missing, f"add a valid body to valid_bodies() for: {', '.join(missing)}"


def test_hostile_input(api_schema, token, real):
    from django.db import transaction

    auth = {"Authorization": f"Token {token}"}
    failures = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        for what, case, expected in hostile_cases(api_schema, op, auth, real):
            # Each request on its own: an answer must not depend on what an earlier one changed.
            with transaction.atomic():
                try:
                    status = case.call(headers=auth).status_code
                except Exception as exc:  # raised while streaming the answer: a broken 200
                    status = repr(exc)
                transaction.set_rollback(True)
            if status not in expected:
                failures.append(f"{op.label} with {what}: {status}")
    assert not failures, "\n".join(failures)
