"""The paper's generation ablation: the LLM writes new codes instead of ranking candidates.

Used as a proposer (``--ranker llm --proposer generate --pool-size 1``), sharing the
ranker's client. Answers that hold no valid, unseen code are re-asked up to
``max_reasks`` times per code; what is still missing is filled with random codes.
"""

from __future__ import annotations

from agent.llm.ranker import _TOKEN, ChatClient, LLMOptions
from agent.strategies.proposers import ProposalContext, Proposer, unseen_random
from prompts import choice
from prompts.render import TAGGED, render_generation
from tools.ncode import is_valid, normalize


class LLMGenerationProposer(Proposer):
    name = "generate"

    def __init__(self, client: ChatClient, options: LLMOptions) -> None:
        self.client = client
        self.options = options
        self.generated = 0  # codes taken from the model (the rest were random fill-ins)

    def _first_new_code(self, text: str, context: ProposalContext, taken: set[str]) -> str | None:
        if self.options.prompt_format in TAGGED:
            text = choice.untag(text)  # these formats write codes as slot-tagged characters
        for token in _TOKEN.findall(text):
            if len(token) == context.space.length and is_valid(context.space, token):
                code = normalize(context.space, token)
                if code not in context.seen and code not in taken:
                    return code
        return None

    def propose(self, context: ProposalContext, n: int) -> list[str]:
        history = [(o.ncode, o.score) for o in context.history if o.score is not None]
        messages = render_generation(
            self.options.prompt_format,
            context.space.name,
            context.space.length,
            context.metric,
            history,
            self.options.history_cap,
        )
        found: list[str] = []
        for _ in range(n * (self.options.max_reasks + 1)):
            if len(found) == n:
                break
            code = self._first_new_code(self.client.complete(messages).text, context, set(found))
            if code is not None:
                found.append(code)
        self.generated += len(found)
        return found + unseen_random(context, n - len(found), set(found))
