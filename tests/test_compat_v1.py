"""deepkern.compat.v1: the TF1 graph front end (lazy graph, Session, core autograd underneath)."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
import deepkern.compat.v1 as tf
from deepkern.compat.v1.examples.tutorials.mnist import input_data


@pytest.fixture(autouse=True)
def fresh_graph():
    tf.reset_default_graph()
    yield
    tf.reset_default_graph()


def test_graph_is_lazy_and_session_runs_fetch_structures():
    a = tf.placeholder(tf.float32, [None, 2])
    b = tf.constant([[1.0], [2.0]])
    y = tf.matmul(a, b) + 1.0
    assert isinstance(y, tf.Tensor) and "shape=unknown" in repr(y)
    with tf.Session() as sess:
        out = sess.run({"y": y, "pair": [tf.reduce_sum(y), tf.reduce_mean(y)]}, feed_dict={a: [[1, 1], [0, 3]]})
    np.testing.assert_array_equal(out["y"], [[4.0], [7.0]])
    assert out["pair"][0] == 11.0 and out["pair"][1] == 5.5 and isinstance(out["pair"][0], np.float32)


def test_clear_errors():
    x = tf.placeholder("float", [None, 3], name="x")
    w = tf.Variable(tf.zeros([3, 1]))
    y = tf.matmul(x, w)
    sess = tf.Session()
    with pytest.raises(tf.FailedPreconditionError, match="global_variables_initializer"):
        sess.run(y, {x: np.zeros((2, 3))})
    sess.run(tf.global_variables_initializer())
    with pytest.raises(ValueError, match="'x'.*feed_dict"):
        sess.run(y)
    with pytest.raises(ValueError, match=r"'x' expects shape \(None, 3\), got \(2, 4\)"):
        sess.run(y, {x: np.zeros((2, 4))})
    with pytest.raises(ValueError, match="no default session"):
        y.eval({x: np.zeros((1, 3))})
    with pytest.raises(ValueError, match="named arguments"):
        tf.nn.softmax_cross_entropy_with_logits(y, y)


def test_ops_match_numpy():
    rng = np.random.default_rng(0)
    xv = rng.standard_normal((4, 5)).astype(np.float32)
    yv = np.eye(5, dtype=np.float32)[[0, 3, 1, 1]]
    x, y = tf.placeholder(tf.float32, [None, 5]), tf.placeholder(tf.float32, [None, 5])
    logits_shift = xv - xv.max(1, keepdims=True)
    log_sm = logits_shift - np.log(np.exp(logits_shift).sum(1, keepdims=True))
    fetches = [tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=x), tf.nn.softmax(x), tf.sigmoid(x),
               tf.nn.relu(x), tf.argmax(x, 1), tf.equal(tf.argmax(x, 1), tf.argmax(y, 1)),
               tf.cast(tf.equal(tf.argmax(x, 1), tf.argmax(y, 1)), "float"), tf.square(x), tf.subtract(x, y),
               tf.multiply(x, y), tf.reduce_sum(x, axis=1), tf.reduce_mean(x, 0),
               tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.argmax(y, 1), logits=x)]
    with tf.Session() as sess:
        got = sess.run(fetches, {x: xv, y: yv})
    expected = [-(yv * log_sm).sum(1), np.exp(log_sm), 1 / (1 + np.exp(-xv)), np.maximum(xv, 0), xv.argmax(1),
                xv.argmax(1) == yv.argmax(1), (xv.argmax(1) == yv.argmax(1)).astype(np.float32), xv * xv, xv - yv,
                xv * yv, xv.sum(1), xv.mean(0), -log_sm[np.arange(4), yv.argmax(1)]]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert got[4].dtype == np.int64 and got[5].dtype == np.bool_


def test_random_ops_draw_fresh_values_and_seeds_repeat():
    a = tf.random_normal([1000], mean=2.0, stddev=0.5, seed=4)
    u = tf.random_uniform([1000], -1.0, 3.0)
    t = tf.truncated_normal([1000], stddev=2.0)
    with tf.Session() as sess:
        first, second = sess.run(a), sess.run(a)
        uv, tv = sess.run([u, t])
    assert not np.array_equal(first, second) and abs(first.mean() - 2.0) < 0.1 and abs(first.std() - 0.5) < 0.05
    np.testing.assert_array_equal(first, np.random.default_rng(4).normal(2.0, 0.5, 1000).astype(np.float32))
    assert uv.min() >= -1.0 and uv.max() < 3.0 and np.abs(tv).max() <= 4.0


def test_train_step_uses_the_pre_step_loss_and_matches_core_sgd():
    w0 = np.array([[0.5], [-0.25]], np.float32)
    xv = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
    yv = np.array([[1.0], [0.0]], np.float32)
    w = tf.Variable(w0)
    x, y = tf.placeholder(tf.float32, [None, 2]), tf.placeholder(tf.float32, [None, 1])
    loss = tf.reduce_sum(tf.square(tf.matmul(x, w) - y))
    train = tf.train.GradientDescentOptimizer(0.01).minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        _, before = sess.run([train, loss], {x: xv, y: yv})
        after = sess.run(w)
    core_w = dk.Tensor(w0, requires_grad=True)
    core_loss = ((dk.Tensor(xv) @ core_w - dk.Tensor(yv)) ** 2).sum()
    assert before == pytest.approx(core_loss.item(), rel=1e-6)
    core_loss.backward()
    np.testing.assert_allclose(after, w0 - 0.01 * core_w.grad, rtol=1e-6)


def test_adam_minimize_fits_a_softmax_classifier_and_eval_uses_the_default_session():
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((200, 2)).astype(np.float32)
    labels = (xv[:, 0] + xv[:, 1] > 0).astype(np.int64)
    yv = np.eye(2, dtype=np.float32)[labels]
    x, y = tf.placeholder("float", [None, 2]), tf.placeholder("float", [None, 2])
    w, b = tf.Variable(tf.random_normal([2, 2], seed=0)), tf.Variable(tf.zeros([2]))
    pred = tf.add(tf.matmul(x, w), b)
    cost = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(logits=pred, labels=y))
    step = tf.train.AdamOptimizer(learning_rate=0.05).minimize(cost)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(pred, 1), tf.argmax(y, 1)), "float"))
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        costs = [sess.run([step, cost], {x: xv, y: yv})[1] for _ in range(150)]
        assert accuracy.eval({x: xv, y: yv}) > 0.95
    assert costs[-1] < costs[0] / 4


def test_untrainable_variables_stay_put():
    w = tf.Variable([1.0, 2.0])
    frozen = tf.Variable([3.0, 4.0], trainable=False)
    loss = tf.reduce_sum(tf.square(w * frozen))
    assert tf.trainable_variables() == [w] and tf.global_variables() == [w, frozen]
    train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(train)
        np.testing.assert_array_equal(sess.run(frozen), [3.0, 4.0])
        assert not np.array_equal(sess.run(w), [1.0, 2.0])


def test_deep_graphs_do_not_recurse():
    x = tf.constant(0.0)
    for _ in range(5000):
        x = x + 1.0
    with tf.Session() as sess:
        assert sess.run(x) == 5000.0


def test_read_data_sets_one_hot_next_batch(tmp_path, monkeypatch):
    monkeypatch.delenv(dk.data.MNIST_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    mnist = input_data.read_data_sets(str(tmp_path / "data"), one_hot=True, seed=0)
    assert mnist.train.num_examples == 4000 - 333 and mnist.validation.num_examples == 333
    assert mnist.test.images.shape == (1000, 784) and mnist.test.labels.shape == (1000, 10)
    assert mnist.test.images.dtype == np.float32 and mnist.test.images.max() == 1.0
    np.testing.assert_array_equal(mnist.test.labels.sum(1), 1.0)
    seen = []
    for _ in range(mnist.train.num_examples // 100 + 1):   # one epoch and a bit
        bx, by = mnist.train.next_batch(100)
        assert bx.shape == (100, 784) and by.shape == (100, 10)
        seen.append(bx)
    assert mnist.train.epochs_completed == 1
    first_epoch = np.concatenate(seen)[:mnist.train.num_examples]
    # every training image exactly once per epoch
    assert sorted(row.tobytes() for row in first_epoch) == sorted(row.tobytes() for row in mnist.train.images)
    plain = input_data.read_data_sets(str(tmp_path / "data"), validation_size=0)
    assert plain.train.labels.dtype == np.uint8 and plain.train.num_examples == 4000


def test_var_list_limits_what_a_step_trains_and_leaves_no_stale_gradients():
    a, b = tf.Variable([1.0]), tf.Variable([1.0])
    loss = tf.reduce_sum(tf.square(a * b - 3.0))
    only_a = tf.train.GradientDescentOptimizer(0.1).minimize(loss, var_list=[a])
    only_b = tf.train.GradientDescentOptimizer(0.1).minimize(loss, var_list=[b])
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(only_a)                     # d/da (ab - 3)^2 = 2b(ab - 3) = -4: a -> 1.4
        np.testing.assert_allclose(sess.run([a, b]), [[1.4], [1.0]], rtol=1e-6)
        sess.run(only_b)                     # d/db = 2a(ab - 3) = 2.8 * -1.6 = -4.48: b -> 1.448
        np.testing.assert_allclose(sess.run([a, b]), [[1.4], [1.448]], rtol=1e-6)
