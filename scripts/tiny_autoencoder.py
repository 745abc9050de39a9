"""Save a tiny random-weight diffusers autoencoder (``AutoencoderKL`` or ``AutoencoderDC``), as a user would have one.

For trying ``--model diffusers-ae:DIR`` on the CPU (README, "Evaluating your own model") and for the tests:
the real classes at toy width, random weights, so the numbers are meaningless and the plumbing is real.

    python scripts/tiny_autoencoder.py out/tiny-sd-vae            # AutoencoderKL, SD-VAE's layout, 56 px native
    python scripts/tiny_autoencoder.py out/tiny-dc-ae --kind dc   # AutoencoderDC (DC-AE's blocks)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build_tiny_autoencoder(kind: str = "kl", seed: int = 0, sample_size: int = 56):
    """A tiny ``AutoencoderKL`` (SD-VAE's block types, 2x downsampling, SD's scaling factor) or ``AutoencoderDC``."""
    import torch
    from diffusers import AutoencoderDC, AutoencoderKL

    torch.manual_seed(seed)
    if kind == "kl":
        return AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=8,
            layers_per_block=1,
            sample_size=sample_size,
            scaling_factor=0.18215,
        )
    if kind == "dc":
        return AutoencoderDC(
            latent_channels=4,
            attention_head_dim=4,
            encoder_block_types=("ResBlock", "EfficientViTBlock"),
            decoder_block_types=("ResBlock", "EfficientViTBlock"),
            encoder_block_out_channels=(8, 16),
            decoder_block_out_channels=(8, 16),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            encoder_qkv_multiscales=((), (5,)),
            decoder_qkv_multiscales=((), (5,)),
            upsample_block_type="interpolate",
            downsample_block_type="Conv",
            decoder_norm_types="rms_norm",
            decoder_act_fns="silu",
            scaling_factor=0.41407,
        )
    raise ValueError(f"unknown kind {kind!r}; choose kl or dc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory to save the autoencoder in")
    parser.add_argument("--kind", choices=["kl", "dc"], default="kl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build_tiny_autoencoder(args.kind, args.seed).save_pretrained(Path(args.out))
    print(args.out)


if __name__ == "__main__":
    main()
