"""MTP-Llama (`mtp_llama`, `MTPLlamaForCausalLM`, remote code): Llama with multi-token prediction.

`prediction_heads` = P: the last decoder layer and P-1 extra blocks (`model.mtp_heads.<j>`, natively
`multi_token_prediction.blocks.<j>`) each feed a head with its own final norm (`model.mtp_norms.<k>`, k = 0 for
the main head; there is no `model.norm`). All heads share one output projection, stored once.
"""

from weightport.families import llama
from weightport.spec import Constant, From, Ignore, Rename, Repeat, Tensor

AUTO_MAP = {
    "AutoConfig": "configuration_mtp_llama.MTPLlamaConfig",
    "AutoModel": "modeling_mtp_llama.MTPLlamaModel",
    "AutoModelForCausalLM": "modeling_mtp_llama.MTPLlamaForCausalLM",
}

HF_CLASS = llama.HF_CLASS.extend(
    "MTPLlamaConfig", "Fast-LLM 0.4.0 (7d61a1b) fast_llm_external_models/mtp_llama/configuration_mtp_llama.py", {
    "prediction_heads": 1,
    "rope_theta": From(lambda hf: hf["rope_parameters"]["rope_theta"], "the class also keeps rope_parameters' theta"),
})

SPEC = llama.SPEC.extend(name="mtp_llama", architecture="MTPLlamaForCausalLM", hf_class=HF_CLASS, config=(
    Rename("head.prediction_heads", "prediction_heads"),
    Constant(AUTO_MAP, hf="auto_map", reason="the transformers classes are remote code"),
    Ignore(hf="rope_theta", reason="a stale duplicate of rope_parameters.rope_theta written by the config class"),
), weights=(
    Tensor("head.final_norm.weight", "model.mtp_norms.0.weight"),
    Repeat("multi_token_prediction.blocks.{i-1}", "model.mtp_heads.{i-1}", llama.BLOCK_WEIGHTS,
           count="head.prediction_heads", start=1, config="decoder.block"),
    Repeat("multi_token_prediction.heads.{i-1}", "model.mtp_norms.{i}", (Tensor("final_norm.weight", "weight"),),
           count="head.prediction_heads", start=1, config="head"),
))
