"""TrtLlmWorker against a stand-in engine with tensorrt_llm's defaults and quirks (no GPU here):
the 32-token default, greedy decoding without top_k/top_p, seed 0 when none is given, the LLM
API's refusal of n > 1 when greedy, results that keep running on the GPU unless aborted, top-k
log-prob maps that also carry the chosen token. ``services/worker-trtllm/gpu_check.py`` checks
the same on the real engine; ``test_gpu_check_passes_on_the_stand_in`` keeps that script honest."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from scaffolding_nats.proto import ErrorCode, GenerationTask, StreamingGenerationTask, TaskStatus
from scaffolding_nats.runtime import RequestContext, TaskRunner
from scaffolding_nats.workers.trtllm_worker import TrtLlmWorker

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 1000


@dataclass(kw_only=True)
class SamplingParams:
    """The fields of ``tensorrt_llm.SamplingParams`` the worker uses, with its defaults and checks."""

    max_tokens: int = 32
    n: int = 1
    best_of: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    min_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    return_context_logits: bool = False

    def __post_init__(self) -> None:
        self.best_of = self.best_of or self.n
        if self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) cannot be less than n ({self.n})")
        if self.best_of > 1 and self.top_k in (None, 1) and self.top_p in (None, 0.0):  # temperature not considered
            raise ValueError("Greedy decoding in the LLM API does not allow multiple returns.")

    def greedy(self) -> bool:
        """The C++ sampling layer: top_k 0 with top_p 0 (both unset) becomes top_k 1."""
        k, p = self.top_k or 0, self.top_p or 0.0
        return k == 1 or (k == 0 and p == 0.0) or self.temperature == 0


@dataclass(kw_only=True)
class KvCacheConfig:
    enable_block_reuse: bool = True
    free_gpu_memory_fraction: float | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None


@dataclass
class Output:
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        return " ".join(f"t{t}" for t in self.token_ids)


class Tokenizer:
    def __init__(self) -> None:
        self.decoded = 0

    def encode(self, prompt: Any) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else [zlib.crc32(w.encode()) % VOCAB for w in prompt.split()]

    def decode(self, ids: list[int]) -> str:
        self.decoded += 1
        return f"<{ids[0]}>"


class Result:
    """Like ``GenerationResult``: awaitable, async-iterable when streaming, abortable; it runs on
    (one token per step) until done or aborted, whoever stops listening."""

    def __init__(self, engine: Engine, prompt: Any, params: SamplingParams) -> None:
        self.engine, self.params = engine, params
        self.prompt_token_ids = engine.tokenizer.encode(prompt)
        self.outputs = [Output() for _ in range(params.n)]
        self.plans = [self._plan(zlib.crc32(str(prompt).encode()), i) for i in range(params.n)]
        self.finished = self.aborted = False

    def _plan(self, prompt_hash: int, index: int) -> list[int]:
        p, engine = self.params, self.engine
        length = p.max_tokens if p.ignore_eos else min(p.max_tokens, engine.answer_len)
        greedy = [(prompt_hash + i) % VOCAB for i in range(length)]
        if p.greedy() or (engine.sampler == "TorchSampler" and not engine.mixed):
            return greedy  # on 1.0 the TorchSampler decodes greedily unless enable_mixed_sampler
        rng = random.Random(f"{p.seed or 0}/{index}") if engine.sampler == "TRTLLMSampler" else engine.torch_rng
        return [rng.randrange(VOCAB) for _ in range(length)]

    async def _step(self) -> None:
        await asyncio.sleep(self.engine.step_s)
        if self.finished:
            return
        for out, plan in zip(self.outputs, self.plans, strict=True):
            if len(out.token_ids) < len(plan):
                token = plan[len(out.token_ids)]
                out.token_ids.append(token)
                self.engine.generating.set()
                if self.params.logprobs:
                    out.logprobs.append(self._logprobs(token, self.params.logprobs))
        if all(len(o.token_ids) == len(plan) for o, plan in zip(self.outputs, self.plans, strict=True)):
            self.finished = True
            for out in self.outputs:
                out.finish_reason = "length" if len(out.token_ids) == self.params.max_tokens else "stop"

    @staticmethod
    def _logprobs(token: int, k: int) -> dict[int, Logprob]:
        top = {(token // 3 * 3 + r) % VOCAB: Logprob(-0.1 * (r + 1), r + 1) for r in range(k)}  # may miss token
        return top if token in top else {**top, token: Logprob(-5.0, 50)}

    def __await__(self) -> Any:
        async def run() -> Result:
            while not self.finished:
                await self._step()
            return self

        return run().__await__()

    async def __aiter__(self) -> Any:
        while not self.finished:
            await self._step()
            yield self

    def abort(self) -> None:
        self.aborted = True
        if not self.finished:
            self.finished = True
            for out in self.outputs:
                out.finish_reason = "cancelled"


class Engine:
    """Like ``tensorrt_llm.LLM``: its arguments checked as strictly, ``generate_async`` returning
    a running result at once. The model answers in ``answer_len`` tokens."""

    ARGS = {"max_batch_size", "kv_cache_config", "sampler_type", "enable_mixed_sampler", "max_seq_len"}

    def __init__(self, model: str = "m", *, answer_len: int = 100, step_s: float = 0.0005, **kwargs: Any) -> None:
        if unknown := set(kwargs) - self.ARGS:
            raise ValueError(f"unknown LLM arguments {unknown}")
        self.model, self.kwargs, self.answer_len, self.step_s = model, kwargs, answer_len, step_s
        self.sampler = kwargs.get("sampler_type", "TorchSampler")  # "auto": the TorchSampler
        self.mixed = kwargs.get("enable_mixed_sampler", False)
        self.torch_rng = random.Random(0)  # the TorchSampler's one generator: per-request seeds ignored
        self.tokenizer = Tokenizer()
        self.results: list[Result] = []
        self.generating = asyncio.Event()  # set at the first token
        self.shut_down = False

    def generate_async(self, inputs: Any, sampling_params: SamplingParams, streaming: bool = False) -> Result:
        max_seq_len = self.kwargs.get("max_seq_len")
        if max_seq_len is not None and len(self.tokenizer.encode(inputs)) + sampling_params.max_tokens > max_seq_len:
            raise ValueError(f"prompt length and max_tokens should not exceed max_seq_len ({max_seq_len})")
        self.results.append(Result(self, inputs, sampling_params))
        return self.results[-1]

    def shutdown(self) -> None:
        self.shut_down = True


def api(llm: Any = Engine, fields: set[str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(LLM=llm, SamplingParams=SamplingParams, KvCacheConfig=KvCacheConfig, llm_arg_fields=fields)


async def started(**options: Any) -> tuple[TrtLlmWorker, Engine]:
    """A worker on a TRTLLMSampler engine (the worker's default), unless ``engine`` is given."""
    engine = options.pop("engine", None) or Engine(sampler_type=options.get("sampler", "TRTLLMSampler"))
    worker = TrtLlmWorker(llm=engine, api=api(), **options)
    await worker.start()
    return worker, engine


def sent(engine: Engine, i: int = 0) -> dict[str, Any]:
    """The ``SamplingParams`` of the i-th request, without the fields left at their defaults."""
    defaults = asdict(SamplingParams())
    return {k: v for k, v in asdict(engine.results[i].params).items() if v != defaults[k] or k == "max_tokens"}


async def run_all(worker: TrtLlmWorker, tasks: list[GenerationTask]) -> None:
    await asyncio.gather(*(worker.run_task(t) for t in tasks))


# -- what reaches the engine ------------------------------------------------------------------


async def test_sampled_and_greedy_tasks_map_to_explicit_engine_fields():
    worker, engine = await started()
    sampled = GenerationTask(input_str="a b", max_tokens=5, temperature=0.7, top_k=40, seed=7, stop=["\n"])
    greedy = GenerationTask(input_str="a b", max_tokens=5, temperature=0.0, top_p=0.9, num_logprobs=2, ignore_eos=True)
    for task in (sampled, greedy):
        await worker.run_task(task)
    assert sampled.ok and greedy.ok
    # Sampling says so with top_p (top_k 0 and top_p 0 would be greedy in the C++ layer).
    assert sent(engine, 0) == {
        "max_tokens": 5,
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 1.0,
        "seed": 7,
        "stop": ["\n"],
    }
    # Greedy is top_k 1, on either sampler; no temperature of 0 to divide by.
    assert {k: v for k, v in sent(engine, 1).items() if k != "seed"} == {
        "max_tokens": 5,
        "top_k": 1,
        "logprobs": 2,
        "ignore_eos": True,
    }


async def test_a_task_without_max_tokens_gets_the_worker_default_not_the_engines_32():
    worker, engine = await started(default_max_tokens=512)
    task = GenerationTask(input_str="a b c", temperature=0)
    await worker.run_task(task)
    assert sent(engine)["max_tokens"] == 512
    assert task.usage is not None and task.usage.completion_tokens == 100 and task.finish_reason == "stop"
    capped = GenerationTask(input_str="a b c", temperature=0, max_tokens=10)
    await worker.run_task(capped)
    assert len(capped.output_tokens or []) == 10 and capped.finish_reason == "length"


@pytest.mark.parametrize("temperature", [0.8, None], ids=["T=0.8", "unset"])
async def test_samples_without_a_seed_differ(temperature):
    """A vote's samples: the same prompt 8 times, no seed. Each request gets its own random seed,
    and a task that sets no temperature samples at the worker's default (1.0), as OpenAI's API."""
    worker, engine = await started()
    tasks = [GenerationTask(input_str="what is 6*7", temperature=temperature, max_tokens=8) for _ in range(8)]
    await run_all(worker, tasks)
    assert all(t.ok for t in tasks)
    assert len({t.output_str for t in tasks}) == 8
    seeds = [r.params.seed for r in engine.results]
    assert None not in seeds and len(set(seeds)) == 8


async def test_a_seeded_task_repeats_and_greedy_tasks_agree():
    worker, engine = await started()
    seeded = [GenerationTask(input_str="x y", temperature=0.8, seed=-3, max_tokens=8) for _ in range(2)]
    greedy = [GenerationTask(input_str="x y", temperature=0, max_tokens=8) for _ in range(3)]
    await run_all(worker, seeded + greedy)
    assert seeded[0].output_str == seeded[1].output_str and engine.results[0].params.seed == 2**64 - 3
    assert len({t.output_str for t in greedy}) == 1


async def test_n_fills_every_choice_with_its_own_seed():
    worker, engine = await started()
    task = GenerationTask(input_str="a b", temperature=0.8, max_tokens=6, n=4, seed=100, num_logprobs=1)
    await worker.run_task(task)
    assert task.ok and task.choices is not None and len(task.choices) == 4
    assert len({c.text for c in task.choices}) == 4 and task.output_str == task.choices[0].text
    assert all(c.logprobs is not None and len(c.logprobs) == 6 for c in task.choices)
    assert [r.params.seed for r in engine.results] == [100, 101, 102, 103]
    assert {r.params.n for r in engine.results} == {1}
    assert task.usage is not None and (task.usage.prompt_tokens, task.usage.completion_tokens) == (8, 24)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"n": 2, "temperature": 0}, "greedy"),
        ({"best_of": 3, "temperature": 0.8}, "best_of"),
        ({"return_context_logits": True}, "context logits"),
        ({"echo": True}, "echo"),
    ],
)
async def test_what_the_engine_would_fake_or_cannot_send_is_refused_typed(fields, why):
    worker, engine = await started()
    task = GenerationTask(input_str="x", **fields)
    await worker.run_task(task)
    assert task.status is TaskStatus.NOT_SUPPORTED and task.error is not None
    assert task.error.code is ErrorCode.NOT_SUPPORTED and why in task.error.message
    assert not engine.results


