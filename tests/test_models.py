import pytest
import torch

from helpers import ROOT
from mnist_lightning.models import NETWORKS, build_network
from mnist_lightning.models.cnn import SeedCNN


@pytest.mark.parametrize("arch", sorted(NETWORKS))
def test_every_network_maps_a_batch_to_ten_logits(arch):
    net = build_network(arch)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_seed_cnn_has_the_seed_layers():
    net = SeedCNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    dropouts = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3)), (32, 64, (3, 3))]
    assert [(f.in_features, f.out_features) for f in fcs] == [(9216, 128), (128, 10)]
    assert dropouts == [0.25, 0.5]


def test_widths_and_dropouts_are_configurable():
    net = build_network("cnn", conv1_channels=8, conv2_channels=16, hidden=32, dropout1=0.1, dropout2=0.2)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.1, 0.2]
    mlp = build_network("mlp", hidden=[64], dropout=0.0)
    assert [m.out_features for m in mlp.modules() if isinstance(m, torch.nn.Linear)] == [64, 10]


def test_unknown_network_or_argument_is_a_clear_error():
    with pytest.raises(ValueError, match="arch='resnet'.*choose one of cnn, bn_cnn, mlp"):
        build_network("resnet")
    with pytest.raises(ValueError, match="arch='cnn'.*widht"):
        build_network("cnn", widht=3)


def test_module_rejects_a_bad_optimizer_setting_when_built():
    from functools import partial

    from mnist_lightning.models.lit_module import MNISTLitModule

    with pytest.raises(ValueError, match="optimizer: Invalid learning rate"):
        MNISTLitModule(net={"arch": "cnn"}, optimizer=partial(torch.optim.Adam, lr=-1.0))


def test_channels_last_computes_the_same_logits_and_shares_checkpoints():
    from mnist_lightning.models.lit_module import MNISTLitModule

    net = {"arch": "cnn"}
    torch.manual_seed(0)
    plain = MNISTLitModule(net).eval()
    nhwc = MNISTLitModule(net, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.net.features[2].weight.is_contiguous(memory_format=torch.channels_last)  # loading kept the layout
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(plain(x), nhwc(x), atol=1e-5)
    back = MNISTLitModule(net).eval()
    back.load_state_dict(nhwc.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), plain.state_dict().values(), strict=True))


def test_the_batch_norm_cnn_has_three_normalised_blocks_and_checks_its_widths():
    net = build_network("bn_cnn", channels=[8, 16, 24])
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m.num_features for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [(c.in_channels, c.out_channels, c.bias) for c in convs] == [(1, 8, None), (8, 16, None), (16, 24, None)]
    assert norms == [8, 16, 24]
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"channels=\[16, 32\]: give three positive widths"):
        build_network("bn_cnn", channels=[16, 32])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer here: only the loss is checked
def test_label_smoothing_softens_the_training_loss_only():
    import torch.nn.functional as F

    from mnist_lightning.models.lit_module import MNISTLitModule

    torch.manual_seed(0)
    smooth = MNISTLitModule({"arch": "mlp", "hidden": [16], "dropout": 0.0}, label_smoothing=0.1)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = smooth.training_step((x, y), 0)
    logits = smooth(x)
    assert torch.allclose(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    assert not torch.allclose(loss, F.cross_entropy(logits, y))
    with pytest.raises(ValueError, match="label_smoothing=1.0: must be at least 0 and below 1"):
        MNISTLitModule({"arch": "mlp"}, label_smoothing=1.0)


def test_a_file_that_is_not_a_checkpoint_gets_the_projects_own_line_never_advice_to_unpickle(tmp_path):
    from mnist_lightning.errors import UserError
    from mnist_lightning.models.checkpoint import read

    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    code = tmp_path / "code.ckpt"
    torch.save({"hyper_parameters": {"net": {"arch": "mlp"}}, "hook": torch.nn.ReLU()}, code)  # pickles a class
    text, table, empty = tmp_path / "notes.txt", tmp_path / "table.csv", tmp_path / "empty.ckpt"
    text.write_text("every digit counts\n")  # torch's unpickler reads the 'e' as an opcode: KeyError(101)
    table.write_text("a,b\n1,2\n")  # IndexError inside the unpickler
    empty.write_bytes(b"")
    for path, reason in (
        (ROOT / "README.md", "not a PyTorch checkpoint, or one that holds more than plain data"),
        (text, "not a PyTorch checkpoint, or one that holds more than plain data"),
        (table, "not a PyTorch checkpoint, or one that holds more than plain data"),
        (empty, "the file is empty"),
        (code, "not a PyTorch checkpoint, or one that holds more than plain data"),
        (plain, "a PyTorch file, but not a training checkpoint of this project (no 'hyper_parameters' entry)"),
    ):
        with pytest.raises(UserError) as refused:
            read(path)
        assert reason in str(refused.value) and "weights_only" not in str(refused.value), refused.value
