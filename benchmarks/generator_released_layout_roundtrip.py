"""Real-size check of the released-layout loader: write a random UniLIP-1B/3B generator in the released
model-directory layout (``model.*`` keys, two safetensors shards with an index, a config.json with
``unilip_factor``), load it back with ``load_released_generator`` (variant found from the weights) and
compare every tensor. Needs ~8 GB (1B) / ~14 GB (3B) of memory, no GPU; not a CI test.

    python benchmarks/generator_released_layout_roundtrip.py unilip-1b /tmp/UniLIP-1B-synth
"""

import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from unilip import checkpoints, get_variant
from unilip.generator import GeneratorConfig, build_generator
from unilip.variants import load_released_generator

name = sys.argv[1]
out = Path(sys.argv[2])
t = time.time()
spec = get_variant(name)
model = build_generator(spec.tokenizer, GeneratorConfig.from_dict(spec.generator), seed=0).to(torch.bfloat16)
print("built", round(time.time() - t, 1), flush=True)
state = {k: v.contiguous() for k, v in checkpoints.to_released_generator_state_dict(model.weights_state_dict()).items()}
keys, shards, weight_map = sorted(state), 2, {}
out.mkdir(parents=True, exist_ok=True)
for i in range(shards):
    part, fname = keys[i::shards], f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    save_file({k: state[k] for k in part}, str(out / fname))
    weight_map.update({k: fname for k in part})
(out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
(out / "config.json").write_text(
    json.dumps(
        {"model_type": "unilip_internvl", "unilip_factor": spec.generator["unilip_factor"], "image_token_id": 151667}
    )
)
print("saved", len(keys), "keys", round(time.time() - t, 1), flush=True)
del state
loaded = load_released_generator(out, None, dtype=torch.bfloat16)
a, b = model.state_dict(), loaded.state_dict()
assert a.keys() == b.keys()
bad = [k for k in a if not torch.equal(a[k], b[k])]
print(
    "loaded; variant width",
    loaded.config.llm["hidden_size"],
    "factor",
    loaded.config.unilip_factor,
    "tied",
    loaded.ties_lm_head,
    "mismatched tensors",
    len(bad),
    round(time.time() - t, 1),
)
