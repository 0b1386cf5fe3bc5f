"""The seed's Keras CNN on MNIST with its data augmentation, early stopping and an L2
regularizer, on deepkern.keras (only the imports changed from tensorflow.keras).

The seed's pieces, put together: the CNN (Conv2D 32 -> MaxPooling2D -> Conv2D 64 ->
MaxPooling2D -> Flatten -> Dense 64 -> Dense 10 softmax), its ``ImageDataGenerator`` options
(rotation 10, shifts 0.1, shear 0.1, zoom 0.1, fill_mode "nearest") feeding ``fit`` through
``flow``, ``EarlyStopping`` on the validation loss (the seed's "early stopping" advice) and
``regularizers.l2`` on the dense layer (its "L1 or L2 regularization" advice).

``mnist.load_data()`` reads the full MNIST when ``$DEEPKERN_MNIST_DIR`` names a folder of its
IDX files, else the embedded 5,000-digit sample (4,000 / 1,000).

    python examples/keras_cnn_augmentation.py [--quick] [--epochs N] [--plot history.png]
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional, Sequence

import deepkern as dk
from deepkern.keras import callbacks, layers, models, regularizers
from deepkern.keras.datasets import mnist
from deepkern.keras.preprocessing.image import ImageDataGenerator


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEEPKERN_QUICK") == "1",
                        help="1 epoch on 512 images (also: DEEPKERN_QUICK=1)")
    parser.add_argument("--epochs", type=int, default=None, help="default 8 (1 with --quick)")
    parser.add_argument("--plot", default=None, help="write the loss/accuracy curves to this PNG")
    args = parser.parse_args(argv)
    epochs = args.epochs or (1 if args.quick else 8)
    dk.manual_seed(0)

    # Load and scale the data
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train = x_train.reshape((-1, 28, 28, 1)).astype('float32') / 255
    x_test = x_test.reshape((-1, 28, 28, 1)).astype('float32') / 255
    if args.quick:
        x_train, y_train = x_train[:512], y_train[:512]
    # hold out the last 10% for validation (what early stopping watches)
    n_val = len(x_train) // 10
    x_train, x_val = x_train[:-n_val], x_train[-n_val:]
    y_train, y_val = y_train[:-n_val], y_train[-n_val:]

    # The CNN, with an L2 penalty on the dense layer's weights
    model = models.Sequential([
        layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu'),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation='relu', kernel_regularizer=regularizers.l2(0.001)),
        layers.Dense(10, activation='softmax')
    ])
    model.compile(optimizer='adam',
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
    model.summary()

    # Data augmentation
    data_gen = ImageDataGenerator(
        rotation_range=10,        # rotation range
        width_shift_range=0.1,    # horizontal shift range
        height_shift_range=0.1,   # vertical shift range
        shear_range=0.1,          # shear intensity
        zoom_range=0.1,           # zoom range
        fill_mode='nearest'       # edge fill mode
    )
    early_stopping = callbacks.EarlyStopping(monitor='val_loss', patience=2, restore_best_weights=True,
                                             verbose=1)

    # Train on freshly augmented batches every epoch
    start = time.perf_counter()
    history = model.fit(data_gen.flow(x_train, y_train, batch_size=64, seed=0),
                        epochs=epochs,
                        validation_data=(x_val, y_val),
                        callbacks=[early_stopping],
                        verbose=2)
    print(f"trained {len(history.history['loss'])} epochs in {time.perf_counter() - start:.1f} s")

    # Evaluate
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    print("Test accuracy:", test_acc)
    if args.plot:
        print("history plot:", dk.train.plot_history(history, args.plot, title="CNN with augmentation"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
