"""The CNN-RNN zoo: backbones, RNNs (IndRNN's loop included), CnnRnn, ONNX export, checkpoints.

The CNNs cost 0.1-0.3 s a frame here, so the tests that run them use one or two frames; the
recurrent parts are tested on random features.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import engines
from affbatch.affect.runners import AffectIdentity, SequenceAffect, TemporalOutputs
from affbatch.models import backbones as bb
from affbatch.models import checkpoint as ckpt
from affbatch.models import cnn_rnn, rnns
from affbatch.models.cnn_rnn import ZOO, CnnRnn
from affbatch.models.vggface_gru_attn import CROP_SIZE, VGGFaceFC6, VGGFaceGRUAttention


def crops(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, CROP_SIZE, CROP_SIZE, generator=g) * 2 - 1


def features(batch: int, steps: int, width: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, steps, width, generator=g).clamp(min=0)


# --- backbones ---------------------------------------------------------------------------------

#: (backbone, feed, variant, F, parameters): the counts are torchvision's / VGG-Face's without
#: their classifiers (ResNet-50 25,557,032 - fc 2,049,000; DenseNet-121 7,978,856 - 1,025,000;
#: VGG-16 convolutions 14,714,688, + fc6 at 3x3: 4608 x 4096 + 4096).
BACKBONE_CASES = [
    ("vgg16", "fc6", "caffe", 4096, 14_714_688 + 4608 * 4096 + 4096),
    ("vgg16", "pool", "caffe", 512, 14_714_688),
    ("resnet50", "pool", "caffe", 2048, 23_508_032),
    ("resnet50", "pool", "pytorch", 2048, 23_508_032),
    ("densenet121", "pool", "caffe", 1024, 6_953_856),
]


@pytest.mark.parametrize(("name", "feed", "variant", "width", "params"), BACKBONE_CASES)
def test_backbone_shapes_and_sizes(name, feed, variant, width, params):
    torch.manual_seed(0)
    m = bb.make_backbone(name, feed, variant).eval()
    with torch.no_grad():
        y = m(crops(2))
    assert y.shape == (2, width) == (2, bb.backbone_width(m))
    assert sum(p.numel() for p in m.parameters()) == params
    assert torch.isfinite(y).all() and 0.05 < y.abs().mean() < 20  # random weights keep a sane scale
    assert (y[0] - y[1]).abs().max() > 1e-3  # ...and still see the input


def test_backbone_keys_are_torchvisions_and_vgg_facefc6s():
    resnet, dense = bb.ResNet50().state_dict(), bb.DenseNet121().state_dict()
    assert resnet["layer3.0.downsample.1.running_var"].shape == (1024,)
    assert resnet["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1) and "fc.weight" not in resnet
    assert len(resnet) == 320 - 2  # torchvision's resnet50 state dict, less fc.weight and fc.bias
    assert dense["features.denseblock4.denselayer16.conv2.weight"].shape == (32, 128, 3, 3)
    assert dense["features.transition3.conv.weight"].shape == (512, 1024, 1, 1)
    assert dense["features.norm5.running_mean"].shape == (1024,) and "classifier.weight" not in dense
    pool, fc6 = bb.VGG16Pool().state_dict(), VGGFaceFC6().state_dict()
    assert {k: v.shape for k, v in pool.items()} == {k: v.shape for k, v in fc6.items() if k.startswith("features.")}


def test_resnet_variants_put_the_stride_where_their_weights_expect_it():
    caffe, torchvision = bb.ResNet50("caffe"), bb.ResNet50("pytorch")
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert torchvision.layer2[0].conv1.stride == (1, 1) and torchvision.layer2[0].conv2.stride == (2, 2)
    assert caffe.maxpool.ceil_mode and caffe.maxpool.padding == 0 and torchvision.maxpool.padding == 1


def test_bad_backbone_choices_name_the_allowed_ones():
    with pytest.raises(ValueError, match="choose one of pool"):
        bb.make_backbone("resnet50", "fc6")
    with pytest.raises(ValueError, match="vgg16, resnet50, densenet121"):
        bb.make_backbone("alexnet")
    with pytest.raises(ValueError, match="caffe, pytorch"):
        bb.ResNet50("v2")


# --- RNNs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(rnns.RNNS))
def test_rnn_state_round_trip(kind):
    torch.manual_seed(0)
    rnn = rnns.make_rnn(kind, 24).eval()
    x = features(2, 10, 24)
    with torch.no_grad():
        out, state = rnn(x)
        first, mid = rnn(x[:, :4])
        second, end = rnn(x[:, 4:], mid)
    assert out.shape == (2, 10, 128) and state.shape == (rnn.state_layers, 2, 128)
    assert rnn.state_layers == (4 if kind == "lstm" else 2)
    torch.testing.assert_close(torch.cat([first, second], dim=1), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(end, state, rtol=0, atol=1e-6)
    assert (out[0, -1] - out[1, -1]).abs().max() > 1e-4


def test_indrnn_is_the_recurrence_of_li_et_al():
    torch.manual_seed(0)
    rnn = rnns.IndRNN(6, hidden_size=5)
    with torch.no_grad():
        rnn.weight_hh_l0[0] = 3.0  # beyond the bound: forward clips it to 2 ** (1/80)
    x, h0 = features(2, 7, 6), torch.randn(2, 2, 5)
    with torch.no_grad():
        out, hn = rnn(x, h0)
    # Reference: a plain loop over time and layers, h_t = relu(W x_t + u * h_{t-1} + b).
    inputs = x
    for k in range(2):
        w, u, b = (getattr(rnn, f"{n}_l{k}").detach() for n in ("weight_ih", "weight_hh", "bias"))
        u = u.clamp(-(2 ** (1 / 80)), 2 ** (1 / 80))
        h, steps = h0[k], []
        for t in range(7):
            h = torch.relu(inputs[:, t] @ w.T + u * h + b)
            steps.append(h)
        inputs = torch.stack(steps, dim=1)
        torch.testing.assert_close(hn[k], h, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, inputs, rtol=0, atol=1e-6)


def test_indrnn_trains():
    torch.manual_seed(0)
    rnn = rnns.IndRNN(4, hidden_size=3)
    out, _ = rnn(features(2, 5, 4))
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rnn.parameters())


# --- CnnRnn ------------------------------------------------------------------------------------


def test_zoo_names():
    assert len(ZOO) == 24 and {"vgg16-fc6-gru-attn", "resnet50-lstm", "densenet121-indrnn-attn"} <= set(ZOO)
    for name, parts in ZOO.items():
        assert cnn_rnn.architecture_name(parts["backbone"], parts["rnn"], parts["attention"], parts["feed"]) == name
    with pytest.raises(ValueError, match="not in the zoo"):
        cnn_rnn.parse_architecture("vggface-gru-attn")


def test_vggface_gru_attn_is_the_zoos_vgg16_fc6_gru_attn():
    torch.manual_seed(0)
    paper = VGGFaceGRUAttention().eval()
    zoo = CnnRnn.from_vggface_gru_attn(paper).eval()
    assert zoo.architecture == "vgg16-fc6-gru-attn" and type(zoo.cnn) is VGGFaceFC6
    assert set(zoo.state_dict()) == set(cnn_rnn.state_from_vggface_gru_attn(paper.state_dict()))
    x = crops(3).reshape(1, 3, 3, CROP_SIZE, CROP_SIZE)
    with torch.no_grad():
        y, state = paper(x)
        y2, state2 = zoo(x)
        f = torch.randn(1, 40, 4096).clamp(min=0)
        assert torch.equal(paper.temporal(f)[0], zoo.temporal(f)[0])
    assert torch.equal(y, y2) and all(torch.equal(a, b) for a, b in zip(state, state2, strict=True))


def temporal(rnn: str, attention: bool, width: int = 64) -> torch.nn.Module:
    """A zoo model's recurrent part over ``width`` features, as CnnRnn builds it."""
    torch.manual_seed(0)
    recurrent = rnns.make_rnn(rnn, width)
    return (cnn_rnn.RNNAttention(recurrent) if attention else cnn_rnn.RNNHead(recurrent)).eval()


