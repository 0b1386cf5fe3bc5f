import tensorflow as tf
from tensorflow.keras import layers, models
from sklearn.model_selection import GridSearchCV
from tensorflow.keras.wrappers.scikit_learn import KerasClassifier

# 创建一个简单的神经网络模型
def create_model(optimizer='adam'):
    model = models.Sequential([
        layers.Dense(64, activation='relu', input_shape=(100,)),
        layers.Dense(64, activation='relu'),
        layers.Dense(10, activation='softmax')
    ])
    model.compile(optimizer=optimizer,
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
    return model

# 将模型封装为scikit-learn的分类器
model = KerasClassifier(build_fn=create_model, epochs=10, batch_size=128, verbose=0)

# 定义超参数搜索空间
param_grid = {'optimizer': ['adam', 'sgd']}
grid = GridSearchCV(estimator=model, param_grid=param_grid, cv=3)

# 加载数据
(x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
x_train = x_train.reshape((60000, 28 * 28)).astype('float32') / 255
x_test = x_test.reshape((10000, 28 * 28)).astype('float32') / 255

# 进行超参数搜索
grid_result = grid.fit(x_train, y_train)

# 输出最佳参数和对应的准确率
print("Best: %f using %s" % (grid_result.best_score_, grid_result.best_params_))
