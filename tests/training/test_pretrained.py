"""Pretrained importers on fake files: the published layouts with random weights.

Each file is written once per module in the layout its source uses (names, shapes, channel
order, Keras's channels-last kernels and flatten order, Python pickles of numpy arrays,
torchvision's old DenseNet keys). The imported backbone is compared with the original network
run as its source runs it: on the 0-255 (or 0-1) image in its channel order, minus its mean.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affbatch.models import backbones as bb
from affbatch.models.cnn_rnn import CnnRnn
from affbatch.models.vggface_gru_attn import CROP_SIZE, VGGFaceFC6
from training import pretrained as pt

VGG_NAMES = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True) for i in range(1, n + 1)]
VGG_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
FC6_UNITS = 8  # VGG-Face's is 4096; the importer takes the file's width


def crops(n: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, CROP_SIZE, CROP_SIZE, generator=g) * 2 - 1


def grey(norm: pt.InputNorm) -> torch.Tensor:
    """Mid-grey (x = 0) in the network's input units, (1, 3, 1, 1)."""
    return pt.network_input(torch.zeros(1, 3, 1, 1), norm)


def pad_with_grey(z: torch.Tensor, pad: int, norm: pt.InputNorm) -> torch.Tensor:
    return F.pad(z - grey(norm), (pad,) * 4) + grey(norm)


def assert_close_scaled(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))


# --- VGG-Face: Albanie's DAG .pth (RGB) and keras-vggface .h5 (BGR, channels-last) ---------------


@pytest.fixture(scope="module")
def vggface_dag() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state, channels = {}, 3
    for name, width in zip(VGG_NAMES, VGG_WIDTHS, strict=True):
        state[f"{name}.weight"] = torch.randn(width, channels, 3, 3, generator=g) * (2 / (9 * channels)) ** 0.5
        state[f"{name}.bias"] = torch.randn(width, generator=g) * 0.1
        channels = width
    state["fc6.weight"] = torch.randn(FC6_UNITS, 512 * 7 * 7, generator=g) * (512 * 49) ** -0.5
    state["fc6.bias"] = torch.randn(FC6_UNITS, generator=g) * 0.1
    state["fc7.weight"], state["fc7.bias"] = torch.randn(4, FC6_UNITS, generator=g), torch.zeros(4)
    state["fc8.weight"], state["fc8.bias"] = torch.randn(3, 4, generator=g), torch.zeros(3)
    return state


def vgg_reference(state, z: torch.Tensor, norm: pt.InputNorm, keras: bool = False) -> torch.Tensor:
    """VGG-Face at 96x96 as published, run on its own input ``z``, written apart from the importer.

    conv1_1 pads with grey (the folded model's border, see training.pretrained); fc6 is the
    224-pixel layer on pool5 upsampled to 7x7 by nearest neighbour (the documented adaptation);
    Keras weights stay in their layout: kernels (h, w, in, out), fc6 on an (h, w, c) flatten.
    """
    x = z
    for i, name in enumerate(VGG_NAMES):
        w = state[f"{name}.kernel"].permute(3, 2, 0, 1) if keras else state[f"{name}.weight"]
        x = F.conv2d(pad_with_grey(x, 1, norm), w) if i == 0 else F.conv2d(x, w, padding=1)
        x = F.relu(x + state[f"{name}.bias"].view(1, -1, 1, 1))
        if name.endswith(("1_2", "2_2", "3_3", "4_3", "5_3")):
            x = F.max_pool2d(x, 2)
    x = F.interpolate(x, size=(7, 7), mode="nearest")
    if keras:
        return F.relu(x.permute(0, 2, 3, 1).flatten(1) @ state["fc6.kernel"] + state["fc6.bias"])
    return F.relu(x.flatten(1) @ state["fc6.weight"].T + state["fc6.bias"])


