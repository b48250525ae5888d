"""The application behind ``rag-cache demo`` (private): Brightwell Home's support
assistant, its help-centre articles (``docs/``), a simulated chat model and a
workload of questions with the outcome each must have.  Imports LangChain and
LlamaIndex, so only the demo command and its tests import it."""
