"""Fakes shared by the LangChain integration's tests: chat models that count their
calls (no network), optionally slow, optionally tool-calling."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr


class CountingChatModel(GenericFakeChatModel):
    """Answers with ``messages`` in turn (cycling), counts calls, sleeps ``delay``."""

    delay: float = 0.0
    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def calls(self) -> int:
        return self._calls

    def _count(self) -> None:
        with self._lock:
            self._calls += 1

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        self._count()
        if self.delay:
            time.sleep(self.delay)
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        self._count()
        if self.delay:
            await asyncio.sleep(self.delay)
        return super()._generate(messages, stop, None, **kwargs)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[Any, AIMessage]:
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def make_model(*answers: str | AIMessage, delay: float = 0.0, **kw: Any) -> CountingChatModel:
    msgs = [a if isinstance(a, AIMessage) else AIMessage(a) for a in answers] or [AIMessage("ok")]
    return CountingChatModel(messages=itertools.cycle(msgs), delay=delay, **kw)


@pytest.fixture
def model_factory() -> Callable[..., CountingChatModel]:
    return make_model


@pytest.fixture
def global_cache_guard() -> Iterator[None]:
    """Restore LangChain's global cache after a test that sets it."""
    before = get_llm_cache()
    yield
    set_llm_cache(before)
