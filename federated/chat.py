"""Chat formatting: turn an `Example` into token ids with the tokenizer's chat template.

The prompt part is the template rendered for the user turn with the
generation prompt (exactly what a chat model sees before answering); the
response part is the rest of the rendered conversation (the assistant text
plus the template's end-of-turn token, so the model learns to stop). Both are
tokenised separately so the boundary is exact. Tokenizers without a chat
template (the tiny byte-level test tokenizer) get `FALLBACK_TEMPLATE`, a
minimal ChatML-style template, so training and attribution agree on the
format either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from federated.data import Example
from federated.errors import DatasetError

FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response; loss is taken on ids[prompt_len:]."""

    ids: tuple[int, ...]
    prompt_len: int

    @property
    def response_ids(self) -> tuple[int, ...]:
        return self.ids[self.prompt_len:]


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE


def prompt_ids(tokenizer, prompt: str, *, max_tokens: int = 10_000) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant generation prompt."""
    ensure_chat_template(tokenizer)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_tokens:
        raise DatasetError(f"prompt is {len(ids)} tokens, over the limit of {max_tokens}: {prompt[:60]!r}...")
    return ids


def encode(tokenizer, example: Example, *, max_prompt_tokens: int = 192, max_response_tokens: int = 64) -> Encoded:
    """Chat-format `example`; the response is cut to `max_response_tokens` (end-of-turn kept if it fits)."""
    ensure_chat_template(tokenizer)
    p_ids = prompt_ids(tokenizer, example.prompt, max_tokens=max_prompt_tokens)
    p_text = tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], tokenize=False,
                                           add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.response}],
        tokenize=False)
    if not full.startswith(p_text):
        raise DatasetError("the tokenizer's chat template renders the prompt differently inside a conversation; "
                           "cannot split prompt from response")
    r_ids = tokenizer(full[len(p_text):].rstrip("\n"), add_special_tokens=False)["input_ids"]
    return Encoded(ids=tuple(p_ids) + tuple(r_ids[:max_response_tokens]), prompt_len=len(p_ids))


def encode_all(tokenizer, examples: list[Example], **limits) -> list[Encoded]:
    """Encode every example; ones whose prompt is over the limit are dropped (count them with len())."""
    out = []
    for ex in examples:
        try:
            out.append(encode(tokenizer, ex, **limits))
        except DatasetError:
            continue
    return out
