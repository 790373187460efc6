import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignkit.data.collators import pack_documents
from alignkit.losses.lm import IGNORE_INDEX

EOS = 0


def test_pack_positions_and_labels():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    b = pack_documents(docs, block_size=6, eos_id=EOS)
    # stream: 5 6 7 0 8 9 | 0 10 11 12 13 0
    assert b["input_ids"].tolist() == [[5, 6, 7, 0, 8, 9], [0, 10, 11, 12, 13, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 0, 1, 2, 3, 4]]
    # the first token of each document is not a target (doc 2 at row 0 col 4, doc 3 at row 1 col 1)
    assert b["labels"].tolist() == [[IGNORE_INDEX, 6, 7, 0, IGNORE_INDEX, 9], [0, IGNORE_INDEX, 11, 12, 13, 0]]


def test_packed_documents_do_not_attend_to_each_other():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64))
    model.eval()
    a, b = [3, 4, 5, 6], [7, 8, 9]
    packed = pack_documents([a, b], block_size=9, eos_id=EOS)
    with torch.no_grad():
        together = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([b + [EOS]])).logits
    assert torch.allclose(together[0, 5:], alone[0], atol=1e-5)
