"""Ranking tools for a search: BM25 over each tool's name, description and parameters. Pure.

BM25 (the `bm25s` library, sparse and fast: a query over 5,000 tools takes well under a
millisecond) rather than embeddings: it needs no model to download or run, explains itself (a tool
ranks by the words it shares with the query), and does well on tool catalogues, whose names and
descriptions are written in the words agents ask with. Words are split at case changes, digits,
underscores and dashes (`get_current_time`, `listIssues`), lower-cased, stemmed (Snowball English,
so "files" finds `read_file`) and common English words are dropped. A tool's name counts three
times, its parameter names twice, its description once: a query that names what a tool is
called should find that tool first.

`ToolIndex.search` takes the set of tools the caller may see, so a caller never finds a tool it
may not call; ties keep catalogue order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from typing import Any

import mcp_types as types

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
    }
)
NAME_WEIGHT, PARAMETER_WEIGHT = 3, 2


class ToolIndex:
    def __init__(self, tools: Sequence[types.Tool]) -> None:
        import bm25s  # heavy (numpy): loaded only where search is configured
        import Stemmer

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # it narrates every index build at DEBUG

        self._stem = Stemmer.Stemmer("english").stemWords
        self.tools = list(tools)
        self._position = {tool.name: index for index, tool in enumerate(self.tools)}
        documents = [self._document(tool) for tool in self.tools]
        self._vocabulary = {word for document in documents for word in document}
        self._bm25: Any = bm25s.BM25()
        if self.tools:
            # bm25s wants a non-empty document: a tool with no words at all matches nothing
            self._bm25.index([document or ["\x00"] for document in documents], show_progress=False)

    def words(self, text: str) -> list[str]:
        found = [word.lower() for word in _WORD.findall(text)]
        return list(self._stem([word for word in found if word not in _STOPWORDS]))

    def _document(self, tool: types.Tool) -> list[str]:
        properties = (tool.input_schema or {}).get("properties") or {}
        parameters: list[str] = []
        for name, schema in properties.items():
            parameters += self.words(str(name)) * PARAMETER_WEIGHT
            if isinstance(schema, dict) and isinstance(schema.get("description"), str):
                parameters += self.words(schema["description"])
        title = tool.title or (tool.annotations.title if tool.annotations else None) or ""
        return self.words(tool.name) * NAME_WEIGHT + self.words(title) + self.words(tool.description or "") + parameters

    def search(self, query: str, limit: int, visible: Collection[str]) -> list[tuple[types.Tool, float]]:
        """The best `limit` tools among `visible` (names) for `query`, best first, with their scores;
        only tools that share a word with the query."""
        import numpy

        terms = [word for word in self.words(query) if word in self._vocabulary]
        if not terms or not self.tools:
            return []
        mask = numpy.zeros(len(self.tools), dtype=numpy.float32)
        for name in visible:
            position = self._position.get(name)
            if position is not None:
                mask[position] = 1.0
        wanted = min(limit, int(mask.sum()))
        if wanted == 0:
            return []
        documents, scores = self._bm25.retrieve([terms], k=wanted, weight_mask=mask, show_progress=False)
        ranked = [(int(document), float(score)) for document, score in zip(documents[0], scores[0], strict=True)]
        ranked.sort(key=lambda pair: (-pair[1], pair[0]))
        return [(self.tools[document], score) for document, score in ranked if score > 0 and mask[document]]