@pytest.mark.parametrize(
    "fields", [{"seed": 1}, {"presence_penalty": 0.5}, {"frequency_penalty": 0.5}, {"min_tokens": 8}]
)
async def test_the_torch_sampler_refuses_what_it_ignores(fields):
    worker, _ = await started(sampler="TorchSampler")
    task = GenerationTask(input_str="x", temperature=0.8, **fields)
    await worker.run_task(task)
    assert task.status is TaskStatus.NOT_SUPPORTED and task.error is not None
    assert task.error.details["fields"] == list(fields)


# -- the engine's arguments -------------------------------------------------------------------


async def test_start_passes_the_sampler_block_reuse_and_the_batch_size():
    worker = TrtLlmWorker("/models/m", api=api(), max_concurrency=64, kv_cache_config={"free_gpu_memory_fraction": 0.8})
    await worker.start()
    engine = worker.llm
    assert isinstance(engine, Engine) and engine.model == "/models/m"
    assert engine.kwargs == {
        "max_batch_size": 64,
        "kv_cache_config": KvCacheConfig(enable_block_reuse=True, free_gpu_memory_fraction=0.8),
        "sampler_type": "TRTLLMSampler",
    }
    await worker.stop()
    assert engine.shut_down and worker.llm is None


async def test_the_torch_sampler_is_told_to_honour_each_requests_sampling_where_that_is_a_switch():
    """On 1.0 the TorchSampler decodes greedily unless ``enable_mixed_sampler`` (later releases
    dropped the switch): 8 samples at T=0.8 must still differ."""
    fields = {"sampler_type", "enable_mixed_sampler", "max_batch_size", "kv_cache_config"}
    worker = TrtLlmWorker("m", api=api(fields=fields), sampler="TorchSampler")
    await worker.start()
    assert worker.llm.kwargs["enable_mixed_sampler"] is True and worker.llm.kwargs["sampler_type"] == "TorchSampler"
    tasks = [GenerationTask(input_str="q", temperature=0.8, max_tokens=8) for _ in range(8)]
    await run_all(worker, tasks)
    assert len({t.output_str for t in tasks}) == 8


