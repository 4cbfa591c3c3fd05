"""Real text corpora for indexing and retrieval evaluation.

* ``debian_faq()``: the Debian FAQ (Debian package ``debian-faq``), one
  document per numbered section; each section heading doubles as an eval query
  whose relevant document is that section, so the searchable field is the
  answer text and retrieval quality can be measured without hand labels.
* ``debian_doc_pairs()``: title -> text training pairs from the Debian Reference and the
  Debian Administrator's Handbook (never the FAQ, which is the evaluation set).
* ``chatterbot_english()``: the English Q&A pairs of ``chatterbot-corpus``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import yaml

# Where the Debian packages put the DocBook HTML (the .txt.gz wraps long
# headings over several lines, so the HTML is the more robust source).
FAQ_DIR = Path("/usr/share/doc/debian/FAQ")
# lang -> (Debian package, default directory, file-name language suffix)
FAQ_LANGS = {
    "en": ("debian-faq", FAQ_DIR, "en"),
    "zh": ("debian-faq-zh-cn", FAQ_DIR / "zh-cn", "zh-cn"),
}

_SECTION_RE = re.compile(r"^(\d+(?:\.\d+)+)\.?\s*(.*)$", re.S)  # "3.1.2. Question"
_CHAPTER_RE = re.compile(r"^(?:Chapter\s*\d+\.|第\s*\d+\s*章)\s*")  # en / zh-cn
_HEADINGS = {"h1", "h2", "h3", "h4", "h5"}
# Navigation, per-chapter table of contents and chapter-end footnotes would
# otherwise leak into the first/last section's body.
_SKIP_CLASSES = {"toc", "navheader", "navfooter", "footnotes", "footnote"}
# Block elements get a separator so "</li><li>" does not glue words together;
# inline ones (code, a, em) must not, or "foo<code>bar</code>," gains spaces.
_BLOCKS = {"p", "div", "li", "dt", "dd", "pre", "br", "tr", "td", "th", "table", "ul", "ol", "dl"}


def _norm(text: str) -> str:
    return " ".join(text.split())  # str.split() also eats the \xa0 DocBook emits


class _ChapterParser(HTMLParser):
    """Splits one DocBook chapter page into (number, question, body) sections."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chapter = ""
        self.sections: list[tuple[str, str, list[str]]] = []
        self._skip: tuple[str, int] | None = None  # (tag, nesting depth) being skipped
        self._heading: tuple[str, list[str]] | None = None
        self._body: list[str] | None = None  # parts of the current section's body

    def handle_starttag(self, tag, attrs):
        if self._skip:
            # Count only the skipped tag's own nesting: robust to void elements.
            if tag == self._skip[0]:
                self._skip = (tag, self._skip[1] + 1)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if classes & _SKIP_CLASSES:
            self._skip = (tag, 1)
        elif tag in _HEADINGS and "title" in classes:
            self._heading = (tag, [])
        elif tag in _BLOCKS and self._body is not None:
            self._body.append(" ")

    def handle_startendtag(self, tag, attrs):
        # <br />, <hr />, <a id=".."/>: never opens a skip or a heading.
        if not self._skip and tag in _BLOCKS and self._body is not None:
            self._body.append(" ")

    def handle_endtag(self, tag):
        if self._skip:
            if tag == self._skip[0]:
                depth = self._skip[1] - 1
                self._skip = (tag, depth) if depth else None
            return
        if self._heading and tag == self._heading[0]:
            self._close_heading(_norm("".join(self._heading[1])))
            self._heading = None
        elif tag in _BLOCKS and self._body is not None:
            self._body.append(" ")

    def handle_data(self, data):
        if self._skip:
            return
        if self._heading:
            self._heading[1].append(data)
        elif self._body is not None:
            self._body.append(data)

    def _close_heading(self, text: str) -> None:
        if self._heading[0] == "h1":
            self.chapter = _CHAPTER_RE.sub("", text)
            self._body = None
            return
        m = _SECTION_RE.match(text)
        if not m:  # unnumbered title (none in 11.x): its text belongs to nobody
            self._body = None
            return
        self._body = []
        self.sections.append((m.group(1), _norm(m.group(2)), self._body))


@dataclass
class FaqDataset:
    documents: list[dict] = field(default_factory=list)
    queries: list[dict] = field(default_factory=list)


def debian_faq(root: Path | None = None, lang: str = "en") -> FaqDataset:
    """Parse the installed Debian FAQ into documents and heading queries.

    ``root`` is the directory holding the ``*.<lang>.html`` chapter pages
    (default: where the Debian package installs them).
    """
    if lang not in FAQ_LANGS:
        raise NotImplementedError(f"Debian FAQ language {lang!r}: supported {sorted(FAQ_LANGS)}")
    package, default_dir, suffix = FAQ_LANGS[lang]
    base = Path(root) if root is not None else default_dir
    # index.<lang>.html is the title page + whole-book TOC, not a chapter.
    pages = sorted(p for p in base.glob(f"*.{suffix}.html") if not p.name.startswith("index."))
    if not pages:
        raise FileNotFoundError(
            f"Debian FAQ ({lang}) not found under {base}: install it with `apt-get install -y {package}` (as root)"
        )

    documents = []
    for page in pages:
        parser = _ChapterParser()
        parser.feed(page.read_text(encoding="utf-8"))
        parser.close()
        for number, question, body in parser.sections:
            answer = _norm("".join(body))
            if question and answer:  # e.g. "3.1" is only a header over 3.1.x
                documents.append({"id": f"faq-{number}", "question": question,
                                  "answer": answer, "chapter": parser.chapter})
    # Book order, not file-name order: "2.10" after "2.9".
    documents.sort(key=lambda d: tuple(int(n) for n in d["id"][4:].split(".")))

    # Identical headings (e.g. "aptitude" in 8.1.3 and 9.1.1) become one query
    # relevant to all of them, so no judgement contradicts another.
    by_query: dict[str, list[str]] = {}
    for doc in documents:
        by_query.setdefault(doc["question"], []).append(doc["id"])
    queries = [{"query": q, "relevant": ids} for q, ids in by_query.items()]
    return FaqDataset(documents=documents, queries=queries)


