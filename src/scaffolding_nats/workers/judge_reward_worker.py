"""A reward model made from any chat model: ask "correct? Yes or No" and read P(Yes).

No trained reward model is needed, only a backend that returns ``top_logprobs``; the score is
P(Yes) / (P(Yes) + P(No)) over the first answer token, so it is calibrated between the two
answers whatever else the model puts mass on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Literal

import openai

from ..proto.tasks import RewardTask, TokenLogprob, TopLogprob, Usage
from ..runtime.fanout import gather_or_cancel
from ..runtime.worker import Worker, handles
from .openai_backend import OpenAIBackend
from .openai_errors import BACKEND_EXCEPTIONS, ENGINE_GONE, with_choices
from .openai_results import cached_tokens, chat_logprobs, completion_logprobs

OUTCOME_QUESTION = "Is this answer correct? Answer Yes or No."
PROCESS_QUESTION = "Is the last step of this partial solution correct? Answer Yes or No."
NEUTRAL = 0.5
"""The score when neither Yes nor No is among the top tokens: no evidence either way."""


def yes_no_score(tokens: list[TokenLogprob]) -> float | None:
    """P(Yes)/(P(Yes)+P(No)) from the first token's alternatives (case and spaces ignored);
    ``None`` when neither answer appears."""
    if not tokens:
        return None
    first = tokens[0]
    alternatives = first.top or [TopLogprob(token=first.token, logprob=first.logprob)]
    p_yes = p_no = 0.0
    seen: set[str] = set()
    for alt in alternatives:
        if alt.token in seen:
            continue
        seen.add(alt.token)
        word = alt.token.strip().lower()
        if word == "yes":
            p_yes += math.exp(alt.logprob)
        elif word == "no":
            p_no += math.exp(alt.logprob)
    if p_yes + p_no == 0.0:
        return None
    return p_yes / (p_yes + p_no)


def judge_prompt(problem: str, answer: str, question: str) -> str:
    return f"Problem:\n{problem}\n\nAnswer:\n{answer}\n\n{question}"


def split_steps(candidate: str) -> list[str]:
    """Steps of a candidate given without ``steps``: paragraphs, else lines."""
    paragraphs = [p.strip() for p in candidate.split("\n\n") if p.strip()]
    if len(paragraphs) > 1:
        return paragraphs
    return [line.strip() for line in candidate.splitlines() if line.strip()] or [candidate]


class LogprobJudgeRewardWorker(Worker):
    """Scores ``RewardTask`` candidates (outcome mode) or step prefixes (process mode).

    * ``api``: ``"chat"`` (the model's chat template frames the question) or ``"completions"``
      (a raw prompt ending in ``Answer:``, for base models).
    * ``max_concurrency``: judge calls in flight; all candidates of a task are scored at once
      up to this cap.
    * ``top_logprobs``: alternatives requested; more makes it likelier both answers appear.
    * Process mode: ``step_scores[i][k]`` judges steps ``0..k`` of candidate ``i``; ``scores[i]``
      is the minimum over its steps (a chain is as good as its weakest step).
    * ``base_url``, ``resolve_every``, ``affinity``, ``affinity_wait``, ``pin_slots``: the
      engine's replicas and prefix-affinity routing, as ``OpenAIWorker`` takes them (a task's
      judge calls share its ``affinity_key``: they all start with the same problem).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str | None = None,
        api_key: str = "none",
        *,
        api: Literal["chat", "completions"] = "chat",
        max_concurrency: int = 4,
        top_logprobs: int = 10,
        system_prompt: str | None = "You are a strict grader. Reply with one word: Yes or No.",
        max_retries: int = 2,
        timeout: float = 60.0,
        client: openai.AsyncOpenAI | None = None,
        resolve_every: float | None = None,
        affinity: bool = True,
        affinity_wait: float = 0.25,
        pin_slots: bool = False,
        slot_offset: int = 0,
    ) -> None:
        super().__init__()
        self.backend = OpenAIBackend(
            base_url,
            api_key,
            model,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            timeout=timeout,
            client=client,
            resolve_every=resolve_every,
            affinity_wait=affinity_wait,
            pin_slots=pin_slots,
            slot_offset=slot_offset,
        )
        self.affinity = affinity
        self.api = api
        self.top_logprobs = top_logprobs
        self.system_prompt = system_prompt

    async def start(self) -> None:
        self.backend.client()

    async def stop(self) -> None:
        await self.backend.close()

    async def judge(self, text: str, model: str, key: str | None = None) -> tuple[float, Usage]:
        """One Yes/No question → (score, usage); a replica that refuses the connection is set
        aside and the question asked of another."""
        pool = self.backend.pool
        attempts = len(pool.engines)
        for attempt in range(attempts):
            async with self.backend.lease(key if self.affinity else None, text) as lease:
                try:
                    if self.api == "chat":
                        tokens, usage = await self._ask_chat(lease.client, text, model, lease.extra_body())
                    else:
                        tokens, usage = await self._ask_completion(lease.client, text, model, lease.extra_body())
                except BACKEND_EXCEPTIONS as exc:
                    if isinstance(exc, ENGINE_GONE) and attempt + 1 < attempts:
                        pool.mark_down(lease.engine, exc)
                        continue
                    raise self.backend.error(exc, url=lease.engine.url) from exc
                pool.record(lease, usage)
                if lease.key is not None:
                    lease.cached_text = text
            break
        score = yes_no_score(tokens)
        return (NEUTRAL if score is None else score), usage

    async def _ask_chat(
        self, client: openai.AsyncOpenAI, text: str, model: str, extra_body: dict[str, Any] | None = None
    ) -> tuple[list[TokenLogprob], Usage]:
        messages: list[Any] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": text})
        resp = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            extra_body=extra_body or None,
        )
        resp = with_choices(resp, self.backend.base_url)
        choice = resp.choices[0] if resp.choices else None
        return chat_logprobs(choice.logprobs if choice else None), _usage(resp)

    async def _ask_completion(
        self, client: openai.AsyncOpenAI, text: str, model: str, extra_body: dict[str, Any] | None = None
    ) -> tuple[list[TokenLogprob], Usage]:
        resp = await client.completions.create(
            model=model,
            prompt=f"{text}\nAnswer:",
            max_tokens=1,
            temperature=0,
            logprobs=self.top_logprobs,
            extra_body=extra_body or None,
        )
        resp = with_choices(resp, self.backend.base_url)
        choice = resp.choices[0] if resp.choices else None
        return completion_logprobs(choice.logprobs if choice else None), _usage(resp)

    @handles(RewardTask)
    async def score(self, task: RewardTask) -> None:
        started = time.perf_counter()
        model = await self.backend.resolve_model(task.model)
        if task.mode == "outcome":
            prompts = [judge_prompt(task.prompt, c, OUTCOME_QUESTION) for c in task.candidates]
            results = await gather_or_cancel(self.judge(p, model, task.affinity_key) for p in prompts)
            task.scores = [s for s, _ in results]
        else:
            steps = task.steps if task.steps is not None else [split_steps(c) for c in task.candidates]
            prompts = [
                judge_prompt(task.prompt, "\n".join(chain[: k + 1]), PROCESS_QUESTION)
                for chain in steps
                for k in range(len(chain))
            ]
            results = await gather_or_cancel(self.judge(p, model, task.affinity_key) for p in prompts)
            flat = iter(s for s, _ in results)
            task.step_scores = [[next(flat) for _ in chain] for chain in steps]
            task.scores = [min(chain) if chain else NEUTRAL for chain in task.step_scores]
        usage = Usage()
        for _, u in results:
            usage = usage + u
        task.usage = usage
        task.latency_s = time.perf_counter() - started


def _usage(resp: Any) -> Usage:
    u = getattr(resp, "usage", None)
    if u is None:
        return Usage(completion_tokens=1)
    return Usage(
        prompt_tokens=u.prompt_tokens or 0,
        completion_tokens=u.completion_tokens or 0,
        cached_tokens=cached_tokens(resp),
    )
