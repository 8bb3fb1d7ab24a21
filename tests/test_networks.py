"""MNT-DL: shapes for CT/MR/ablation inputs, eval determinism, parameter counts, slice-count check."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ResNet

from scripts.networks import MNTDL, WithAuxiliaryLogits, mnt_dl_res25
from scripts.networks.mnt_dl import count_parameters

TINY = dict(widths=(4, 8, 16, 16), num_heads=2)


@pytest.mark.parametrize("channels,head", [(2, "cross_attention"), (3, "cross_attention"), (3, "res25")])
def test_output_shapes(channels, head):
    net = MNTDL(in_channels=channels, num_slices=10, neighbourhood_size=5, head=head, **TINY)
    x = torch.randn(3, channels, 32, 32, 10)
    assert net(x).shape == (3, 1)
    assert net.forward_all(x).shape == (3, 1 + 2)
    assert WithAuxiliaryLogits(net)(x).shape == (3, 3)


def test_attention_switches():
    x = torch.randn(2, 2, 32, 32, 10)
    plain = MNTDL(in_channels=2, num_slices=10, slice_attention=False, nonlocal_block=False, **TINY).eval()
    assert len(plain.slice_attention) == 0 and plain(x).shape == (2, 1)
    full = MNTDL(in_channels=2, num_slices=10, share_slice_attention=False, **TINY)
    assert len(full.slice_attention) == 2
    assert count_parameters(full) > count_parameters(plain)


def test_single_sequence_ablation_input():
    """A single-sequence model stacks the one sequence to fill the channels (as in the paper)."""
    net = MNTDL(in_channels=3, num_slices=10, **TINY).eval()
    dwi = torch.randn(2, 1, 32, 32, 10)
    assert net(dwi.repeat(1, 3, 1, 1, 1)).shape == (2, 1)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    net = MNTDL(in_channels=2, num_slices=10, dropout=0.5, **TINY)
    for p in net.parameters():  # break the zero/identity init so every path carries signal
        torch.nn.init.normal_(p, 0, 0.1)
    x = torch.randn(2, 2, 32, 32, 10)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.allclose(net(x), net(x))


def test_res25_parameter_count():
    # The published code builds five slice-attention modules (26.6 M parameters at 3 channels) but
    # uses only the first; res25 shares one module (same behaviour), the unshared variant matches the count.
    assert count_parameters(mnt_dl_res25(3, share_slice_attention=False)) == 26_551_136
    shared = count_parameters(mnt_dl_res25(3))
    assert shared == 26_551_136 - 4 * (512 * 3 * 512 + 3 * 512 + 512 * 512 + 512)
    assert 26.5e6 < count_parameters(mnt_dl_res25(3, share_slice_attention=False)) < 26.7e6


def test_wrong_slice_count_is_a_clear_error():
    net = MNTDL(in_channels=2, num_slices=10, **TINY)
    with pytest.raises(ValueError, match=r"expected input \(B, 2, H, W, 10\), got \[1, 2, 32, 32, 12\].*resample"):
        net(torch.randn(1, 2, 32, 32, 12))


def test_nonlocal_block_is_used_and_trainable():
    net = MNTDL(in_channels=2, num_slices=10, nonlocal_block=True, **TINY)
    names = [n for n, _ in net.named_modules() if n.endswith("theta")]
    assert len(names) == 1
    out = net.forward_all(torch.randn(2, 2, 32, 32, 10)).sum()
    out.backward()
    theta = dict(net.named_modules())[names[0]]
    assert theta.weight.grad is not None


def test_slab_net_shapes_and_input_check():
    from scripts.networks.slab_net import SlabNet

    net = SlabNet(sequences=2, num_slabs=5, features=4).eval()
    x = torch.rand(3, 4, 20, 14, 10)
    assert net(x).shape == (3, 1)
    assert net.slab_features(x).shape == (3, 4 * 2 * 5, 20, 14)
    with pytest.raises(ValueError, match="multiple of 5"):
        net(torch.rand(1, 4, 20, 14, 12))
    # the asymmetry channels see the clot side: swapping an image with its mirror changes the features
    swapped = torch.cat([x[:, 2:], x[:, :2]], 1)
    assert not torch.allclose(net.slab_features(x), net.slab_features(swapped))
    # a left-right flip of the whole input (positions only) leaves the globally pooled output unchanged
    assert torch.allclose(net(x), net(torch.flip(x, dims=[2])), atol=1e-5)


def test_vessel_mask_net_picks_iodine_not_bone_and_reads_the_clot():
    from scripts.networks.vessel_mask import VesselMaskNet

    net = VesselMaskNet(points=16, masks=2, hidden=4).eval()
    x = torch.zeros(2, 4, 10, 8, 6)
    x[:, 0] = 0.3  # brain on NCCT
    x[:, 1, :4, 0, 0] = 0.9  # open vessel on CTA (NCCT 0.3)
    x[:, 1, 9, 7, 5] = x[:, 0, 9, 7, 5] = 1.0  # bone: bright on NCCT and CTA
    x[:, 3, 6, 2, 2] = 0.9  # clot: dark on CTA where the mirror vessel is bright
    points = net.vessel_points(x)
    assert points.shape == (2, 6, 16)
    assert not ((points[:, 0] == 1.0) & (points[:, 1] == 1.0)).any()  # the bone voxel is not in the vessel set
    assert ((points[:, 1] == 0) & (points[:, 3] == 0.9)).any()  # the clot voxel (its mirror enhanced) is
    assert torch.allclose(points[:, 5], points[:, 1] - points[:, 3]) and torch.allclose(
        points[:, 4], points[:, 0] - points[:, 2]
    )
    assert net(x).shape == (2, 1) and net.measurements(x).shape == (2, 2 * 7)
    with pytest.raises(ValueError, match="expected input"):
        net(x[:, :2])
    with pytest.raises(ValueError, match="fewer than points"):
        VesselMaskNet(points=10_000)(x)
    clinical = VesselMaskNet(points=16, masks=2, clinical_columns={"location": ["ICA", "M1", "M2"], "age": "numeric"})
    assert clinical.eval()(x, torch.tensor([[0.0, 70.0], [2.0, float("nan")]])).shape == (2, 1)
    with pytest.raises(ValueError, match="clinical values"):
        clinical(x)


def test_vessel_mask_net_iodine_ratio_is_the_same_in_a_thin_and_a_thick_vessel():
    """The optional ratio channel (CTA / mirrored CTA) reads a clot's filling alike whatever share of the voxel the
    vessel fills (partial volume scales both sides), where the asymmetry CTA - mirror does not; ``means`` keeps
    only the chosen channels' masked means."""
    from scripts.networks.vessel_mask import VesselMaskNet

    net = VesselMaskNet(points=4, masks=3, hidden=4, ratio=True, means=[0, 1, 6]).eval()
    x = torch.zeros(2, 4, 6, 4, 3)
    x[0, 1, 1, 1, 1], x[0, 3, 1, 1, 1] = 0.3, 0.9  # clot in a vessel filling the voxel: a third of the mirror
    x[1, 1, 1, 1, 1], x[1, 3, 1, 1, 1] = 0.1, 0.3  # the same clot where the vessel fills a third of the voxel
    points = net.vessel_points(x)
    assert points.shape == (2, 7, 4)
    brightest = points[:, 3].argmax(1)
    ratio = points[torch.arange(2), 6, brightest]
    asymmetry = points[torch.arange(2), 5, brightest]
    assert torch.allclose(ratio, torch.tensor([1 / 3, 1 / 3]))
    assert not torch.allclose(asymmetry[0], asymmetry[1])
    assert net.measurements(x).shape == (2, 3 * (1 + 3))
    assert net(x).shape == (2, 1)
    assert VesselMaskNet(points=4, masks=3).measurements(x).shape == (2, 3 * 7)  # default: unchanged


