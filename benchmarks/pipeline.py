"""Platform pipeline benchmark: audits per minute end to end vs the engine alone, exactly-once, read load.

    python benchmarks/pipeline.py [--quick] [--audits 32] [--duration 60] [--readers 20] [--repeats 2]

Everything runs on this machine over loopback and stops by itself:

1. Setup. A scratch database ``protoken_bench_<pid>`` on the server of
   `dbenv.database_url()` (dropped at the end), migrated with
   ``manage.py migrate_all``; a `protoken-round/1` round of 8 clients, each
   the shipped SmolLM2's last-block slice (o_proj + mlp) plus seeded noise;
   gunicorn (2 sync workers) and one real Celery worker (solo pool) as
   subprocesses, with DEBUG off as in production. The federation and token
   are made with the registry services; the round goes in through
   ``POST /api/v1/rounds/upload``. One warm-up audit makes the worker load the
   round into its cache, so the figures below are steady state (the cold
   first audit is reported on its own line).
2. Throughput. N teacher-forced audits (different prompts, one fixed
   ~32-token response) are submitted one by one (``POST /generations``, one
   task each) and as one batch (``POST /generations/batch``, one task that
   calls `attribute_batch`). The end-to-end time runs from the first POST to
   the last ``finished_at`` stored. The engine alone runs on the same inputs
   in this process: `attribute` per item, and `attribute_batch` for the batch
   mode, with the worker's own config. Engine and platform passes alternate
   and the best of `--repeats` is kept for each, because other processes on
   a small machine make single timings noisy. Overhead = platform time /
   engine time - 1 (target <= 15%).
   The rows' own timestamps split each platform pass into lead-in (submit +
   broker until the first claim), engine time inside the worker, and the
   worker's other time (claims, result writes, fetching tasks). That
   in-run split does not depend on load drift between passes.
3. Exactly once. Every accepted id must be ``done`` with exactly one
   AttributionRun, 8 client rows and one token row per token; none failed,
   missing, duplicated or unexpected.
4. Read load. `--readers` threads (http.client; gunicorn's sync workers close
   each connection, so the client reconnects) cycle through the four read
   endpoints for `--duration` seconds. The reference is the same mix with a
   single client for a few seconds first.
5. One table with every figure next to its target or reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import CHECKOUT, BenchError, add_project_paths, percentile, perturbed_round, scratch_database  # noqa: E402, I001

add_project_paths()

OVERHEAD_TARGET = 0.15
FEDERATION = "bench-pipeline"
RESPONSE = (
    "Start with a small, well-defined goal, measure the results carefully, and adjust the plan "
    "as soon as the evidence shows what works best for the team."
)
TOPICS = (
    "budgeting", "code review", "incident response", "hiring", "data cleaning", "unit testing",
    "customer interviews", "release planning", "documentation", "security audits", "onboarding",
    "capacity planning", "pricing", "user research", "technical debt", "accessibility",
)
READ_ENDPOINTS = ("list", "detail", "rounds", "summary")


@dataclass(frozen=True)
class PipelineConfig:
    audits: int = 32
    duration: float = 60.0
    readers: int = 20
    clients: int = 8
    repeats: int = 2
    quick: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.audits <= 256:  # 256 = the API's batch limit
            raise BenchError(f"--audits must be in 1..256, got {self.audits}")
        if not 1 <= self.duration <= 600:
            raise BenchError(f"--duration must be in 1..600 seconds, got {self.duration}")
        if not 1 <= self.readers <= 200:
            raise BenchError(f"--readers must be in 1..200, got {self.readers}")
        if not 1 <= self.clients <= 64:
            raise BenchError(f"--clients must be in 1..64, got {self.clients}")
        if not 1 <= self.repeats <= 10:
            raise BenchError(f"--repeats must be in 1..10, got {self.repeats}")


def parse_args(argv: list[str] | None = None) -> PipelineConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 audits, 1 repeat, 10 s of read load")
    parser.add_argument("--audits", type=int, help="audits per throughput pass (default 32, quick 8)")
    parser.add_argument("--duration", type=float, help="seconds of read load (default 60, quick 10)")
    parser.add_argument("--readers", type=int, default=20, help="concurrent read clients")
    parser.add_argument("--clients", type=int, default=8, help="clients in the synthetic round")
    parser.add_argument("--repeats", type=int, help="alternating engine/platform passes (default 2, quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    return PipelineConfig(
        audits=a.audits or (8 if a.quick else 32),
        duration=a.duration or (10.0 if a.quick else 60.0),
        readers=a.readers,
        clients=a.clients,
        repeats=a.repeats or (1 if a.quick else 2),
        quick=a.quick,
        seed=a.seed,
    )


def audit_items(n: int) -> list[dict]:
    """N teacher-forced audit items: different prompts, one fixed response."""
    items = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = f"Request {i}: in two sentences, how should a small team approach {topic}?"
        items.append({"prompt": prompt, "response": RESPONSE})
    return items


# ---- processes -------------------------------------------------------------------------------


def configure_environment(url: str, tmp: Path) -> None:
    """Env for this process and the subprocesses it starts: scratch DB, temp artifacts, production mode."""
    os.environ.update({
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "SECRET_KEY": "benchmark-only-secret",
        "ARTIFACT_ROOT": str(tmp / "artifacts"),
        "ARTIFACT_CACHE_DIR": str(tmp / "artifact-cache"),
        "FILE_UPLOAD_TEMP_DIR": str(tmp),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LOG_LEVEL": "WARNING",
    })


def migrate() -> float:
    from ops.worker import worker_env

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", "migrate_all", "--verbosity", "0"], cwd=CHECKOUT,
                          env=worker_env(os.environ["DATABASE_URL"]), capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"manage.py migrate_all failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_gunicorn(port: int, log_path: Path) -> Iterator[subprocess.Popen]:
    from ops.worker import managed_process, worker_env

    # --timeout: a round upload unpacks and hashes ~100 MB, longer than the default 30 s on a loaded box.
    cmd = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
           "--workers", "2", "--timeout", "300"]
    with managed_process(cmd, worker_env(os.environ["DATABASE_URL"]), log_path) as proc:
        yield proc


def wait_healthy(port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(f"gunicorn did not answer /healthz within {timeout:.0f}s")


def check_alive(procs: dict[str, subprocess.Popen]) -> None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            raise BenchError(f"the {name} process exited with code {proc.returncode} during the benchmark")


# ---- throughput ------------------------------------------------------------------------------


@dataclass
class Pass:
    """One timed pass over the audit items."""

    kind: str  # "engine" | "platform"
    mode: str  # "one-by-one" | "batch"
    n: int
    seconds: float
    split: dict = field(default_factory=dict)  # platform only: where the time went

    @property
    def per_minute(self) -> float:
        return 60.0 * self.n / self.seconds


def engine_pass(loaded, items: list[dict], config, *, batch: bool) -> Pass:
    from attribution import attribute, attribute_batch

    started = time.perf_counter()
    if batch:
        attribute_batch(loaded, items, config)
    else:
        for item in items:
            attribute(loaded, config=config, **item)
    return Pass("engine", "batch" if batch else "one-by-one", len(items), time.perf_counter() - started)


def platform_pass(api, items: list[dict], procs: dict, *, batch: bool, timeout: float) -> tuple[Pass, list[int]]:
    t0 = time.time()
    submit_started = time.perf_counter()
    if batch:
        accepted = api.post("/generations/batch", {"items": items})["generations"]
    else:
        accepted = [api.post("/generations", item) for item in items]
    submit_s = time.perf_counter() - submit_started
    ids = [g["id"] for g in accepted]
    wait_finished(ids, procs, timeout)
    split = time_split(ids, t0)
    split["submit_s"] = submit_s
    return Pass("platform", "batch" if batch else "one-by-one", len(ids), split["end_to_end_s"], split), ids


def wait_finished(ids: list[int], procs: dict, timeout: float) -> None:
    from audits.models import Generation

    finished = (Generation.Status.DONE, Generation.Status.FAILED)
    deadline = time.monotonic() + timeout
    while Generation.objects.filter(pk__in=ids, status__in=finished).count() < len(ids):
        check_alive(procs)
        if time.monotonic() > deadline:
            raise BenchError(f"generations unfinished after {timeout:.0f}s; see the worker log")
        time.sleep(0.1)


def time_split(ids: list[int], t0: float) -> dict:
    """Where a platform pass spent its time, from the rows' own timestamps."""
    from audits.models import Generation

    rows = list(Generation.objects.filter(pk__in=ids).values("created_at", "started_at", "finished_at", "engine_ms"))
    first_start = min(r["started_at"] for r in rows).timestamp()
    last_finish = max(r["finished_at"] for r in rows).timestamp()
    engine_s = sum(r["engine_ms"] or 0 for r in rows) / 1000
    waits = [(r["started_at"] - r["created_at"]).total_seconds() for r in rows]
    return {
        "end_to_end_s": last_finish - t0,
        "lead_in_s": first_start - t0,
        "worker_span_s": last_finish - first_start,
        "engine_s": engine_s,
        "worker_other_s": last_finish - first_start - engine_s,
        "queue_wait_p50_s": percentile(waits, 50),
    }


