"""Property-based fuzzing of the REST API from its own OpenAPI document (schemathesis), in both
modes (the ``service`` fixture) with keys required: every operation of the running API's
``/openapi.json`` gets generated requests with a user key of one tenant (A, the harness's
key), while another tenant (B) holds a job. Nothing may answer 5xx, answers conform to the
document where it declares them, and no answer to A shows B's job id (unless A's request named
it, and then only as the 404 of a missing job) or B's file name. Bounded for CI: a fixed number
of examples per operation, no shrinking, a fixed seed (derandomized), no example database."""

import time
import uuid
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import BaseSchema, Case, CheckContext, CheckFunction, GenerationMode, Response
from schemathesis import checks as builtin
from schemathesis.core.result import Ok

from tests.harness.api import ApiServer, mp3_song
from tests.harness.service import Service
from tests.harness.waiting import wait_for
from tests.integration.test_api_flow import wait_done

pytestmark = pytest.mark.integration

EXAMPLES = 25  # per operation and generation mode (valid, invalid), and per job id fixed
REQUEST_TIMEOUT = 15.0
OTHER_TENANT = "fuzz-other"
# schemathesis's checks that apply to this API: no 5xx, declared bodies and content types.
CHECKS: list[CheckFunction] = [
    builtin.not_a_server_error,
    builtin.response_schema_conformance,
    builtin.content_type_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # a fixed seed: CI sees the same requests every run
    database=None,  # no example database: nothing replayed from another run
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure shows its own example
    deadline=None,  # a slow CI machine is not a finding; REQUEST_TIMEOUT bounds each request
    suppress_health_check=list(HealthCheck),
)


def leak_check(job_id: str, filename: str) -> CheckFunction:
    """A schemathesis check: the answer to tenant A shows nothing of B's job. B's file name
    never; B's job id only where A's request named it, and then only in the same 4xx a missing
    job gets (404's ``job ... not found``, or a refusal of the request itself)."""

    def no_other_tenants_data(
        ctx: CheckContext, response: Response, case: Case[Any]
    ) -> bool | None:
        body = response.content or b""
        request = f"{case.path} {case.path_parameters} {case.query}".encode()
        assert filename.encode() not in body, f"B's file name in the answer to A: {body!r}"
        if job_id.encode() in body:
            assert job_id.encode() in request, f"B's job id in the answer to A: {body!r}"
            assert response.status_code >= 400, f"A got B's job: {response.status_code} {body!r}"
        return None

    return no_other_tenants_data


Answers = Counter[tuple[str, int]]


def fuzz(
    api: ApiServer,
    schema: BaseSchema,
    checks: list[CheckFunction],
    fixed: dict[str, str],
    answers: Answers,
) -> int:
    """Generated requests for every operation of ``schema`` as ``api``'s key, valid ones and
    invalid ones; ``fixed``: path parameters, and then only the operations that have them all.
    Counts the answers' statuses per operation in ``answers``; returns how many operations it
    fuzzed."""
    fuzzed = 0
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the document's every operation is usable
        operations.append(result.ok())
    # DELETE last: the fixed job is there for every other operation first.
    for operation in sorted(operations, key=lambda o: o.method.upper() == "DELETE"):
        names = {p.name for p in operation.path_parameters}
        if not names.issuperset(fixed):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, path_parameters=fixed or None)
            try:
                run_operation(api, strategy, checks, answers)
            except Unsatisfiable:
                # Nothing of the operation to make invalid (no parameters, or only fixed ones).
                assert mode == GenerationMode.NEGATIVE, operation.label
        fuzzed += 1
    return fuzzed


def run_operation(
    api: ApiServer,
    strategy: st.SearchStrategy[Case[Any]],
    checks: list[CheckFunction],
    answers: Answers,
) -> None:
    @FUZZ_SETTINGS
    @given(case=strategy)
    def one(case: Case[Any]) -> None:
        # The key's header replaces any the generator made: every request is A's.
        response = case.call(base_url=api.url, headers=api.auth_headers, timeout=REQUEST_TIMEOUT)
        answers[(case.operation.label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS, additional_checks=checks)
        # A valid key with no rate limit: never refused, but for ?tenant= (admins only) and a
        # direct upload's part, whose URL carries its own signed token instead of the key.
        signed = case.operation.path == "/uploads/{upload_id}/parts/{number}"
        refused = response.status_code in (401, 429) or (
            response.status_code == 403 and "tenant" not in (case.query or {}) and not signed
        )
        assert not refused, (case.as_curl_command(), response.status_code, response.text)

    one()


def delete_all_jobs(api: ApiServer) -> list[str]:
    """Deletes every job ``api``'s key sees (its tenant's); returns their ids."""
    deleted: list[str] = []
    with api.client() as http:
        for _ in range(10):
            jobs = http.get("/jobs", params={"limit": 1000}).json()["jobs"]
            if not jobs:
                return deleted
            for job in jobs:
                response = http.delete(f"/job/{job['job_id']}")
                assert response.status_code in (200, 404), response.text
                deleted.append(job["job_id"])
    raise AssertionError(f"jobs left after deleting {deleted}")


@pytest.mark.timeout(300)  # ~20-40 s a mode on 2 CPUs
def test_fuzzing_the_openapi_document(service: Service) -> None:
    started = time.monotonic()
    mine = service.start_api(keyed=True)  # tenant A: the harness's key, a user
    theirs = mine.as_key(service.create_key("fuzz-b", OTHER_TENANT))
    filename = f"b-only-{uuid.uuid4().hex[:12]}.mp3"
    with theirs.client() as http:
        created = http.post("/upload", files={"file": (filename, mp3_song(1.0))})
        assert created.status_code == 200, created.text
        their_job = created.json()["job_id"]

    with mine.client() as http:
        created = http.post("/upload", files={"file": ("mine.mp3", mp3_song(1.0))})
        assert created.status_code == 200, created.text
        my_job = created.json()["job_id"]
    # Completed, so that A's own job's downloads answer 200 with their bodies.
    assert wait_done(mine, my_job)["status"] == "completed"

    schema = schemathesis.openapi.from_url(f"{mine.url}/openapi.json", timeout=30)
    checks = [leak_check(their_job, filename)]
    answers: Answers = Counter()
    try:
        assert fuzz(mine, schema, checks, {}, answers) >= 5  # every operation, ids generated
        # Again every operation that takes a job id, with B's: never a success for A.
        on_theirs: Answers = Counter()
        assert fuzz(mine, schema, checks, {"job_id": their_job}, on_theirs) >= 3
        assert all(400 <= code < 500 for _, code in on_theirs), on_theirs
        answers.update(on_theirs)
        # And with A's own job: one stem, then every operation (DELETE last).
        assert fuzz(mine, schema, checks, {"job_id": my_job, "stem": "vocals"}, answers) == 1
        assert fuzz(mine, schema, checks, {"job_id": my_job}, answers) >= 3
        # B's job came through A's fuzzing (its DELETE included) untouched.
        status = theirs.get(f"/status/{their_job}")
        assert status.status_code == 200, status.text
        assert status.json()["filename"] == filename
    finally:
        delete_all_jobs(mine)  # whatever generated uploads made
        assert their_job in delete_all_jobs(theirs)
    wait_for(lambda: service.job_ids() == [], 60, "every job deleted")
    print(f"fuzzing in {service.kind} mode: {time.monotonic() - started:.1f} s")
    for (operation, code), count in sorted(answers.items()):
        print(f"  {operation}: {count} x {code}")
    # The generated requests got through the key check to the routes.
    assert {code for _, code in answers} & {200, 404, 422}