def test_vessel_mask_net_ratio_masks_select_poorly_filled_vessels_with_learned_cut_offs():
    """``ratio_masks``: mask m holds the points filling less than c_m of their mirror vessel; c_m learns."""
    from scripts.networks.vessel_mask import VesselMaskNet

    net = VesselMaskNet(points=3, masks=2, ratio=True, ratio_masks=True, means=[6])
    assert not hasattr(net, "mask_mlp") and net.cuts.tolist() == pytest.approx([0.2, 0.9])
    x = torch.zeros(1, 4, 4, 3, 2)
    x[0, 1, 0, 0, 0], x[0, 3, 0, 0, 0] = 0.15, 0.9  # clot: a sixth of the mirror vessel
    x[0, 1, 1, 0, 0], x[0, 3, 1, 0, 0] = 0.6, 0.9  # poorly collateralised distal vessel: two thirds
    x[0, 1, 2, 0, 0] = x[0, 3, 2, 0, 0] = 0.9  # normal vessel, like its mirror
    features = net.measurements(x)  # [log size_0, log size_1, mean ratio in mask 0, mean ratio in mask 1]
    assert features[0, 2] < 0.25 < features[0, 3] < 0.6  # mask 0 (c 0.2) holds the clot, mask 1 clot + distal
    assert features[0, 0] < features[0, 1]
    net.eval()(x).sum().backward()
    assert net.cuts.grad is not None and net.cuts.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs ratio"):
        VesselMaskNet(ratio_masks=True)


