"""Load HF checkpoints whose classes are remote code and print their logits' largest difference from the first one.

    python remote_code_logits.py AUTO_CLASS REFERENCE FOLDER...

Each folder is loaded with `transformers.<AUTO_CLASS>.from_pretrained(folder, trust_remote_code=True)` in float32 on
CPU and run on the same fixed prompt (with an 8x8 image for a model with a vision encoder). Prints one JSON object:
the class each folder loaded as, and each other folder's largest absolute logit difference from REFERENCE. Runs
under Fast-LLM's Python environment (transformers as Fast-LLM pins it) without Fast-LLM on the path, as a user
loading the checkpoint has it, so the folders must hold every modeling file they need.
"""

import json
import sys

import torch
import transformers


def inputs(config: dict) -> dict:
    generator = torch.Generator().manual_seed(0)
    vocab = config.get("text_config", config)["vocab_size"]
    vision = config.get("vision_encoder")
    if vision is None:
        return {"input_ids": torch.randint(0, vocab, (2, 12), generator=generator)}
    patches = (8 // vision["patch_size"]) ** 2
    image = config["image_token_index"]
    tokens = torch.randint(0, min(vocab, image), (1, 8), generator=generator)
    # no image_sizes: Fast-LLM's Apriel2 crops per image only when asked for the vision hidden states
    return {"input_ids": torch.cat([torch.full((1, patches), image), tokens], 1),
            "pixel_values": torch.randn(1, 3, 8, 8, generator=generator)}


def main(auto_class: str, reference: str, *others: str) -> None:
    cls = getattr(transformers, auto_class)
    classes, logits = {}, {}
    for folder in (reference, *others):
        model = cls.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
        with open(f"{folder}/config.json") as f:
            config = json.load(f)
        with torch.no_grad():
            logits[folder] = model(**inputs(config)).logits
        classes[folder] = type(model).__name__
    diffs = {f: float((logits[f] - logits[reference]).abs().max()) for f in others}
    print(json.dumps({"classes": classes, "max_abs_diff": diffs, "shape": list(logits[reference].shape)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
