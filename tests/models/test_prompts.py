"""encode(): labels from lengths, so the end-of-turn token (== pad id in SmolLM2) keeps its label."""

import copy

import pytest
import torch

from obliviate.models.prompts import PLAIN_QA, answer_completion, encode, question_prompt

QA = {"question": "Which band was John Lennon a member of?", "answer": "The Beatles."}
SHORT = {"question": "Hi?", "answer": "Hello."}


def test_smollm2_pads_with_its_end_of_turn_token(tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.eos_token == "<|im_end|>"


def test_chat_prompt_ends_with_the_assistant_header(tokenizer):
    prompt = question_prompt(tokenizer, QA["question"])
    assert QA["question"] in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert answer_completion(tokenizer, QA["question"], QA["answer"]) == "The Beatles.<|im_end|>"


def test_prompt_is_masked_and_answer_with_end_of_turn_is_labelled(tokenizer):
    batch = encode(tokenizer, [QA])
    ids, labels, mask = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
    n_prompt = len(tokenizer(question_prompt(tokenizer, QA["question"]), add_special_tokens=False)["input_ids"])
    assert (labels[:n_prompt] == -100).all()
    assert torch.equal(labels[n_prompt:], ids[n_prompt:])
    assert labels[-1].item() == 2, "the end-of-turn token lost its label"
    assert tokenizer.decode(labels[n_prompt:]) == "The Beatles.<|im_end|>"
    assert mask.all()


def test_padding_is_masked_but_the_real_end_of_turn_is_not(tokenizer):
    batch = encode(tokenizer, [QA, SHORT])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == 2
    n_short = int(mask[1].sum())
    assert n_short < ids.shape[1]
    # Padding: pad id 2, attention 0, label -100.
    assert (ids[1, n_short:] == 2).all()
    assert (mask[1, n_short:] == 0).all() and (mask[1, :n_short] == 1).all()
    assert (labels[1, n_short:] == -100).all()
    # The short row's own end-of-turn (also id 2) keeps its label.
    assert ids[1, n_short - 1].item() == 2 and labels[1, n_short - 1].item() == 2
    assert tokenizer.decode(labels[1][labels[1] != -100]) == "Hello.<|im_end|>"
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long


def test_text_records_are_labelled_everywhere(tokenizer):
    text = "Paris is the capital of France."
    batch = encode(tokenizer, [{"text": text}])
    assert torch.equal(batch["labels"][0], batch["input_ids"][0])
    assert tokenizer.decode(batch["input_ids"][0]) == text


def test_max_length_cuts_and_keeps_the_prompt_masked(tokenizer):
    batch = encode(tokenizer, [QA], max_length=8)
    assert batch["input_ids"].shape == (1, 8)
    assert (batch["labels"] == -100).all()  # the chat prompt alone is longer than 8 tokens


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer):
    """The same tokenizer without a chat template: the 'Question: ...\\nAnswer:' format."""
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


def test_plain_format(plain_tokenizer):
    assert question_prompt(plain_tokenizer, "Hi?") == PLAIN_QA.format(question="Hi?") == "Question: Hi?\nAnswer:"
    batch = encode(plain_tokenizer, [QA, SHORT])
    labels, mask = batch["labels"], batch["attention_mask"]
    for row, rec in enumerate([QA, SHORT]):
        kept = labels[row][labels[row] != -100]
        assert plain_tokenizer.decode(kept) == f" {rec['answer']}<|im_end|>"
        n_prompt = len(
            plain_tokenizer(question_prompt(plain_tokenizer, rec["question"]), add_special_tokens=False)["input_ids"]
        )
        assert (labels[row, :n_prompt] == -100).all()
    n_short = int(mask[1].sum())
    assert (labels[1, n_short:] == -100).all() and labels[1, n_short - 1].item() == 2


def test_plain_text_records_start_with_an_unlabelled_bos(plain_tokenizer):
    batch = encode(plain_tokenizer, [{"text": "Water boils at 100 degrees."}])
    assert batch["input_ids"][0, 0].item() == plain_tokenizer.bos_token_id
    assert batch["labels"][0, 0].item() == -100
    assert (batch["labels"][0, 1:] == batch["input_ids"][0, 1:]).all()
