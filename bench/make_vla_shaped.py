#!/usr/bin/python3
"""Writes a random-weight model shaped like a real VLA, for performance work only.

The LM is SmolLM-360M-like (d=960, 15 heads / 5 KV heads, FFN 2560) cut to 16 layers; it sees
2 camera images x 256 patches = 512 visual tokens (224 px, patch 14), as issue 6 asks. Vision
towers and action head are kept modest: they are not what this model is for. Weights follow
evla_ref.make_fixtures' variance-preserving init, so activations stay O(1).

  PYTHONPATH=python /usr/bin/python3 bench/make_vla_shaped.py --out /tmp/evla-vla-shaped
  build/bin/evla bench -m /tmp/evla-vla-shaped -t 1 -r 5 --roofline

About 720 MB of fp32 weights; nothing is downloaded.
"""
import argparse
import os

import numpy as np
import torch

from evla_ref import make_fixtures as mf  # noqa: E402
from evla_ref import tokenizer  # noqa: E402
from evla_ref.model import Policy, save_model  # noqa: E402


def config(space_id, vocab, layers):
    return mf.base_config(
        "evla-vla-shaped",
        [mf.encoder("dino", "vision_backbone.dino_featurizer", 224, 14, 192, 4, 3, True),
         mf.encoder("siglip", "vision_backbone.siglip_featurizer", 224, 14, 192, 4, 3, False)],
        [1536, 960],
        {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": layers,
         "num_attention_heads": 15, "num_key_value_heads": 5, "vocab_size": vocab},
        {"hidden_size": 384, "num_layers": 4, "num_heads": 6, "action_dim": 7, "chunk_size": 16,
         "cond_dim": 960},
        mf.BRIDGE_NORM, space_id, num_images=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    import sentencepiece as spm
    tok = tokenizer.train()
    sp = spm.SentencePieceProcessor(model_proto=tok)
    cfg = config(sp.piece_to_id("\u2581"), sp.get_piece_size(), args.layers)
    model = Policy(cfg).float().eval()
    mf.init_weights(model, np.random.RandomState(args.seed))
    save_model(model, cfg, args.out)
    with open(os.path.join(args.out, cfg["prompt"]["tokenizer"]), "wb") as f:
        f.write(tok)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {n / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
