import tensorflow as tf

train_in = [
    [0,0,1],
    [0,1,1],
    [1,0,1],
    [1,1,1]]
train_out = [
    [0],
    [1],
    [1],
    [1]]

w = tf.Variable(tf.random_normal([3, 1], seed=15))

x = tf.placeholder(tf.float32,[None,3])
y = tf.placeholder(tf.float32,[None,1])

output = tf.nn.relu(tf.matmul(x, w))

loss = tf.reduce_sum(tf.square(output - y))

optimizer = tf.train.GradientDescentOptimizer(0.01)
train = optimizer.minimize(loss)

init = tf.global_variables_initializer()
sess = tf.Session()
sess.run(init)

for i in range(100):
    sess.run(train, {x:train_in,y:train_out})
    cost = sess.run(loss,feed_dict={x:train_in,y:train_out})
    print('Epoch--',i,'--loss--',cost)