def warm_up(api, item: dict, procs: dict) -> tuple[dict, int]:
    """One audit through the cold worker: it loads the round into its cache."""
    pass_, ids = platform_pass(api, [item], procs, batch=False, timeout=600)
    return pass_.split, ids[0]


def throughput(api, loaded, config, items: list[dict], procs: dict,
               repeats: int) -> tuple[dict[tuple, list[Pass]], list[int]]:
    """Alternate engine and platform passes for each mode; every pass and every accepted id is kept."""
    passes: dict[tuple, list[Pass]] = {}
    accepted: list[int] = []
    for rep in range(repeats):
        for batch in (False, True):
            eng = engine_pass(loaded, items, config, batch=batch)
            timeout = 600 + 20 * eng.seconds
            plat, ids = platform_pass(api, items, procs, batch=batch, timeout=timeout)
            accepted += ids
            for p in (eng, plat):
                passes.setdefault((p.kind, p.mode), []).append(p)
                print(f"  pass {rep + 1} {p.kind:<8} {p.mode:<10} {p.seconds:7.2f} s  {p.per_minute:7.1f} audits/min",
                      flush=True)
    return passes, accepted


# ---- exactly once ----------------------------------------------------------------------------


def exactly_once(federation, accepted: list[int], clients: int) -> dict:
    """Every accepted id done once: counts of what is missing, duplicated, failed or malformed."""
    from audits.models import AttributionRun, Generation
    from django.db.models import Count

    stored = dict(Generation.objects.filter(federation=federation).values_list("pk", "status"))
    runs = dict(AttributionRun.objects.filter(generation__federation=federation)
                .values("generation_id").annotate(n=Count("id")).values_list("generation_id", "n"))
    shape = AttributionRun.objects.filter(generation__federation=federation).annotate(
        c=Count("client_rows", distinct=True), t=Count("token_rows", distinct=True))
    bad_shape = sum(1 for r in shape if r.c != clients or r.t != r.num_tokens)
    return {
        "accepted": len(accepted),
        "duplicate_ids": len(accepted) - len(set(accepted)),
        "missing": sum(1 for i in accepted if i not in stored),
        "not_done": sum(1 for i in accepted if stored.get(i) != Generation.Status.DONE),
        "without_run": sum(1 for i in accepted if runs.get(i, 0) == 0),
        "duplicated_runs": sum(1 for n in runs.values() if n > 1),
        "unexpected": len(set(stored) - set(accepted)),
        "malformed_runs": bad_shape,
        "redelivered": Generation.objects.filter(pk__in=accepted, attempts__gt=1).count(),
    }


