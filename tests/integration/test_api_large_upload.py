"""A 1 GiB upload through the REST API into the real MinIO: it is stored whole, and the API's
memory stays flat while it streams (the ``wav_of`` body is generated as it is sent, so neither
side of the test holds the file)."""

import time

import httpx
import pytest

from tests.harness.api import BOUNDARY, MB, ApiFactory, multipart_stream, wav_of
from tests.harness.minio import MinioServer

pytestmark = pytest.mark.integration

SIZE = 1024 * MB
# What is in flight does not depend on the size: one part (8 MiB, the part size for a 2GB
# limit) being filled, the copy handed to the S3 client, one write batch (1 MiB) and the HTTP
# buffers. So the bound is the one the 300 MB test uses; a leak proportional to the size would
# show as hundreds of MiB here.
GROWTH_BOUND_MIB = 48


def test_a_1gb_upload_is_stored_whole_with_flat_memory(
    minio_server: MinioServer, bucket: str, start_api: ApiFactory
) -> None:
    api = start_api(MAX_FILE_SIZE="2GB")
    s3 = minio_server.client()
    with api.client() as http:
        http.get("/jobs")  # the routes and the watch cache are warm before the baseline
        before = api.peak_rss_mib()
        started = time.monotonic()
        response = http.post(
            "/upload",
            content=multipart_stream("long.wav", wav_of(SIZE)),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            # Generous: two shared cores move a GiB through three processes.
            timeout=httpx.Timeout(300),
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
    after = api.peak_rss_mib()
    assert s3.stat_object(bucket, f"inputs/{job_id}/input.wav").size == SIZE
    head = s3.get_object(bucket, f"inputs/{job_id}/input.wav", 0, 4)
    try:
        assert head.read() == b"RIFF"
    finally:
        head.close()
        head.release_conn()
    print(
        f"1 GiB upload in {elapsed:.1f} s ({SIZE / MB / elapsed:.0f} MB/s); API peak RSS "
        f"{before:.1f} -> {after:.1f} MiB (grew {after - before:.1f} MiB, bound "
        f"{GROWTH_BOUND_MIB} MiB)"
    )
    assert after - before < GROWTH_BOUND_MIB, (
        f"peak RSS grew from {before:.0f} to {after:.0f} MiB over a 1 GiB upload"
    )
