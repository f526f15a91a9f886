"""Adapters of the `ModelProvider` port (`tether.core.ports`): how an AI agent's conversation
reaches a language model.

- `offline.OfflineModel`: deterministic and not a language model, so every flow works with no
  provider configured.
- `openai_compat.OpenAICompatible`: any OpenAI-compatible chat completions endpoint (hosted
  APIs, Ollama, vLLM, llama.cpp's server).
- `vertex.VertexGemini`: Gemini on Vertex AI with the environment's service account.

Nothing is imported here: the client libraries are heavy and are imported by an adapter the
first time it streams (DESIGN.md, rule 2).
"""