# ---- read load -------------------------------------------------------------------------------


@dataclass
class ReadStats:
    latencies: dict[str, list[float]]
    errors: list[str]
    seconds: float

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + len(self.errors)


def read_path(name: str, rng: random.Random, ids: list[int]) -> str:
    if name == "list":
        return "/api/v1/generations"
    if name == "detail":
        return f"/api/v1/generations/{rng.choice(ids)}"
    return f"/api/v1/{name}"


def reader(port: int, headers: dict, ids: list[int], seed: int, deadline: float,
           latencies: dict[str, list[float]], errors: list[str]) -> None:
    """Cycle the read endpoints until the deadline; one connection, reopened when the server closes it."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    k = seed
    while time.monotonic() < deadline:
        name = READ_ENDPOINTS[k % len(READ_ENDPOINTS)]
        k += 1
        started = time.perf_counter()
        try:
            conn.request("GET", read_path(name, rng, ids), headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if status != 200:
            errors.append(f"{name}: HTTP {status}")
            continue
        latencies[name].append(time.perf_counter() - started)
    conn.close()


def read_load(port: int, secret: str, ids: list[int], *, readers: int, seconds: float) -> ReadStats:
    headers = {"Authorization": f"Bearer {secret}"}
    latencies: dict[str, list[float]] = {name: [] for name in READ_ENDPOINTS}
    errors: list[str] = []  # list.append is atomic under the GIL: threads share these safely
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    threads = [threading.Thread(target=reader, args=(port, headers, ids, i, deadline, latencies, errors))
               for i in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    if any(t.is_alive() for t in threads):
        raise BenchError("a read client did not stop within two minutes of the deadline")
    return ReadStats(latencies, errors, time.perf_counter() - started)


# ---- report ----------------------------------------------------------------------------------


def best(passes: dict, kind: str, mode: str) -> Pass:
    return min(passes[(kind, mode)], key=lambda p: p.seconds)


def throughput_rows(passes: dict) -> list[tuple]:
    rows = []
    for mode in ("one-by-one", "batch"):
        eng, plat = best(passes, "engine", mode), best(passes, "platform", mode)
        overhead = plat.seconds / eng.seconds - 1
        in_run = plat.split["end_to_end_s"] / plat.split["engine_s"] - 1
        rows += [
            (f"engine alone, {mode} (audits/min)", f"{eng.per_minute:.1f}", "reference", "", ""),
            (f"platform, {mode} (audits/min)", f"{plat.per_minute:.1f}", f"{eng.per_minute:.1f}",
             f"{plat.per_minute / eng.per_minute:.2f}", ""),
            (f"platform overhead, {mode}", f"{overhead:+.1%}", "<= 15%", f"{overhead / OVERHEAD_TARGET:.2f}",
             _verdict(overhead <= OVERHEAD_TARGET)),
            (f"  in-run overhead vs worker's engine time, {mode}", f"{in_run:+.1%}", "<= 15%",
             f"{in_run / OVERHEAD_TARGET:.2f}", _verdict(in_run <= OVERHEAD_TARGET)),
        ]
    return rows


def once_rows(once: dict) -> list[tuple]:
    lost = once["missing"] + once["not_done"] + once["without_run"]
    dup = once["duplicate_ids"] + once["duplicated_runs"] + once["unexpected"] + once["malformed_runs"]
    return [
        ("accepted submissions", str(once["accepted"]), "", "", ""),
        ("lost (missing / not done / no run)", str(lost), "0", "", _verdict(lost == 0)),
        ("duplicated or malformed (runs, ids, rows)", str(dup), "0", "", _verdict(dup == 0)),
    ]


def read_rows(loaded: ReadStats, base: ReadStats) -> list[tuple]:
    rows = []
    for name in READ_ENDPOINTS:
        for q in (50, 99):
            value = percentile(loaded.latencies[name], q) * 1000
            ref = percentile(base.latencies[name], q) * 1000
            rows.append((f"GET {name} p{q} (ms)", f"{value:.1f}", f"{ref:.1f} (1 client)", f"{value / ref:.1f}", ""))
    rate = loaded.requests / loaded.seconds
    rows.append(("read requests/s", f"{rate:.1f}", f"{base.requests / base.seconds:.1f} (1 client)", "", ""))
    rows.append(("read errors", str(len(loaded.errors)), "0", "", _verdict(not loaded.errors)))
    return rows


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render(rows: list[tuple]) -> str:
    header = ("figure", "value", "target / reference", "ratio", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def split_lines(passes: dict) -> list[str]:
    lines = ["where the platform's time went (best pass, seconds):"]
    for mode in ("one-by-one", "batch"):
        s = best(passes, "platform", mode).split
        eng = best(passes, "engine", mode)
        lines.append(
            f"  {mode:<10} end-to-end {s['end_to_end_s']:.2f} = lead-in {s['lead_in_s']:.2f} "
            f"(submit {s['submit_s']:.2f}) + worker {s['worker_span_s']:.2f} [engine {s['engine_s']:.2f}, "
            f"other {s['worker_other_s']:.2f}]; queue wait p50 {s['queue_wait_p50_s']:.2f}; "
            f"engine alone {eng.seconds:.2f}")
    return lines


# ---- main ------------------------------------------------------------------------------------


def setup_platform(cfg: PipelineConfig, tmp: Path, stack: ExitStack) -> dict:
    """Migrate, build the round, start gunicorn and a worker, register the federation and upload the round."""
    import django

    print(f"migrate_all: {migrate():.1f} s", flush=True)
    django.setup()
    started = time.perf_counter()
    round_dir = perturbed_round(tmp / "round-0000", federation=FEDERATION, clients=cfg.clients, seed=cfg.seed)
    print(f"round of {cfg.clients} clients written in {time.perf_counter() - started:.1f} s", flush=True)
    port = free_port()
    procs = start_processes(port, tmp, stack)
    with api_errors():
        registered = register(port, round_dir)
    return {"round_dir": round_dir, "port": port, "procs": procs, **registered}


def start_processes(port: int, tmp: Path, stack: ExitStack) -> dict:
    from ops.worker import running_worker

    web_log, worker_log = tmp / "gunicorn.log", tmp / "worker.log"
    web = stack.enter_context(running_gunicorn(port, web_log))
    worker = stack.enter_context(running_worker(os.environ["DATABASE_URL"], log_path=worker_log))
    wait_healthy(port, web, web_log)
    return {"gunicorn": web, "worker": worker}


def register(port: int, round_dir: Path) -> dict:
    from audits.demo import ApiClient
    from registry.services import federation_create, token_issue

    federation = federation_create(slug=FEDERATION, name="Pipeline benchmark", auto_register_clients=True)
    secret = token_issue(federation=federation, name="bench", scopes=["ingest", "generate", "read"])[1]
    api = ApiClient(f"http://127.0.0.1:{port}", secret)
    started = time.perf_counter()
    number = api.upload_round(round_dir)["number"]
    print(f"round {number} uploaded through the API in {time.perf_counter() - started:.1f} s", flush=True)
    return {"federation": federation, "secret": secret, "api": api}


def load_engine(round_dir: Path):
    import torch
    from audits.engine import engine_settings

    from attribution import load_round

    config = engine_settings().config  # exactly the worker's config
    started = time.perf_counter()
    loaded = load_round(round_dir, device=config.device, dtype=torch.float32, config=config)
    return loaded, config, time.perf_counter() - started


def run(cfg: PipelineConfig) -> str:
    started = time.perf_counter()
    items = audit_items(cfg.audits)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        url = stack.enter_context(scratch_database(f"protoken_bench_{os.getpid()}"))
        configure_environment(url, tmp)
        env = setup_platform(cfg, tmp, stack)
        stack.callback(_close_django)
        try:
            with api_errors():
                rows, notes = measure(cfg, env, items)
        except BenchError as exc:
            raise BenchError(f"{exc}\n--- worker log tail ---\n{_tail(tmp / 'worker.log')}") from None
    notes.append(f"wall time {time.perf_counter() - started:.0f} s")
    return render(rows) + "\n\n" + "\n".join(notes)


def measure(cfg: PipelineConfig, env: dict, items: list[dict]) -> tuple[list[tuple], list[str]]:
    loaded, config, load_s = load_engine(env["round_dir"])
    n_tokens = len(loaded.tokenizer(RESPONSE, add_special_tokens=False)["input_ids"])
    cold, warm_id = warm_up(env["api"], {**items[0], "prompt": "Warm-up: say hello."}, env["procs"])
    print(f"cold first audit {cold['end_to_end_s']:.2f} s (worker engine incl. round load "
          f"{cold['engine_s']:.2f} s); engine-alone round load {load_s:.2f} s", flush=True)
    passes, accepted = throughput(env["api"], loaded, config, items, env["procs"], cfg.repeats)
    once = exactly_once(env["federation"], [warm_id, *accepted], cfg.clients)
    print(f"exactly-once: {once}", flush=True)
    base = read_load(env["port"], env["secret"], accepted, readers=1, seconds=min(8.0, cfg.duration))
    stats = read_load(env["port"], env["secret"], accepted, readers=cfg.readers, seconds=cfg.duration)
    check_alive(env["procs"])
    rows = throughput_rows(passes) + once_rows(once) + read_rows(stats, base)
    notes = split_lines(passes) + [
        f"{cfg.audits} audits per pass, prompt + fixed {n_tokens}-token response, {cfg.clients}-client round, "
        f"best of {cfg.repeats}; {cfg.readers} readers for {cfg.duration:.0f} s ({stats.requests} requests)",
        f"cold first audit {cold['end_to_end_s']:.2f} s; engine-alone round load {load_s:.2f} s; "
        f"redelivered tasks {once['redelivered']}",
        f"read errors (first 5): {sorted(set(stats.errors))[:5]}" if stats.errors else "read errors: none",
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        f"Celery broker: {_broker_kind()}",
    ]
    return rows, notes


def _broker_kind() -> str:
    """The broker the worker used, by scheme only (a URL may carry a password)."""
    from django.conf import settings

    scheme = settings.CELERY_BROKER_URL.split("://", 1)[0]
    return f"{scheme} (CELERY_BROKER_URL)" if os.environ.get("CELERY_BROKER_URL") else f"{scheme} (default, on Postgres)"


def _close_django() -> None:
    from django.db import connections

    connections.close_all()


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@contextmanager
def api_errors() -> Iterator[None]:
    """The API client's errors (a refused request, a server down) as BenchError; only after django.setup()."""
    from audits.demo import DemoError

    try:
        yield
    except DemoError as exc:
        raise BenchError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}", flush=True)
        print(run(cfg))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
