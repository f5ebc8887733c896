#!/usr/bin/env python3
"""Object-store clients compared: obstore against boto3 (S3) and azure-storage-blob (Azure).

The measurement behind the engine's choice of client (engine/backends/objects.py). Each
client puts --objects objects of 1 MiB of random bytes (the size and entropy of a stored
incompressible chunk) into a fresh prefix and gets them back as bytes, 16 requests in flight
(`OBJECT_IO_THREADS`, a thread pool, as the engine does), against the same servers the tests
and bench/objstore.py use: moto (S3, under gunicorn) and Azurite (Azure Blob, in memory).
Then it makes --small conditional creates of 100-byte objects one after another (a lease, a
lock, a manifest): the latency of one request.

Printed per client and server: wall seconds and MiB/s of the put and the get, the CPU seconds
of this process (the client; the machine's other work is not counted) and of the server, and
the client's CPU per MiB. Medians of --runs rounds; the clients alternate within a round.

    .venv/bin/python bench/object_clients.py [--objects 256] [--small 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import obstore  # noqa: E402
from objstore import cpu_seconds as server_cpu  # noqa: E402
from objstore import own_cpu  # noqa: E402
from obstore.exceptions import AlreadyExistsError, PreconditionError  # noqa: E402

from engine.backends import open_backend  # noqa: E402
from engine.backends.objects import ObjectBackend  # noqa: E402
from engine.store import OBJECT_IO_THREADS  # noqa: E402
from engine.tests import objservers  # noqa: E402

MIB = 1 << 20


class Client:
    """put(key, data), get(key) -> bytes and create(key, data) -> bool (False: it exists)."""

    def __init__(
        self,
        name: str,
        server: objservers.Server,
        put: Callable[[str, bytes], object],
        get: Callable[[str], bytes],
        create: Callable[[str, bytes], bool],
    ) -> None:
        self.name, self.server = name, server
        self.put, self.get, self.create = put, get, create


def obstore_client(name: str, server: objservers.Server, location: str, target: Any) -> Client:
    backend = open_backend(location, target)
    assert isinstance(backend, ObjectBackend)
    store = backend.store

    def create(key: str, data: bytes) -> bool:
        try:
            obstore.put(store, key, data, mode="create", use_multipart=False)
        except (AlreadyExistsError, PreconditionError):
            return False
        return True

    return Client(
        name,
        server,
        lambda k, d: obstore.put(store, k, d, use_multipart=False),
        lambda k: bytes(obstore.get(store, k).bytes()),
        create,
    )


def boto3_client(server: objservers.Server, bucket: str) -> Client:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # A connection per thread in flight, as obstore keeps.
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=OBJECT_IO_THREADS),
    )

    def create(key: str, data: bytes) -> bool:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    return Client(
        "boto3",
        server,
        lambda k, d: s3.put_object(Bucket=bucket, Key=k, Body=d),
        lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(),
        create,
    )


def azure_sdk_client(server: objservers.Server, container: str) -> Client:
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
    from azure.storage.blob import BlobServiceClient

    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={objservers.AZ_ACCOUNT};"
        f"AccountKey={objservers.AZ_KEY};BlobEndpoint={server.endpoint};"
    )
    # One client and its connection pool shared by the threads (the SDK's clients are
    # thread-safe); the pool sized for the requests in flight.
    cc = BlobServiceClient.from_connection_string(
        conn, connection_pool_maxsize=OBJECT_IO_THREADS
    ).get_container_client(container)

    def create(key: str, data: bytes) -> bool:
        try:
            cc.upload_blob(key, data, overwrite=False, match_condition=MatchConditions.IfMissing)
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True

    return Client(
        "azure-storage-blob",
        server,
        lambda k, d: cc.upload_blob(k, d, overwrite=True, max_concurrency=1),
        lambda k: cc.download_blob(k, max_concurrency=1).readall(),
        create,
    )


def one_round(client: Client, objects: list[bytes], small: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}/"
    keys = [f"{prefix}chunks/{i:05d}" for i in range(len(objects))]
    out: dict[str, float] = {}
    with ThreadPoolExecutor(OBJECT_IO_THREADS) as pool:
        for step in ("put", "get"):
            s0, c0, t0 = server_cpu(client.server), own_cpu(), time.monotonic()
            if step == "put":
                list(pool.map(client.put, keys, objects))
            else:
                # Each body compared and dropped as it comes (the engine decodes a chunk and
                # lets it go): holding all of them would time the page faults of 256 MiB.
                same = list(pool.map(lambda k, d: client.get(k) == d, keys, objects))
            out[step] = time.monotonic() - t0
            out[f"{step} client cpu"] = own_cpu() - c0
            out[f"{step} server cpu"] = server_cpu(client.server) - s0
        assert all(same), f"{client.name}: the objects read back differ"
    lease = b"x" * 100
    t0 = time.monotonic()
    for i in range(small):
        if not client.create(f"{prefix}leases/{i:05d}", lease):
            raise AssertionError(f"{client.name}: a fresh key was refused")
    out["create"] = (time.monotonic() - t0) / small
    if client.create(f"{prefix}leases/00000", lease):
        raise AssertionError(f"{client.name}: a conditional create replaced an existing object")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=256, help="1 MiB objects put and got")
    ap.add_argument("--small", type=int, default=200, help="sequential conditional creates")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    objects = [os.urandom(MIB) for _ in range(args.objects)]
    moto = objservers.start_moto()
    azurite = objservers.start_azurite(in_memory=True)
    try:
        bucket = objservers.new_bucket(moto.endpoint)
        container = objservers.new_container(azurite.endpoint)
        clients = [
            obstore_client(
                "obstore", moto, f"s3://{bucket}/v", objservers.s3_target(moto.endpoint)
            ),
            boto3_client(moto, bucket),
            obstore_client(
                "obstore", azurite, f"az://{container}/v", objservers.azure_target(azurite.endpoint)
            ),
            azure_sdk_client(azurite, container),
        ]
        rows: dict[int, list[dict[str, float]]] = {}
        for n in range(args.runs):
            for i, client in enumerate(clients):
                print(
                    f"round {n + 1}/{args.runs}: {client.name} ({client.server.kind})",
                    file=sys.stderr,
                )
                rows.setdefault(i, []).append(one_round(client, objects, args.small))
    finally:
        moto.stop()
        azurite.stop()
    mib = args.objects
    print(
        f"{args.objects} objects of 1 MiB (random bytes), {OBJECT_IO_THREADS} in flight; "
        f"{args.small} sequential conditional creates of 100 B; median of {args.runs}; "
        f"2 cores; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n"
    )
    print(
        "| server | client | put s | MiB/s | client CPU s | ms CPU / MiB | server CPU s "
        "| get s | MiB/s | client CPU s | ms CPU / MiB | server CPU s | create ms |"
    )
    print("|---|---|" + "---:|" * 11)
    for i, client in enumerate(clients):
        r = rows[i]

        def m(key: str, r: list[dict[str, float]] = r) -> float:
            return float(statistics.median(x[key] for x in r))

        server = "S3 (moto)" if client.server.kind == "s3" else "Azure Blob (Azurite)"
        cells = [server, client.name]
        for step in ("put", "get"):
            cells += [
                f"{m(step):.2f}",
                f"{mib / m(step):.0f}",
                f"{m(step + ' client cpu'):.2f}",
                f"{1000 * m(step + ' client cpu') / mib:.2f}",
                f"{m(step + ' server cpu'):.2f}",
            ]
        cells.append(f"{1000 * m('create'):.1f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
