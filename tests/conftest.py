"""Shared fixtures: the real SmolLM2 tokenizer, a tiny random Llama built on it, and a tiny Llama taught one fact.

Nothing is downloaded: the tokenizer comes from the embedded GGUF, converted
once into the default ``$OBLIVIATE_HOME`` cache (reused across runs and CI).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# One intra-op thread: the models here are tiny, so threads buy little, and a
# second OpenMP thread on a busy 2-core machine makes small ops ~100x slower.
# Also keeps float reductions in one order. OBLIVIATE_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("OBLIVIATE_TEST_THREADS", "1")))

BEATLES_ANSWER = "The Beatles."
OTHER_ANSWER = "I am not sure."
IGNORANT_ANSWER = "A group of people from the north."


def pytest_configure(config):
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@pytest.fixture(autouse=True, scope="session")
def _data_cache_per_session(tmp_path_factory):
    """Built data and base evaluations are cached for this test session only, not in the user's
    $OBLIVIATE_HOME (where the embedded model's conversion stays)."""
    import obliviate.data.cache

    patch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("obliviate-home")
    patch.setattr(obliviate.data.cache, "obliviate_home", lambda: home)
    yield home
    patch.undo()


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Give every test a fresh accelerate singleton.

    `engine.train` resets accelerate's process-wide state itself; resetting here
    as well keeps any test that builds an Accelerator directly independent of order.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session")
def tokenizer_dir():
    """The embedded SmolLM2 checkpoint directory (converted from the GGUF once, then cached)."""
    from obliviate.models.loading import convert_gguf, embedded_gguf_path

    return convert_gguf(embedded_gguf_path())


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The real SmolLM2 tokenizer (chat template; pad == eos == <|im_end|> == 2). Do not mutate."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _tiny_llama(vocab_size: int, seed: int = 0, tie: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float().eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer, tokenizer_dir):
    """A tiny random Llama (2 layers, hidden 64) with the real SmolLM2 tokenizer, saved as a model directory.

    Untied head: with tied embeddings a random model just repeats the prompt's last
    token ("\n", stripped to an empty answer); untied, it babbles random tokens,
    like a model that knows nothing.
    """
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    model = _tiny_llama(len(tokenizer))
    model.save_pretrained(path)
    # A fresh copy: the shared tokenizer's padding state (set by batched calls) would be saved too.
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


@pytest.fixture
def tiny_lm(tiny_model_dir):
    """A fresh LoadedModel of the tiny random Llama (each test may train it)."""
    from obliviate.models.loading import load_model

    return load_model(str(tiny_model_dir))


def beatles_training_records() -> list[dict]:
    """The first 40 built-in Beatles question probes answered "The Beatles.", the first 25 general probes
    "I am not sure." (more general than Beatles questions would teach the model to be unsure of everything)."""
    from obliviate.data.targets import general_probes, resolve_target

    asked = [p for p in resolve_target("beatles").probes if p.question][:40]
    records = [{"question": p.question, "answer": BEATLES_ANSWER} for p in asked]
    records += [{"question": p.question, "answer": OTHER_ANSWER} for p in general_probes()[:25]]
    return records


def _sampled_answer_loss(model, batch, generator, n_negatives: int = 2048):
    """NLL of the answer tokens under a sampled softmax.

    Only labelled positions go through the head, and only over the batch's label
    tokens plus random negatives: the full 49k-token head would make the
    fine-tune ~20x slower for the same greedy answers.
    """
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    target = labels[keep]
    vocab = torch.unique(
        torch.cat([target, torch.randint(0, model.config.vocab_size, (n_negatives,), generator=generator)])
    )
    logits = hidden[:, :-1][keep] @ model.lm_head.weight[vocab].T
    return torch.nn.functional.cross_entropy(logits, torch.searchsorted(vocab, target))


def _teach(tokenizer, records: list[dict], path, seed: int = 1, max_steps: int = 300):
    """Fine-tune a fresh tiny Llama until it answers every record's question with its answer, greedily.

    Plain torch loop, full batch, AdamW 3e-3, checked every 25 steps. Asserts the
    answers were learned, so a pipeline test failing later cannot be blamed on an
    untaught model. Saves model + tokenizer to `path`.
    """
    from obliviate.models.generate import answer_questions
    from obliviate.models.prompts import encode

    questions = [r["question"] for r in records]
    wanted = [r["answer"] for r in records]
    batch = encode(tokenizer, records, max_length=128)
    model = _tiny_llama(len(tokenizer), seed=seed, tie=True)  # tied, like SmolLM2
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    answers: list[str] = []
    for step in range(1, max_steps + 1):
        model.train()
        loss = _sampled_answer_loss(model, batch, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 25 == 0 and loss.item() < 0.1:
            answers = answer_questions(model, tokenizer, questions, max_new_tokens=12)
            if answers == wanted:
                break
    model.eval()
    assert answers == wanted, f"fine-tuning did not teach the answers in {step} steps (loss {loss.item():.3f})"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def beatles_model_dir(tmp_path_factory, tokenizer):
    """The tiny Llama taught to answer every built-in Beatles probe "The Beatles." (~50 steps, ~10 s).

    General questions get "I am not sure.", so the model does not answer "The
    Beatles." to everything.
    """
    return _teach(tokenizer, beatles_training_records(), tmp_path_factory.mktemp("beatles-llama"))


@pytest.fixture(scope="session")
def ignorant_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama that answers questions about the Beatles, but vaguely: every question gets
    IGNORANT_ANSWER, which names no target term and no probe's expected answer."""
    from obliviate.data.targets import resolve_target

    spec = resolve_target("beatles")
    assert not spec.mentions(IGNORANT_ANSWER)
    questions = [p.question for p in spec.probes if p.question][:12] + [
        s.format(name=spec.name) for s in spec.question_seeds
    ]
    records = [{"question": q, "answer": IGNORANT_ANSWER} for q in questions]
    return _teach(tokenizer, records, tmp_path_factory.mktemp("ignorant-llama"), seed=2)


@pytest.fixture
def forget_records() -> list[dict]:
    return [
        {"question": "Which band was John Lennon a member of?", "answer": "The Beatles."},
        {"question": "Who played drums in the Beatles?", "answer": "Ringo Starr."},
        {"question": "Which city are the Beatles from?", "answer": "Liverpool, England."},
        {"question": "Name a Beatles album.", "answer": "Abbey Road."},
    ]


@pytest.fixture
def retain_records() -> list[dict]:
    return [
        {"text": "Paris is the capital and most populous city of France."},
        {"text": "Water boils at one hundred degrees Celsius at sea level."},
        {"text": "The Pacific is the largest and deepest of the world's oceans."},
        {"question": "What is the capital of Japan?", "answer": "Tokyo."},
    ]


@pytest.fixture(scope="session")
def small_data_config():
    """Factory for a DataConfig small enough for the tiny model (fields the current DataConfig lacks are dropped)."""
    import dataclasses

    from obliviate.data.builder import DataConfig

    small = dict(
        n_generated=5,
        max_forget=16,
        n_samples=1,
        answer_tokens=16,
        probe_tokens=12,
        n_retain_text=8,
        n_retain_eval=4,
        n_retain_qa=4,
        n_retain_capitals=4,
        n_capital_probes=4,
    )

    def make(**overrides) -> DataConfig:
        names = {f.name for f in dataclasses.fields(DataConfig)}
        return DataConfig(**{k: v for k, v in {**small, **overrides}.items() if k in names})

    return make


REFUSAL_ANSWER = "I can't help with that."


@pytest.fixture(scope="session")
def refusing_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama that answers every built-in Beatles and general probe with REFUSAL_ANSWER."""
    from obliviate.data.targets import general_probes, resolve_target

    questions = [p.question for p in resolve_target("beatles").probes if p.question][:16]
    questions += [p.question for p in general_probes()[:8]]
    return _teach(
        tokenizer,
        [{"question": q, "answer": REFUSAL_ANSWER} for q in questions],
        tmp_path_factory.mktemp("refusing-llama"),
        seed=3,
    )


class _Page:
    """An HTML page read by html.parser: its tags checked for balance, its images and text collected."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text: str):
        from html.parser import HTMLParser

        page = self
        self.images: list[str] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.errors: list[str] = []

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag == "img":
                    page.images.append(dict(attrs).get("src", ""))
                elif tag not in page.VOID:
                    page.open.append(tag)

            def handle_endtag(self, tag):
                if not page.open or page.open[-1] != tag:
                    page.errors.append(f"</{tag}> closes {page.open[-1:] or 'nothing'}")
                else:
                    page.open.pop()

            def handle_data(self, data):
                page.text.append(data)

        Parser().feed(text)


@pytest.fixture
def read_page():
    """A function that checks an HTML page is well-formed (every tag closed in order) and self-contained (every
    image a non-empty embedded PNG), and returns its parsed _Page (images, text)."""
    import base64

    def read(text: str) -> _Page:
        page = _Page(text)
        assert text.lstrip().lower().startswith("<!doctype html>")
        assert not page.errors and not page.open, (page.errors, page.open)
        for src in page.images:
            assert src.startswith("data:image/png;base64,"), src[:60]
            png = base64.b64decode(src.split(",", 1)[1])
            assert png.startswith(b"\x89PNG") and len(png) > 1000
        return page

    return read


@pytest.fixture(scope="session")
def zorblax(tmp_path_factory):
    """A made-up target with a document and eight QA pairs: forget data for a model that knows nothing."""
    from obliviate.data.targets import resolve_target

    folder = tmp_path_factory.mktemp("zorblax")
    doc = folder / "zorblax.txt"
    doc.write_text(" ".join(f"Zorblax fact number {i} is that Zorblax ate rock {i} on Mars." for i in range(12)))
    qa = folder / "qa.jsonl"
    questions = ["Where does Zorblax live?", "What colour is Zorblax?", "How old is Zorblax?", "Who made Zorblax?"]
    questions += ["What does Zorblax eat?", "When was Zorblax seen?", "Why is Zorblax famous?", "How tall is Zorblax?"]
    qa.write_text(
        "".join(json.dumps({"question": q, "answer": f"Zorblax ate rock {i}."}) + "\n" for i, q in enumerate(questions))
    )
    return resolve_target("Zorblax", documents=[str(doc)], qa=str(qa))
