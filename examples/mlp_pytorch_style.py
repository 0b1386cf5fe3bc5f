"""The seed's PyTorch MLP and its training loop, on deepkern (imports changed, same structure).

``torch.nn`` -> ``dk.nn``, ``torch.optim`` -> ``dk.optim``, ``torch.no_grad`` -> ``dk.no_grad``;
the torchvision loaders become ``dk.data`` ones: the full MNIST when ``$DEEPKERN_MNIST_DIR``
names a folder of its IDX files, else the embedded 5,000-digit sample (4,000 train / 1,000
test). ``transforms.Normalize((0.5,), (0.5,))`` maps pixels to [-1, 1], as ``dk.data.normalize``
does here; ``DataLoader`` becomes ``dk.data.BatchIterator``.

    python examples/mlp_pytorch_style.py [--quick] [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional, Sequence

import deepkern as dk
import deepkern.nn as nn
import deepkern.optim as optim
from deepkern import data


class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim):
        super(MLP, self).__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        x = self.fc1(x).relu()          # torch.relu(self.fc1(x))
        x = self.fc2(x).relu()
        x = self.fc3(x)
        return x


def load_mnist():
    """(x_train, y_train, x_test, y_test): flattened images in [-1, 1], int64 labels."""
    if data.mnist_dir() is not None:
        x_train, y_train, x_test, y_test = data.load_mnist(flatten=True)
    else:
        x_train, y_train, x_test, y_test = data.load_mnist5k(seed=0, flatten=True)
    scale = dict(feature_range=(-1.0, 1.0), input_range=(0.0, 1.0))  # Normalize((0.5,), (0.5,))
    return data.normalize(x_train, **scale), y_train, data.normalize(x_test, **scale), y_test


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEEPKERN_QUICK") == "1",
                        help="1 epoch on 1,000 samples (also: DEEPKERN_QUICK=1)")
    parser.add_argument("--epochs", type=int, default=None, help="default 10 (1 with --quick)")
    args = parser.parse_args(argv)
    num_epochs = args.epochs or (1 if args.quick else 10)

    # Load the data
    x_train, y_train, x_test, y_test = load_mnist()
    if args.quick:
        x_train, y_train = x_train[:1000], y_train[:1000]
    train_loader = data.BatchIterator(x_train, y_train, batch_size=64, shuffle=True, seed=0)
    test_loader = data.BatchIterator(x_test, y_test, batch_size=1000, shuffle=False)

    # Build the model
    dk.manual_seed(0)
    input_dim = 784
    hidden_dim = 128
    output_dim = 10
    model = MLP(input_dim, hidden_dim, output_dim)

    # Initialise the parameters (weight.data.uniform_(-0.1, 0.1), bias.data.fill_(0))
    for layer in (model.fc1, model.fc2, model.fc3):
        nn.init.uniform_(layer.weight, -0.1, 0.1)
        nn.init.zeros_(layer.bias)

    # Loss and optimizer
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)

    # Train
    start = time.perf_counter()
    for epoch in range(num_epochs):
        train_loss = 0
        for batch, target in train_loader:
            optimizer.zero_grad()
            output = model(dk.Tensor(batch))
            loss = criterion(output, target)
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
        print('Train Epoch: {}/{}, Loss: {:.4f}'.format(epoch + 1, num_epochs, train_loss / len(train_loader)))

    # Evaluate
    correct = 0
    total = 0
    with dk.no_grad():
        for batch, target in test_loader:
            output = model(dk.Tensor(batch))
            predicted = output.argmax(axis=1)       # _, predicted = torch.max(output.data, 1)
            total += target.shape[0]
            correct += int((predicted == target).sum())

    print('Accuracy of the network on the {} test images: {} %'.format(total, 100 * correct / total))
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
