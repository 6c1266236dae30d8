"""Fleet server under load: N simulated devices through a full canary rollout.

Each device is a real paho MQTT client speaking the agent's protocol (status with Last Will,
retained desired state, every deployment phase, telemetry every --telemetry seconds). The fleet
server runs as its own process (``edgefleet fleet serve``) against a real Mosquitto, on SQLite
and on PostgreSQL. Printed per database:

- ingest messages/s: device messages the server stored during the rollout / rollout wall time
  (and the devices' publish rate for comparison);
- rollout wall time: start -> succeeded for a canary 10% -> 50% -> 100%, bake --bake s per wave;
- API p99 latency: of GET /rollouts/{id} and GET /devices/{id} polled during the rollout.

Run: ``.venv/bin/python bench/fleet_bench.py --devices 1000`` (PostgreSQL from
$EDGEFLEET_TEST_POSTGRES, default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgefleet.bundle import generate_key_pair  # noqa: E402
from fleet_server.simulator import Behaviour, Scheduler, SimDevice  # noqa: E402
from tests.fleet_server.bundles import make_bundle  # noqa: E402
from tests.support.services import free_port, start_mosquitto  # noqa: E402

TOKEN = "bench-admin-token"
MODEL = "bench"


def start_server(
    data_dir: Path, database_url: str, mqtt_url: str, key: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/edgefleet"),
            "fleet",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--database-url",
            database_url,
            "--mqtt",
            mqtt_url,
            "--admin-token",
            TOKEN,
            "--trusted-key",
            str(key),
            "--executor-interval",
            "0.5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/info", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the fleet server did not start; see {data_dir / 'server.log'}")


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """A database URL on a fresh schema of ``base``, dropped again afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(base)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield (
            sqlalchemy.engine.make_url(base)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def wait(condition: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.25)


def run(
    db: str, database_url: str, args: argparse.Namespace, work: Path, mqtt_url: str
) -> dict[str, float]:
    private, public = generate_key_pair(work, f"k-{db}")
    tars = [make_bundle(work / db, private, name=MODEL, version=v) for v in ("1.0.0", "2.0.0")]
    server, url = start_server(work / f"server-{db}", database_url, mqtt_url, public)
    http = httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    scheduler = Scheduler()
    devices: list[SimDevice] = []
    try:
        for tar in tars:
            http.post(
                "/models", content=tar.read_bytes(), headers={"Content-Type": "application/x-tar"}
            ).raise_for_status()
        behaviour = Behaviour(install_s=0.5, telemetry_s=args.telemetry)
        site = f"b{uuid.uuid4().hex[:6]}"

        def register(i: int) -> SimDevice:
            device_id = f"{site}-{i:05d}"
            http.post(
                "/devices",
                json={
                    "device_id": device_id,
                    "profile": "x86-64/avx512-vnni",
                    "labels": {"site": site},
                },
            ).raise_for_status()
            # Retained: the device finds it when it connects.
            http.put(
                f"/devices/{device_id}/desired", json={"model": MODEL, "version": "1.0.0"}
            ).raise_for_status()
            return SimDevice(device_id, url=mqtt_url, scheduler=scheduler, behaviour=behaviour)

        with ThreadPoolExecutor(4) as pool:  # set-up, not measured
            devices.extend(pool.map(register, range(args.devices)))
        for index, device in enumerate(devices):
            device.start()
            if index % 100 == 99:
                time.sleep(0.2)  # stagger connects a little, as a real fleet would

        def all_on(version: str) -> bool:
            return all(d.version == version for d in devices)

        wait(lambda: all_on("1.0.0"), "every device to run 1.0.0", 300)
        http.post("/cohorts", json={"name": site, "selector": {"site": site}}).raise_for_status()
        time.sleep(2 * args.telemetry)  # a baseline window of the old version

        stored_before = _stored(http)
        published_before = sum(d.published for d in devices)
        wave = {"bake_s": args.bake, "timeout_s": 120}
        strategy = {
            "kind": "canary",
            "waves": [{"size": {"kind": "percent", "value": p}, **wave} for p in (10, 50, 100)],
            "gates": {
                "success": [
                    {"kind": "installed", "min_fraction": 0.95},
                    {"kind": "error_rate", "max": 0.05},
                    {"kind": "latency_ratio", "max": 1.5},
                ],
                "abort": [{"kind": "failed_fraction", "min": 0.2}],
            },
        }
        started = time.monotonic()
        rollout = http.post(
            "/rollouts",
            json={"cohort": site, "model": MODEL, "version": "2.0.0", "strategy": strategy},
        )
        rollout.raise_for_status()
        rollout_id = rollout.json()["id"]
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            client = httpx.Client(
                base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            )
            i = 0
            next_at = time.perf_counter()
            while not done.is_set():
                path = (
                    f"/rollouts/{rollout_id}"
                    if i % 2 == 0
                    else f"/devices/{devices[i % len(devices)].device_id}"
                )
                t0 = time.perf_counter()
                client.get(path).raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)
                i += 1
                # A fixed offered load (open loop), the same on both databases.
                next_at = max(next_at + 1 / args.api_rate, time.perf_counter())
                time.sleep(max(0.0, next_at - time.perf_counter()))
            client.close()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        status = ""
        lags: list[int] = []
        while status not in ("succeeded", "rolled_back", "aborted"):
            time.sleep(0.25)
            status = http.get(f"/rollouts/{rollout_id}").json()["status"]
            lags.append(sum(d.published for d in devices) - _stored(http))
            if time.monotonic() - started > 600:
                raise RuntimeError("the rollout took over 10 minutes")
        wall = time.monotonic() - started
        done.set()
        poller.join()
        stored = _stored(http) - stored_before
        published = sum(d.published for d in devices) - published_before
        if status == "succeeded":
            wait(lambda: all_on("2.0.0"), "every device to run 2.0.0", 60)
        else:
            print(f"{db}: rollout {status}: {http.get(f'/rollouts/{rollout_id}').json()['detail']}")
        return {
            "status_ok": float(status == "succeeded"),
            "rollout_s": wall,
            "ingest_per_s": stored / wall,
            "publish_per_s": published / wall,
            "api_p50_ms": statistics.median(latencies),
            "api_p99_ms": statistics.quantiles(latencies, n=100)[98],
            "api_requests": float(len(latencies)),
            "lag_max": float(max(lags)),
            "lag_end": float(lags[-1]),
        }
    finally:
        for device in devices:
            device.stop(graceful=False)
        scheduler.stop()
        http.close()
        server.terminate()
        server.wait(timeout=30)


