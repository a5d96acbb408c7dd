"""Builders of a run's model and optimiser from its options and data (what the training session,
the evaluation and the API construct before any loop runs)."""
from __future__ import annotations

import torch

from nbt.misc.captioner import build_captioner, read_glove
from nbt.misc.dataset import DataBundle


def build_model(opt, bundle: DataBundle, device) -> torch.nn.Module:
    vectors = read_glove(opt.glove_path, list(bundle.classes.names), opt.class_emb_size, opt.seed) \
        if opt.glove_path else None
    fine = read_glove(opt.glove_path, bundle.classes.fine_words, opt.class_emb_size, opt.seed)[1:] \
        if opt.glove_path and opt.fine_head == "glove" else None              # (F, E), as the original's fg_emb
    torch.manual_seed(opt.seed)
    model = build_captioner(opt, vocab_size=bundle.vocab.size, num_classes=bundle.classes.num_classes,
                            fine_class=bundle.classes.fine_class(), class_vectors=vectors, fine_vectors=fine)
    return model.to(device)


def apply_noc_word_map(model, opt, bundle) -> None:
    """decode_noc: held-out classes borrow the embeddings of their mapped seen classes."""
    if not (opt.decode_noc and opt.noc_word_map and hasattr(model.decoder, "copy_class")):
        return
    names = list(bundle.classes.names)
    for novel, seen in opt.noc_word_map.items():
        if novel not in names or seen not in names:
            raise ValueError(f"noc_word_map: '{novel if novel not in names else seen}' is not a class")
        model.decoder.copy_class(bundle.classes.index(novel), bundle.classes.index(seen))


def build_optimizer(opt, model) -> torch.optim.Optimizer:
    cnn = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    groups = [{"params": rest, "lr": opt.learning_rate, "weight_decay": opt.weight_decay,
               "betas": (opt.optim_alpha, opt.optim_beta), "base_lr": opt.learning_rate}]
    if cnn:
        own_lr = opt.cnn_backend == "tiny"           # the world's small CNN trains from scratch
        lr = opt.learning_rate if own_lr else opt.cnn_learning_rate
        groups.append({"params": cnn, "lr": lr, "weight_decay": opt.cnn_weight_decay,
                       "betas": (opt.cnn_optim_alpha, opt.cnn_optim_beta) if not own_lr
                       else (opt.optim_alpha, opt.optim_beta), "base_lr": lr})
    if opt.optim == "adam":
        return torch.optim.Adam(groups)
    if opt.optim == "adamax":
        return torch.optim.Adamax(groups)
    for g in groups:                                 # sgd
        g.pop("betas")
    return torch.optim.SGD(groups, momentum=0.9)