def test_engine_arguments_follow_the_installed_release_and_backend():
    early_rc = {"enable_trtllm_sampler", "max_batch_size", "kv_cache_config"}
    assert TrtLlmWorker("m", api=api(fields=early_rc)).engine_args()["enable_trtllm_sampler"] is True
    trt = TrtLlmWorker("engine/", api=api(), backend="tensorrt", max_batch_size=32, max_seq_len=4096).engine_args()
    assert "sampler_type" not in trt and trt["max_batch_size"] == 32 and trt["max_seq_len"] == 4096
    off = TrtLlmWorker("m", api=api(), kv_cache_config={"enable_block_reuse": False}).engine_args()
    assert off["kv_cache_config"].enable_block_reuse is False


def test_concurrency_is_aligned_with_the_engines_batch_size():
    assert TrtLlmWorker("m").max_concurrency == 256 and TrtLlmWorker("m").max_batch_size == 256
    follows = TrtLlmWorker("m", max_batch_size=32)
    assert (follows.max_concurrency, follows.max_batch_size) == (32, 32)
    with pytest.raises(ValueError, match="max_batch_size"):
        TrtLlmWorker("m", max_concurrency=64, max_batch_size=32)
    with pytest.raises(ValueError, match="auto"):
        TrtLlmWorker("m", sampler="auto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TRTLLMSampler"):
        TrtLlmWorker("m", backend="tensorrt", sampler="TorchSampler")