def test_autocast_forward_runs_bf16_and_keeps_the_module():
    """bf16 by forward hooks: the same module (state_dict keys and checkpoints unchanged), float32 outputs close to
    fp32 but not equal, fp32 a no-op; fp16 on CPU and unknown names refused with one line."""
    import torch

    from scripts import BundleInputError
    from scripts.networks.precision import autocast_forward

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    keys = list(net.state_dict())
    x = torch.randn(8, 64)
    exact = net(x)
    assert autocast_forward(net, "fp32") is net and torch.equal(net(x), exact)
    assert autocast_forward(net, "bf16") is net and list(net.state_dict()) == keys
    low = net(x)
    assert low.dtype == torch.float32 and not torch.equal(low, exact)
    assert torch.allclose(low, exact, atol=0.05)
    assert not torch.is_autocast_enabled("cpu")  # the context is closed after the call
    with pytest.raises(BundleInputError, match="fp16 needs a CUDA device"):
        autocast_forward(torch.nn.Linear(2, 1), "fp16")(torch.randn(1, 2))
    with pytest.raises(BundleInputError, match="precision: 'int4' is unknown"):
        autocast_forward(net, "int4")


def test_vessel_mask_net_measures_in_fp32_under_bf16_autocast():
    """The masked means sum over a thousand vessel points: under bf16 autocast they stay fp32 (without it their
    error was 0.007 here and the demo test-set probabilities moved by up to 0.018; docs/performance.md)."""
    from scripts.networks.precision import autocast_forward
    from scripts.networks.vessel_mask import VesselMaskNet

    torch.manual_seed(0)
    net = VesselMaskNet(points=1024, masks=4, hidden=8).eval()
    x = torch.rand(8, 4, 40, 30, 20) * 0.4
    x[:, 1] += (torch.rand(8, 40, 30, 20) > 0.97) * 0.6  # contrast-filled vessels on CTA
    with torch.inference_mode():
        exact, p = net.measurements(x), torch.sigmoid(net(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net.measurements(x)
        p_low = torch.sigmoid(autocast_forward(net, "bf16")(x))
    assert low.dtype == torch.float32 and 0 < (exact - low).abs().max() < 0.002
    assert (p - p_low).abs().max() < 0.01


def _trained_like_batch_norm(net: torch.nn.Module) -> torch.nn.Module:
    """Running statistics and affine parameters away from their initial values (folding the initial ones is trivial)."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("kind", ["mnt_dl", "resnet3d"])
def test_batch_norm_folded_on_loading_keeps_the_outputs(kind):
    """``for_speed(..., fold_norm=True)`` folds every BatchNorm of MNT-DL (2-D, channels-last weights) and of MONAI's
    3-D ResNet into its convolution when a checkpoint is loaded: no BatchNorm left, outputs equal to the unfolded
    model's to float rounding; a checkpoint that does not fit is not folded into."""
    from monai.networks.nets import resnet18

    from scripts.networks.precision import for_speed

    torch.manual_seed(0)
    if kind == "mnt_dl":
        make, x = (lambda: MNTDL(in_channels=2, num_slices=10, **TINY)), torch.randn(2, 2, 32, 32, 10)
    else:
        make, x = (lambda: resnet18(spatial_dims=3, n_input_channels=2, num_classes=1)), torch.randn(2, 2, 24, 24, 12)
    trained = _trained_like_batch_norm(make())
    with torch.inference_mode():
        exact = trained(x)
    folded = for_speed(make(), channels_last=kind == "mnt_dl", fold_norm=True)
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())  # not before loading
    folded.load_state_dict(trained.state_dict())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert not folded.training
    with torch.inference_mode():
        fast = folded(x)
    assert exact.abs().max() > 0.01 and torch.allclose(fast, exact, rtol=1e-4, atol=1e-5)
    other = for_speed(make(), fold_norm=True)
    state = {k: v for k, v in trained.state_dict().items() if not k.endswith("running_var")}
    with pytest.raises(RuntimeError, match="running_var"):
        other.load_state_dict(state)
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in other.modules())