# Debian documentation that is not the FAQ: training pairs for `mmsearch tune`, so that the FAQ
# stays a fair test. Both are DocBook HTML with numbered section headings, like the FAQ.
DEBIAN_DOCS = {
    "debian-reference": ("debian-reference-en", Path("/usr/share/debian-reference"), "*.en.html"),
    "debian-handbook": ("debian-handbook", Path("/usr/share/doc/debian-handbook/html/en-US"), "*.html"),
}
PAIR_MIN_WORDS = 20  # a shorter body is a header over its subsections or a stub
PAIR_MAX_WORDS = 200  # past what the encoder reads (256 tokens) anyway


def _numbered_sections(page: Path):
    parser = _ChapterParser()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    for number, title, body in parser.sections:
        yield number, title, _norm("".join(body))


def debian_doc_pairs(roots: dict[str, Path] | None = None) -> list[dict]:
    """(section title -> its text) pairs from the Debian Reference and the Debian Administrator's
    Handbook: {"query", "positive", "source"}. A title that occurs twice is kept once, so that no
    pair is another's in-batch negative. `roots` overrides where each book is installed."""
    pairs, seen = [], set()
    for book, (package, default_root, pattern) in DEBIAN_DOCS.items():
        root = Path((roots or {}).get(book, default_root))
        pages = sorted(p for p in root.glob(pattern) if not p.name.startswith("index."))
        if not pages:
            raise FileNotFoundError(f"{book} not found under {root}: install it with `apt-get install -y {package}`")
        for page in pages:
            for number, title, text in _numbered_sections(page):
                words = text.split()
                if len(words) < PAIR_MIN_WORDS or title.lower() in seen:
                    continue
                seen.add(title.lower())
                pairs.append({"query": title, "positive": " ".join(words[:PAIR_MAX_WORDS]),
                              "source": f"{book} {number}"})
    return pairs


def chatterbot_english() -> list[dict]:
    """English Q&A pairs of chatterbot-corpus: first turn = question, rest = answer."""
    import chatterbot_corpus  # imported here: only this loader needs it

    data_dir = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    docs: list[dict] = []
    seen: set[str] = set()
    for path in sorted(data_dir.glob("*.yml")):  # sorted: deterministic ids
        # BaseLoader keeps every scalar a string: "- - yes" stays "yes", not True.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader) or {}
        category = path.stem  # file stem, not categories[0]: slug-safe ("tech_support")
        conversations = data.get("conversations") if isinstance(data, dict) else None
        for n, conv in enumerate(conversations or []):
            # Malformed entries (a bare string, a single turn, nested lists) are skipped.
            if not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(t, str) for t in conv):
                continue
            question, answer = _norm(conv[0]), _norm(" ".join(conv[1:]))
            if not question or not answer:
                continue
            # n is the position in the file, so ids survive changes in skip rules;
            # a suffix still guarantees uniqueness should two files share a stem.
            doc_id, k = f"{category}-{n}", 2
            while doc_id in seen:
                doc_id, k = f"{category}-{n}-{k}", k + 1
            seen.add(doc_id)
            docs.append({"id": doc_id, "question": question, "answer": answer, "category": category})
    return docs


def write_jsonl(docs: Iterable[dict], path: str | Path) -> Path:
    """Write one JSON object per line (UTF-8, non-ASCII kept readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def write_faq(out: Path, lang: str = "en") -> tuple[Path, Path]:
    """The FAQ as files for `mmsearch index` and `mmsearch eval`: OUT/debian-faq.LANG.jsonl and
    OUT/debian-faq.LANG.queries.jsonl. Section ids are the same in every language, so one
    language's queries judge another's collection: a cross-lingual evaluation."""
    dataset = debian_faq(lang=lang)
    return (write_jsonl(dataset.documents, Path(out) / f"debian-faq.{lang}.jsonl"),
            write_jsonl(dataset.queries, Path(out) / f"debian-faq.{lang}.queries.jsonl"))


# Photographs that ship inside the scikit-image wheel (no download), for the image demo.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
    "motorcycle_left.png", "retina.jpg", "rocket.jpg",
)


def sample_photos(dest: Path) -> Path:
    """Copy the scikit-image sample photos into `dest` (a gallery folder) and return it."""
    import shutil

    import skimage

    source = Path(skimage.__file__).parent / "data"
    dest.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_PHOTOS:
        shutil.copy2(source / name, dest / name)
    return dest