# -- results, streams, cancellation -----------------------------------------------------------


async def test_logprobs_carry_k_alternatives_and_the_chosen_tokens_own_value():
    worker, engine = await started()
    task = GenerationTask(input_str="a b c", temperature=0.8, max_tokens=20, num_logprobs=2, seed=5)
    await worker.run_task(task)
    assert task.logprobs is not None and len(task.logprobs) == 20
    raw = engine.results[0].outputs[0].logprobs
    assert any(len(item) == 3 for item in raw), "the stand-in must also send the chosen token beyond the top 2"
    for entry, item in zip(task.logprobs, raw, strict=True):
        assert entry.top is not None and [t.logprob for t in entry.top] == [-0.1, -0.2]
        assert entry.logprob == item[entry.token_id].logprob and entry.token == f"<{entry.token_id}>"
    chosen_only = GenerationTask(input_str="a b c", temperature=0.8, max_tokens=5, num_logprobs=0)
    await worker.run_task(chosen_only)  # OpenAI's logprobs=0; the engine's 0 would return none
    assert engine.results[-1].params.logprobs == 1
    assert chosen_only.logprobs is not None and [e.top for e in chosen_only.logprobs] == [None] * 5


async def test_a_stream_reads_each_tokens_logprobs_once():
    worker, engine = await started()
    task = StreamingGenerationTask(input_str="a b", temperature=0.8, max_tokens=60, num_logprobs=2)
    async for _ in worker.stream_task(task):
        pass
    assert task.ok and task.logprobs is not None and len(task.logprobs) == 60
    assert engine.tokenizer.decoded <= 60 * 3  # chosen + 2 alternatives per token, not per step


