"""Nodes and responses survive the cache's JSON round trip unchanged."""

from __future__ import annotations

import json

import pytest
from llama_index.core import Document
from llama_index.core.base.response.schema import Response
from llama_index.core.schema import (
    ImageNode,
    IndexNode,
    NodeRelationship,
    NodeWithScore,
    RelatedNodeInfo,
    TextNode,
)
from llama_index_rag_cache._serde import (
    PayloadError,
    decode_nodes,
    decode_response,
    encode_nodes,
    encode_response,
    source_tags,
)


def _through_cache(value: object) -> object:
    # What every tier hands back: the JSON round trip of the stored value.
    return json.loads(json.dumps(value))


def _rich_nodes() -> list[NodeWithScore]:
    text = TextNode(
        id_="n1", text="Paris is the capital of France.",
        metadata={"country": "fr", "page": 3, "tags": ["a", "b"], "score": 0.5, "none": None},
        excluded_llm_metadata_keys=["page"], excluded_embed_metadata_keys=["tags"],
        relationships={
            NodeRelationship.SOURCE: RelatedNodeInfo(node_id="fr", metadata={"k": 1}),
            NodeRelationship.NEXT: RelatedNodeInfo(node_id="n2"),
        },
        embedding=[0.1, -0.25, 1e-7], start_char_idx=0, end_char_idx=31,
        text_template="{metadata_str}::{content}",
    )
    doc = Document(id_="d1", text="A whole document.", metadata={"lang": "en"})
    index = IndexNode(id_="i1", text="see the other index", index_id="other")
    image = ImageNode(id_="m1", text="a caption", image_url="https://example.invalid/x.png")
    return [NodeWithScore(node=text, score=0.8731234567891234),
            NodeWithScore(node=doc, score=None), NodeWithScore(node=index, score=0.0),
            NodeWithScore(node=image, score=-1.5)]


def test_nodes_round_trip_equal() -> None:
    nodes = _rich_nodes()
    back = decode_nodes(_through_cache(encode_nodes(nodes)))
    assert back == nodes
    assert [type(n.node) for n in back] == [TextNode, Document, IndexNode, ImageNode]
    assert back[0].node.ref_doc_id == "fr"
    assert back[0].node.relationships[NodeRelationship.NEXT].node_id == "n2"
    assert back[0].score == 0.8731234567891234


def test_decoded_nodes_do_not_share_the_cached_object() -> None:
    value = _through_cache(encode_nodes(_rich_nodes()))
    first = decode_nodes(value)
    first[0].node.metadata["country"] = "changed"
    assert decode_nodes(value)[0].node.metadata["country"] == "fr"


def test_response_round_trip_equal() -> None:
    nodes = _rich_nodes()[:2]
    response = Response("Paris.", nodes, {"n1": {"country": "fr"}})
    back, chunks = decode_response(_through_cache(
        encode_response(response.response, nodes, response.metadata)))
    assert chunks is None
    assert back == response


def test_streamed_response_keeps_its_chunks() -> None:
    back, chunks = decode_response(_through_cache(
        encode_response(None, [], None, ["Par", "is", "."])))
    assert chunks == ["Par", "is", "."]
    assert back.response == "Paris."


@pytest.mark.parametrize("value", [None, "text", {"format": "other"}, {"nodes": []},
                                   {"format": "llama_index/nodes@1", "nodes": [{"x": 1}]}])
def test_foreign_values_are_refused(value: object) -> None:
    with pytest.raises(PayloadError):
        decode_nodes(value)
    with pytest.raises(PayloadError):
        decode_response(value)


def test_source_tags_are_doc_and_node_ids() -> None:
    tags = source_tags(_rich_nodes())
    assert tags == ["fr", "n1", "d1", "i1", "m1"]
