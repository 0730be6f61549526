"""The PyTorch zoo: real architectures nobody here wrote, captured with their default selection.

For every model (torchvision, timm, HuggingFace transformers built from small
configs; random weights, nothing downloaded) the test checks:

* the default selection (the family rule of ``nnsig_torch._defaults``): its
  names and count, and that the captures are exactly those modules;
* the pooled shapes (one value per channel / embedding dimension);
* the captured values against independent plain forward hooks on the same
  modules, pooled by hand with the layout the model is known to use
  (``NCHW`` convnets, ``NHWC`` Swin blocks, ``NLC`` token sequences, masked
  means for padded text), on two batches (the second without the first
  batch's protective copies).

The slow ones (big models to build, more than a few seconds here) are marked
``slow``; CI runs them too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnsig_torch import TorchAdapter  # noqa: E402

ATOL = 2e-4


@dataclass
class Zoo:
    """One model of the zoo and what its default capture must be."""

    build: Callable[[], Any]
    inputs: Callable[[int], Any]
    names: list[str] | tuple[int, str, str]  # exact names, or (count, first, last)
    layout: str  # the layout the reference pools with
    widths: list[int] | None = None  # pooled shapes (one int per capture), when checked
    slow: bool = False
    mask_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def image(size: int) -> Callable[[int], Any]:
    return lambda n: torch.randn(n, 3, size, size)


def text(vocab: int = 100, length: int = 10, pad: bool = True, decoder: bool = False,
         eos: int | None = None):
    def make(n: int) -> dict[str, Any]:
        ids = torch.randint(3, vocab, (n, length))
        if eos is not None:
            ids[:, -1] = eos
        mask = torch.ones(n, length, dtype=torch.long)
        if pad:
            mask[0, length - 3 :] = 0  # right padding on the first sample
        batch = {"input_ids": ids, "attention_mask": mask}
        if decoder:
            batch["decoder_input_ids"] = ids[:, :4]
        return batch

    return make


def tvm(name: str, **kw: Any) -> Callable[[], Any]:
    return lambda: getattr(_tv().models, name)(weights=None, **kw)


def _tv() -> Any:
    """torchvision, imported by the first test that builds one of its models (2 s)."""
    return pytest.importorskip("torchvision")


def timm_model(name: str, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, num_classes=10, **kw)

    return build


def timm_class(module: str, cls: str, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        pytest.importorskip("timm")
        import importlib

        return getattr(importlib.import_module(module), cls)(num_classes=10, **kw)

    return build


def hf(model: str, config: str, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        tf = pytest.importorskip("transformers")
        return getattr(tf, model)(getattr(tf, config)(**kw))

    return build


BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=64)
ENC = [f"encoder.layers.encoder_layer_{i}" for i in range(3)]

ZOO: dict[str, Zoo] = {
    # ---------------------------------------------------------------- torchvision
    "tv.resnet18": Zoo(tvm("resnet18", num_classes=10), image(32),
                       ["layer1", "layer2", "layer3", "layer4"], "NCHW", [64, 128, 256, 512]),
    "tv.resnet50": Zoo(tvm("resnet50", num_classes=10), image(32),
                       ["layer1", "layer2", "layer3", "layer4"], "NCHW", [256, 512, 1024, 2048],
                       slow=True),
    "tv.resnext50": Zoo(tvm("resnext50_32x4d", num_classes=10), image(32),
                        ["layer1", "layer2", "layer3", "layer4"], "NCHW", slow=True),
    "tv.vgg11": Zoo(tvm("vgg11", num_classes=10), image(32), (10, "features.1", "classifier.4"),
                    "NCHW", slow=True),
    "tv.alexnet": Zoo(tvm("alexnet", num_classes=10), image(64),
                      (7, "features.1", "classifier.5"), "NCHW", slow=True),
    "tv.mobilenet_v2": Zoo(tvm("mobilenet_v2", num_classes=10), image(32),
                           (12, "features.0", "features.18"), "NCHW", slow=True),
    "tv.mobilenet_v3_small": Zoo(tvm("mobilenet_v3_small", num_classes=10), image(32),
                                 (12, "features.0", "features.12"), "NCHW", slow=True),
    "tv.efficientnet_b0": Zoo(tvm("efficientnet_b0", num_classes=10), image(32),
                              [f"features.{i}" for i in range(9)], "NCHW",
                              [32, 16, 24, 40, 80, 112, 192, 320, 1280], slow=True),
    "tv.densenet121": Zoo(tvm("densenet121", num_classes=10), image(32),
                          ["features.denseblock1", "features.transition1", "features.denseblock2",
                           "features.transition2", "features.denseblock3", "features.transition3",
                           "features.denseblock4"], "NCHW", [256, 128, 512, 256, 1024, 512, 1024],
                          slow=True),
    "tv.squeezenet1_1": Zoo(tvm("squeezenet1_1", num_classes=10), image(32),
                            (8, "features.3", "features.12"), "NCHW"),
    "tv.shufflenet_v2": Zoo(tvm("shufflenet_v2_x0_5", num_classes=10), image(32),
                            ["conv1", "stage2", "stage3", "stage4", "conv5"], "NCHW",
                            [24, 48, 96, 192, 1024], slow=True),
    "tv.mnasnet0_5": Zoo(tvm("mnasnet0_5", num_classes=10), image(32),
                         [f"layers.{i}" for i in range(8, 14)], "NCHW", slow=True),
    "tv.regnet_y_400mf": Zoo(tvm("regnet_y_400mf", num_classes=10), image(32),
                             [f"trunk_output.block{i}" for i in range(1, 5)], "NCHW",
                             [48, 104, 208, 440], slow=True),
    "tv.googlenet": Zoo(tvm("googlenet", num_classes=10, aux_logits=False, init_weights=False),
                        image(32), (12, "conv1", "inception5b"), "NCHW"),
    "tv.inception_v3": Zoo(tvm("inception_v3", num_classes=10, aux_logits=False,
                               init_weights=False), image(75),
                           (12, "Conv2d_1a_3x3", "Mixed_7c"), "NCHW", slow=True),
    "tv.convnext_tiny": Zoo(tvm("convnext_tiny", num_classes=10), image(32),
                            (7, "features.1", "features.7"), "NCHW", slow=True),
    "tv.swin_t": Zoo(tvm("swin_t", num_classes=10), image(32),
                     ["features.1.0", "features.1.1", "features.3.0", "features.3.1"]
                     + [f"features.5.{i}" for i in range(6)] + ["features.7.0", "features.7.1"],
                     "NHWC", [96, 96, 192, 192] + [384] * 6 + [768, 768], slow=True),
    "tv.vit": Zoo(lambda: _tv().models.VisionTransformer(image_size=32, patch_size=8, num_layers=3,
                                                      num_heads=2, hidden_dim=32, mlp_dim=64,
                                                      num_classes=10),
                  image(32), ENC, "NLC", [32, 32, 32]),
    # ---------------------------------------------------------------- timm
    "timm.vit_tiny": Zoo(timm_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3),
                         image(32), ["blocks.0", "blocks.1", "blocks.2"], "NLC", [192] * 3),
    "timm.deit_distilled": Zoo(timm_model("deit_tiny_distilled_patch16_224", img_size=32,
                                          patch_size=8, depth=2),
                               image(32), ["blocks.0", "blocks.1"], "NLC", [192, 192]),
    "timm.cait": Zoo(timm_model("cait_xxs24_224", img_size=32, patch_size=8, depth=4),
                     image(32), ["blocks.0", "blocks.1", "blocks.2", "blocks.3"], "NLC"),
    "timm.beit": Zoo(timm_model("beit_base_patch16_224", img_size=32, patch_size=8, depth=2,
                                embed_dim=64, num_heads=2),
                     image(32), ["blocks.0", "blocks.1"], "NLC", [64, 64]),
    "timm.convnext_atto": Zoo(timm_model("convnext_atto"), image(32),
                              ["stages.0", "stages.1", "stages.2", "stages.3"], "NCHW",
                              [40, 80, 160, 320]),
    "timm.resnet18": Zoo(timm_model("resnet18"), image(32),
                         ["layer1", "layer2", "layer3", "layer4"], "NCHW", [64, 128, 256, 512]),
    "timm.resnet10t": Zoo(timm_model("resnet10t"), image(32),
                          ["layer1", "layer2", "layer3", "layer4"], "NCHW"),
    "timm.efficientnet_b0": Zoo(timm_model("efficientnet_b0"), image(32),
                                [f"blocks.{i}" for i in range(1, 7)], "NCHW",
                                [24, 40, 80, 112, 192, 320], slow=True),
    "timm.mobilenetv3": Zoo(timm_model("mobilenetv3_small_050"), image(32),
                            ["blocks.1", "blocks.2", "blocks.3", "blocks.4"], "NCHW", slow=True),
    "timm.regnetx_002": Zoo(timm_model("regnetx_002"), image(32), ["s1", "s2", "s3", "s4"],
                            "NCHW", [24, 56, 152, 368], slow=True),
    "timm.swin": Zoo(timm_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4,
                                depths=(2, 2, 2, 2)),
                     image(64), [f"layers.{s}.blocks.{b}" for s in range(4) for b in range(2)],
                     "NHWC", [96, 96, 192, 192, 384, 384, 768, 768], slow=True),
    "timm.mixer": Zoo(timm_class("timm.models.mlp_mixer", "MlpMixer", img_size=32, patch_size=8,
                                 num_blocks=3, embed_dim=64),
                      image(32), ["blocks.0", "blocks.1", "blocks.2"], "NLC", [64] * 3),
    "timm.poolformer": Zoo(timm_model("poolformer_s12"), image(32),
                           ["stages.0", "stages.1", "stages.2", "stages.3"], "NCHW",
                           [64, 128, 320, 512], slow=True),
    "timm.levit": Zoo(timm_model("levit_128s", img_size=64), image(64),
                      (9, "stages.0.blocks.0", "stages.2.blocks.3"), "NLC", slow=True),
    "timm.coat_lite": Zoo(timm_model("coat_lite_tiny", img_size=64), image(64),
                          (8, "serial_blocks1.0", "serial_blocks4.1"), "NLC", slow=True),
    "timm.pvt_v2": Zoo(timm_model("pvt_v2_b0"), image(32),
                       (8, "stages.0.blocks.0", "stages.3.blocks.1"), "NLC",
                       [32, 32, 64, 64, 160, 160, 256, 256], slow=True),
    "timm.ghostnet": Zoo(timm_model("ghostnet_050"), image(32), (9, "blocks.0", "blocks.8"),
                         "NCHW", slow=True),
    "timm.edgenext": Zoo(timm_model("edgenext_xx_small"), image(32),
                         ["stages.0", "stages.1", "stages.2", "stages.3"], "NCHW",
                         [24, 48, 88, 168]),
    "timm.dla34": Zoo(timm_model("dla34"), image(32), (7, "base_layer", "level5"), "NCHW",
                      slow=True),
    "timm.lcnet": Zoo(timm_model("lcnet_050"), image(32), (6, "blocks.0", "blocks.5"), "NCHW"),
    # ---------------------------------------------------------------- HuggingFace transformers
    "hf.bert": Zoo(hf("BertForSequenceClassification", "BertConfig", **BERT), text(),
                   ["bert.encoder.layer.0", "bert.encoder.layer.1"], "NLC", [32, 32],
                   mask_key="attention_mask"),
    "hf.roberta": Zoo(hf("RobertaForSequenceClassification", "RobertaConfig", **BERT), text(),
                      ["roberta.encoder.layer.0", "roberta.encoder.layer.1"], "NLC", [32, 32],
                      mask_key="attention_mask"),
    "hf.distilbert": Zoo(hf("DistilBertForSequenceClassification", "DistilBertConfig",
                            vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=37),
                         text(), ["distilbert.transformer.layer.0",
                                  "distilbert.transformer.layer.1"], "NLC", [32, 32],
                         mask_key="attention_mask"),
    "hf.electra": Zoo(hf("ElectraForSequenceClassification", "ElectraConfig", embedding_size=16,
                         **BERT), text(), ["electra.encoder.layer.0", "electra.encoder.layer.1"],
                      "NLC", [32, 32], mask_key="attention_mask"),
    "hf.gpt2": Zoo(hf("GPT2LMHeadModel", "GPT2Config", vocab_size=100, n_embd=32, n_layer=3,
                      n_head=2, n_positions=64, bos_token_id=1, eos_token_id=2),
                   text(), ["transformer.h.0", "transformer.h.1", "transformer.h.2"], "NLC",
                   [32] * 3, mask_key="attention_mask"),
    "hf.llama": Zoo(hf("LlamaForCausalLM", "LlamaConfig", vocab_size=100, hidden_size=32,
                       intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1),
                    text(), ["model.layers.0", "model.layers.1"], "NLC", [32, 32],
                    mask_key="attention_mask"),
    "hf.opt": Zoo(hf("OPTForCausalLM", "OPTConfig", vocab_size=100, hidden_size=32,
                     num_hidden_layers=2, ffn_dim=37, num_attention_heads=2,
                     max_position_embeddings=64, word_embed_proj_dim=32),
                  text(), ["model.decoder.layers.0", "model.decoder.layers.1"], "NLC", [32, 32],
                  mask_key="attention_mask"),
    "hf.t5": Zoo(hf("T5ForConditionalGeneration", "T5Config", vocab_size=100, d_model=32, d_kv=8,
                    d_ff=37, num_layers=2, num_heads=2, decoder_start_token_id=0),
                 text(decoder=True),
                 ["encoder.block.0", "encoder.block.1", "decoder.block.0", "decoder.block.1"],
                 "NLC", [32] * 4, mask_key="attention_mask"),
    "hf.bart": Zoo(hf("BartForSequenceClassification", "BartConfig", vocab_size=100, d_model=32,
                      encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37,
                      max_position_embeddings=64),
                   text(pad=False, eos=2), ["model.encoder.layers.0", "model.encoder.layers.1",
                                     "model.decoder.layers.0", "model.decoder.layers.1"],
                   "NLC", [32] * 4),
    "hf.vit": Zoo(hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=8,
                     hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, num_labels=10),
                  image(32), (2, "vit.", ""), "NLC", [32, 32]),
    "hf.convnext": Zoo(hf("ConvNextForImageClassification", "ConvNextConfig",
                          hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], num_labels=10),
                       image(32), [f"convnext.encoder.stages.{i}" for i in range(4)], "NCHW",
                       [8, 16, 24, 32]),
    "hf.swin": Zoo(hf("SwinForImageClassification", "SwinConfig", image_size=32, patch_size=4,
                      embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4,
                      num_labels=10),
                   image(32), ["swin.encoder.layers.0", "swin.encoder.layers.1"], "NLC",
                   [32, 32]),
}


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return _first_tensor(out[0])
    values = out.values() if hasattr(out, "values") else out
    return _first_tensor(next(iter(values)))


def reference(model: Any, names: list[str], x: Any, layout: str, mask: Any) -> dict[str, Any]:
    """The modules' outputs through plain forward hooks, pooled by hand."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:  # returns None: output unchanged
            seen.setdefault(name, _first_tensor(output).detach().clone())

        return hook

    handles = [model.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            model(**x) if isinstance(x, dict) else model(x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n, t in seen.items():
        t = t.float()
        if t.ndim == 2:
            out[n] = t  # a vector per sample: nothing to pool
        elif layout == "NCHW":
            out[n] = t.mean((2, 3))
        elif layout == "NHWC":
            out[n] = t.mean((1, 2))
        elif mask is not None and t.shape[1] == mask.shape[1]:
            w = mask.float().unsqueeze(-1)
            out[n] = (t * w).sum(1) / w.sum(1)
        else:
            out[n] = t.mean(1)
    return {n: v.numpy() for n, v in out.items()}


def _params() -> list[Any]:
    return [pytest.param(k, marks=[pytest.mark.slow] if z.slow else [], id=k)
            for k, z in ZOO.items()]


def test_the_zoo_has_at_least_forty_models() -> None:
    from test_zoo_keras import ZOO as KERAS_ZOO  # noqa: PLC0415

    assert len(ZOO) + len(KERAS_ZOO) >= 40


@pytest.mark.parametrize("key", _params())
def test_zoo_model(key: str) -> None:
    z = ZOO[key]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = z.build().eval()
    adapter = TorchAdapter(model)
    names = adapter.layer_names
    if isinstance(z.names, list):
        assert names == z.names
    else:
        count, first, last = z.names
        assert len(names) == count and names[0].startswith(first) and names[-1].endswith(last)
    for n in (2, 3):
        x = z.inputs(n)
        _, acts = adapter.run(x)
        assert list(acts) == names  # one capture per module: a block's hidden state
        mask = x.get(z.mask_key) if isinstance(x, dict) and z.mask_key else None
        ref = reference(model, names, x, z.layout, mask)
        for name in names:
            got = acts[name]
            assert got.ndim == 2 and got.shape[0] == n, (name, got.shape)
            np.testing.assert_allclose(got, ref[name], atol=ATOL, rtol=1e-4, err_msg=name)
    if z.widths is not None:
        assert [acts[k].shape[1] for k in names] == z.widths
    summary = {e["name"]: e for e in adapter.model_summary()["layers"]}
    maps = [k for k in names if len(summary[k]["source_shape"]) > 1]
    assert maps and {summary[k]["layout"] for k in maps} == {z.layout}
    assert all(summary[k]["pool"] == "mean" for k in maps)
