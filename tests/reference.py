"""Fast-LLM's native tensors of a transformers model, computed here in plain torch from the model's own parameters
(`model.state_dict()`, transformers 5's module names), without weightport: an independent reference for its weight
rules. test_goldens.py checks it against the native checkpoints the real Fast-LLM wrote for the goldens.

The layout, per layer: query = q_proj, key_value = cat(k_proj, v_proj) (k_proj alone where keys are values),
dense = o_proj, layer_1 = cat(gate_proj, up_proj), layer_2 = down_proj transposed; experts stacked along the first
dimension (layer_1 each expert's gate then up rows, layer_2 each expert's down_proj transposed); a Pixtral patch
convolution flattened to (out, 3 * p * p); the Llava adapter's second linear transposed like an MLP's layer_2.
Every tensor of the model is placed, or the reference fails (a wrapper's vision and audio parts aside: weightport
carries them beside the native model)."""

from __future__ import annotations

import torch

# Parts of wrapper models that the native model does not hold (weightport carries them unchanged).
CARRIED = ("model.vision_tower.", "model.multi_modal_projector.", "model.embed_vision.", "model.audio_tower.",
           "model.embed_audio.")


class _Tensors:
    """A model's tensors by name; each is taken once, and `rest` says which were never taken."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = dict(state)

    def take(self, name: str) -> torch.Tensor:
        return self.state.pop(name)

    def take_if(self, name: str) -> torch.Tensor | None:
        return self.state.pop(name, None)

    def has(self, name: str) -> bool:
        return name in self.state

    def rest(self) -> list[str]:
        return sorted(self.state)


def _attention(t: _Tensors, hf: str, native: str, out: dict) -> None:
    out[f"{native}query.weight"] = t.take(f"{hf}q_proj.weight")
    k, v = t.take(f"{hf}k_proj.weight"), t.take_if(f"{hf}v_proj.weight")
    out[f"{native}key_value.weight"] = k if v is None else torch.cat([k, v])
    out[f"{native}dense.weight"] = t.take(f"{hf}o_proj.weight")
    if t.has(f"{hf}q_proj.bias"):
        out[f"{native}query.bias"] = t.take(f"{hf}q_proj.bias")
        out[f"{native}key_value.bias"] = torch.cat([t.take(f"{hf}k_proj.bias"), t.take(f"{hf}v_proj.bias")])
    if t.has(f"{hf}o_proj.bias"):
        out[f"{native}dense.bias"] = t.take(f"{hf}o_proj.bias")
    for hf_norm, native_norm in (("q_norm", "query_norm"), ("k_norm", "key_norm")):
        if t.has(f"{hf}{hf_norm}.weight"):
            out[f"{native}{native_norm}.weight"] = t.take(f"{hf}{hf_norm}.weight")


def _mlp(t: _Tensors, hf: str, native: str, out: dict) -> None:
    gate, up = t.take(f"{hf}gate_proj.weight"), t.take(f"{hf}up_proj.weight")
    out[f"{native}layer_1.weight"] = torch.cat([gate, up])
    out[f"{native}layer_2.weight"] = t.take(f"{hf}down_proj.weight").T
    if t.has(f"{hf}gate_proj.bias"):
        out[f"{native}layer_1.bias"] = torch.cat([t.take(f"{hf}gate_proj.bias"), t.take(f"{hf}up_proj.bias")])
        out[f"{native}layer_2.bias"] = t.take(f"{hf}down_proj.bias")


def _experts(t: _Tensors, hf: str, native: str, out: dict) -> None:
    """Stacked experts: gate_up_proj (experts, 2 * intermediate, hidden), down_proj (experts, hidden, intermediate)."""
    gate_up, down = t.take(f"{hf}gate_up_proj"), t.take(f"{hf}down_proj")
    out[f"{native}layer_1.weight"] = gate_up.reshape(-1, gate_up.shape[-1])
    out[f"{native}layer_2.weight"] = down.transpose(1, 2).reshape(-1, down.shape[1])


def _decoder_layer(t: _Tensors, hf: str, native: str, out: dict) -> None:
    _attention(t, f"{hf}self_attn.", f"{native}mixer.", out)
    out[f"{native}norm_1.weight"] = t.take(f"{hf}input_layernorm.weight")
    if t.has(f"{hf}layer_scalar"):  # Gemma 4: norms around both sublayers, and a scaled output
        out[f"{native}post_mixer_norm.weight"] = t.take(f"{hf}post_attention_layernorm.weight")
        out[f"{native}post_mlp_norm.weight"] = t.take(f"{hf}post_feedforward_layernorm.weight")
        out[f"{native}output_scale"] = t.take(f"{hf}layer_scalar")
        if t.has(f"{hf}experts.gate_up_proj"):  # a dense MLP beside routed experts, each with its own norms
            _mlp(t, f"{hf}mlp.", f"{native}mlp.dense.", out)
            out[f"{native}mlp.dense.pre_norm.weight"] = t.take(f"{hf}pre_feedforward_layernorm.weight")
            out[f"{native}mlp.dense.post_norm.weight"] = t.take(f"{hf}post_feedforward_layernorm_1.weight")
            out[f"{native}mlp.routed.pre_norm.weight"] = t.take(f"{hf}pre_feedforward_layernorm_2.weight")
            out[f"{native}mlp.routed.post_norm.weight"] = t.take(f"{hf}post_feedforward_layernorm_2.weight")
            out[f"{native}mlp.routed.router.weight"] = t.take(f"{hf}router.proj.weight")
            out[f"{native}mlp.routed.router_scale"] = t.take(f"{hf}router.scale")
            out[f"{native}mlp.routed.router_per_expert_scale"] = t.take(f"{hf}router.per_expert_scale")
            _experts(t, f"{hf}experts.", f"{native}mlp.routed.", out)
        else:
            _mlp(t, f"{hf}mlp.", f"{native}mlp.", out)
            out[f"{native}norm_2.weight"] = t.take(f"{hf}pre_feedforward_layernorm.weight")
        return
    out[f"{native}norm_2.weight"] = t.take(f"{hf}post_attention_layernorm.weight")
    if t.has(f"{hf}mlp.experts.gate_up_proj"):  # Mixtral
        out[f"{native}mlp.router.weight"] = t.take(f"{hf}mlp.gate.weight")
        _experts(t, f"{hf}mlp.experts.", f"{native}mlp.", out)
    else:
        _mlp(t, f"{hf}mlp.", f"{native}mlp.", out)


def _text_model(t: _Tensors, hf: str, layers: int, out: dict) -> None:
    embeddings = t.take(f"{hf}embed_tokens.weight")
    out["embeddings.word_embeddings_weight"] = embeddings
    for i in range(layers):
        _decoder_layer(t, f"{hf}layers.{i}.", f"decoder.{i}.", out)
    out["head.final_norm.weight"] = t.take(f"{hf}norm.weight")
    head = t.take("lm_head.weight")
    if head.data_ptr() != embeddings.data_ptr():  # tied: one tensor, held once
        out["head.output_weights"] = head


def _pixtral(t: _Tensors, layers: int, out: dict) -> None:
    hf, native = "model.vision_tower.", "vision_encoder."
    conv = t.take(f"{hf}patch_conv.weight")
    out[f"{native}embeddings.patch_embeddings.weight"] = conv.reshape(conv.shape[0], -1)
    out[f"{native}embeddings.normalization.weight"] = t.take(f"{hf}ln_pre.weight")
    for i in range(layers):
        layer, to = f"{hf}transformer.layers.{i}.", f"{native}encoder.{i}."
        _attention(t, f"{layer}attention.", f"{to}mixer.", out)
        _mlp(t, f"{layer}feed_forward.", f"{to}mlp.", out)
        out[f"{to}norm_1.weight"] = t.take(f"{layer}attention_norm.weight")
        out[f"{to}norm_2.weight"] = t.take(f"{layer}ffn_norm.weight")
    projector, adapter = "model.multi_modal_projector.", f"{native}adapter."
    out[f"{adapter}layer_1.weight"] = t.take(f"{projector}linear_1.weight")
    out[f"{adapter}layer_2.weight"] = t.take(f"{projector}linear_2.weight").T
    for i in (1, 2):
        if t.has(f"{projector}linear_{i}.bias"):
            out[f"{adapter}layer_{i}.bias"] = t.take(f"{projector}linear_{i}.bias")


def native_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The native tensors of `model` (a transformers causal LM, a Llava with a Pixtral tower, or a wrapper whose
    text model is converted: Gemma 4, Mistral 3, Llava with a CLIP tower), by native name (no `/weights`)."""
    t = _Tensors(model.state_dict())
    out: dict[str, torch.Tensor] = {}
    text = model.config.get_text_config()
    wrapped = any(name.startswith("model.language_model.") for name in t.state)
    _text_model(t, "model.language_model." if wrapped else "model.", text.num_hidden_layers, out)
    vision = getattr(model.config, "vision_config", None)
    if vision is not None and vision.model_type == "pixtral" and type(model).__name__.startswith("Llava"):
        _pixtral(t, vision.num_hidden_layers, out)
    left = [name for name in t.rest() if not (wrapped and name.startswith(CARRIED))]
    assert left == [], f"the reference places no native tensor for {left}"
    return out
