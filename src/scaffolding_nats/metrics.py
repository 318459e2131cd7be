"""Prometheus metrics shared by the services (module-level: registered once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("scaffolding_jobs_total", "Jobs finished, by method and outcome", ["method", "outcome"])
JOB_SECONDS = Histogram(
    "scaffolding_job_seconds",
    "Job wall time",
    ["method"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
JOB_TOKENS = Counter("scaffolding_job_tokens_total", "Tokens spent by jobs", ["method", "kind"])
JOBS_RUNNING = Gauge("scaffolding_jobs_running", "Jobs running in this controller")
HTTP_REQUESTS = Counter("scaffolding_gateway_requests_total", "Gateway requests", ["route", "status"])
HTTP_SECONDS = Histogram("scaffolding_gateway_request_seconds", "Gateway request time", ["route"])
TASKS = Counter("scaffolding_worker_tasks_total", "Tasks a worker host finished, by tag and status", ["tag", "status"])
TASK_SECONDS = Histogram(
    "scaffolding_worker_task_seconds",
    "Task time at the worker host",
    ["tag"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TASKS_IN_FLIGHT = Gauge("scaffolding_worker_tasks_in_flight", "Tasks running in this worker host", ["tag"])
TASKS_REJECTED = Counter("scaffolding_worker_rejected_total", "Tasks refused (capacity or bad input)", ["tag", "code"])
TASK_QUEUE_PENDING = Gauge(
    "scaffolding_task_queue_pending", "Tasks queued for a tag that no replica has taken yet (its backlog)", ["tag"]
)
TASK_QUEUE_ACK_PENDING = Gauge(
    "scaffolding_task_queue_in_flight", "Tasks of a tag taken by some replica and not yet done", ["tag"]
)
TASKS_WAITING = Gauge(
    "scaffolding_controller_tasks_waiting", "Tasks this process sent that no worker has started yet", ["tag"]
)
SANDBOX_RUNS = Counter(
    "scaffolding_sandbox_runs_total",
    "Sandboxed program runs (python tool), by outcome: ok, exit (non-zero), the limit that ended it, "
    "or busy (no free run slot in time)",
    ["outcome"],
)
ENGINE_REQUESTS = Counter(
    "scaffolding_engine_requests_total",
    "Requests a worker sent to an engine replica, by route: home (its affinity key's replica), "
    "spill (its home was full), any (no key)",
    ["engine", "route"],
)
ENGINE_PROMPT_TOKENS = Counter(
    "scaffolding_engine_prompt_tokens_total",
    "Prompt tokens of requests to an engine replica: computed (prefill) or cached (its prefix cache)",
    ["engine", "kind"],
)
ENGINE_PREFIX_HITS = Counter(
    "scaffolding_engine_prefix_hits_total",
    "Requests whose prompt an engine replica found partly in its cache (hit rate: / requests)",
    ["engine"],
)
ENGINE_FAILOVERS = Counter(
    "scaffolding_engine_failovers_total",
    "Requests moved off an engine replica that refused or dropped the connection",
    ["engine"],
)
