"""The official tokenizer's encoder and bridge, written out directly from the released parameterisation.

Used only by tests as an independent reference: fused-qkv InternViT with layer scales and bicubic
position-embedding interpolation, InternVL's pixel shuffle, ``mlp1`` as an indexed Sequential, the bridge.
It reads the *official* key layout of ``1b_unilip.pth`` and shares no code with ``unilip``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def official_key_shapes(
    width: int, layers: int, mlp: int, patch: int, native: int, llm: int, latent: int = 32, bridge_blocks: int = 3
) -> dict[str, tuple[int, ...]]:
    """Every non-decoder key of an official tokenizer checkpoint, with its shape (spec section 1.5)."""
    n_pos = (native // patch) ** 2 + 1
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.embeddings.class_embedding": (1, 1, width),
        "encoder.embeddings.patch_embedding.weight": (width, 3, patch, patch),
        "encoder.embeddings.patch_embedding.bias": (width,),
        "encoder.embeddings.position_embedding": (1, n_pos, width),
    }
    for i in range(layers):
        p = f"encoder.encoder.layers.{i}."
        shapes.update(
            {
                p + "attn.qkv.weight": (3 * width, width),
                p + "attn.qkv.bias": (3 * width,),
                p + "attn.proj.weight": (width, width),
                p + "attn.proj.bias": (width,),
                p + "mlp.fc1.weight": (mlp, width),
                p + "mlp.fc1.bias": (mlp,),
                p + "mlp.fc2.weight": (width, mlp),
                p + "mlp.fc2.bias": (width,),
                p + "norm1.weight": (width,),
                p + "norm1.bias": (width,),
                p + "norm2.weight": (width,),
                p + "norm2.bias": (width,),
                p + "ls1": (width,),
                p + "ls2": (width,),
            }
        )
    shapes.update(
        {
            "mlp1.0.weight": (4 * width,),
            "mlp1.0.bias": (4 * width,),
            "mlp1.1.weight": (llm, 4 * width),
            "mlp1.1.bias": (llm,),
            "mlp1.3.weight": (llm, llm),
            "mlp1.3.bias": (llm,),
        }
    )
    for i in range(bridge_blocks):
        p = f"down_blocks.{i}.mlp."
        shapes.update(
            {
                p + "0.weight": (llm,),
                p + "0.bias": (llm,),
                p + "1.weight": (llm, llm),
                p + "1.bias": (llm,),
                p + "3.weight": (llm, llm),
                p + "3.bias": (llm,),
            }
        )
    shapes.update(
        {
            "down_mlp.0.weight": (llm,),
            "down_mlp.0.bias": (llm,),
            "down_mlp.1.weight": (latent, llm),
            "down_mlp.1.bias": (latent,),
            "down_mlp.3.weight": (latent, latent),
            "down_mlp.3.bias": (latent,),
        }
    )
    return shapes


def internvl_pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    """InternVL's ``pixel_shuffle`` as written in its chat model (square grids)."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3).contiguous()


def official_features(
    sd: dict[str, torch.Tensor], images: torch.Tensor, heads: int, patch: int, layers: int, eps: float = 1e-6
) -> torch.Tensor:
    """Post-mlp1 tokens of [0, 1] square images, computed from an official state dict."""
    x = (images - MEAN) / STD
    emb = F.conv2d(
        x, sd["encoder.embeddings.patch_embedding.weight"], sd["encoder.embeddings.patch_embedding.bias"], stride=patch
    )
    batch, width, gh, gw = emb.shape
    tokens = emb.flatten(2).transpose(1, 2)
    cls = sd["encoder.embeddings.class_embedding"].expand(batch, 1, -1)
    pos = sd["encoder.embeddings.position_embedding"]
    side = int((pos.shape[1] - 1) ** 0.5)
    grid = pos[:, 1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(gh, gw), mode="bicubic", align_corners=False)
    grid = grid.reshape(1, width, gh * gw).permute(0, 2, 1)
    h = torch.cat([cls, tokens], 1) + torch.cat([pos[:, :1], grid], 1)
    head_dim = width // heads
    for i in range(layers):
        p = f"encoder.encoder.layers.{i}."
        y = F.layer_norm(h, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        n_tok = y.shape[1]
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, n_tok, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(-1) @ v
        attn = attn.transpose(1, 2).reshape(batch, n_tok, width)
        h = h + F.linear(attn, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]) * sd[p + "ls1"]
        y = F.layer_norm(h, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        y = F.linear(
            F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
            sd[p + "mlp.fc2.weight"],
            sd[p + "mlp.fc2.bias"],
        )
        h = h + y * sd[p + "ls2"]
    h = h[:, 1:].reshape(batch, gh, gw, width)
    h = internvl_pixel_shuffle(h)
    h = h.reshape(batch, -1, h.shape[-1])
    h = F.layer_norm(h, (h.shape[-1],), sd["mlp1.0.weight"], sd["mlp1.0.bias"], 1e-5)
    h = F.linear(F.gelu(F.linear(h, sd["mlp1.1.weight"], sd["mlp1.1.bias"])), sd["mlp1.3.weight"], sd["mlp1.3.bias"])
    return h


def official_latent(sd: dict[str, torch.Tensor], features: torch.Tensor, bridge_blocks: int = 3) -> torch.Tensor:
    """The bridge of the official model: residual MLPs, down_mlp, row-major reshape to a square latent."""
    x = features
    width = x.shape[-1]
    for i in range(bridge_blocks):
        p = f"down_blocks.{i}.mlp."
        y = F.layer_norm(x, (width,), sd[p + "0.weight"], sd[p + "0.bias"], 1e-6)
        x = x + F.linear(
            F.gelu(F.linear(y, sd[p + "1.weight"], sd[p + "1.bias"])), sd[p + "3.weight"], sd[p + "3.bias"]
        )
    y = F.layer_norm(x, (width,), sd["down_mlp.0.weight"], sd["down_mlp.0.bias"], 1e-5)
    y = F.linear(
        F.gelu(F.linear(y, sd["down_mlp.1.weight"], sd["down_mlp.1.bias"])),
        sd["down_mlp.3.weight"],
        sd["down_mlp.3.bias"],
    )
    side = int(y.shape[1] ** 0.5)
    return y.transpose(1, 2).reshape(y.shape[0], y.shape[2], side, side)