@pytest.mark.parametrize("rnn", list(rnns.RNNS))
@pytest.mark.parametrize("attention", [True, False])
def test_temporal_continues_a_sequence_exactly(rnn, attention):
    part = temporal(rnn, attention)
    f = features(2, 40, 64)
    pre = []
    hook = part.out.register_forward_hook(lambda module, args, out: pre.append(out))
    with torch.no_grad():
        y, state = part(f)
        hook.remove()
        y1, s1 = part(f[:, :33])
        y2, s2 = part(f[:, 33:], s1)
    assert y.shape == (2, 40, 2)
    # tanh of the head's linear layer (seen through a hook, not recomputed), not saturated.
    torch.testing.assert_close(y, torch.tanh(pre[0]), rtol=0, atol=0)
    assert y.abs().max() < 0.999 and y.std() > 1e-3
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=0, atol=1e-5)
    for a, b in zip(s2, state, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert state.memory.shape[1] == (31 if attention else 0)
    assert (y[0, -1] - y[1, -1]).abs().max() > 1e-4


def _compile(module, example, inputs, outputs, axes):
    """engines.compile as SequenceAffect calls it, so that a later SequenceAffect hits the cache."""
    return engines.compile(module, example, inputs, outputs, axes, runtime="onnxruntime")


def compile_cnn(model):
    axes = {"crops": {0: "faces"}, "features": {0: "faces"}}
    return _compile(model.cnn, (torch.zeros(2, 3, CROP_SIZE, CROP_SIZE),), ["crops"], ["features"], axes)


def compile_temporal(part, width):
    axes = {"features": {1: "time"}, "valence_arousal": {1: "time"}}
    return _compile(TemporalOutputs(part), (torch.zeros(1, 3, width),), ["features"], ["valence_arousal"], axes)


@pytest.mark.parametrize("rnn", list(rnns.RNNS))
@pytest.mark.parametrize("attention", [True, False])
def test_temporal_exports_and_onnxruntime_matches_torch(rnn, attention):
    part = temporal(rnn, attention)
    engine = compile_temporal(part, 64)
    for steps in (1, 7, 40):  # exported at 3: IndRNN's Loop and the attention's windows are dynamic
        f = features(1, steps, 64, seed=steps)
        with torch.no_grad():
            expected = part(f)[0].numpy()
        np.testing.assert_allclose(engine(f.numpy())[0], expected, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def densenet_indrnn() -> CnnRnn:
    torch.manual_seed(0)
    return CnnRnn("densenet121", "indrnn", True).eval()


@pytest.mark.parametrize("name", ["densenet121-indrnn-attn", "resnet50-lstm", "vgg16-pool-gru-attn"])
def test_zoo_model_exports_and_onnxruntime_matches_torch(name, densenet_indrnn):
    torch.manual_seed(0)
    model = densenet_indrnn if name == densenet_indrnn.architecture else CnnRnn.from_name(name).eval()
    cnn, part = compile_cnn(model), compile_temporal(model.temporal, bb.backbone_width(model.cnn))
    x = crops(2)
    with torch.no_grad():
        f, y = model.cnn(x), model(x[None])[0]
    (f_ort,) = cnn(x[:1].numpy())  # another batch size than exported with
    assert np.abs(f_ort - f[:1].numpy()).max() <= 1e-4 * max(1.0, float(f.abs().max()))
    (y_ort,) = part(cnn(x.numpy())[0][None])  # end to end
    np.testing.assert_allclose(y_ort, y.numpy(), rtol=0, atol=1e-4)


def test_indrnn_graph_is_a_loop_that_tensorrts_parser_accepts():
    from engines.onnx_export import onnx_ops

    tensorrt_ops = pytest.importorskip("engines.tensorrt_ops")
    engine = compile_temporal(temporal("indrnn", True), 64)
    ops = onnx_ops(engine.onnx_path)
    assert ops["Loop"] == 2 and ops["ScatterND"] == 2 and not any(op.startswith("Sequence") for op in ops)
    assert tensorrt_ops.check_graph(engine.onnx_path) == []


def test_score_runs_a_zoo_model_as_predict_track_does(densenet_indrnn):
    """SequenceAffect (what `affbatch score` runs) on a zoo model gives predict_track's outputs."""
    identity = AffectIdentity("densenet121-indrnn-attn:test", None, "test")
    affect = SequenceAffect(densenet_indrnn, identity, window=4, warmup=2, runtime="onnxruntime")
    x = crops(6).numpy()
    stream = affect.new_stream()
    affect.push(stream, affect.features(x[:3]))
    affect.push(stream, affect.features(x[3:]))
    got = affect.finish(stream)
    np.testing.assert_allclose(got, densenet_indrnn.predict_track(x, window=4, warmup=2), rtol=0, atol=1e-4)


# --- checkpoints -------------------------------------------------------------------------------


def test_zoo_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CnnRnn("resnet50", "lstm", attention=False, resnet_variant="pytorch").eval()
    saved = ckpt.save_checkpoint(model, tmp_path / "ck", trained=False)
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["architecture"] == "resnet50-lstm" and config["weights"] == "untrained-init"
    assert config["backbone"] == {"name": "resnet50", "feature": "pool", "units": 2048, "variant": "pytorch"}
    assert config["rnn"] == {"type": "lstm", "layers": 2, "units": 128}
    assert (config["attention"], config["attention_length"], config["fps"]) == (False, None, 30)
    loaded, info = ckpt.load_checkpoint(tmp_path / "ck")
    assert info.sha256 == saved.sha256 and loaded.architecture == "resnet50-lstm"
    assert loaded.cnn.variant == "pytorch"
    x = crops(1)[None]
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_zoo_checkpoint_with_a_contradicting_config_is_refused(tmp_path):
    ckpt.save_checkpoint(CnnRnn("densenet121", "gru", True), tmp_path, trained=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rnn"]["type"] = "lstm"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="weights do not fit densenet121-gru-attn"):
        ckpt.load_checkpoint(tmp_path)


def test_zoo_name_alone_says_how_to_get_weights():
    with pytest.raises(ckpt.CheckpointError, match="needs trained weights"):
        ckpt.resolve_affect_model("densenet121-indrnn-attn")