def test_inference_config_folds_the_loaded_fold_models(tmp_path):
    """configs/inference.json's network: fp32, channels-last weights, BatchNorm folded once a fold checkpoint is
    loaded into a copy (``ensemble_predict``); the configured network itself stays loadable."""
    import copy

    from monai.bundle import ConfigParser

    from scripts.training.kfold import load_weights

    parser = ConfigParser()
    parser.read_config("configs/inference.json")
    parser.update({"widths": [4, 8, 16, 16], "num_heads": 2, "num_slices": 10, "device": "cpu"})
    network = parser.get_parsed_content("network")
    torch.save({"model": _trained_like_batch_norm(copy.deepcopy(network)).state_dict()}, tmp_path / "model.pt")
    loaded = load_weights(copy.deepcopy(network), str(tmp_path / "model.pt"))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in loaded.modules())
    assert loaded.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())


def test_speed_switches_from_the_command_line():
    """``--channels_last false`` arrives as the string 'false' and must mean false; other values and unknown
    ``bf16_modules`` are refused with one line; a named submodule runs in bf16 and returns float32."""
    from scripts import BundleInputError
    from scripts.networks.precision import for_speed

    net = for_speed(MNTDL(in_channels=2, num_slices=10, **TINY), channels_last="false", fold_norm="false")
    assert net.stem[0].weight.is_contiguous() and not net.stem[0].weight.is_contiguous(
        memory_format=torch.channels_last
    )
    net = for_speed(MNTDL(in_channels=2, num_slices=10, **TINY), channels_last="true")
    assert net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    resnet = ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 16], spatial_dims=3, n_input_channels=2, num_classes=1).eval()
    x = torch.randn(1, 2, 16, 16, 8)
    expected = resnet(x)  # inference's default (channels_last true) on a 3-D network: 3-D weights left as they are
    assert torch.allclose(for_speed(resnet, channels_last="true")(x), expected, atol=1e-6)
    with pytest.raises(BundleInputError, match="compile: 'maybe' is not true or false"):
        for_speed(MNTDL(in_channels=2, num_slices=10, **TINY), compile="maybe")
    with pytest.raises(BundleInputError, match="bf16_modules: the network has no submodule 'trunk'"):
        for_speed(MNTDL(in_channels=2, num_slices=10, **TINY), bf16_modules=["trunk"])
    seen = []
    net = for_speed(MNTDL(in_channels=2, num_slices=10, **TINY).eval(), bf16_modules="stem")
    net.local.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    assert net(torch.randn(1, 2, 32, 32, 10)).dtype == torch.float32 and seen == [torch.float32]
    stem_out = []
    net.stem[0].register_forward_hook(lambda m, a, o: stem_out.append(o.dtype))
    net(torch.randn(1, 2, 32, 32, 10))
    assert stem_out == [torch.bfloat16]