@pytest.fixture(scope="module")
def vggface_files(vggface_dag, tmp_path_factory):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path_factory.mktemp("vggface")
    torch.save(vggface_dag, folder / "vgg_face_dag.pth")
    keras = {}  # the same network for BGR input, in Keras's layout
    for i, name in enumerate(VGG_NAMES):
        w = vggface_dag[f"{name}.weight"]
        keras[f"{name}.kernel"] = (w.flip(1) if i == 0 else w).permute(2, 3, 1, 0).contiguous()
        keras[f"{name}.bias"] = vggface_dag[f"{name}.bias"]
    w6 = vggface_dag["fc6.weight"].reshape(FC6_UNITS, 512, 7, 7)
    keras["fc6.kernel"] = w6.permute(2, 3, 1, 0).reshape(49 * 512, FC6_UNITS).contiguous()  # rows (h, w, c)
    keras["fc6.bias"] = vggface_dag["fc6.bias"]
    with h5py.File(folder / "rcmalli_vggface_tf_vgg16.h5", "w") as f:  # keras.Model.save: under model_weights/
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [n.encode() for n in [*VGG_NAMES, "pool5", "flatten", "fc6"]]
        for layer in [*VGG_NAMES, "pool5", "flatten", "fc6"]:
            group = root.create_group(layer)
            params = [p for p in ("kernel", "bias") if f"{layer}.{p}" in keras]
            group.attrs["weight_names"] = [f"{layer}/{p}:0".encode() for p in params]
            for p in params:
                group.create_dataset(f"{layer}/{p}:0", data=keras[f"{layer}.{p}"].numpy())
    with h5py.File(folder / "no_names.h5", "w") as f:  # keras save_weights, without weight_names
        for layer in VGG_NAMES[:2]:
            for p in ("kernel", "bias"):
                f.create_dataset(f"{layer}/{layer}/{p}:0", data=keras[f"{layer}.{p}"].numpy())
    return folder, keras


def test_vggface_dag_imports_to_vgg_face_on_its_own_input(vggface_dag, vggface_files):
    folder, _ = vggface_files
    cnn = pt.load_backbone("vggface", folder / "vgg_face_dag.pth").eval()
    assert isinstance(cnn, VGGFaceFC6) and cnn.fc6.out_features == FC6_UNITS
    assert torch.equal(cnn.features[2].weight, vggface_dag["conv1_2.weight"])  # names -> indices
    assert torch.equal(cnn.features[28].bias, vggface_dag["conv5_3.bias"])
    x = crops(2)
    with torch.no_grad():
        expected = vgg_reference(vggface_dag, pt.network_input(x, pt.VGGFACE_RGB), pt.VGGFACE_RGB)
        assert_close_scaled(cnn(x), expected)
        # Away from the border the fold is exact whatever the padding: conv1_1 without padding.
        first = torch.nn.functional.conv2d(x, cnn.features[0].weight, cnn.features[0].bias)
        original = F.conv2d(pt.network_input(x, pt.VGGFACE_RGB), vggface_dag["conv1_1.weight"])
        assert_close_scaled(first, original + vggface_dag["conv1_1.bias"].view(1, -1, 1, 1), rtol=1e-5)


def test_vggface_keras_h5_imports_to_the_same_network(vggface_dag, vggface_files):
    folder, keras = vggface_files
    cnn = pt.load_backbone("vggface", folder / "rcmalli_vggface_tf_vgg16.h5").eval()
    from_dag = pt.load_backbone("vggface", folder / "vgg_face_dag.pth")
    x = crops(1)
    with torch.no_grad():
        expected = vgg_reference(keras, pt.network_input(x, pt.VGGFACE_BGR), pt.VGGFACE_BGR, keras=True)
        assert_close_scaled(cnn(x), expected)
    # The Keras file holds the DAG file's network for BGR input: both import to one model (the
    # two publish the mean with different digits, hence the tolerance on conv1_1's bias).
    for key, value in from_dag.state_dict().items():
        torch.testing.assert_close(
            cnn.state_dict()[key], value, rtol=1e-6, atol=1e-3 if key == "features.0.bias" else 0
        )


def test_vggface_pool_feed_needs_no_fc6(vggface_files):
    folder, _ = vggface_files
    cnn = pt.load_backbone("vggface", folder / "rcmalli_vggface_tf_vgg16.h5", feed="pool")
    assert isinstance(cnn, bb.VGG16Pool)
    with pytest.raises(pt.PretrainedError, match=r"no_names.h5: no 'conv2_1.kernel' in it; expected VGG-Face"):
        pt.load_backbone("vggface", folder / "no_names.h5", feed="pool")


# --- VGGFace2 ResNet-50: cydonia999's .pkl (BGR) and Albanie's DAG .pth (RGB) --------------------


