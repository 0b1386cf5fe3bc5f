"""deepkern.torch / deepkern.torchvision: PyTorch's spellings over the one core autograd."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
import deepkern.torch as torch
import deepkern.torch.nn as nn
import deepkern.torch.nn.functional as F
from deepkern.torch.utils.data import DataLoader, TensorDataset
from deepkern.torchvision import datasets, transforms

from .test_data_full import write_idx_set


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_tensors_are_core_tensors_with_pytorch_methods():
    t = torch.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    assert isinstance(t, dk.Tensor) and t.dtype == torch.float32
    assert t.size() == (2, 3) and t.size(0) == 2 and t.size(-1) == 3 and t.dim() == 2 and t.numel() == 6
    assert t.size == 6  # the core's meaning (element count) still holds for code that reads it
    values, indices = torch.max(t, 1)
    np.testing.assert_array_equal(values.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 0])
    assert indices.dtype == torch.int64
    assert t.max().item() == 7.0 and t.view(3, 2).shape == (3, 2) and t.view(-1).shape == (6,)
    assert t.sum().item() == 18.0 and t.sum(1).numpy().tolist() == [8.0, 10.0]
    assert t.sum(dim=0, keepdim=True).shape == (1, 3)
    eq = indices == torch.tensor([1, 1])
    assert eq.dtype == np.bool_ and eq.sum().item() == 1 and (indices != 0).numpy().tolist() == [True, False]
    assert type(t + 1) is torch.Tensor and type(t[0]) is torch.Tensor and type(t.reshape(6)) is torch.Tensor
    assert torch.tensor([1, 2]).dtype == torch.int64


def test_max_along_a_dim_is_differentiable():
    x = torch.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], requires_grad=True)
    values, _ = x.max(1)
    values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])


def test_data_is_a_view_of_the_same_storage_with_inplace_initialisers():
    torch.manual_seed(0)
    layer = nn.Linear(5, 4)
    assert isinstance(layer.weight, torch.Parameter) and isinstance(layer.weight, dk.nn.Parameter)
    data = layer.weight.data
    assert isinstance(data, np.ndarray) and isinstance(data, torch.TensorData)
    data.uniform_(-0.1, 0.1)
    w = layer.weight.numpy()
    assert np.shares_memory(data, w) and np.abs(w).max() <= 0.1 and np.abs(w).max() > 0.01
    layer.bias.data.fill_(0.5)
    np.testing.assert_array_equal(layer.bias.numpy(), 0.5)
    layer.bias.data.zero_()
    layer.weight.data.normal_(0, 1)
    assert layer.bias.numpy().sum() == 0 and layer.weight.numpy().std() > 0.3
    # arithmetic on the view gives plain arrays; the core keeps reading .data as an array
    assert type(data * 2) is np.ndarray


def test_inplace_on_a_leaf_needs_no_grad():
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.fill_(2.0)
    with torch.no_grad():
        w -= 0.5 * torch.ones(3)
    np.testing.assert_array_equal(w.numpy(), 0.5)
    assert w.requires_grad and w.is_leaf


def test_module_trains_with_the_core_optimizer():
    torch.manual_seed(1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((64, 4)).astype(np.float32))
    y = torch.from_numpy((x.numpy()[:, 0] > 0).astype(np.int64) + (x.numpy()[:, 1] > 0))
    model = TinyMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    criterion = nn.CrossEntropyLoss()
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first / 3
    with torch.no_grad():
        _, predicted = torch.max(model(x).data, 1)
    assert (predicted == y).sum().item() / y.size(0) > 0.9


def test_functional_matches_the_core():
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.standard_normal((5, 4)))
    labels = torch.tensor([0, 3, 1, 1, 2])
    expected = dk.nn.functional.cross_entropy(dk.Tensor(logits.numpy()), labels.numpy()).item()
    assert F.cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert F.nll_loss(F.log_softmax(logits, dim=1), labels).item() == pytest.approx(expected, rel=1e-5)
    summed = F.nll_loss(F.log_softmax(logits, dim=1), labels, reduction="sum").item()
    assert summed == pytest.approx(5 * expected, rel=1e-5)
    assert F.cross_entropy(logits, labels, reduction="sum").item() == pytest.approx(5 * expected, rel=1e-5)
    pred = logits.argmax(dim=1, keepdim=True)
    hits = (pred.numpy()[:, 0] == labels.numpy()).sum()
    assert pred.shape == (5, 1) and pred.eq(labels.view_as(pred)).sum().item() == hits
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy().sum(1), 1.0, rtol=1e-6)


def test_cat_and_stack_route_gradients():
    a = torch.ones(2, 3, requires_grad=True)
    b = torch.ones(1, 3, requires_grad=True)
    (torch.cat([a, b * 2], 0).sum() + torch.stack([a[0], b[0]], 0).sum()).backward()
    np.testing.assert_array_equal(a.grad, [[2, 2, 2], [1, 1, 1]])
    np.testing.assert_array_equal(b.grad, [[3, 3, 3]])


def test_dataloader_batches_shuffles_and_drops_last():
    x = torch.arange(10).float().view(10, 1)
    y = torch.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    assert batches[0][1].numpy().tolist() == [0, 1, 2, 3] and batches[0][0].shape == (4, 1)
    dropped = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, drop_last=True)
    assert len(dropped) == 2
    torch.manual_seed(3)
    seen = np.concatenate([b[1].numpy() for b in dropped])
    assert len(seen) == 8 and len(set(seen.tolist())) == 8 and seen.tolist() != sorted(seen.tolist())
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(TensorDataset(x, y), batch_size=0)


def test_dataloader_collates_plain_datasets():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((2, 2), i, np.float32), i * i

    images, targets = next(iter(DataLoader(Squares(), batch_size=5)))
    assert images.shape == (5, 2, 2) and images.dtype == torch.float32
    assert targets.numpy().tolist() == [0, 1, 4, 9, 16] and targets.dtype == torch.int64


def test_torchvision_mnist_batches_match_item_by_item(tmp_path, monkeypatch):
    monkeypatch.delenv(dk.data.MNIST_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train = datasets.MNIST(root=str(tmp_path), train=True, download=True, transform=transform)
    test = datasets.MNIST(root=str(tmp_path), train=False, transform=transform)
    assert len(train) == 4000 and len(test) == 1000 and train.data.shape == (4000, 28, 28)
    image, label = train[7]
    assert image.shape == (1, 28, 28) and isinstance(label, int)
    assert image.numpy().min() == -1.0 and image.numpy().max() == 1.0
    batch, labels = next(iter(DataLoader(train, batch_size=10)))
    np.testing.assert_array_equal(batch.numpy()[7], image.numpy())
    assert labels.numpy()[7] == label and batch.shape == (10, 1, 28, 28)
    # a transform without a batch form goes item by item and gives the same values
    slow = datasets.MNIST(str(tmp_path), train=True, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Lambda(lambda t: t * 2.0 - 1.0)]))
    slow_batch, _ = next(iter(DataLoader(slow, batch_size=10)))
    np.testing.assert_allclose(slow_batch.numpy(), batch.numpy(), atol=1e-6)


def test_torchvision_reads_the_raw_folder_under_root(tmp_path, monkeypatch):
    monkeypatch.delenv(dk.data.MNIST_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "none"))
    _, (images, labels) = write_idx_set(tmp_path / "MNIST" / "raw", n_test=3)
    ds = datasets.MNIST(root=str(tmp_path), train=False, transform=transforms.ToTensor())
    assert len(ds) == 3 and ds[1][1] == labels[1]
    np.testing.assert_allclose(ds[2][0].numpy()[0], images[2] / 255.0, rtol=1e-6)


def test_save_and_load_a_state_dict(tmp_path):
    torch.manual_seed(4)
    model, other = TinyMLP(), TinyMLP()
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    assert path.exists()                                  # the name is kept as given
    state = torch.load(path)
    assert list(state) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    other.load_state_dict(state)
    x = torch.randn(3, 4)
    np.testing.assert_array_equal(other(x).numpy(), model(x).numpy())
    with pytest.raises(TypeError, match="state_dict"):
        torch.save(model, tmp_path / "whole.pth")