def _stored(http: httpx.Client) -> int:
    """MQTT messages the server applied since it started (from the counters it exposes)."""
    return int(http.get("/info/ingest").json()["ingested"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--bake", type=float, default=2.0, help="Bake time per wave (s).")
    parser.add_argument("--telemetry", type=float, default=1.0, help="Telemetry interval (s).")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--api-rate", type=float, default=10.0, help="API requests/s polled during the rollout."
    )
    args = parser.parse_args()
    pg = os.environ.get(
        "EDGEFLEET_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as scratch:
        work = Path(scratch)
        (work / "mosquitto").mkdir()
        broker = start_mosquitto(work / "mosquitto")
        try:
            results = {}
            for db in ["sqlite", "postgresql"] if args.db == "both" else [args.db]:
                (work / db).mkdir()
                if db == "sqlite":
                    sqlite_url = f"sqlite:///{work / 'fleet.db'}"
                    results[db] = run(db, sqlite_url, args, work, broker.url)
                    continue
                with postgres_schema(pg) as url:
                    results[db] = run(db, url, args, work, broker.url)
        finally:
            broker.stop()
    print(
        f"{args.devices} simulated devices, canary 10% -> 50% -> 100%, bake {args.bake}s, "
        f"telemetry every {args.telemetry}s"
    )
    print(
        f"{'':12}{'rollout s':>11}{'ingest msg/s':>14}{'publish msg/s':>15}"
        f"{'API p50 ms':>12}{'API p99 ms':>12}{'requests':>10}{'lag max':>9}{'lag end':>9}"
    )
    for db, r in results.items():
        ok = "" if r["status_ok"] else "  (did not succeed)"
        print(
            f"{db:12}{r['rollout_s']:11.1f}{r['ingest_per_s']:14.0f}{r['publish_per_s']:15.0f}"
            f"{r['api_p50_ms']:12.1f}{r['api_p99_ms']:12.1f}{r['api_requests']:10.0f}"
            f"{r['lag_max']:9.0f}{r['lag_end']:9.0f}{ok}"
        )


if __name__ == "__main__":
    main()
