"""The frozen-trunk split must be exact: cached states + tail == the full model."""

import pytest
import torch

from attribution.tiny import byte_tokenizer, tiny_model
from federated.chat import encode
from federated.data import Example
from federated.local import TailTrainer
from federated.tail import TrainConfig, build_tail, pad_batch, response_logits, trunk_states

EXAMPLES = [Example("What is 2+2?", "4.", "math", "t0"), Example("Name a colour.", "Blue, mostly.", "x", "t1"),
            Example("Say hi", "hi", "x", "t2")]


def encoded():
    tok = byte_tokenizer()
    return [encode(tok, e) for e in EXAMPLES]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3_text"])
@pytest.mark.parametrize("k", [1, 2])
def test_tail_on_cached_states_reproduces_full_model_logits(arch, k):
    model = tiny_model(arch, seed=1, layers=3)
    enc = encoded()
    ids, mask = pad_batch([list(e.ids) for e in enc], pad_id=0)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        logits, targets = response_logits(build_tail(model, k), trunk_states(model, enc, k), enc)
    rows = [full[i, t - 1] for i, e in enumerate(enc) for t in range(e.prompt_len, len(e.ids))]
    torch.testing.assert_close(logits, torch.stack(rows), atol=1e-4, rtol=1e-4)
    assert targets.tolist() == [t for e in enc for t in e.response_ids]


def test_chat_encoding_splits_prompt_from_response():
    tok = byte_tokenizer()
    e = encode(tok, EXAMPLES[0])
    assert tok.decode(e.ids[:e.prompt_len]).endswith("<|assistant|>\n")
    assert tok.decode(e.response_ids).startswith("4.")
    assert e.response_ids[-1] == tok.eos_token_id


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_training_lowers_loss_and_only_exchanged_arrays_change(mode):
    model = tiny_model("llama", seed=2, layers=3)
    trainer = TailTrainer.from_base(model, 2, mode=mode, seed=0)
    enc = encoded()
    states = trunk_states(model, enc, 2)
    before = trainer.arrays()
    frozen = {n: p.clone() for n, p in trainer.tail.named_parameters() if n not in trainer.names}
    first = trainer.train(states, enc, TrainConfig(epochs=1, lr=1e-2, batch_size=3))
    last = trainer.train(states, enc, TrainConfig(epochs=8, lr=1e-2, batch_size=3))
    assert last < first
    after = trainer.arrays()
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.tail.named_parameters() if n in frozen)
    if mode == "full":
        assert all(k.startswith(("model.layers.1.", "model.layers.2.")) for k in after)
    else:
        assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) and ".default" not in k for k in after)
        assert any(k.startswith("model.layers.2.self_attn.o_proj.") for k in after)


def test_sentinel_hits_after_memorising():
    model = tiny_model("llama", seed=3, layers=2)
    trainer = TailTrainer.from_base(model, 1)
    enc = encoded()
    states = trunk_states(model, enc, 1)
    assert trainer.sentinel_hits(states, enc) == [False, False, False]
    trainer.train(states, enc, TrainConfig(epochs=40, lr=2e-2, batch_size=3))
    assert trainer.sentinel_hits(states, enc) == [True, True, True]