async def test_streaming_steps_and_early_cancel_aborts_the_request():
    worker, engine = await started()
    runner = TaskRunner({"generation": worker})
    ctx = RequestContext()
    task = StreamingGenerationTask(input_str=" ".join(f"w{i}" for i in range(30)), temperature=0.5, streaming_step=4)
    await runner.run([task], ctx)
    assert not task.end_flag and len(task.output_tokens or []) >= 4 and task.ttft_s is not None
    task.cancel_flag = True
    await runner.run([task], ctx)
    assert task.end_flag and task.status is TaskStatus.CANCELLED
    assert engine.results[0].aborted


async def test_a_stream_run_to_the_end_is_not_aborted_and_n_is_refused():
    worker, engine = await started()
    runner = TaskRunner({"generation": worker})
    task = StreamingGenerationTask(input_str="x y", max_tokens=5, streaming_step=100)
    await runner.run([task], RequestContext())
    assert task.end_flag and task.status is TaskStatus.SUCCESS and len(task.output_tokens or []) == 5
    assert not engine.results[0].aborted
    many = StreamingGenerationTask(input_str="x", n=2, temperature=0.8)
    await runner.run([many], RequestContext())
    assert many.status is TaskStatus.NOT_SUPPORTED


@pytest.mark.parametrize("n", [1, 3])
async def test_cancelling_a_plain_generation_aborts_every_request_on_the_gpu(n):
    worker, engine = await started(engine=Engine(sampler_type="TRTLLMSampler", step_s=0.002))
    running = asyncio.ensure_future(
        worker.run_task(GenerationTask(input_str="x", temperature=0.8, ignore_eos=True, max_tokens=10_000, n=n))
    )
    await asyncio.wait_for(engine.generating.wait(), 10)
    assert len(engine.results) == n
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [r.aborted for r in engine.results] == [True] * n
    assert all(len(r.outputs[0].token_ids) < 10_000 for r in engine.results)


async def test_the_engines_failures_are_typed():
    worker, _ = await started(engine=Engine(sampler_type="TRTLLMSampler", max_seq_len=1024))
    too_long = GenerationTask(input_str="x")  # + the default 2048 tokens > max_seq_len
    await worker.run_task(too_long)
    assert too_long.status is TaskStatus.NOT_SUPPORTED and too_long.error is not None
    assert "max_seq_len" in too_long.error.message

    class Broken(Result):
        async def _step(self) -> None:
            raise RuntimeError("executor died")

    engine = Engine(sampler_type="TRTLLMSampler")
    engine.generate_async = lambda inputs, sampling_params, streaming=False: Broken(engine, inputs, sampling_params)
    worker, _ = await started(engine=engine)
    task = GenerationTask(input_str="x", max_tokens=3)
    await worker.run_task(task)
    assert task.error is not None and task.error.code is ErrorCode.BACKEND_ERROR
    assert "executor died" in task.error.message
    empty = GenerationTask()
    await worker.run_task(empty)
    assert empty.status is TaskStatus.NOT_SUPPORTED


# -- the GPU check script and the deployment files --------------------------------------------


