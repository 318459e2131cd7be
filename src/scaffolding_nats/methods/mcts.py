"""Monte Carlo tree search over reasoning steps: select a leaf by UCB, expand it with
``num_thoughts_per_step`` thoughts generated in parallel, score them with one batched reward
call, back the scores up the tree; finally follow the most valuable path."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Unpack

from ..proto.tasks import Task
from ..runtime.context import emit_progress
from ..runtime.controller import Controller, ControllerGen, Output
from .kit.base import Slot, fail_all, prompt_of, require, set_method_result, succeed
from .kit.results import SearchOutcome
from .kit.steps import StepOptions, StepSearch, join_steps, score
from .native import NativeGenerationController
from .reward import OutcomeRewardController


@dataclass(eq=False)
class Node:
    steps: list[str] = field(default_factory=list)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0
    final: bool = False

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def mean(self) -> float:
        return self.value / self.visits if self.visits else 0.0

    def ucb(self, c: float) -> float:
        if self.visits == 0:
            return math.inf
        parent_visits = self.parent.visits if self.parent else self.visits
        return self.mean + c * math.sqrt(math.log(max(parent_visits, 1)) / self.visits)


class MCTSController(StepSearch):
    name = "mcts"
    kind = "mcts"
    slots = {"generator": Slot("generation_controller"), "reward": Slot("reward_controller")}

    def __init__(
        self,
        generation_controller: Controller | None = None,
        reward_controller: Controller | None = None,
        *,
        max_depth: int = 5,
        max_iterations: int = 8,
        exploration_constant: float = 1.414,
        num_thoughts_per_step: int = 3,
        complete_answer: bool = True,
        **options: Unpack[StepOptions],
    ) -> None:
        require(max_depth >= 1, "max_depth", "must be at least 1")
        require(max_iterations >= 1, "max_iterations", "must be at least 1")
        require(exploration_constant >= 0, "exploration_constant", "must not be negative")
        require(num_thoughts_per_step >= 1, "num_thoughts_per_step", "must be at least 1")
        super().__init__(
            generation_controller or NativeGenerationController(),
            reward_controller or OutcomeRewardController(),
            **options,
        )
        self.max_depth = max_depth
        self.max_iterations = max_iterations
        self.exploration_constant = exploration_constant
        self.num_thoughts_per_step = num_thoughts_per_step
        self.complete_answer = complete_answer
        self.root = Node()

    def select(self) -> Node:
        node = self.root
        while node.children:
            node = max(node.children, key=lambda n: n.ucb(self.exploration_constant))
        return node

    @staticmethod
    def backpropagate(node: Node | None, reward: float) -> None:
        while node is not None:
            node.visits += 1
            node.value += reward
            node = node.parent

    def best_path(self) -> Node:
        """Follow the child with the best mean value (visits break ties) down to a leaf."""
        node = self.root
        while node.children:
            node = max(node.children, key=lambda n: (n.mean, n.visits))
        return node

    def process(self, tasks: list[Task], **kwargs: Any) -> ControllerGen:
        caller = tasks[0]
        prompt = prompt_of(caller)
        self.root, self._output = Node(), None
        iterations = 0
        for it in range(self.max_iterations):
            leaf = self.select()
            if leaf.final or leaf.depth >= self.max_depth:
                # Nothing to expand here: re-score by the value already known.
                self.backpropagate(leaf, leaf.mean if leaf.visits else 0.0)
                if all(_exhausted(n, self.max_depth) for n in _leaves(self.root)):
                    break
                continue
            iterations += 1
            (children,) = yield from self._expand(
                caller, prompt, [leaf.steps], self.num_thoughts_per_step, seed_offset=it * self.num_thoughts_per_step
            )
            nodes = []
            for child in children:
                steps, final = self._extend(leaf.steps, child)
                nodes.append(Node(steps, leaf, final=final))
            if not nodes:
                leaf.final = True  # every thought failed: do not select it again
                continue
            leaf.children = nodes
            scores = yield from score(self.reward_controller, prompt, [n.steps for n in nodes])
            for node, s in zip(nodes, scores or [0.0] * len(nodes), strict=False):
                self.backpropagate(node, s)
            emit_progress(method=self.label, iteration=it + 1, nodes=_count(self.root))
        best = self.best_path()
        if not best.steps:
            fail_all(tasks, "MCTS produced no thought (every generation failed)")
            return
        text = join_steps(best.steps)
        completed = False
        if self.complete_answer and not best.final:
            completion = yield from self._complete(caller, prompt, best.steps)
            if completion is not None:
                text, completed = completion, True
        self._output = self._make_output(best, text, iterations, completed)
        succeed(caller, text)
        set_method_result(caller, self._output.answer, value=best.mean)

    def _make_output(self, best: Node, text: str, iterations: int, completed: bool) -> Output:
        return Output(
            text=text,
            answer=self.extractor(text),
            result=SearchOutcome(
                value=best.mean,
                visits=best.visits,
                depth=best.depth,
                iterations=iterations,
                nodes=_count(self.root),
                completed=completed,
            ),
        )

    def _partial(self) -> Output | None:
        best = self.best_path()
        if not best.steps:
            return None
        out = self._make_output(best, join_steps(best.steps), 0, False)
        out.metadata["partial"] = True
        return out


def _leaves(node: Node) -> list[Node]:
    if not node.children:
        return [node]
    return [leaf for child in node.children for leaf in _leaves(child)]


def _exhausted(node: Node, max_depth: int) -> bool:
    return node.final or node.depth >= max_depth


def _count(node: Node) -> int:
    return 1 + sum(_count(c) for c in node.children)
