"""LM-Searcher-tiny's tokenizer: one token per character, plus the prompt words as whole tokens.

Codes must be read symbol by symbol (each symbol is a slot), so digits, letters
and separators are single characters; the fixed words of the prompt templates
are whole tokens (matched only as whole words) to keep prompts short.
"""

from __future__ import annotations

import re
import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from prompts.choice import TAGGED_CHARACTERS
from prompts.grade import SCORED_CHARACTERS
from prompts.near import NEAR_CHARACTERS
from prompts.render import PROMPT_DIR

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
CHARACTERS = (
    string.digits
    + string.ascii_letters
    + string.punctuation
    + " \n"
    + TAGGED_CHARACTERS
    + SCORED_CHARACTERS
    + NEAR_CHARACTERS
)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '</s>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


# A fixed list: new prompt files must not shift the vocabulary (a new format is added here on purpose).
RANKER_TEMPLATES = ("paper", "compact", "generate", "choice", "choice_generate", "grade", "grade_generate", "near")


def prompt_words() -> list[str]:
    """Words of three or more letters in the ranker's prompt templates."""
    text = " ".join((PROMPT_DIR / f"{name}.txt").read_text() for name in RANKER_TEMPLATES)
    return sorted({word for word in re.findall(r"[A-Za-z]{3,}", text)})


def build_tokenizer(model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
    )
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(word, single_word=True, normalized=False) for word in prompt_words()])
    return tokenizer
