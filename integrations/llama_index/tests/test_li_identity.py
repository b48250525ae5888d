"""Identities are stable across processes and differ whenever results could."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from li_support import HashEmbedding, ScriptedLLM, documents
from llama_index.core import VectorStoreIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.llms import MockLLM
from llama_index_rag_cache import index_tag
from llama_index_rag_cache._identity import identify

HERE = Path(__file__).parent
ROOT = HERE.parents[2]

SCRIPT = """
from li_support import HashEmbedding, ScriptedLLM, documents
from llama_index.core import VectorStoreIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.llms import MockLLM
from llama_index_rag_cache._identity import identify
index = VectorStoreIndex.from_documents(documents(), embed_model=HashEmbedding())
index.set_index_id("capitals")
engine = index.as_query_engine(llm=ScriptedLLM(), similarity_top_k=1)
print(identify(engine, "query"))
print(identify(index.as_retriever(), "retrieval"))
"""


@pytest.fixture
def index() -> VectorStoreIndex:  # cheap embeddings: identity never embeds
    idx = VectorStoreIndex.from_documents(documents(), embed_model=HashEmbedding())
    idx.set_index_id("capitals")
    return idx


def test_identity_is_the_same_in_every_process() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), str(ROOT), str(ROOT / "integrations" / "llama_index")])}
    outputs = {subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              check=True, env={**env, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2", "3")}
    assert len(outputs) == 1


def test_settings_change_the_identity(index: VectorStoreIndex) -> None:
    llm = ScriptedLLM()
    base = identify(index.as_query_engine(llm=llm), "query")
    assert base.cache_id.startswith("RetrieverQueryEngine:capitals:")
    assert base.context == f"llama_index:query:{base.cache_id}"
    assert base.index_ids == ("capitals",)
    assert identify(index.as_query_engine(llm=ScriptedLLM()), "query") == base
    assert identify(index.as_query_engine(llm=llm, similarity_top_k=5), "query") != base
    assert identify(index.as_query_engine(llm=llm, response_mode="tree_summarize"),
                    "query") != base
    other_model = identify(index.as_query_engine(llm=ScriptedLLM(model="m2")), "query")
    assert other_model.llm_string != base.llm_string and "m2" in other_model.llm_string


def test_retriever_identity_and_node_restrictions(index: VectorStoreIndex) -> None:
    all_nodes = identify(index.as_retriever(), "retrieval")
    assert "hash-bow-64" in all_nodes.llm_string  # the embedding model partitions
    some = list(index.index_struct.nodes_dict.values())[:1]
    assert identify(VectorIndexRetriever(index, node_ids=some), "retrieval") != all_nodes
    # Pinning "all nodes" is no restriction: a grown index keeps the identity.
    index.insert(documents(it="Rome is the capital of Italy.")[-1])
    assert identify(index.as_retriever(), "retrieval") == all_nodes


def test_given_cache_id_wins_but_models_still_partition(index: VectorStoreIndex) -> None:
    a = identify(index.as_query_engine(llm=ScriptedLLM()), "query", cache_id="faq-v1")
    b = identify(index.as_query_engine(llm=ScriptedLLM(model="m2")), "query",
                 cache_id="faq-v1")
    assert a.cache_id == b.cache_id == "faq-v1" and a.context == "llama_index:query:faq-v1"
    assert a.llm_string != b.llm_string


def test_secrets_never_enter_the_identity(index: VectorStoreIndex) -> None:
    class HostedLLM(ScriptedLLM):
        api_key: str = "sk-very-secret"
        auth_token: str = "tok-secret"

    ident = identify(index.as_query_engine(llm=HostedLLM()), "query")
    assert "sk-very" not in ident.llm_string and "tok-secret" not in ident.llm_string
    assert "scripted-llm-1" in ident.llm_string
    # Token limits are configuration, not secrets.
    assert '"max_tokens":5' in identify(index.as_query_engine(llm=MockLLM(max_tokens=5)),
                                        "query").llm_string


def test_index_tag() -> None:
    assert index_tag("capitals") == "llama_index:index:capitals"
