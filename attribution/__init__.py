"""ProToken attribution: which federated clients caused each generated token.

Public API (everything else is internal):

    from attribution import load_round, attribute, AttributionConfig

    loaded = load_round("rounds/round-0003")            # global model + clients
    result = attribute(loaded, prompt="What is 2+2?")   # generate greedily, attribute
    result = attribute(loaded, prompt="What is 2+2?", response="4")  # teacher-force
    print(result.table())
    result.predicted_client, result.responsible_set, result.token_scores  # [T, K]

`attribute` generates with `generate_and_attribute` unless a response is
given, in which case it teacher-forces with the fast engine; both return the
numbers of `reference_attribute`, the published per-token algorithm, to float
tolerance. `attribute_batch` attributes several items on one loaded round,
reading each chunk of clients once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .config import AttributionConfig
from .errors import AttributionError, ConfigError, InputError
from .fast import attribute_traces, check_ids, check_length, teacher_forced_attribute
from .fast import trace_teacher_forced as _trace_teacher_forced
from .generate import check_max_new_tokens, generate_and_attribute
from .loaded import LoadedRound, load_round
from .reference import reference_attribute
from .result import METHOD_VERSION, AttributionResult, build_result
from .snapshot import read_round, write_round

__all__ = [
    "METHOD_VERSION", "AttributionConfig", "AttributionError", "AttributionResult", "LoadedRound", "attribute",
    "attribute_batch", "encode_prompt", "encode_response", "generate_and_attribute", "load_round", "read_round",
    "reference_attribute", "teacher_forced_attribute", "write_round",
]


def encode_prompt(loaded: LoadedRound, prompt: str, *, chat_template: bool = True) -> list[int]:
    """Token ids of a prompt; as a user turn of the chat template when asked and the tokenizer has one."""
    if not isinstance(prompt, str) or not prompt:
        raise InputError(f"prompt must be a non-empty string, got {prompt!r}")
    tokenizer = loaded.tokenizer
    if chat_template and getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=True)
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    return list(tokenizer(prompt)["input_ids"])


def encode_response(loaded: LoadedRound, response: str) -> list[int]:
    if not isinstance(response, str) or not response:
        raise InputError(f"response must be a non-empty string, got {response!r}")
    return list(loaded.tokenizer(response, add_special_tokens=False)["input_ids"])


def _item_ids(loaded, prompt, prompt_ids, response, response_ids, chat_template):
    if (prompt is None) == (prompt_ids is None):
        raise InputError("give exactly one of prompt (text) or prompt_ids")
    if response is not None and response_ids is not None:
        raise InputError("give at most one of response (text) or response_ids")
    ids = encode_prompt(loaded, prompt, chat_template=chat_template) if prompt is not None else prompt_ids
    ids = check_ids(loaded, ids, "prompt")
    forced = encode_response(loaded, response) if response is not None else response_ids
    return ids, (check_ids(loaded, forced, "response") if forced is not None else None)


def attribute(loaded: LoadedRound, *, prompt: str | None = None, prompt_ids=None, response: str | None = None,
              response_ids=None, max_new_tokens: int = 32, chat_template: bool = True,
              config: AttributionConfig | None = None, eos: bool = True, progress=None) -> AttributionResult:
    """Attribute one response: teacher-forced when a response is given, else generated greedily."""
    config = _config(loaded, config)
    ids, forced = _item_ids(loaded, prompt, prompt_ids, response, response_ids, chat_template)
    if forced is not None:
        return teacher_forced_attribute(loaded, ids, forced, config=config, progress=progress)
    return generate_and_attribute(loaded, ids, max_new_tokens=max_new_tokens, config=config, eos=eos,
                                  progress=progress)


def attribute_batch(loaded: LoadedRound, items: Sequence[dict], config: AttributionConfig | None = None, *,
                    progress=None) -> list[AttributionResult]:
    """Attribute several items (dicts of `attribute`'s keyword arguments) on one loaded round.

    Items with a response are traced teacher-forced; items without are
    generated first. All traces then share one streamed pass over the clients
    when every tracked module is local.
    """
    config = _config(loaded, config)
    if isinstance(items, dict | str) or not isinstance(items, Sequence) or not items:
        raise InputError("items must be a non-empty list of dicts with attribute()'s keyword arguments")
    prepared = [_prepare(loaded, item, i, config, progress) for i, item in enumerate(items)]
    modules = loaded.tracked(config)
    traced = [(p, r, _trace_teacher_forced(loaded, p, r, modules, config)) for p, r in prepared]
    scores = attribute_traces(loaded, traced, config, progress)
    return [build_result(loaded, prompt_ids=p, response_ids=r, raw_scores=s, config=config,
                         mode="teacher_forced" if _has_response(item) else "generated", engine="fast",
                         tracked=[m.name for m in modules], timings={})
            for (p, r), s, item in zip(prepared, scores, items, strict=True)]


def _has_response(item: dict) -> bool:
    return item.get("response") is not None or item.get("response_ids") is not None


def _prepare(loaded, item, index: int, config, progress) -> tuple[list[int], list[int]]:
    from .generate import greedy_generate

    allowed = {"prompt", "prompt_ids", "response", "response_ids", "max_new_tokens", "chat_template", "eos"}
    if not isinstance(item, dict) or set(item) - allowed:
        raise InputError(f"items[{index}] must be a dict with keys among {sorted(allowed)}")
    ids, forced = _item_ids(loaded, item.get("prompt"), item.get("prompt_ids"), item.get("response"),
                            item.get("response_ids"), item.get("chat_template", True))
    if forced is None:
        steps = check_max_new_tokens(item.get("max_new_tokens", 32))
        check_length(loaded, len(ids) + steps)
        forced = greedy_generate(loaded, ids, steps, eos=item.get("eos", True), progress=progress)
    check_length(loaded, len(ids) + len(forced))
    return ids, forced


def _config(loaded: LoadedRound, config) -> AttributionConfig:
    if config is None:
        return loaded.config
    if not isinstance(config, AttributionConfig):
        raise ConfigError(f"config must be an AttributionConfig, got {type(config).__name__}")
    return config
