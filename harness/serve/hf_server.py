"""`python -m evalq.serve.hf_server SPEC.json`: one transformers variant behind
`transformers serve`'s own OpenAI-compatible app with continuous batching.

The variant is loaded the way the cell's worker loads it (its backend, its cache
of quantized weights), so what is served is what was measured; the app is the
one `transformers serve --continuous-batching` builds, handed the loaded model in
place of loading one by name (it only knows bitsandbytes of evalq's methods).
EOS is disabled on the served copy: every answer is `output_tokens` long, as
`ignore_eos` makes it on llama.cpp's server and vLLM, so rates compare.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SERVED_NAME = "evalq-served"


def _app(model, tokenizer, spec: dict):
    from transformers import ContinuousBatchingConfig
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager, TimedModel
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState

    manager = ModelManager(device=str(model.device), continuous_batching=True, model_timeout=-1)
    manager.loaded_models[manager.process_model_name(SERVED_NAME)] = TimedModel(model, -1, processor=tokenizer)
    # The paged cache sized for the sweep (on a CPU the automatic size takes most of the RAM):
    # `slots` requests of prompt + output tokens at once, a page each of slack.
    page = 64
    per_request = -(-(spec["prompt_tokens"] + spec["output_tokens"]) // page) + 1
    cb = ContinuousBatchingConfig(page_size=page, num_blocks=spec["slots"] * per_request,
                                  max_batch_tokens=max(spec["prompt_tokens"], 256),
                                  max_requests_per_batch=spec["slots"])
    state = GenerationState(continuous_batching=True, compile=False, cb_config=cb)
    app = build_server(
        manager, ChatCompletionHandler(model_manager=manager, generation_state=state),
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state),
        generation_state=state)

    @app.get("/evalq/memory")
    def memory() -> dict:  # the GPU's peak as torch counts it; the CPU's RSS is sampled from outside
        import torch

        if model.device.type == "cuda":
            return {"gpu_peak_allocated_bytes": torch.cuda.max_memory_allocated(model.device),
                    "gpu_peak_reserved_bytes": torch.cuda.max_memory_reserved(model.device)}
        return {}

    return app


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    import torch
    import uvicorn

    from evalq.backends.base import get_backend, load_variant
    from evalq.cell import Cell
    from evalq.model_sources import materialize
    from evalq.resources import Resources

    cell = Cell.model_validate(spec["cell"])
    resources = Resources(**spec["resources"])
    torch.set_num_threads(resources.threads_for("speed"))
    torch.manual_seed(cell.seed)
    backend = get_backend(cell.variant)
    files = materialize(cell.model)
    loaded = load_variant(backend, files, backend.Config.model_validate(cell.options), resources, spec["workdir"])
    model = loaded.model
    model.generation_config.eos_token_id = None  # continuous batching then disables EOS (-1)
    print(f"evalq: serving {cell.name} on port {spec['port']}", flush=True)
    uvicorn.run(_app(model, loaded.tokenizer, spec), host="127.0.0.1", port=spec["port"], log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
