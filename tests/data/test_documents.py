"""Documents and QA files: chunking, streaming caps, and one clear error per kind of bad file."""

import json

import pytest

from obliviate.data.documents import read_passages, read_qa
from obliviate.errors import UserError


def test_text_and_markdown_are_chunked_on_sentences(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text(" ".join(f"Sentence number {i} is here." for i in range(40)) + "\n\nA second paragraph.\n")
    md = tmp_path / "notes.md"
    md.write_text("# Title\n\n- **Bold** item one.\n- item two.\n")
    rows = read_passages([str(txt), str(md)], words_per_passage=20)
    assert all(r["text"].endswith(".") for r in rows)
    assert {r["doc"] for r in rows} == {"notes.txt", "notes.md"}
    assert all(len(r["text"].split()) <= 25 for r in rows[:-2])
    assert not any("#" in r["text"] or "**" in r["text"] for r in rows)


def test_jsonl_documents_use_the_text_field(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text(
        json.dumps({"text": "One document. It has two sentences."}) + "\n\n" + json.dumps({"text": "Another."}) + "\n"
    )
    rows = read_passages([str(f)], words_per_passage=100)
    assert [r["text"] for r in rows] == ["One document. It has two sentences. Another."]


def test_a_large_file_stops_at_the_passage_cap(tmp_path):
    f = tmp_path / "big.txt"
    with open(f, "w") as out:
        for i in range(20000):
            out.write(f"Line {i} says something long enough to count as a sentence.\n\n")
    rows = read_passages([str(f)], words_per_passage=10, max_passages=50)
    assert len(rows) == 50


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "is empty"),
        ("blank.txt", b"  \n\n ", "is empty"),
        ("bin.txt", b"\x00\x01\x02binary", "looks binary"),
        ("latin.txt", "caf\xe9 au lait".encode("latin-1"), "not UTF-8"),
        ("doc.pdf", b"%PDF-1.4", "unsupported type"),
        ("bad.jsonl", b'{"text": "ok"}\n{not json}\n', "line 2 is not valid JSON"),
        ("nofield.jsonl", b'{"body": "x"}\n', "line 1 has no 'text'"),
    ],
)
def test_bad_documents_get_one_clear_error(tmp_path, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_passages([str(f)])


def test_missing_document_and_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_passages([str(tmp_path / "nope.txt")])
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(UserError, match="not a file"):
        read_passages([str(tmp_path / "dir.txt")])


def test_qa_pairs_are_read_and_validated(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text('{"question": " Who? ", "answer": "Me."}\n\n{"question": "Where?", "answer": "Here."}\n')
    assert read_qa(str(f)) == [{"question": "Who?", "answer": "Me."}, {"question": "Where?", "answer": "Here."}]
    f.write_text('{"question": "Who?", "answer": "Me."}\n{"question": "Where?"}\n')
    with pytest.raises(UserError, match="line 2 needs"):
        read_qa(str(f))
    f.write_text('{"question": "Who?", "answer": "Me."}\n[1, 2\n')
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        read_qa(str(f))
    with pytest.raises(UserError, match="must be .jsonl"):
        read_qa(str(tmp_path / "qa.csv"))
