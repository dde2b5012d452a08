"""What a training step really takes on this machine, to check the planner's
training formulas: run in a fresh spawned process, load the model in float32,
take `steps` AdamW steps (full fine-tuning, or LoRA adapters through peft) and
report the peak RSS above what the process held before loading the model."""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any


def _step_in_child(queue: Any, model_path: str, method: str, text_path: str, sequence: int, batch: int, steps: int,
                   lora_rank: int) -> None:
    try:
        queue.put(_measure(model_path, method, text_path, sequence, batch, steps, lora_rank))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put({"error": f"{exc.__class__.__name__}: {exc}"})


def _measure(model_path: str, method: str, text_path: str, sequence: int, batch: int, steps: int, lora_rank: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalq.measure.memory import current_rss_bytes, peak_rss_bytes, reset_peak_rss

    torch.manual_seed(0)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = tokenizer(Path(text_path).read_text(encoding="utf-8")[: sequence * batch * 16], add_special_tokens=False).input_ids
    x = torch.tensor(ids[: sequence * batch]).view(batch, sequence)
    if method == "lora":
        import peft  # noqa: F401 - imported before the baseline: its imports (torchao...) are not the step's memory
    before = current_rss_bytes()
    reset_peak_rss()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=targets, lora_dropout=0.0))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as the planner counts them
        losses.append(float(loss))
    return {"peak_bytes": peak_rss_bytes() - before, "trainable_params": sum(p.numel() for p in trainable),
            "losses": losses, "attention": model.config._attn_implementation if method == "full" else
            model.base_model.model.config._attn_implementation}


def measure_training_step(model_path: str, method: str, text_path: str, sequence: int = 256, batch: int = 1, steps: int = 2,
                          lora_rank: int = 16) -> dict[str, Any]:
    """Peak memory of `steps` training steps, measured in a spawned process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_step_in_child, args=(queue, model_path, method, text_path, sequence, batch, steps, lora_rank))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result
