import pytest
import torch

from trainer.models import available, build_model, get_arch
from trainer.profile import count_flops


def test_registry_lists_both_and_rejects_unknown_names():
    assert {"vgg16-unet", "light-unet"} <= set(available())
    with pytest.raises(ValueError, match="registered: .*light-unet.*vgg16-unet"):
        get_arch("resnet-unet")


@pytest.mark.parametrize("name, size", [("vgg16-unet", 64), ("light-unet", 64), ("light-unet", 96)])
def test_output_shape_is_classes_by_input_size(name, size):
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 3, size, size)
    assert model.arch == name


def test_vgg16_unet_parameter_count_and_encoder():
    model = build_model("vgg16-unet")
    convs = model.encoder_convs()
    assert len(convs) == 12, "the paper keeps the first 12 VGG16 convolutions"
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512]
    encoder = sum(p.numel() for c in convs for p in c.parameters())
    assert encoder == 12_354_880  # conv1_1 … conv5_2 of VGG16, weights and biases
    assert sum(p.numel() for p in model.parameters()) == 23_306_307
    assert model.head.in_channels == 64 and model.head.kernel_size == (1, 1)


def test_light_unet_is_far_cheaper():
    light, paper = build_model("light-unet"), build_model("vgg16-unet")
    assert sum(p.numel() for p in light.parameters()) < 0.01 * sum(p.numel() for p in paper.parameters())
    assert count_flops(light, 128) * 100 < count_flops(paper, 128)


def test_flop_counter_on_a_single_conv():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1))
    assert count_flops(conv, 16) == 2 * 3 * 9 * 8 * 16 * 16
    dw = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1, stride=2, groups=3))
    assert count_flops(dw, 16) == 2 * 1 * 9 * 3 * 8 * 8


def test_paper_init_statistics():
    model = build_model("vgg16-unet")
    conv = model.encoder_convs()[4]  # conv3_1: 128 → 256 channels, fan-in 128·9
    std = conv.weight.std().item()
    assert abs(std - (2 / (128 * 9)) ** 0.5) < 0.1 * std
    assert torch.count_nonzero(conv.bias) == 0


def test_encoder_weights_load_from_a_torchvision_layout_file(tmp_path):
    from trainer.models.vgg16_unet import TORCHVISION_CONV_INDEX, VGG16UNet

    reference = build_model("vgg16-unet")
    state = {}
    for conv, index in zip(reference.encoder_convs(), TORCHVISION_CONV_INDEX):
        state[f"features.{index}.weight"] = torch.randn_like(conv.weight)
        state[f"features.{index}.bias"] = torch.randn_like(conv.bias)
    state["features.28.weight"] = torch.randn(512, 512, 3, 3)  # conv5_3, not used
    torch.save(state, tmp_path / "vgg16.pth")
    model = VGG16UNet(encoder_weights=tmp_path / "vgg16.pth")
    assert torch.equal(model.encoder_convs()[7].weight, state["features.17.weight"])
    assert torch.equal(model.encoder_convs()[11].bias, state["features.26.bias"])


def test_encoder_weights_errors(tmp_path):
    from runtime.errors import CscError
    from trainer.models.vgg16_unet import VGG16UNet

    with pytest.raises(CscError, match="encoder weights file not found"):
        VGG16UNet(encoder_weights=tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(CscError, match="not torchvision's VGG16 layout"):
        VGG16UNet(encoder_weights=tmp_path / "partial.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(CscError, match=r"not a readable torch state dict \(PyTorch cannot read it as tensors") as err:
        VGG16UNet(encoder_weights=tmp_path / "module.pth")
    assert "weights_only" not in str(err.value)
