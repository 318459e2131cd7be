"""Prefix-affinity keys: set by the runtime on every task a controller yields, so that the tasks
whose prompts share a prefix (a continuation, a probe, a sibling of one branch) carry one key and
an engine pool can send them to the engine (and slot) that already holds that prefix.

The key is the job's id and a hash of the prompt's leading block, and a prompt that extends one
the job sent before (its lineage) takes that one's key. Step-level methods build each prompt by
extending an earlier one (question + steps so far), so every generation of one job's search
shares the key of its question, while prompts of another shape (a judge's) get their own.
Methods written by users get it for free; a task that already has a key keeps it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..proto.tasks import ChatTask, GenerationTask, RewardTask, Task

LEAD_CHARS = 256
"""Characters of the prompt that make its leading block: enough to tell a method's prompt
families apart, short enough that the steps a search appends never change the key."""


def prompt_head(task: Task, chars: int = LEAD_CHARS) -> str | None:
    """The leading block of a task's prompt; ``None`` for tasks without one (tool calls)."""
    if isinstance(task, GenerationTask):
        if task.input_str is not None:
            return task.input_str[:chars]
        if task.input_tokens is not None:
            return ",".join(map(str, task.input_tokens[: chars // 4]))
        return None
    if isinstance(task, ChatTask):
        text = "".join(f"{m.role}:{m.content or ''}\n" for m in task.messages)
        return text[:chars]
    if isinstance(task, RewardTask):
        return f"reward:{task.mode}:{task.prompt[:chars]}"
    return None


def affinity_key(job_id: str, task: Task) -> str | None:
    """``<job id>/<16 hex of the leading block's hash>``, or ``None`` without a prompt."""
    head = prompt_head(task)
    if head is None:
        return None
    digest = hashlib.blake2b(head.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{job_id[:32]}/{digest}"


def prompt_text(task: Task) -> str | None:
    """The whole prompt as one text (what a continuation extends)."""
    return prompt_head(task, chars=1 << 30)


@dataclass
class Lineage:
    """One job's prompt families: the first prompt of each and its key. A task whose prompt
    extends a family's first prompt (a continuation, a probe, a sibling) takes its key, even
    when the family's prompt is shorter than the leading block."""

    roots: list[tuple[str, str]] = field(default_factory=list)

    def key_for(self, job_id: str, task: Task) -> str | None:
        text = prompt_text(task)
        if text is None:
            return None
        for root, known in self.roots:
            if text.startswith(root):
                return known
        key = affinity_key(job_id, task)
        if key is not None:
            self.roots.append((text, key))
            del self.roots[:-MAX_ROOTS]
        return key


MAX_ROOTS = 64
"""Prompt families a job remembers (the oldest are forgotten first)."""


def assign_keys(tasks: Iterable[Task], job_id: str, lineage: Lineage | None = None) -> None:
    """Give every task without a key its affinity key (a key set by the method wins)."""
    lineage = lineage if lineage is not None else Lineage()
    for task in tasks:
        if task.affinity_key is None:
            key = lineage.key_for(job_id, task)
            if key is not None:
                task.__dict__["affinity_key"] = key  # built here, valid by construction