def randomised(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """module's state with random weights and batch-norm statistics (as a trained file has)."""
    g = torch.Generator().manual_seed(seed)
    bb.init_backbone_(module)
    state = {}
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", ".bias")):
            v = torch.randn(v.shape, generator=g) * 0.1
        elif v.dim() == 1:  # batch-norm gamma
            v = v * (1 + 0.1 * torch.randn(v.shape, generator=g))
        state[k] = v.clone()
    return state


def to_dag(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision names -> Albanie's VGGFace2 DAG names, written out rule by rule."""
    parts = {"conv1": "1x1_reduce", "bn1": "1x1_reduce_bn", "conv2": "3x3", "bn2": "3x3_bn"}
    parts |= {
        "conv3": "1x1_increase",
        "bn3": "1x1_increase_bn",
        "downsample.0": "1x1_proj",
        "downsample.1": "1x1_proj_bn",
    }
    dag = {}
    for k, v in state.items():
        module, param = k.rsplit(".", 1)
        if module in ("conv1", "bn1"):
            dag[f"conv1_7x7_s2{'' if module == 'conv1' else '_bn'}.{param}"] = v
        else:
            layer, block, part = module.split(".", 2)
            dag[f"conv{int(layer[5:]) + 1}_{int(block) + 1}_{parts[part]}.{param}"] = v
    return dag


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vggface2")
    state = randomised(bb.ResNet50("caffe"), seed=3)  # a network for BGR input
    arrays = {k: v.numpy() for k, v in state.items()}
    arrays["fc.weight"], arrays["fc.bias"] = np.zeros((5, 2048), np.float32), np.zeros(5, np.float32)
    with open(folder / "resnet50_ft_weight.pkl", "wb") as f:
        pickle.dump(arrays, f, protocol=2)
    dag = to_dag({k: (v.flip(1) if k == "conv1.weight" else v) for k, v in state.items()})  # same net, RGB
    dag["classifier.weight"], dag["classifier.bias"] = torch.zeros(5, 2048, 1, 1), torch.zeros(5)
    torch.save(dag, folder / "resnet50_ft_dag.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "resnet50_ft_weight.pth")
    return folder, state


def test_vggface2_pickle_needs_the_opt_in(resnet_files):
    folder, _ = resnet_files
    with pytest.raises(pt.PretrainedError, match="allow_pickle=True"):
        pt.load_backbone("vggface2-resnet50", folder / "resnet50_ft_weight.pkl")


def test_the_pickle_reader_builds_numpy_arrays_only(tmp_path, capsys):
    class Exploit:
        def __reduce__(self):
            return (print, ("unpickling ran code",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": Exploit()}, protocol=2))
    with pytest.raises(pt.PretrainedError, match=r"evil.pkl: .*builtin.*print: not a numpy array; refused"):
        pt.load_backbone("vggface2-resnet50", path, allow_pickle=True)
    assert "ran code" not in capsys.readouterr().out


def test_vggface2_resnet_imports_to_the_caffe_network_on_its_own_input(resnet_files):
    folder, state = resnet_files
    cnn = pt.load_backbone("vggface2-resnet50", folder / "resnet50_ft_weight.pkl", allow_pickle=True).eval()
    assert cnn.variant == "caffe"
    for k, v in state.items():
        if k not in ("conv1.weight", "bn1.running_mean"):  # the two that take the folded normalisation
            assert torch.equal(cnn.state_dict()[k], v), k
    original = bb.ResNet50("caffe").eval()
    original.load_state_dict(state, strict=False)
    x = crops(1)
    with torch.no_grad():
        original.conv1.padding = (0, 0)  # padded with grey instead, as the folded model's border is
        assert_close_scaled(cnn(x), original(pad_with_grey(pt.network_input(x, pt.VGGFACE2_BGR), 3, pt.VGGFACE2_BGR)))


def test_vggface2_dag_and_pickle_import_to_the_same_model(resnet_files):
    folder, _ = resnet_files
    from_pickle = pt.load_backbone("vggface2-resnet50", folder / "resnet50_ft_weight.pkl", allow_pickle=True)
    from_dag = pt.load_backbone("vggface2-resnet50", folder / "resnet50_ft_dag.pth")
    a, b = from_pickle.state_dict(), from_dag.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_torch_files_with_torchvisions_names(resnet_files):
    folder, state = resnet_files
    # cydonia999's names in a torch file (wrapped, DataParallel prefixes): read as its pickle is.
    from_pth = pt.load_backbone("vggface2-resnet50", folder / "resnet50_ft_weight.pth")
    from_pickle = pt.load_backbone("vggface2-resnet50", folder / "resnet50_ft_weight.pkl", allow_pickle=True)
    assert all(torch.equal(v, from_pickle.state_dict()[k]) for k, v in from_pth.state_dict().items())
    # The same names are torchvision's ResNet-50's: as ImageNet weights, the pytorch variant.
    imagenet = pt.load_backbone("imagenet-resnet50", folder / "resnet50_ft_weight.pth")
    assert imagenet.variant == "pytorch"
    weight, shift = pt.fold_input_norm(state["conv1.weight"], pt.IMAGENET)
    assert torch.equal(imagenet.conv1.weight, weight)
    torch.testing.assert_close(imagenet.bn1.running_mean, state["bn1.running_mean"] - shift)


# --- torchvision's ImageNet DenseNet-121 ----------------------------------------------------------


@pytest.fixture(scope="module")
def densenet_file(tmp_path_factory):
    state = randomised(bb.DenseNet121(), seed=4)
    old = {}  # torchvision's published file: "norm.1" where the module is now "norm1"
    for k, v in state.items():
        for new, was in (("norm1", "norm.1"), ("norm2", "norm.2"), ("conv1", "conv.1"), ("conv2", "conv.2")):
            if ".denselayer" in k and f".{new}." in k:
                k = k.replace(f".{new}.", f".{was}.")
        old[k] = v
    old["classifier.weight"], old["classifier.bias"] = torch.zeros(5, 1024), torch.zeros(5)
    path = tmp_path_factory.mktemp("densenet") / "densenet121-a639ec97.pth"
    torch.save(old, path)
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    return path, state


def test_densenet_remap_is_torchvisions():
    assert pt.densenet_remap(
        {
            "features.denseblock2.denselayer12.norm.2.running_var": 1,
            "features.denseblock2.denselayer12.conv.1.weight": 2,
            "features.transition1.norm.weight": 3,
            "features.norm0.bias": 4,
        }
    ) == {
        "features.denseblock2.denselayer12.norm2.running_var": 1,
        "features.denseblock2.denselayer12.conv1.weight": 2,
        "features.transition1.norm.weight": 3,
        "features.norm0.bias": 4,
    }


def test_imagenet_densenet_imports_to_the_network_on_its_own_input(densenet_file):
    path, state = densenet_file
    cnn = pt.load_backbone("imagenet-densenet121", path).eval()
    for k, v in state.items():
        if k not in ("features.conv0.weight", "features.norm0.running_mean"):
            assert torch.equal(cnn.state_dict()[k], v), k
    original = bb.DenseNet121().eval()
    original.load_state_dict(state, strict=False)
    original.features.conv0.padding = (0, 0)
    x = crops(1)
    with torch.no_grad():
        assert_close_scaled(cnn(x), original(pad_with_grey(pt.network_input(x, pt.IMAGENET), 3, pt.IMAGENET)))


# --- entry points and errors ----------------------------------------------------------------------


def test_load_into_a_model_and_convert_to_safetensors(resnet_files, tmp_path):
    folder, _ = resnet_files
    source = folder / "resnet50_ft_weight.pkl"
    model = CnnRnn("resnet50", "gru", attention=True)
    info = pt.load_into(model, "vggface2-resnet50", source, allow_pickle=True)
    assert info["kind"] == "vggface2-resnet50" and info["file"] == source.name and len(info["sha256"]) == 64
    assert pt.main(["vggface2-resnet50", str(source), str(tmp_path / "r50.safetensors"), "--allow-pickle"]) == 0
    converted = pt.load_backbone("vggface2-resnet50", tmp_path / "r50.safetensors")  # no pickle involved
    assert all(torch.equal(v, model.cnn.state_dict()[k]) for k, v in converted.state_dict().items())
    with pytest.raises(pt.PretrainedError, match="holds 'vggface2-resnet50'"):
        pt.load_backbone("imagenet-resnet50", tmp_path / "r50.safetensors")
    with pytest.raises(pt.PretrainedError, match="variant they were trained with, not 'pytorch'"):
        pt.load_into(CnnRnn("resnet50", "gru", resnet_variant="pytorch"), "vggface2-resnet50", source)
    with pytest.raises(pt.PretrainedError, match="for a vgg16 backbone; this model's is resnet50"):
        pt.load_into(model, "vggface", source)


def test_errors_name_the_file_and_the_layout(densenet_file, tmp_path):
    path, _ = densenet_file
    with pytest.raises(pt.PretrainedError, match=r"densenet121-a639ec97.pth: no 'conv1_1.weight' in it; expected VGG"):
        pt.load_backbone("vggface", path)
    with pytest.raises(pt.PretrainedError, match=r"weights of the vggface2-resnet50 backbone missing .*conv1.weight"):
        pt.load_backbone("vggface2-resnet50", path)
    with pytest.raises(pt.PretrainedError, match=r"nothing.pth: no such file \(expected torchvision's densenet121"):
        pt.load_backbone("imagenet-densenet121", tmp_path / "nothing.pth")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(pt.PretrainedError, match="unknown file type '.npz'"):
        pt.load_backbone("imagenet-densenet121", tmp_path / "weights.npz")
    with pytest.raises(pt.PretrainedError, match="choose one of vggface, vggface2-resnet50"):
        pt.load_backbone("facenet", path)