def _gpu_check() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "services" / "worker-trtllm" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_gpu_check_passes_on_the_stand_in_and_catches_a_fixed_seed(capsys):
    gpu_check = _gpu_check()
    worker, _ = await started(default_max_tokens=gpu_check.DEFAULT_MAX_TOKENS)
    outcomes = await gpu_check.run_checks(worker)
    assert [name for name, *_ in outcomes] == [name for name, _ in gpu_check.CHECKS]
    assert all(ok for _, ok, _ in outcomes), outcomes
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(outcomes) and all(line.startswith("PASS ") for line in lines)

    class FixedSeed(TrtLlmWorker):  # the bug the check exists for: every request on seed 0
        def params(self, task: GenerationTask, *, streaming: bool = False) -> list[Any]:
            return [SamplingParams(**{**asdict(p), "seed": None}) for p in super().params(task, streaming=streaming)]

    broken = FixedSeed(llm=Engine(sampler_type="TRTLLMSampler"), api=api())
    await broken.start()
    recorder = gpu_check.Recorder(broken.llm)
    ok, detail = await gpu_check.diversity(broken, recorder)
    assert not ok and "1 distinct of 8" in detail


class _ComposeLoader(yaml.SafeLoader):
    """Compose's own tags (``!override``, ``!reset``) read as plain values."""


_ComposeLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_mapping(node, deep=True))


def _worker_args_build_a_worker(args: str) -> dict[str, Any]:
    kwargs = json.loads(args)
    assert TrtLlmWorker(**kwargs).model  # constructs without tensorrt_llm: the same checks as in the image
    return kwargs


def test_compose_gpu_override_swaps_generation_onto_the_trtllm_worker():
    base = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    gpu = yaml.load((ROOT / "compose.gpu.yaml").read_text(), Loader=_ComposeLoader)["services"]
    svc = gpu["worker-trtllm"]
    assert svc["image"] == "scaffolding-nats/worker-trtllm:0.1.0"
    assert svc["build"] == {"context": ".", "dockerfile": "services/worker-trtllm/Dockerfile"}
    argv = svc["command"]
    assert argv[argv.index("--tags") + 1] == "generation" and argv[argv.index("--worker") + 1] == "trtllm"
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env = svc["environment"]
    assert env["SCAF_NATS_USER"] == "worker-trtllm"
    assert env["SCAF_NATS_PASSWORD"] == "${SCAF_NATS_PASSWORD_WORKER_TRTLLM:?run make compose-secrets}"
    kwargs = _worker_args_build_a_worker(env["SCAF_WORKER_ARGS"])
    assert int(argv[argv.index("--max-concurrency") + 1]) == kwargs["max_concurrency"]
    # The CPU worker stops serving "generation" (both would share its queue), and the gateway
    # waits for the GPU worker instead.
    assert gpu["worker-openai"]["profiles"] and "worker-openai" in base
    deps = gpu["gateway"]["depends_on"]
    assert "worker-openai" not in deps and deps["worker-trtllm"] == {"condition": "service_healthy"}
    assert set(deps) <= set(base) | {"worker-trtllm"}


def test_k8s_gpu_overlay_is_the_stack_with_the_trtllm_worker_for_generation():
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "gpu" / "worker-trtllm.yaml").read_text()))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    kwargs = _worker_args_build_a_worker(env["SCAF_WORKER_ARGS"])
    assert int(env["SCAF_MAX_CONCURRENCY"]) == kwargs["max_concurrency"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The overlay is k8s/kustomization.yaml with this worker in place of worker-openai.
    base = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "k8s" / "gpu" / "kustomization.yaml").read_text())
    swap = {"worker-openai.yaml": "worker-trtllm.yaml"}
    assert overlay["resources"] == [swap.get(r, f"../{r}") for r in base["resources"]]
    (generated,) = overlay["configMapGenerator"]
    assert generated["files"] == [f"../{f}" for f in base["configMapGenerator"][0]["files"]]
    assert overlay["generatorOptions"] == base["generatorOptions"] and overlay["namespace"] == base["namespace"]
    readme = (ROOT / "k8s" / "gpu" / "README.md").read_text()
    for needed in ("compose.gpu.yaml", "--load-restrictor LoadRestrictionsNone k8s/gpu/", "gpu_check.py"):
        assert needed in readme
